"""What a Ray driver killed with -9 leaves behind on this machine, and its clean-up.

A local Ray instance dies with its driver, but not every helper process it started, and
actors killed mid-trial leave their checkouts in the node's temp folder. The next
``RayExecutor`` reaps both: processes holding a noted session folder, clones of dead pids.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

CLONE_DIR = "autoresearch-ray"  # under the node's temp folder
_CLONE = re.compile(r"^r\d+-(?P<pid>\d+)-")


def _mark_local_instance(ray: Any) -> Path | None:
    """Note the session folder of the local instance this driver started, by driver pid.

    A driver killed with -9 takes Ray's GCS and raylet with it, but not every helper process
    they started (the dashboard and runtime-env agents outlive it); the next RayExecutor
    finds them by this note (``reap_local_leftovers``). Only instances we started are noted:
    a cluster started with ``ray start`` is never touched.
    """
    try:
        session = ray._private.worker._global_node.get_session_dir_path()
    except Exception:  # a private API: without it there is nothing to note
        return None
    folder = Path(tempfile.gettempdir()) / CLONE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"local-{os.getpid()}.session"
    marker.write_text(str(session))
    return marker


def reap_local_leftovers(folder: Path | None = None) -> list[int]:
    """Kill what is left of local instances whose driver is gone; the pids killed (Linux)."""
    folder = folder or Path(tempfile.gettempdir()) / CLONE_DIR
    killed: list[int] = []
    if not folder.is_dir() or not Path("/proc").is_dir():
        return killed
    from pytest_autoresearch.sandbox.evaluate import pid_alive

    for marker in folder.glob("local-*.session"):
        pid = marker.stem.removeprefix("local-")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        session = marker.read_text().strip()
        if session:
            killed += _kill_holding(session)
        marker.unlink(missing_ok=True)
    return killed


def _kill_holding(folder: str) -> list[int]:
    """SIGKILL every process (of ours) with a file open under ``folder``."""
    killed = []
    prefix = folder.rstrip("/") + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            held = any(os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix) for fd in fds)
        except OSError:
            continue
        if held:
            with contextlib.suppress(OSError):
                os.kill(int(entry), 9)
                killed.append(int(entry))
    return killed


def _prune_clones(folder: Path) -> None:
    """Checkouts left by actors that were killed (a lost worker, a killed driver)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        m = _CLONE.match(path.name)
        if m is None:
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass
