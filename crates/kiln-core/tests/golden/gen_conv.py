"""Golden values for convolution (MLX 0.32.4, CPU): conv1d/2d/3d,
conv_transpose1d/2d/3d and conv_general. Writes conv.json next to this script.

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_conv.py

Inputs are drawn from numpy.random.default_rng with fixed seeds, rounded to
multiples of 1/64 so every input is exact in f16 and bf16 too.
Case format as in README.md; kwargs use MLX's keyword names ("padding" of
conv_general is [lo, hi], each a per-axis list).
"""
import json
import math
import os

import mlx.core as mx
import numpy as np
from golden_common import enc_tensor  # noqa: E402

enc = enc_tensor

assert mx.__version__ == "0.32.4", mx.__version__
mx.set_default_device(mx.cpu)

DT = {"float32": mx.float32, "float64": mx.float64, "float16": mx.float16, "bfloat16": mx.bfloat16}
cases = []
ids = set()


def rand(seed, shape, dtype="float32"):
    rng = np.random.default_rng(seed)
    v = np.round(rng.uniform(-1, 1, size=shape) * 64) / 64
    if dtype == "float64":
        return mx.array(v.astype(np.float64), dtype=mx.float64)
    return mx.array(v.astype(np.float32)).astype(DT[dtype])


def add(cid, op, x, w, kwargs, dtype="float32"):
    assert cid not in ids, cid
    ids.add(cid)
    fn = getattr(mx, op)
    c = {"id": cid, "op": op, "inputs": [enc(x), enc(w)], "kwargs": kwargs}
    try:
        kw = dict(kwargs)
        if op == "conv_general" and isinstance(kw.get("padding"), list) and isinstance(kw["padding"][0], list):
            kw["padding"] = tuple(kw["padding"])
        y = fn(x, w, **kw)
        mx.eval(y)
        c["out"] = enc(y)
    except (ValueError, RuntimeError) as e:
        msg = str(e)
        if "unsupported data type" in msg:
            # MLX's CPU conv lacks float64 for input-dilated/flipped cases;
            # Kiln supports them (checked against the f64 reference in conv.rs).
            ids.discard(cid)
            return
        if "Can only handle groups" in msg:
            # MLX lacks grouped 3-D convolution; the expected value is the
            # concatenation of per-group convolutions, computed by MLX.
            g = kw.pop("groups")
            cg, og = x.shape[-1] // g, w.shape[0] // g
            parts = [fn(x[..., i * cg:(i + 1) * cg], w[i * og:(i + 1) * og], **kw) for i in range(g)]
            c["out"] = enc(mx.concatenate(parts, axis=-1))
        else:
            c["error"] = type(e).__name__
            c["message"] = msg
    cases.append(c)


seed = [0]


def nxt():
    seed[0] += 1
    return seed[0]


def conv_case(op, xs, ws, kwargs, dtype="float32", name=None, wdtype=None):
    x = rand(nxt(), xs, dtype)
    w = rand(nxt(), ws, wdtype or dtype)
    tag = name or "_".join(f"{k}{v}" for k, v in kwargs.items()) or "basic"
    tag = tag.replace(" ", "").replace("[", "").replace("]", "").replace(",", "-")
    add(f"{op}/{tag}/{dtype}", op, x, w, kwargs)


# conv1d
for dt in ["float32", "float64", "float16", "bfloat16"]:
    conv_case("conv1d", (2, 9, 4), (3, 3, 4), {}, dt)
conv_case("conv1d", (2, 10, 4), (3, 3, 4), {"stride": 2})
conv_case("conv1d", (2, 10, 4), (3, 3, 4), {"padding": 2})
conv_case("conv1d", (2, 10, 4), (3, 3, 4), {"dilation": 2})
conv_case("conv1d", (2, 11, 4), (5, 2, 4), {"stride": 3, "padding": 1, "dilation": 2})
conv_case("conv1d", (2, 8, 6), (4, 3, 3), {"groups": 2})
conv_case("conv1d", (1, 8, 4), (4, 3, 1), {"groups": 4, "padding": 1}, name="depthwise")
conv_case("conv1d", (3, 5, 3), (2, 1, 3), {}, name="pointwise")
conv_case("conv1d", (2, 6, 4), (6, 2, 2), {"groups": 2, "stride": 2}, name="groups_stride")
# conv2d
for dt in ["float32", "float64", "float16", "bfloat16"]:
    conv_case("conv2d", (2, 6, 7, 3), (4, 3, 3, 3), {"padding": 1}, dt)
