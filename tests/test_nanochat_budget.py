"""The example harness's own measures of what training spent (issue 20, item 3).

The real-loop attacks are in test_attacks_budget.py; these pin the parts they rest on: the
batch server's count is exact whatever the reader does, the FLOPs per token read from an
exported graph equal train.py's count for the default model, and the thresholds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from nanochat_support import EXAMPLE, example_env, shared_cache

pytest.importorskip("torch")
pytest.importorskip("tiktoken")

READER = """
import os, sys
want = int(sys.argv[1])
while want:
    want -= len(os.read(0, want))
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for key, value in example_env(shared_cache(tmp_path_factory), EXAMPLE).items():
        mp.setenv(key, value)
    mp.syspath_prepend(str(EXAMPLE))
    from nanochat import prepare

    yield prepare, prepare.load_data(prepare.get_profile("cpu"))
    mp.undo()


@pytest.mark.parametrize("taken", [0, 1, 777, 5000])
def test_the_batch_server_counts_exactly_what_was_taken(harness, taken):
    prepare, data = harness
    server = prepare.BatchServer(data)
    row = server.row_bytes
    # The reader takes whole windows and a few bytes of the next: those do not count.
    want = taken * row + (row // 2 if taken else 0)
    proc = subprocess.run([sys.executable, "-c", READER, str(want)], stdin=server.read_fd,
                          timeout=60)  # fmt: skip
    served = server.finish()
    assert proc.returncode == 0
    assert served["windows"] == taken and served["tokens"] == taken * data.profile.seq_len
    if taken >= 100:  # pages freed: the writer, waiting on a full pipe, saw the reads
        assert served["first_take"] is not None and served["first_take"] <= served["last_take"]


SLOW_READER = """
import os, time
for _ in range(20):
    n = 4160
    while n:
        n -= len(os.read(0, n))
    time.sleep(0.1)
time.sleep(1.0)
"""


def test_the_batch_server_sees_when_batches_are_taken(harness):
    """The first and last take are the first and last read, not the exit: 20 reads 0.1 s
    apart, then a second of something else."""
    import time

    prepare, data = harness
    server = prepare.BatchServer(data)
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", SLOW_READER], stdin=server.read_fd, timeout=60)
    end = time.monotonic()
    served = server.finish()
    span = served["last_take"] - served["first_take"]
    assert 1.8 <= span < 1.8 + 1.5, span  # 19 gaps of 0.1 s, and the reader's slow start
    assert end - served["last_take"] >= 0.9, end - served["last_take"]
    assert served["first_take"] - start < 1.5 + 10  # interpreter start-up, on loaded cores


def test_served_windows_are_the_local_ones(harness):
    """The trainer sees the same windows whether the harness serves them or it reads the
    cache itself (standalone runs): one order, the harness's."""
    prepare, data = harness
    local = next(prepare.train_windows(data))
    server = prepare.BatchServer(data)
    try:
        raw = b""
        while len(raw) < local.nbytes:
            raw += os.read(server.read_fd, local.nbytes - len(raw))
    finally:
        server.finish()
    assert np.array_equal(np.frombuffer(raw, dtype="<u2").reshape(local.shape), local)


def test_flops_per_token_of_the_exported_graph_equal_train_pys_count(harness, tmp_path):
    prepare, data = harness
    code = (
        "import sys; from nanochat import prepare, train; p = prepare.get_profile('cpu'); "
        "c = train.make_config(p); m = train.GPT(c); m.init_weights(); "
        "prepare.save_model(m, sys.argv[1], p); "
        "print(train.count_step_flops(c, 3) / (3 * p.seq_len))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], cwd=EXAMPLE,
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    counted = float(out.stdout.split()[-1])
    model = prepare.load_model(tmp_path / "m.pt")
    assert prepare.train_flops_per_token(model, data.profile) == counted


def test_the_thresholds(harness):
    prepare, data = harness
    flops = prepare.Budget("flops", 1e10)
    spent = {"tokens": 10_000, "flops_per_token": 1.2e6, "seconds": 99.0}  # 1.2x
    assert prepare.overspend(flops, data.profile, spent) is None
    spent["flops_per_token"] = 1.3e6
    assert "1.30x its 1e+10 FLOPs budget" in prepare.overspend(flops, data.profile, spent)
    seconds = prepare.Budget("time", 4.0)  # batches for 1.25 x 4 + the CPU profile's 8 s
    ok = {"seconds": 12.9, "tail": 59.0}
    assert prepare.overspend(seconds, data.profile, ok) is None
    long = prepare.overspend(seconds, data.profile, {**ok, "seconds": 13.1})
    assert "took batches for 13.1s of wall clock" in long
    late = prepare.overspend(seconds, data.profile, {**ok, "tail": 61.0})  # read ahead, then
    assert "ran 61.0s after it took its last batch" in late  # trained on what it kept
    assert prepare.cpu_ceiling(seconds) is None
    assert prepare.cpu_ceiling(prepare.Budget("flops", 1.5e11)) == pytest.approx(57.5)
