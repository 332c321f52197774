"""Golden values for Kiln's indexing family, from MLX 0.32.4 (CPU).

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_indexing.py

Writes indexing.json next to this script (format: README.md). Ops:
take, take_along_axis, put_along_axis, slice (dynamic start), slice_update
(dynamic start), searchsorted, and the Python array operators `getitem`
(`a[idx]`), `setitem` (`a[idx] = v`, last input is v), `at_<op>`
(`a.at[idx].<op>(v)`, last input is v) and `masked_scatter` (`a[mask] = v`
with inputs a, mask, v). An index is kwargs["index"], a list of items:
{"int": i}, {"slice": [start, stop, step]} (null = default), "newaxis",
"ellipsis", {"array": k} (inputs[k]). Only in-range indices are used: MLX
does not check bounds (Kiln reports an error instead).
"""
import json
import math
import os

import mlx.core as mx

import numpy as np
from golden_common import MLX_VERSION, INTS, enc_tensor  # noqa: E402

assert mx.__version__ == MLX_VERSION, mx.__version__
mx.set_default_device(mx.cpu)


cases = []
ids = set()


def add(cid, op, inputs, kwargs, fn):
    assert cid not in ids, cid
    ids.add(cid)
    c = {"id": cid, "op": op, "inputs": [enc_tensor(x) for x in inputs], "kwargs": kwargs}
    try:
        out = fn()
        c["out"] = [enc_tensor(o) for o in out] if isinstance(out, (list, tuple)) else enc_tensor(out)
    except Exception as e:  # noqa: BLE001
        c["error"] = type(e).__name__
        c["message"] = str(e)
    cases.append(c)


rng = np.random.default_rng(1234)


def arr(shape, dtype="float32", lo=-5, hi=5):
    n = int(np.prod(shape))
    if dtype == "bool":
        return mx.array(rng.integers(0, 2, n).astype(bool).reshape(shape))
    if dtype in INTS:
        lo2 = 0 if dtype.startswith("u") else lo
        return mx.array(rng.integers(lo2, hi, n).reshape(shape)).astype(getattr(mx, dtype))
    return mx.array(np.round(rng.uniform(lo, hi, n), 3).reshape(shape)).astype(getattr(mx, dtype))


def iarr(vals, dtype="int32"):
    return mx.array(np.array(vals)).astype(getattr(mx, dtype))


# ---------------------------------------------------------------- take
a34 = arr((3, 4))
for dt in ["float32", "float16", "bfloat16", "int32", "bool", "int64", "uint8"]:
    a = arr((3, 4), dt)
    i = iarr([2, -1, 0, 1])
    add(f"take/flat/{dt}", "take", [a, iarr([[0, 11], [-1, 5]])], {"axis": None},
        lambda a=a: mx.take(a, iarr([[0, 11], [-1, 5]])))
    add(f"take/axis1/{dt}", "take", [a, i], {"axis": 1}, lambda a=a, i=i: mx.take(a, i, axis=1))
for idt in ["int8", "int16", "int64", "uint8", "uint16", "uint32", "uint64"]:
    i = iarr([1, 0, 2, 2], idt)
    add(f"take/axis0_idx_{idt}", "take", [a34, i], {"axis": 0}, lambda i=i: mx.take(a34, i, axis=0))
a234 = arr((2, 3, 4))
i2 = iarr([[1, 0], [2, 2], [-3, 1]])
for ax in [0, 1, 2, -1]:
    ii = iarr([[1, 0], [1, 1], [-2, 0]])
    add(f"take/3d_axis{ax}", "take", [a234, ii], {"axis": ax}, lambda ii=ii, ax=ax: mx.take(a234, ii, axis=ax))
add("take/scalar_index", "take", [a234, iarr(1)], {"axis": 1}, lambda: mx.take(a234, iarr(1), axis=1))
add("take/empty_index", "take", [a234, iarr(np.zeros((0,), dtype=np.int32))], {"axis": 2},
    lambda: mx.take(a234, iarr(np.zeros((0,), dtype=np.int32)), axis=2))
add("take/float_index_error", "take", [a34, mx.array([1.0])], {"axis": 0}, lambda: mx.take(a34, mx.array([1.0]), axis=0))
add("take/bad_axis_error", "take", [a34, iarr([0])], {"axis": 2}, lambda: mx.take(a34, iarr([0]), axis=2))

# ---------------------------------------------------------------- take_along_axis / put_along_axis
for ax in [0, 1, -1]:
    ii = iarr([[0, 2, 1, 0], [2, 1, 0, -1]] if ax == 0 else [[3, 0], [1, -1], [2, 2]])
    add(f"take_along_axis/axis{ax}", "take_along_axis", [a34, ii], {"axis": ax},
        lambda ii=ii, ax=ax: mx.take_along_axis(a34, ii, axis=ax))
    v = arr(ii.shape)
    add(f"put_along_axis/axis{ax}", "put_along_axis", [a34, ii, v], {"axis": ax},
        lambda ii=ii, v=v, ax=ax: mx.put_along_axis(a34, ii, v, axis=ax))
