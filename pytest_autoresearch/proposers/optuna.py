"""The built-in proposer: Optuna's TPE over the editable files' numeric constants.

It tunes module-level UPPER_CASE numbers and every number marked with a ``# search:``
comment or named by program.md's ``search:`` key (see ``constants``).

Offline and keyless. Each proposal re-reads the constants (the tree holds the
best commit's values), lets TPE pick new values for a few of them while the rest
stay put, and rewrites just those literals. The study lives in
``<state_dir>/optuna.log`` so a resumed run continues it.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.proposers.base import (
    Failure,
    Outcome,
    Proposal,
    ProposalContext,
    ProposerError,
    ProposerFatal,
)
from pytest_autoresearch.proposers.constants import (
    HINT_EXAMPLE,
    WHERE_TUNABLE,
    Constant,
    HintError,
    Space,
    Spec,
    default_space,
    find_constants,
    format_value,
    rewrite,
    round_float,
    suggest_spec,
    untuned,
)

if TYPE_CHECKING:
    import pytest

    from pytest_autoresearch.program.program_md import Program

STUDY_FILE = "optuna.log"
STUDY_NAME = "autoresearch"
_SPACES_ATTR = "spaces"  # study user attr: the default ranges, fixed when first seen
START = "start"  # trial user attr: the start point (the best as it was), not a measured trial
_MAX_ATTEMPTS = 20  # asks allowed to find a suggestion that changes at least one literal
# Until TPE has this many measured trials it samples whole ranges at random, where nearly
# every point is worse than a tuned default; meanwhile each proposal moves one number a
# little (a sixteenth of its range, log-scaled where the range is), which finds the small
# real gains next to the start point that a short run (the quick start) can keep. Which
# number and which way is a compass search (``compass``): on after a gain, back the other
# way after a loss, numbers not yet tried next, and none whose move changed nothing.
LOCAL_TRIALS = 10
LOCAL_STEP = 1 / 16
# A study of one change on top of the best (the hybrid tunes the numbers an LLM's change
# brought in, in short bursts): its start value is a guess, not a tuned default, so the
# first SPREAD_TRIALS spread the focus numbers over their ranges (a van der Corput
# sequence, log-scaled where the range is) and TPE models from the trial after.
SPREAD_TRIALS = 2


class OptunaProposer:
    """Proposes new values for the numbers of the editable files with Optuna's TPE sampler."""

    name = "optuna"

    def __init__(self, seed: int | None = None, max_changes: int = 3) -> None:
        if max_changes < 1:
            raise ValueError(f"max_changes must be at least 1, got {max_changes}")
        self.seed = seed
        self.max_changes = max_changes
        self._study: Any = None
        self._study_path: Path | None = None
        self._studies: dict[str, Any] = {}  # more studies by name (the hybrid's lines)

    def propose(
        self,
        ctx: ProposalContext,
        *,
        focus: list[str] | None = None,
        study_name: str = STUDY_NAME,
        start_value: float | None = None,
    ) -> Proposal:
        """Rewrite a few constants to TPE's next suggestion and describe the change.

        The hybrid proposer (proposers/hybrid.py) passes ``focus``: only these numbers
        move; ``study_name``: a study of its own for one change on top of the best (its
        first trials spread out, SPREAD_TRIALS); ``start_value``: the measured value of the
        files as they stand (else the best's).
        """
        constants = _scan(ctx)
        study = self._open(ctx, study_name)
        spaces = _spaces(study, constants)
        distributions = {key: _distribution(space) for key, space in spaces.items()}
        _check_compatible(study, distributions, self._study_path)
        current = {key: c.value for key, c in constants.items()}
        known = ctx.best_value if start_value is None else start_value
        movable = sorted(k for k in constants if focus is None or _named(k, focus))
        if not movable:
            raise ProposerError(f"none of {', '.join(focus or [])} is a tunable number here")
        if not study.get_trials(deepcopy=False):
            # The start point, so TPE knows where the best is before it explores.
            _add_start(study, distributions, current, known)
        spread = study_name != STUDY_NAME
        for _ in range(_MAX_ATTEMPTS):
            trial, changes = self._ask(
                study, constants, distributions, current, movable, spread, known
            )
            if not changes:
                # Same literals as the start: its value is known, so say so and ask again.
                _tell_known(study, trial, known)
                continue
            earlier = _same_params(study, trial, constants)
            if earlier is None:
                break
            # Optuna never measures one parameter set twice: the earlier result stands.
            _tell_known(study, trial, earlier.value if earlier.state.name == "COMPLETE" else None)
        else:
            raise ProposerError(
                f"TPE suggested values already measured {_MAX_ATTEMPTS} times in a row; "
                "the search ranges may be too narrow (see '# search:' hints)"
            )
        try:
            _write(ctx.root, changes)
        except (OSError, ValueError) as exc:
            study.tell(trial.number, state=_fail_state())
            raise ProposerError(f"could not rewrite the constants: {exc}") from exc
        params = {key: trial.params[key] for key in constants}
        described = ", ".join(
            f"{key} {c.text} -> {format_value(changes[c], c.text)}"
            for key, c in constants.items()
            if c in changes
        )
        return Proposal(
            description=described,
            params=params,
            extra={
                "optuna_trial": trial.number,
                "optuna_study": study_name,
                "changed": [k for k, c in constants.items() if c in changes],
            },
        )

    def preflight(self, root: Path, program: Program) -> str:
        """Before any work: what will be tuned, in one line; ``ProposerFatal`` when nothing."""
        found = scan(Path(root), program.editable_files(Path(root)), program)
        names = [c.name for c in found]
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        return f"optuna tunes {len(names)} number(s): {', '.join(names[:8])}{more}"

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """A crash means this corner of the space is bad: the study learns that, no repair."""
        return None

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        """Tell the study the candidate's real value (discards too), or that it failed."""
        number = proposal.extra.get("optuna_trial")
        if not isinstance(number, int):
            return  # not one of ours
        study = self._open(ctx, proposal.extra.get("optuna_study") or STUDY_NAME)
        trials = study.get_trials(deepcopy=False)
        if number >= len(trials) or trials[number].state.name != "RUNNING":
            return  # already told (or the study was replaced): nothing to add
        value = outcome.objective
        # A duplicate was sent back unmeasured: the earlier experiment's value is its value.
        measured = outcome.status in ("keep", "discard", "duplicate")
        if measured and value is not None and math.isfinite(value):
            study.tell(number, float(value))
        else:
            study.tell(number, state=_fail_state())

    def close(self) -> None:
        """Drop the study; everything it learnt is already in its journal file."""
        self._study = None
        self._study_path = None
        self._studies.clear()

    def _open(self, ctx: ProposalContext, name: str = STUDY_NAME) -> Any:
        """Load or create the study ``name`` under ``ctx.state_dir`` (once per state dir)."""
        path = Path(ctx.state_dir) / STUDY_FILE
        if self._study_path != path:
            self._study, self._studies = None, {}
        if name != STUDY_NAME and name in self._studies:
            return self._studies[name]
        if name == STUDY_NAME and self._study is not None:
            return self._study
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        direction = "maximize" if ctx.goal == "max" else "minimize"
        try:
            storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(path))
            )
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction=direction,
                sampler=self._sampler(0),
                load_if_exists=True,
            )
        except (ValueError, KeyError, OSError) as exc:
            raise ProposerFatal(
                f"cannot open the Optuna study {path}: {exc}. Move the file away to start "
                "a fresh study (the experiment journal is not affected)."
            ) from exc
        if study.direction.name.lower() != direction:
            raise ProposerFatal(
                f"the Optuna study {path} was made to {study.direction.name.lower()} but the "
                f"objective {ctx.objective!r} now has goal {ctx.goal!r}; move the file away "
                "or use another --autoresearch-tag"
            )
        # Asked but never told: the previous run was killed mid-experiment.
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name == "RUNNING":
                study.tell(trial.number, state=_fail_state())
        # Reseed past the trials already made, so a resumed seeded run does not replay itself.
        study.sampler = self._sampler(len(study.get_trials(deepcopy=False)), name)
        if name == STUDY_NAME:
            self._study = study
        else:
            self._studies[name] = study
        self._study_path = path
        return study

    def _sampler(self, offset: int, name: str = STUDY_NAME) -> Any:
        from optuna.samplers import TPESampler

        # constant_liar: trials still running (K workers) count as bad guesses, so parallel
        # asks spread out instead of piling onto one point; with one worker it changes nothing.
        seed = None if self.seed is None else self.seed + offset + _stable_hash(name)
        if name == STUDY_NAME:
            return TPESampler(seed=seed, constant_liar=True)
        # A short burst: TPE models from the start point and the spread trials on.
        return TPESampler(seed=seed, constant_liar=True, n_startup_trials=SPREAD_TRIALS + 1)

    def _ask(
        self,
        study: Any,
        constants: dict[str, Constant],
        distributions: dict[str, Any],
        current: dict[str, int | float],
        movable: list[str] | None = None,
        spread: bool = False,
        known: float | None = None,
    ) -> tuple[Any, dict[Constant, int | float]]:
        """One trial: TPE samples a few constants, the others stay at the current values."""
        trials = study.get_trials(deepcopy=False)
        number = len(trials)
        rng = random.Random(None if self.seed is None else f"{self.seed}:{number}")
        keys = sorted(movable if movable is not None else constants)
        # Measured trials: the start point is the best's value, not a trial of the search.
        complete = sum(t.state.name == "COMPLETE" and not t.user_attrs.get(START) for t in trials)
        local = not spread and complete < LOCAL_TRIALS
        early = spread and number <= SPREAD_TRIALS  # trial 0 is the start point
        many = 1 if local else rng.randint(1, min(self.max_changes, len(keys)))
        if local:
            key, way, distance = compass(study, constants, distributions, current, keys, rng, known)
            chosen = {key}
        else:
            chosen = set(keys) if early else set(rng.sample(keys, many))
        fixed = {key: value for key, value in current.items() if key not in chosen}
        if local:
            fixed.update(
                {k: local_move(rng, current[k], distributions[k], way, distance) for k in chosen}
            )
        if early:
            fixed.update(
                {
                    k: spread_point(number + 1, i, distributions[k])
                    for i, k in enumerate(sorted(chosen))
                }
            )
        tpe = study.sampler
        study.sampler = _fixed_and_rounded(fixed, tpe)
        try:
            trial = study.ask(distributions)
        finally:
            study.sampler = tpe
        changes = {}
        for key in chosen:
            constant, value = constants[key], trial.params[key]
            if format_value(value, constant.text) != format_value(constant.value, constant.text):
                changes[constant] = value
        return trial, changes


