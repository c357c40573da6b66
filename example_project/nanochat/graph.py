"""
A trained model as data: a graph of ATen operators and its tensors, no Python code.

train.py's process calls `save(model, example, path)`: torch.export captures the model's
forward as ATen operators, and this module writes them as plain values (operator names,
literals, references to earlier results) next to the weights. The scorer calls
`load(path, device)` and runs the graph with the small interpreter below. So the process
that computes val_bpb never imports train.py, and nothing train.py does at import or at
run time can reach the number.

Why not torch.export.load: it unpickles tensors and constants with weights_only=False,
evaluates the symbolic shape expressions it reads with sympy (eval), and resolves operator
names with getattr on the torch module, where `torch.os.system` is reachable. A crafted
.pt2 file runs code in the process that loads it. Here: the file is read with
torch.load(weights_only=True), every operator must be an ATen operator overload outside a
short deny list, every argument is a literal or an earlier result, and shapes are static.
"""

from __future__ import annotations

import math
import operator
import re
from pathlib import Path

import torch

FORMAT = "nanochat-graph/1"
# ATen operators that touch files or the host, or draw random numbers (a model that is
# random could pass the causality check by luck): a model has no business calling them.
DENIED_OPS = frozenset({"from_file", "_print", "save", "load", "rand", "randn", "randint",
                        "randperm", "rand_like", "randn_like", "randint_like", "bernoulli",
                        "multinomial", "normal", "poisson", "dropout", "native_dropout",
                        "_fused_dropout", "uniform", "exponential", "geometric",
                        "cauchy", "log_normal", "random"})  # fmt: skip
_OP = re.compile(r"^aten\.([a-z][a-z0-9_]*|_[a-z][a-z0-9_]*)\.([a-zA-Z][a-zA-Z0-9_]*)$")
_DTYPES = {
    str(d).removeprefix("torch."): d for d in vars(torch).values() if isinstance(d, torch.dtype)
}
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
}


class GraphError(ValueError):
    """The file is not a model this module can run safely; the message says why."""


# -----------------------------------------------------------------------------
# Export (runs in the training process)


def _encode(value, names: dict) -> object:
    """A literal or a reference to an earlier node, as JSON-able data."""
    if isinstance(value, torch.fx.Node):
        return {"node": names[value]}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, names) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise GraphError(f"cannot save an argument of type {type(value).__name__} ({value!r})")


def export(model: torch.nn.Module, example: torch.Tensor) -> dict:
    """Capture model(example) as {"format", "nodes", "tensors", "params"} (shapes static)."""
    from torch.export.graph_signature import InputKind

    model.eval()
    with torch.no_grad():
        ep = torch.export.export(model, (example,))
    kinds = {spec.arg.name: spec for spec in ep.graph_signature.input_specs}
    tensors: dict[str, torch.Tensor] = {}
    params: list[str] = []
    names: dict = {}
    nodes: list[dict] = []
    for node in ep.graph.nodes:
        name = f"n{len(names)}"
        names[node] = name
        if node.op == "placeholder":
            spec = kinds[node.name]
            if spec.kind == InputKind.USER_INPUT:
                nodes.append({"op": "input", "name": name})
                continue
            source = ep.state_dict if spec.target in ep.state_dict else ep.constants
            tensors[name] = source[spec.target].detach().contiguous().clone()
            if spec.kind == InputKind.PARAMETER:
                params.append(name)
            nodes.append({"op": "tensor", "name": name})
        elif node.op == "call_function":
            if node.target is operator.getitem:
                target = "getitem"
            elif isinstance(node.target, torch._ops.OpOverload):
                target = f"aten.{node.target._opname}.{node.target._overloadname}"
                if node.target.namespace != "aten":
                    raise GraphError(f"{node.target} is not an ATen operator")
            else:
                raise GraphError(f"cannot save a call to {node.target!r}: only ATen operators")
            args = _encode(node.args, names)
            kwargs = {k: _encode(v, names) for k, v in node.kwargs.items()}
            nodes.append({"op": "call", "name": name, "target": target, "args": args,
                          "kwargs": kwargs})  # fmt: skip
        elif node.op == "output":
            nodes.append({"op": "output", "args": _encode(node.args[0], names)})
        else:
            raise GraphError(f"cannot save a graph node of kind {node.op!r}")
    return {"format": FORMAT, "nodes": nodes, "tensors": tensors, "params": params,
            "input_shape": list(example.shape)}  # fmt: skip


