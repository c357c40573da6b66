"""Real data for the example (issue 10): parquet shards downloaded once, checked, cached.

A loopback HTTP server plays Hugging Face: it serves parquet shards the test builds and, like
the Hub for large files, announces each file's sha256 as its ETag. Nothing leaves the machine.
Covered: the shard reader (several shards, stable document ids), the download (progress bar,
checksum, cache, re-download of a corrupted file, refusal of a corrupted transfer), tokenizer
training and the prepared splits on that corpus, and the offline fallback, which is loud and
sticky rather than silent.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest
from nanochat_support import EXAMPLE

pytest.importorskip("numpy")
pytest.importorskip("tiktoken")
pa = pytest.importorskip("pyarrow", reason="the parquet corpora need pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = ("the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "over", "green",
         "hills", "and", "quiet", "rivers", "near", "old", "stone", "walls")  # fmt: skip


def _doc(i: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(40 + i % 30)]
    return f"Document {i}. " + " ".join(words) + ".\n"


@pytest.fixture
def nanochat(monkeypatch, tmp_path):
    """The example's harness modules, with a private cache."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("NANOCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NANOCHAT_DATA", raising=False)
    from nanochat import corpus, prepare

    prepare._load.cache_clear()
    yield corpus, prepare
    prepare._load.cache_clear()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Three parquet shards of 300 documents behind a loopback server that counts requests."""
    root = tmp_path / "hub"
    root.mkdir()
    for shard in range(3):
        texts = [_doc(shard * 300 + i) for i in range(300)]
        pq.write_table(pa.table({"text": texts}), root / f"shard_{shard:05d}.parquet",
                       row_group_size=128)  # fmt: skip
    state = {"requests": [], "corrupt": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            state["requests"].append(self.path)
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.end_headers()
            self.wfile.write(body[:-1] + b"\0" if state["corrupt"] else body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NANOCHAT_DATA_URL", f"http://127.0.0.1:{server.server_port}")
    yield state
    server.shutdown()
    server.server_close()


def test_shards_are_read_in_order_with_stable_ids(nanochat, hub, capfd):
    corpus, _ = nanochat
    docs = corpus.documents("fineweb-edu", 10**9)  # more than there is: every shard
    assert [d for d, _ in docs[:2]] == ["fineweb-edu:0:0", "fineweb-edu:0:1"]
    assert len(docs) == 900 and docs[300] == ("fineweb-edu:1:0", _doc(300))
    assert "downloading shard_00000.parquet" in capfd.readouterr().err  # the progress bar
    assert hub["requests"] == [f"/shard_{i:05d}.parquet" for i in range(4)]  # 3 + the 404

    # Cached and verified: a second read asks the server nothing.
    assert corpus.documents("fineweb-edu", 10**9) == docs
    assert len(hub["requests"]) == 5  # only the missing shard 3 is asked for again
    # A byte limit stops early, without touching later shards.
    assert len(corpus.documents("fineweb-edu", 2000)) < 30


def test_a_corrupted_cache_file_is_downloaded_again(nanochat, hub, capfd):
    corpus, _ = nanochat
    corpus.documents("fineweb-edu", 2000)
    shard = corpus.cache_dir() / "downloads" / "fineweb-edu" / "shard_00000.parquet"
    digest = (shard.parent / "shard_00000.parquet.sha256").read_text().strip()
    assert digest == hashlib.sha256(shard.read_bytes()).hexdigest()
    shard.write_bytes(shard.read_bytes()[:-10])  # a truncated or tampered file
    before = len(hub["requests"])
    corpus.documents("fineweb-edu", 2000)
    assert len(hub["requests"]) == before + 1
    assert "does not match its sha256" in capfd.readouterr().err


def test_a_corrupted_transfer_is_refused(nanochat, hub):
    corpus, _ = nanochat
    hub["corrupt"] = True
    with pytest.raises(corpus.PrepareError, match="arrived corrupted"):
        corpus.documents("fineweb-edu", 2000)
    assert not list((corpus.cache_dir() / "downloads" / "fineweb-edu").glob("shard_*"))


def test_tokenizer_and_splits_on_the_parquet_corpus(nanochat, hub):
    _, prepare = nanochat
    profile = replace(prepare.get_profile("cpu"), name="tiny", vocab_size=300, seq_len=16,
                      corpus_bytes=10**6, tokenizer_bytes=20_000, eval_tokens=256)  # fmt: skip
    data = prepare.load_data(profile, "fineweb-edu")
    assert data.source == "fineweb-edu" and data.encoding.n_vocab == 300
    text = _doc(5)
    ids = data.encoding.encode_ordinary(text)
    assert data.encoding.decode(ids) == text and len(ids) < len(text.encode()) / 1.5
    docs = sum(data.meta[s]["documents"] for s in ("train", "val", "holdout"))
    assert docs == 900 and min(data.meta[s]["documents"] for s in ("val", "holdout")) > 10
    for split in ("train", "val", "holdout"):  # every document starts with BOS
        assert int((data.splits[split] == data.bos_id).sum()) == data.meta[split]["documents"]


def test_offline_the_gpu_profile_falls_back_loudly_and_stays_there(nanochat, monkeypatch, capfd):
    _, prepare = nanochat
    monkeypatch.setenv("NANOCHAT_DATA_URL", "http://127.0.0.1:9")  # nothing listens there
    small = dict(corpus_bytes=1_500_000, tokenizer_bytes=30_000, vocab_size=300, seq_len=64)
    profile = replace(prepare.get_profile("gpu"), eval_tokens=1024, **small)
    assert prepare.get_source(None, profile) == "fineweb-edu"
    data = prepare.load_data(profile)
    err = capfd.readouterr().err
    assert data.source == "stdlib"
    assert "WARNING: fineweb-edu could not be downloaded" in err
    # Sticky: later runs (the next experiment) use the same corpus, and say so each time.
    assert prepare.get_source(None, profile) == "stdlib"
    assert "WARNING: using the offline stdlib corpus" in capfd.readouterr().err
    # Asked for by name, the download is an error, never another corpus.
    with pytest.raises(prepare.PrepareError, match="NANOCHAT_DATA=stdlib"):
        prepare.load_data(profile, "fineweb-edu")
