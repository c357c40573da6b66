"""report.html: written from the record, escaped and scrubbed, served live, regenerated later.

The browser tests drive the system's Chromium (/usr/bin/chromium, Debian's package) with
Playwright; they are skipped, saying why, where either is missing (.ci/run installs both).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from page_records import synthetic_record
from toyproject import git, make_toy, step

from pytest_autoresearch.reporting.html import PAGE_NAME, page_version, render_page, write_page
from pytest_autoresearch.reporting.run_view import read_run
from pytest_autoresearch.reporting.serve import PageServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# -- the page as text ----------------------------------------------------------------------


def test_text_is_escaped_and_secrets_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "hunter2-very-secret")
    record = synthetic_record(tmp_path / "t1", 3)
    lines = (record / "experiments.jsonl").read_text().splitlines()
    evil = json.loads(lines[-2])  # the last experiment
    assert evil["event"] == "experiment"
    evil["description"] = '<script>alert("x")</script> key sk-ant-abcdefghijklmnop0123'
    evil["log_tail"] = "token hunter2-very-secret in the log"
    lines[-2] = json.dumps(evil)
    (record / "experiments.jsonl").write_text("\n".join(lines) + "\n")
    page = write_page(record).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert "sk-ant-abcdefghijklmnop0123" not in page and "hunter2-very-secret" not in page
    assert page.count("[REDACTED]") >= 2
    assert page.count("<script>") == 1  # the page's own, allowed by hash
    assert 'class="exp"' in page and page.count('<details class="exp"') == 3


def test_old_and_partial_records_render(tmp_path: Path) -> None:
    record = tmp_path / "old"
    record.mkdir()
    rows = [
        {
            "event": "experiment",
            "index": 1,
            "status": "discard",
            "description": "a",
            "objective": 2,
        },
        {"event": "experiment", "index": 2, "status": "keep", "description": "b"},
        {"event": "experiment", "index": "x"},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\nnot json\n" + '{"event": "exp'
    (record / "experiments.jsonl").write_text(text)  # a torn last line is left alone
    view = read_run(record)
    assert [r["index"] for r in view.records] == [1, 2] and view.skipped_lines == 1
    path = write_page(record, view)
    assert path.read_text().count('<details class="exp"') == 2
    assert "no end recorded" in path.read_text()
    assert (record / "experiments.jsonl").read_text().endswith('{"event": "exp')
    assert sorted(p.name for p in record.iterdir()) == ["experiments.jsonl", PAGE_NAME]


def test_page_says_live_then_ended(tmp_path: Path) -> None:
    live = read_run(synthetic_record(tmp_path / "a", 4, total=10, ended=False))
    ended = read_run(synthetic_record(tmp_path / "b", 4))
    assert live.live and not ended.live
    assert 'data-live="1"' in render_page(live) and "left at this pace" in render_page(live)
    page = render_page(ended)
    assert 'data-live="0"' in page and "reached 4 experiments" in page
    assert "<h2>Workers (2)</h2>" in page and "<td>w1</td>" in page
    assert "<h3>Parameters</h3>" in page and "<code>LR</code>" in page and "---|" not in page
    assert page_version(page.encode()[:400]) == str(ended.version)


# -- the server ----------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, dict(resp.getheaders())


def test_server_serves_the_page_and_state_and_nothing_else(tmp_path: Path) -> None:
    record = synthetic_record(tmp_path / "t1", 5, total=10, ended=False)
    server = PageServer(record, "127.0.0.1", 0)
    server.start()
    hung = None
    try:
        status, body, headers = _get(server.port, "/state.json")
        state = json.loads(body)
        assert status == 200 and state == {
            "version": state["version"],
            "live": True,
            "experiments": 5,
        }
        status, page, headers = _get(server.port, "/")
        assert status == 200 and page.count(b'<details class="exp"') == 5
        assert "script-src 'sha256-" in headers["Content-Security-Policy"]
        for path in ("/experiments.jsonl", "/../../etc/passwd", "/x", "/tmp"):
            assert _get(server.port, path)[0] == 404
        with socket.create_connection(("127.0.0.1", server.port)) as s:  # a browser that leaves
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        hung = socket.create_connection(("127.0.0.1", server.port))  # one that never finishes
        hung.sendall(b"GET /state.js")
        with open(record / "experiments.jsonl", "a") as f:
            f.write(json.dumps({"event": "end", "reason": "done", "at": None}) + "\n")
        state2 = json.loads(_get(server.port, "/state.json")[1])
        assert state2["version"] > state["version"] and state2["live"] is False
        assert b'data-live="0"' in _get(server.port, "/")[1]
    finally:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0  # the hung client holds nothing up
        if hung is not None:
            hung.close()


def test_serve_option_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--autoresearch-serve", "host:port")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not [[]HOST:[]]PORT*0 for any free port*"])


# -- --autoresearch-report -----------------------------------------------------------------


def test_report_regenerates_from_a_record_without_running(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_never_run(): raise AssertionError")
    record = synthetic_record(pytester.path / ".autoresearch" / "nov23", 12)
    result = pytester.runpytest("--autoresearch-report", "nov23")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        ["autoresearch report nov23: report.md*report.html in *", "*val_bpb*"]
    )
    assert "test_never_run" not in result.stdout.str()
    assert (record / "report.md").read_text().startswith("# Research report: val_bpb")
    assert (record / PAGE_NAME).read_text().count('<details class="exp"') == 12
    missing = pytester.runpytest("--autoresearch-report", "dec01")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*no record at *dec01; records here: nov23*"])


# -- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium chromium-driver")
    sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _watch(page) -> list[str]:
    """Console errors (a CSP violation shows up here) and requests that left the machine."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(("file:", "data:", "http://127.0.0.1"))
            else problems.append(r.url)
        ),
    )
    return problems


