#!/usr/bin/env python3
"""Golden values for kiln-nn's layers (everything gen_nn.py does not cover),
from MLX 0.32.4 (CPU).

    /work/refvenv/bin/python crates/kiln-nn/tests/golden/gen_nn_layers.py

Writes nn_layers.json and net.safetensors next to this script. Inputs come
from numpy.random.default_rng(<fixed seed>) and layer weights from
mx.random.seed, so the output is deterministic. Tensors are
{"shape": [...], "dtype": "float32", "data": [flat values]} as in nn.json;
a layer's parameters are {"params": {mlx_key: tensor}} keyed as MLX's
tree_flatten(layer.parameters()) names them, so the tests load them by name.
"""

import json
import math
import os
import sys

import numpy as np
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

if mx.__version__ != "0.32.4":
    sys.exit(f"expected mlx 0.32.4, found {mx.__version__}")
mx.set_default_device(mx.cpu)
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(4321)
mx.random.seed(3)


def enc(a):
    a = mx.array(a)
    mx.eval(a)
    if a.dtype in (mx.bfloat16, mx.float16):
        a = a.astype(mx.float32)
    n = np.array(a)
    vals = []
    for v in n.reshape(-1).tolist():
        if isinstance(v, float) and math.isnan(v):
            vals.append("nan")
        elif isinstance(v, float) and math.isinf(v):
            vals.append("inf" if v > 0 else "-inf")
        elif isinstance(v, float):
            # The shortest decimal that reads back (through f64, as the tests
            # parse it) as the same float32.
            f = np.float32(v)
            short = float(np.format_float_scientific(f, unique=True, trim="-"))
            assert np.float32(short) == f, (v, short)
            vals.append(short)
        else:
            vals.append(v)
    return {"shape": list(a.shape), "dtype": str(a.dtype).split(".")[-1], "data": vals}


def randn(*shape):
    return mx.array(rng.standard_normal(shape).astype(np.float32))


def params(m):
    return {k: enc(v) for k, v in tree_flatten(m.parameters())}


def randomize(m, scale=0.5):
    """Replaces every parameter with random values (so ones/zeros defaults
    such as norm weights and zero conv biases are really tested)."""
    m.update(tree_map(lambda p: randn(*p.shape) * scale, m.parameters()))
    return m


out = {"mlx_version": mx.__version__}

# ---------------------------------------------------------------- Bilinear
bl = randomize(nn.Bilinear(4, 3, 5))
bl_nb = randomize(nn.Bilinear(4, 3, 5, bias=False))
x1, x2 = randn(2, 3, 4), randn(2, 3, 3)
out["bilinear"] = {
    "x1": enc(x1), "x2": enc(x2),
    "bias": {"params": params(bl), "out": enc(bl(x1, x2))},
    "no_bias": {"params": params(bl_nb), "out": enc(bl_nb(x1, x2))},
    "vectors": {"x1": enc(x1[0, 0]), "x2": enc(x2[0, 0]), "out": enc(bl(x1[0, 0], x2[0, 0]))},
}

# Linear on a vector and on a batch of matrices.
lin = randomize(nn.Linear(4, 3))
lin_nb = randomize(nn.Linear(4, 3, bias=False))
xv, xb = randn(4), randn(2, 3, 4)
out["linear_shapes"] = {"params": params(lin), "params_no_bias": params(lin_nb), "x_vec": enc(xv), "x_batch": enc(xb),
                        "vec": enc(lin(xv)), "batch": enc(lin(xb)), "vec_no_bias": enc(lin_nb(xv)),
                        "batch_no_bias": enc(lin_nb(xb))}

# ---------------------------------------------------------------- Conv
conv_cases = []


def conv_case(name, cls, n, x_shape, transpose=False, **kw):
    layer = randomize(cls(**kw))
    x = randn(*x_shape)
    case = {"name": name, "n": n, "transpose": transpose, "x": enc(x), "params": params(layer), "out": enc(layer(x))}
    for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
              "output_padding", "bias"):
        v = kw.get(k, {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0,
                       "bias": True}.get(k))
        if isinstance(v, int) and not isinstance(v, bool) and k not in ("in_channels", "out_channels", "groups"):
            v = [v] * n
        case[k] = list(v) if isinstance(v, tuple) else v
    conv_cases.append(case)


