"""Golden values for the matmul family (MLX 0.32.4, CPU): matmul, addmm,
tensordot, inner, outer, vecdot, kron, einsum, einsum_path, block_masked_mm,
gather_mm. Writes matmul.json next to this script. Deterministic (fixed seeds).

Run: /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_matmul.py

Conventions beyond golden/README.md:
* kwargs "ta"/"tb": true means the test passes swapaxes(input, -1, -2) (a
  transposed, non-contiguous view) instead of the stored input; the stored
  input is the contiguous base.
* einsum: inputs are the operands, kwargs {"subscripts": ...}.
* einsum_path: out is an int32 tensor of shape (steps, 2) holding the path.
* block_masked_mm: kwargs {"block_size", "masks": [names present in order
  out/lhs/rhs]}; inputs are a, b, then those masks.
* gather_mm: kwargs {"lhs": bool, "rhs": bool} say which index arrays follow
  a and b in inputs.
"""
import json
import math
import os
import sys

import numpy as np
import mlx.core as mx
from golden_common import MLX_VERSION, enc_tensor  # noqa: E402

enc = enc_tensor


HERE = os.path.dirname(os.path.abspath(__file__))
if mx.__version__ != MLX_VERSION:
    sys.exit(f"expected mlx {MLX_VERSION}, found {mx.__version__}")
mx.set_default_device(mx.cpu)

MXD = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16, "float64": mx.float64,
       "complex64": mx.complex64, "int32": mx.int32, "bool": mx.bool_, "uint32": mx.uint32}
rng = np.random.default_rng(1234)
cases = []


def R(shape, dtype="float32", lo=-1.0, hi=1.0):
    if dtype == "complex64":
        v = rng.uniform(lo, hi, shape) + 1j * rng.uniform(lo, hi, shape)
        return mx.array(v.astype(np.complex64))
    if dtype in ("int32", "uint32"):
        return mx.array(rng.integers(0, 4, shape).astype(np.int32)).astype(MXD[dtype])
    if dtype == "bool":
        return mx.array(rng.integers(0, 2, shape).astype(np.bool_))
    v = np.round(rng.uniform(lo, hi, shape), 3).astype(np.float32)
    return mx.array(v).astype(MXD[dtype])


def add(cid, op, fn, inputs, kwargs=None):
    c = {"id": cid, "op": op, "inputs": [enc(x) for x in inputs], "kwargs": kwargs or {}}
    try:
        out = fn()
        mx.eval(out)
        c["out"] = enc(out)
    except Exception as e:  # noqa: BLE001
        c["error"] = type(e).__name__
        c["message"] = str(e)
    cases.append(c)


def sw(x):
    return mx.swapaxes(x, -1, -2)