def build(config: pytest.Config) -> OptunaProposer:
    """The ``optuna`` proposer for this session (``--autoresearch-seed`` seeds it)."""
    seed = config.getoption("autoresearch_seed", None)
    if seed is None:
        try:
            ini = config.getini("autoresearch_seed")
        except ValueError:
            ini = None  # the research plugin did not register the key
        if ini not in (None, "", []):
            try:
                seed = int(str(ini).strip())
            except ValueError:
                raise ProposerFatal(
                    f"ini key autoresearch_seed = {ini!r} is not an integer; write e.g. "
                    "autoresearch_seed = 42"
                ) from None
    return OptunaProposer(seed=seed)


def _scan(ctx: ProposalContext) -> dict[str, Constant]:
    """The tunable constants of the editable files, keyed by name (path:name when clashing)."""
    found = scan(Path(ctx.root), ctx.editable_files, ctx.program)
    names = [c.name for c in found]
    return {(c.name if names.count(c.name) == 1 else f"{c.path}:{c.name}"): c for c in found}


def scan(root: Path, editable_files: list[str], program: Program | None = None) -> list[Constant]:
    """Every number the proposer would tune; ``ProposerFatal`` says what to add when none.

    ``program.search`` (program.md's ``search:`` key) adds ranges for names that carry
    no ``# search:`` comment.
    """
    declared: dict[str, dict[str, Spec]] = {}
    for item in getattr(program, "search", None) or ():
        declared.setdefault(item.path, {})[item.name] = item.spec
    where = _search_key_place(program)
    for relpath in declared:
        if relpath not in editable_files or not relpath.endswith(".py"):
            raise ProposerFatal(
                f"{where}: search names {relpath}, which is not an editable Python file"
            )
    found: list[Constant] = []
    examples: list[tuple[bytes, Constant]] = []
    frozen = 0
    for relpath in editable_files:
        if not relpath.endswith(".py"):
            continue
        try:
            data = (Path(root) / relpath).read_bytes()
        except OSError as exc:
            raise ProposerFatal(f"cannot read the editable file {relpath}: {exc}") from exc
        try:
            constants = find_constants(data, relpath, declared.get(relpath))
        except SyntaxError as exc:
            raise ProposerFatal(
                f"{relpath}:{exc.lineno}: cannot parse it to find constants ({exc.msg}); "
                "fix the syntax error in the best commit"
            ) from None
        except HintError as exc:
            message = str(exc)
            if relpath in declared and not message.startswith(f"{relpath}:"):
                message = f"{where}: {message}"  # a name program.md declared, not a comment
            elif relpath in declared and any(f"({n})" in message for n in declared[relpath]):
                message = f"{message} (declared in {where})"
            raise ProposerFatal(message) from None
        found += [c for c in constants if not _frozen(c)]
        frozen += sum(1 for c in constants if _frozen(c))
        examples += [(data, c) for c in untuned(data, relpath)[: 2 - len(examples)]]
    if not found:
        raise ProposerFatal(_nothing_to_tune(editable_files, examples, frozen))
    return found


