#!/usr/bin/env python3
"""Golden values for kiln_core::linalg, from MLX 0.32.4 (CPU stream).

    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_linalg.py

Writes linalg.json next to this script (format: README.md). Inputs are
literals or numpy.random.default_rng(<fixed seed>) draws, so the output is
deterministic. Only ops whose outputs are unique are recorded (eig, eigh
vectors, qr and full svd depend on sign/order conventions and are checked by
reconstruction in tests/linalg.rs instead). Inputs are well conditioned so
that float32 results agree between LAPACK and faer to ~1e-5.
"""

import json
import math
import os
import sys

import numpy as np
import mlx.core as mx
from golden_common import MLX_VERSION, enc_kw, enc_tensor  # noqa: E402

enc = enc_tensor


HERE = os.path.dirname(os.path.abspath(__file__))
if mx.__version__ != MLX_VERSION:
    sys.exit(f"expected mlx {MLX_VERSION}, found {mx.__version__}")
mx.set_default_device(mx.cpu)
L = mx.linalg


cases = []
ids = set()


def add(cid, op, inputs, fn, **kw):
    assert cid not in ids, cid
    ids.add(cid)
    c = {"id": cid, "op": op, "inputs": [enc(x) for x in inputs], "kwargs": {k: enc_kw(v) for k, v in kw.items()}}
    try:
        out = fn()
        c["out"] = [enc(o) for o in out] if isinstance(out, (tuple, list)) else enc(out)
    except Exception as e:  # noqa: BLE001
        c["error"] = type(e).__name__
        c["message"] = str(e)
    cases.append(c)


rng = np.random.default_rng(1234)


def spd(n, batch=(), dtype=mx.float32):
    x = rng.standard_normal(batch + (n, n))
    a = x @ np.swapaxes(x, -1, -2) + n * np.eye(n)
    return mx.array(a.astype(np.float64)).astype(dtype)


def gen(shape, dtype=mx.float32, diag=0.0):
    x = rng.standard_normal(shape)
    if diag:
        x = x + diag * np.eye(shape[-2], shape[-1])
    return mx.array(x).astype(dtype)


