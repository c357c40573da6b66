"""Text artifacts a test attaches to its result: a training log, a loss curve.

``record_artifact(name, text)`` (the fixture in plugin.py) keeps one artifact per name and
test, bounded here: the *tail* of a long text is kept (the end of a log says how it ended)
and ``cut`` counts the characters dropped in front. Artifacts travel in the metrics
document (``"artifacts"``, next to ``"metrics"``); the research loop stores them per
experiment and an LLM proposer sees the recent ones. They are never a metric: nothing is
decided on them. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_autoresearch.metrics.metric import MetricError

MAX_CHARS = 8_000  # of one artifact, its tail
MAX_ARTIFACTS = 4  # per test; and per evaluation as the research loop stores them


@dataclass
class Artifact:
    """One named text of one test: the tail of what was given, and how much was cut."""

    name: str
    text: str
    cut: int = 0  # characters dropped from the front
    nodeid: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodeid": self.nodeid, "text": self.text, "cut": self.cut}


def tail(text: str, limit: int = MAX_CHARS) -> tuple[str, int]:
    """The last ``limit`` characters of ``text`` (from a line start where one is near) and
    how many characters were dropped in front."""
    if len(text) <= limit:
        return text, 0
    kept = text[-limit:]
    newline = kept.find("\n")
    if 0 <= newline < limit // 4:  # start at a whole line
        kept = kept[newline + 1 :]
    return kept, len(text) - len(kept)


def make(name: object, text: object, where: str = "record_artifact") -> Artifact:
    """A validated, bounded artifact; MetricError says what is wrong with the arguments."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r\t"):
        raise MetricError(
            f"{where}(name, text): the name must be a short one-line string such as "
            f"'train_log', got {name!r}"
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise MetricError(
            f"{where}({name!r}, text): text must be a str, got a {type(text).__name__}; "
            "format it first (e.g. '\\n'.join(lines), or json.dumps(curve))"
        )
    kept, cut = tail(text.replace("\x00", ""))
    return Artifact(name.strip()[:80], kept, cut)
