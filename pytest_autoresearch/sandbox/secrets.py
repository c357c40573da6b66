"""The one secret scrubber: which variables hold secrets, and how text is cleaned of them.

Everything that writes text a person or a file may keep (the journal, the report, the
evaluation's log tail and failure messages, an LLM proposer's errors and transcripts) goes
through ``scrub``; everything that starts experiment code builds its environment with
``without_secrets``. One marker, one name rule, one list of key shapes.

API::

    REDACTED                              the marker that replaces a secret
    is_secret_name(name) -> bool          KEY/TOKEN/SECRET/PASSWORD-like variable names
    secret_values(env=None) -> list[str]  values of such variables (os.environ by default)
    scrub(text, secrets=()) -> str        known values, secret env values, key shapes, NAME=value
    scrub_obj(obj, secrets=()) -> obj     the same over a JSON-like value (keys too)
    without_secrets(env) -> dict          an environment for experiment code
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "REDACTED",
    "is_secret_name",
    "scrub",
    "scrub_obj",
    "secret_values",
    "without_secrets",
]

REDACTED = "[REDACTED]"

# Names whose *value* is a secret. TOKENIZERS_PARALLELISM and MAX_TOKENS are not; SSH_AUTH_SOCK is
# (it lends the agent's keys to whoever can reach the socket).
_SECRET_NAME = re.compile(
    r"(API_?KEY|ACCESS_?KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)TOKEN($|_)|(^|_)AUTH($|_)"
    r"|(^|_)KEY$|PRIVATE_?KEY)",
    re.IGNORECASE,
)
# Proposer configuration (endpoints, models, organisations): not secret enough to scrub from
# text, but experiment code has no business with it either.
_PROPOSER_CONFIG = re.compile(r"^(ANTHROPIC|OPENAI|CLAUDE)_", re.IGNORECASE)

_KEY_SHAPES = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._\-]{16,}"),
]
# NAME=value where NAME looks like a secret's (ANTHROPIC_API_KEY=..., GH_TOKEN: ...).
_ASSIGNMENT = re.compile(
    r"\b([A-Z0-9_]*(?:API_?KEY|ACCESS_?KEY|_TOKEN|SECRET|PASSWORD|PASSWD)(?:_[A-Z0-9]+)*)"
    r"(\s*[=:]\s*)(['\"]?)[^\s'\"]{6,}\3"
)
MIN_ENV_SECRET = 8  # shorter env values ("1", "true") would blank ordinary words
MIN_GIVEN_SECRET = 6


def is_secret_name(name: str) -> bool:
    """True for environment variable names that hold keys, tokens or passwords."""
    return bool(_SECRET_NAME.search(name))


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named variables in ``env`` (default os.environ), longest first."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if len(v) >= MIN_ENV_SECRET and is_secret_name(k)}
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secrets replaced by [REDACTED].

    Replaced: the given ``secrets`` (e.g. a client's key, or the values of the environment an
    evaluation was started with), the values of secret variables in os.environ, anything
    shaped like a known key or token, and the value in ``SOME_API_KEY=value``.
    """
    if not text:
        return text
    given = {s for s in secrets if s and len(s) >= MIN_GIVEN_SECRET}
    # Longest first: a secret that contains another is replaced whole.
    for value in sorted(given.union(secret_values()), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern in _KEY_SHAPES:
        text = pattern.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def scrub_obj(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like value with every string (and key) scrubbed, non-finite floats None."""
    secrets = tuple(secrets)
    if isinstance(obj, str):
        return scrub(obj, secrets)
    if isinstance(obj, dict):
        return {scrub(str(k), secrets): scrub_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_obj(v, secrets) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf, and other readers choke on them
    if isinstance(obj, Path):
        return scrub(str(obj), secrets)
    return obj


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without secret variables and without the proposer's configuration."""
    return {k: v for k, v in env.items() if not is_secret_name(k) and not _PROPOSER_CONFIG.match(k)}
