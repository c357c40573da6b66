"""A loopback HTTP server that speaks enough of the Messages and Chat Completions APIs.

Tests point the real ``anthropic`` and ``openai`` SDKs at it (``base_url=server.url``)
and script its answers: each request takes the next entry of ``server.script`` -- a
response body (dict), a ``Reply`` (status, body, headers), or a callable that gets
the parsed ``Request`` and returns one of those. Every request is recorded, so a
test can assert on what the model was told and on the headers that were sent.
Nothing here reaches the network.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_autoresearch.proposers.base import ProposalContext
from pytest_autoresearch.proposers.editor import TOOL_NAME

API_KEY = "sk-ant-test-0123456789abcdefSECRET"
OPENAI_KEY = "sk-oai-test-0123456789abcdefSECRET"
_ids = itertools.count(1)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Cut:
    """A streamed Messages answer cut after ``events`` SSE events: the connection drops
    in the middle of a chunk, as when a proxy or the network gives up mid-stream."""

    body: dict
    events: int = 3
    clean: bool = False  # end the body properly after them (no message_stop, no error)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw: bytes


class LLMServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 answering from a per-test script."""

    def __init__(self, deadline: float = 60.0) -> None:
        self.script: list[Any] = []
        self.requests: list[Request] = []
        self.unexpected: list[str] = []
        self.models_reply: Reply | None = None  # GET /v1/models[/id]; None = a model list
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                req = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    raw,
                )
                reply = server._answer(req)
                usage = isinstance(body, dict) and (body.get("stream_options") or {}).get(
                    "include_usage"
                )
                if isinstance(reply, Cut):
                    if _is_chat(reply.body):
                        events = chat_events(reply.body, bool(usage))
                        return self._send_events(events, reply.events, reply.clean)
                    return self._stream(reply.body, reply.events, reply.clean)
                streamed = isinstance(body, dict) and body.get("stream") is True
                if streamed and reply.status == 200 and _is_message(reply.body):
                    return self._stream(reply.body, None)
                if streamed and reply.status == 200 and _is_chat(reply.body):
                    return self._send_events(chat_events(reply.body, bool(usage)), None)
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, msg: dict, cut_after: int | None, clean: bool = False) -> None:
                """The message as server-sent events, chunked; cut after some if asked."""
                events = [
                    f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    for name, data in sse_events(msg)
                ]
                self._send_events(events, cut_after, clean)

            def _send_events(
                self, events: list[bytes], cut_after: int | None, clean: bool = False
            ) -> None:
                """Server-sent events, chunked; cut after ``cut_after`` of them if asked (in
                the middle of a chunk, or cleanly with ``clean``: no end marker)."""
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i, payload in enumerate(events):
                    if cut_after is not None and i >= cut_after and clean:
                        break
                    if cut_after is not None and i >= cut_after:
                        self.wfile.write(b"40\r\nevent: content_block_delta\ndata: {")
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        # A watchdog: a test that waits on the server past its deadline fails, not hangs.
        self._watchdog = threading.Timer(deadline, self.stop)
        self._watchdog.daemon = True

    def _answer(self, req: Request) -> Reply:
        with self._lock:
            self.requests.append(req)
            if req.path.rstrip("/").split("?")[0].startswith("/v1/models"):
                return self.models_reply or Reply(
                    200,
                    {
                        "data": [{"id": "test-model", "type": "model"}],
                        "id": "test-model",
                        "type": "model",
                        "display_name": "Test",
                        "created_at": "2026-01-01T00:00:00Z",
                        "object": "list",
                    },
                )
            if not self.script:
                self.unexpected.append(f"{req.method} {req.path}")
                # A 400, not a 5xx: a transient error would be retried until the outage.
                return Reply(
                    400,
                    error_body(400, "invalid_request_error", "script exhausted"),
                    {"x-should-retry": "false"},
                )
            entry = self.script.pop(0)
        if callable(entry):
            entry = entry(req)
        return entry if isinstance(entry, (Reply, Cut)) else Reply(200, entry)

    def add(self, *entries: Any) -> LLMServer:
        self.script.extend(entries)
        return self

    def posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    def start(self) -> LLMServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        self._watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def running_server(deadline: float = 60.0) -> Iterator[LLMServer]:
    server = LLMServer(deadline).start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


# -- Messages API bodies ----------------------------------------------------------------


