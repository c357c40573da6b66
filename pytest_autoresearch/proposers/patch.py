"""Unified diffs read and re-applied without git (pure, the stdlib only).

The hybrid proposer re-tries an earlier change on top of the current best: the change is
the experiment's journaled diff, and the best may have moved since (other constants
kept). A hunk is applied where its old lines are found, nearest the line it names; a
hunk whose old lines are nowhere in the file is a conflict, and the change does not apply.

API::

    parse(diff_text) -> list[FileDiff]         the files and hunks of a unified diff
    apply(texts, diff_text) -> dict | None     {path: new text} of the files it changes
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FileDiff", "Hunk", "apply", "parse"]


@dataclass
class Hunk:
    old_start: int  # 1-based, as the header says
    lines: list[str] = field(default_factory=list)  # " x", "-x", "+x" (no newline)

    @property
    def old(self) -> list[str]:
        return [line[1:] for line in self.lines if line[:1] in (" ", "-")]

    @property
    def new(self) -> list[str]:
        return [line[1:] for line in self.lines if line[:1] in (" ", "+")]


@dataclass
class FileDiff:
    path: str  # the new path (the old one for a deletion)
    hunks: list[Hunk] = field(default_factory=list)
    created: bool = False
    deleted: bool = False


def parse(diff_text: str) -> list[FileDiff]:
    """The files of a unified diff (git's or difflib's), in order."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    old_left = new_left = 0
    old_path = ""
    loose = False  # body lines after a file header with no '@@' (a hand-made diff)
    for line in diff_text.splitlines():
        if (
            loose
            and hunk is not None
            and line[:1] in ("+", "-", " ")
            and not line.startswith("--- ")
        ):
            hunk.lines.append(line if line[:1] != " " else " " + line[1:])
            continue
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if line.startswith("\\"):
                continue
            if tag in (" ", "") and hunk is not None:
                hunk.lines.append(" " + line[1:])
                old_left, new_left = old_left - 1, new_left - 1
                continue
            if tag == "-" and hunk is not None:
                hunk.lines.append(line)
                old_left -= 1
                continue
            if tag == "+" and hunk is not None:
                hunk.lines.append(line)
                new_left -= 1
                continue
            old_left = new_left = 0  # not diff body after all
        if line.startswith("--- "):
            old_path = _path(line[4:])
        elif line.startswith("+++ "):
            new_path = _path(line[4:])
            current = FileDiff(
                new_path if new_path != "/dev/null" else old_path,
                created=old_path == "/dev/null",
                deleted=new_path == "/dev/null",
            )
            files.append(current)
            hunk, loose = Hunk(1), True
            current.hunks.append(hunk)
        elif line.startswith("@@") and current is not None:
            if loose and hunk is not None and not hunk.lines:
                current.hunks.pop()  # the placeholder: this diff has real hunks
            loose = False
            old_start, old_left, new_left = _header(line)
            hunk = Hunk(old_start)
            current.hunks.append(hunk)
    return files


def apply(texts: dict[str, str], diff_text: str) -> dict[str, str] | None:
    """The changed files' new texts, or None when a hunk finds no place (a conflict).

    ``texts`` holds the current text of every file the diff may touch (absent: no file).
    """
    out: dict[str, str] = {}
    for fd in parse(diff_text):
        current = texts.get(fd.path)
        if fd.deleted:
            if current is None:
                return None
            out[fd.path] = ""
            continue
        if fd.created:
            if current not in (None, ""):
                return None
            current = ""
        if current is None:
            return None
        lines = current.splitlines()
        ends_with_newline = current.endswith("\n") or not current
        shift = 0
        for hunk in fd.hunks:
            at = _find(lines, hunk.old, hunk.old_start - 1 + shift)
            if at is None:
                return None
            lines[at : at + len(hunk.old)] = hunk.new
            shift += len(hunk.new) - len(hunk.old)
        out[fd.path] = "\n".join(lines) + ("\n" if ends_with_newline and lines else "")
    return out


def _find(lines: list[str], old: list[str], hint: int) -> int | None:
    """Where ``old`` sits in ``lines``, nearest ``hint``; None when nowhere."""
    if not old:
        return max(0, min(hint, len(lines)))
    n = len(old)
    places = [i for i in range(len(lines) - n + 1) if lines[i : i + n] == old]
    if not places:
        return None
    return min(places, key=lambda i: abs(i - hint))


def _path(text: str) -> str:
    path = text.split("\t")[0].strip().strip('"')
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def _header(line: str) -> tuple[int, int, int]:
    """(old start, old count, new count) of '@@ -a,b +c,d @@'."""
    try:
        old, new = line.split("@@")[1].split()[:2]

        def part(text: str) -> tuple[int, int]:
            start, _, count = text[1:].partition(",")
            return int(start), int(count) if count else 1

        (a, b), (_c, d) = part(old), part(new)
        return a, b, d
    except (IndexError, ValueError):
        return 1, 0, 0
