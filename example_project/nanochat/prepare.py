"""
The fixed harness: data, tokenizer, dataloader, evaluation and constants.

Usage:
    python -m nanochat.prepare                      # offline corpus (Python stdlib), CPU profile
    python -m nanochat.prepare --profile gpu        # FineWeb-Edu shards, downloaded once

The research loop never edits this file. It owns everything the metric depends on:
the corpus and its train / validation / holdout splits, the BPE tokenizer, the
sequence length, the time budget, and `evaluate_bpb`, the number that decides.

Contract with train.py: it trains a model whose forward(idx) returns logits of shape
(B, T, vocab_size) and saves it with `save_model`, which exports the forward as a graph of
ATen operators (nanochat/graph.py). The scorer loads only that graph, never train.py, checks
the model is causal, and scores it itself: nothing train.py does can reach the number.

Budgets: the GPU profile trains for a wall-clock budget, like autoresearch (on a dedicated
GPU time is what is scarce, and it is steady). The CPU profile trains for a fixed budget of
model FLOPs with a fixed thread count and seeded data, so the same code gives the same
val_bpb to the last digit on an idle or a loaded machine (wall clock on shared cores moves
by several percent, and the loop could not tell a change from the load).

Environment:
    NANOCHAT_PROFILE      cpu | gpu       (default: cpu)
    NANOCHAT_DATA         stdlib | fineweb-edu | climbmix | tinyshakespeare | tinystories
                          (default: stdlib on the CPU profile, fineweb-edu on the GPU one)
    NANOCHAT_DATA_URL     base URL of the parquet shards (a mirror; tests use a local server)
    NANOCHAT_CACHE        cache directory (default: ~/.cache/nanochat-autoresearch)
    NANOCHAT_TIME_BUDGET  seconds of wall clock: replaces the profile's budget (smoke runs)
    NANOCHAT_FLOP_BUDGET  model FLOPs: replaces the profile's budget (smoke runs, tests)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import heapq
import json
import math
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from nanochat.corpus import (  # noqa: F401  (re-exported: the harness's one namespace)
    MAX_DOC_BYTES,
    SOURCES,
    DownloadError,
    PrepareError,
    bucket,
    cache_dir,
    documents,
)

# -----------------------------------------------------------------------------
# Constants and device profiles

PREPARE_VERSION = 1  # bump when the data or tokenizer pipeline changes: it keys the cache
VAL_FRACTION = 0.05  # of the corpus bytes, by document
HOLDOUT_FRACTION = 0.05
BOS = "<|bos|>"  # the only special token: it starts every document and is never scored
STREAM_ENV = "NANOCHAT_BATCHES"  # "stdin": the harness serves the training batches
STREAM_SEED = 1337  # the order of the training windows: the harness's, not train.py's

# One pattern that Python's `re` (used to train the BPE) and tiktoken's Rust regex (used
# to encode) read the same way. The alternatives cover every character, so no byte is lost:
# words (letters, marks and "_"), digit runs, punctuation runs, newlines, other whitespace.
SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class Profile:
    """Everything that depends on the machine the metric runs on."""

    name: str
    vocab_size: int  # including the BOS token
    seq_len: int
    time_budget: float | None  # seconds of training, not counting compilation...
    train_flops: float | None  # ...or model FLOPs of training (forward + backward): one is set
    threads: int | None  # CPU threads, fixed so that float sums split the same way every run
    eval_tokens: int  # tokens scored per split
    corpus_bytes: int  # text used, all splits together
    tokenizer_bytes: int  # training text the BPE learns its merges from
    depth_scale: float  # train.py's DEPTH is multiplied by this
    batch_scale: float  # train.py's DEVICE_BATCH_SIZE is multiplied by this
    eval_batch_size: int
    max_eval_seconds: float  # the whole metric (train + score) must finish inside this
    untimed_allowance: float  # seconds of compilation and warm-up a time budget does not count
    export_allowance: float  # seconds from the last batch taken to the exit (export, save)


PROFILES = {
    # A demo that learns on 2 CPU cores in seconds (CI and the README): the GPU model scaled
    # down (one block of width 64 at train.py's defaults, half the batch, a quarter of the
    # sequence), trained for ~250k tokens. At this budget a smaller model that sees more
    # tokens wins: the depth-2 model of the first demo reached 3.1 bits per byte on it.
    "cpu": Profile(
        name="cpu",
        vocab_size=512,
        seq_len=64,
        time_budget=None,
        train_flops=1.5e11,  # ~140 steps of the default model: seconds on 2 cores
        threads=2,
        eval_tokens=16384,
        corpus_bytes=3_000_000,
        tokenizer_bytes=300_000,
        depth_scale=0.125,
        batch_scale=0.5,
        eval_batch_size=64,
        max_eval_seconds=120.0,
        untimed_allowance=8.0,
        export_allowance=60.0,
    ),
    # The real thing: one GPU, five minutes, as in autoresearch.
    "gpu": Profile(
        name="gpu",
        vocab_size=8192,
        seq_len=2048,
        time_budget=300.0,
        train_flops=None,
        threads=None,
        eval_tokens=10 * 2**20,
        corpus_bytes=400_000_000,
        tokenizer_bytes=4_000_000,
        depth_scale=1.0,
        batch_scale=1.0,
        eval_batch_size=32,
        max_eval_seconds=900.0,
        untimed_allowance=120.0,
        export_allowance=90.0,
    ),
}


class EvaluationError(RuntimeError):
    """The checkpoint cannot be scored honestly (wrong shape, looks at the future...)."""


def get_profile(name: str | None = None) -> Profile:
    """The profile named, or NANOCHAT_PROFILE, or "cpu"."""
    name = name or os.environ.get("NANOCHAT_PROFILE") or "cpu"
    if name not in PROFILES:
        raise PrepareError(
            f"unknown profile {name!r}: set NANOCHAT_PROFILE to one of {', '.join(PROFILES)}"
        )
    return PROFILES[name]


@dataclass(frozen=True)
class Budget:
    """How long training runs: `amount` seconds of wall clock, or `amount` model FLOPs."""

    kind: str  # "time" | "flops"
    amount: float

    def progress(self, seconds: float, flops: float) -> float:
        """The share of the budget used so far (training ends at 1.0)."""
        return (seconds if self.kind == "time" else flops) / self.amount

    def describe(self) -> str:
        return f"{self.amount:.0f}s" if self.kind == "time" else f"{self.amount:.3g} FLOPs"


def _positive_env(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise PrepareError(f"{name}={raw!r} is not a positive number")
    return value


def training_budget(profile: Profile) -> Budget:
    """The profile's budget; NANOCHAT_TIME_BUDGET or NANOCHAT_FLOP_BUDGET replace it."""
    seconds, flops = _positive_env("NANOCHAT_TIME_BUDGET"), _positive_env("NANOCHAT_FLOP_BUDGET")
    if seconds and flops:
        raise PrepareError("set NANOCHAT_TIME_BUDGET or NANOCHAT_FLOP_BUDGET, not both")
    if seconds:
        return Budget("time", seconds)
    if flops:
        return Budget("flops", flops)
    if profile.train_flops:
        return Budget("flops", profile.train_flops)
    return Budget("time", float(profile.time_budget))