conv_case("conv1d_s2_p1_g2", nn.Conv1d, 1, (2, 9, 4), in_channels=4, out_channels=6, kernel_size=3, stride=2,
          padding=1, groups=2)
conv_case("conv1d_d2_nobias", nn.Conv1d, 1, (2, 7, 3), in_channels=3, out_channels=4, kernel_size=2, dilation=2,
          bias=False)
conv_case("conv2d_rect_g2", nn.Conv2d, 2, (1, 6, 5, 4), in_channels=4, out_channels=4, kernel_size=(3, 2),
          stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
conv_case("conv2d_p1_nobias", nn.Conv2d, 2, (2, 5, 5, 3), in_channels=3, out_channels=2, kernel_size=3, padding=1,
          bias=False)
conv_case("conv3d_rect", nn.Conv3d, 3, (1, 4, 5, 3, 2), in_channels=2, out_channels=3, kernel_size=(2, 3, 2),
          stride=(1, 2, 1), padding=(1, 0, 1))
conv_case("conv3d_d2_nobias", nn.Conv3d, 3, (1, 5, 5, 5, 2), in_channels=2, out_channels=2, kernel_size=2,
          dilation=2, bias=False)
conv_case("conv_transpose1d_s2_op1", nn.ConvTranspose1d, 1, (2, 5, 3), True, in_channels=3, out_channels=4,
          kernel_size=3, stride=2, padding=1, output_padding=1)
conv_case("conv_transpose1d_d2_nobias", nn.ConvTranspose1d, 1, (2, 4, 2), True, in_channels=2, out_channels=3,
          kernel_size=3, dilation=2, bias=False)
conv_case("conv_transpose2d_rect", nn.ConvTranspose2d, 2, (1, 3, 4, 2), True, in_channels=2, out_channels=3,
          kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2))
conv_case("conv_transpose2d_d2_nobias", nn.ConvTranspose2d, 2, (2, 3, 3, 2), True, in_channels=2, out_channels=2,
          kernel_size=2, dilation=2, padding=1, bias=False)
conv_case("conv_transpose3d_s2_op1", nn.ConvTranspose3d, 3, (1, 3, 2, 3, 2), True, in_channels=2, out_channels=2,
          kernel_size=2, stride=2, output_padding=1)
conv_case("conv_transpose3d_p1_nobias", nn.ConvTranspose3d, 3, (1, 3, 3, 2, 2), True, in_channels=2,
          out_channels=3, kernel_size=3, padding=1, dilation=(1, 2, 1), bias=False)
out["conv"] = conv_cases

# ---------------------------------------------------------------- Pooling
pool_cases = []


def pool_case(name, cls, n, x_shape, kernel, stride=None, padding=0):
    x = randn(*x_shape)
    layer = cls(kernel, stride, padding)
    vec = lambda v: list(v) if isinstance(v, tuple) else [v] * n
    pool_cases.append({
        "name": name, "kind": "max" if "Max" in cls.__name__ else "avg", "n": n, "kernel": vec(kernel),
        "stride": None if stride is None else vec(stride), "padding": vec(padding), "x": enc(x), "out": enc(layer(x)),
    })


pool_case("max1d_k3_s2_p1", nn.MaxPool1d, 1, (2, 8, 3), 3, 2, 1)
pool_case("avg1d_k2", nn.AvgPool1d, 1, (2, 7, 3), 2)
pool_case("max1d_k2_p2_wider_than_half", nn.MaxPool1d, 1, (1, 4, 2), 2, 1, 2)
pool_case("avg1d_k3_p2_wider_than_half", nn.AvgPool1d, 1, (1, 5, 2), 3, 2, 2)
pool_case("max2d_rect", nn.MaxPool2d, 2, (2, 5, 4, 3), (3, 2), (2, 1), (1, 0))
pool_case("avg2d_k2_s1_p1", nn.AvgPool2d, 2, (1, 4, 5, 2), 2, 1, 1)
pool_case("max2d_k2_nonoverlapping", nn.MaxPool2d, 2, (2, 4, 6, 3), 2)
pool_case("avg2d_k2_nonoverlapping", nn.AvgPool2d, 2, (2, 4, 6, 3), 2)
pool_case("max3d_k2_s1_p1", nn.MaxPool3d, 3, (1, 3, 3, 3, 2), 2, 1, 1)
pool_case("avg3d_rect", nn.AvgPool3d, 3, (2, 4, 4, 3, 2), (2, 2, 1), (1, 2, 1), (1, 0, 0))
xi = mx.array(rng.integers(-20, 20, (2, 5, 3)).astype(np.int32))
out["pool_int"] = {"x": enc(xi), "max_p1": enc(nn.MaxPool1d(2, padding=1)(xi)),
                   "avg_p1": enc(nn.AvgPool1d(2, padding=1)(xi)), "max": enc(nn.MaxPool1d(3, 1)(xi))}