def test_page_loads_from_a_file_with_the_network_off(browser, tmp_path: Path) -> None:
    record = synthetic_record(tmp_path / "t1", 20)
    path = write_page(record)
    context = browser.new_context(offline=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems = _watch(page)
    page.goto(path.as_uri())
    assert page.locator("details.exp").count() == 20
    assert page.locator("svg.chart circle.pt").count() > 0
    assert page.locator(".state").inner_text() == "ended"
    page.locator("button[data-want=discard]").click()  # the inline script runs (CSP hash)
    discarded = [r for r in read_run(record).records if r["status"] == "discard"]
    assert 0 < page.locator("details.exp:visible").count() == len(discarded) < 20
    assert problems == []
    context.close()


def test_a_200_experiment_record_renders_whole_within_its_size_budget(browser, tmp_path) -> None:
    """How fast it paints is a benchmark (benchmarks/report_page.py), not a timed test."""
    path = write_page(synthetic_record(tmp_path / "t1", 200, total=250, ended=False))
    assert path.stat().st_size < 1_500_000  # the budget docs/report-page.md states
    page = browser.new_page()
    page.goto(path.as_uri(), wait_until="load")
    assert page.locator("details.exp").count() == 200
    assert page.locator("svg.chart circle.pt").count() > 0
    page.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROWS_AFTER_EACH = """

import pytest


@pytest.hookimpl(trylast=True)
def pytest_autoresearch_experiment_done(record, config):
    page = config.rootpath / ".autoresearch" / "t1" / "report.html"
    rows = page.read_text().count('<details class="exp"') if page.exists() else -1
    with open(config.rootpath / "rows.txt", "a") as f:
        f.write(f"{record['index']}:{rows}\\n")
"""


@pytest.mark.slow
def test_a_real_run_live_under_serve_then_from_the_file(browser, pytester: pytest.Pytester) -> None:
    root = make_toy(
        pytester.path,
        [step("move X to 5", 5.0), step("move X to 7", 7.0), step("move X to 4", 4.0)],
    )
    with open(root / "conftest.py", "a") as f:  # what report.html held after each experiment
        f.write(ROWS_AFTER_EACH)
    with open(root / ".gitignore", "a") as f:
        f.write("rows.txt\n")
    git(root, "commit", "-qam", "count the page's rows")
    port = _free_port()
    cmd = [sys.executable, "-m", "pytest", "--autoresearch", "-n", "3", "--autoresearch-tag",
           "t1", "--autoresearch-proposer", "scripted", "-p", "no:randomly",
           "--autoresearch-serve", str(port)]  # fmt: skip
    log = open(root / "run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        page = browser.new_page()
        problems = _watch(page)
        deadline = time.monotonic() + 60
        while True:  # the server comes up at configure, before the baseline
            try:
                page.goto(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None, (
                    root / "run.log"
                ).read_text()
                time.sleep(0.3)
        page.evaluate("window.__same_page = 1")  # gone if the page reloaded
        seen = set()
        while proc.poll() is None or len(seen) < 2:
            seen.add(page.locator("details.exp").count())
            if time.monotonic() > deadline + 120:
                break
            time.sleep(0.3)
        page.wait_for_function(
            "document.querySelectorAll('details.exp').length === 3", timeout=15000
        )
        assert page.evaluate("window.__same_page") == 1
        assert seen & {0, 1, 2}, seen  # it showed the run before its end, then caught up
        page.wait_for_function(
            "document.documentElement.dataset.live === '0'", timeout=15000
        )  # the run's end (or its server going away) is on the page
        # Once the run is over its server is gone: the page's last polls are refused.
        assert [p for p in problems if "net::ERR_CONNECTION_" not in p] == []
    except Exception as exc:  # say what the run printed, not only what the browser saw
        proc.kill()
        proc.wait()
        log.flush()
        raise AssertionError((root / "run.log").read_text()[-3000:]) from exc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == 0, (root / "run.log").read_text()
    assert "live page: http://127.0.0.1:" in (root / "run.log").read_text()
    assert (root / "rows.txt").read_text().split() == ["1:1", "2:2", "3:3"]
    file_page = browser.new_page()
    file_page.goto((root / ".autoresearch" / "t1" / PAGE_NAME).as_uri())
    assert file_page.locator("details.exp").count() == 3
    assert file_page.locator(".state").inner_text() == "ended"
    row = file_page.locator("details#e1")
    row.locator("summary").click()
    assert row.locator("pre.diff").is_visible()
    assert "X = 5.0" in row.locator("pre.diff").inner_text()
    assert shutil.which("git")  # the toy project needed it; say so if this ever fails