def save(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """Export the model and write it atomically (temp file, then rename)."""
    import os

    payload = export(model, example)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Load and run (the scorer; never imports the model's code)


def _no_op(*args, **kwargs) -> None:
    return None


def _resolve(target: object):
    if target == "getitem":
        return operator.getitem
    if target == "aten._assert_tensor_metadata.default":
        return _no_op  # export's dtype assertion: false under autocast, which the scorer uses
    m = _OP.match(target) if isinstance(target, str) else None
    # In-place ("add_") and out= variants would let the model keep state between calls, and
    # so behave one way while its causality is checked and another while it is scored.
    if (
        not m
        or m.group(1) in DENIED_OPS
        or m.group(1).startswith("__")
        or m.group(1).endswith("_")
        or m.group(2).startswith("out")
    ):
        raise GraphError(f"the graph calls {target!r}, which is not an allowed ATen operator")
    packet = getattr(torch.ops.aten, m.group(1), None)
    op = getattr(packet, m.group(2), None) if packet is not None else None
    if not isinstance(op, torch._ops.OpOverload):
        raise GraphError(f"the graph calls {target!r}, which this torch does not have")
    return op


class GraphModel(torch.nn.Module):
    """Runs a saved graph: forward(idx) -> whatever the exported model returned."""

    def __init__(self, payload: dict, device: str):
        super().__init__()
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise GraphError(f"not a {FORMAT} file: save the model with nanochat.graph.save")
        self.device = torch.device(device)
        self.input_shape = tuple(payload.get("input_shape") or ())
        self.nodes = payload["nodes"]
        self.tensors = {k: v.to(self.device) for k, v in payload["tensors"].items()}
        self.num_params = sum(self.tensors[k].numel() for k in payload.get("params", []))
        self.calls = [_resolve(n.get("target")) if n.get("op") == "call" else None
                      for n in self.nodes]  # fmt: skip
        for n in self.nodes:
            if n.get("op") not in ("input", "tensor", "call", "output"):
                raise GraphError(f"unknown graph node {n!r}")
            if n.get("op") == "tensor" and n.get("name") not in self.tensors:
                raise GraphError(f"graph node {n.get('name')!r} has no tensor")

    def _decode(self, value, env: dict):
        if isinstance(value, list):
            return [self._decode(v, env) for v in value]
        if isinstance(value, dict):
            if len(value) != 1:
                raise GraphError(f"bad graph argument {value!r}")
            ((kind, raw),) = value.items()
            if kind == "node" and raw in env:
                return env[raw]
            if kind == "float" and raw in ("inf", "-inf", "nan"):
                return float(raw)
            if kind == "dtype" and raw in _DTYPES:
                return _DTYPES[raw]
            if kind == "device":
                return self.device  # the graph runs where the scorer puts it
            if kind == "layout" and raw in _LAYOUTS:
                return _LAYOUTS[raw]
            if kind == "memory_format" and raw in _MEMORY_FORMATS:
                return _MEMORY_FORMATS[raw]
            raise GraphError(f"bad graph argument {value!r}")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise GraphError(f"bad graph argument {value!r}")

    def forward(self, idx: torch.Tensor):
        if self.input_shape and tuple(idx.shape) != self.input_shape:
            raise GraphError(
                f"the saved graph takes inputs of shape {self.input_shape}, got {tuple(idx.shape)}"
            )
        env: dict[str, object] = {}
        for node, call in zip(self.nodes, self.calls, strict=True):
            op = node["op"]
            if op == "input":
                env[node["name"]] = idx
            elif op == "tensor":
                env[node["name"]] = self.tensors[node["name"]]
            elif op == "call":
                args = self._decode(node.get("args", []), env)
                kwargs = node.get("kwargs") or {}
                if not isinstance(kwargs, dict):
                    raise GraphError(f"bad keyword arguments in {node.get('name')!r}")
                env[node["name"]] = call(*args, **{k: self._decode(v, env) for k, v in
                                                   kwargs.items()})  # fmt: skip
            else:
                out = self._decode(node["args"], env)
                return out[0] if isinstance(out, list) and len(out) == 1 else out
        raise GraphError("the graph has no output")


def load(path: str | Path, device: str = "cpu") -> GraphModel:
    """Read a saved graph with torch.load(weights_only=True) and check every operator."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling refusal or corrupt file: one clear line
        raise GraphError(
            f"{path} is not a safely loadable model file ({type(exc).__name__}): "
            "save the model with nanochat.graph.save"
        ) from exc
    return GraphModel(payload, device).eval()