for dn, dt in (("float32", mx.float32), ("float64", mx.float64)):
    # inv / det / slogdet on well-conditioned general matrices
    for shape in ((3, 3), (2, 4, 4)):
        a = gen(shape, dt, diag=4.0)
        s = "x".join(map(str, shape))
        add(f"inv/{s}/{dn}", "inv", [a], lambda: L.inv(a))
        add(f"det/{s}/{dn}", "det", [a], lambda: L.det(a))
        add(f"slogdet/{s}/{dn}", "slogdet", [a], lambda: L.slogdet(a))
        add(f"lu_factor/{s}/{dn}", "lu_factor", [a], lambda: L.lu_factor(a))
        add(f"lu/{s}/{dn}", "lu", [a], lambda: L.lu(a))
        add(f"tri_inv/lower/{s}/{dn}", "tri_inv", [a], lambda: L.tri_inv(a, upper=False), upper=False)
        add(f"tri_inv/upper/{s}/{dn}", "tri_inv", [a], lambda: L.tri_inv(a, upper=True), upper=True)
    a = gen((4, 3), dt, diag=3.0)
    add(f"lu_factor/4x3/{dn}", "lu_factor", [a], lambda: L.lu_factor(a))
    add(f"lu/4x3/{dn}", "lu", [a], lambda: L.lu(a))
    a = gen((3, 4), dt, diag=3.0)
    add(f"lu/3x4/{dn}", "lu", [a], lambda: L.lu(a))
    # solve
    a = gen((3, 3), dt, diag=4.0)
    b = gen((3,), dt)
    add(f"solve/vec/{dn}", "solve", [a, b], lambda: L.solve(a, b))
    b2 = gen((3, 2), dt)
    add(f"solve/mat/{dn}", "solve", [a, b2], lambda: L.solve(a, b2))
    ab = gen((2, 3, 3), dt, diag=4.0)
    b3 = gen((2, 3, 2), dt)
    add(f"solve/batch/{dn}", "solve", [ab, b3], lambda: L.solve(ab, b3))
    for up in (False, True):
        u = "upper" if up else "lower"
        add(f"solve_triangular/{u}/vec/{dn}", "solve_triangular", [a, b], lambda: L.solve_triangular(a, b, upper=up), upper=up)
        add(f"solve_triangular/{u}/batch/{dn}", "solve_triangular", [ab, b3], lambda: L.solve_triangular(ab, b3, upper=up), upper=up)
    # cholesky (reads one triangle), cholesky_inv, eigvalsh
    for shape_b in ((), (2,)):
        s = "batch" if shape_b else "single"
        a = spd(3, shape_b, dt)
        a_ns = a + mx.triu(mx.ones_like(a), 1) * 7.0  # junk above the diagonal
        a_ns2 = a + mx.tril(mx.ones_like(a), -1) * 7.0  # junk below
        add(f"cholesky/lower/{s}/{dn}", "cholesky", [a_ns], lambda: L.cholesky(a_ns), upper=False)
        add(f"cholesky/upper/{s}/{dn}", "cholesky", [a_ns2], lambda: L.cholesky(a_ns2, upper=True), upper=True)
        lf = L.cholesky(a)
        add(f"cholesky_inv/lower/{s}/{dn}", "cholesky_inv", [lf], lambda: L.cholesky_inv(lf), upper=False)
        uf = L.cholesky(a, upper=True)
        add(f"cholesky_inv/upper/{s}/{dn}", "cholesky_inv", [uf], lambda: L.cholesky_inv(uf, upper=True), upper=True)
        add(f"eigvalsh/L/{s}/{dn}", "eigvalsh", [a_ns], lambda: L.eigvalsh(a_ns), UPLO="L")
        add(f"eigvalsh/U/{s}/{dn}", "eigvalsh", [a_ns2], lambda: L.eigvalsh(a_ns2, UPLO="U"), UPLO="U")
    # singular values and pinv
    for shape in ((3, 3), (4, 2), (2, 4), (2, 3, 2)):
        a = gen(shape, dt)
        s = "x".join(map(str, shape))
        add(f"svd/values/{s}/{dn}", "svd", [a], lambda: L.svd(a, compute_uv=False), compute_uv=False)
        add(f"pinv/{s}/{dn}", "pinv", [a], lambda: L.pinv(a))
    rd = mx.array(np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])).astype(dt)
    add(f"pinv/rank_deficient/{dn}", "pinv", [rd], lambda: L.pinv(rd))
    # norms
    v = gen((5,), dt)
    for o in (None, 1.0, 2.0, 3.0, 0.5, -1.0, 0.0, float("inf"), float("-inf")):
        add(f"norm/vec/ord{o}/{dn}", "norm", [v], lambda: L.norm(v, ord=o), ord=o)
    m = gen((3, 4), dt)
    for o in (None, "fro", "nuc", 1.0, -1.0, 2.0, -2.0, float("inf"), float("-inf")):
        add(f"norm/mat/ord{o}/{dn}", "norm", [m], lambda: L.norm(m, ord=o), ord=o)
    t = gen((2, 3, 4), dt)
    add(f"norm/3d/all/{dn}", "norm", [t], lambda: L.norm(t))
    add(f"norm/3d/all_keepdims/{dn}", "norm", [t], lambda: L.norm(t, keepdims=True), keepdims=True)
    add(f"norm/3d/axis1/{dn}", "norm", [t], lambda: L.norm(t, axis=1), axis=[1])
    add(f"norm/3d/axis-1_ord3_keep/{dn}", "norm", [t], lambda: L.norm(t, ord=3.0, axis=-1, keepdims=True), ord=3.0, axis=[-1], keepdims=True)
    for o in ("fro", "nuc", 1.0, float("inf"), 2.0, -2.0):
        add(f"norm/3d/axes20_ord{o}/{dn}", "norm", [t], lambda: L.norm(t, ord=o, axis=(2, 0)), ord=o, axis=[2, 0])
        add(f"norm/3d/axes12_ord{o}_keep/{dn}", "norm", [t], lambda: L.norm(t, ord=o, axis=(1, 2), keepdims=True), ord=o, axis=[1, 2], keepdims=True)
    # cross
    x = gen((2, 3), dt)
    y = gen((2, 3), dt)
    add(f"cross/3/{dn}", "cross", [x, y], lambda: L.cross(x, y))
    x0 = gen((3, 2), dt)
    y0 = gen((3, 2), dt)
    add(f"cross/axis0/{dn}", "cross", [x0, y0], lambda: L.cross(x0, y0, axis=0), axis=0)
    x2 = gen((2,), dt)
    add(f"cross/2x3/{dn}", "cross", [x2, y], lambda: L.cross(x2, y))
    y2 = gen((2,), dt)
    add(f"cross/2x2/{dn}", "cross", [x2, y2], lambda: L.cross(x2, y2))

