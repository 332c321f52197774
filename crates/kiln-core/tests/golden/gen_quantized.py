#!/usr/bin/env python3
"""Golden values for kiln_core::ops::quantized (mx.quantize, mx.dequantize,
mx.quantized_matmul, mx.gather_qmm) and kiln_nn's QuantizedLinear /
QuantizedEmbedding, from MLX 0.32.4 (CPU stream).

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_quantized.py

Writes quantized.json next to this script (format: README.md). Inputs are
numpy.random.default_rng(<fixed seed>) draws, so the output is deterministic.

Conventions (besides README.md):
* kwargs always hold `group_size`, `bits` and `mode`.
* `quantize`: inputs [w]; out [wq, scales] plus biases for affine (exact).
* `dequantize`: inputs [wq, scales, biases?]; out the dequantized matrix.
* `quantized_matmul`: inputs [x, wq, scales, biases?]; kwargs transpose.
* `gather_qmm`: inputs [x, wq, scales, biases?, lhs_indices?, rhs_indices?];
  kwargs transpose, has_lhs, has_rhs.
* `nn.QuantizedLinear`: inputs [x, weight, scales, biases?, bias?]; kwargs
  has_bias (the layer's packed parameters, as MLX's layer holds them).
* `nn.QuantizedEmbedding`: inputs [indices, weight, scales, biases?]; out
  [embedding lookup, as_linear(x)] where x is the extra input after them.
* Error cases carry `error` and `message` instead of `out`.
"""

import os
import sys

import numpy as np
import mlx.core as mx
import mlx.nn as nn
from golden_common import MLX_VERSION, Cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if mx.__version__ != MLX_VERSION:
    sys.exit(f"expected mlx {MLX_VERSION}, found {mx.__version__}")
mx.set_default_device(mx.cpu)

cases = Cases()
add = cases.add


rng = np.random.default_rng(6061)


def r(shape, dtype=mx.float32, lo=-2.0, hi=2.0):
    return mx.array(rng.uniform(lo, hi, shape).astype(np.float32)).astype(dtype)


def dn(d):
    return str(d).split(".")[-1]


AFFINE = [(gs, b) for gs in (32, 64, 128) for b in (1, 2, 3, 4, 5, 6, 8)]
FP = {"mxfp4": (32, 4), "nvfp4": (16, 4), "mxfp8": (32, 8)}

# ---------------------------------------------------------------- quantize
for gs, b in AFFINE:
    w = r((2, max(64, gs)))
    add(f"quantize/affine_g{gs}_b{b}/float32", "quantize", [w],
        lambda w=w, gs=gs, b=b: mx.quantize(w, group_size=gs, bits=b), group_size=gs, bits=b, mode="affine")
for dt in (mx.float16, mx.bfloat16):
    for gs, b in ((64, 4), (32, 3), (128, 8), (32, 6)):
        w = r((3, 128), dt)
        add(f"quantize/affine_g{gs}_b{b}/{dn(dt)}", "quantize", [w],
            lambda w=w, gs=gs, b=b: mx.quantize(w, group_size=gs, bits=b), group_size=gs, bits=b, mode="affine")
# Special groups: constant, zeros, one outlier, positive only, exact ties.
special = np.zeros((5, 32), np.float32)
special[1] = 0.75
special[2, 5] = 100.0
special[3] = np.linspace(0.1, 3.2, 32)
special[4] = np.arange(32) * 0.5 - 8.0
for b in (2, 4, 8):
    w = mx.array(special)
    add(f"quantize/affine_special_b{b}/float32", "quantize", [w],
        lambda w=w, b=b: mx.quantize(w, group_size=32, bits=b), group_size=32, bits=b, mode="affine")
for mode, (gs, b) in FP.items():
    for dt in (mx.float32, mx.float16, mx.bfloat16):
        w = r((2, 64), dt, -3.0, 3.0)
        add(f"quantize/{mode}/{dn(dt)}", "quantize", [w],
            lambda w=w, mode=mode: mx.quantize(w, mode=mode), group_size=gs, bits=b, mode=mode)
    # Wide dynamic range across groups, zeros, and values on FP4 ties.
    s = np.zeros((2, 64), np.float32)
    s[0, :32] = np.linspace(-1e-3, 1e-3, 32)
    s[0, 32:] = np.linspace(-500, 500, 32)
    s[1, :32] = 0.0
    s[1, 32:] = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4) * np.array([1, -1] * 16)
    w = mx.array(s)
    add(f"quantize/{mode}/special", "quantize", [w],
        lambda w=w, mode=mode: mx.quantize(w, mode=mode), group_size=gs, bits=b, mode=mode)