out["pool"] = pool_cases

# ---------------------------------------------------------------- GroupNorm / InstanceNorm
gn_cases = []
for pc in (False, True):
    for affine in (True, False):
        for shape in ((2, 3, 4, 6), (4, 6)):
            gn = nn.GroupNorm(3, 6, affine=affine, pytorch_compatible=pc)
            if affine:
                randomize(gn)
            x = randn(*shape) * 2 + 1
            gn_cases.append({"pytorch_compatible": pc, "affine": affine, "groups": 3, "dims": 6, "x": enc(x),
                             "params": params(gn), "out": enc(gn(x))})
out["group_norm"] = gn_cases

in_cases = []
for affine, shape in ((True, (2, 4, 5, 3)), (False, (2, 6, 3)), (True, (1, 2, 3, 2, 3))):
    inorm = nn.InstanceNorm(3, affine=affine)
    if affine:
        randomize(inorm)
    x = randn(*shape) * 3 - 1
    in_cases.append({"affine": affine, "dims": 3, "x": enc(x), "params": params(inorm), "out": enc(inorm(x))})
out["instance_norm"] = in_cases

# ---------------------------------------------------------------- BatchNorm
bn_cases = []
for affine in (True, False):
    for track in (True, False):
        momentum = 0.1 if affine else 0.3
        bn = nn.BatchNorm(3, momentum=momentum, affine=affine, track_running_stats=track)
        if affine:
            bn.update({"weight": randn(3) * 0.5 + 1, "bias": randn(3) * 0.5})
        x1, x2, x3 = randn(4, 5, 3) * 2 + 1, randn(6, 3) - 2, randn(2, 3, 3, 3)
        case = {"affine": affine, "track_running_stats": track, "momentum": momentum, "features": 3,
                "params": params(bn), "x1": enc(x1), "x2": enc(x2), "x3": enc(x3)}
        bn.train()
        case["train1"] = enc(bn(x1))
        case["stats1"] = {k: enc(v) for k, v in tree_flatten(bn.parameters()) if k.startswith("running")}
        case["train2"] = enc(bn(x2))
        case["stats2"] = {k: enc(v) for k, v in tree_flatten(bn.parameters()) if k.startswith("running")}
        bn.eval()
        case["eval3"] = enc(bn(x3))
        case["trainable"] = sorted(k for k, _ in tree_flatten(bn.trainable_parameters()))
        bn_cases.append(case)
out["batch_norm"] = bn_cases

# Training through nn.value_and_grad updates the running statistics too.
bn = nn.BatchNorm(3)
bn.update({"weight": randn(3) * 0.5 + 1, "bias": randn(3) * 0.5})
bn_vg = {"params": params(bn), "steps": []}
loss_and_grad = nn.value_and_grad(bn, lambda x: (bn(x) ** 2 * mx.arange(1, 4)).sum())
for shape in ((5, 3), (2, 4, 3)):
    x = randn(*shape) * 2 + 1
    loss, grads = loss_and_grad(x)
    bn_vg["steps"].append({"x": enc(x), "loss": enc(loss), "grads": {k: enc(v) for k, v in tree_flatten(grads)},
                           "stats": {k: enc(v) for k, v in tree_flatten(bn.parameters()) if k.startswith("running")}})
out["batch_norm_value_and_grad"] = bn_vg

