"""Golden values for the fft namespace (MLX 0.32.4): writes fft.json.

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_fft.py

Same format as generate.py's files (see README.md). Every op is `mx.fft.<op>`;
array arguments are in `inputs` (stft/istft: `[x, window]` when a window is
passed), everything else in `kwargs` under MLX's keyword names. Inputs come
from numpy.random.default_rng(fixed seed), so the output is deterministic.
Error cases carry `error`/`message` in place of `out`.
"""
import json
import os
import sys

import numpy as np
import mlx.core as mx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from golden_common import MLX_VERSION, enc_tensor, enc_kw  # noqa: E402

rng = np.random.default_rng(20240611)
cases = []
ids = set()


def rnd(shape, dtype="float32"):
    if dtype == "complex64":
        v = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return mx.array(v.astype(np.complex64))
    v = rng.standard_normal(shape).astype(np.float32)
    if dtype in ("int32", "uint8"):
        v = np.round(v * 3 + (4 if dtype == "uint8" else 0))
    if dtype == "bool":
        return mx.array(v > 0)
    return mx.array(v).astype(getattr(mx, dtype))


def add(cid, op, inputs, kwargs=None, expect_error=False):
    assert cid not in ids, cid
    ids.add(cid)
    kwargs = kwargs or {}
    fn = getattr(mx.fft, op)
    row = {"id": cid, "op": op, "inputs": [enc_tensor(a) for a in inputs], "kwargs": enc_kw(kwargs)}
    call_kw = dict(kwargs)
    if op in ("stft", "istft") and len(inputs) == 2:
        call_kw["window"] = inputs[1]
        inputs = inputs[:1]
    try:
        out = fn(*inputs, **call_kw)
        mx.eval(out)
        if expect_error:
            raise SystemExit(f"{cid}: expected an error")
        row["out"] = enc_tensor(out)
    except (ValueError, IndexError, TypeError) as e:
        if not expect_error:
            raise
        row["error"] = type(e).__name__
        row["message"] = str(e)
    cases.append(row)


# 1-d transforms: odd, even, prime, power-of-two sizes, with n cropping and padding.
for n in [1, 2, 5, 6, 7, 8, 12, 13, 16]:
    x = rnd((2, n))
    xc = rnd((2, n), "complex64")
    add(f"fft/n{n}/float32", "fft", [x])
    add(f"fft/n{n}/complex64", "fft", [xc])
    add(f"ifft/n{n}/complex64", "ifft", [xc])
    add(f"rfft/n{n}/float32", "rfft", [x])
    if n > 1:
        add(f"irfft/m{n}/complex64", "irfft", [xc])
        add(f"irfft/m{n}/odd_n", "irfft", [xc], {"n": 2 * n - 1})
for op, dt in [("fft", "complex64"), ("ifft", "complex64"), ("rfft", "float32"), ("irfft", "complex64")]:
    x = rnd((3, 7), dt)
    for n in [3, 4, 10, 11]:
        add(f"{op}/crop_pad/n{n}", op, [x], {"n": n})
    add(f"{op}/axis0", op, [rnd((5, 3), dt)], {"axis": 0})
    add(f"{op}/axis_neg2_3d", op, [rnd((2, 4, 3), dt)], {"axis": -2, "n": 6})
    for norm in ["backward", "ortho", "forward"]:
        add(f"{op}/norm_{norm}", op, [rnd((2, 6), dt)], {"norm": norm})
for dt in ["int32", "bool", "float16", "bfloat16", "float64", "uint8"]:
    add(f"fft/dtype_{dt}", "fft", [rnd((2, 5), dt)])
    add(f"rfft/dtype_{dt}", "rfft", [rnd((2, 6), dt)])
    add(f"irfft/dtype_{dt}", "irfft", [rnd((2, 5), dt)])
    add(f"ifft/dtype_{dt}", "ifft", [rnd((5,), dt)])
add("rfft/complex_input_drops_imag", "rfft", [rnd((2, 6), "complex64")])
add("irfft/nonhermitian_even", "irfft", [rnd((2, 4), "complex64")], {"n": 6})
add("irfft/nonhermitian_odd", "irfft", [rnd((2, 4), "complex64")], {"n": 7})
add("fft/empty_batch", "fft", [mx.zeros((0, 4))])

