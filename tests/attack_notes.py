"""How attack code inside an evaluation tells the test what it managed to do.

Evaluations cannot write outside their checkout (the rest of the filesystem is read-only,
docs/isolation.md), so an attack's notes travel as datagrams to a Unix socket beside the
log's name (sending to a socket works on a read-only filesystem and across network namespaces); a
thread in the test process appends each one to the log file as a line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import threading
from pathlib import Path

_RECEIVERS: dict[str, threading.Thread] = {}


def receive_notes(log: Path) -> str:
    """Start (once per log) the receiver; the socket path that attack code sends to."""
    digest = hashlib.sha1(str(log).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"notes-{digest}.sock")  # AF_UNIX: < 108 bytes
    if path in _RECEIVERS and _RECEIVERS[path].is_alive():
        return path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)

    def serve() -> None:
        while True:
            data = sock.recv(1 << 16)
            with open(log, "ab") as fh:
                fh.write(data + b"\n")

    thread = threading.Thread(target=serve, name=f"notes {log.name}", daemon=True)
    thread.start()
    _RECEIVERS[path] = thread
    return path


def note_prelude(log: Path) -> str:
    """Python source defining ``note(*words)`` (and ``ATTACK_LOG``) for attack code."""
    path = receive_notes(log)
    return (
        "import os, sys\n"
        f"ATTACK_LOG = {str(log)!r}\n"
        "def note(*words):\n"
        "    import socket as _socket\n"
        "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)\n"
        "    try:\n"
        f"        s.sendto(' '.join(str(w) for w in words).encode(), {path!r})\n"
        "    finally:\n"
        "        s.close()\n"
    )


def read_notes(log: Path, wait: float = 0.3) -> str:
    """The log's text, after a moment for datagrams still in flight."""
    import time

    time.sleep(wait)
    return log.read_text() if log.exists() else ""