# ---------------------------------------------------------------- Dropout
drop = {}
for name, cls, p, shape, seed in (("dropout", nn.Dropout, 0.3, (8, 16), 5),
                                  ("dropout2d", nn.Dropout2d, 0.4, (2, 4, 4, 6), 6),
                                  ("dropout2d_unbatched", nn.Dropout2d, 0.5, (3, 3, 8), 7),
                                  ("dropout3d", nn.Dropout3d, 0.25, (2, 3, 3, 3, 5), 8),
                                  ("dropout3d_unbatched", nn.Dropout3d, 0.5, (2, 2, 2, 8), 9)):
    layer = cls(p)
    x = randn(*shape)
    mx.random.seed(seed)
    y = layer(x)
    layer.eval()
    drop[name] = {"p": p, "seed": seed, "x": enc(x), "train": enc(y), "eval": enc(layer(x))}
out["dropout"] = drop

# ---------------------------------------------------------------- scaled_dot_product_attention
sdpa = mx.fast.scaled_dot_product_attention
q, k, v = randn(2, 4, 3, 8), randn(2, 4, 5, 8), randn(2, 4, 5, 6)
kg, vg = randn(2, 2, 5, 8), randn(2, 2, 5, 6)
q5 = randn(2, 4, 5, 8)
k3, v3 = randn(2, 4, 3, 8), randn(2, 4, 3, 6)
add_mask = randn(3, 5)
bool_mask = mx.array(rng.random((2, 1, 3, 5)) > 0.4)
bool_mask_row = mx.array(np.array([[True, False, True, True, False], [False] * 5, [True] * 5]))
head_mask = randn(4, 3, 5)
sd_inputs = {"q": q, "k": k, "v": v, "kg": kg, "vg": vg, "q5": q5, "k3": k3, "v3": v3, "v5": randn(2, 4, 5, 6)}
sd_masks = {"add_mask": add_mask, "head_mask": head_mask, "bool_mask": bool_mask, "bool_mask_row": bool_mask_row}
sd_cases = {}
scale = 0.3


def sd_case(name, qn, kn, vn, mask=None):
    m = sd_masks.get(mask, mask)
    kind = "none" if mask is None else ("causal" if mask == "causal" else
                                        ("bool" if m.dtype == mx.bool_ else "additive"))
    sd_cases[name] = {"q": qn, "k": kn, "v": vn, "mask_kind": kind, "mask": mask if kind in ("bool", "additive") else None,
                      "out": enc(sdpa(sd_inputs[qn], sd_inputs[kn], sd_inputs[vn], scale=scale, mask=m))}


sd_case("no_mask", "q", "k", "v")
sd_case("causal_l_lt_s", "q", "k", "v", "causal")
sd_case("causal_l_gt_s", "q5", "k3", "v3", "causal")
sd_case("causal_square", "q5", "q5", "v5", "causal")
sd_case("additive_2d", "q", "k", "v", "add_mask")
sd_case("additive_per_head", "q", "k", "v", "head_mask")
sd_case("bool_4d", "q", "k", "v", "bool_mask")
sd_case("bool_fully_masked_row", "q", "k", "v", "bool_mask_row")
sd_case("gqa", "q", "kg", "vg")
sd_case("gqa_causal", "q", "kg", "vg", "causal")
sd_case("gqa_additive_per_head", "q", "kg", "vg", "head_mask")
sd_case("gqa_bool", "q", "kg", "vg", "bool_mask")
h = {k_: v_.astype(mx.float16) for k_, v_ in sd_inputs.items()}
out["sdpa_f16"] = {"out": enc(sdpa(h["q"], h["k"], h["v"], scale=scale)),
                   "out_causal": enc(sdpa(h["q"], h["kg"], h["vg"], scale=scale, mask="causal")),
                   "out_bool": enc(sdpa(h["q"], h["k"], h["v"], scale=scale, mask=bool_mask_row))}
out["sdpa"] = {"scale": scale, "inputs": {k_: enc(v_) for k_, v_ in sd_inputs.items()},
               "masks": {k_: enc(v_) for k_, v_ in sd_masks.items()}, "cases": sd_cases}

# ---------------------------------------------------------------- MultiHeadAttention
mha_cases = []