def _search_key_place(program: Program | None) -> str:
    path = getattr(program, "path", None) or "program.md"
    line = (getattr(program, "lines", None) or {}).get("search")
    return f"{path}:{line}" if line else str(path)


def _nothing_to_tune(
    editable_files: list[str], examples: list[tuple[bytes, Constant]], frozen: int
) -> str:
    """Say what the proposer tunes, shown on the user's own numbers when there are some."""
    files = ", ".join(editable_files) or "(none)"
    text = (
        f"the optuna proposer found nothing to tune in the editable files ({files}). It tunes "
        "module-level UPPER_CASE numbers and numbers marked with a '# search:' comment"
    )
    if examples:
        shown = []
        for data, c in examples:
            raw = data.splitlines()[c.lineno - 1]
            # The user's line as it is, less its comment (a '#' in a later string is rare).
            line = (raw[: c.end] + raw[c.end :].split(b"#")[0]).decode("utf-8", "replace").strip()
            shown.append(f"{c.where}: {line}  # search: {suggest_spec(c.value, c.text)}")
        c = examples[0][1]
        text += (
            "; mark yours, e.g. "
            + "; ".join(shown)
            + f", or give the range in program.md: search: {{{c.path}: {{{c.name}: "
            f'"{suggest_spec(c.value, c.text)}"}}}}'
        )
    else:
        text += f" ({HINT_EXAMPLE}); {WHERE_TUNABLE}"
    if frozen:
        text += f"; {frozen} number(s) are marked '# search: off'"
    return text + ". Or use an LLM proposer (--autoresearch-proposer anthropic)."


