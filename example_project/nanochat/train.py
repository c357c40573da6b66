"""
Train a small GPT for a fixed budget, then export it for the harness to score.

Usage:
    python -m nanochat.train --out model.pt [--stats stats.json]
    NANOCHAT_PROFILE=gpu python -m nanochat.train --out model.pt

This is the one file the research loop edits: model, optimizer, training loop and the
hyperparameters below. The harness (prepare.py) owns the data, the tokenizer, the budget
(model FLOPs on CPU, wall clock on GPU) and the evaluation; the number that counts is what
`prepare.evaluate_bpb` says about the exported model, not what this script prints.

The recipe follows the best small-LM trainers (nanochat, modded-nanogpt, autoresearch):
rotary embeddings, QK-norm, ReLU^2 MLP, zero-initialised output projections, a logit
softcap, Muon for the hidden matrices and AdamW for embeddings, bf16 autocast and
torch.compile on CUDA, and a linear warmdown of the learning rate to the end of the budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nanochat import prepare

# -----------------------------------------------------------------------------
# Hyperparameters: edit these directly. The harness's profile multiplies DEPTH and
# DEVICE_BATCH_SIZE (by 0.125 and 0.5 on the CPU profile) and fixes seq_len, vocab, budget.

DEPTH = 8  # transformer blocks  # search: 4..16
ASPECT_RATIO = 64  # model width = depth * ASPECT_RATIO, rounded up to HEAD_DIM
HEAD_DIM = 64  # channels per attention head  # search: off
MLP_RATIO = 4  # MLP hidden width / model width
DEVICE_BATCH_SIZE = 64  # sequences per optimizer step
MATRIX_LR = 0.02  # Muon, for every 2D weight inside the blocks
EMBEDDING_LR = 0.3  # AdamW, token embedding (scaled by 1/sqrt(width/768))
UNEMBEDDING_LR = 0.004  # AdamW, lm_head (scaled like the embedding)
ADAM_BETA1 = 0.8  # short memory: the loss moves fast in a short run
ADAM_BETA2 = 0.95
MUON_MOMENTUM = 0.95  # Nesterov momentum before orthogonalisation
WARMUP_RATIO = 0.0  # share of the budget ramping the LR up (Muon rarely needs it)  # search: 0..0.2
WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying the LR linearly
FINAL_LR_FRAC = 0.0  # LR multiplier reached at the end of the warmdown  # search: 0..0.5
LOGIT_SOFTCAP = 15.0  # tanh cap on logits: keeps early training from spiking
SEED = 42  # search: off

# -----------------------------------------------------------------------------
# Model


@dataclass
class GPTConfig:
    """Shapes of the model; saved with the weights so the harness can rebuild it."""

    vocab_size: int = 512
    seq_len: int = 128
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 128
    mlp_ratio: int = 4
    logit_softcap: float = 15.0


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without weights: nothing to tune, nothing to decay."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    """cos/sin tables for rotary position embeddings, shaped (1, T, 1, head_dim/2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels by a position-dependent angle (x is B, T, H, D)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        # QK-norm: bounded attention logits, so higher learning rates stay stable.
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        # is_causal and no mask tensor: eligible for SDPA's flash / cuDNN kernels (and the
        # CPU flash kernel), never the masked math fallback; train() forbids math on CUDA.
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2: cheap, beats GELU here


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        cos, sin = rotary_tables(config.seq_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)  # rebuilt, never saved
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Unit-scale embeddings, tiny lm_head, and zero output projections, so every
        block starts as the identity and the residual stream is not disturbed at step 0."""
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                bound = math.sqrt(3.0 / lin.in_features)  # uniform with std 1/sqrt(fan_in)
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap)


# -----------------------------------------------------------------------------
# Optimizer: Muon for hidden matrices, AdamW for the rest


def orthogonalize(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately replace each matrix in G (..., rows, cols) by the nearest semi-orthogonal
    one (U V^T of its SVD) with a quintic Newton-Schulz iteration tuned for speed."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()  # bf16 is fast on GPU, slow on CPU
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= 1: inside the basin
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz: SGD-momentum whose update is orthogonalised,
    so every direction of a weight matrix learns at the same rate. Matrices of one shape are
    orthogonalised together in one batched call: far fewer, larger matmuls."""

    def __init__(self, params, lr: float, momentum: float = 0.95):
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [dict(params=[p for p in params if tuple(p.shape) == s]) for s in shapes]
        super().__init__(groups, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = torch.stack([p.grad for p in params])
            state = self.state[group["params"][0]]  # one stacked buffer per shape group
            buf = state.setdefault("momentum_buffer", torch.zeros_like(grads))
            buf.lerp_(grads, 1 - group["momentum"])
            update = orthogonalize(grads.lerp_(buf, group["momentum"]))  # Nesterov
            rows, cols = params[0].shape
            scale = max(1.0, rows / cols) ** 0.5  # same RMS update for tall matrices
            torch._foreach_add_(params, list(update.unbind(0)), alpha=-group["lr"] * scale)


def build_optimizers(model: GPT) -> list[torch.optim.Optimizer]:
    """Muon for the blocks' matrices; AdamW for embedding and lm_head, scaled with width."""
    scale = (model.config.n_embd / 768) ** -0.5  # the Adam LRs were tuned at width 768
    adam_groups = [
        dict(params=[model.wte.weight], lr=EMBEDDING_LR * scale),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * scale),
    ]
    adam = torch.optim.AdamW(
        adam_groups, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10, weight_decay=0.0
    )
    muon = Muon([p for p in model.blocks.parameters()], lr=MATRIX_LR, momentum=MUON_MOMENTUM)
    optimizers = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress: float) -> float:
    """Warmup, flat, then a linear warmdown to FINAL_LR_FRAC; progress is the budget used."""
    if WARMUP_RATIO > 0 and progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if progress <= 1.0 - WARMDOWN_RATIO:
        return 1.0
    frac = min(1.0, (1.0 - progress) / max(WARMDOWN_RATIO, 1e-8))
    return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * frac