def mha_case(name, kw, xq, xk, xv, mask=None):
    m = randomize(nn.MultiHeadAttention(**kw))
    c = {"name": name, "dims": kw["dims"], "num_heads": kw["num_heads"], "bias": kw.get("bias", False),
         "query_input_dims": kw.get("query_input_dims", kw["dims"]), "key_input_dims": kw.get("key_input_dims", kw["dims"]),
         "value_input_dims": kw.get("value_input_dims", kw.get("key_input_dims", kw["dims"])),
         "value_dims": kw.get("value_dims", kw["dims"]), "value_output_dims": kw.get("value_output_dims", kw["dims"]),
         "params": params(m), "queries": enc(xq), "keys": enc(xk), "values": enc(xv),
         "mask_kind": "none" if mask is None else ("causal" if isinstance(mask, str) else
                                                  ("bool" if mask.dtype == mx.bool_ else "additive")),
         "out": enc(m(xq, xk, xv, mask))}
    if mask is not None and not isinstance(mask, str):
        c["mask"] = enc(mask)
    mha_cases.append(c)


xs = randn(2, 3, 8)
mkv = randn(2, 4, 8)
mha_case("default_no_mask", {"dims": 8, "num_heads": 2}, xs, mkv, mkv)
mha_case("bias_causal_mask", {"dims": 8, "num_heads": 2, "bias": True}, xs, xs, xs,
         nn.MultiHeadAttention.create_additive_causal_mask(3))
mha_case("dims_bool_mask", {"dims": 8, "num_heads": 4, "query_input_dims": 6, "key_input_dims": 5,
                            "value_input_dims": 7, "value_dims": 4, "value_output_dims": 9, "bias": True},
         randn(2, 3, 6), randn(2, 4, 5), randn(2, 4, 7), mx.array(rng.random((2, 1, 3, 4)) > 0.3))
mha_case("bias_causal_string", {"dims": 8, "num_heads": 2, "bias": True}, xs, xs, xs, "causal")
out["mha"] = mha_cases
out["causal_mask"] = {"f32": enc(nn.MultiHeadAttention.create_additive_causal_mask(4)),
                      "f16": enc(nn.MultiHeadAttention.create_additive_causal_mask(4, mx.float16)),
                      "bf16": enc(nn.MultiHeadAttention.create_additive_causal_mask(4, mx.bfloat16))}

# ---------------------------------------------------------------- Transformer encoder
tf = {}
xt = randn(2, 4, 8)
causal4 = nn.MultiHeadAttention.create_additive_causal_mask(4)
for nf in (True, False):
    layer = randomize(nn.TransformerEncoderLayer(8, 2, mlp_dims=16, norm_first=nf))
    tf[f"layer_norm_first_{str(nf).lower()}"] = {"params": params(layer), "out": enc(layer(xt, None)),
                                    "out_causal": enc(layer(xt, causal4))}
    enc_ = randomize(nn.TransformerEncoder(2, 8, 2, mlp_dims=16, norm_first=nf))
    tf[f"encoder_norm_first_{str(nf).lower()}"] = {"params": params(enc_), "out": enc(enc_(xt, None)),
                                      "out_causal": enc(enc_(xt, causal4))}
layer = randomize(nn.TransformerEncoderLayer(8, 2, mlp_dims=16, activation=nn.gelu))
tf["layer_gelu"] = {"params": params(layer), "out": enc(layer(xt, None)), "out_causal": enc(layer(xt, causal4))}
out["transformer"] = {"x": enc(xt), "mask": enc(causal4), "cases": tf}

# ---------------------------------------------------------------- RoPE
xr = randn(2, 3, 5, 8)
rope_cases = []
for dims, trad, base, sc, off in ((8, False, 10000.0, 1.0, 0), (8, True, 10000.0, 1.0, 0), (4, False, 500.0, 0.5, 3),
                                  (4, True, 10000.0, 2.0, 2), (6, False, 10000.0, 1.0, 7), (6, True, 50.0, 1.0, 1)):
    m = nn.RoPE(dims, traditional=trad, base=base, scale=sc)
    y = m(xr, offset=off)
    y2 = mx.fast.rope(xr, dims, traditional=trad, base=base, scale=sc, offset=off)
    assert mx.array_equal(y, y2).item()
    rope_cases.append({"dims": dims, "traditional": trad, "base": base, "scale": sc, "offset": off, "out": enc(y)})
