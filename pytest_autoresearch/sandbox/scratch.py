"""An evaluation's fresh scratch: its own HOME and TMPDIR, gone when it ends.

Whatever an evaluation writes to ``$HOME``, ``/tmp`` or ``~/.cache`` must not reach a later
one (a discarded experiment that plants a file there would otherwise change every later
measurement). So each evaluation gets a folder of its own, ``<tmp>/scratch`` with ``home/``
and ``tmp/``, and ``HOME``, ``TMPDIR`` (``TMP``, ``TEMP``) and ``XDG_CACHE_HOME`` point into
it. Under the namespace launcher the bootstrap mounts a new tmpfs there (boot.py), so it is
fresh even when the folder lies inside the hidden record, and the rest of the filesystem is
read-only; under the plain launcher it is a real folder that ``evaluate`` removes.

Two things keep working with the new HOME: packages installed with ``pip install --user``
(``PYTHONUSERBASE`` keeps pointing at the real user base) and program.md's ``cache:`` paths
under the real home (linked at the same place in the scratch home).

API::

    make_scratch(tmp, caches=()) -> (path, env)   the folder, and the variables to set
    home_links(caches) -> [[relative to $HOME, real path], ...]
"""

from __future__ import annotations

import os
import site
from collections.abc import Iterable
from pathlib import Path

from pytest_autoresearch.sandbox.boot import SCRATCH_ENV

# Set from the scratch; XDG_CONFIG/DATA/STATE_HOME are dropped so they fall back under HOME,
# and pytest's PYTEST_DEBUG_TEMPROOT (a pytester session's) so tmp_path lands in TMPDIR.
_DROPPED = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "PYTEST_DEBUG_TEMPROOT")


def make_scratch(tmp: Path, caches: Iterable[Path] = ()) -> tuple[Path, dict[str, str | None]]:
    """Create ``tmp/scratch`` (home, tmp, links); the environment changes (None: unset)."""
    scratch = Path(tmp).resolve() / "scratch"
    home = scratch / "home"
    (home / ".cache").mkdir(parents=True, exist_ok=True)
    (scratch / "tmp").mkdir(exist_ok=True)
    for rel, target in home_links(caches):
        link = home / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    env: dict[str, str | None] = {
        SCRATCH_ENV: str(scratch),
        "HOME": str(home),
        "TMPDIR": str(scratch / "tmp"),
        "TMP": str(scratch / "tmp"),
        "TEMP": str(scratch / "tmp"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **dict.fromkeys(_DROPPED),
    }
    user_base = site.getuserbase()
    if "PYTHONUSERBASE" not in os.environ and os.path.isdir(user_base):
        env["PYTHONUSERBASE"] = user_base  # `pip install --user` packages stay importable
    return scratch, env


def home_links(caches: Iterable[Path]) -> list[list[str]]:
    """[relative to $HOME, real path] of each cache under the real home.

    The evaluation's fresh home links them at the same place, so tools that look under
    ``~`` (``~/.cache/huggingface``, a project's data folder) still find them.
    """
    home = Path.home().resolve()
    out = []
    for path in caches:
        real = Path(path).resolve()
        if real != home and home in real.parents:
            out.append([real.relative_to(home).as_posix(), str(real)])
    return out


def apply(env: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """``env`` with ``changes`` applied (a None value removes the variable)."""
    out = dict(env)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
