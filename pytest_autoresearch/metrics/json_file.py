"""Write and read the versioned metrics JSON (``--metrics-json``); the evaluator reads it too.

In the research loop the same document (``build``) travels over the results channel
(``channel.py``) instead of a file: a file could be rewritten by the measured code after
pytest wrote it. ``--metrics-json`` stays for people's own runs and CI.

The format is documented in docs/architecture.md ("The metrics JSON") and docs/metrics.md.
Fields may be added in a version; none is renamed or removed without bumping VERSION.

API::

    VERSION
    build(measurements, tests, *, exitstatus, duration, root, artifacts=()) -> dict
    write(path, data) -> None          # atomic: temp file in the same folder + rename
    read(path) -> dict                 # raises MetricsJSONError with what is wrong
    measurements(data) -> list[Measurement]
    machine_info() -> dict / git_commit(root) -> dict | None
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_autoresearch.metrics.metric import Measurement

VERSION = 1


class MetricsJSONError(Exception):
    """A metrics JSON file that cannot be used; the message names the file and the problem."""


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git installed, or it hung: the commit is simply unknown
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path) -> dict[str, Any] | None:
    """The commit ``root`` is checked out at (id, branch, dirty), or None outside git."""
    sha = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if not sha:
        return None
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "id": sha,
        "branch": None if branch in (None, "HEAD") else branch,  # "HEAD" means detached
        "dirty": bool(status) if status is not None else None,
    }


def build(
    measurements: Iterable[Measurement],
    tests: Iterable[dict[str, Any]],
    *,
    exitstatus: int,
    duration: float,
    root: Path,
    artifacts: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The whole document for one session (``artifacts``: what tests attached with
    ``record_artifact``, each ``{name, nodeid, text, cut}``)."""
    return {
        "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "commit": git_commit(root),
        "exitstatus": int(exitstatus),
        "duration": round(duration, 6),
        "metrics": [m.as_dict() for m in measurements],
        "tests": list(tests),
        "artifacts": list(artifacts),
    }


def write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> dict[str, Any]:
    """Load a metrics JSON file and check its version and shape."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsJSONError(f"{path}: no such file") from None
    except OSError as exc:
        raise MetricsJSONError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricsJSONError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); was the run interrupted? "
            "Write it again."
        ) from None
    if not isinstance(data, dict) or "version" not in data:
        raise MetricsJSONError(f"{path}: not a pytest-autoresearch metrics file (no 'version')")
    if data["version"] != VERSION:
        raise MetricsJSONError(
            f"{path}: metrics file version {data['version']!r}, this pytest-autoresearch reads "
            f"version {VERSION}; write it again with this version"
        )
    if not isinstance(data.get("metrics"), list):
        raise MetricsJSONError(f"{path}: 'metrics' must be a list")
    return data


def measurements(data: dict[str, Any]) -> list[Measurement]:
    """The ``metrics`` entries of a loaded document as Measurement objects."""
    return [Measurement.from_dict(entry) for entry in data.get("metrics", [])]
