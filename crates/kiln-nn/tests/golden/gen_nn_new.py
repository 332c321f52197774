#!/usr/bin/env python3
"""Golden values for kiln-nn's recurrent, transformer-decoder and upsample
layers (tests/nn_new.rs), from MLX 0.32.4 (CPU).

    /work/refvenv/bin/python crates/kiln-nn/tests/golden/gen_nn_new.py

Writes nn_new.json next to this script. Layer parameters come from MLX's own
initialisers after mx.random.seed(7); inputs from numpy.random.default_rng(99),
so the output is deterministic. Tensors are {"shape", "dtype", "data"} as in
nn.json; every layer case also lists MLX's parameter keys
(tree_flatten(model.parameters())) in MLX's order.
"""

import json
import math
import os
import sys

import numpy as np
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

if mx.__version__ != "0.32.4":
    sys.exit(f"expected mlx 0.32.4, found {mx.__version__}")
mx.set_default_device(mx.cpu)
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(99)
mx.random.seed(7)


def enc(a):
    a = mx.array(a)
    mx.eval(a)
    n = np.array(a)
    vals = []
    for v in n.reshape(-1).tolist():
        if n.dtype == np.float32 and math.isfinite(v):
            v = float(str(np.float32(v)))  # the shortest text that reads back as the same float32
        if isinstance(v, float) and math.isnan(v):
            vals.append("nan")
        elif isinstance(v, float) and math.isinf(v):
            vals.append("inf" if v > 0 else "-inf")
        else:
            vals.append(v)
    return {"shape": list(a.shape), "dtype": str(a.dtype).split(".")[-1], "data": vals}


def randn(*shape):
    return mx.array(rng.standard_normal(shape).astype(np.float32))


def params(m):
    flat = tree_flatten(m.parameters())
    return [k for k, _ in flat], {k: enc(v) for k, v in flat}


out = {"mlx_version": mx.__version__}

# ---------------------------------------------------------------- recurrent
rec = []
D, H = 3, 4
for kind in ["RNN", "GRU", "LSTM"]:
    for bias in [True, False]:
        for batched in [True, False]:
            for with_hidden in [False, True]:
                if not bias and not batched:
                    continue
                extra = {}
                if kind == "RNN":
                    nonlin = "relu" if (not bias and with_hidden) else "tanh"
                    m = nn.RNN(D, H, bias=bias, nonlinearity=nn.relu if nonlin == "relu" else None)
                    extra["nonlinearity"] = nonlin
                else:
                    m = getattr(nn, kind)(D, H, bias=bias)
                lead = (2,) if batched else ()
                x = randn(*lead, 5, D)
                case = {"kind": kind, "bias": bias, "input_size": D, "hidden_size": H, "x": enc(x), **extra}
                h = randn(*lead, H) if with_hidden else None
                args = [x]
                if with_hidden:
                    case["hidden"] = enc(h)
                    args.append(h)
                if kind == "LSTM":
                    # With a hidden state, also give a cell state in the batched case.
                    if with_hidden and batched:
                        c = randn(*lead, H)
                        case["cell"] = enc(c)
                        args.append(c)
                    hs, cs = m(*args)
                    case["out"] = enc(hs)
                    case["out_cell"] = enc(cs)
                else:
                    case["out"] = enc(m(*args))
                case["keys"], case["params"] = params(m)
                rec.append(case)
# LSTM with a cell state but no hidden state.
m = nn.LSTM(D, H)
x = randn(2, 5, D)
c = randn(2, H)
hs, cs = m(x, None, c)
keys, ps = params(m)
rec.append({"kind": "LSTM", "bias": True, "input_size": D, "hidden_size": H, "x": enc(x), "cell": enc(c),
            "out": enc(hs), "out_cell": enc(cs), "keys": keys, "params": ps})
out["recurrent"] = rec

# ---------------------------------------------------------------- transformer
E, HEADS, MLP = 8, 2, 12
tr = []
src = randn(2, 5, E)
tgt = randn(2, 4, E)
tgt_mask = nn.MultiHeadAttention.create_additive_causal_mask(4)
mem_mask = mx.array(rng.uniform(size=(4, 5)) > 0.3)  # boolean: True attends
mem_mask[:, 0] = True
src_mask = mx.zeros((5, 5))
for norm_first in [True, False]:
    m = nn.TransformerDecoderLayer(E, HEADS, MLP, norm_first=norm_first)
    y = m(tgt, src, tgt_mask, mem_mask)
    keys, ps = params(m)
    tr.append({"kind": "TransformerDecoderLayer", "norm_first": norm_first, "activation": "relu",
               "num_layers": 1, "out": enc(y), "keys": keys, "params": ps})