# -----------------------------------------------------------------------------
# Training


def make_config(profile: prepare.Profile) -> GPTConfig:
    """The model shapes for a profile, from the hyperparameters above."""
    depth = max(1, round(DEPTH * profile.depth_scale))
    width = math.ceil(depth * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    return GPTConfig(
        vocab_size=profile.vocab_size,
        seq_len=profile.seq_len,
        n_layer=depth,
        n_head=width // HEAD_DIM,
        n_embd=width,
        mlp_ratio=MLP_RATIO,
        logit_softcap=LOGIT_SOFTCAP,
    )


def flops_per_token(model: GPT) -> float:
    """Forward + backward FLOPs per token by hand: 6 per weight, plus attention's T-dependent
    part (12 * layers * width * T, the causal mask not discounted, as autoresearch counts)."""
    c = model.config
    n_matmul = sum(p.numel() for p in model.parameters()) - model.wte.weight.numel()
    return 6 * n_matmul + 12 * c.n_layer * c.n_embd * c.seq_len


def sdpa_backends(device: str):
    """On CUDA, attention may use only the fused kernels: a silent fall back to the masked
    math kernel would cost several times the memory and half the MFU. CPU: PyTorch decides."""
    from contextlib import nullcontext

    if device != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    )


def count_step_flops(config: GPTConfig, batch_size: int) -> float:
    """Forward + backward FLOPs of one batch, counted by PyTorch on a shape-only (meta) copy:
    right for any architecture written here, and costs no compute."""
    with torch.device("meta"):
        model = GPT(config)
        x = torch.zeros(batch_size, config.seq_len, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return float(counter.get_total_flops())


def train(out: str, stats_path: str | None) -> dict:
    """Train for the profile's time budget and save the model; returns the run's stats."""
    t_start = time.time()
    profile = prepare.get_profile()
    budget = prepare.training_budget(profile)
    if profile.name == "gpu" and not torch.cuda.is_available():
        sys.exit("the gpu profile needs a CUDA device; use NANOCHAT_PROFILE=cpu on this machine")
    device = "cuda" if profile.name == "gpu" else "cpu"
    torch.manual_seed(SEED)
    prepare.set_threads(profile, device)  # fixed on CPU: the same sums, the same result
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()

    config = make_config(profile)
    model = GPT(config).to(device)
    model.init_weights()
    num_params = sum(p.numel() for p in model.parameters())
    optimizers = build_optimizers(model)
    # Compilation takes a minute on CUDA and does not pay off in a CPU demo. NANOCHAT_COMPILE=1
    # (inductor) or =aot_eager (capture only, fast) and NANOCHAT_BF16=1 run the GPU path on
    # CPU, so that it is tested before GPU time is spent on it.
    compile_mode = os.environ.get("NANOCHAT_COMPILE", "1" if device == "cuda" else "0")
    use_bf16 = os.environ.get("NANOCHAT_BF16", "1" if device == "cuda" else "0") == "1"
    compile_model = compile_mode != "0"
    backend = "aot_eager" if compile_mode == "aot_eager" else "inductor"
    step_model = torch.compile(model, backend=backend) if compile_model else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16)
    attention = sdpa_backends(device)
    batch_size = max(1, round(DEVICE_BATCH_SIZE * profile.batch_scale))
    # The harness serves the batches and counts the tokens; the data itself is out of reach.
    loader = prepare.batches(batch_size, device)
    step_flops = count_step_flops(config, batch_size)
    # Compilation and allocator warm-up are not timed; a FLOP budget counts every step.
    untimed_steps = 10 if device == "cuda" else 1
    print(
        f"profile {profile.name} on {device}: {asdict(config)}, batch {batch_size}, "
        f"{num_params / 1e6:.2f}M params, budget {budget.describe()}"
    )

    step, training_time, warmup_time, smooth_loss = 0, 0.0, 0.0, 0.0
    while True:
        t0 = time.time()
        x, y = next(loader)
        with autocast, attention:
            logits = step_model(x)
        loss = F.cross_entropy(logits.float().view(-1, config.vocab_size), y.reshape(-1))
        loss.backward()
        lrm = lr_multiplier(budget.progress(training_time, step * step_flops))
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()  # also synchronises CUDA, so the step time is real
        if not math.isfinite(loss_value) or loss_value > 100:
            print(f"step {step}: loss is {loss_value}; aborting (fast fail)", file=sys.stderr)
            sys.exit(1)
        if step >= untimed_steps or budget.kind == "flops":
            training_time += time.time() - t0
        else:
            warmup_time += time.time() - t0  # compilation, mostly
        smooth_loss = loss_value if step == 0 else 0.9 * smooth_loss + 0.1 * loss_value
        step += 1
        progress = budget.progress(training_time, step * step_flops)
        if step % 20 == 0:
            print(
                f"step {step:5d} | loss {smooth_loss:.4f} | lrm {lrm:.2f} | "
                f"{training_time:5.1f}s | {100 * progress:5.1f}% of budget"
            )
        if progress >= 1.0:
            break

    prepare.save_model(model, out, profile, device)
    timed_steps = step - untimed_steps if budget.kind == "time" else step
    tokens_per_s = timed_steps * batch_size * config.seq_len / max(training_time, 1e-9)
    stats = {
        "profile": profile.name,
        "device": device,
        "budget_kind": budget.kind,
        "budget": budget.amount,
        "training_seconds": round(training_time, 3),
        "warmup_seconds": round(warmup_time, 3),
        "compiled": backend if compile_model else None,
        "bf16": use_bf16,
        "total_seconds": round(time.time() - t_start, 3),
        "num_steps": step,
        "train_flops": step * step_flops,
        "tokens_per_s": tokens_per_s,
        # Model FLOPs utilisation: counted FLOPs (== flops_per_token, tested) over the peak.
        "mfu": timed_steps * step_flops / max(training_time, 1e-9) / prepare.peak_flops(device),
        "peak_flops": prepare.peak_flops(device),
        "peak_vram_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0,
        "num_params_m": num_params / 1e6,
        "depth": config.n_layer,
        "final_loss": smooth_loss,
    }
    if stats_path:
        with open(stats_path, "w") as f:
            json.dump(stats, f, indent=2)
    print("---")
    for key, value in stats.items():
        print(f"{key + ':':20s}{value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train for the budget; export the model.")
    parser.add_argument("--out", required=True, help="where to save the checkpoint")
    parser.add_argument("--stats", default=None, help="where to write run statistics (JSON)")
    args = parser.parse_args(argv)
    train(args.out, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