add("take_along_axis/broadcast", "take_along_axis", [arr((1, 3)), iarr([[0], [2]])], {"axis": 1},
    lambda: None)
cases.pop(); ids.discard("take_along_axis/broadcast")
b13 = arr((1, 3))
add("take_along_axis/broadcast", "take_along_axis", [b13, iarr([[0], [2]])], {"axis": 1},
    lambda: mx.take_along_axis(b13, iarr([[0], [2]]), axis=1))
add("take_along_axis/none", "take_along_axis", [a34, iarr([1, 0, 11, -1])], {"axis": None},
    lambda: mx.take_along_axis(a34, iarr([1, 0, 11, -1]), axis=None))
add("take_along_axis/3d_axis1", "take_along_axis", [a234, iarr(np.array([[[0, 2, 1, 1]], [[2, 2, 0, -1]]]))],
    {"axis": 1}, lambda: mx.take_along_axis(a234, iarr(np.array([[[0, 2, 1, 1]], [[2, 2, 0, -1]]])), axis=1))
add("take_along_axis/rank_error", "take_along_axis", [a34, iarr([0])], {"axis": 0},
    lambda: mx.take_along_axis(a34, iarr([0]), axis=0))
add("put_along_axis/broadcast_idx", "put_along_axis", [a34, iarr([[0, 3]]), iarr([[7, 8]], "float32")], {"axis": 1},
    lambda: mx.put_along_axis(a34, iarr([[0, 3]]), iarr([[7, 8]], "float32"), axis=1))
add("put_along_axis/scalar_value", "put_along_axis", [a34, iarr([[0], [2], [1]]), mx.array(9.0)], {"axis": 1},
    lambda: mx.put_along_axis(a34, iarr([[0], [2], [1]]), mx.array(9.0), axis=1))
ai = arr((3, 4), "int32")
add("put_along_axis/int_cast", "put_along_axis", [ai, iarr([[1], [0], [3]]), mx.array([[1.7], [2.2], [-3.9]])],
    {"axis": 1}, lambda: mx.put_along_axis(ai, iarr([[1], [0], [3]]), mx.array([[1.7], [2.2], [-3.9]]), axis=1))
add("put_along_axis/none", "put_along_axis", [a34, iarr([0, 5, -1]), arr((3,))], {"axis": None}, lambda: None)
cases.pop(); ids.discard("put_along_axis/none")
vv = arr((3,))
add("put_along_axis/none", "put_along_axis", [a34, iarr([0, 5, -1]), vv], {"axis": None},
    lambda: mx.put_along_axis(a34, iarr([0, 5, -1]), vv, axis=None))

# ---------------------------------------------------------------- dynamic slice / slice_update
a45 = arr((4, 5))
add("slice/dyn_2axes", "slice", [a45, iarr([1, 2])], {"axes": [0, 1], "slice_size": [2, 3]},
    lambda: mx.slice(a45, iarr([1, 2]), (0, 1), (2, 3)))
add("slice/dyn_axis1", "slice", [a45, iarr([3])], {"axes": [1], "slice_size": [4, 2]},
    lambda: mx.slice(a45, iarr([3]), (1,), (4, 2)))
add("slice/dyn_scalar_start", "slice", [a45, iarr(2, "int64")], {"axes": [0], "slice_size": [2, 5]},
    lambda: mx.slice(a45, iarr(2, "int64"), (0,), (2, 5)))
u23 = arr((2, 3))
add("slice_update/dyn_2axes", "slice_update", [a45, u23, iarr([2, 1])], {"axes": [0, 1]},
    lambda: mx.slice_update(a45, u23, iarr([2, 1]), (0, 1)))
u41 = arr((4, 1))
add("slice_update/dyn_axis1", "slice_update", [a45, u41, iarr([4])], {"axes": [1]},
    lambda: mx.slice_update(a45, u41, iarr([4]), (1,)))

# ---------------------------------------------------------------- searchsorted
srt = mx.array([1.0, 2.0, 2.0, 3.5, 7.0])
vals = mx.array([[0.0, 2.0, 2.5], [7.0, 8.0, -1.0]])
for side in ["left", "right"]:
    add(f"searchsorted/float_{side}", "searchsorted", [srt, vals], {"side": side},
        lambda side=side: mx.searchsorted(srt, vals, side=side))
    si = iarr([1, 3, 3, 3, 9])
    vi = iarr([3, 0, 9, 10, 2])
    add(f"searchsorted/int_{side}", "searchsorted", [si, vi], {"side": side},
        lambda side=side, si=si, vi=vi: mx.searchsorted(si, vi, side=side))
    sn = mx.array([1.0, 2.0, float("nan")])
    vn = mx.array([float("nan"), 2.0, 5.0])
    add(f"searchsorted/nan_{side}", "searchsorted", [sn, vn], {"side": side},
        lambda side=side, sn=sn, vn=vn: mx.searchsorted(sn, vn, side=side))
