#!/usr/bin/env python3
"""Golden values for kiln_core::ops::fast (mx.fast), from MLX 0.32.4 (CPU stream).

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_fast.py

Writes fast.json next to this script (format: README.md). Inputs are
numpy.random.default_rng(<fixed seed>) draws, so the output is deterministic.

Conventions (besides README.md):
* `fast.rms_norm`: inputs [x, weight?]; kwargs eps, has_weight.
* `fast.layer_norm`: inputs [x, weight?, bias?]; kwargs eps, has_weight, has_bias.
* `fast.rope`: inputs [x, offset_array?, freqs?]; kwargs dims, traditional, base
  (null with freqs), scale, offset (an int, absent when offset_array is given),
  has_offset_array, has_freqs.
* `fast.scaled_dot_product_attention`: inputs [q, k, v, mask?]; kwargs scale,
  mask ("causal", "array" or null).
* `*_vjp` ops: the same inputs followed by a cotangent `cot` for the output;
  `out` is the list of gradients (mx.vjp) of the float inputs in order
  (x, weight, bias for norms; x for rope; q, k, v for attention).
"""

import os
import sys

import numpy as np
import mlx.core as mx
from golden_common import MLX_VERSION, Cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if mx.__version__ != MLX_VERSION:
    sys.exit(f"expected mlx {MLX_VERSION}, found {mx.__version__}")
mx.set_default_device(mx.cpu)
F = mx.fast

cases = Cases()
add = cases.add


rng = np.random.default_rng(2024)


def r(shape, dtype=mx.float32, lo=-2.0, hi=2.0):
    return mx.array(rng.uniform(lo, hi, shape).astype(np.float32)).astype(dtype)


def dn(d):
    return str(d).split(".")[-1]


# ------------------------------------------------------------------ norms
for dt in [mx.float32, mx.float16, mx.bfloat16]:
    for shape in [(3, 8), (2, 2, 19)]:
        d = shape[-1]
        for hw in [True, False]:
            x = r(shape, dt)
            w = r((d,), dt, 0.5, 1.5)
            eps = 1e-5
            ins = [x, w] if hw else [x]
            sid = "x".join(map(str, shape))
            add(f"fast.rms_norm/{sid}/w{int(hw)}/{dn(dt)}", "fast.rms_norm", ins,
                lambda: F.rms_norm(x, w if hw else None, eps), eps=eps, has_weight=hw)
            cot = r(shape, dt)
            argn = [0, 1] if hw else [0]

            def rv(*a):
                return F.rms_norm(a[0], a[1] if hw else None, eps)
            add(f"fast.rms_norm_vjp/{sid}/w{int(hw)}/{dn(dt)}", "fast.rms_norm_vjp", ins + [cot],
                lambda: mx.vjp(rv, ins, [cot])[1], eps=eps, has_weight=hw)
            for hb in [True, False]:
                b = r((d,), dt)
                lins = [x] + ([w] if hw else []) + ([b] if hb else [])
                tag = f"{sid}/w{int(hw)}b{int(hb)}/{dn(dt)}"
                add(f"fast.layer_norm/{tag}", "fast.layer_norm", lins,
                    lambda: F.layer_norm(x, w if hw else None, b if hb else None, eps),
                    eps=eps, has_weight=hw, has_bias=hb)

                def lv(*a):
                    k = 1
                    ww = bb = None
                    if hw:
                        ww = a[k]
                        k += 1
                    if hb:
                        bb = a[k]
                    return F.layer_norm(a[0], ww, bb, eps)
                add(f"fast.layer_norm_vjp/{tag}", "fast.layer_norm_vjp", lins + [cot],
                    lambda: mx.vjp(lv, lins, [cot])[1], eps=eps, has_weight=hw, has_bias=hb)

# Mixed dtypes (output = promotion), a larger eps.
x = r((4, 16), mx.float16)
w = r((16,), mx.float32, 0.5, 1.5)
add("fast.rms_norm/mixed_f16_f32", "fast.rms_norm", [x, w], lambda: F.rms_norm(x, w, 0.1), eps=0.1, has_weight=True)
b = r((16,), mx.bfloat16)
add("fast.layer_norm/mixed_f16_f32_bf16", "fast.layer_norm", [x, w, b], lambda: F.layer_norm(x, w, b, 0.1),
    eps=0.1, has_weight=True, has_bias=True)