# 2-d and n-d.
for op, dt in [("fft2", "complex64"), ("ifft2", "complex64"), ("rfft2", "float32"), ("irfft2", "complex64"),
               ("fftn", "complex64"), ("ifftn", "complex64"), ("rfftn", "float32"), ("irfftn", "complex64")]:
    x = rnd((2, 3, 4), dt)
    add(f"{op}/default", op, [x])
    add(f"{op}/s_axes", op, [x], {"s": [4, 5], "axes": [0, 2]})
    add(f"{op}/axes_reversed", op, [x], {"axes": [2, 1]})
    add(f"{op}/s_crop", op, [rnd((3, 5, 6), dt)], {"s": [2, 3, 4], "axes": [0, 1, 2]})
    add(f"{op}/ortho", op, [rnd((3, 5), dt)], {"norm": "ortho", "axes": [0, 1]})
    add(f"{op}/forward", op, [rnd((3, 5), dt)], {"norm": "forward", "axes": [0, 1]})
    add(f"{op}/single_axis", op, [rnd((3, 5), dt)], {"axes": [0]})
add("fftn/axes_empty", "fftn", [rnd((2, 3))], {"axes": []})
add("rfftn/all_axes_odd", "rfftn", [rnd((3, 5, 3))])
add("irfftn/all_axes_s", "irfftn", [rnd((3, 4, 3), "complex64")], {"s": [3, 4, 5], "axes": [0, 1, 2]})
add("rfftn/real_axis_first", "rfftn", [rnd((5, 4))], {"axes": [1, 0]})
add("irfftn/real_axis_first", "irfftn", [rnd((3, 4), "complex64")], {"axes": [1, 0]})

# shifts and frequencies.
for op in ["fftshift", "ifftshift"]:
    add(f"{op}/1d_even", op, [mx.arange(8)])
    add(f"{op}/1d_odd", op, [mx.arange(7).astype(mx.float32)])
    add(f"{op}/2d_all", op, [mx.arange(15).reshape(3, 5)])
    add(f"{op}/2d_axis1", op, [mx.arange(15).reshape(3, 5)], {"axes": [1]})
    add(f"{op}/2d_axis_neg", op, [mx.arange(15).reshape(3, 5)], {"axes": [-2]})
    add(f"{op}/dup_axes", op, [mx.arange(12).reshape(3, 4)], {"axes": [0, 0]})
    add(f"{op}/complex", op, [rnd((2, 5), "complex64")], {"axes": [0, 1]})
    add(f"{op}/scalar", op, [mx.array(3.0)])
    add(f"err/{op}/bad_axis", op, [mx.arange(4)], {"axes": [1]}, expect_error=True)
for n in [1, 2, 5, 8]:
    for d in [1.0, 0.1, -2.0]:
        add(f"fftfreq/n{n}_d{d}", "fftfreq", [], {"n": n, "d": d})
        add(f"rfftfreq/n{n}_d{d}", "rfftfreq", [], {"n": n, "d": d})

