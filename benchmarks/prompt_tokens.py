"""Tokens per proposal at experiments 1, 50 and 200 of a scripted run: is the prompt bounded?

The real loop (``ResearchLoop``) drives the real Anthropic proposer, whose real SDK streams
from the loopback server of the tests (tests/llm_server.py); a scripted "model" on that
server changes one hyperparameter of the example's ``nanochat/train.py`` per experiment
and keeps notes in NOTES.md now and then; before most depth changes it calls the check
tool, and takes a change back that the check finds broken. Only the measurement is stood in for:
an in-process evaluator turns the constants into val_bpb, test_bpb, num_steps,
tokens_per_s and peak_vram_gb, with the metric test's training log attached as an artifact
(and a crash with a traceback for a too deep model); the check's tests answer the same
way; the repository is the in-memory fake of tests/fakes.py, so 200 experiments take
seconds. The program is the example's real program.md (its context files included).

    python benchmarks/prompt_tokens.py                       # 200 experiments, the default budget
    python benchmarks/prompt_tokens.py --save docs/prompt-50.txt   # also the prompt of #50

Tokens: the first request of each proposal (system prompt, tools, the state message) in
characters / 4, and with tiktoken's cl100k_base when it is installed (a proxy: Claude's own
tokenizer is not public; count_tokens needs the API).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes import FakeClock, FakeRepo, MemoryJournal, fake_settings  # noqa: E402
from llm_server import API_KEY, edit, message, result_text, running_server, text  # noqa: E402

from pytest_autoresearch.program.program_md import load_program  # noqa: E402
from pytest_autoresearch.proposers.anthropic import AnthropicProposer  # noqa: E402
from pytest_autoresearch.research.loop import ResearchLoop  # noqa: E402
from pytest_autoresearch.sandbox.evaluate import Evaluation, MetricValue, TestResult  # noqa: E402

TRAIN = "nanochat/train.py"
KNOBS = {  # name: (low, high, best) -- the synthetic objective's optimum
    "MATRIX_LR": (0.005, 0.08, 0.035),
    "EMBEDDING_LR": (0.05, 1.0, 0.45),
    "UNEMBEDDING_LR": (0.001, 0.02, 0.006),
    "WARMDOWN_RATIO": (0.1, 0.9, 0.65),
    "MUON_MOMENTUM": (0.8, 0.99, 0.95),
    "DEPTH": (2, 14, 6),
    "MLP_RATIO": (2, 6, 4),
}
CRASH_LOG = "\n".join(
    [f"nanochat/train.py:{200 + i}: in forward" for i in range(30)]
    + ["torch._dynamo.exc.Unsupported: export of a deep model ran out of the FLOP budget"]
)


class DiffRepo(FakeRepo):
    """The fake repository with real unified diffs (what git would record)."""

    def diff_text(self) -> str:
        base = self.commits[self.best]
        return "".join(
            "".join(difflib.unified_diff(
                base.get(p, "").splitlines(True), self.tree.get(p, "").splitlines(True),
                f"a/{p}", f"b/{p}", n=2,
            ))
            for p in self._changed()
        )  # fmt: skip


class OnDisk:
    """The real proposer edits files on disk; the fake repository holds them in memory."""

    def __init__(self, inner: AnthropicProposer, repo: FakeRepo, root: Path) -> None:
        self.inner, self.repo, self.root, self.name = inner, repo, root, inner.name

    def _around(self, call, *args):
        for rel, body in self.repo.tree.items():
            (self.root / rel).write_text(body)
        try:
            return call(*args)
        finally:
            for rel in self.repo.tree:
                self.repo.tree[rel] = (self.root / rel).read_text()

    def propose(self, ctx):
        return self._around(self.inner.propose, ctx)

    def repair(self, ctx, failure):
        return self._around(self.inner.repair, ctx, failure)

    def observe(self, ctx, proposal, outcome):
        self.inner.observe(ctx, proposal, outcome)

    def close(self):
        self.inner.close()


def constants(source: str) -> dict[str, float]:
    found = re.findall(r"^([A-Z_]+) = ([0-9.e-]+)", source, re.MULTILINE)
    return {k: float(v) for k, v in found if k in KNOBS}


def training_log(knobs: dict[str, float], val: float, rng: random.Random) -> str:
    """What the example's train.py prints (its metric test attaches it as train_log)."""
    steps = int(24 * 8 / knobs["DEPTH"])
    lines = [f"profile cpu on cpu: depth {int(knobs['DEPTH'])}, batch 64, budget 2.0e13 FLOPs"]
    loss = 7.5
    for step in range(1, steps + 1):
        loss = 0.8 * loss + 0.2 * (3.4 + 2.0 * (val - 1.05)) + rng.gauss(0, 0.01)
        if step % 4 == 0 or step == steps:
            lines.append(
                f"step {step:5d} | loss {loss:.4f} | lrm {min(1.0, 2 * (1 - step / steps)):.2f}"
                f" | {step * 1.9:5.1f}s | {100 * step / steps:5.1f}% of budget"
            )
    lines += ["---", f"num_steps:          {steps}", f"final_loss:         {loss:.4f}"]
    lines += [f"tokens_per_s:       {41000.0 / knobs['DEPTH'] * 8:.4f}", "peak_vram_gb:       0.0"]
    return "\n".join(lines)