add("searchsorted/mixed_dtype", "searchsorted", [iarr([1, 2, 3]), mx.array([2.5, 2.0])], {"side": "left"},
    lambda: mx.searchsorted(iarr([1, 2, 3]), mx.array([2.5, 2.0])))
add("searchsorted/2d_error", "searchsorted", [a34, vals], {"side": "left"}, lambda: mx.searchsorted(a34, vals))

# ---------------------------------------------------------------- getitem / setitem / at
SL = slice


def enc_index(idx, arrays):
    out = []
    for it in idx:
        if it is None:
            out.append("newaxis")
        elif it is Ellipsis:
            out.append("ellipsis")
        elif isinstance(it, int):
            out.append({"int": it})
        elif isinstance(it, slice):
            out.append({"slice": [it.start, it.stop, it.step]})
        else:
            arrays.append(it)
            out.append({"array": len(arrays)})
    return out


x = arr((3, 4, 5))
i_a = iarr([2, 0, -1])
i_b = iarr([[1], [3]])
i_c = iarr([4, -5, 2])
i_2d = iarr([[0, 1], [2, 1]])
EXPRS = {
    "int": (0,),
    "neg_int": (-1,),
    "int_int": (1, -2),
    "slice": (SL(1, 3),),
    "slice_step": (SL(None, None, 2), SL(1, None, 2)),
    "neg_step": (SL(None, None, -1),),
    "neg_step_bounds": (SL(2, 0, -1), SL(None, None, -2), SL(4, 1, -2)),
    "slice_clamp": (SL(-10, 10), SL(3, 100)),
    "empty_slice": (SL(2, 1),),
    "newaxis_front": (None,),
    "newaxis_mid": (SL(None), None, 1),
    "newaxis_many": (None, 0, None, SL(None), None),
    "ellipsis": (Ellipsis, 1),
    "ellipsis_mid": (0, Ellipsis, SL(1, 3)),
    "ellipsis_newaxis": (Ellipsis, None),
    "ellipsis_empty": (0, 1, 2, Ellipsis),
    "all_ints": (2, 3, 4),
    "array0": (i_a,),
    "array1": (SL(None), i_a),
    "array_last": (Ellipsis, i_c),
    "array2d": (i_2d,),
    "adjacent_pair": (SL(None), i_a, i_c),
    "adjacent_broadcast": (iarr([[1], [2]]), iarr([0, 2, 3])),
    "separated": (i_a, SL(None), i_c),
    "separated_by_newaxis": (i_a, None, iarr([1, 2, 3])),
    "int_and_array_adjacent": (SL(None), 1, i_c),
    "int_and_array_separated": (1, SL(None), i_c),
    "array_int_front": (i_a, 2),
    "array_slice_step": (i_a, SL(None, None, -2)),
    "three_arrays": (i_a, iarr([0, 3, 1]), i_c),
    "newaxis_array_newaxis": (None, i_a, None),
    "slice_then_arrays": (SL(1, None), iarr([[0], [3]]), iarr([1, 4])),
    "array_scalar0d": (iarr(1),),
    "array_0d_mixed": (iarr(-1), SL(None, None, 2), iarr(2)),
    "array_int64": (iarr([1, 2], "int64"), SL(None), iarr([0, 4], "uint8")),
    "ellipsis_array_newaxis": (Ellipsis, i_c, None),
}
for name, idx in EXPRS.items():
    arrays = []
    enc = enc_index(idx, arrays)
    add(f"getitem/{name}", "getitem", [x] + arrays, {"index": enc}, lambda idx=idx: x[idx])
for dt in ["int32", "float16", "bool"]:
    xd = arr((3, 4), dt)
    arrays = []
    enc = enc_index((SL(None, None, -1), i_a), arrays)
    add(f"getitem/dtype_{dt}", "getitem", [xd] + arrays, {"index": enc}, lambda xd=xd: xd[::-1, i_a])
add("getitem/too_many_error", "getitem", [x], {"index": [{"int": 0}] * 4}, lambda: x[0, 0, 0, 0])
add("getitem/float_array_error", "getitem", [x, mx.array([1.0])], {"index": [{"array": 1}]}, lambda: x[mx.array([1.0])])

