"""Finding and rewriting tunable constants: real files, byte-exact checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_autoresearch.proposers.constants import (
    Constant,
    Hint,
    HintError,
    Space,
    default_space,
    find_constants,
    format_value,
    parse_spec,
    rewrite,
    suggest_spec,
    untuned,
)

KARPATHY_BLOCK = '''"""Train a tiny model. Edit the hyperparameters below directly."""

import math

# -----------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags)
DEPTH            = 4          # number of transformer layers
MATRIX_LR        = 0.04       # Muon learning rate
EMBEDDING_LR     = 3e-4       # Adam, scientific notation
WEIGHT_DECAY     = 1.0E-02    # upper-case E, zero-padded exponent
LOGIT_SOFTCAP    = -15.0      # negative float
TOTAL_BATCH_SIZE = 524_288    # underscores
WARMUP_ITERS: int = 0         # annotated
ADAM_BETA2: float = .95       # annotated, leading dot
_PRIVATE_SCALE   = 2
MASK             = 0xFF       # hex: a bit pattern, not a knob
USE_COMPILE      = True       # bool: not a number to tune
RUN_NAME         = "d4"       # string
NUM_STEPS        = 10 * 100   # expression, not a literal
START, END       = 1, 2       # tuple target
A = B            = 7          # two targets
REASSIGNED       = 1
REASSIGNED       = 2          # bound twice: rewriting either is moot
COUNTER          = 5
COUNTER         += 1
lowercase_lr     = 0.01       # not UPPER_CASE
__version__      = "1.0"

if math.pi > 3:
    INSIDE_IF    = 3          # not module level


def train():
    LOCAL_LR = 0.5            # inside a function
    return LOCAL_LR


class Config:
    CLASS_LR = 0.1            # inside a class
'''


def constants_of(text: str, path: str = "train.py") -> dict[str, Constant]:
    return {c.name: c for c in find_constants(text, path)}


def test_finds_exactly_the_module_level_numeric_constants():
    found = constants_of(KARPATHY_BLOCK)
    assert list(found) == [
        "DEPTH",
        "MATRIX_LR",
        "EMBEDDING_LR",
        "WEIGHT_DECAY",
        "LOGIT_SOFTCAP",
        "TOTAL_BATCH_SIZE",
        "WARMUP_ITERS",
        "ADAM_BETA2",
        "_PRIVATE_SCALE",
    ]
    values = {name: c.value for name, c in found.items()}
    assert values == {
        "DEPTH": 4,
        "MATRIX_LR": 0.04,
        "EMBEDDING_LR": 3e-4,
        "WEIGHT_DECAY": 0.01,
        "LOGIT_SOFTCAP": -15.0,
        "TOTAL_BATCH_SIZE": 524288,
        "WARMUP_ITERS": 0,
        "ADAM_BETA2": 0.95,
        "_PRIVATE_SCALE": 2,
    }
    assert found["DEPTH"].integer and found["TOTAL_BATCH_SIZE"].integer
    assert not found["LOGIT_SOFTCAP"].integer
    assert found["LOGIT_SOFTCAP"].text == "-15.0"
    assert found["TOTAL_BATCH_SIZE"].text == "524_288"
    assert found["WEIGHT_DECAY"].text == "1.0E-02"
    assert found["DEPTH"].where == "train.py:7"


def test_rewrite_changes_only_the_literals():
    source = KARPATHY_BLOCK.encode()
    found = constants_of(KARPATHY_BLOCK)
    new_values = {
        "DEPTH": 12,
        "MATRIX_LR": 0.0123456,
        "EMBEDDING_LR": 2.5e-3,
        "WEIGHT_DECAY": 0.000333,
        "LOGIT_SOFTCAP": -7.25,
        "TOTAL_BATCH_SIZE": 1048576,
        "WARMUP_ITERS": 250,
        "ADAM_BETA2": 0.9,
        "_PRIVATE_SCALE": 3,
    }
    result = rewrite(source, {found[n]: v for n, v in new_values.items()}).decode()
    before, after = KARPATHY_BLOCK.splitlines(), result.splitlines()
    assert len(before) == len(after)
    changed = {found[n].lineno - 1 for n in new_values}
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        if i not in changed:
            assert old == new, f"line {i + 1} changed"
    # On the changed lines, everything but the literal is kept: names, alignment, comments.
    for constant in found.values():
        old, new = before[constant.lineno - 1], after[constant.lineno - 1]
        assert new.startswith(old[: constant.start])
        assert new.endswith(old[constant.end :])
    assert "DEPTH            = 12          # number of transformer layers" in after
    assert "MATRIX_LR        = 0.01235       # Muon learning rate" in after
    assert "EMBEDDING_LR     = 2.5e-3       # Adam, scientific notation" in after
    assert "WEIGHT_DECAY     = 3.33E-04    # upper-case E, zero-padded exponent" in after
    assert "LOGIT_SOFTCAP    = -7.25      # negative float" in after
    assert "TOTAL_BATCH_SIZE = 1_048_576    # underscores" in after
    assert "WARMUP_ITERS: int = 250         # annotated" in after
    assert "ADAM_BETA2: float = .9       # annotated, leading dot" in after
    # The rewritten file reads back to the new values.
    again = {c.name: c.value for c in find_constants(result, "train.py")}
    assert again["DEPTH"] == 12 and again["MATRIX_LR"] == 0.01235
    assert again["TOTAL_BATCH_SIZE"] == 1048576 and again["LOGIT_SOFTCAP"] == -7.25


def test_rewrite_keeps_crlf_and_multibyte_text_before_the_literal():
    # ast columns count UTF-8 bytes; the rewrite must too.
    source = 'SCALE: "réglage π" = 0.5  # ünïcode\r\nDEPTH = 4\r\n'.encode()
    found = constants_of(source.decode())
    assert found["SCALE"].text == "0.5"
    result = rewrite(source, {found["SCALE"]: 0.25, found["DEPTH"]: 6})
    assert result == 'SCALE: "réglage π" = 0.25  # ünïcode\r\nDEPTH = 6\r\n'.encode()


def test_rewrite_refuses_a_file_that_changed_since_it_was_read():
    found = constants_of("LR = 0.04\n")
    with pytest.raises(ValueError, match="expected '0.04'.*file changed"):
        rewrite(b"LR = 0.05\n", {found["LR"]: 0.1})


@pytest.mark.parametrize(
    ("value", "original", "expected"),
    [
        (6, "4", "6"),
        (6.4, "4", "6"),  # ints stay ints
        (-3, "-2", "-3"),
        (1048576, "524_288", "1_048_576"),
        (0.0123456, "0.04", "0.01235"),
        (2.0, "1.0", "2.0"),
        (12345.678, "100.0", "12350.0"),
        (0.00001234, "0.001", "0.00001234"),
        (2.5e-4, "3e-4", "2.5e-4"),
        (2e-4, "3.0e-4", "2.0e-4"),
        (1.234e-5, "1.0E-04", "1.234E-05"),
        (5e6, "1e+6", "5e+6"),
        (0.25, ".5", ".25"),
        (-0.75, "-1.5", "-0.75"),
    ],
)
def test_format_value_follows_the_original_style(value, original, expected):
    assert format_value(value, original) == expected


@pytest.mark.parametrize(
    ("value", "space"),
    [
        (0.04, Space(0.004, 0.4, True, False)),
        (3.0, Space(0.3, 30.0, True, False)),
        (0.2, Space(0.02, 1.0, True, False)),  # a fraction stays within (0, 1]
        (0.95, Space(0.9, 1.0, False, False)),  # near-one fraction: linear up to 1
        (0.0, Space(0.0, 0.1, False, False)),
        (-2.0, Space(-4.0, -1.0, False, False)),
        (4, Space(2, 8, False, True)),
        (1, Space(1, 3, False, True)),
        (64, Space(32, 128, True, True)),
        (0, Space(0, 4, False, True)),
        (-3, Space(-6, -1, False, True)),
    ],
)
def test_default_space(value, space):
    got = default_space(value)
    assert got.integer == space.integer and got.log == space.log
    assert got.low == pytest.approx(space.low) and got.high == pytest.approx(space.high)
    assert got.contains(value)


def test_hints_set_ranges_and_freeze():
    found = constants_of(
        "LR = 0.04  # learning rate; search: 0.001..0.1 log\n"
        "DEPTH = 4  # search: 2..12\n"
        "SEED = 42  # search: off\n"
        "DROPOUT = 0.1  # search: 0..0.5 linear\n"
        "PLAIN = 1.5  # no hint here\n"
        "NOTE = 2  # 'research: 1..2' is not a hint\n"
    )
    assert found["LR"].hint.space == Space(0.001, 0.1, True, False)
    assert found["DEPTH"].hint.space == Space(2, 12, False, True)
    assert found["SEED"].hint.frozen and found["SEED"].hint.space is None
    assert found["DROPOUT"].hint.space == Space(0.0, 0.5, False, False)
    assert found["PLAIN"].hint is None and found["NOTE"].hint is None


def test_a_hash_inside_a_string_is_not_a_hint():
    found = constants_of('X = 3; LABEL = "# search: off"\n')
    assert found["X"].hint is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("LR = 0.04  # search: 0.001-0.1", r"train.py:1 \(LR\): cannot read the hint.*LR = 0.04"),
        ("LR = 0.04  # search: 0.1..0.001", "needs finite bounds with LOW < HIGH"),
        ("LR = 0.04  # search: a..b", "are not numbers"),
        ("LR = 0.04  # search: 0..0.1 log", "a log range needs LOW > 0"),
        ("LR = 0.04  # search: 0.001..0.1 cubic", "unknown word 'cubic' in .*; use log or linear"),
        ("DEPTH = 4  # search: 1.5..8", r"DEPTH is an int.*write DEPTH = 4.0 to tune it"),
        ("LR = 0.5  # search: 0.001..0.1", "the value 0.5 lies outside.*widen the range"),
    ],
)
def test_bad_hints_say_where_and_how_to_fix(line, message):
    with pytest.raises(HintError, match=message):
        find_constants(line + "\n", "train.py")


def test_syntax_errors_surface():
    with pytest.raises(SyntaxError):
        find_constants("LR = = 0.04\n", "train.py")


def test_importing_constants_stays_light():
    code = (
        "import sys\n"
        "import pytest_autoresearch.proposers.constants\n"
        "import pytest_autoresearch.proposers.optuna\n"
        "heavy = {'optuna', 'torch', 'git', 'anthropic', 'openai', 'matplotlib'}\n"
        "heavy &= set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- knobs marked with '# search:' (lowercase names, class fields, dict values) ----------

NANOGPT_STYLE = '''"""A nanoGPT-style config: lowercase module variables, a dataclass, a dict."""
from dataclasses import dataclass, field

out_dir = "out"
learning_rate = 6e-4  # max learning rate; search: log 6e-5..6e-3
max_iters = 5000      # search: int 1000..20000
weight_decay = 1e-1   # search: auto
beta2 = 0.95          # search: off
min_lr = 6e-5         # no comment: left alone
eval_interval = 250


@dataclass
class GPTConfig:
    n_layer: int = 12           # search: int 2..24
    dropout: float = 0.0        # search: 0.0..0.3
    bias: bool = True           # search: binary flag (prose: not a spec)
    n_head: int = field(default=12)  # search: int 4..16
    vocab_size: int = 50304


optim = {
    "lr": 3e-4,                 # search: log 1e-5..1e-2
    "betas": {"beta1": 0.9},    # search: 0.8..0.99
    "eps": 1e-8,
}
sched = dict(warmup=100,        # search: int log 10..1000
             decay=0.1)
'''


def test_search_comments_make_any_module_level_number_a_knob():
    found = constants_of(NANOGPT_STYLE)
    assert list(found) == [
        "learning_rate",
        "max_iters",
        "weight_decay",
        "beta2",
        "GPTConfig.n_layer",
        "GPTConfig.dropout",
        "GPTConfig.n_head",
        "optim.lr",
        "optim.betas.beta1",
        "sched.warmup",
    ]
    assert found["learning_rate"].hint.space == Space(6e-5, 6e-3, True, False)
    assert found["max_iters"].hint.space == Space(1000, 20000, False, True)
    assert found["weight_decay"].hint == Hint(None)  # auto: the proposer's default range
    assert found["beta2"].hint.frozen
    assert found["GPTConfig.n_layer"].hint.space == Space(2, 24, False, True)
    assert found["GPTConfig.n_head"].value == 12
    assert found["optim.betas.beta1"].hint.space == Space(0.8, 0.99, False, False)
    assert found["sched.warmup"].hint.space == Space(10, 1000, True, True)
    # The numbers without a comment are offered as suggestions, not tuned.
    assert [c.name for c in untuned(NANOGPT_STYLE, "train.py")] == [
        "min_lr",
        "eval_interval",
        "GPTConfig.vocab_size",
        "optim.eps",
        "sched.decay",
    ]


def test_rewriting_knobs_keeps_every_other_byte():
    source = NANOGPT_STYLE.encode()
    found = constants_of(NANOGPT_STYLE)
    changes = {
        found["learning_rate"]: 1.234e-3,
        found["GPTConfig.n_layer"]: 6,
        found["GPTConfig.n_head"]: 8,
        found["optim.lr"]: 2e-4,
        found["optim.betas.beta1"]: 0.85,
        found["sched.warmup"]: 400,
    }
    after = rewrite(source, changes).decode()
    assert "learning_rate = 1.234e-3  # max learning rate; search: log 6e-5..6e-3" in after
    assert "    n_layer: int = 6           # search: int 2..24" in after
    assert "    n_head: int = field(default=8)  # search: int 4..16" in after
    assert '    "lr": 2e-4,                 # search: log 1e-5..1e-2' in after
    assert '    "betas": {"beta1": 0.85},    # search: 0.8..0.99' in after
    assert "sched = dict(warmup=400,        # search: int log 10..1000" in after
    changed = {c.lineno for c in changes}
    pairs = zip(NANOGPT_STYLE.splitlines(), after.splitlines(), strict=True)
    for n, (old, new) in enumerate(pairs, 1):
        if n not in changed:
            assert old == new
    again = constants_of(after)
    assert again["optim.lr"].value == 2e-4 and again["GPTConfig.n_layer"].value == 6


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    lr = 0.1  # search: 0.01..1\n", r"t.py:2: this '# search:' comment is not"),
        ("lr = 0.1  # search: 0.01..1\nlr = 0.2\n", r"t.py:1 \(lr\): lr is bound more than once"),
        ("c = {'a': 1, 'b': 2}  # search: 1..3\n", r"t.py:1: one '# search:' comment for several"),
        ("c = {'lr': 0.1}  # search: 0.01..1\nc['lr'] = 0.2\n", "c is changed later at module"),
        ("mask = 0xFF  # search: 1..255\n", r"0xFF is a hex/octal/binary literal"),
        ("flag = True  # search: 0..1\n", r"t.py:1: this '# search:' comment is not on a number"),
        ("class C:\n    x = 1  # search: 0..2\n    x = 2\n", r"C.x is bound more than once"),
        ("lr = 0.1  # search: int 0..1\n", r"asks for an int but 0.1 is a float literal"),
        (
            "n = 4  # search: float 1..8\n",
            r"asks for a float but 4 is an int literal; write n = 4.0",
        ),
        ("lr = 0.1  # search: 0.01..1 0.1..2\n", "has two ranges"),
        ("lr = 0.1  # search: 0.01 1\n", "a range is LOW..HIGH"),
    ],
)
def test_a_search_comment_that_cannot_apply_says_why(source, message):
    with pytest.raises(HintError, match=message):
        find_constants(source, "t.py")


def test_prose_that_says_search_is_not_a_hint():
    source = "def f():\n    x = 1  # search: binary search over the batch sizes\n"
    assert find_constants(source, "t.py") == []
    source = (
        "n_probe = 8  # Search: linear probing would be slower\nDEPTH = 4  # search: see docs\n"
    )
    assert [(c.name, c.hint) for c in find_constants(source, "t.py")] == [("DEPTH", None)]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            "search:\n  other.py:\n    lr: 0..1\n",
            "search names 'other.py', which is not an editable",
        ),
        ("search:\n  train.py:\n    lr: 0..\n", "search: train.py: lr: cannot read the hint"),
        ("search: [lr]\n", "search must map each editable file to its numbers and ranges"),
        ("search:\n  train.py:\n    lr: 0.5\n", "lr: 0.5 is not a range like 'log 1e-5..1e-1'"),
        ("search:\n  train.py:\n    2lr: 0..1\n", "'2lr' is not a name like learning_rate"),
    ],
)
def test_program_md_search_key_errors_name_the_line_and_show_the_form(tmp_path, search, message):
    from pytest_autoresearch.program.program_md import ProgramError, parse_program

    (tmp_path / "train.py").write_text("lr = 0.1\n")
    (tmp_path / "other.py").write_text("lr = 0.1\n")
    text = f"---\neditable: [train.py]\nobjective: loss\n{search}---\n"
    with pytest.raises(ProgramError) as excinfo:
        parse_program(text, tmp_path / "program.md", tmp_path)
    error = str(excinfo.value)
    assert error.startswith(f"{tmp_path / 'program.md'}:4: ") and message in error
    assert "write e.g. search: {train.py: {learning_rate: " in error and "\n" not in error


def test_program_md_search_key_reads_yaml_off_as_off(tmp_path):
    from pytest_autoresearch.program.program_md import parse_program

    (tmp_path / "train.py").write_text("LR = 0.1\n")
    text = "---\neditable: [train.py]\nobjective: loss\nsearch: {train.py: {LR: off}}\n---\n"
    program = parse_program(text, tmp_path / "program.md", tmp_path)
    (declared,) = program.search
    assert (declared.path, declared.name, declared.spec.mode) == ("train.py", "LR", "off")


@pytest.mark.parametrize(
    "spec",
    ["log 1e-5..1e-1", "1e-5..1e-1 log", "int 2..12", "int log 10 .. 1000", "-1..-0.5", "auto"],
)
def test_spec_words_go_in_any_order(spec):
    parsed = parse_spec(spec)
    assert parsed.mode in ("range", "auto")


def test_declared_ranges_apply_to_names_without_comments_and_win_over_comments():
    source = "min_lr = 6e-5\nlr = 0.1  # search: 0.01..1\nclass C:\n    n: int = 4\n"
    declared = {
        "min_lr": parse_spec("log 1e-6..1e-4"),
        "lr": parse_spec("off"),
        "C.n": parse_spec("int 1..8"),
    }
    found = {c.name: c for c in find_constants(source, "t.py", declared)}
    assert found["min_lr"].hint.space == Space(1e-6, 1e-4, True, False)
    assert found["lr"].hint.frozen
    assert found["C.n"].hint.space == Space(1, 8, False, True)
    with pytest.raises(
        HintError, match=r"t.py has no tunable number called 'nope'.*it has: min_lr"
    ):
        find_constants(source, "t.py", {"nope": parse_spec("0..1")})


@pytest.mark.parametrize(("value", "text"), [(6e-4, "6e-4"), (12, "12"), (0.95, "0.95"), (0, "0")])
def test_suggested_specs_read_back_and_hold_the_value(value, text):
    spec = suggest_spec(value, text)
    constant = constants_of(f"x = {text}  # search: {spec}\n")["x"]
    assert constant.hint.space.contains(value)
    assert constant.hint.space.integer == isinstance(value, int)