x3 = randn(2, 5, 8)
out["rope"] = {"x": enc(xr), "cases": rope_cases, "x3": enc(x3),
               "rank3": enc(mx.fast.rope(x3, 8, traditional=False, base=10000.0, scale=1.0, offset=1)),
               "rank3_traditional": enc(mx.fast.rope(x3, 6, traditional=True, base=10000.0, scale=1.0, offset=0)),
               "f16": enc(mx.fast.rope(xr.astype(mx.float16), 8, traditional=False, base=10000.0, scale=1.0, offset=2))}

# ---------------------------------------------------------------- Sinusoidal positional encoding
xp = mx.array(np.concatenate([np.arange(5, dtype=np.float32)[None], rng.uniform(0, 50, (1, 5)).astype(np.float32)]))
sin_cases = []
for kw in ({"dims": 8}, {"dims": 2}, {"dims": 6, "cos_first": True}, {"dims": 8, "full_turns": True},
           {"dims": 8, "scale": 1.0}, {"dims": 10, "min_freq": 0.01, "max_freq": 2.0, "scale": 0.7}):
    m = nn.SinusoidalPositionalEncoding(**kw)
    sin_cases.append({"kw": kw, "out": enc(m(xp))})
out["sinusoidal"] = {"x": enc(xp), "cases": sin_cases}

# ---------------------------------------------------------------- ALiBi
scores = randn(2, 4, 3, 5)
alibi_mask = randn(3, 5)
scores6 = randn(1, 6, 4, 4)
out["alibi"] = {
    "slopes": {str(h): enc(nn.ALiBi.create_alibi_slope(h)) for h in (1, 4, 6, 12)},
    "matrix": [{"q": q_, "k": k_, "heads": h, "offset": o, "out": enc(nn.ALiBi.create_alibi_matrix(q_, k_, h, o))}
               for q_, k_, h, o in ((5, 5, 4, 0), (6, 6, 6, 2), (3, 7, 12, 1))],
    "scores": enc(scores), "mask": enc(alibi_mask), "scores6": enc(scores6),
    "apply": enc(nn.ALiBi()(scores)),
    "apply_offset_mask": enc(nn.ALiBi()(scores, offset=2, mask=alibi_mask)),
    "apply6": enc(nn.ALiBi()(scores6, offset=1)),
}

# ---------------------------------------------------------------- activation modules (default arguments)
xa = mx.concatenate([randn(3, 6) * 3, mx.array([[-1.0, -0.5, 0.0, 0.5, 1.0, 6.0]])], axis=0)
act = {}
for name in ["CELU", "ELU", "GELU", "GLU", "HardShrink", "HardTanh", "Hardswish", "LeakyReLU", "LogSigmoid",
             "LogSoftmax", "Mish", "ReLU", "ReLU2", "ReLU6", "SELU", "SiLU", "Sigmoid", "Softmax", "Softmin",
             "Softplus", "Softshrink", "Softsign", "Step", "Tanh"]:
    act[name] = enc(getattr(nn, name)()(xa))
act["GELU_precise"] = enc(nn.GELU(approx="precise")(xa))
act["GELU_tanh"] = enc(nn.GELU(approx="tanh")(xa))
act["GELU_fast"] = enc(nn.GELU(approx="fast")(xa))
act["LeakyReLU_0.2"] = enc(nn.LeakyReLU(0.2)(xa))
act["ELU_0.5"] = enc(nn.ELU(0.5)(xa))
act["CELU_2"] = enc(nn.CELU(2.0)(xa))
act["Softshrink_1"] = enc(nn.Softshrink(1.0)(xa))
act["HardShrink_1"] = enc(nn.HardShrink(1.0)(xa))
act["Step_0.5"] = enc(nn.Step(0.5)(xa))
act["GLU_0"] = enc(nn.GLU(0)(xa))
pre = nn.PReLU(6)
act["PReLU_default"] = enc(pre(xa))
pre.weight = mx.array(rng.uniform(0.1, 0.5, (6,)).astype(np.float32))
act["PReLU"] = {"params": params(pre), "out": enc(pre(xa))}
out["activation_modules"] = {"x": enc(xa), "out": act}

# ---------------------------------------------------------------- Identity, Sequential
seq = randomize(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3, bias=False), nn.Dropout(0.5)))
seq.eval()
xq = randn(4, 5)
nested = randomize(nn.Sequential(nn.Sequential(nn.Linear(5, 4), nn.ReLU()), nn.Identity(), nn.Linear(4, 2)))
out["sequential_nested"] = {"params": params(nested), "out": enc(nested(xq))}
out["sequential"] = {"x": enc(xq), "params": params(seq), "out": enc(seq(xq)), "identity": enc(nn.Identity()(xq))}