def set_threads(profile: Profile, device: str) -> None:
    """A fixed CPU thread count: a float sum split over other threads rounds differently."""
    import torch

    if device == "cpu" and profile.threads:
        torch.set_num_threads(profile.threads)


# -----------------------------------------------------------------------------
# Corpora (nanochat/corpus.py): documents as (id, text); the id decides the split

# The GPU profile trains on text people pretrain on; the CPU demo on text every machine has.
DEFAULT_SOURCE = {"cpu": "stdlib", "gpu": "fineweb-edu"}


def get_source(name: str | None = None, profile: Profile | None = None) -> str:
    """The corpus named, or NANOCHAT_DATA, or the profile's default (stdlib on CPU).

    Where the default could not be downloaded before, a marker in the cache says so and the
    offline stdlib corpus is used, with a warning every time: never silently, and never a
    corpus that changes between two experiments because the network came back."""
    name = name or os.environ.get("NANOCHAT_DATA")
    if name:
        if name != "stdlib" and name not in SOURCES:
            raise PrepareError(
                f"unknown corpus {name!r}: set NANOCHAT_DATA to stdlib, {', '.join(SOURCES)}"
            )
        return name
    want = DEFAULT_SOURCE.get(profile.name if profile else "cpu", "stdlib")
    marker = _offline_marker(want)
    if want != "stdlib" and marker.exists():
        print(
            f"prepare: WARNING: using the offline stdlib corpus, not {want}: "
            f"{marker.read_text().strip()} (delete {marker} to try the download again)",
            file=sys.stderr,
        )
        return "stdlib"
    return want