for norm_first, act in [(True, "gelu"), (False, "relu")]:
    m = nn.TransformerDecoder(2, E, HEADS, MLP, activation=getattr(nn, act), norm_first=norm_first)
    y = m(tgt, src, tgt_mask, None)
    keys, ps = params(m)
    tr.append({"kind": "TransformerDecoder", "norm_first": norm_first, "activation": act,
               "num_layers": 2, "out": enc(y), "keys": keys, "params": ps})
for norm_first, act in [(True, "relu"), (False, "gelu")]:
    m = nn.Transformer(E, HEADS, 1, 2, MLP, activation=getattr(nn, act), norm_first=norm_first)
    y = m(src, tgt, src_mask, tgt_mask, mem_mask)
    keys, ps = params(m)
    tr.append({"kind": "Transformer", "norm_first": norm_first, "activation": act,
               "num_layers": [1, 2], "out": enc(y), "keys": keys, "params": ps})
out["transformer"] = {"dims": E, "num_heads": HEADS, "mlp_dims": MLP, "src": enc(src), "tgt": enc(tgt),
                      "tgt_mask": enc(tgt_mask), "memory_mask": enc(mem_mask), "src_mask": enc(src_mask),
                      "cases": tr}

# ---------------------------------------------------------------- upsample
ups = []
x1 = randn(2, 5, 3)
x2 = randn(1, 4, 5, 2)
x3 = randn(1, 3, 2, 3, 2)
xi = mx.arange(12, dtype=mx.int32).reshape(1, 3, 4, 1)
inputs = {"x1": x1, "x2": x2, "x3": x3, "xi": xi}
cfgs = [
    ("x1", 2.0, "nearest", False, False),
    ("x1", 1.6, "nearest", False, False),
    ("x1", 0.6, "nearest", False, False),
    ("x2", (2.0, 3.0), "nearest", False, False),
    ("x2", (1.5, 0.6), "nearest", False, False),
    ("x3", 2.0, "nearest", False, False),
    ("xi", 2.0, "nearest", False, False),
    ("xi", 1.5, "nearest", False, False),
    ("x1", 2.0, "linear", False, False),
    ("x1", 2.0, "linear", True, False),
    ("x1", 1.7, "linear", False, False),
    ("x1", 0.6, "linear", True, False),
    ("x2", (2.0, 1.5), "linear", False, False),
    ("x2", (2.0, 1.5), "linear", True, False),
    ("x2", 0.5, "linear", False, True),
    ("x2", (1.5, 0.4), "linear", False, True),
    ("x3", (2.0, 1.5, 1.0), "linear", False, False),
    ("x3", 2.0, "linear", True, False),
    ("xi", 2.0, "linear", False, False),
    ("x1", 2.0, "cubic", False, False),
    ("x1", 1.7, "cubic", True, False),
    ("x2", 2.0, "cubic", False, False),
    ("x2", (1.5, 2.0), "cubic", True, False),
    ("x2", 0.5, "cubic", False, True),
    ("x2", (2.0, 0.6), "cubic", False, True),
    ("x3", (1.5, 2.0, 1.0), "cubic", False, False),
]
for name, scale, mode, ac, aa in cfgs:
    m = nn.Upsample(scale_factor=scale, mode=mode, align_corners=ac, antialias=aa)
    y = m(inputs[name])
    sc = list(scale) if isinstance(scale, tuple) else [scale]
    ups.append({"input": name, "scale_factor": sc, "mode": mode, "align_corners": ac, "antialias": aa,
                "out": enc(y)})
out["upsample"] = {"inputs": {k: enc(v) for k, v in inputs.items()}, "cases": ups}

# ---------------------------------------------------------------- initialisation
# Each layer built right after its own seed; per-key (sum, sum of squares,
# first element) summarise MLX's draws.
inits = []
for seed, kind, args in [(11, "RNN", (3, 4)), (12, "GRU", (3, 4)), (13, "LSTM", (3, 4)),
                         (14, "TransformerDecoderLayer", (8, 2, 12)), (15, "Transformer", (8, 2, 1, 1, 12))]:
    mx.random.seed(seed)
    m = getattr(nn, kind)(*args)
    stats = {k: [v.sum().item(), (v * v).sum().item(), v.reshape(-1)[0].item()]
             for k, v in tree_flatten(m.parameters())}
    inits.append({"seed": seed, "kind": kind, "args": list(args), "stats": stats})
out["init"] = inits

with open(os.path.join(HERE, "nn_new.json"), "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote nn_new.json", os.path.getsize(os.path.join(HERE, "nn_new.json")), "bytes")