# stft / istft.
sig = rnd((2, 40))
hann8 = mx.array(np.hanning(10)[1:-1].astype(np.float32))
short5 = mx.array(np.hanning(7)[1:-1].astype(np.float32))
add("stft/default_hop", "stft", [sig], {"n_fft": 8})
add("stft/hop3", "stft", [sig], {"n_fft": 8, "hop_length": 3})
add("stft/win_length6", "stft", [sig], {"n_fft": 8, "hop_length": 2, "win_length": 6})
add("stft/hann", "stft", [sig, hann8], {"n_fft": 8, "hop_length": 2})
add("stft/short_window", "stft", [sig, short5], {"n_fft": 8, "hop_length": 2})
add("stft/no_center", "stft", [sig, hann8], {"n_fft": 8, "hop_length": 3, "center": False})
add("stft/pad_constant", "stft", [sig], {"n_fft": 8, "hop_length": 4, "pad_mode": "constant"})
add("stft/pad_edge", "stft", [sig], {"n_fft": 8, "hop_length": 4, "pad_mode": "edge"})
add("stft/twosided", "stft", [sig], {"n_fft": 8, "hop_length": 4, "onesided": False})
add("stft/complex", "stft", [rnd((1, 24), "complex64")], {"n_fft": 8, "hop_length": 4})
add("stft/ortho", "stft", [sig], {"n_fft": 8, "hop_length": 4, "norm": "ortho"})
add("stft/odd_nfft", "stft", [sig], {"n_fft": 7, "hop_length": 2})
add("stft/1d", "stft", [rnd((30,))], {"n_fft": 6, "hop_length": 2})
add("stft/hop_gt_nfft", "stft", [sig], {"n_fft": 6, "hop_length": 9, "center": False})
add("stft/short_signal_reflect", "stft", [rnd((5,))], {"n_fft": 16, "hop_length": 4})
add("stft/int_input", "stft", [rnd((20,), "int32")], {"n_fft": 8, "hop_length": 4})
for cid, kw, win in [("istft/rect", {"n_fft": 8, "hop_length": 2}, None),
                     ("istft/hann", {"n_fft": 8, "hop_length": 2}, hann8),
                     ("istft/hann_hop4_length", {"n_fft": 8, "hop_length": 4, "length": 40}, hann8),
                     ("istft/odd", {"n_fft": 7, "hop_length": 2, "length": 40}, None),
                     ("istft/ortho", {"n_fft": 8, "hop_length": 2, "norm": "ortho"}, None),
                     ("istft/long_length", {"n_fft": 8, "hop_length": 2, "length": 50}, None),
                     ("istft/short_length", {"n_fft": 8, "hop_length": 2, "length": 11}, None)]:
    skw = {k: v for k, v in kw.items() if k != "length"}
    S = mx.fft.stft(sig, window=win, **skw) if win is not None else mx.fft.stft(sig, **skw)
    add(cid, "istft", [S] + ([win] if win is not None else []), kw)
S = mx.fft.stft(sig, n_fft=8, hop_length=2, window=hann8, center=False)
add("istft/no_center", "istft", [S, hann8], {"n_fft": 8, "hop_length": 2, "center": False})
S = mx.fft.stft(sig, n_fft=8, hop_length=2, onesided=False)
add("istft/twosided", "istft", [S], {"n_fft": 8, "hop_length": 2, "onesided": False, "length": 40})
add("istft/infer_nfft", "istft", [mx.fft.stft(sig, n_fft=8, hop_length=2)], {"hop_length": 2})
add("istft/random_spectrum", "istft", [rnd((2, 5, 6), "complex64")], {"n_fft": 8, "hop_length": 3})

# transform rules: vjp (op "vjp:<name>", inputs [x, cotangent]) and jvp
# (op "jvp:<name>", inputs [x, tangent]) of each transform, complex inputs included.
def add_rule(cid, name, x, kwargs):
    fn = getattr(mx.fft, name)
    y = fn(x, **kwargs)
    dt = "complex64" if y.dtype == mx.complex64 else "float32"
    ct = rnd(y.shape, dt)
    _, (vx,) = mx.vjp(lambda a: fn(a, **kwargs), [x], [ct])
    add_raw(f"vjp:{cid}", f"vjp:{name}", [x, ct], kwargs, vx)
    t = rnd(x.shape, "complex64" if x.dtype == mx.complex64 else "float32")
    _, (jy,) = mx.jvp(lambda a: fn(a, **kwargs), [x], [t])
    # MLX bug: the jvp of an odd-length irfft drops the odd sample (shape
    # [3, 6] for n=7); those cases are left out (Kiln keeps n).
    if jy.shape == y.shape:
        add_raw(f"jvp:{cid}", f"jvp:{name}", [x, t], kwargs, jy)


def add_raw(cid, op, inputs, kwargs, out):
    assert cid not in ids, cid
    ids.add(cid)
    cases.append({"id": cid, "op": op, "inputs": [enc_tensor(a) for a in inputs], "kwargs": enc_kw(kwargs),
                  "out": enc_tensor(out)})