conv_case("conv2d", (1, 7, 8, 3), (2, 3, 2, 3), {})
conv_case("conv2d", (2, 8, 8, 4), (3, 3, 3, 4), {"stride": (2, 2)})
conv_case("conv2d", (2, 8, 7, 4), (3, 3, 3, 4), {"stride": (1, 2), "padding": (2, 1)})
conv_case("conv2d", (1, 9, 9, 2), (3, 3, 3, 2), {"dilation": (2, 3)})
conv_case("conv2d", (2, 6, 6, 8), (4, 3, 3, 2), {"groups": 4, "padding": 1})
conv_case("conv2d", (2, 6, 6, 6), (6, 3, 3, 1), {"groups": 6, "padding": 1}, name="depthwise")
conv_case("conv2d", (2, 6, 6, 6), (12, 3, 3, 1), {"groups": 6, "stride": 2}, name="depthwise_mult2")
conv_case("conv2d", (2, 5, 5, 8), (5, 1, 1, 8), {}, name="pointwise")
conv_case("conv2d", (2, 5, 5, 8), (6, 1, 1, 4), {"groups": 2}, name="pointwise_groups")
conv_case("conv2d", (1, 6, 6, 3), (2, 3, 3, 3), {"stride": (3, 2), "padding": (1, 0), "dilation": (1, 2)})
conv_case("conv2d", (2, 4, 4, 3), (2, 4, 4, 3), {}, name="full_kernel")
# conv3d
for dt in ["float32", "float64", "float16", "bfloat16"]:
    conv_case("conv3d", (1, 4, 5, 4, 3), (2, 2, 3, 2, 3), {}, dt)
conv_case("conv3d", (2, 5, 5, 5, 2), (3, 3, 3, 3, 2), {"stride": (2, 1, 2), "padding": (1, 1, 0)})
conv_case("conv3d", (1, 6, 5, 5, 4), (4, 2, 2, 2, 2), {"dilation": (2, 1, 2), "groups": 2})
# conv_transpose
for dt in ["float32", "float64", "float16", "bfloat16"]:
    conv_case("conv_transpose1d", (2, 5, 3), (4, 3, 3), {"stride": 2}, dt)
conv_case("conv_transpose1d", (2, 5, 3), (4, 3, 3), {})
conv_case("conv_transpose1d", (2, 5, 3), (4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1})
conv_case("conv_transpose1d", (2, 5, 3), (4, 2, 3), {"stride": 3, "dilation": 2})
conv_case("conv_transpose1d", (2, 5, 4), (6, 3, 2), {"stride": 2, "groups": 2})
conv_case("conv_transpose2d", (2, 4, 5, 3), (2, 3, 3, 3), {})
conv_case("conv_transpose2d", (2, 4, 5, 3), (2, 3, 3, 3), {"stride": (2, 2), "padding": (1, 1), "output_padding": (1, 1)})
conv_case("conv_transpose2d", (1, 4, 4, 3), (2, 3, 2, 3), {"stride": (2, 3), "padding": (0, 1), "dilation": (2, 1)})
conv_case("conv_transpose2d", (1, 4, 4, 4), (4, 3, 3, 2), {"stride": (2, 2), "groups": 2})
conv_case("conv_transpose2d", (1, 4, 4, 3), (2, 3, 3, 3), {"stride": (2, 2), "output_padding": (2, 0)}, name="big_output_padding")
conv_case("conv_transpose3d", (1, 3, 3, 3, 2), (2, 2, 2, 2, 2), {"stride": (2, 2, 2), "padding": (1, 0, 1), "output_padding": (1, 1, 0)})
conv_case("conv_transpose3d", (1, 3, 3, 2, 2), (3, 3, 2, 2, 2), {})
# conv_general
for dt in ["float32", "float64", "float16", "bfloat16"]:
    conv_case("conv_general", (2, 5, 6, 3), (4, 3, 2, 3), {"stride": [2, 1], "padding": [[1, 0], [2, 1]], "kernel_dilation": [1, 2], "input_dilation": [2, 1], "flip": True}, dt, name="mixed")