def _frozen(constant: Constant) -> bool:
    return constant.hint is not None and constant.hint.frozen


def _spaces(study: Any, constants: dict[str, Constant]) -> dict[str, Space]:
    """Each constant's range: its hint, else the default range fixed when the study first saw it.

    Fixing the default range keeps TPE's history comparable as the best values move;
    a value that has left its stored range (edited by hand) widens it.
    """
    stored = dict(study.user_attrs.get(_SPACES_ATTR, {}))
    spaces: dict[str, Space] = {}
    for key, constant in constants.items():
        if constant.hint is not None and constant.hint.space is not None:
            spaces[key] = constant.hint.space
            continue
        space = Space.from_dict(stored[key]) if key in stored else default_space(constant.value)
        if space.integer != constant.integer:
            space = default_space(constant.value)
        if not space.contains(constant.value):
            low, high = min(space.low, constant.value), max(space.high, constant.value)
            space = Space(low, high, space.log and low > 0, space.integer)
        spaces[key] = space
        stored[key] = space.as_dict()
    if stored != study.user_attrs.get(_SPACES_ATTR, {}):
        study.set_user_attr(_SPACES_ATTR, stored)
    return spaces


def _distribution(space: Space) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if space.integer:
        return IntDistribution(int(space.low), int(space.high), log=space.log)
    return FloatDistribution(space.low, space.high, log=space.log)


