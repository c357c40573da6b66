"""channel: results over an inherited pipe with a nonce; first message wins, nothing after."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_autoresearch.sandbox.channel import ChannelError, EvalChannel, ResultChannel
from pytest_autoresearch.sandbox.evaluate import evaluate
from pytest_autoresearch.sandbox.isolation import plain_launcher


def run_worker(code: str, timeout: float = 60) -> ResultChannel:
    """Run ``code`` as a worker holding the channel (``spec`` is argv[1]); the parent's end."""
    channel = ResultChannel()
    proc = plain_launcher().popen(
        [sys.executable, "-c", textwrap.dedent(code), channel.argument.split("=", 1)[1]],
        cwd=Path.cwd(),
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        pass_fds=channel.pass_fds,
    )
    channel.started()
    try:
        assert channel.pump(proc, time.monotonic() + timeout), "the worker hung"
    finally:
        proc.kill()
        proc.wait()
        channel.drain()
    return channel


def test_the_first_message_with_the_nonce_wins_and_later_writes_are_ignored() -> None:
    channel = run_worker(
        """
        import json, os, sys
        from pytest_autoresearch.sandbox.channel import EvalChannel
        worker = EvalChannel.open(sys.argv[1])
        fd, nonce = os.dup(worker._fd), worker._nonce  # what in-process code could steal
        os.write(fd, b"junk without the nonce\\n")
        os.write(fd, b"0123456789abcdef0123456789abcdef {\\"version\\": 1, \\"forged\\": 1}\\n")
        worker.send({"version": 1, "metrics": [], "value": "real"})
        worker.send({"version": 1, "metrics": [], "value": "second send"})
        os.write(fd, (nonce + " " + json.dumps({"version": 1, "value": "after"}) + "\\n").encode())
        """
    )
    data, problem = channel.result()
    assert data == {"version": 1, "metrics": [], "value": "real"} and problem == ""
    assert channel.ignored == 2  # the junk and the wrong nonce; the late forgery is not even read


def test_a_large_document_does_not_block_the_worker() -> None:
    channel = run_worker(
        """
        import sys
        from pytest_autoresearch.sandbox.channel import EvalChannel
        EvalChannel.open(sys.argv[1]).send({"version": 1, "blob": "x" * 5_000_000})
        """
    )
    data, _ = channel.result()
    assert data is not None and len(data["blob"]) == 5_000_000


def test_no_message_and_a_broken_message_say_so() -> None:
    assert run_worker("pass").result() == (None, "the evaluation reported no results")
    data, problem = run_worker(
        """
        import os, sys
        from pytest_autoresearch.sandbox.channel import EvalChannel
        worker = EvalChannel.open(sys.argv[1])
        os.write(worker._fd, (worker._nonce + " {not json\\n").encode())
        """
    ).result()
    assert data is None and problem.startswith("the evaluation's results are not valid JSON")


def test_the_nonce_fd_is_closed_and_the_result_fd_not_inherited_by_exec() -> None:
    channel = run_worker(
        """
        import os, subprocess, sys
        from pytest_autoresearch.sandbox.channel import EvalChannel
        w, n = (int(x) for x in sys.argv[1].split(","))
        worker = EvalChannel.open(sys.argv[1])
        try:
            os.fstat(n)
            nonce_fd = "open"
        except OSError:
            nonce_fd = "closed"
        child = subprocess.run([sys.executable, "-c", f"import os; os.fstat({w})"], close_fds=False)
        worker.send({"version": 1, "nonce_fd": nonce_fd, "exec_child_rc": child.returncode})
        """
    )
    data, _ = channel.result()
    assert data == {"version": 1, "nonce_fd": "closed", "exec_child_rc": 1}


@pytest.mark.parametrize("spec", ["x", "1", "3,4,5"])
def test_a_bad_channel_option_is_one_clear_error(spec: str) -> None:
    with pytest.raises(ChannelError, match="internal to the research loop's evaluations"):
        EvalChannel.open(spec)


def test_closed_fds_are_one_clear_error() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ChannelError, match="the fds are not open"):
        EvalChannel.open(f"{w},{r}")


AFTER_THE_FACT = """
import atexit, gc, json, os, threading, time

from pytest_autoresearch import metric
from pytest_autoresearch.sandbox.channel import EvalChannel

# Experiment code at import: steal the plugin's channel (fd and nonce) from memory, then try
# to report loss 0 *after* pytest reported the real value.
stolen = [o for o in gc.get_objects() if isinstance(o, EvalChannel)]
FD, NONCE = os.dup(stolen[0]._fd), stolen[0]._nonce


def forged():
    doc = {"version": 1, "exitstatus": 0, "tests": [],
           "metrics": [{"name": "loss", "value": 0.0, "samples": [0.0], "goal": "min"}]}
    return (NONCE + " " + json.dumps(doc) + "\\n").encode()


def late():
    time.sleep(0.5)
    os.write(FD, forged())


atexit.register(lambda: os.write(FD, forged()))
threading.Thread(target=late, daemon=False).start()


@metric(goal="min")
def test_loss():
    return 7.0
"""


NO_WATCH = {"AUTORESEARCH_TAMPER_CHECK": "off"}  # the channel alone, without tamper.py


@pytest.mark.slow
def test_rewrites_after_the_report_never_count(tmp_path: Path) -> None:
    """An atexit hook and a thread holding the stolen nonce write loss 0 after the report:
    never taken (the first message wins), and the extra lines reject the run as tampering."""
    (tmp_path / "test_m.py").write_text(AFTER_THE_FACT)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **NO_WATCH}
    ev = evaluate(tmp_path, ["test_m.py"], [], 60, env=env)
    assert ev.status == "rejected", ev.reason + ev.log_tail
    assert "3 messages with this run's nonce" in ev.reason and not ev.metrics


def test_a_forgery_written_first_is_caught_by_the_plugins_own_message(tmp_path: Path) -> None:
    """The documented limit: in-process code writing *before* the report is first; the
    plugin's own message after it gives it away (and tamper.py catches the gc hunt first)."""
    source = AFTER_THE_FACT.replace("atexit.register(lambda: os.write(FD, forged()))", "")
    source = source.replace("threading.Thread(target=late, daemon=False).start()", "")
    source += "\nos.write(FD, forged())\n"
    (tmp_path / "test_m.py").write_text(source)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ev = evaluate(tmp_path, ["test_m.py"], [], 60, env={**env, **NO_WATCH})
    assert ev.status == "rejected" and "2 messages" in ev.reason, ev.reason + ev.log_tail
    assert not ev.metrics  # the forged 0.0 is never a value
    watched = evaluate(tmp_path, ["test_m.py"], [], 60, env=env)
    assert watched.status == "rejected", watched.reason + watched.log_tail
    assert "gc.get_objects() called from " in watched.reason, watched.reason
