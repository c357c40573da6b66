"""Checks of the editable trainer, run in their own process by tests/test_guards.py.

Usage: python tests/trainer_checks.py RESULT.json

train.py is imported here and only here: the pytest process that reports val_bpb never
imports it, so nothing train.py does at import or at run time can reach the number. Each
check writes "ok" or one line saying what broke into RESULT.json. That training stops at
its budget and exports a scorable model is the metric's own first check.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: shared cores

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from nanochat import prepare  # noqa: E402


def check_shapes_and_causality(train, data) -> None:
    torch.manual_seed(0)
    model = train.GPT(train.make_config(data.profile))
    model.init_weights()
    B, T, V = 2, data.profile.seq_len, data.profile.vocab_size
    x = torch.randint(0, V - 1, (B, T))
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised projections would hide a leak
            p.add_(0.02 * torch.randn_like(p))
        logits = model(x)
        assert logits.shape == (B, T, V), f"logits have shape {tuple(logits.shape)}"
        x2 = x.clone()
        x2[:, T // 2 :] = (x2[:, T // 2 :] + 1) % (V - 1)
        later = model(x2)
    assert torch.allclose(logits[:, : T // 2], later[:, : T // 2], atol=1e-5), (
        "changing later tokens changed earlier logits: attention must stay causal"
    )


def check_a_few_steps_lower_the_loss(train, data) -> None:
    torch.manual_seed(0)
    model = train.GPT(train.make_config(data.profile))
    model.init_weights()
    optimizers = train.build_optimizers(model)
    x, y = next(prepare.batches(data, 4, "cpu", seed=3))
    x, y = x[:, :64], y[:, :64]  # small: this guard runs before every experiment
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, f"loss did not fall: {[round(v, 3) for v in losses]}"


CHECKS = {
    "shapes_and_causality": check_shapes_and_causality,
    "a_few_steps_lower_the_loss": check_a_few_steps_lower_the_loss,
}


def main(argv: list[str]) -> int:
    (result_path,) = argv
    data = prepare.load_data(prepare.get_profile("cpu"))
    results: dict[str, str] = {}
    try:
        from nanochat import train
    except BaseException:  # a broken train.py fails every check with the same line
        line = traceback.format_exc().strip().splitlines()[-1]
        results = dict.fromkeys(CHECKS, f"importing train.py failed: {line}")
        train = None
    for name, check in CHECKS.items() if train else ():
        try:
            check(train, data)
            results[name] = "ok"
        except BaseException as exc:  # SystemExit from train() included
            results[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    Path(result_path).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
