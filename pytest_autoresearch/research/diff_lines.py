"""Which lines of a diff count for the keep rule's simplicity criterion (pure, the stdlib only).

API::

    code_lines_changed(diff_text) -> (added, removed)     blank and comment-only lines are free
"""

from __future__ import annotations

__all__ = ["code_lines_changed"]


def code_lines_changed(diff_text: str) -> tuple[int, int]:
    """(added, removed) code lines in a unified diff; blank and comment-only lines are free.

    Deleting comments or blank lines does not make a change simpler, so only lines with
    code count: blank lines in any file, and lines that hold only a ``#`` comment in
    Python files (``.py``, ``.pyi``). Hunk headers give the line counts, so a removed line
    that itself starts with ``--`` is not mistaken for a file header.
    """
    added = removed = 0
    python = False
    old_left = new_left = 0  # lines still to read in the current hunk
    for line in diff_text.splitlines():
        if old_left <= 0 and new_left <= 0:
            if line.startswith(("--- ", "+++ ")):
                path = line[4:].split("\t")[0].strip().strip('"')
                if path != "/dev/null":  # a deleted file is named on its "---" line
                    python = path.endswith((".py", ".pyi"))
            elif line.startswith("@@"):
                old_left, new_left = _hunk_sizes(line)
            continue
        if line.startswith("\\"):  # "\ No newline at end of file"
            continue
        tag, text = line[:1], line[1:]
        if tag in (" ", ""):
            old_left -= 1
            new_left -= 1
            continue
        if tag == "-":
            old_left -= 1
        elif tag == "+":
            new_left -= 1
        else:  # not diff body after all: resynchronise on the next header
            old_left = new_left = 0
            continue
        stripped = text.strip()
        if not stripped or (python and stripped.startswith("#")):
            continue
        if tag == "+":
            added += 1
        else:
            removed += 1
    return added, removed


def _hunk_sizes(header: str) -> tuple[int, int]:
    """Line counts of both sides from '@@ -a,b +c,d @@' (a missing count means 1)."""
    try:
        old, new = header.split("@@")[1].split()[:2]
    except (IndexError, ValueError):
        return 0, 0

    def size(part: str) -> int:
        return int(part.split(",")[1]) if "," in part else 1

    try:
        return size(old), size(new)
    except ValueError:
        return 0, 0