# ---------------------------------------------------------------- an MLX-saved model
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm(8)
        self.encoder = nn.TransformerEncoder(2, 8, 2, mlp_dims=16, norm_first=False)
        self.head = nn.Linear(8, 4)

    def __call__(self, x, mask):
        y = self.bn(nn.relu(self.gn(self.conv(x))))
        b, h, w, c = y.shape
        y = self.encoder(y.reshape(b, h * w, c), mask)
        return self.head(y)


# Its own seeds, so that adding cases above does not change the saved file.
rng = np.random.default_rng(99)
mx.random.seed(99)
net = Net()
randomize(net, 0.3)
net.bn.update({"running_var": mx.ones((8,))})  # randomize gave it negative entries
net.train()
for _ in range(3):  # non-trivial running statistics
    net(randn(2, 4, 4, 3), None)
net.eval()
mx.eval(net.parameters())
net.save_weights(os.path.join(HERE, "net.safetensors"))
xn = randn(2, 4, 4, 3)
mask16 = nn.MultiHeadAttention.create_additive_causal_mask(16)
out["net"] = {"keys": [k for k, _ in tree_flatten(net.parameters())],
              "trainable_keys": [k for k, _ in tree_flatten(net.trainable_parameters())],
              "x": enc(xn), "out": enc(net(xn, None)), "out_causal": enc(net(xn, mask16))}

# ---------------------------------------------------------------- gradients
# loss = sum(layer(inputs…) · r) for a fixed random r; gradients with respect
# to the trainable parameters (by MLX key) and to every input.
grad_cases = {}


def grad_case(name, layer, call, inputs, train=True):
    layer.train(train)
    orig = layer.trainable_parameters()
    r = randn(*call(layer, *inputs).shape)

    def f(p, *xs):
        layer.update(p)
        return (call(layer, *xs) * r).sum()

    val, g = mx.value_and_grad(f, argnums=tuple(range(len(inputs) + 1)))(orig, *inputs)
    layer.update(orig)
    grad_cases[name] = {"params": params(layer), "inputs": [enc(x_) for x_ in inputs], "r": enc(r), "loss": enc(val),
                        "grads": {k_: enc(v_) for k_, v_ in tree_flatten(g[0])}, "input_grads": [enc(x_) for x_ in g[1:]]}


fwd = lambda l, x_: l(x_)
grad_case("conv2d", randomize(nn.Conv2d(4, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)), fwd,
          [randn(1, 6, 5, 4)])
grad_case("conv1d", randomize(nn.Conv1d(3, 4, 2, dilation=2, stride=2)), fwd, [randn(2, 7, 3)])
# No output_padding: MLX 0.32.4's input gradient of conv_transpose with
# output_padding has the wrong shape ((1, 3, 2, 2) for a (1, 3, 4, 2) input).
grad_case("conv_transpose2d", randomize(nn.ConvTranspose2d(2, 3, (3, 2), stride=(2, 3), padding=(1, 0))), fwd,
          [randn(1, 3, 4, 2)])
