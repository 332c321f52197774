"""Writes the small reference files tests/io.rs reads (tests/golden/io/).

Run from the repository root:
    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_io.py       # MLX/NumPy files
    /work/refvenv/bin/python crates/kiln-core/tests/golden/gen_io.py --gguf-quants  # needs `pip install gguf` (0.19.0)

The first pass writes files with MLX 0.32.4 (mx.save, mx.savez,
mx.savez_compressed, mx.save_safetensors, mx.save_gguf) and NumPy (Fortran
order, big-endian), and `expected.json` with their exact values. The second
pass (needs the `gguf` PyPI package) writes `quants.gguf`: tensors quantized
with gguf.quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) or random K-quant blocks
(Q4_K, Q5_K, Q6_K; later Q2_K, Q3_K, Q8_K, IQ4_NL, IQ4_XS), each followed by `<name>.expected`, its float32
dequantization by gguf.quants.dequantize. Deterministic (fixed seeds).
"""
import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "io")


def values(a):
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return [bool(x) for x in a.ravel()]
    if a.dtype.kind in "iu":
        return [int(x) for x in a.ravel()]
    if a.dtype.kind == "c":
        return [[float(x.real), float(x.imag)] for x in a.ravel()]
    return [float(x) for x in a.ravel()]


def mlx_pass():
    import mlx.core as mx

    expected = {}

    def record(file, name, arr):
        a = np.array(arr.astype(mx.float32)) if arr.dtype == mx.bfloat16 else np.array(arr)
        expected.setdefault(file, {})[name] = {
            "dtype": str(arr.dtype).split(".")[-1],
            "shape": list(arr.shape),
            "values": values(a),
        }

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 3)).astype(np.float32)
    arrays = {
        "bool": mx.array([[True, False, True], [False, False, True]]),
        "uint8": mx.array([[0, 1, 255], [7, 8, 9]], dtype=mx.uint8),
        "uint16": mx.array([0, 65535, 3], dtype=mx.uint16),
        "uint32": mx.array(np.array([0, 4294967295, 3], dtype=np.uint32)),
        "uint64": mx.array(np.array([0, 2**64 - 1, 3], dtype=np.uint64)),
        "int8": mx.array([-128, 127, 0], dtype=mx.int8),
        "int16": mx.array([-32768, 32767, 1], dtype=mx.int16),
        "int32": mx.array([[-(2**31), 2**31 - 1], [5, -6]], dtype=mx.int32),
        "int64": mx.array(np.array([-(2**63), 2**63 - 1, 7], dtype=np.int64)),
        "float16": mx.array(base, dtype=mx.float16),
        "float32": mx.array(base),
        "bfloat16": mx.array(base, dtype=mx.bfloat16),
        "complex64": mx.array([1 + 2j, -3.5 - 0.25j]),
        "scalar": mx.array(3.25),
        "empty": mx.zeros((0, 3)),
    }
    mx.eval(arrays)
    for name, a in arrays.items():
        if name in ("float32", "bfloat16", "bool", "scalar", "int64"):
            mx.save(os.path.join(OUT, f"mlx_{name}.npy"), a)
            record(f"mlx_{name}.npy", "", a)
    mx.savez(os.path.join(OUT, "mlx.npz"), **arrays)
    mx.savez_compressed(os.path.join(OUT, "mlx_compressed.npz"), **arrays)
    for n, a in arrays.items():
        record("mlx.npz", n, a)
        record("mlx_compressed.npz", n, a)
    st = {k: v for k, v in arrays.items()}
    mx.save_safetensors(os.path.join(OUT, "mlx.safetensors"), st, metadata={"format": "mlx", "note": "ü \"q\""})
    for n, a in st.items():
        record("mlx.safetensors", n, a)
    g = {k: arrays[k] for k in ("float32", "float16", "int8", "int16", "int32")}
    mx.save_gguf(
        os.path.join(OUT, "mlx.gguf"),
        g,
        {"s": "text", "l": ["a", "bc"], "arr": mx.array([1, 2, 3]), "f": mx.array(1.5), "u8": mx.array([1, 2], dtype=mx.uint8)},
    )
    for n, a in g.items():
        record("mlx.gguf", n, a)
    # NumPy-specific layouts.
    f = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3) * 1.5)
    np.save(os.path.join(OUT, "np_fortran.npy"), f)
    expected["np_fortran.npy"] = {"": {"dtype": "float64", "shape": [2, 3], "values": values(f)}}
    be = np.array([[1, -2, 300000], [4, 5, -6]], dtype=">i4")
    np.save(os.path.join(OUT, "np_bigendian.npy"), be)
    expected["np_bigendian.npy"] = {"": {"dtype": "int32", "shape": [2, 3], "values": values(be)}}
    bef = np.array([1.5, -2.25, 1e300], dtype=">f8")
    np.save(os.path.join(OUT, "np_bigendian_f8.npy"), bef)
    expected["np_bigendian_f8.npy"] = {"": {"dtype": "float64", "shape": [3], "values": values(bef)}}
    with open(os.path.join(OUT, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=0, sort_keys=True)
        fh.write("\n")


def gguf_pass():
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), arch="test")
    w.add_uint8("m.u8", 200)
    w.add_int8("m.i8", -100)
    w.add_uint16("m.u16", 60000)
    w.add_int16("m.i16", -30000)
    w.add_uint32("m.u32", 4000000000)
    w.add_int32("m.i32", -2000000000)
    w.add_uint64("m.u64", 2**64 - 1)
    w.add_int64("m.i64", -(2**63))
    w.add_float32("m.f32", 0.1)
    w.add_float64("m.f64", 0.1)
    w.add_bool("m.bool", True)
    w.add_string("m.str", "héllo")
    w.add_array("m.strs", ["a", "", "ccc"])
    w.add_array("m.ints", [1, -2, 3])
    w.add_array("m.nested", [[1, 2], [3]])
    for qt in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        x = rng.standard_normal((2, 64)).astype(np.float32)
        q = quants.quantize(x, qt)
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
        w.add_tensor(qt.name.lower() + ".expected", quants.dequantize(q, qt).astype(np.float32))
    for qt in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        blocks = rng.integers(0, 256, size=(2, ts), dtype=np.uint8)
        # Reasonable float16 scales: d (and dmin) in [0.01, 0.1).
        for b in blocks:
            for off in ((208,) if qt == Q.Q6_K else (0, 2)):
                b[off : off + 2] = np.frombuffer(np.float16(rng.uniform(0.01, 0.1)).tobytes(), np.uint8)
        q = blocks.reshape(2, ts)
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
        w.add_tensor(qt.name.lower() + ".expected", quants.dequantize(q, qt).astype(np.float32))
    # Added later (appended so the tensors above keep their bytes): Q2_K,
    # Q3_K, IQ4_NL and IQ4_XS dequantized by gguf.quants; Q8_K, which
    # gguf.quants cannot dequantize, by its definition (y = d * q, with d a
    # float32 and q int8; the 16 int16 block sums are ignored).
    rng = np.random.default_rng(2)
    scale_offsets = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.IQ4_NL: (0,), Q.IQ4_XS: (0,)}
    for qt, offs in scale_offsets.items():
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        nb = 2 * 256 // bs  # two rows of 256 values
        blocks = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
        for b in blocks:
            for off in offs:
                b[off : off + 2] = np.frombuffer(np.float16(rng.uniform(0.01, 0.1)).tobytes(), np.uint8)
        q = blocks.reshape(2, nb // 2 * ts)
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
        w.add_tensor(qt.name.lower() + ".expected", quants.dequantize(q, qt).astype(np.float32))
    bs, ts = gguf.GGML_QUANT_SIZES[Q.Q8_K]
    blocks = rng.integers(0, 256, size=(2, ts), dtype=np.uint8)
    d = rng.uniform(0.001, 0.01, size=2).astype(np.float32)
    for b, s in zip(blocks, d):
        b[0:4] = np.frombuffer(s.tobytes(), np.uint8)
    w.add_tensor("q8_k", blocks, raw_dtype=Q.Q8_K)
    q8 = blocks[:, 4:260].view(np.int8).astype(np.float32)
    w.add_tensor("q8_k.expected", (d[:, None] * q8).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    if "--gguf-quants" in sys.argv:
        gguf_pass()
    else:
        mlx_pass()