def compass(
    study: Any,
    constants: dict[str, Constant],
    distributions: dict[str, Any],
    current: dict[str, int | float],
    keys: list[str],
    rng: random.Random,
    known: float | None = None,
) -> tuple[str, int, float | None]:
    """The local phase's next move: a number, a way (+1 up, -1 down) and how far.

    A trial counts here when it differs from ``current`` (the best, as written) in exactly
    one number: that number was tried that way from the best. ``known`` is the best's
    measured value (else the study's first trial of ``current``). In order:

    1. the move that made the best (the best's first trial is one number away from an
       earlier, worse trial) goes on the same way, twice as far (at most four local steps;
       the distance is returned, in the range's own scale, log where it is log);
    2. after the latest finished move lost, the same number the other way;
    3. a number never tried (chosen at random), else one not tried from here, either way;
    4. the way not yet tried of a number tried one way;
    5. any number, any way (everything next to the best has been tried).

    1-4 skip a way that leaves the range (the number sits on its bound) and an inert
    number: one whose move alone gave exactly the value it moved from, a deterministic
    metric that the move did not change (a depth that rounds to the same model). Moves still running
    count as tried, so parallel workers spread out. 3-5 leave the distance to ``local_move``.
    """
    minimize = study.direction.name == "MINIMIZE"

    def worse(value: float | None, than: float | None) -> bool:
        if value is None or than is None:
            return value is None and than is not None
        return value >= than if minimize else value <= than

    def apart(params: dict[str, Any], base: dict[str, Any]) -> list[str]:
        """The numbers whose written values differ between ``params`` and ``base``."""

        def text(key: str, value: Any) -> str:
            return format_value(value, constants[key].text)

        both = [k for k in keys if k in params and k in base]
        return [k for k in both if text(k, params[k]) != text(k, base[k])]

    trials = [t for t in study.get_trials(deepcopy=False) if t.params]
    here = [t for t in trials if t.state.name == "COMPLETE" and not apart(t.params, current)]
    if known is None and here:
        known = here[0].value
    tried: dict[tuple[str, int], Any] = {}
    inert: set[str] = set()
    latest: tuple[str, int] | None = None
    for t in trials:
        one = apart(t.params, current)
        if len(one) != 1 or t.state.name not in ("COMPLETE", "RUNNING"):
            continue
        key = one[0]
        way = 1 if t.params[key] > current[key] else -1
        tried[(key, way)] = t.value
        if t.state.name == "COMPLETE":
            latest = (key, way)
            if known is not None and t.value == known:
                inert.add(key)

    # Across all trials (the best has moved since some): a number that two trials apart in
    # it alone measured is tried; the same value both times makes it inert.
    ever = {k for (k, _) in tried}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    for i, t in enumerate(done):
        for u in done[:i]:
            one = apart(t.params, u.params)
            if len(one) == 1:
                ever.add(one[0])
                if t.value == u.value:
                    inert.add(one[0])

    def fresh(key: str, way: int) -> bool:
        dist, value = distributions[key], float(current[key])
        inside = value < float(dist.high) if way > 0 else value > float(dist.low)
        return inside and key not in inert and (key, way) not in tried

    # 1. The best was reached by one move from a worse point: go on that way, further.
    if here:
        made = here[0]
        for t in reversed(trials[: trials.index(made)]):
            one = apart(t.params, made.params)
            if t.state.name == "COMPLETE" and len(one) == 1 and worse(t.value, made.value):
                key = one[0]
                way = 1 if made.params[key] > t.params[key] else -1
                if fresh(key, way):
                    to, _ = _scale(distributions[key], made.params[key], t.params[key])
                    gone = abs(to(float(made.params[key])) - to(float(t.params[key])))
                    return key, way, min(2 * gone, 4 * _step(distributions[key], to))
                break
    # 2. The latest move lost: the other way.
    if latest is not None and known is not None:
        key, way = latest
        if worse(tried[latest], known) and fresh(key, -way):
            return key, -way, None
    # 3. A number never tried, else one not tried from here.
    untried = [k for k in keys if fresh(k, 1) and fresh(k, -1)]
    never = [k for k in untried if k not in ever]
    if untried:
        return rng.choice(never or untried), rng.choice((-1, 1)), None
    # 4. The other way of a number tried one way.
    halves = [(k, w) for k in keys for w in (1, -1) if fresh(k, w)]
    if halves:
        key, way = rng.choice(halves)
        return key, way, None
    # 5. Anything.
    return rng.choice(keys), rng.choice((-1, 1)), None