grad_case("max_pool2d", nn.MaxPool2d((3, 2), (2, 1), (1, 0)), fwd, [randn(2, 5, 4, 3)])
grad_case("avg_pool2d", nn.AvgPool2d(2, 1, 1), fwd, [randn(1, 4, 5, 2)])
# Ties (zeros after a relu): the gradient is shared between the tied maxima.
grad_case("max_pool2d_ties", nn.MaxPool2d(2, 1), fwd, [mx.maximum(randn(2, 4, 4, 3), 0)])
grad_case("max_pool2d_ties_nonoverlapping", nn.MaxPool2d(2), fwd, [mx.maximum(randn(2, 4, 4, 3), 0)])
grad_case("max_pool1d", nn.MaxPool1d(3, 2, 1), fwd, [randn(2, 8, 3)])
grad_case("avg_pool3d", nn.AvgPool3d((2, 2, 1), (1, 2, 1), (1, 0, 0)), fwd, [randn(1, 3, 4, 2, 2)])
grad_case("group_norm", randomize(nn.GroupNorm(3, 6)), fwd, [randn(2, 3, 4, 6)])
grad_case("group_norm_pytorch", randomize(nn.GroupNorm(3, 6, pytorch_compatible=True)), fwd, [randn(2, 3, 4, 6)])
grad_case("instance_norm", randomize(nn.InstanceNorm(3, affine=True)), fwd, [randn(2, 4, 5, 3)])
bn = nn.BatchNorm(3)
bn.update({"weight": randn(3), "bias": randn(3)})
grad_case("batch_norm_train", bn, fwd, [randn(4, 5, 3)])
bn = nn.BatchNorm(3)
bn.update({"weight": randn(3), "bias": randn(3), "running_mean": randn(3), "running_var": randn(3) ** 2 + 0.5})
grad_case("batch_norm_eval", bn, fwd, [randn(4, 5, 3)], train=False)
grad_case("bilinear", randomize(nn.Bilinear(4, 3, 5)), lambda l, a, b: l(a, b), [randn(2, 4), randn(2, 3)])
grad_case("mha", randomize(nn.MultiHeadAttention(8, 2, key_input_dims=5, value_dims=4, bias=True)),
          lambda l, q_, k_, v_: l(q_, k_, v_, mask="causal"), [randn(2, 3, 8), randn(2, 4, 5), randn(2, 4, 5)])
grad_case("transformer_layer_post_norm", randomize(nn.TransformerEncoderLayer(8, 2, mlp_dims=16, norm_first=False)),
          lambda l, x_: l(x_, causal4), [randn(2, 4, 8)])
grad_case("rope", nn.RoPE(6, traditional=True, base=500.0), lambda l, x_: l(x_, offset=2), [randn(1, 2, 4, 8)])
grad_case("sdpa_gqa_bool", nn.Identity(), lambda l, q_, k_, v_: sdpa(q_, k_, v_, scale=0.3, mask=bool_mask),
          [randn(2, 4, 3, 8), randn(2, 2, 5, 8), randn(2, 2, 5, 6)])
grad_case("sdpa_causal_additive", nn.Identity(),
          lambda l, q_, k_, v_: sdpa(q_, k_, v_, scale=0.3, mask=add_mask) + sdpa(q_, k_, v_, scale=0.3, mask="causal"),
          [randn(2, 4, 3, 8), randn(2, 4, 5, 8), randn(2, 4, 5, 6)])
grad_case("sinusoidal", nn.SinusoidalPositionalEncoding(8, cos_first=True), fwd, [randn(2, 5) * 5])
out["grads"] = grad_cases

# ---------------------------------------------------------------- default initialisation
# The constructors draw from the global key sequence in a fixed order: same
# seed, same weights.
inits = {}
for name, make in (("conv1d_g2", lambda: nn.Conv1d(4, 6, 3, groups=2)), ("conv2d", lambda: nn.Conv2d(3, 4, (3, 2))),
                   ("conv3d", lambda: nn.Conv3d(2, 3, 2, bias=False)),
                   ("conv_transpose1d", lambda: nn.ConvTranspose1d(3, 2, 4)),
                   ("conv_transpose2d", lambda: nn.ConvTranspose2d(2, 3, (2, 3))),
                   ("conv_transpose3d", lambda: nn.ConvTranspose3d(2, 2, 2)),
                   ("bilinear", lambda: nn.Bilinear(4, 3, 5)),
                   ("mha", lambda: nn.MultiHeadAttention(8, 2, query_input_dims=6, value_dims=4, bias=True)),
                   ("transformer_layer", lambda: nn.TransformerEncoderLayer(8, 2, mlp_dims=16)),
                   ("group_norm", lambda: nn.GroupNorm(2, 4)), ("instance_norm", lambda: nn.InstanceNorm(4, affine=True)),
                   ("batch_norm", lambda: nn.BatchNorm(4)), ("prelu", lambda: nn.PReLU(3))):
    mx.random.seed(11)
    inits[name] = params(make())
out["init"] = inits

path = os.path.join(HERE, "nn_layers.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote nn_layers.json", os.path.getsize(path), "bytes; net.safetensors",
      os.path.getsize(os.path.join(HERE, "net.safetensors")), "bytes")