def evaluator(repo: FakeRepo, rng: random.Random):
    def evaluate(metric_args, guard_args, timeout) -> Evaluation:
        knobs = constants(repo.tree[TRAIN])
        if knobs["DEPTH"] > 10:
            return Evaluation(
                "crash", duration=40.0, returncode=1, log_tail=CRASH_LOG, reason="test_val_bpb"
            )
        miss = sum(((knobs[k] - b) / (hi - lo)) ** 2 for k, (lo, hi, b) in KNOBS.items())
        val = 1.05 + 0.4 * miss + rng.gauss(0, 0.0004)
        stats = {
            "val_bpb": val, "test_bpb": val + 0.012, "num_steps": 24.0 * 8 / knobs["DEPTH"],
            "tokens_per_s": 41000.0 / knobs["DEPTH"] * 8, "peak_vram_gb": 0.0,
        }  # fmt: skip
        goals = {"val_bpb": "min", "test_bpb": "min", "num_steps": "max",
                 "tokens_per_s": "max", "peak_vram_gb": "min"}  # fmt: skip
        metrics = {k: MetricValue(k, v, [v], goals[k], None, None) for k, v in stats.items()}
        log = {"name": "train_log", "test": "tests/test_metric.py::test_train_cpu", "cut": 0}
        log["text"] = training_log(knobs, val, rng)
        return Evaluation(
            "ok", metrics, guards_passed=True, duration=300.0, returncode=0, artifacts=[log]
        )

    return evaluate


def checker(root: Path):
    """The check tool's tests (the guards), run on the file as the model left it."""
    guard = "tests/test_guards.py::test_training_stops_at_its_budget_and_saves_a_model"

    def check(args, timeout) -> Evaluation:
        knobs = constants((root / TRAIN).read_text())
        if knobs["DEPTH"] > 10:
            tail = CRASH_LOG + "\n1 failed, 11 passed in 9.40s"
            failed = TestResult(guard, "failed", 9.0, "E   " + CRASH_LOG.splitlines()[-1])
            return Evaluation("crash", tests=[failed], returncode=1, log_tail=tail, duration=9.4)
        passed = [TestResult(f"{guard}[{i}]", "passed", 0.7, None) for i in range(12)]
        return Evaluation("crash", tests=passed, returncode=0, log_tail="12 passed in 8.12s")

    return check


CHECK = {"type": "tool_use", "name": "check", "input": {}}


def model_turns(root: Path, rng: random.Random, index: int, plan: list) -> list:
    """Scripted answers for one proposal: edit one knob, sometimes a note, describe it."""

    def change(req):
        source = (root / TRAIN).read_text()
        name = rng.choice(sorted(KNOBS))
        old = re.search(rf"^{name} = ([0-9.e-]+)", source, re.MULTILINE)[1]
        lo, hi, _best = KNOBS[name]
        new_text = old
        while new_text == old:  # a real change every time
            integer = float(old).is_integer()
            new = rng.randint(int(lo), int(hi)) if integer else rng.uniform(lo, hi)
            new_text = str(new) if isinstance(new, int) else f"{new:.4g}"
        blocks = [
            edit("str_replace", TRAIN, old_str=f"{name} = {old}", new_str=f"{name} = {new_text}")
        ]
        if name == "DEPTH" and index % 2:  # an architecture change: checked (mostly) first
            blocks.append({**CHECK, "id": f"toolu_check_{index}"})
            state.update(undo=f"{name} = {new_text}", old=old, tried=new_text)
        if index % 10 == 1:
            note = f"- #{index}: {name} matters; tried {new_text}. Next: the schedule.\n"
            blocks.append(edit("insert", "NOTES.md", insert_line=1, insert_text=note))
        state.update(desc=f"{name} {old} -> {new_text}")
        return message(*blocks)

    def describe(req):
        results = [b for b in req.body["messages"][-1]["content"] if b.get("type") == "tool_result"]
        if any(result_text(b).startswith("check FAILED") for b in results):
            # The check found it broken: a shallower model instead, then the description.
            smaller = max(2, int(float(state["old"])) - 2)
            tried = f"DEPTH {state['tried']} failed the check"
            state["desc"] = f"DEPTH {state['old']} -> {smaller} ({tried})"
            plan.insert(0, finish)
            return message(
                edit("str_replace", TRAIN, old_str=state["undo"], new_str=f"DEPTH = {smaller}")
            )
        return finish(req)

    def finish(req):
        return message(text(f"Tried it.\nDescription: {state['desc']}"))

    state: dict[str, str] = {}
    notes_first = index == 1  # the notebook must exist before an insert
    first = [message(edit("create", "NOTES.md", file_text="# Notes\n"))] if notes_first else []
    return [*first, change, describe]