# ------------------------------------------------------------------ rope
rope_cfgs = [
    # shape, dims, traditional, base, scale, offset, offset_array, freqs
    ((2, 3, 5, 8), 8, False, 10000.0, 1.0, 0, None, False),
    ((2, 3, 5, 8), 8, True, 10000.0, 1.0, 3, None, False),
    ((1, 4, 12), 6, False, 500.0, 0.5, 7, None, False),
    ((1, 4, 12), 6, True, 500.0, 0.5, 0, None, False),
    ((2, 2, 4, 16), 16, False, 10000.0, 2.0, 0, [1, 9], False),
    ((2, 6, 10), 8, False, None, 1.0, 2, None, True),
    ((2, 6, 10), 8, True, None, 1.0, 0, [4], True),
    ((3, 1, 2, 4, 8), 4, False, 10000.0, 1.0, 11, None, False),
]
for i, (shape, dims, trad, base, scale, off, offa, hf) in enumerate(rope_cfgs):
    for dt in [mx.float32, mx.float16, mx.bfloat16]:
        if dt != mx.float32 and i % 2 == 1:
            continue
        x = r(shape, dt)
        ins = [x]
        offset = off
        if offa is not None:
            oa = mx.array(offa, dtype=mx.int32)
            ins.append(oa)
            offset = oa
        freqs = None
        if hf:
            freqs = mx.array(rng.uniform(1.0, 100.0, dims // 2).astype(np.float32))
            ins.append(freqs)
        kw = dict(dims=dims, traditional=trad, base=base, scale=scale, has_offset_array=offa is not None,
                  has_freqs=hf)
        if offa is None:
            kw["offset"] = off
        cid = f"fast.rope/{i}/{dn(dt)}"
        add(cid, "fast.rope", ins,
            lambda: F.rope(x, dims, traditional=trad, base=base, scale=scale, offset=offset, freqs=freqs), **kw)
        cot = r(shape, dt)
        add(f"fast.rope_vjp/{i}/{dn(dt)}", "fast.rope_vjp", ins + [cot],
            lambda: mx.vjp(lambda a: F.rope(a, dims, traditional=trad, base=base, scale=scale, offset=offset,
                                            freqs=freqs), [x], [cot])[1], **kw)

# ------------------------------------------------------------------ attention
sdpa_cfgs = [
    # B, Hq, Hkv, Lq, Lk, D, Dv, mask
    (2, 2, 2, 5, 5, 8, 8, None),
    (1, 4, 2, 6, 9, 8, 8, "causal"),
    (2, 4, 1, 5, 5, 16, 8, "causal"),
    (1, 2, 2, 7, 4, 8, 8, "causal"),   # L_q > L_k: the first rows see no key
    (2, 3, 3, 4, 6, 8, 8, "additive"),
    (1, 4, 2, 5, 7, 8, 8, "bool"),
    (1, 1, 1, 36, 140, 4, 4, "causal"),  # several key blocks
    (1, 2, 2, 3, 5, 4, 4, "bool_head"),  # mask (H, Lq, Lk) broadcast over batch
]
for i, (B, Hq, Hkv, Lq, Lk, D, Dv, mk) in enumerate(sdpa_cfgs):
    for dt in [mx.float32, mx.float16, mx.bfloat16]:
        if dt != mx.float32 and i % 2 == 1:
            continue
        q, k, v = r((B, Hq, Lq, D), dt), r((B, Hkv, Lk, D), dt), r((B, Hkv, Lk, Dv), dt)
        scale = 1.0 / np.sqrt(D)
        ins = [q, k, v]
        if mk is None:
            mask = None
        elif mk == "causal":
            mask = "causal"
        elif mk == "additive":
            mask = r((Lq, Lk), dt, -3.0, 0.0)
            ins.append(mask)
        elif mk == "bool":
            mask = mx.array(rng.uniform(0, 1, (B, 1, Lq, Lk)) < 0.7)
            ins.append(mask)
        else:
            mask = mx.array(rng.uniform(0, 1, (Hq, Lq, Lk)) < 0.6)
            ins.append(mask)
        kw = dict(scale=float(scale), mask=None if mk is None else ("causal" if mk == "causal" else "array"))
        add(f"fast.sdpa/{i}/{dn(dt)}", "fast.scaled_dot_product_attention", ins,
            lambda: F.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask), **kw)
        if Lq * Lk > 1000:
            continue
        cot = r((B, Hq, Lq, Dv), dt)
        add(f"fast.sdpa_vjp/{i}/{dn(dt)}", "fast.scaled_dot_product_attention_vjp", ins + [cot],
            lambda: mx.vjp(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=scale, mask=mask),
                           [q, k, v], [cot])[1], **kw)

cases.write(os.path.join(HERE, "fast.json"))
print(len(cases), "cases")
