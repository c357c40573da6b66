"""The results channel: how an evaluation's metrics reach the loop, once, and not after the fact.

A file the worker writes can be rewritten by the measured code afterwards (an ``atexit``
hook, a thread, a forked grandchild that sleeps then writes). Instead the parent hands the
worker two inherited pipe ends: one carrying a per-run nonce (read and closed by the
worker-side plugin before any conftest or test module is imported, so it is never in the
environment or on a path), and one for the result. At session finish the plugin writes one
line ``<nonce> <metrics JSON>`` and closes its end. The parent reads concurrently (a large
document never blocks the worker on a full pipe) and takes the *first* complete line carrying
the nonce; anything before or after it is ignored. What remains possible (code in the measured
process patching the plugin in memory before it reports) is in docs/isolation.md.

API::

    ResultChannel()                    parent side; .pass_fds, .argument for the command line
      .started()                       close the child's ends here after the launch
      .pump(proc, deadline) -> bool    read while ``proc`` runs; False when the deadline passed
      .drain()                         read what is left, without blocking
      .result() -> (dict | None, problem)
      .close()
    EvalChannel.open(spec) -> EvalChannel   worker side (the plugin's --autoresearch-channel)
      .send(data)                      one line, then the fd is closed; later calls do nothing
    artifacts_of(data, secrets) -> list[dict]   the document's text artifacts, bounded, scrubbed
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import selectors
import subprocess
import time
from collections.abc import Callable
from typing import Any

OPTION = "--autoresearch-channel"
# The worker bounds artifacts (metrics/artifacts.py), but it runs the measured code: the
# parent bounds them again. A log tail per artifact, a few per evaluation.
ARTIFACT_CHARS = 8_000
ARTIFACTS = 4
MAX_MESSAGE = 64 * 1024 * 1024  # a metrics document is kilobytes; beyond this it is junk
TICK = 0.05  # seconds between checks on the process where pidfd_open is not available


class ChannelError(Exception):
    """The worker side was given a channel it cannot use."""


class ResultChannel:
    """The parent's end: a result pipe, a nonce pipe, and the first valid message."""

    def __init__(self) -> None:
        self.nonce = os.urandom(16).hex()
        self._read, self._write = os.pipe()
        nonce_read, nonce_write = os.pipe()
        try:
            os.write(nonce_write, self.nonce.encode())  # 32 bytes: fits any pipe buffer
        finally:
            os.close(nonce_write)
        self._nonce_read: int | None = nonce_read
        os.set_blocking(self._read, False)
        self._buffer = bytearray()
        self._message: dict[str, Any] | None = None
        self._problem = ""
        self._eof = False
        self.ignored = 0  # complete lines that were not the message (a forgery, junk)
        # Complete lines with the nonce after the first: the plugin sends once, so someone
        # else had the nonce (in-process tampering; evaluate rejects the run).
        self.duplicates = 0

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds the child must inherit."""
        fds = (self._write, self._nonce_read)
        return tuple(fd for fd in fds if fd is not None and fd >= 0)

    @property
    def argument(self) -> str:
        """The worker-side option naming the two fds (numbers only: nothing secret)."""
        return f"{OPTION}={self._write},{self._nonce_read}"

    def started(self) -> None:
        """Close the child's ends in this process, so EOF means every writer is gone."""
        for name in ("_write", "_nonce_read"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def pump(self, proc: subprocess.Popen, deadline: float | None) -> bool:
        """Read while ``proc`` runs; True when it exited, False when ``deadline`` passed first."""
        pidfd = _pidfd(proc.pid)
        sel = selectors.DefaultSelector()
        try:
            if not self._eof:
                sel.register(self._read, selectors.EVENT_READ, "pipe")
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ, "proc")
            while proc.poll() is None:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return False
                if pidfd is None:
                    wait = TICK if wait is None else min(wait, TICK)
                if not sel.get_map():
                    time.sleep(wait if wait is not None else TICK)
                    continue
                for key, _ in sel.select(wait):
                    if key.data == "pipe":
                        self._read_some()
                        if self._eof:
                            sel.unregister(self._read)
            return True
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)

    def drain(self) -> None:
        """Read whatever is in the pipe now (after the process group is gone)."""
        while not self._eof and self._read_some():
            pass

    def result(self) -> tuple[dict[str, Any] | None, str]:
        """The worker's document, or None and why there is none."""
        if self._message is not None:
            return self._message, ""
        return None, self._problem or "the evaluation reported no results"

    def close(self) -> None:
        for name in ("_read", "_write", "_nonce_read"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    # -- reading ------------------------------------------------------------------------

    def _read_some(self) -> bool:
        """One read; False when nothing more is there now (EAGAIN) or ever (EOF)."""
        try:
            chunk = os.read(self._read, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            self._eof = True
            return False
        if not chunk:
            self._eof = True
            return False
        if self._message is not None:
            self._count_duplicates(chunk)  # the answer is in; the rest is only checked
            return True
        self._buffer += chunk
        while b"\n" in self._buffer and self._message is None:
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer = bytearray(rest)
            self._take(line)
        if self._message is not None:
            rest, self._buffer = bytes(self._buffer), bytearray()
            self._count_duplicates(rest)
            return True
        if len(self._buffer) > MAX_MESSAGE:
            self._buffer.clear()
            self.ignored += 1
        return True

    def _count_duplicates(self, chunk: bytes) -> None:
        """Count later lines that start with the nonce; of an open line only its head is kept."""
        marker = self.nonce.encode() + b" "
        self._buffer += chunk
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest[: len(marker)])
        self.duplicates += sum(hmac.compare_digest(ln[: len(marker)], marker) for ln in lines)

    def _take(self, line: bytes) -> None:
        nonce, _, body = line.partition(b" ")
        if not hmac.compare_digest(nonce, self.nonce.encode()):
            self.ignored += 1
            return
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self._problem = f"the evaluation's results are not valid JSON ({exc})"
            self.ignored += 1
            return
        if not isinstance(data, dict):
            self._problem = "the evaluation's results are not a JSON object"
            self.ignored += 1
            return
        self._message = data


def artifacts_of(data: Any, secrets: Any = ()) -> list[dict[str, Any]]:
    """The text artifacts of a worker's document (``record_artifact``), as the loop keeps
    them: ``{name, test, text, cut}`` each, at most ``ARTIFACTS``, each the tail of at most
    ``ARTIFACT_CHARS`` characters (``cut`` counts what was dropped), secrets scrubbed."""
    from pytest_autoresearch.sandbox.secrets import scrub

    found = data.get("artifacts") if isinstance(data, dict) else None
    out: list[dict[str, Any]] = []
    for entry in found if isinstance(found, list) else ():
        if len(out) >= ARTIFACTS:
            break
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            continue
        text = entry["text"].replace("\x00", "")
        cut = entry.get("cut") if isinstance(entry.get("cut"), int) else 0
        if len(text) > ARTIFACT_CHARS:
            cut += len(text) - ARTIFACT_CHARS
            text = text[-ARTIFACT_CHARS:]
        out.append(
            {
                "name": scrub(str(entry.get("name") or "artifact"), secrets)[:80],
                "test": scrub(str(entry.get("nodeid") or ""), secrets)[:300],
                "text": scrub(text, secrets),
                "cut": max(0, int(cut)),
            }
        )
    return out


def _pidfd(pid: int) -> int | None:
    """A pollable fd that becomes readable when ``pid`` exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


class EvalChannel:
    """The worker's end: sends the document once, then has no way left to write."""

    def __init__(self, fd: int, nonce: str) -> None:
        self._fd = fd
        self._nonce = nonce
        # Set by tamper.watch: report-time findings, sent as the document's "tamper" list.
        self.verify: Callable[[], list[str]] | None = None

    @classmethod
    def open(cls, spec: str) -> EvalChannel:
        """Take the fds named by ``--autoresearch-channel W,N``: read the nonce, close N."""
        try:
            write_fd, nonce_fd = (int(part) for part in spec.split(","))
        except ValueError:
            raise ChannelError(
                f"{OPTION}={spec!r}: this option is internal to the research loop's evaluations "
                "(two fd numbers); remove it"
            ) from None
        try:
            chunks = []
            while chunk := os.read(nonce_fd, 256):
                chunks.append(chunk)
            os.close(nonce_fd)
            # Exec'd grandchildren do not get the result fd; forked ones do, and the parent
            # takes only the first message, which this plugin writes.
            os.set_inheritable(write_fd, False)
        except OSError as exc:
            raise ChannelError(
                f"{OPTION}={spec}: the fds are not open ({exc.strerror}); this option is "
                "internal to the research loop's evaluations, remove it"
            ) from None
        return cls(write_fd, b"".join(chunks).decode("ascii", "replace"))

    def send(self, data: dict[str, Any]) -> None:
        """Write ``<nonce> <json>\\n`` and close the fd; a second call does nothing."""
        if self._fd < 0:
            return
        verify, self.verify = self.verify, None
        found = verify() if verify is not None else []
        if found:
            data = {**data, "tamper": found}
        fd, self._fd = self._fd, -1
        line = f"{self._nonce} {json.dumps(data, default=str)}\n".encode()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass  # the loop is gone (EPIPE): nobody is left to tell
        finally:
            self._nonce = ""
            os.close(fd)