def model(root: Path, rng: random.Random):
    """Answers every request: a proposal's first request plans its turns (model_turns);
    the later ones follow the plan. A proposal the loop sends back (it repeated an earlier
    experiment) or asks again after an outage simply gets a new plan."""
    plan: list = []

    def answer(req):
        messages = req.body["messages"]
        if len(messages) == 1:
            first = messages[0]["content"][0]["text"]
            index = int(first.split()[1]) if first.startswith("Experiment ") else 0
            plan[:] = model_turns(root, rng, index, plan)
        turn = plan.pop(0)
        return turn(req) if callable(turn) else turn

    return answer


def measure(experiments: int, budget: int, save: Path | None) -> dict[int, dict]:
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base")
    except Exception:  # not installed, or no encoding file offline
        enc = None
    rng = random.Random(0)
    example = HERE.parent / "example_project"
    with tempfile.TemporaryDirectory() as tmp, running_server(deadline=600) as server:
        root = Path(tmp)
        for rel in ("program.md", "nanochat", "tests"):
            src = example / rel
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / rel)
        program = load_program(root / "program.md", root)
        repo = DiffRepo({TRAIN: (root / TRAIN).read_text()})
        server.add(*[model(root, rng)] * (8 * experiments))
        proposer = AnthropicProposer(
            api_key=API_KEY, base_url=server.url, max_retries=0, history_tokens=budget
        )
        settings = fake_settings(root, program, experiments, repair_attempts=0)
        settings.check = checker(root)
        settings.record_dir.mkdir(parents=True)
        loop = ResearchLoop(
            settings, repo=repo, proposer=OnDisk(proposer, repo, root), journal=MemoryJournal(),
            evaluate=evaluator(repo, rng), echo=lambda line: None, clock=FakeClock(),
        )  # fmt: skip
        loop.run()
        sizes: dict[int, dict] = {}
        for req in server.posts():
            first = req.body["messages"][0]["content"][0]["text"]
            n = int(first.split()[1]) if first.startswith("Experiment ") else 0
            if n in (1, 50, experiments) and len(req.body["messages"]) == 1 and n not in sizes:
                whole = json.dumps(
                    {k: req.body[k] for k in ("system", "tools", "messages")}, ensure_ascii=False
                )
                shown = req.body["system"][0]["text"] + "\n\n" + first
                sizes[n] = {
                    "chars": len(whole),
                    "tokens_estimate": math.ceil(len(whole) / 4),
                    "cl100k": len(enc.encode(whole)) if enc else None,
                    "state_tokens_estimate": math.ceil(len(first) / 4),
                }
                if n == 50 and save is not None:
                    save.write_text(shown)
        statuses = [r["status"] for r in loop.journal.of("experiment")]
        sizes[0] = {s: statuses.count(s) for s in sorted(set(statuses))}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="experiments (default 200)")
    parser.add_argument("--budget", type=int, default=None, help="notebook tokens")
    parser.add_argument("--save", type=Path, default=None, help="write experiment 50's prompt")
    args = parser.parse_args()
    from pytest_autoresearch.proposers.prompt import HISTORY_TOKENS

    sizes = measure(args.n, args.budget or HISTORY_TOKENS, args.save)
    print(f"statuses: {sizes.pop(0)}")
    print("experiment  chars   tokens(chars/4)  tokens(cl100k)  state message(chars/4)")
    for n, s in sorted(sizes.items()):
        print(
            f"{n:>10}  {s['chars']:>6}  {s['tokens_estimate']:>15}  "
            f"{s['cl100k'] if s['cl100k'] is not None else '-':>14}  "
            f"{s['state_tokens_estimate']:>22}"
        )


if __name__ == "__main__":
    main()