conv_case("conv_general", (2, 5, 6, 3), (4, 3, 3, 3), {"input_dilation": 2})
conv_case("conv_general", (2, 5, 6, 3), (4, 3, 3, 3), {"input_dilation": [3, 2], "padding": 2})
conv_case("conv_general", (2, 5, 6, 3), (4, 3, 3, 3), {"flip": True})
conv_case("conv_general", (2, 5, 6, 3), (4, 3, 3, 3), {"flip": True, "padding": [[1, 2], [0, 1]]})
conv_case("conv_general", (2, 9, 3), (4, 3, 3), {"padding": [[3], [0]], "stride": 2}, name="lo_only_1d")
conv_case("conv_general", (2, 9, 3), (4, 3, 3), {"padding": [[-1], [-2]]}, name="negative_padding")
conv_case("conv_general", (1, 7, 7, 4), (4, 3, 3, 2), {"padding": [[-1, 0], [2, -1]], "groups": 2, "input_dilation": 2}, name="negative_padding_groups")
conv_case("conv_general", (1, 4, 4, 4, 2), (2, 2, 3, 2, 2), {"input_dilation": [1, 2, 2], "kernel_dilation": [2, 1, 1], "flip": True, "stride": [1, 2, 1]}, name="3d_mixed")
conv_case("conv_general", (2, 6, 6), (6, 3, 1), {"groups": 6, "flip": True, "input_dilation": 2, "padding": 2}, name="depthwise_flip")
# mixed dtypes promote
conv_case("conv2d", (1, 5, 5, 2), (2, 3, 3, 2), {}, "float16", name="promote_f16_f32", wdtype="float32")
conv_case("conv2d", (1, 5, 5, 2), (2, 3, 3, 2), {}, "bfloat16", name="promote_bf16_f16", wdtype="float16")
# errors
def err_case(name, op, x, w, kwargs):
    add(f"{op}/error_{name}", op, x, w, kwargs)


x4 = rand(900, (1, 5, 5, 4))
err_case("int_input", "conv2d", x4.astype(mx.int32), rand(901, (2, 3, 3, 4)), {})
err_case("bool_input", "conv2d", x4.astype(mx.bool_), rand(901, (2, 3, 3, 4)), {})
err_case("channel_mismatch", "conv2d", x4, rand(902, (2, 3, 3, 3)), {})
err_case("groups_channels", "conv2d", x4, rand(903, (2, 3, 3, 1)), {"groups": 3})
err_case("groups_out_channels", "conv2d", x4, rand(904, (3, 3, 3, 2)), {"groups": 2})
err_case("kernel_too_big", "conv2d", x4, rand(905, (2, 7, 7, 4)), {})
err_case("kernel_too_big_dilated", "conv2d", x4, rand(906, (2, 3, 3, 4)), {"dilation": 3})
err_case("zero_stride", "conv2d", x4, rand(907, (2, 3, 3, 4)), {"stride": 0})
err_case("zero_dilation", "conv2d", x4, rand(908, (2, 3, 3, 4)), {"dilation": 0})
err_case("zero_input_dilation", "conv_general", x4, rand(909, (2, 3, 3, 4)), {"input_dilation": 0})
err_case("weight_rank", "conv2d", x4, rand(910, (3, 3, 4)), {})
err_case("input_rank", "conv2d", rand(911, (5, 5, 4)), rand(912, (2, 3, 3, 4)), {})
err_case("too_many_spatial", "conv_general", rand(913, (1, 3, 3, 3, 3, 2)), rand(914, (1, 2, 2, 2, 2, 2)), {})
err_case("negative_padding_too_small", "conv2d", x4, rand(915, (2, 3, 3, 4)), {"padding": -2})

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv.json")
with open(path, "w") as f:
    json.dump({"mlx_version": mx.__version__, "cases": cases}, f, separators=(",", ":"))
    f.write("\n")
print(len(cases), "cases,", os.path.getsize(path), "bytes")