for name, dt, kw in [("fft", "complex64", {}), ("fft", "float32", {"n": 7}), ("ifft", "complex64", {"n": 4}),
                     ("rfft", "float32", {}), ("rfft", "float32", {"n": 7}), ("irfft", "complex64", {}),
                     ("irfft", "complex64", {"n": 7}), ("irfft", "complex64", {"n": 4, "norm": "ortho"}),
                     ("fft2", "complex64", {"s": [3, 4]}), ("ifftn", "complex64", {"norm": "forward"}),
                     ("rfftn", "float32", {"axes": [1, 0]}), ("irfftn", "complex64", {"s": [3, 5], "axes": [0, 1]}),
                     ("irfft2", "complex64", {"axes": [1, 0]})]:
    add_rule(f"{name}/{dt}/" + ",".join(f"{k}={v}" for k, v in kw.items()), name, rnd((3, 4), dt), kw)

# errors.
x = rnd((2, 4))
add("err/fft/n0", "fft", [x], {"n": 0}, expect_error=True)
add("err/fft/n_neg", "fft", [x], {"n": -1}, expect_error=True)
add("err/fft/axis_oob", "fft", [x], {"axis": 2}, expect_error=True)
add("err/fft/axis_oob_neg", "fft", [x], {"axis": -3}, expect_error=True)
add("err/fft/scalar", "fft", [mx.array(1.0)], expect_error=True)
add("err/fft/empty_axis", "fft", [mx.zeros((0,))], expect_error=True)
add("err/fft/bad_norm", "fft", [x], {"norm": "foo"}, expect_error=True)
add("err/fftn/dup_axes", "fftn", [x], {"axes": [0, 0]}, expect_error=True)
add("err/fftn/s_axes_len", "fftn", [x], {"s": [2], "axes": [0, 1]}, expect_error=True)
add("err/fftn/s_no_axes", "fftn", [x], {"s": [2, 2]}, expect_error=True)
add("err/fftn/s_neg", "fftn", [x], {"s": [2, -3], "axes": [0, 1]}, expect_error=True)
add("err/rfftn/s_no_axes", "rfftn", [x], {"s": [2, 2]}, expect_error=True)
add("err/fft2/1d", "fft2", [mx.arange(4).astype(mx.float32)], expect_error=True)
add("err/irfft/len1", "irfft", [mx.array([1 + 0j])], expect_error=True)
add("err/fftfreq/n0", "fftfreq", [], {"n": 0}, expect_error=True)
add("err/rfftfreq/n_neg", "rfftfreq", [], {"n": -2}, expect_error=True)
add("err/fftfreq/d0", "fftfreq", [], {"n": 4, "d": 0.0}, expect_error=True)
add("err/stft/scalar", "stft", [mx.array(1.0)], {"n_fft": 4}, expect_error=True)
add("err/stft/n_fft0", "stft", [sig], {"n_fft": 0}, expect_error=True)
add("err/stft/hop0", "stft", [sig], {"n_fft": 8, "hop_length": 0}, expect_error=True)
add("err/stft/win_gt_nfft", "stft", [sig], {"n_fft": 8, "win_length": 9}, expect_error=True)
add("err/stft/window_too_long", "stft", [sig, mx.ones(9)], {"n_fft": 8}, expect_error=True)
add("err/stft/window_2d", "stft", [sig, mx.ones((8, 1))], {"n_fft": 8}, expect_error=True)
add("err/stft/too_short", "stft", [rnd((5,))], {"n_fft": 8, "center": False}, expect_error=True)
add("err/stft/bad_pad_mode", "stft", [sig], {"n_fft": 8, "pad_mode": "circular"}, expect_error=True)
add("err/istft/1d", "istft", [rnd((5,), "complex64")], expect_error=True)
add("err/istft/hop0", "istft", [rnd((5, 3), "complex64")], {"n_fft": 8, "hop_length": 0}, expect_error=True)
add("err/istft/window_too_long", "istft", [rnd((5, 3), "complex64"), mx.ones(9)], {"n_fft": 8},
    expect_error=True)

with open(os.path.join(HERE, "fft.json"), "w") as f:
    json.dump({"mlx_version": MLX_VERSION, "cases": cases}, f, indent=None, separators=(",", ":"), allow_nan=False)
print(len(cases), "cases")