def _offline_marker(source: str) -> Path:
    return cache_dir() / f"offline-instead-of-{source}.txt"


def _bucket(doc_id: str) -> float:
    return bucket(doc_id)


def _split_of(doc_id: str) -> str:
    b = bucket(doc_id)
    if b < VAL_FRACTION:
        return "val"
    if b < VAL_FRACTION + HOLDOUT_FRACTION:
        return "holdout"
    return "train"


# -----------------------------------------------------------------------------
# Tokenizer: byte-level BPE trained here, served by tiktoken


def train_bpe(text: str, vocab_size: int) -> dict[bytes, int]:
    """Learn byte-level BPE merges; returns tiktoken's mergeable ranks (vocab_size - 1 entries)."""
    target = vocab_size - 1  # one id is kept for BOS
    if target < 256:
        raise PrepareError(f"vocab_size {vocab_size} is too small: byte-level BPE needs >= 257")
    chunk_counts = Counter(re.findall(SPLIT_PATTERN, text))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    token_bytes = [bytes([i]) for i in range(256)]
    ranks = {b: i for i, b in enumerate(token_bytes)}

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, ids in enumerate(words):
        for pair in pairwise(ids):
            pair_counts[pair] += freqs[wi]
            where[pair].add(wi)
    # A heap with lazy deletion: stale entries are skipped when their count no longer matches.
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    while len(ranks) < target and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue
        if -neg < 2:
            break  # nothing left worth merging
        merged = token_bytes[pair[0]] + token_bytes[pair[1]]
        new_id = ranks.get(merged)
        if new_id is None:  # two merge paths can spell the same bytes: keep one id for them
            new_id = len(token_bytes)
            token_bytes.append(merged)
            ranks[merged] = new_id
        changed: set[tuple[int, int]] = set()
        for wi in list(where.pop(pair, ())):
            ids, f = words[wi], freqs[wi]
            for p in pairwise(ids):
                pair_counts[p] -= f
                changed.add(p)
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            words[wi] = out
            for p in pairwise(out):
                pair_counts[p] += f
                where[p].add(wi)
                changed.add(p)
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
    return ranks


def make_encoding(ranks: dict[bytes, int], vocab_size: int, name: str = "nanochat"):
    """A tiktoken Encoding built from our ranks: nothing is downloaded or looked up."""
    import tiktoken

    return tiktoken.Encoding(
        name,
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={BOS: vocab_size - 1},
        explicit_n_vocab=None,
    )


def _save_ranks(ranks: dict[bytes, int], path: Path) -> None:
    lines = [f"{base64.b64encode(b).decode()} {r}" for b, r in sorted(ranks.items(), key=_rank)]
    path.write_text("\n".join(lines) + "\n")