# ---------------------------------------------------------------- dequantize
for gs, b in AFFINE:
    k = max(64, gs)
    wq = mx.array(rng.integers(0, 2**32, (2, k * b // 32), dtype=np.uint64).astype(np.uint32))
    sc, bi = r((2, k // gs)), r((2, k // gs))
    add(f"dequantize/affine_g{gs}_b{b}/float32", "dequantize", [wq, sc, bi],
        lambda wq=wq, sc=sc, bi=bi, gs=gs, b=b: mx.dequantize(wq, sc, bi, group_size=gs, bits=b),
        group_size=gs, bits=b, mode="affine")
for dt in (mx.float16, mx.bfloat16):
    for gs, b in ((64, 4), (32, 5), (128, 8)):
        wq = mx.array(rng.integers(0, 2**32, (3, 128 * b // 32), dtype=np.uint64).astype(np.uint32))
        sc, bi = r((3, 128 // gs), dt), r((3, 128 // gs), dt)
        add(f"dequantize/affine_g{gs}_b{b}/{dn(dt)}", "dequantize", [wq, sc, bi],
            lambda wq=wq, sc=sc, bi=bi, gs=gs, b=b: mx.dequantize(wq, sc, bi, group_size=gs, bits=b),
            group_size=gs, bits=b, mode="affine")
for mode, (gs, b) in FP.items():
    wq = mx.array(rng.integers(0, 2**32, (2, 64 * b // 32), dtype=np.uint64).astype(np.uint32))
    if mode == "nvfp4":
        sc = mx.array(rng.integers(0, 127, (2, 64 // gs)).astype(np.uint8))
    else:
        sc = mx.array(rng.integers(115, 135, (2, 64 // gs)).astype(np.uint8))
    add(f"dequantize/{mode}", "dequantize", [wq, sc],
        lambda wq=wq, sc=sc, mode=mode: mx.dequantize(wq, sc, mode=mode), group_size=gs, bits=b, mode=mode)

# ---------------------------------------------------------------- quantized_matmul


def qmm_case(cid, x, w_shape, gs, b, mode="affine", transpose=True, wdt=mx.float32):
    w = r(w_shape, wdt)
    q = mx.quantize(w, group_size=gs, bits=b, mode=mode)
    ins = [x] + list(q)
    bi = q[2] if mode == "affine" else None
    add(cid, "quantized_matmul", ins,
        lambda: mx.quantized_matmul(x, q[0], q[1], bi, transpose=transpose, group_size=gs, bits=b, mode=mode),
        group_size=gs, bits=b, mode=mode, transpose=transpose)


for gs, b in AFFINE:
    k = max(64, gs)
    qmm_case(f"quantized_matmul/affine_g{gs}_b{b}/t", r((3, k)), (5, k), gs, b)
    qmm_case(f"quantized_matmul/affine_g{gs}_b{b}/n", r((3, 16)), (16, k), gs, b, transpose=False)
qmm_case("quantized_matmul/affine_k96_decode", r((1, 96)), (40, 96), 32, 4)
qmm_case("quantized_matmul/affine_k96_decode_b8", r((1, 96)), (40, 96), 32, 8)
qmm_case("quantized_matmul/affine_batched_x", r((2, 3, 64)), (7, 64), 64, 4)
qmm_case("quantized_matmul/affine_vector_x", r((64,)), (7, 64), 32, 4)
qmm_case("quantized_matmul/affine_m9_panel", r((9, 128)), (20, 128), 64, 4)
qmm_case("quantized_matmul/affine_m9_panel_n", r((9, 24)), (24, 128), 64, 4, transpose=False)
qmm_case("quantized_matmul/affine_batched_w", r((2, 3, 64)), (2, 5, 64), 32, 4)
qmm_case("quantized_matmul/affine_batched_w_bcast", r((1, 3, 64)), (2, 5, 64), 32, 8)
for dt in (mx.float16, mx.bfloat16):
    qmm_case(f"quantized_matmul/affine_x_{dn(dt)}", r((2, 64), dt), (6, 64), 32, 4)
    qmm_case(f"quantized_matmul/affine_w_{dn(dt)}_x_f32", r((2, 64)), (6, 64), 64, 8, wdt=dt)
    qmm_case(f"quantized_matmul/affine_w_{dn(dt)}", r((2, 64), dt), (6, 64), 64, 4, wdt=dt)
for mode, (gs, b) in FP.items():
    qmm_case(f"quantized_matmul/{mode}/t", r((3, 64)), (5, 64), gs, b, mode=mode)
    qmm_case(f"quantized_matmul/{mode}/n", r((3, 8)), (8, 64), gs, b, mode=mode, transpose=False)
    qmm_case(f"quantized_matmul/{mode}/x_bfloat16", r((2, 64), mx.bfloat16), (5, 64), gs, b, mode=mode)

# ---------------------------------------------------------------- gather_qmm


def gqmm_case(cid, x, w_shape, gs, b, lhs, rhs, mode="affine", transpose=True):
    w = r(w_shape)
    q = mx.quantize(w, group_size=gs, bits=b, mode=mode)
    bi = q[2] if mode == "affine" else None
    ins = [x] + list(q) + [i for i in (lhs, rhs) if i is not None]
    add(cid, "gather_qmm", ins,
        lambda: mx.gather_qmm(x, q[0], q[1], bi, lhs_indices=lhs, rhs_indices=rhs, transpose=transpose,
                              group_size=gs, bits=b, mode=mode),
        group_size=gs, bits=b, mode=mode, transpose=transpose, has_lhs=lhs is not None, has_rhs=rhs is not None)


gqmm_case("gather_qmm/moe_rhs", r((5, 1, 1, 64)), (3, 8, 64), 32, 4, None, mx.array([[0, 1], [2, 0], [1, 1], [0, 2], [2, 2]], dtype=mx.uint32))
gqmm_case("gather_qmm/both", r((2, 3, 64)), (3, 8, 64), 64, 8, mx.array([1, 0, 1], dtype=mx.uint32), mx.array([2, 2, 0], dtype=mx.uint32))
gqmm_case("gather_qmm/defaults", r((3, 2, 64)), (3, 8, 64), 32, 4, None, None)
gqmm_case("gather_qmm/n", r((2, 2, 8)), (3, 8, 64), 32, 4, None, mx.array([2, 1], dtype=mx.uint32), transpose=False)
gqmm_case("gather_qmm/mxfp4", r((2, 2, 64)), (3, 8, 64), 32, 4, None, mx.array([2, 0], dtype=mx.uint32), mode="mxfp4")

# ---------------------------------------------------------------- errors
w = r((4, 64))
add("quantize/err_group", "quantize", [w], lambda: mx.quantize(w, group_size=48, bits=4), group_size=48, bits=4, mode="affine")
add("quantize/err_bits", "quantize", [w], lambda: mx.quantize(w, group_size=64, bits=7), group_size=64, bits=7, mode="affine")
add("quantize/err_mxfp4_group", "quantize", [w], lambda: mx.quantize(w, group_size=64, bits=4, mode="mxfp4"), group_size=64, bits=4, mode="mxfp4")
w3 = r((4, 96))
add("quantize/err_divisible", "quantize", [w3], lambda: mx.quantize(w3, group_size=64, bits=4), group_size=64, bits=4, mode="affine")
w1 = r((64,))
add("quantize/err_1d", "quantize", [w1], lambda: mx.quantize(w1, group_size=64, bits=4), group_size=64, bits=4, mode="affine")
wi = mx.zeros((4, 64), dtype=mx.int32)
add("quantize/err_int", "quantize", [wi], lambda: mx.quantize(wi, group_size=64, bits=4), group_size=64, bits=4, mode="affine")
q = mx.quantize(r((8, 64)), group_size=32, bits=4)
xb = r((2, 48))
add("quantized_matmul/err_k", "quantized_matmul", [xb] + list(q),
    lambda: mx.quantized_matmul(xb, *q, group_size=32, bits=4), group_size=32, bits=4, mode="affine", transpose=True)
add("quantized_matmul/err_bits_mismatch", "quantized_matmul", [r((2, 64))] + list(q),
    lambda: mx.quantized_matmul(r((2, 64)), *q, group_size=32, bits=8), group_size=32, bits=8, mode="affine", transpose=True)
add("dequantize/err_scales_shape", "dequantize", [q[0], q[1][:, :1], q[2][:, :1]],
    lambda: mx.dequantize(q[0], q[1][:, :1], q[2][:, :1], group_size=32, bits=4), group_size=32, bits=4, mode="affine")

# ---------------------------------------------------------------- nn layers
mx.random.seed(7)
for (din, dout, gs, b, bias) in ((64, 6, 32, 4, True), (128, 5, 64, 8, False), (64, 3, 64, 3, True)):
    lin = nn.Linear(din, dout, bias=bias)
    ql = nn.QuantizedLinear.from_linear(lin, group_size=gs, bits=b)
    x = r((2, din))
    ins = [x, ql.weight, ql.scales, ql.biases] + ([ql.bias] if bias else [])
    add(f"nn.QuantizedLinear/d{din}_o{dout}_g{gs}_b{b}_bias{int(bias)}", "nn.QuantizedLinear", ins,
        lambda ql=ql, x=x: ql(x), group_size=gs, bits=b, mode="affine", has_bias=bias)
for mode, (gs, b) in FP.items():
    lin = nn.Linear(64, 4)
    ql = nn.QuantizedLinear.from_linear(lin, mode=mode)
    x = r((2, 64))
    add(f"nn.QuantizedLinear/{mode}", "nn.QuantizedLinear", [x, ql.weight, ql.scales, ql.bias],
        lambda ql=ql, x=x: ql(x), group_size=gs, bits=b, mode=mode, has_bias=True)
for (gs, b) in ((32, 4), (64, 8)):
    emb = nn.Embedding(10, 64)
    qe = nn.QuantizedEmbedding.from_embedding(emb, group_size=gs, bits=b)
    idx = mx.array([[1, 9, 3], [0, 0, 7]], dtype=mx.uint32)
    x = r((2, 64))
    add(f"nn.QuantizedEmbedding/g{gs}_b{b}", "nn.QuantizedEmbedding", [idx, qe.weight, qe.scales, qe.biases, x],
        lambda qe=qe, idx=idx, x=x: [qe(idx), qe.as_linear(x)], group_size=gs, bits=b, mode="affine")

cases.write(os.path.join(HERE, "quantized.json"), newline=True)
print(len(cases), "cases")