def _scale(dist: Any, *values: float) -> tuple[Any, Any]:
    """The range's own scale: (log, exp) for a log range of positive values, else identity."""
    log = bool(dist.log) and float(dist.low) > 0 and all(float(v) > 0 for v in values)
    return (math.log, math.exp) if log else (float, float)


def _step(dist: Any, to: Any) -> float:
    """One local step: LOCAL_STEP of the range, in the scale ``to``."""
    return (to(float(dist.high)) - to(float(dist.low))) * LOCAL_STEP


def local_move(
    rng: random.Random,
    value: int | float,
    dist: Any,
    way: int | None = None,
    distance: float | None = None,
) -> int | float:
    """A value near ``value``, inside the bounds: a quarter to one LOCAL_STEP of the range
    away (in log space for a log range), or exactly ``distance`` away when given.

    ``way`` (+1 up, -1 down) picks the direction; at a bound it turns back; ``None``: random.
    """
    lo, hi = float(dist.low), float(dist.high)
    to, back = _scale(dist, value)
    x, step = to(float(value)), _step(dist, to)
    sign = rng.choice((-1, 1)) if way is None else (1 if way > 0 else -1)
    if (sign > 0 and float(value) >= hi) or (sign < 0 and float(value) <= lo):
        sign = -sign  # at a bound: the only way there is
    far = rng.uniform(0.25, 1.0) * step if distance is None else distance
    moved = min(hi, max(lo, back(x + sign * far)))
    if isinstance(value, int) and not isinstance(value, bool):
        whole = round(moved)
        if whole == value:  # a narrow int range: one step, the way that stays in bounds
            whole = value + sign if lo <= value + sign <= hi else value - sign
        return int(min(hi, max(lo, whole)))
    rounded = round_float(moved)
    return rounded if lo <= rounded <= hi else moved


def spread_point(number: int, dim: int, dist: Any) -> int | float:
    """Trial ``number``'s value for the ``dim``-th focus number: a van der Corput point of
    its range (base 2, 3, 5 ... by dimension), in log space for a log range."""
    base = (2, 3, 5, 7, 11, 13)[dim % 6]
    u, denom, n = 0.0, 1.0, number
    while n:
        n, digit = divmod(n, base)
        denom *= base
        u += digit / denom
    lo, hi = float(dist.low), float(dist.high)
    log = bool(dist.log) and lo > 0
    to, back = (math.log, math.exp) if log else (float, float)
    x = min(hi, max(lo, back(to(lo) + u * (to(hi) - to(lo)))))
    if (
        isinstance(dist.low, int)
        and not isinstance(dist.low, bool)
        and not isinstance(dist.high, float)
    ):
        return int(round(x))
    rounded = round_float(x)
    return rounded if lo <= rounded <= hi else x