def _rank(item: tuple[bytes, int]) -> int:
    return item[1]


def _load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


# -----------------------------------------------------------------------------
# Prepared data: tokenized splits, cached on disk, keyed by everything they depend on


@dataclass
class Data:
    """A prepared corpus: tokenizer and the three token streams (numpy uint16)."""

    profile: Profile
    source: str
    path: Path
    encoding: object  # tiktoken.Encoding
    splits: dict[str, np.ndarray]
    meta: dict

    @property
    def bos_id(self) -> int:
        return self.profile.vocab_size - 1


def _cache_key(profile: Profile, source: str) -> str:
    spec = {
        "version": PREPARE_VERSION,
        "source": source,
        "vocab_size": profile.vocab_size,
        "corpus_bytes": profile.corpus_bytes,
        "tokenizer_bytes": profile.tokenizer_bytes,
        "pattern": SPLIT_PATTERN,
        # The stdlib differs between Python versions, so its corpus does too.
        "python": sys.version.split()[0] if source == "stdlib" else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def data_path(profile: Profile, source: str) -> Path:
    """The cache directory of one prepared corpus."""
    return cache_dir() / f"{source}-{profile.name}-{_cache_key(profile, source)}"


def _build(profile: Profile, source: str, dest: Path) -> None:
    """Build the corpus into a temporary directory, then move it into place in one rename."""
    t0 = time.time()
    docs = documents(source, profile.corpus_bytes)
    by_split: dict[str, list[str]] = {"train": [], "val": [], "holdout": []}
    for doc_id, text in docs:
        by_split[_split_of(doc_id)].append(text)
    sample, size = [], 0
    for text in by_split["train"]:
        if size >= profile.tokenizer_bytes:
            break
        sample.append(text)
        size += len(text.encode("utf-8"))
    ranks = train_bpe("\n".join(sample), profile.vocab_size)
    enc = make_encoding(ranks, profile.vocab_size)
    bos = profile.vocab_size - 1

    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    meta = {"source": source, "profile": profile.name, "vocab_size": profile.vocab_size}
    for split, texts in by_split.items():
        tokens: list[int] = []
        for ids in enc.encode_ordinary_batch(texts, num_threads=2):
            tokens.append(bos)
            tokens.extend(ids)
        arr = np.asarray(tokens, dtype=np.uint16)
        np.save(tmp / f"{split}.npy", arr)
        meta[split] = {
            "documents": len(texts),
            "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "tokens": int(arr.size),
        }
    _save_ranks(ranks, tmp / "tokenizer.bpe")
    meta["seconds"] = round(time.time() - t0, 2)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: use theirs
        if not dest.exists():
            raise


@functools.lru_cache(maxsize=4)
def _load(profile: Profile, source: str) -> Data:
    path = data_path(profile, source)
    if not (path / "meta.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _build(profile, source, path)
    meta = json.loads((path / "meta.json").read_text())
    splits = {s: np.load(path / f"{s}.npy") for s in ("train", "val", "holdout")}
    for split in ("val", "holdout"):
        if splits[split].size < profile.seq_len + 2:
            raise PrepareError(
                f"the {split} split of {source} has only {splits[split].size} tokens; "
                "the corpus is too small for this profile"
            )
    encoding = make_encoding(_load_ranks(path / "tokenizer.bpe"), profile.vocab_size)
    return Data(profile, source, path, encoding, splits, meta)


def load_data(profile: Profile | None = None, source: str | None = None) -> Data:
    """The prepared corpus for a profile (built and cached on first use)."""
    profile = profile or get_profile()
    chosen = get_source(source, profile)
    try:
        return _load(profile, chosen)
    except DownloadError as exc:
        if source or os.environ.get("NANOCHAT_DATA") or chosen == "stdlib":
            raise  # asked for by name: an error, not a different corpus
        marker = _offline_marker(chosen)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{chosen} could not be downloaded ({exc})\n")
        print(
            f"prepare: WARNING: {chosen} could not be downloaded; the {profile.name} profile "
            f"uses the offline stdlib corpus on this machine from now on ({marker} says why)",
            file=sys.stderr,
        )
        return _load(profile, "stdlib")


def token_byte_lengths(data: Data) -> np.ndarray:
    """UTF-8 length of every token id; 0 for BOS and unused ids, so they are never scored."""
    lengths = np.zeros(data.profile.vocab_size, dtype=np.int64)
    for i in range(data.encoding.n_vocab):
        if i != data.bos_id:
            lengths[i] = len(data.encoding.decode_single_token_bytes(i))
    return lengths


def uniform_bpb(data: Data, split: str = "val") -> float:
    """The bits per byte of a model that knows nothing: log2(vocab) per scored token."""
    nbytes = token_byte_lengths(data)[eval_windows(data, split)[1]]
    counted = int((nbytes > 0).sum())
    return math.log2(data.profile.vocab_size) * counted / int(nbytes.sum())


# -----------------------------------------------------------------------------
# Dataloader


def train_windows(data: Data, seed: int = STREAM_SEED):
    """Endless random windows of seq_len + 1 tokens from the train split, in a fixed order:
    (n, seq_len + 1) uint16 arrays. Who reads them, and in what batch size, changes nothing."""
    tokens, T = data.splits["train"], data.profile.seq_len
    if tokens.size <= T + 1:
        raise PrepareError("the train split is shorter than one sequence")
    rng = np.random.default_rng(seed)
    offsets = np.arange(T + 1)
    while True:
        starts = rng.integers(0, tokens.size - T - 1, size=256)
        yield tokens[starts[:, None] + offsets]


def batches(batch_size: int, device: str, data: Data | None = None):
    """Endless (x, y) training batches of batch_size windows of seq_len tokens.

    Under the metric the harness serves them on stdin (NANOCHAT_BATCHES=stdin) and counts
    every token taken: the data itself is out of the trainer's reach. Run on its own, the
    trainer makes the same windows here, in the same order, from the prepared train split."""
    import torch

    profile = data.profile if data is not None else get_profile()
    row = profile.seq_len + 1
    if os.environ.get(STREAM_ENV) == "stdin":
        read = _stdin_reader()
    else:
        read = _local_reader(train_windows(data if data is not None else load_data(profile)))
    while True:
        raw = read(batch_size * row * 2)
        window = torch.from_numpy(np.frombuffer(raw, dtype="<u2").astype(np.int64))
        window = window.view(batch_size, row).to(device)
        yield window[:, :-1], window[:, 1:]


def _stdin_reader():
    def read(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(0, min(left, 1 << 20))
            if not chunk:
                raise PrepareError(
                    "the harness stopped serving training batches (stdin closed): run the "
                    "trainer under the metric, or without NANOCHAT_BATCHES to read the cache"
                )
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    return read


def _local_reader(windows):
    buffer = bytearray()

    def read(n: int) -> bytes:
        while len(buffer) < n:
            buffer.extend(next(windows).astype("<u2").tobytes())
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    return read


class BatchServer:
    """The harness's side of the dataloader: serves train_windows through a pipe (the
    trainer's stdin) from a thread, and counts what the trainer took and when.

    The count is exact: what was written, less what is still unread in the pipe when the
    trainer has exited. The pipe is full from the start, so every later write had to wait
    for the trainer to make room (a page): the first and last of those writes are when it
    started and stopped taking data, to within one page of reads."""

    def __init__(self, data: Data, seed: int = STREAM_SEED):
        import threading

        self.row_bytes = 2 * (data.profile.seq_len + 1)
        self.seq_len = data.profile.seq_len
        self.read_fd, self._write_fd = os.pipe()
        self.capacity = _grow_pipe(self._write_fd)
        self.written = 0
        self.first_take: float | None = None
        self.last_take: float | None = None
        self._stop = False
        self._windows = train_windows(data, seed)
        self._thread = threading.Thread(target=self._serve, name="batch-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select

        # Non-blocking, so that `written` is never behind what is in the pipe (a blocking
        # write of a large block would return only once all of it is in).
        os.set_blocking(self._write_fd, False)
        waited = False
        try:
            while not self._stop:
                block = memoryview(next(self._windows).astype("<u2").tobytes())
                while block and not self._stop:
                    try:
                        n = os.write(self._write_fd, block)
                    except BlockingIOError:
                        waited = True
                        select.select([], [self._write_fd], [], 0.1)
                        continue
                    block = block[n:]
                    self.written += n
                    if waited:  # the pipe was full: the reader just made room, it took data
                        now = time.monotonic()
                        self.first_take = self.first_take or now
                        self.last_take = now
                        waited = False
        except (OSError, ValueError):
            return  # the reader is gone (EPIPE) or finish() closed the pipe

    def finish(self) -> dict:
        """Stop serving; what the trainer consumed (call after it exited)."""
        import fcntl
        import struct
        import termios

        self._stop = True
        self._thread.join()  # within 0.1 s: nobody reads any more, so the pipe stays full
        unread = struct.unpack("i", fcntl.ioctl(self.read_fd, termios.FIONREAD, b"\0" * 4))[0]
        consumed = max(0, self.written - unread)
        os.close(self.read_fd)
        os.close(self._write_fd)
        windows = consumed // self.row_bytes
        return {
            "windows": windows,
            "tokens": windows * self.seq_len,
            "first_take": self.first_take,
            "last_take": self.last_take,
        }


def _grow_pipe(fd: int) -> int:
    """A pipe of 1 MiB where Linux allows it (fewer wake-ups per batch); its capacity."""
    import fcntl

    set_size, get_size = getattr(fcntl, "F_SETPIPE_SZ", 1031), getattr(fcntl, "F_GETPIPE_SZ", 1032)
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, set_size, 1 << 20)
    try:
        return fcntl.fcntl(fd, get_size)
    except OSError:
        return 65536  # Linux's default


# -----------------------------------------------------------------------------
# Evaluation: the number that decides


def eval_windows(data: Data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (inputs, targets) windows scored on a split: eval_tokens in all, spread
    evenly over the whole split so that every part of it counts, not just its first files."""
    if split not in ("val", "holdout"):
        raise EvaluationError(f"evaluate on 'val' or 'holdout', not {split!r}")
    tokens, T = data.splits[split].astype(np.int64), data.profile.seq_len
    n = max(1, min(data.profile.eval_tokens // T, (tokens.size - 1) // T))
    starts = np.linspace(0, tokens.size - T - 1, n).astype(np.int64)
    window = tokens[starts[:, None] + np.arange(T + 1)]
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


def eval_input(profile: Profile, device: str = "cpu"):
    """A batch shaped like the ones evaluate_bpb feeds: the shape a saved graph is fixed to."""
    import torch

    return torch.zeros(profile.eval_batch_size, profile.seq_len, dtype=torch.long, device=device)


def save_model(model, path: str | Path, profile: Profile, device: str = "cpu") -> None:
    """Export the trained model as a graph of ATen operators (no Python code) for scoring."""
    from nanochat import graph

    graph.save(model, eval_input(profile, device), path)


def load_model(path: str | Path, device: str = "cpu"):
    """The saved graph, ready to score. Imports nothing of train.py, runs no code of it."""
    from nanochat import graph

    try:
        return graph.load(path, device)
    except graph.GraphError as exc:
        raise EvaluationError(str(exc)) from exc


def _padded(x, batch_size: int):
    """x with its last row repeated up to batch_size rows: saved graphs have a fixed shape."""
    import torch

    if x.size(0) == batch_size:
        return x
    return torch.cat([x, x[-1:].expand(batch_size - x.size(0), -1)])


def _check_causal(model, x, vocab_size: int, max_passes: int = 8) -> None:
    """Changing a token must not change any prediction before it, at every position tested.

    Each pass changes one token per row, at a different position in each row, so that a few
    passes cover the whole window (every position when T <= B * max_passes). Changing only
    the last token, as a first version did, let a model read every future token but that one.
    """
    import torch

    B, T = x.shape
    passes = min(max_passes, -(-T // B))
    slots = torch.arange(B * passes)
    positions = (slots * T // (B * passes)).view(passes, B)  # spread evenly over 0..T-1
    rows = torch.arange(B)
    with torch.no_grad():
        base = model(x).float()
        for where in positions:
            changed = x.clone()
            changed[rows, where] = (changed[rows, where] + 1) % (vocab_size - 1)
            out = model(changed).float()
            before = torch.arange(T)[None, :] < where[:, None]  # (B, T): positions < changed
            mask = before.to(out.device)[..., None]
            if not torch.allclose(out * mask, base * mask, atol=1e-3, rtol=1e-3):
                raise EvaluationError(
                    "the model's earlier predictions change when a later token changes: it "
                    "looks at the future, so its bits per byte would be meaningless. Keep "
                    "attention causal."
                )


def evaluate_bpb(model, data: Data, split: str = "val", device: str = "cpu") -> float:
    """Bits per UTF-8 byte of `split` under `model`; BOS targets are excluded."""
    import torch
    import torch.nn.functional as F

    T, V, B = data.profile.seq_len, data.profile.vocab_size, data.profile.eval_batch_size
    set_threads(data.profile, device)
    x_np, y_np = eval_windows(data, split)
    x_all, y_all = torch.from_numpy(x_np), torch.from_numpy(y_np)
    nbytes = torch.from_numpy(token_byte_lengths(data))
    n_windows = x_all.size(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    total_nats, total_bytes = 0.0, 0
    model.eval()
    with torch.no_grad(), autocast:
        _check_causal(model, _padded(x_all[:B], B).to(device), V)
        for i in range(0, n_windows, B):
            y = y_all[i : i + B].to(device)
            logits = model(_padded(x_all[i : i + B], B).to(device))
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (B, T, V):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else logits
                raise EvaluationError(
                    f"the model returned logits of shape {shape}, expected {(B, T, V)}"
                )
            logits = logits[: y.size(0)]
            nats = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1), reduction="none")
            b = nbytes.to(device)[y.reshape(-1)]
            total_nats += float((nats * (b > 0)).sum())
            total_bytes += int(b.sum())
    bpb = total_nats / (math.log(2) * total_bytes)
    if not math.isfinite(bpb):
        raise EvaluationError(f"bits per byte on {split} is {bpb}: the model produced NaN/inf")
    return bpb


# -----------------------------------------------------------------------------
# The budget, measured by the harness: what train.py says about its own cost is never read

BUDGET_TOLERANCE = 1.25  # spending more than this times the budget is a crash, never a keep
CPU_STARTUP_SECONDS = 20.0  # CPU time for imports, the peak measurement and the export
# Model FLOPs per CPU second that the default trainer exceeds even on loaded cores (it does
# ~10e9 on 2 threads): the ceiling is then 3-4x the CPU time an honest run uses.
MIN_CPU_FLOPS = 4e9


def train_flops_per_token(model, profile: Profile, device: str = "cpu") -> float:
    """Forward + backward FLOPs per token of an exported model: three times its forward (the
    backward of a matmul costs two), counted by PyTorch's FLOP counter on one evaluation
    batch of the saved graph. Attention is counted as scaled_dot_product_attention does."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    ops = torch.ops.aten
    mapping = {ops.scaled_dot_product_attention: attention}
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_attention_math",
    ):
        if hasattr(ops, name):
            mapping[getattr(ops, name)] = attention
    x = eval_input(profile, device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x)
    return 3.0 * counter.get_total_flops() / x.numel()


def cpu_ceiling(budget: Budget) -> float | None:
    """CPU seconds the whole training process tree may use under a FLOP budget (a backstop
    for compute the token count cannot see, such as training a bigger model than it exports)."""
    if budget.kind != "flops":
        return None
    return CPU_STARTUP_SECONDS + budget.amount / MIN_CPU_FLOPS


def overspend(budget: Budget, profile: Profile, spent: dict) -> str | None:
    """Why a training run spent clearly more than its budget, by the harness's measures; None
    when it did not. `spent`: tokens served, FLOPs per token of the exported model, seconds
    from the first to the last batch taken, and seconds from the last batch to the exit."""
    if budget.kind == "flops":
        flops = spent["tokens"] * spent["flops_per_token"]
        if flops > BUDGET_TOLERANCE * budget.amount:
            return (
                f"training spent {flops:.3g} FLOPs ({spent['tokens']:,} tokens served by the "
                f"harness x {spent['flops_per_token']:.3g} FLOPs per token of the exported "
                f"model), {flops / budget.amount:.2f}x its {budget.describe()} budget (at most "
                f"{BUDGET_TOLERANCE}x): train.py must stop when the budget is spent"
            )
        return None
    limit = BUDGET_TOLERANCE * budget.amount + profile.untimed_allowance
    if spent["seconds"] > limit:
        return (
            f"training took batches for {spent['seconds']:.1f}s of wall clock, measured by the "
            f"harness: over its {budget.describe()} budget (at most {BUDGET_TOLERANCE}x, plus "
            f"{profile.untimed_allowance:.0f}s for compilation and warm-up): train.py must "
            "stop when the budget is spent"
        )
    if spent["tail"] > profile.export_allowance:
        return (
            f"training ran {spent['tail']:.1f}s after it took its last batch, measured by the "
            f"harness (the export may take {profile.export_allowance:.0f}s): train on the "
            "batches as they come, and stop when the budget is spent"
        )
    return None


# -----------------------------------------------------------------------------
# Hardware reference for MFU


# Dense bf16 tensor-core peaks from the datasheets (no sparsity), most specific name first:
# MFU is model FLOPs per second over this. Unknown devices get a measured matmul rate.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
)


def datasheet_peak_flops(device_name: str) -> float | None:
    """The table's peak for a CUDA device name ("NVIDIA H100 80GB HBM3"), None if unknown."""
    for key, flops in PEAK_FLOPS:
        if key in device_name:
            return flops
    return None


@functools.lru_cache(maxsize=2)
def peak_flops(device: str) -> float:
    """Peak dense FLOP/s: the datasheet for known GPUs, a measured fp32 matmul otherwise."""
    import torch

    if device.startswith("cuda"):
        known = datasheet_peak_flops(torch.cuda.get_device_name(device))
        if known:
            return known
    n = 1024 if device.startswith("cuda") else 512  # small on CPU: it is paid every run
    a = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ a  # warm up the kernels before timing
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    reps, t0 = 8, time.perf_counter()
    for _ in range(reps):
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Prepare (or verify) the cached corpus and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None)
    parser.add_argument("--data", choices=["stdlib", *SOURCES], default=None)
    args = parser.parse_args(argv)
    try:
        data = load_data(get_profile(args.profile), args.data)
    except PrepareError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    print(f"prepared {data.source} for the {data.profile.name} profile at {data.path}")
    for split in ("train", "val", "holdout"):
        m = data.meta[split]
        print(f"  {split:8s} {m['documents']:5d} docs {m['bytes']:12,d} B {m['tokens']:11,d} tok")
    print(f"  uniform (untrained) val bpb: {uniform_bpb(data):.3f}")
    print(f"  profile: {json.dumps(asdict(data.profile))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