SET = {
    "int": ((1,), (4, 5)),
    "slice_step": ((SL(None, None, 2), SL(1, 3)), (2, 2, 5)),
    "neg_step": ((SL(None, None, -1), 0), (5,)),
    "broadcast_value": ((SL(None), 1), (1, 5)),
    "scalar_value": ((Ellipsis, 2), ()),
    "leading_ones": ((0,), (1, 4, 5)),
    "newaxis": ((None, 1, SL(1, 3)), (1, 2, 5)),
    "array_rows": ((i_a,), (3, 4, 5)),
    "array_rows_dup": ((iarr([0, 2, 0]),), (3, 4, 5)),
    "array_mid": ((SL(None), iarr([3, 1])), (3, 2, 5)),
    "separated": ((i_a, SL(None), i_c), (3, 4)),
    "adjacent_broadcast": ((SL(None), i_b, iarr([0, 4])), (3, 2, 2)),
    "int_array": ((1, SL(None, None, 2), iarr([0, -1])), (2, 2)),
    "array_broadcast_value": ((i_a, 2), (1,)),
}
for name, (idx, vshape) in SET.items():
    v = arr(vshape)
    arrays = []
    enc = enc_index(idx, arrays)

    def f(idx=idx, v=v):
        y = mx.array(x)
        y[idx] = v
        return y
    add(f"setitem/{name}", "setitem", [x] + arrays + [v], {"index": enc}, f)
# int target, float values (cast)
xi = arr((4, 3), "int32")
vf = mx.array([[1.9, -2.7, 3.2]])
def fint():
    y = mx.array(xi)
    y[iarr([1, 3])] = vf
    return y
arrays = []
add("setitem/int_cast", "setitem", [xi, iarr([1, 3]), vf], {"index": enc_index((iarr([1, 3]),), arrays)}, fint)

AT = {
    "dup_rows": ((iarr([0, 0, 2, 0]),), (4, 4, 5)),
    "dup_elements": ((iarr([1, 1, 1]), iarr([2, 2, 3]), iarr([0, 0, 4])), (3,)),
    "slice": ((SL(None), SL(1, 3)), (3, 2, 5)),
    "mixed": ((iarr([0, 0, 1]), SL(None), iarr([4, 4, 0])), (3, 4)),
    "scalar_broadcast": ((iarr([2, 2]), 1), ()),
}
for op in ["add", "subtract", "multiply", "divide", "maximum", "minimum"]:
    for name, (idx, vshape) in AT.items():
        v = arr(vshape, lo=0.5, hi=3) if op == "divide" else arr(vshape)
        arrays = []
        enc = enc_index(idx, arrays)
        add(f"at_{op}/{name}", f"at_{op}", [x] + arrays + [v], {"index": enc},
            lambda idx=idx, v=v, op=op: getattr(x.at[idx], op)(v))
xi2 = arr((5,), "int32")
for op in ["add", "multiply", "maximum", "minimum"]:
    vi = iarr([3, -2, 7])
    add(f"at_{op}/int32_dup", f"at_{op}", [xi2, iarr([1, 1, 4]), vi], {"index": [{"array": 1}]},
        lambda op=op, vi=vi: getattr(xi2.at[iarr([1, 1, 4])], op)(vi))

# ---------------------------------------------------------------- masked_scatter (a[mask] = v)
def masked(a, m, v):
    y = mx.array(a)
    y[m] = v
    return y


m34 = mx.array(np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=bool))
v6 = arr((6,))
add("masked_scatter/full_mask", "masked_scatter", [a34, m34, v6], {}, lambda: masked(a34, m34, v6))
v7 = arr((7,))
add("masked_scatter/extra_values", "masked_scatter", [a34, m34, v7], {}, lambda: masked(a34, m34, v7))
v2 = arr((2,))
add("masked_scatter/too_few_error", "masked_scatter", [a34, m34, v2], {}, lambda: masked(a34, m34, v2))
v8 = arr((2, 4))
mrow = mx.array([True, False, True])
add("masked_scatter/row_mask", "masked_scatter", [a34, mrow, v8], {}, lambda: masked(a34, mrow, v8))
add("masked_scatter/scalar", "masked_scatter", [a34, m34, mx.array(5.0)], {}, lambda: masked(a34, m34, mx.array(5.0)))
mi = arr((3, 4), "int32")
add("masked_scatter/int", "masked_scatter", [mi, m34, iarr([9, 8, 7, 6, 5, 4])], {},
    lambda: masked(mi, m34, iarr([9, 8, 7, 6, 5, 4])))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "indexing.json")
with open(path, "w") as f:
    json.dump({"mlx_version": MLX_VERSION, "cases": cases}, f, separators=(",", ":"), allow_nan=False)
print(f"{len(cases)} cases -> {path}")
