"""Helpers shared by the golden-value generators in this folder (generate.py
and every gen_*.py): the MLX version they require and the JSON encoding of
tensors and keyword arguments (format in README.md).

The generators import it by name: running one as a script puts this folder
first on sys.path.
"""

import math

import numpy as np
import mlx.core as mx

MLX_VERSION = "0.32.4"

INTS = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}


def dtname(d):
    """`mx.float32` -> "float32"."""
    return str(d).split(".")[-1]


def encf(x):
    """A float for JSON: non-finite values as the strings nan, inf, -inf."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def enc_tensor(a):
    """{"shape", "dtype", "data"} of an MLX array (data row-major; bfloat16
    widened exactly to float32; complex as [re, im] pairs)."""
    mx.eval(a)
    dt = dtname(a.dtype)
    if dt == "bfloat16":
        n = np.array(a.astype(mx.float32))   # exact widening
    else:
        n = np.array(a)
    flat = n.reshape(-1)
    if dt == "bool":
        data = [bool(v) for v in flat]
    elif dt in INTS:
        data = [int(v) for v in flat]
    elif dt == "complex64":
        data = [[encf(v.real), encf(v.imag)] for v in flat]
    else:
        data = [encf(v) for v in flat]
    return {"shape": [int(s) for s in a.shape], "dtype": dt, "data": data}


def enc_kw(v):
    """A keyword argument for JSON (floats through encf, recursively)."""
    if isinstance(v, float):
        return encf(v)
    if isinstance(v, (list, tuple)):
        return [enc_kw(x) for x in v]
    if isinstance(v, dict):
        return {k: enc_kw(x) for k, x in v.items()}
    return v


class Cases:
    """Golden cases collected by `add` and written as one JSON file."""

    def __init__(self):
        self.cases, self.ids = [], set()

    def __len__(self):
        return len(self.cases)

    def add(self, cid, op, inputs, fn, **kw):
        """Records `fn()`'s outputs for `inputs` (or the error it raises)
        under the unique id `cid`."""
        assert cid not in self.ids, cid
        self.ids.add(cid)
        c = {"id": cid, "op": op, "inputs": [enc_tensor(x) for x in inputs],
             "kwargs": {k: enc_kw(v) for k, v in kw.items()}}
        try:
            out = fn()
            c["out"] = [enc_tensor(o) for o in out] if isinstance(out, (tuple, list)) else enc_tensor(out)
        except Exception as e:  # noqa: BLE001
            c["error"] = type(e).__name__
            c["message"] = str(e)
        self.cases.append(c)

    def write(self, path, newline=False):
        import json
        with open(path, "w") as f:
            json.dump({"mlx_version": MLX_VERSION, "cases": self.cases}, f, separators=(",", ":"))
            if newline:
                f.write("\n")
