"""Guard tests: an experiment that breaks one of these is not kept, whatever its val_bpb.

They check the harness: tokenizer, splits, dataloader, the bits-per-byte arithmetic and the
refusal of a model that reads the future. train.py is never imported here, since this
process also reports val_bpb; what the trainer must deliver is checked on what it exports:
the scorer refuses a model with the wrong logits shape or one that is not causal, and the
metric fails when training does not stop at its budget or exports nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from nanochat import prepare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return prepare.load_data(prepare.get_profile("cpu"))


# -----------------------------------------------------------------------------
# Tokenizer and data


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    return x ** 2  # square\n",
        "naïve café, Øresund, 日本語, emoji 🐍, tabs\tand  spaces  \n\n\r\n",
        "",
        "<|bos|> is plain text when it appears in a document",
    ],
)
def test_tokenizer_round_trip(data, text):
    ids = data.encoding.encode_ordinary(text)
    assert data.encoding.decode(ids) == text
    assert all(0 <= i < data.bos_id for i in ids), "ordinary text must never produce BOS"


def test_tokenizer_compresses_and_has_the_profiles_vocab(data):
    enc = data.encoding
    assert enc.n_vocab == data.profile.vocab_size
    assert enc.encode("<|bos|>", allowed_special="all") == [data.bos_id]
    sample = (ROOT / "nanochat" / "prepare.py").read_text()
    ids = enc.encode_ordinary(sample)
    assert len(sample.encode()) / len(ids) > 1.5, "the BPE should merge common byte pairs"


def test_splits_are_disjoint_and_documents_start_with_bos(data):
    for split in ("train", "val", "holdout"):
        tokens = data.splits[split]
        assert tokens[0] == data.bos_id
        assert tokens.max() < data.profile.vocab_size
        assert data.meta[split]["documents"] == int((tokens == data.bos_id).sum())
    assert data.meta["val"]["tokens"] > data.profile.eval_tokens
    assert data.meta["holdout"]["tokens"] > data.profile.eval_tokens
    # The split of a document follows from its id alone, so it never moves between runs.
    assert prepare._split_of("json/decoder.py") == prepare._split_of("json/decoder.py")


def test_batches_are_shifted_windows_in_a_fixed_order(data):
    x, y = next(prepare.batches(4, "cpu", data))
    assert x.shape == y.shape == (4, data.profile.seq_len)
    assert torch.equal(x[:, 1:], y[:, :-1])
    # The order is the harness's: the same windows whatever the batch size asks for.
    x2, _ = next(prepare.batches(2, "cpu", data))
    assert torch.equal(x2, x[:2])


# -----------------------------------------------------------------------------
# Bits per byte


class FixedLogits(nn.Module):
    """A 'model' that gives every position the same logits: its bpb is known by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        B, T = idx.shape
        return self.logits.expand(B, T, -1)


def test_bpb_of_a_uniform_model_is_log2_vocab_per_byte(data):
    V = data.profile.vocab_size
    bpb = prepare.evaluate_bpb(FixedLogits(torch.zeros(V)), data, "val")
    assert bpb == pytest.approx(prepare.uniform_bpb(data, "val"), rel=1e-6)


def test_bpb_arithmetic_on_a_hand_made_case(data):
    # Counted by hand: ids 0..V-2 have a byte length; BOS targets are excluded.
    V = data.profile.vocab_size
    targets = prepare.eval_windows(data, "val")[1].ravel()
    lengths = prepare.token_byte_lengths(data)
    assert lengths[data.bos_id] == 0 and lengths[ord("a")] == 1
    logits = torch.zeros(V)
    logits[ord("a")] = math.log(3 * (V - 1))  # p("a") = 3(V-1) / (3(V-1) + V - 1) = 3/4
    p = torch.softmax(logits, 0).double()
    scored = targets[lengths[targets] > 0]
    expected = -sum(math.log2(p[t]) for t in scored) / lengths[targets].sum()
    assert p[ord("a")] == pytest.approx(0.75)
    got = prepare.evaluate_bpb(FixedLogits(logits), data, "val")
    assert got == pytest.approx(expected, rel=1e-5)


def test_evaluation_rejects_a_model_that_sees_the_future(data):
    class Cheat(nn.Module):
        def forward(self, idx):
            # Predicts the next token by reading it: perfect, and not a language model.
            nxt = torch.roll(idx, -1, dims=1)
            return 30.0 * nn.functional.one_hot(nxt, data.profile.vocab_size).float()

    with pytest.raises(prepare.EvaluationError, match="looks at the future"):
        prepare.evaluate_bpb(Cheat(), data, "val")


def test_evaluation_rejects_a_model_that_reads_every_future_token_but_the_last(data):
    class Sly(nn.Module):
        def forward(self, idx):
            # Reads the next token except at the end of the window: changing only the last
            # token would never show it.
            nxt = torch.roll(idx, -1, dims=1)
            nxt[:, -2:] = idx[:, -2:]
            return 30.0 * nn.functional.one_hot(nxt, data.profile.vocab_size).float()

    with pytest.raises(prepare.EvaluationError, match="looks at the future"):
        prepare.evaluate_bpb(Sly(), data, "val")
