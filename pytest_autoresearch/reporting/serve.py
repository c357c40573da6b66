"""``--autoresearch-serve [HOST:]PORT``: the live page over HTTP, from a thread of the run.

API
---
PageServer(directory, host="127.0.0.1", port=0, **extras)
    .start() -> url      binds (OSError when the port is taken) and serves from a daemon thread
    .stop()              waits up to one poll for a watching browser to fetch the last state
    .url

What it serves, and nothing else: ``/`` and ``/report.html`` (the page, rendered from the
record as it is now, so it shows the baseline phase and experiments in flight too),
``/state.json`` (``{"version", "live", "experiments"}``: the page polls it and swaps itself
in place when the version moves), and report.md, progress.png and results.tsv when they
exist (not experiments.jsonl: the page shows its diffs and logs cut, as a report does). The record
is only read (run_view), text is scrubbed, and a browser that goes away mid-answer costs a
caught BrokenPipeError. The loop never waits on it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_autoresearch.reporting.run_view import JSONL, RecordTail

__all__ = ["POLL_SECONDS", "PageServer"]

POLL_SECONDS = 2.0  # the page's polling interval (page_assets.JS)
_FILES = {
    "/report.md": "text/markdown; charset=utf-8",
    "/progress.png": "image/png",
    "/results.tsv": "text/tab-separated-values; charset=utf-8",
}


class PageServer:
    """Serves one record's live page; start() once, stop() once."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0, **extras: Any):
        self.directory = Path(directory)
        self.host, self.port = host, port
        self.extras = extras  # holdout, time_budget, max_cost: as run_view.RecordTail.view
        self._tail = RecordTail(self.directory)
        self._lock = threading.Lock()
        self._page: tuple[int, bytes] | None = None  # (journal size, page)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.last_request = 0.0
        self.served_version = -1

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"server_page": self})
        server_class = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            server_class = type(
                "Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6}
            )
        self._httpd = server_class((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="autoresearch-page", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving; a browser that polled in the last seconds first gets the last state."""
        if self._httpd is None:
            return
        deadline = time.monotonic() + POLL_SECONDS + 1.0
        while (
            time.monotonic() - self.last_request < 10 and self.served_version != self.version()
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None

    # -- what the handler asks for ----------------------------------------------------------

    def version(self) -> int:
        try:
            return (self.directory / JSONL).stat().st_size
        except OSError:
            return 0

    def page(self) -> bytes:
        """The page as the record is now (rendered again only when the record grew)."""
        from pytest_autoresearch.reporting.html import render_page

        with self._lock:
            size = self.version()
            if self._page is None or self._page[0] != size:
                view = self._tail.view(**self.extras)
                self._page = (size, render_page(view).encode("utf-8"))
            self.served_version = size
            return self._page[1]

    def state(self) -> bytes:
        with self._lock:
            view = self._tail.view(**self.extras)
        doc = {"version": view.version, "live": view.live, "experiments": len(view.records)}
        return json.dumps(doc).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    server_page: PageServer
    server_version = "autoresearch"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        from pytest_autoresearch.reporting.page_assets import CSP

        owner = self.server_page
        owner.last_request = time.monotonic()
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/report.html"):
                data, kind = owner.page(), "text/html; charset=utf-8"
            elif path == "/state.json":
                data, kind = owner.state(), "application/json"
            elif path in _FILES and (owner.directory / path[1:]).is_file():
                data, kind = (owner.directory / path[1:]).read_bytes(), _FILES[path]
            else:
                data, kind = b"not found\n", "text/plain; charset=utf-8"
                self.send_response(404)
                self._headers(kind, len(data), CSP)
                self.wfile.write(data if body else b"")
                return
            self.send_response(200)
            self._headers(kind, len(data), CSP)
            if body:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the browser went away: nothing to do
        except Exception as exc:  # a page that cannot be drawn must not end the thread
            with contextlib.suppress(OSError):
                self.send_error(500, f"report page: {type(exc).__name__}")

    def _headers(self, kind: str, length: int, csp: str) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", csp)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the terminal belongs to the run
