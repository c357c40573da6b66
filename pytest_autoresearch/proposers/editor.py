"""The text-editor tool executor, confined to the files program.md lets a model touch.

An LLM proposer hands every ``str_replace_based_edit_tool`` command it receives to
``FileEditor.execute``; the answer goes back to the model as a tool result. A
refused command is an answer too (``is_error``), so the model can read why and
recover: nothing it asks for can write outside the editable files or read outside
the editable and context files.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TOOL_NAME = "str_replace_based_edit_tool"
MAX_FILE_BYTES = 256 * 1024  # larger files are data, not code a model should rewrite
MAX_VIEW_CHARS = 100_000  # one view answer; a model can page with view_range
MAX_LISTING = 400  # entries in a directory listing
SNIPPET_LINES = 4  # context shown around an edit so the model can check it
NOTES_PATH = "NOTES.md"  # the model's research notebook: lives in the record, not the checkout
NOTES_BYTES = 12_000  # about 3,000 tokens: shown in every prompt, so it stays short

# Never writable whatever the globs say: the research program, git and the record.
ALWAYS_PROTECTED = (".git", ".autoresearch")

# The same commands as Anthropic's text editor tool, as a JSON-schema function for
# OpenAI-compatible endpoints (which have no built-in editor tool).
EDITOR_FUNCTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "View and edit files of the project. Paths are relative to the project root. "
            "Commands: view (a file, optionally view_range [start, end] with -1 for the end, "
            "or a directory), str_replace (replace old_str, which must occur exactly once, "
            "with new_str), create (write file_text to a new or editable file), insert "
            "(insert insert_text after line insert_line; 0 = at the top)."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": ["view", "str_replace", "create", "insert"]},
                "path": {"type": "string", "description": "relative path, e.g. train.py"},
                "view_range": {"type": "array", "items": {"type": "integer"}},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "file_text": {"type": "string"},
                "insert_line": {"type": "integer"},
                "insert_text": {"type": "string"},
            },
            "required": ["command", "path"],
        },
    },
}


class EditRefused(Exception):
    """A refused or failed editor command; the message is written for the model to read."""


def glob_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate over relative posix paths for globs where ``**`` spans directories."""
    regexes = [re.compile(_glob_to_regex(p.strip().lstrip("./") or p)) for p in patterns]
    return lambda rel: any(r.fullmatch(rel) for r in regexes)


