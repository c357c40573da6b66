"""
Corpora for the harness: documents as (id, text), in a fixed order. Part of the fixed harness.

    stdlib           the Python standard library's own .py files: on every machine, offline
    fineweb-edu      FineWeb-Edu parquet shards, as nanochat trains on (downloaded once)
    climbmix         ClimbMix parquet shards, as autoresearch trains on (downloaded once)
    tinyshakespeare  karpathy/char-rnn's 1.1 MB file (downloaded once)
    tinystories      TinyStories train text, streamed up to the profile's size (downloaded once)

Downloads stream to a temporary file with a progress bar, are checked against the sha256
the server announces (Hugging Face sends it as the ETag of large files), and are cached
with that sha256, which is verified on every later use. NANOCHAT_DATA_URL replaces the
base URL of the parquet shards (a mirror, or a local server in tests).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
import urllib.request
from pathlib import Path

MAX_DOC_BYTES = 65536  # long documents are cut, so that no single one dominates a split

PARQUET_SOURCES = {
    "fineweb-edu": "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main",
    "climbmix": "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main",
}
TEXT_SOURCES = {
    "tinyshakespeare": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    ),
    "tinystories": (
        "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-train.txt"
    ),
}
SOURCES = {**TEXT_SOURCES, **PARQUET_SOURCES}
TINYSHAKESPEARE_BYTES = 1_115_394  # the file's known size: a truncated download is caught
MAX_SHARDS = 64  # a profile that needs more text than this many shards asks too much
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PrepareError(RuntimeError):
    """The data could not be prepared; the message says why and what to do."""


class DownloadError(PrepareError):
    """A corpus could not be fetched (offline, server error): the machine, not the data."""


def cache_dir() -> Path:
    """Where prepared data lives: NANOCHAT_CACHE, or ~/.cache/nanochat-autoresearch."""
    raw = os.environ.get("NANOCHAT_CACHE")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "nanochat-autoresearch"


def bucket(doc_id: str) -> float:
    """A stable number in [0, 1) from a document id: the same document, the same split, always."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cut(text: str) -> str:
    """Cut a long document at a line boundary near MAX_DOC_BYTES."""
    if len(text) <= MAX_DOC_BYTES:
        return text
    head = text[:MAX_DOC_BYTES]
    return head[: head.rfind("\n") + 1] or head


# -----------------------------------------------------------------------------
# Downloads


class _Progress:
    """A progress bar on stderr: tqdm when installed, else one line rewritten in place."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done, self._bar = label, total, 0, None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr)
        except ImportError:
            pass

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            total = f"/{self.total / 1e6:.1f}" if self.total else ""
            print(f"\r{self.label}: {self.done / 1e6:.1f}{total} MB", end="", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)


def _announced_sha256(headers) -> str | None:
    """The sha256 a Hugging Face (git LFS) server sends as the ETag of a large file."""
    for key in ("X-Linked-Etag", "ETag"):
        value = (headers.get(key) or "").strip().strip('"').removeprefix("W/").strip('"')
        if _SHA256.match(value):
            return value
    return None


def download(url: str, dest: Path, max_bytes: int | None = None) -> str:
    """Stream url to dest with a progress bar, check it, record its sha256; returns it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            announced = _announced_sha256(resp.headers)
            length = resp.headers.get("Content-Length")
            progress = _Progress(f"downloading {dest.name}", int(length) if length else None)
            try:
                while max_bytes is None or progress.done < max_bytes:
                    want = 1 << 20 if max_bytes is None else min(1 << 20, max_bytes - progress.done)
                    chunk = resp.read(want)
                    if not chunk:
                        break
                    out.write(chunk)
                    sha.update(chunk)
                    progress.update(len(chunk))
            finally:
                progress.close()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url} ({exc}); check the network, or use the offline corpus "
            "with NANOCHAT_DATA=stdlib"
        ) from exc
    digest = sha.hexdigest()
    complete = max_bytes is None or progress.done < max_bytes
    if announced and complete and digest != announced:
        tmp.unlink()
        raise PrepareError(
            f"{url} arrived corrupted (sha256 {digest[:12]}..., the server says "
            f"{announced[:12]}...); run again to retry"
        )
    tmp.replace(dest)
    dest.with_name(dest.name + ".sha256").write_text(digest + "\n")
    return digest