# ---------------------------------------------------------------- matmul
shapes = [
    ((2, 3), (3, 4)), ((1, 1), (1, 1)), ((5, 7), (7, 3)), ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)),
    ((4, 2, 3), (3, 5)), ((2, 3), (4, 3, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((3,), (2, 3, 4)), ((2, 4, 3), (3,)),
    ((0, 3), (3, 4)), ((2, 0), (0, 3)), ((17, 33), (33, 9)), ((3, 1, 4, 6), (1, 2, 6, 3)),
]
for sa, sb in shapes:
    a, b = R(sa), R(sb)
    add(f"matmul/{sa}x{sb}/float32", "matmul", lambda: mx.matmul(a, b), [a, b])
for dt in ["float16", "bfloat16", "float64", "complex64"]:
    for sa, sb in [((4, 5), (5, 3)), ((2, 3, 4), (4, 2)), ((3,), (3, 2)), ((9, 16), (16, 7))]:
        a, b = R(sa, dt), R(sb, dt)
        add(f"matmul/{sa}x{sb}/{dt}", "matmul", lambda: mx.matmul(a, b), [a, b])
# transposed (strided) operands
for ta, tb in [(True, False), (False, True), (True, True)]:
    for dt in ["float32", "float64", "bfloat16"]:
        a, b = R((2, 6, 4), dt), R((2, 5, 6), dt)
        a_in = a if ta else sw(a)
        b_in = b if tb else sw(b)
        a_in, b_in = mx.array(np.array(a_in.astype(mx.float32))).astype(a.dtype), mx.array(np.array(b_in.astype(mx.float32))).astype(b.dtype)
        add(f"matmul/transposed_{ta}_{tb}/{dt}", "matmul",
            lambda: mx.matmul(sw(a_in) if ta else a_in, sw(b_in) if tb else b_in), [a_in, b_in], {"ta": ta, "tb": tb})
# mixed dtypes
for da, db in [("float16", "float32"), ("int32", "float16"), ("bfloat16", "float16"), ("complex64", "float32"),
               ("float64", "float32")]:
    a, b = R((2, 3), da), R((3, 2), db)
    add(f"matmul/mixed/{da}_{db}", "matmul", lambda: mx.matmul(a, b), [a, b])
# errors
for cid, a, b in [("int32", R((2, 3), "int32"), R((3, 2), "int32")), ("bool", R((2, 3), "bool"), R((3, 2), "bool")),
                  ("k_mismatch", R((2, 3)), R((4, 2))), ("batch_mismatch", R((2, 2, 3)), R((3, 3, 2))),
                  ("scalar", mx.array(1.0), R((3,))), ("vec_mismatch", R((3,)), R((4,)))]:
    add(f"matmul/error/{cid}", "matmul", lambda: mx.matmul(a, b), [a, b])

# ---------------------------------------------------------------- addmm
for cs, sa, sb, al, be in [((2, 4), (2, 3), (3, 4), 1.0, 1.0), ((4,), (2, 3), (3, 4), 2.0, 0.5),
                           ((2, 1, 4), (2, 3, 3), (3, 4), -1.5, 0.0), ((), (3, 3), (3, 3), 0.5, 2.0)]:
    c, a, b = R(cs), R(sa), R(sb)
    add(f"addmm/{cs}_{sa}_{sb}_{al}_{be}", "addmm", lambda: mx.addmm(c, a, b, alpha=al, beta=be), [c, a, b],
        {"alpha": al, "beta": be})
c, a, b = R((2, 2), "int32"), R((2, 3)), R((3, 2))
add("addmm/int_c", "addmm", lambda: mx.addmm(c, a, b), [c, a, b], {"alpha": 1.0, "beta": 1.0})
c, a, b = R((2, 2), "float16"), R((2, 3), "float16"), R((3, 2), "float16")
add("addmm/float16", "addmm", lambda: mx.addmm(c, a, b, 2.0, 3.0), [c, a, b], {"alpha": 2.0, "beta": 3.0})

# ---------------------------------------------------------------- tensordot
for sa, sb, ax in [((3, 4, 5), (4, 5, 6), 2), ((3, 4), (4, 5), 1), ((2, 3), (4, 5), 0),
                   ((3, 4, 5), (5, 3, 2), [[0, 2], [1, 0]]), ((2, 3, 4), (4, 3), [[-1, 1], [0, -1]])]:
    a, b = R(sa), R(sb)
    add(f"tensordot/{sa}_{sb}_{ax}", "tensordot", lambda: mx.tensordot(a, b, axes=ax), [a, b], {"axes": ax})
a, b = R((3, 4)), R((5, 4))
add("tensordot/error/mismatch", "tensordot", lambda: mx.tensordot(a, b, axes=1), [a, b], {"axes": 1})

# ---------------------------------------------------------------- inner / outer / vecdot / kron
for sa, sb in [((3,), (3,)), ((2, 3), (4, 3)), ((2, 2, 3), (3,)), ((), (2, 3)), ((2, 3), (2, 4))]:
    a, b = R(sa), R(sb)
    add(f"inner/{sa}_{sb}", "inner", lambda: mx.inner(a, b), [a, b])
for sa, sb, dt in [((3,), (4,), "float32"), ((2, 3), (2,), "float32"), ((3,), (2,), "int32"), ((), (3,), "float32"),
                   ((2,), (3,), "complex64")]:
    a, b = R(sa, dt), R(sb, dt)
    add(f"outer/{sa}_{sb}_{dt}", "outer", lambda: mx.outer(a, b), [a, b])
for sa, sb, ax, dt in [((3,), (3,), -1, "float32"), ((2, 3), (3,), -1, "float32"), ((2, 3), (2, 1), 0, "float32"),
                       ((4, 3), (4, 3), 1, "complex64"), ((2, 3), (2, 3), -1, "int32"), ((2, 3), (3,), 2, "float32")]:
    a, b = R(sa, dt), R(sb, dt)
    add(f"vecdot/{sa}_{sb}_{ax}_{dt}", "vecdot", lambda: mx.vecdot(a, b, axis=ax), [a, b], {"axis": ax})
for sa, sb, dt in [((2, 2), (2, 3), "float32"), ((3,), (2, 2), "float32"), ((2, 1, 3), (2, 2), "int32"),
                   ((2,), (3,), "complex64"), ((), (2, 2), "float32")]:
    a, b = R(sa, dt), R(sb, dt)
    add(f"kron/{sa}_{sb}_{dt}", "kron", lambda: mx.kron(a, b), [a, b])

# ---------------------------------------------------------------- einsum
EIN = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("ij->ji", [(2, 3)]), ("ii->i", [(3, 3)]),
    ("ii", [(4, 4)]), ("ij->", [(2, 3)]), ("ij->j", [(2, 3)]), ("i,i->", [(5,), (5,)]), ("i,j->ij", [(3,), (4,)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("bij,jk->bik", [(2, 3, 4), (4, 5)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("ij,jk,kl,lm->im", [(2, 3), (3, 9), (9, 2), (2, 6)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]), ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i...->...", [(3, 2, 4)]), ("...i,...i->...", [(2, 3), (3,)]), ("ij...,jk...->ik...", [(2, 3, 4), (3, 5, 4)]),
    ("iij->j", [(3, 3, 2)]), ("iji->j", [(3, 2, 3)]), ("ijk,ikl->jl", [(2, 3, 4), (2, 4, 5)]),
    ("abc,cd,bd->a", [(2, 3, 4), (4, 5), (3, 5)]), ("ab,ab->ab", [(2, 3), (2, 3)]), ("ab,ba->", [(2, 3), (3, 2)]),
    ("i,i,i->i", [(4,), (4,), (4,)]), ("ij,kl->ijkl", [(2, 2), (3, 2)]), ("ea,fb,abcd,gc,hd->efgh",
                                                                        [(2, 3), (2, 4), (3, 4, 2, 3), (2, 2), (2, 3)]),
    ("ij,j->i", [(3, 1), (4,)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]), ("ii->", [(3, 3)]),
    ("ijj->i", [(2, 3, 3)]),
]
for k, (sub, shp) in enumerate(EIN):
    ops = [R(s) for s in shp]
    add(f"einsum/{k}/{sub}", "einsum", lambda: mx.einsum(sub, *ops), ops, {"subscripts": sub})
ops = [R((2, 3), "float64"), R((3, 2), "float64")]
add("einsum/float64", "einsum", lambda: mx.einsum("ij,jk->ik", *ops), ops, {"subscripts": "ij,jk->ik"})
ops = [R((2, 3), "complex64"), R((3, 2), "complex64")]
add("einsum/complex64", "einsum", lambda: mx.einsum("ij,jk->ik", *ops), ops, {"subscripts": "ij,jk->ik"})
for cid, sub, shp in [("count", "ij,jk->ik", [(2, 3)]), ("rank", "ijk->i", [(2, 3)]), ("size", "ij,jk->ik", [(2, 3), (4, 5)]),
                      ("out_label", "ij->k", [(2, 3)])]:
    ops = [R(s) for s in shp]
    add(f"einsum/error/{cid}", "einsum", lambda: mx.einsum(sub, *ops), ops, {"subscripts": sub})
for sub, shp in [("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("ij,jk,kl->il", [(10, 2), (2, 10), (10, 3)]),
                 ("ea,fb,abcd,gc,hd->efgh", [(2, 3), (2, 4), (3, 4, 2, 3), (2, 2), (2, 3)])]:
    ops = [R(s) for s in shp]
    path, _ = mx.einsum_path(sub, *ops)
    c = {"id": f"einsum_path/{sub}/{shp}", "op": "einsum_path", "inputs": [enc(x) for x in ops],
         "kwargs": {"subscripts": sub}, "out": enc(mx.array(np.array(path, dtype=np.int32).reshape(-1, 2)))}
    cases.append(c)

# ---------------------------------------------------------------- block_masked_mm
for (sa, sb, bs, masks, mdt) in [((40, 70), (70, 36), 32, ["out", "lhs", "rhs"], "bool"),
                                 ((64, 32), (32, 33), 32, ["out"], "bool"),
                                 ((2, 33, 40), (40, 20), 32, ["lhs", "rhs"], "float32"),
                                 ((40, 33), (33, 40), 32, ["out", "lhs"], "float32")]:
    a, b = R(sa), R(sb)
    M, K, N = sa[-2], sa[-1], sb[-1]
    mshape = {"out": sa[:-2] + (-(-M // bs), -(-N // bs)), "lhs": sa[:-2] + (-(-M // bs), -(-K // bs)),
              "rhs": (-(-K // bs), -(-N // bs))}
    ms = {k: (R(mshape[k], "bool") if mdt == "bool" else R(mshape[k], "float32", 0.0, 2.0)) for k in masks}
    add(f"block_masked_mm/{sa}_{sb}_{bs}_{'_'.join(masks)}_{mdt}", "block_masked_mm",
        lambda: mx.block_masked_mm(a, b, bs, mask_out=ms.get("out"), mask_lhs=ms.get("lhs"), mask_rhs=ms.get("rhs")),
        [a, b] + [ms[k] for k in masks], {"block_size": bs, "masks": masks})
a, b = R((4, 4)), R((4, 4))
add("block_masked_mm/error/block_size", "block_masked_mm", lambda: mx.block_masked_mm(a, b, 16), [a, b],
    {"block_size": 16, "masks": []})

# ---------------------------------------------------------------- gather_mm
for sa, sb, li, ri in [((4, 2, 3), (3, 3, 5), [0, 3, 3, 1], [2, 0, 1, 1]), ((3, 2, 4), (4, 5), [[2, 0], [1, 1]], None),
                       ((2, 3), (6, 3, 2), None, [5, 0, 2]), ((2, 2, 2, 3), (3, 3, 4), [3, 0], [[1], [2]]),
                       ((3, 2, 3), (3, 3, 2), None, None)]:
    a, b = R(sa), R(sb)
    l = mx.array(np.array(li, dtype=np.uint32)) if li is not None else None
    r = mx.array(np.array(ri, dtype=np.uint32)) if ri is not None else None
    ins = [a, b] + ([l] if l is not None else []) + ([r] if r is not None else [])
    add(f"gather_mm/{sa}_{sb}_{li}_{ri}", "gather_mm", lambda: mx.gather_mm(a, b, l, r), ins,
        {"lhs": l is not None, "rhs": r is not None})
a, b = R((3, 2, 3), "bfloat16"), R((3, 2), "bfloat16")
l = mx.array(np.array([2, 0, 0], dtype=np.uint32))
add("gather_mm/bfloat16", "gather_mm", lambda: mx.gather_mm(a, b, l, None), [a, b, l], {"lhs": True, "rhs": False})

ids = [c["id"] for c in cases]
assert len(ids) == len(set(ids)), "duplicate ids"
with open(os.path.join(HERE, "matmul.json"), "w") as f:
    json.dump({"mlx_version": MLX_VERSION, "cases": cases}, f, separators=(",", ":"))
print(len(cases), "cases;", sum("error" in c for c in cases), "errors")