# dtype rules
ai = mx.array([[2, 1], [1, 3]], dtype=mx.int32)
add("det/int32", "det", [ai], lambda: L.det(ai))
add("slogdet/int32", "slogdet", [ai], lambda: L.slogdet(ai))
add("norm/int32", "norm", [ai], lambda: L.norm(ai))
add("norm/int32_ord1", "norm", [ai], lambda: L.norm(ai, ord=1.0), ord=1.0)
vi = mx.array([3, 0, -4], dtype=mx.int32)
add("norm/int32_vec_ord0", "norm", [vi], lambda: L.norm(vi, ord=0.0), ord=0.0)
vh = mx.array([3.0, 4.0], dtype=mx.float16)
add("norm/float16", "norm", [vh], lambda: L.norm(vh))
ci = mx.array([1, 2, 3], dtype=mx.int32)
di = mx.array([4, 5, 6], dtype=mx.int32)
add("cross/int32", "cross", [ci, di], lambda: L.cross(ci, di))
# singular: MLX gives sign 0, log -inf
sg = mx.array([[1.0, 2.0], [2.0, 4.0]])
add("slogdet/singular", "slogdet", [sg], lambda: L.slogdet(sg))
add("det/singular", "det", [sg], lambda: L.det(sg))

# errors
e1 = mx.ones((2, 3))
e0 = mx.ones((3,))
for op in ("inv", "cholesky", "tri_inv", "det", "eigvalsh", "cholesky_inv"):
    add(f"err/{op}/nonsquare", op, [e1], (lambda op=op: getattr(L, op)(e1)))
for op in ("inv", "cholesky", "qr", "svd", "lu", "lu_factor", "pinv", "eigvalsh", "tri_inv"):
    add(f"err/{op}/int32", op, [ai], (lambda op=op: getattr(L, op)(ai)))
    add(f"err/{op}/1d", op, [e0], (lambda op=op: getattr(L, op)(e0)))
add("err/inv/float16", "inv", [ai.astype(mx.float16)], lambda: L.inv(ai.astype(mx.float16)))
add("err/solve/nonsquare", "solve", [e1, mx.ones((2,))], lambda: L.solve(e1, mx.ones((2,))))
add("err/solve/mismatch", "solve", [mx.eye(3), mx.ones((2,))], lambda: L.solve(mx.eye(3), mx.ones((2,))))
add("err/solve/b0d", "solve", [mx.eye(2), mx.array(1.0)], lambda: L.solve(mx.eye(2), mx.array(1.0)))
add("err/solve/int32", "solve", [ai, mx.array([1, 2])], lambda: L.solve(ai, mx.array([1, 2])))
add("err/solve_triangular/mismatch", "solve_triangular", [mx.eye(2), mx.ones((3,))], lambda: L.solve_triangular(mx.eye(2), mx.ones((3,)), upper=False), upper=False)
add("err/norm/3d_ord", "norm", [mx.ones((2, 2, 2))], lambda: L.norm(mx.ones((2, 2, 2)), ord=2.0), ord=2.0)
add("err/norm/vec_fro", "norm", [mx.ones((3,))], lambda: L.norm(mx.ones((3,)), ord="fro"), ord="fro")
add("err/norm/mat_ord3", "norm", [mx.ones((2, 2))], lambda: L.norm(mx.ones((2, 2)), ord=3.0), ord=3.0)
add("err/norm/three_axes", "norm", [mx.ones((2, 2, 2))], lambda: L.norm(mx.ones((2, 2, 2)), axis=(0, 1, 2)), axis=[0, 1, 2])
add("err/norm/axis_oob", "norm", [mx.ones((2, 2))], lambda: L.norm(mx.ones((2, 2)), axis=2), axis=[2])
add("err/norm/dup_axes", "norm", [mx.ones((2, 2))], lambda: L.norm(mx.ones((2, 2)), axis=(0, 0)), axis=[0, 0])
add("err/cross/size4", "cross", [mx.ones((4,)), mx.ones((4,))], lambda: L.cross(mx.ones((4,)), mx.ones((4,))))
add("err/cross/broadcast", "cross", [mx.ones((2, 3)), mx.ones((4, 3))], lambda: L.cross(mx.ones((2, 3)), mx.ones((4, 3))))
add("err/eig/nonsquare", "eigvals", [e1], lambda: L.eigvals(e1))
add("err/eig/int32", "eigvals", [ai], lambda: L.eigvals(ai))

with open(os.path.join(HERE, "linalg.json"), "w") as f:
    json.dump({"mlx_version": MLX_VERSION, "cases": cases}, f, indent=None, allow_nan=False)
    f.write("\n")
print(len(cases), "cases")