def cached_download(url: str, dest: Path, max_bytes: int | None = None) -> Path:
    """dest, verified against its recorded sha256; downloaded when missing or corrupted."""
    sha_file = dest.with_name(dest.name + ".sha256")
    if dest.exists() and sha_file.exists():
        if _file_sha256(dest) == sha_file.read_text().strip():
            return dest
        print(f"prepare: {dest} does not match its sha256; downloading it again", file=sys.stderr)
        dest.unlink()
    download(url, dest, max_bytes)
    return dest


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# -----------------------------------------------------------------------------
# Sources


def stdlib_documents() -> list[tuple[str, Path]]:
    """The Python standard library's own .py files: text every Python install has."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file()]
    return sorted((p.relative_to(root).as_posix(), p) for p in files)


def _stdlib(max_bytes: int) -> list[tuple[str, str]]:
    picked, total = [], 0
    # Hash order is a fixed shuffle: the subset mixes all of the library, not just "a*".
    for doc_id, path in sorted(stdlib_documents(), key=lambda d: bucket("pick:" + d[0])):
        if total >= max_bytes:
            break
        try:
            text = cut(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately not UTF-8
        if text.strip():
            picked.append((doc_id, text))
            total += len(text.encode("utf-8"))
    return picked


def shard_url(source: str, index: int) -> str:
    base = os.environ.get("NANOCHAT_DATA_URL") or PARQUET_SOURCES[source]
    return f"{base.rstrip('/')}/shard_{index:05d}.parquet"


def _parquet(source: str, max_bytes: int) -> list[tuple[str, str]]:
    """Documents from the "text" column of shards 0, 1, ... until max_bytes are gathered."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise PrepareError(
            f"the {source} corpus is parquet: pip install pyarrow, or use NANOCHAT_DATA=stdlib"
        ) from exc
    picked, total = [], 0
    for index in range(MAX_SHARDS):
        dest = cache_dir() / "downloads" / source / f"shard_{index:05d}.parquet"
        try:
            path = cached_download(shard_url(source, index), dest)
        except DownloadError as exc:
            missing = getattr(exc.__cause__, "code", None) == 404
            if index > 0 and missing:
                break  # the last shard there is: use what we have
            raise
        shard = pq.ParquetFile(path)
        if "text" not in shard.schema_arrow.names:
            raise PrepareError(f"{path} has no 'text' column; delete it and run again")
        row = 0
        for batch in shard.iter_batches(columns=["text"], batch_size=1024):
            for text in batch.column(0).to_pylist():
                doc_id, row = f"{source}:{index}:{row}", row + 1
                if text and text.strip():
                    text = cut(text)
                    picked.append((doc_id, text))
                    total += len(text.encode("utf-8"))
                    if total >= max_bytes:
                        return picked
    return picked  # every shard read: the profile gets less than it asked for


def _text(source: str, max_bytes: int) -> list[tuple[str, str]]:
    dest = cache_dir() / "downloads" / f"{source}-{max_bytes}.txt"
    cached_download(TEXT_SOURCES[source], dest, max_bytes)
    raw = dest.read_bytes()
    if source == "tinyshakespeare" and len(raw) != TINYSHAKESPEARE_BYTES:
        dest.unlink()
        raise PrepareError(
            f"tinyshakespeare download has {len(raw)} bytes, expected {TINYSHAKESPEARE_BYTES}; "
            "run again to retry, or use NANOCHAT_DATA=stdlib"
        )
    text = raw.decode("utf-8", errors="ignore")  # a capped download may end mid-character
    if len(text) < 100_000:
        raise PrepareError(f"{source} download is too small ({len(raw)} bytes); retry later")
    sep = "<|endoftext|>" if source == "tinystories" else "\n\n"
    parts = [p.strip() for p in text.split(sep)]
    return [(f"{source}:{i}", cut(p)) for i, p in enumerate(parts) if p]


def documents(source: str, max_bytes: int) -> list[tuple[str, str]]:
    """(id, text) documents of a corpus, in a fixed order, at most about max_bytes in all."""
    if source == "stdlib":
        return _stdlib(max_bytes)
    if source in PARQUET_SOURCES:
        return _parquet(source, max_bytes)
    if source in TEXT_SOURCES:
        return _text(source, max_bytes)
    raise PrepareError(f"unknown corpus {source!r}: use stdlib, {', '.join(SOURCES)}")