def _named(key: str, focus: list[str]) -> bool:
    """``key`` (a name, or path:name when two files share it) is one of ``focus``."""
    name = key.split(":", 1)[-1]
    return name in focus or name.rsplit(".", 1)[-1] in focus


def _stable_hash(name: str) -> int:
    """A seed offset per study name that is the same in every process (hash() is not)."""
    import zlib

    return 0 if name == STUDY_NAME else zlib.crc32(name.encode()) % 100_000


def _same_params(study: Any, trial: Any, constants: dict[str, Constant]) -> Any:
    """An earlier trial of ``study`` with exactly ``trial``'s values as written, or None."""

    def written(params: dict[str, Any]) -> dict[str, str]:
        return {k: format_value(v, constants[k].text) for k, v in params.items() if k in constants}

    mine = written(trial.params)
    for other in study.get_trials(deepcopy=False):
        if other.number != trial.number and other.params and written(other.params) == mine:
            return other
    return None


def _fixed_and_rounded(fixed: dict[str, int | float], base: Any) -> Any:
    """A sampler that keeps ``fixed`` params and rounds the base sampler's floats as written.

    Rounding at sampling time makes each trial's params exactly the file's values,
    so the study's best params are values that really were measured.
    """
    from optuna.samplers import BaseSampler

    class FixedAndRounded(BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}  # independent sampling only: TPE's default, and what fixing needs

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            if name in fixed:
                return fixed[name]
            value = base.sample_independent(study, trial, name, dist)
            if isinstance(value, float):
                rounded = round_float(value)
                # A bound with more digits than we write could round outside: keep it exact.
                value = rounded if dist.low <= rounded <= dist.high else value
            return value

        def before_trial(self, study: Any, trial: Any) -> None:
            base.before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            base.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            base.reseed_rng()

    return FixedAndRounded()


def _check_compatible(study: Any, distributions: dict[str, Any], path: Path | None) -> None:
    """Optuna refuses a parameter whose kind (int/float, log/linear) changed mid-study: say why."""
    seen: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            seen.setdefault(key, dist)
    for key, new in distributions.items():
        old = seen.get(key)
        if old is None:
            continue
        if type(old) is not type(new) or getattr(old, "log", None) != new.log:
            raise ProposerFatal(
                f"{key} changed kind since the Optuna study began (was {old}, now {new}): an int "
                "literal became a float, or a '# search:' hint switched log/linear. Restore it, "
                f"or move {path} away to start a fresh study."
            )


def _add_start(
    study: Any, distributions: dict[str, Any], params: dict[str, int | float], value: float
) -> None:
    """Record the current (best) values and their measured value as a finished trial."""
    import optuna

    if value is None or not math.isfinite(value):
        return
    trial = optuna.trial.create_trial(
        params=dict(params),
        distributions=dict(distributions),
        value=float(value),
        user_attrs={START: True},
    )
    study.add_trial(trial)


def _tell_known(study: Any, trial: Any, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        study.tell(trial.number, float(value))
    else:
        study.tell(trial.number, state=_fail_state())


def _fail_state() -> Any:
    from optuna.trial import TrialState

    return TrialState.FAIL


def _write(root: Path, changes: dict[Constant, int | float]) -> None:
    """Rewrite each touched file once, after every new text is ready."""
    by_file: dict[str, dict[Constant, int | float]] = {}
    for constant, value in changes.items():
        by_file.setdefault(constant.path, {})[constant] = value
    texts = {
        relpath: rewrite((Path(root) / relpath).read_bytes(), file_changes)
        for relpath, file_changes in by_file.items()
    }
    for relpath, data in texts.items():
        (Path(root) / relpath).write_bytes(data)


def _cut_torn_tail(path: Path) -> None:
    """Drop a half-written last record (kill -9 mid-append) so the next append starts clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