def _glob_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class FileEditor:
    """Runs text-editor commands against ``root``: writes to editable files only."""

    def __init__(
        self,
        root: Path,
        is_editable: Callable[[str], bool],
        readable: Callable[[str], bool] | Iterable[str] = (),
        *,
        protected: Iterable[str] = (),
        max_bytes: int = MAX_FILE_BYTES,
        notes: Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self._is_editable = is_editable
        self._readable = readable if callable(readable) else glob_matcher(list(readable))
        self._protected = {p.strip("/") for p in protected} | set(ALWAYS_PROTECTED)
        self.max_bytes = max_bytes
        self.changed: list[str] = []  # relative paths written, in order of first change
        self.refused = 0  # commands answered with an error
        self.writes = 0  # successful writes, so a caller can tell whether an exchange edited
        # NOTES.md: the path the model uses for its notebook maps to this file in the record
        # (ctx.state_dir), so a discard's restore never reverts it and resume keeps it.
        # Writing it is not an edit of the candidate (``notes_writes``, not ``writes``).
        self.notes = Path(notes) if notes is not None else None
        self.notes_writes = 0

    # -- policy ---------------------------------------------------------------------------

    def is_protected(self, rel: str) -> bool:
        """program.md, .git and the research record are never writable."""
        return any(rel == p or rel.startswith(p + "/") for p in self._protected)

    def can_write(self, rel: str) -> bool:
        """Only editable files that are not protected."""
        return not self.is_protected(rel) and bool(self._is_editable(rel))

    def can_read(self, rel: str) -> bool:
        """Editable files and the context files; never git's or the record's internals."""
        if rel.split("/")[0] in ALWAYS_PROTECTED:
            return False
        return bool(self._is_editable(rel)) or bool(self._readable(rel))

    def _relpath(self, path: Any) -> str:
        """The normalised relative path, or EditRefused for anything that could escape."""
        if not isinstance(path, str) or not path.strip():
            raise EditRefused("'path' is required: a path relative to the project root")
        if "\x00" in path or "\\" in path:
            raise EditRefused(f"invalid path {path!r}: use plain '/'-separated relative paths")
        if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or path.startswith("~"):
            raise EditRefused(
                f"absolute path {path!r} refused: use a path relative to the project root, "
                "e.g. train.py"
            )
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise EditRefused(f"path {path!r} refused: '..' is not allowed")
        return "/".join(parts)

    def _check_inside(self, rel: str, *, for_write: bool) -> Path:
        """The path on disk; refuses symlinks (for writes) and anything resolving outside."""
        target = self.root.joinpath(*rel.split("/")) if rel else self.root
        if for_write:
            probe = self.root
            for part in rel.split("/"):
                probe = probe / part
                if probe.is_symlink():
                    raise EditRefused(
                        f"{rel}: refused, '{probe.relative_to(self.root).as_posix()}' is a "
                        "symlink; edits go to regular files only"
                    )
        real = Path(os.path.realpath(target))
        if real != self.root and self.root not in real.parents:
            raise EditRefused(f"{rel}: refused, it resolves outside the project")
        if not for_write and real != target:
            # A symlink inside the project: the file it reaches must be readable too.
            real_rel = real.relative_to(self.root).as_posix()
            if not self.can_read(real_rel):
                raise EditRefused(f"{rel}: refused, it links to a file you may not view")
        return target

    # -- commands -------------------------------------------------------------------------

    def execute(self, tool_input: Any) -> tuple[str, bool]:
        """Run one command; returns (text for the tool result, is_error)."""
        try:
            return self.run(tool_input), False
        except EditRefused as exc:
            self.refused += 1
            return f"Error: {exc}", True

    def run(self, tool_input: Any) -> str:
        """Run one command, raising EditRefused with a message for the model."""
        if not isinstance(tool_input, dict):
            raise EditRefused("the tool input must be an object with 'command' and 'path'")
        command = tool_input.get("command")
        handlers = {
            "view": self._view,
            "str_replace": self._str_replace,
            "create": self._create,
            "insert": self._insert,
        }
        if command not in handlers:
            raise EditRefused(
                f"unknown command {command!r}: use view, str_replace, create or insert"
            )
        rel = self._relpath(tool_input.get("path"))
        if rel == NOTES_PATH and self.notes is not None:
            return self._notes(command, tool_input)
        return handlers[command](rel, tool_input)

    def _notes(self, command: str, args: dict) -> str:
        """The same commands on the notebook in the record, bounded to NOTES_BYTES."""
        assert self.notes is not None
        if not self.notes.exists():
            if command != "create":
                if command == "view":
                    return f"{NOTES_PATH} is empty: write it with create"
                raise EditRefused(f"{NOTES_PATH} does not exist yet; use 'create' to start it")
            self.notes.parent.mkdir(parents=True, exist_ok=True)
            self.notes.write_text("")
        name = self.notes.name
        notes = FileEditor(self.notes.parent, lambda rel: rel == name, max_bytes=NOTES_BYTES)
        try:
            answer = notes.run({**args, "path": self.notes.name})
        except EditRefused as exc:
            text = str(exc).replace(self.notes.name, NOTES_PATH)
            if "-byte limit" in text:
                text += (
                    f". {NOTES_PATH} is full: shorten it (merge entries, drop what no longer "
                    "matters) with create, keeping what the next experiments need"
                )
            raise EditRefused(text) from None
        self.notes_writes += notes.writes
        return answer.replace(self.notes.name, NOTES_PATH)

    def _view(self, rel: str, args: dict) -> str:
        target = self._check_inside(rel, for_write=False)
        if target.is_dir():
            return self._listing(rel, target)
        if not self.can_read(rel):
            raise EditRefused(
                f"{rel}: you may view only the editable files and the context files "
                "program.md lists"
            )
        text = self._read(rel, target)
        lines = text.split("\n")
        start, end = 1, len(lines)
        view_range = args.get("view_range")
        if view_range is not None:
            if (
                not isinstance(view_range, list)
                or len(view_range) != 2
                or not all(isinstance(n, int) for n in view_range)
            ):
                raise EditRefused("view_range must be two line numbers [start, end]")
            start, end = view_range
            end = len(lines) if end == -1 else end
            if not 1 <= start <= max(len(lines), 1) or end < start:
                raise EditRefused(f"view_range {view_range} is outside 1..{len(lines)}")
            end = min(end, len(lines))
        out = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(start, end + 1))
        if len(out) > MAX_VIEW_CHARS:
            out = out[:MAX_VIEW_CHARS] + "\n[... truncated: use view_range to see the rest]"
        return out

    def _listing(self, rel: str, target: Path) -> str:
        entries: list[str] = []
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath, name)
                file_rel = path.relative_to(self.root).as_posix()
                if path.is_symlink() or not self.can_read(file_rel):
                    continue
                mark = "" if self.can_write(file_rel) else "  (read-only)"
                entries.append(file_rel + mark)
                if len(entries) >= MAX_LISTING:
                    return "\n".join([*sorted(entries), "[... more files not listed]"])
        if not entries:
            return f"{rel or '.'}: no files you may view here"
        return "\n".join(sorted(entries))

    def _read(self, rel: str, target: Path) -> str:
        if not target.exists():
            raise EditRefused(f"{rel}: no such file")
        if not target.is_file():
            raise EditRefused(f"{rel}: not a regular file")
        size = target.stat().st_size
        if size > self.max_bytes:
            raise EditRefused(
                f"{rel}: {size} bytes is more than the {self.max_bytes}-byte limit for editing"
            )
        data = target.read_bytes()
        if b"\x00" in data:
            raise EditRefused(f"{rel}: binary file (contains NUL bytes); refused")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise EditRefused(f"{rel}: not UTF-8 text; refused") from None

    def _writable(self, rel: str, *, must_exist: bool) -> Path:
        if not rel:
            raise EditRefused("the project root is a directory; give a file path")
        if self.is_protected(rel) or not self._is_editable(rel):
            raise EditRefused(
                f"{rel}: not an editable file (program.md lists which files may change); "
                "edit one of the editable files instead"
            )
        target = self._check_inside(rel, for_write=True)
        if target.is_dir():
            raise EditRefused(f"{rel}: is a directory; give a file path")
        if must_exist and not target.exists():
            raise EditRefused(f"{rel}: no such file; use 'create' to make a new one")
        if target.exists() and not stat.S_ISREG(target.lstat().st_mode):
            raise EditRefused(f"{rel}: not a regular file")
        return target

    def _write(self, rel: str, target: Path, text: str) -> None:
        data = text.encode("utf-8")
        if b"\x00" in data:
            raise EditRefused(f"{rel}: the new content contains NUL bytes; text only")
        if len(data) > self.max_bytes:
            raise EditRefused(
                f"{rel}: the new content is {len(data)} bytes, over the {self.max_bytes}-byte limit"
            )
        parent = target.parent
        if not parent.exists():
            parent.mkdir(parents=True)
            self._check_inside(rel, for_write=True)
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
        # Write a new file and rename it over the old one: atomic, and a hard link
        # to a file elsewhere is replaced rather than written through.
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".ar-edit-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.writes += 1
        if rel not in self.changed:
            self.changed.append(rel)

    def _str_replace(self, rel: str, args: dict) -> str:
        target = self._writable(rel, must_exist=True)
        old, new = args.get("old_str"), args.get("new_str", "")
        if not isinstance(old, str) or old == "":
            raise EditRefused("str_replace needs a non-empty 'old_str'")
        if not isinstance(new, str):
            raise EditRefused("'new_str' must be a string")
        text = self._read(rel, target)
        count = text.count(old)
        if count == 0:
            raise EditRefused(
                f"{rel}: old_str was not found; view the file and copy the exact text, "
                "including whitespace"
            )
        if count > 1:
            raise EditRefused(
                f"{rel}: old_str occurs {count} times; include more surrounding lines so it "
                "matches exactly once"
            )
        at = text.index(old)
        self._write(rel, target, text.replace(old, new, 1))
        first = text.count("\n", 0, at) + 1
        return self._edited(rel, text.replace(old, new, 1), first, first + new.count("\n"))

    def _create(self, rel: str, args: dict) -> str:
        target = self._writable(rel, must_exist=False)
        file_text = args.get("file_text")
        if not isinstance(file_text, str):
            raise EditRefused("create needs 'file_text', the whole content of the file")
        existed = target.exists()
        self._write(rel, target, file_text)
        verb = "Overwrote" if existed else "Created"
        return f"{verb} {rel} ({file_text.count(chr(10)) + 1} lines)"

    def _insert(self, rel: str, args: dict) -> str:
        target = self._writable(rel, must_exist=True)
        line = args.get("insert_line")
        new = args.get("insert_text", args.get("new_str"))
        if not isinstance(line, int) or isinstance(line, bool):
            raise EditRefused("insert needs 'insert_line', a line number (0 = top of the file)")
        if not isinstance(new, str):
            raise EditRefused("insert needs 'insert_text', the text to insert")
        text = self._read(rel, target)
        lines = text.split("\n")
        if not 0 <= line <= len(lines):
            raise EditRefused(f"insert_line {line} is outside 0..{len(lines)}")
        added = new[:-1] if new.endswith("\n") else new
        lines[line:line] = added.split("\n")
        updated = "\n".join(lines)
        self._write(rel, target, updated)
        return self._edited(rel, updated, line + 1, line + 1 + added.count("\n"))

    def _edited(self, rel: str, text: str, first: int, last: int) -> str:
        lines = text.split("\n")
        lo, hi = max(1, first - SNIPPET_LINES), min(len(lines), last + SNIPPET_LINES)
        snippet = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(lo, hi + 1))
        return f"Edited {rel}. Lines {lo}-{hi} now read:\n{snippet}"