def error_body(status: int, kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def api_error(status: int, kind: str, message: str = "error") -> Reply:
    """An API error; ``retry-after-ms: 1`` keeps the SDK's backoff fast."""
    return Reply(status, error_body(status, kind, message), {"retry-after-ms": "1"})


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def edit(command: str, path: str, **kw: Any) -> dict:
    """A tool_use block for the text editor tool."""
    return {
        "type": "tool_use",
        "id": f"toolu_{next(_ids):04d}",
        "name": TOOL_NAME,
        "input": {"command": command, "path": path, **kw},
    }


def message(*blocks: dict, stop_reason: str | None = None, usage: dict | None = None) -> dict:
    tool = any(b["type"] == "tool_use" for b in blocks)
    return {
        "id": f"msg_{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": list(blocks),
        "stop_reason": stop_reason or ("tool_use" if tool else "end_turn"),
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 1000,
            "output_tokens": 100,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _is_message(body: Any) -> bool:
    return isinstance(body, dict) and body.get("type") == "message"


def sse_events(msg: dict) -> list[tuple[str, dict]]:
    """A Messages API answer as the stream of events the API sends for it."""
    usage = dict(msg["usage"])
    start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for i, block in enumerate(msg["content"]):
        kind = block["type"]
        if kind == "text":
            first, delta = (
                {"type": "text", "text": ""},
                {"type": "text_delta", "text": block["text"]},
            )
        elif kind == "tool_use":
            first = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:  # thinking and others: sent whole at the start
            first, delta = block, None
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": first},
            )
        )
        if delta is not None:
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    end = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": end, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def tool_results(req: Request) -> list[dict]:
    """The tool_result blocks of the last user message of a Messages request."""
    last = req.body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else []
    return [b for b in content if b.get("type") == "tool_result"]


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content)
    return content or ""


# -- Chat Completions bodies ------------------------------------------------------------


def call(command: str, path: str, **kw: Any) -> dict:
    """A tool call for the editor function, arguments as a JSON string."""
    return {
        "id": f"call_{next(_ids):04d}",
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "arguments": json.dumps({"command": command, "path": path, **kw}),
        },
    }


def chat(
    content: str | None = None,
    *calls: dict,
    usage: dict | None = None,
    finish_reason: str | None = None,
) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = list(calls)
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": 1_790_000_000,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": msg,
                "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": usage or {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    }


def chat_error(status: int, message: str = "error") -> Reply:
    return Reply(
        status,
        {"error": {"message": message, "type": "error", "code": None}},
        {"retry-after-ms": "1"},
    )


def _is_chat(body: Any) -> bool:
    return isinstance(body, dict) and body.get("object") == "chat.completion"


def chat_events(body: dict, usage: bool) -> list[bytes]:
    """A Chat Completions answer as the stream of chunks a server sends for it: the role,
    the text, each tool call's name then its arguments in two halves, the finish reason,
    the usage (when asked for with stream_options), then [DONE]."""
    choice = body["choices"][0]
    msg = choice["message"]
    head = {k: body[k] for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if msg.get("content"):
        chunks.append(chunk({"content": msg["content"]}))
    for i, c in enumerate(msg.get("tool_calls") or []):
        args = c["function"]["arguments"]
        start = {"index": i, "id": c["id"], "type": "function"}
        start["function"] = {"name": c["function"]["name"], "arguments": ""}
        chunks.append(chunk({"tool_calls": [start]}))
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    chunks.append(chunk({}, choice["finish_reason"]))
    if usage:
        chunks.append({**head, "choices": [], "usage": body.get("usage")})
    out = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return [*out, b"data: [DONE]\n\n"]


def tool_messages(req: Request) -> list[dict]:
    """The role=tool messages after the last assistant message of a chat request."""
    msgs = req.body["messages"]
    out = []
    for m in reversed(msgs):
        if m["role"] != "tool":
            break
        out.insert(0, m)
    return out


# -- a project and a context ------------------------------------------------------------


def make_program(root: Path, editable: tuple[str, ...] = ("train.py",), **kw: Any) -> Any:
    """A real program.Program over ``root`` (program.md itself is never editable)."""
    from pytest_autoresearch.program.program_md import Program

    kw.setdefault("objective", "loss")
    return Program(
        path=root / "program.md", editable=tuple(editable), program_relpath="program.md", **kw
    )


TRAIN = "LR = 0.01\nBATCH = 32\n\n\ndef train():\n    return LR * BATCH\n"


def make_project(root: Path) -> Path:
    """train.py (editable), prepare.py (context), a test and program.md (protected)."""
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text("DATA = 'fixed'\n")
    (root / "tests" / "test_metric.py").write_text("def test_loss():\n    pass\n")
    (root / "program.md").write_text("---\neditable: [train.py]\n---\nTune LR.\n")
    return root


def make_ctx(root: Path, *, history: list | None = None, experiment: int = 1, **program_kw: Any):
    program_kw.setdefault("context", ("prepare.py",))
    program_kw.setdefault("instructions", "Tune the learning rate LR in train.py.")
    program = make_program(root, **program_kw)
    state = root / ".autoresearch" / "t1"
    state.mkdir(parents=True, exist_ok=True)
    return ProposalContext(
        root=root,
        program=program,
        editable_files=program.editable_files(root),
        objective=program.objective,
        goal="min",
        best_value=0.5,
        baseline_value=0.6,
        noise=0.01,
        history=history or [],
        experiment=experiment,
        total=10,
        state_dir=state,
        metrics={"loss": 0.5, "accuracy": 0.9},
    )
