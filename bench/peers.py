#!/usr/bin/env python3
"""Kiln benchmark harness, peer side: run the shared workloads on one Python framework.

Usage:
    python bench/peers.py --framework {numpy,mlx,torch,jax} [--only NAME,...] [--quick]

Prints one JSON object per line on stdout (progress and errors go to stderr):

    {"framework", "workload", "params", "median_ms", "min_ms", "repeats",
     "metric", "value", "cpu_util", ...extras}

The Kiln side (bench/src/main.rs) prints the same schema with framework "kiln",
and bench/report.py turns the records of all frameworks into one table.

Timing rule (same as the Kiln side and as shared/reference/peer-bench):
  * optionally wait (--wait-quiet) until other processes leave the CPUs idle;
  * one warm-up call, then more warm-up calls (up to `warmup` in all) while cheap;
  * timed calls until at least --repeats calls AND --min-window seconds of timed
    work, stopping once --budget seconds were timed (never fewer than 3 calls);
  * report the median (and min). Each call forces lazy/async work to finish
    (mx.eval, .block_until_ready()); numpy and eager torch are synchronous.
  * cpu_util = process CPU time / wall time over the timed calls (cores kept busy);
    other_load = CPU used by *other* processes over that window (from /proc/stat).

Adding a workload: add a Workload(...) entry to WORKLOADS below, then a method of
the same name on each framework class (a class without it reports "skipped"),
then the same name in bench/src/main.rs.
"""
import argparse
import fnmatch
import json
import math
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llm_peers import JaxLlm, LlamaCppPeer, Measured, MlxLlm, Timed, TorchLlm, llm_workloads  # noqa: E402

# ----------------------------------------------------------------------------
# Workload registry (shared by every framework; keep in sync with src/main.rs)
# ----------------------------------------------------------------------------
GELU_C = math.sqrt(2.0 / math.pi)
ELEM_N = 16 * 1024 * 1024
RED_SHAPE = (4096, 4096)
CHAIN = dict(n=16, chain=1000)
CONV = dict(n=8, h=56, w=56, cin=64, cout=64, k=3, padding=1)
SORT_N = 1 << 20
GATHER_TABLE = (1 << 16, 64)     # 64K x 64 f32 table (16 MiB)
GATHER_ROWS = 1 << 20            # 1M gathered rows (256 MiB out)
MLP_SIZES = (784, 512, 512, 10)  # value_and_grad of a relu MLP + cross-entropy
MLP_BATCH = 256


class Workload:
    def __init__(self, name, metric, params, value, warmup=2, budget_scale=1.0):
        self.name = name
        self.metric = metric        # unit of `value`; see report.py for direction
        self.params = params        # identical across frameworks
        self.value = value          # median seconds -> metric value
        self.warmup = warmup
        self.budget_scale = budget_scale


# per-example gradients: batch, input, hidden and output sizes of a 2-layer MLP.
PEG = dict(batch=128, d_in=64, hidden=128, d_out=10)


def peg_loss(w1, b1, w2, b2, x, y, tanh):
    """Squared error of a tanh MLP on one example (x: (d_in,), y: (d_out,))."""
    d = tanh(x @ w1 + b1) @ w2 + b2 - y
    return (d * d).mean()


def gbs(nbytes):
    return lambda s: nbytes / s / 1e9


def gflops(flops):
    return lambda s: flops / s / 1e9


WORKLOADS = {w.name: w for w in [
    Workload("elementwise_gelu_unfused", "GB/s",
             dict(n=ELEM_N, dtype="float32", expr="gelu_tanh(x*1.5+0.5)", mode="eager"),
             gbs(2 * 4 * ELEM_N)),
    Workload("elementwise_gelu_compiled", "GB/s",
             dict(n=ELEM_N, dtype="float32", expr="gelu_tanh(x*1.5+0.5)", mode="compiled"),
             gbs(2 * 4 * ELEM_N), warmup=3),
    Workload("sum_lastaxis_4096x4096", "GB/s",
             dict(shape=list(RED_SHAPE), axis=-1, dtype="float32"),
             gbs(4 * RED_SHAPE[0] * RED_SHAPE[1] + 4 * RED_SHAPE[0]), warmup=3),
    Workload("softmax_lastaxis_4096x4096", "GB/s",
             dict(shape=list(RED_SHAPE), axis=-1, dtype="float32"),
             gbs(2 * 4 * RED_SHAPE[0] * RED_SHAPE[1]), warmup=3),
    Workload("smallop_chain1000_add16", "us/op",
             dict(n=CHAIN["n"], chain=CHAIN["chain"], dtype="float32",
                  op="y = y + x (chain), then one eval/sync"),
             lambda s: s / CHAIN["chain"] * 1e6, warmup=3),
    *[Workload(f"matmul_f32_{n}", "GFLOP/s", dict(m=n, k=n, n=n, dtype="float32"),
               gflops(2 * n ** 3), warmup=3) for n in (256, 1024, 2048)],
    Workload("matmul_f32_batched_32x128x64x128", "GFLOP/s",
             dict(batch=32, m=128, k=64, n=128, dtype="float32"),
             gflops(2 * 32 * 128 * 64 * 128), warmup=3),
    Workload("matmul_bf16_1024", "GFLOP/s", dict(m=1024, k=1024, n=1024, dtype="bfloat16"),
             gflops(2 * 1024 ** 3), warmup=3),
    Workload("conv2d_b8_64to64_56x56_k3", "GFLOP/s",
             dict(**CONV, dtype="float32", layout="NHWC in, (Cout,kh,kw,Cin) weights; torch: best of NCHW/channels_last"),
             gflops(2 * CONV["n"] * CONV["h"] * CONV["w"] * CONV["cout"] * CONV["cin"] * CONV["k"] ** 2),
             warmup=3),
    Workload("sort_1m_f32", "Melem/s", dict(n=SORT_N, dtype="float32", axis=-1),
             lambda s: SORT_N / s / 1e6, warmup=3),
    Workload("gather_1m_rows", "GB/s",
             dict(table=list(GATHER_TABLE), rows=GATHER_ROWS, dtype="float32", index_dtype="int32"),
             gbs(2 * 4 * GATHER_ROWS * GATHER_TABLE[1] + 4 * GATHER_ROWS), warmup=3),
    *[Workload(f"per_example_grads_{mode}", "examples/s",
               dict(**PEG, dtype="float32", mode=mode,
                    loss="mean((tanh(x@W1+b1)@W2+b2 - y)^2) per example, grads of W1,b1,W2,b2"),
               lambda s: PEG["batch"] / s, warmup=3) for mode in ("vmap", "loop")],
    *[Workload("mlp_value_and_grad_784_512_512_10_b256" + ("_compiled" if mode == "compiled" else ""), "ms/step",
               dict(sizes=list(MLP_SIZES), batch=MLP_BATCH, dtype="float32",
                    loss="cross_entropy(relu MLP logits, one-hot), mean over batch", mode=mode),
               lambda s: s * 1e3, warmup=2 if mode == "eager" else 3) for mode in ("eager", "compiled")],
    *[Workload("mlp_train_step_784_512_512_10_b256_sgd" + suffix, "steps/s",
               dict(sizes=list(MLP_SIZES), batch=MLP_BATCH, dtype="float32", optimizer="SGD(lr=0.01)",
                    loss="cross_entropy(relu MLP logits, integer labels), mean over batch"),
               lambda s: 1.0 / s, warmup=3) for suffix in ("", "_eager")],
    *[Workload("transformer_lm_train_step" + suffix, "tokens/s",
               dict(layers=4, d_model=256, heads=4, ffn=1024, vocab=1000, seq=128, batch=16, dtype="float32",
                    optimizer="AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)",
                    model="pre-norm GPT: learned positions, LayerNorm, causal MHA without bias, "
                          "GELU(tanh) MLP, tied head"),
               lambda s: 16 * 128 / s, warmup=3) for suffix in ("", "_eager")],
    *llm_workloads(Workload),
]}


def mlp_data(rand, asarray):
    """Inputs of the MLP workloads: x, one-hot labels, then (w, b) per layer."""
    import numpy as np
    n = MLP_SIZES[-1]
    labels = np.array([[1.0 if j == i % n else 0.0 for j in range(n)] for i in range(MLP_BATCH)], np.float32)
    xs = [rand(MLP_BATCH, MLP_SIZES[0]), asarray(labels)]
    for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:]):
        xs += [rand(a, b) * (1.0 / math.sqrt(a)), asarray(np.zeros(b, np.float32))]
    return xs


def mlp_loss(params, x, y, relu, logsumexp):
    """Mean cross-entropy of a relu MLP; params = [w1, b1, w2, b2, w3, b3]."""
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = relu(h)
    return (logsumexp(h) - (h * y).sum(-1)).mean()


def gelu_chain(x, tanh):
    """gelu_tanh(x*1.5+0.5) spelled as plain elementwise ops (11 ops)."""
    z = x * 1.5 + 0.5
    return 0.5 * z * (1.0 + tanh(GELU_C * (z + 0.044715 * z * z * z)))


# ----------------------------------------------------------------------------
# Frameworks: one method per workload name, returning a zero-argument thunk that
# runs the workload once to completion. `impl_<name>` optionally describes how.
# ----------------------------------------------------------------------------
class NumpyPeer:
    def __init__(self, args):
        import numpy as np
        self.np = np
        self.rng = np.random.default_rng(0)
        self.version = np.__version__

    def rand(self, *shape):
        return self.rng.standard_normal(shape, dtype=self.np.float32)

    def elementwise_gelu_unfused(self, p):
        x, np = self.rand(p["n"]), self.np
        return lambda: gelu_chain(x, np.tanh)

    def sum_lastaxis_4096x4096(self, p):
        x = self.rand(*p["shape"])
        return lambda: x.sum(axis=-1)

    impl_softmax_lastaxis_4096x4096 = "manual: x - max, exp (in place), / sum"

    def softmax_lastaxis_4096x4096(self, p):
        x, np = self.rand(*p["shape"]), self.np

        def f():
            e = x - x.max(axis=-1, keepdims=True)
            np.exp(e, out=e)
            e /= e.sum(axis=-1, keepdims=True)
            return e
        return f

    def smallop_chain1000_add16(self, p):
        x = self.rand(p["n"])

        def f():
            y = x
            for _ in range(p["chain"]):
                y = y + x
            return y
        return f


    def _matmul(self, p):
        np = self.np
        a, b = self.rand(p["m"], p["k"]), self.rand(p["k"], p["n"])
        return lambda: a @ b

    matmul_f32_256 = matmul_f32_1024 = matmul_f32_2048 = _matmul

    def matmul_f32_batched_32x128x64x128(self, p):
        a, b = self.rand(p["batch"], p["m"], p["k"]), self.rand(p["batch"], p["k"], p["n"])
        return lambda: a @ b

    def sort_1m_f32(self, p):
        x = self.rand(p["n"])
        return lambda: self.np.sort(x)

    def gather_1m_rows(self, p):
        np = self.np
        t = self.rand(*p["table"])
        idx = self.rng.integers(0, p["table"][0], p["rows"]).astype(np.int32)
        return lambda: np.take(t, idx, axis=0)


class MlxPeer(MlxLlm):
    def __init__(self, args):
        import mlx.core as mx
        mx.set_default_device(mx.cpu)
        mx.random.seed(0)
        self.mx = mx
        self.version = mx.__version__

    def rand(self, *shape):
        a = self.mx.random.normal(shape)
        self.mx.eval(a)
        return a

    def elementwise_gelu_unfused(self, p):
        mx, x = self.mx, self.rand(p["n"])
        return lambda: mx.eval(gelu_chain(x, mx.tanh))

    impl_elementwise_gelu_compiled = "mx.compile"

    def elementwise_gelu_compiled(self, p):
        mx, x = self.mx, self.rand(p["n"])
        g = mx.compile(lambda v: gelu_chain(v, mx.tanh))
        return lambda: mx.eval(g(x))

    def sum_lastaxis_4096x4096(self, p):
        mx, x = self.mx, self.rand(*p["shape"])
        return lambda: mx.eval(mx.sum(x, axis=-1))

    impl_softmax_lastaxis_4096x4096 = "mx.softmax"

    def softmax_lastaxis_4096x4096(self, p):
        mx, x = self.mx, self.rand(*p["shape"])
        return lambda: mx.eval(mx.softmax(x, axis=-1))

    impl_smallop_chain1000_add16 = "lazy graph of 1000 adds, one mx.eval"

    def smallop_chain1000_add16(self, p):
        mx, x = self.mx, self.rand(p["n"])

        def f():
            y = x
            for _ in range(p["chain"]):
                y = y + x
            mx.eval(y)
        return f

    def _peg(self, p):
        mx = self.mx
        args = [self.rand(p["d_in"], p["hidden"]) * 0.1, self.rand(p["hidden"]) * 0.1,
                self.rand(p["hidden"], p["d_out"]) * 0.1, self.rand(p["d_out"]) * 0.1,
                self.rand(p["batch"], p["d_in"]), self.rand(p["batch"], p["d_out"])]
        mx.eval(args)
        g = mx.grad(lambda *a: peg_loss(*a, mx.tanh), argnums=(0, 1, 2, 3))
        return args, g

    impl_per_example_grads_vmap = "mx.vmap(mx.grad(loss), in_axes=(None,)*4+(0,0))"

    def per_example_grads_vmap(self, p):
        mx = self.mx
        args, g = self._peg(p)
        vg = mx.vmap(g, in_axes=(None, None, None, None, 0, 0))
        return lambda: mx.eval(vg(*args))

    impl_per_example_grads_loop = "python loop of mx.grad calls, one mx.eval"

    def per_example_grads_loop(self, p):
        mx = self.mx
        args, g = self._peg(p)
        w, (x, y) = args[:4], args[4:]
        return lambda: mx.eval([g(*w, x[b], y[b]) for b in range(p["batch"])])


    def _matmul(self, p):
        mx = self.mx
        dt = getattr(mx, p["dtype"])
        a, b = self.rand(p["m"], p["k"]).astype(dt), self.rand(p["k"], p["n"]).astype(dt)
        mx.eval(a, b)
        return lambda: mx.eval(a @ b)

    matmul_f32_256 = matmul_f32_1024 = matmul_f32_2048 = matmul_bf16_1024 = _matmul

    def matmul_f32_batched_32x128x64x128(self, p):
        mx = self.mx
        a, b = self.rand(p["batch"], p["m"], p["k"]), self.rand(p["batch"], p["k"], p["n"])
        return lambda: mx.eval(a @ b)

    def conv2d_b8_64to64_56x56_k3(self, p):
        mx = self.mx
        x = self.rand(p["n"], p["h"], p["w"], p["cin"])
        w = self.rand(p["cout"], p["k"], p["k"], p["cin"])
        return lambda: mx.eval(mx.conv2d(x, w, padding=p["padding"]))

    def sort_1m_f32(self, p):
        mx, x = self.mx, self.rand(p["n"])
        return lambda: mx.eval(mx.sort(x))

    def gather_1m_rows(self, p):
        mx = self.mx
        t = self.rand(*p["table"])
        idx = mx.random.randint(0, p["table"][0], (p["rows"],)).astype(mx.int32)
        mx.eval(idx)
        return lambda: mx.eval(mx.take(t, idx, axis=0))


    def _mlp(self, compiled):
        mx = self.mx
        x, y, *params = mlp_data(self.rand, mx.array)
        loss = lambda ps, x, y: mlp_loss(ps, x, y, lambda h: mx.maximum(h, 0.0),
                                          lambda h: mx.logsumexp(h, axis=-1))
        vg = mx.value_and_grad(loss)
        if compiled:
            vg = mx.compile(vg)
        return lambda: mx.eval(vg(params, x, y))

    impl_mlp_value_and_grad_784_512_512_10_b256 = "mx.value_and_grad (no compile)"

    def mlp_value_and_grad_784_512_512_10_b256(self, p):
        return self._mlp(False)

    impl_mlp_value_and_grad_784_512_512_10_b256_compiled = "mx.compile(mx.value_and_grad)"

    def mlp_value_and_grad_784_512_512_10_b256_compiled(self, p):
        return self._mlp(True)


    def _mlx_train(self, model, opt, loss_fn, batch, compiled):
        """One optimizer step per call; compiled: mx.compile with the model and
        optimizer state as inputs and outputs (MLX's documented pattern)."""
        import mlx.nn as nn
        mx = self.mx
        vg = nn.value_and_grad(model, loss_fn)

        def step(*b):
            loss, grads = vg(model, *b)
            opt.update(model, grads)
            return loss
        if compiled:
            state = [model.state, opt.state]
            step = mx.compile(step, inputs=state, outputs=state)

        def run():
            loss = step(*batch)
            mx.eval(loss, model.parameters(), opt.state)
            return loss.item()
        return run

    def _mlx_mlp_train(self, p, compiled):
        mx = self.mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        sizes = p["sizes"]

        class Mlp(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]

            def __call__(self, x):
                for i, l in enumerate(self.layers):
                    x = l(x)
                    if i + 1 < len(self.layers):
                        x = nn.relu(x)
                return x
        model = Mlp()
        mx.eval(model.parameters())
        x = self.rand(p["batch"], sizes[0])
        y = mx.random.randint(0, sizes[-1], (p["batch"],)).astype(mx.int32)
        loss = lambda m, x, y: nn.losses.cross_entropy(m(x), y, reduction="mean")
        return self._mlx_train(model, optim.SGD(learning_rate=0.01), loss, (x, y), compiled)

    impl_mlp_train_step_784_512_512_10_b256_sgd = "mlx.nn MLP, nn.losses.cross_entropy, optim.SGD, mx.compile(step, inputs=state, outputs=state)"

    def mlp_train_step_784_512_512_10_b256_sgd(self, p):
        return self._mlx_mlp_train(p, True)

    impl_mlp_train_step_784_512_512_10_b256_sgd_eager = "mlx.nn MLP, nn.losses.cross_entropy, optim.SGD (no compile)"

    def mlp_train_step_784_512_512_10_b256_sgd_eager(self, p):
        return self._mlx_mlp_train(p, False)

    def _mlx_lm_train(self, p, compiled):
        mx = self.mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        d, h, ff, v, t = p["d_model"], p["heads"], p["ffn"], p["vocab"], p["seq"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.attn = nn.MultiHeadAttention(d, h, bias=False)
                self.fc, self.proj = nn.Linear(d, ff), nn.Linear(ff, d)

            def __call__(self, x, mask):
                y = self.ln1(x)
                x = x + self.attn(y, y, y, mask)
                return x + self.proj(nn.gelu_approx(self.fc(self.ln2(x))))

        class Gpt(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte, self.wpe = nn.Embedding(v, d), nn.Embedding(t, d)
                self.blocks = [Block() for _ in range(p["layers"])]
                self.ln_f = nn.LayerNorm(d)

            def __call__(self, idx):
                n = idx.shape[1]
                mask = nn.MultiHeadAttention.create_additive_causal_mask(n)
                x = self.wte(idx) + self.wpe(mx.arange(n))
                for blk in self.blocks:
                    x = blk(x, mask)
                return self.wte.as_linear(self.ln_f(x))
        model = Gpt()
        mx.eval(model.parameters())
        x = mx.random.randint(0, v, (p["batch"], t)).astype(mx.int32)
        y = mx.random.randint(0, v, (p["batch"], t)).astype(mx.int32)
        loss = lambda m, x, y: nn.losses.cross_entropy(m(x), y, reduction="mean")
        opt = optim.AdamW(learning_rate=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.01,
                          bias_correction=True)
        return self._mlx_train(model, opt, loss, (x, y), compiled)

    impl_transformer_lm_train_step = "pre-norm GPT in mlx.nn (MultiHeadAttention, additive causal mask), optim.AdamW, mx.compile(step, inputs=state, outputs=state)"

    def transformer_lm_train_step(self, p):
        return self._mlx_lm_train(p, True)

    impl_transformer_lm_train_step_eager = "pre-norm GPT in mlx.nn, optim.AdamW (no compile)"

    def transformer_lm_train_step_eager(self, p):
        return self._mlx_lm_train(p, False)


class TorchPeer(TorchLlm):
    def __init__(self, args):
        import torch
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        self.torch = torch
        self.version = torch.__version__

    def rand(self, *shape):
        return self.torch.randn(*shape, dtype=self.torch.float32)

    def elementwise_gelu_unfused(self, p):
        x, torch = self.rand(p["n"]), self.torch
        return lambda: gelu_chain(x, torch.tanh)

    impl_elementwise_gelu_compiled = "torch.compile (inductor)"

    def elementwise_gelu_compiled(self, p):
        x, torch = self.rand(p["n"]), self.torch
        g = torch.compile(lambda v: gelu_chain(v, torch.tanh))
        return lambda: g(x)

    def sum_lastaxis_4096x4096(self, p):
        x = self.rand(*p["shape"])
        return lambda: x.sum(dim=-1)

    impl_softmax_lastaxis_4096x4096 = "torch.softmax"

    def softmax_lastaxis_4096x4096(self, p):
        x, torch = self.rand(*p["shape"]), self.torch
        return lambda: torch.softmax(x, dim=-1)

    def smallop_chain1000_add16(self, p):
        x = self.rand(p["n"])

        def f():
            y = x
            for _ in range(p["chain"]):
                y = y + x
            return y
        return f

    impl_mlp_train_step_784_512_512_10_b256_sgd = "nn.Sequential MLP, F.cross_entropy, torch.optim.SGD (eager)"

    def mlp_train_step_784_512_512_10_b256_sgd(self, p):
        torch, nn = self.torch, self.torch.nn
        sizes = p["sizes"]
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i + 2 < len(sizes):
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = self.rand(p["batch"], sizes[0])
        y = torch.randint(0, sizes[-1], (p["batch"],))

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()
        return step

    impl_mlp_train_step_784_512_512_10_b256_sgd_eager = impl_mlp_train_step_784_512_512_10_b256_sgd

    def mlp_train_step_784_512_512_10_b256_sgd_eager(self, p):
        return self.mlp_train_step_784_512_512_10_b256_sgd(p)

    impl_transformer_lm_train_step = "pre-norm GPT in torch.nn, F.scaled_dot_product_attention(is_causal), torch.optim.AdamW (eager)"

    def transformer_lm_train_step(self, p):
        torch, nn, F = self.torch, self.torch.nn, self.torch.nn.functional
        d, h, ff, v, t = p["d_model"], p["heads"], p["ffn"], p["vocab"], p["seq"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.qkv = nn.Linear(d, 3 * d, bias=False)
                self.out = nn.Linear(d, d, bias=False)
                self.fc, self.proj = nn.Linear(d, ff), nn.Linear(ff, d)

            def forward(self, x):
                b, n, _ = x.shape
                q, k, vv = self.qkv(self.ln1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
                a = F.scaled_dot_product_attention(q, k, vv, is_causal=True)
                x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
                return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

        class Gpt(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte, self.wpe = nn.Embedding(v, d), nn.Embedding(t, d)
                self.blocks = nn.ModuleList([Block() for _ in range(p["layers"])])
                self.ln_f = nn.LayerNorm(d)

            def forward(self, idx):
                x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
                for blk in self.blocks:
                    x = blk(x)
                return self.ln_f(x) @ self.wte.weight.T

        model = Gpt()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        x = torch.randint(0, v, (p["batch"], t))
        y = torch.randint(0, v, (p["batch"], t))

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x).reshape(-1, v), y.reshape(-1))
            loss.backward()
            opt.step()
            return loss.item()
        return step

    impl_transformer_lm_train_step_eager = impl_transformer_lm_train_step

    def transformer_lm_train_step_eager(self, p):
        return self.transformer_lm_train_step(p)

    def _peg(self, p):
        from torch.func import grad
        torch = self.torch
        args = [self.rand(p["d_in"], p["hidden"]) * 0.1, self.rand(p["hidden"]) * 0.1,
                self.rand(p["hidden"], p["d_out"]) * 0.1, self.rand(p["d_out"]) * 0.1,
                self.rand(p["batch"], p["d_in"]), self.rand(p["batch"], p["d_out"])]
        g = grad(lambda *a: peg_loss(*a, torch.tanh), argnums=(0, 1, 2, 3))
        return args, g

    impl_per_example_grads_vmap = "torch.func.vmap(torch.func.grad(loss))"

    def per_example_grads_vmap(self, p):
        from torch.func import vmap
        args, g = self._peg(p)
        vg = vmap(g, in_dims=(None, None, None, None, 0, 0))
        return lambda: vg(*args)

    impl_per_example_grads_loop = "python loop of torch.func.grad calls"

    def per_example_grads_loop(self, p):
        args, g = self._peg(p)
        w, (x, y) = args[:4], args[4:]
        return lambda: [g(*w, x[b], y[b]) for b in range(p["batch"])]


    def _matmul(self, p):
        torch = self.torch
        dt = getattr(torch, p["dtype"])
        a, b = self.rand(p["m"], p["k"]).to(dt), self.rand(p["k"], p["n"]).to(dt)
        return lambda: a @ b

    matmul_f32_256 = matmul_f32_1024 = matmul_f32_2048 = matmul_bf16_1024 = _matmul

    def matmul_f32_batched_32x128x64x128(self, p):
        a, b = self.rand(p["batch"], p["m"], p["k"]), self.rand(p["batch"], p["k"], p["n"])
        return lambda: a @ b

    impl_conv2d_b8_64to64_56x56_k3 = "F.conv2d, the faster of NCHW and channels_last"

    def conv2d_b8_64to64_56x56_k3(self, p):
        torch = self.torch
        x = self.rand(p["n"], p["cin"], p["h"], p["w"])
        w = self.rand(p["cout"], p["cin"], p["k"], p["k"])
        best = None
        with torch.no_grad():
            for fmt in (torch.contiguous_format, torch.channels_last):
                xx, ww = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
                f = (lambda xx, ww: lambda: torch.nn.functional.conv2d(xx, ww, padding=p["padding"]))(xx, ww)
                f()
                t0 = time.perf_counter()
                for _ in range(3):
                    f()
                t = time.perf_counter() - t0
                if best is None or t < best[0]:
                    best = (t, f, str(fmt))
        self.impl_conv2d_b8_64to64_56x56_k3 = "F.conv2d " + best[2].replace("torch.", "")

        def run():
            with torch.no_grad():
                return best[1]()
        return run

    def sort_1m_f32(self, p):
        x = self.rand(p["n"])
        return lambda: self.torch.sort(x)

    def gather_1m_rows(self, p):
        torch = self.torch
        t = self.rand(*p["table"])
        idx = torch.randint(0, p["table"][0], (p["rows"],), dtype=torch.int32)
        return lambda: torch.index_select(t, 0, idx)


    def _mlp(self, compiled):
        torch = self.torch
        x, y, *params = mlp_data(self.rand, torch.from_numpy)
        loss = lambda ps, x, y: mlp_loss(ps, x, y, torch.relu, lambda h: torch.logsumexp(h, dim=-1))
        vg = torch.func.grad_and_value(loss)
        if compiled:
            vg = torch.compile(vg)
        return lambda: vg(params, x, y)

    impl_mlp_value_and_grad_784_512_512_10_b256 = "torch.func.grad_and_value (eager)"

    def mlp_value_and_grad_784_512_512_10_b256(self, p):
        return self._mlp(False)

    impl_mlp_value_and_grad_784_512_512_10_b256_compiled = "torch.compile(torch.func.grad_and_value)"

    def mlp_value_and_grad_784_512_512_10_b256_compiled(self, p):
        return self._mlp(True)

class JaxPeer(JaxLlm):
    def __init__(self, args):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        self.key = jax.random.PRNGKey(0)
        self.version = jax.__version__

    def rand(self, *shape):
        self.key, k = self.jax.random.split(self.key)
        return self.jax.random.normal(k, shape, dtype=self.jnp.float32).block_until_ready()

    impl_elementwise_gelu_unfused = "eager op-by-op dispatch (no jit)"

    def elementwise_gelu_unfused(self, p):
        x, jnp = self.rand(p["n"]), self.jnp
        return lambda: gelu_chain(x, jnp.tanh).block_until_ready()

    impl_elementwise_gelu_compiled = "jax.jit"

    def elementwise_gelu_compiled(self, p):
        x, jnp = self.rand(p["n"]), self.jnp
        g = self.jax.jit(lambda v: gelu_chain(v, jnp.tanh))
        return lambda: g(x).block_until_ready()

    impl_sum_lastaxis_4096x4096 = "jax.jit(x.sum(-1))"

    def sum_lastaxis_4096x4096(self, p):
        x = self.rand(*p["shape"])
        f = self.jax.jit(lambda v: v.sum(axis=-1))
        return lambda: f(x).block_until_ready()

    impl_softmax_lastaxis_4096x4096 = "jax.jit(jax.nn.softmax)"

    def softmax_lastaxis_4096x4096(self, p):
        x, jax = self.rand(*p["shape"]), self.jax
        f = jax.jit(lambda v: jax.nn.softmax(v, axis=-1))
        return lambda: f(x).block_until_ready()

    impl_smallop_chain1000_add16 = "eager op-by-op dispatch (no jit)"

    def smallop_chain1000_add16(self, p):
        x = self.rand(p["n"])

        def f():
            y = x
            for _ in range(p["chain"]):
                y = y + x
            y.block_until_ready()
        return f


    def _matmul(self, p):
        jnp = self.jnp
        dt = getattr(jnp, p["dtype"])
        a, b = self.rand(p["m"], p["k"]).astype(dt), self.rand(p["k"], p["n"]).astype(dt)
        f = self.jax.jit(lambda a, b: a @ b)
        return lambda: f(a, b).block_until_ready()

    matmul_f32_256 = matmul_f32_1024 = matmul_f32_2048 = matmul_bf16_1024 = _matmul

    def matmul_f32_batched_32x128x64x128(self, p):
        a, b = self.rand(p["batch"], p["m"], p["k"]), self.rand(p["batch"], p["k"], p["n"])
        f = self.jax.jit(lambda a, b: a @ b)
        return lambda: f(a, b).block_until_ready()

    impl_conv2d_b8_64to64_56x56_k3 = "jax.lax.conv_general_dilated NHWC/OHWI, jit"

    def conv2d_b8_64to64_56x56_k3(self, p):
        jax = self.jax
        x = self.rand(p["n"], p["h"], p["w"], p["cin"])
        w = self.rand(p["cout"], p["k"], p["k"], p["cin"])
        pad = [(p["padding"], p["padding"])] * 2
        f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), pad, dimension_numbers=("NHWC", "OHWI", "NHWC")))
        return lambda: f(x, w).block_until_ready()

    def sort_1m_f32(self, p):
        x = self.rand(p["n"])
        f = self.jax.jit(self.jnp.sort)
        return lambda: f(x).block_until_ready()

    def gather_1m_rows(self, p):
        jax, jnp = self.jax, self.jnp
        t = self.rand(*p["table"])
        self.key, k = jax.random.split(self.key)
        idx = jax.random.randint(k, (p["rows"],), 0, p["table"][0], dtype=jnp.int32)
        f = jax.jit(lambda t, i: jnp.take(t, i, axis=0))
        return lambda: f(t, idx).block_until_ready()


    def _mlp(self, compiled):
        jax, jnp = self.jax, self.jnp
        x, y, *params = mlp_data(self.rand, jnp.asarray)
        loss = lambda ps, x, y: mlp_loss(ps, x, y, jax.nn.relu,
                                          lambda h: jax.scipy.special.logsumexp(h, axis=-1))
        vg = jax.value_and_grad(loss)
        if compiled:
            vg = jax.jit(vg)
        return lambda: jax.block_until_ready(vg(params, x, y))

    impl_mlp_value_and_grad_784_512_512_10_b256 = "jax.value_and_grad, eager op-by-op (no jit)"

    def mlp_value_and_grad_784_512_512_10_b256(self, p):
        return self._mlp(False)

    impl_mlp_value_and_grad_784_512_512_10_b256_compiled = "jax.jit(jax.value_and_grad)"

    def mlp_value_and_grad_784_512_512_10_b256_compiled(self, p):
        return self._mlp(True)

    def _peg(self, p):
        jax, jnp = self.jax, self.jnp
        args = [self.rand(p["d_in"], p["hidden"]) * 0.1, self.rand(p["hidden"]) * 0.1,
                self.rand(p["hidden"], p["d_out"]) * 0.1, self.rand(p["d_out"]) * 0.1,
                self.rand(p["batch"], p["d_in"]), self.rand(p["batch"], p["d_out"])]
        g = jax.grad(lambda *a: peg_loss(*a, jnp.tanh), argnums=(0, 1, 2, 3))
        return args, g

    impl_per_example_grads_vmap = "jax.jit(jax.vmap(jax.grad(loss)))"

    def per_example_grads_vmap(self, p):
        jax = self.jax
        args, g = self._peg(p)
        vg = jax.jit(jax.vmap(g, in_axes=(None, None, None, None, 0, 0)))
        return lambda: jax.block_until_ready(vg(*args))

    impl_per_example_grads_loop = "python loop of jax.jit(jax.grad(loss)) calls"

    def per_example_grads_loop(self, p):
        jax = self.jax
        args, g = self._peg(p)
        g = jax.jit(g)
        w, (x, y) = args[:4], args[4:]
        return lambda: jax.block_until_ready([g(*w, x[b], y[b]) for b in range(p["batch"])])

    def _jax_train(self, params, loss_fn, update, opt_state, batch):
        """jax.jit of the whole step (value_and_grad + update), parameters and
        optimizer state donated so XLA updates them in place."""
        jax = self.jax

        def step(params, opt_state, *b):
            loss, grads = jax.value_and_grad(loss_fn)(params, *b)
            params, opt_state = update(params, grads, opt_state)
            return loss, params, opt_state
        step = jax.jit(step, donate_argnums=(0, 1))
        st = [params, opt_state]

        def run():
            loss, st[0], st[1] = step(st[0], st[1], *batch)
            jax.block_until_ready((loss, st[0], st[1]))
            return float(loss)
        return run

    def _jax_xent(self, logits, y):
        jax, jnp = self.jax, self.jnp
        lp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(lp, y[..., None], axis=-1).mean()

    impl_mlp_train_step_784_512_512_10_b256_sgd = "jax.jit(value_and_grad + SGD update), donated params"

    def mlp_train_step_784_512_512_10_b256_sgd(self, p):
        jax, jnp = self.jax, self.jnp
        sizes = p["sizes"]
        params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            params += [self.rand(a, b) * (1.0 / math.sqrt(a)), jnp.zeros(b, jnp.float32)]
        x = self.rand(p["batch"], sizes[0])
        self.key, k = jax.random.split(self.key)
        y = jax.random.randint(k, (p["batch"],), 0, sizes[-1], dtype=jnp.int32)

        def loss(ps, x, y):
            h = x
            for i in range(0, len(ps), 2):
                h = h @ ps[i] + ps[i + 1]
                if i + 2 < len(ps):
                    h = jax.nn.relu(h)
            return self._jax_xent(h, y)

        def sgd(ps, gs, st):
            return [w - 0.01 * g for w, g in zip(ps, gs)], st
        return self._jax_train(params, loss, sgd, (), (x, y))

    impl_mlp_train_step_784_512_512_10_b256_sgd_eager = "jax.jit (the same compiled step: JAX has no eager train step to compare)"
    mlp_train_step_784_512_512_10_b256_sgd_eager = mlp_train_step_784_512_512_10_b256_sgd

    impl_transformer_lm_train_step = "pre-norm GPT as a pure function, jax.nn.dot_product_attention(is_causal), hand-written AdamW, jax.jit of the whole step, donated state"

    def transformer_lm_train_step(self, p):
        jax, jnp = self.jax, self.jnp
        d, h, ff, v, t, nl = p["d_model"], p["heads"], p["ffn"], p["vocab"], p["seq"], p["layers"]

        def lin(a, b):
            return self.rand(a, b) * (1.0 / math.sqrt(a))
        ones, zeros = (lambda n: jnp.ones(n, jnp.float32)), (lambda n: jnp.zeros(n, jnp.float32))
        params = dict(wte=self.rand(v, d) * 0.02, wpe=self.rand(t, d) * 0.02, lnf_w=ones(d), lnf_b=zeros(d),
                      blocks=[dict(ln1_w=ones(d), ln1_b=zeros(d), ln2_w=ones(d), ln2_b=zeros(d),
                                   wq=lin(d, d), wk=lin(d, d), wv=lin(d, d), wo=lin(d, d),
                                   fc_w=lin(d, ff), fc_b=zeros(ff), proj_w=lin(ff, d), proj_b=zeros(d))
                              for _ in range(nl)])

        def ln(x, w, b):
            mu = x.mean(-1, keepdims=True)
            var = ((x - mu) ** 2).mean(-1, keepdims=True)
            return (x - mu) * jax.lax.rsqrt(var + 1e-5) * w + b

        def gelu(x):
            return 0.5 * x * (1 + jnp.tanh(GELU_C * (x + 0.044715 * x ** 3)))

        def loss(ps, idx, y):
            b, n = idx.shape
            x = ps["wte"][idx] + ps["wpe"][:n]
            for blk in ps["blocks"]:
                z = ln(x, blk["ln1_w"], blk["ln1_b"])
                q, k, vv = (jnp.reshape(z @ blk[w], (b, n, h, d // h)) for w in ("wq", "wk", "wv"))
                a = jax.nn.dot_product_attention(q, k, vv, is_causal=True).reshape(b, n, d)
                x = x + a @ blk["wo"]
                z = gelu(ln(x, blk["ln2_w"], blk["ln2_b"]) @ blk["fc_w"] + blk["fc_b"])
                x = x + z @ blk["proj_w"] + blk["proj_b"]
            logits = ln(x, ps["lnf_w"], ps["lnf_b"]) @ ps["wte"].T
            return self._jax_xent(logits, y)

        lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
        tmap = jax.tree_util.tree_map

        def adamw(ps, gs, st):
            m, s, i = st
            i = i + 1
            m = tmap(lambda m, g: b1 * m + (1 - b1) * g, m, gs)
            s = tmap(lambda s, g: b2 * s + (1 - b2) * g * g, s, gs)
            c1, c2 = 1 - b1 ** i, 1 - b2 ** i
            ps = tmap(lambda w, m, s: w * (1 - lr * wd) - lr * (m / c1) / (jnp.sqrt(s / c2) + eps), ps, m, s)
            return ps, (m, s, i)
        z = tmap(jnp.zeros_like, params)
        self.key, k1, k2 = jax.random.split(self.key, 3)
        x = jax.random.randint(k1, (p["batch"], t), 0, v, dtype=jnp.int32)
        y = jax.random.randint(k2, (p["batch"], t), 0, v, dtype=jnp.int32)
        return self._jax_train(params, loss, adamw, (z, tmap(jnp.zeros_like, params), jnp.float32(0)), (x, y))

    impl_transformer_lm_train_step_eager = "jax.jit (the same compiled step: JAX has no eager train step to compare)"
    transformer_lm_train_step_eager = transformer_lm_train_step


PEERS = dict(numpy=NumpyPeer, mlx=MlxPeer, torch=TorchPeer, jax=JaxPeer, llamacpp=LlamaCppPeer)


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------

def machine_busy_s():
    """Busy CPU seconds of the whole machine so far (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")


def wait_quiet(max_wait, threshold):
    """Wait up to max_wait s for other processes to use < threshold cores (1 s samples).
    Returns the other-process load of the last sample, or None when not waiting."""
    if max_wait <= 0:
        return None
    t_end = time.time() + max_wait
    while True:
        b0, c0, w0 = machine_busy_s(), time.process_time(), time.perf_counter()
        time.sleep(1.0)
        other = ((machine_busy_s() - b0) - (time.process_time() - c0)) / (time.perf_counter() - w0)
        if other < threshold or time.time() > t_end:
            return round(max(0.0, other), 2)


def bench(fn, warmup, args, budget_scale=1.0):
    budget = args.budget * budget_scale
    if isinstance(fn, Measured):
        return dict(median_s=fn.median_s, min_s=fn.min_s, n=fn.n, cpu_util=None, first_s=fn.median_s,
                    other_load=None, window_s=fn.median_s * fn.n)
    timed = isinstance(fn, Timed)   # returns the seconds of its own timed part
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):     # further warm-up only while cheap
        if first > budget / 6:
            break
        fn()
    times = []
    b0, c0, w0 = machine_busy_s(), time.process_time(), time.perf_counter()
    while True:
        s = time.perf_counter()
        own = fn()
        e = time.perf_counter()
        times.append(own if timed else e - s)
        if e - w0 > budget and len(times) >= 3:
            break
        if len(times) >= args.repeats and e - w0 >= args.min_window:
            break
        if len(times) >= 20000:
            break
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    # /proc/stat ticks are 10 ms: the other-process load means nothing on short windows.
    other = round(max(0.0, ((machine_busy_s() - b0) - cpu) / wall), 2) if wall >= 0.25 else None
    return dict(median_s=statistics.median(times), min_s=min(times), n=len(times),
                cpu_util=round(cpu / wall, 2), first_s=first, other_load=other,
                window_s=wall)


def rnd(v, digits=4):
    if v is None or not isinstance(v, float) or not math.isfinite(v):
        return v
    return float(f"{v:.{digits}g}") if abs(v) < 1 else round(v, digits)


def peak_rss_mb():
    """Peak resident memory of this process so far (MB): run one workload
    alone (--only NAME) for its own peak."""
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(rec):
    print(json.dumps(rec), flush=True)


def selected(names, only):
    """--only: comma-separated names, name prefixes, or glob patterns."""
    if not only:
        return list(names)
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [n for n in names
            if any(n.startswith(p) or fnmatch.fnmatchcase(n, p) for p in pats)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", required=True, choices=sorted(PEERS))
    ap.add_argument("--only", default="", help="comma-separated workload names/prefixes/globs")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats (repeats 5, min-window 0.3 s, budget 3 s)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20)")
    ap.add_argument("--min-window", type=float, default=None,
                    help="keep repeating fast workloads until this many s are timed (default 1)")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop after this many s of timed repeats (default 15)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each workload wait up to this many s for other processes "
                         "to go idle (< --quiet-threshold cores busy)")
    ap.add_argument("--quiet-threshold", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = ap.parse_args()
    q = args.quick
    if args.repeats is None:
        args.repeats = 5 if q else 20
    if args.min_window is None:
        args.min_window = 0.3 if q else 1.0
    if args.budget is None:
        args.budget = 3.0 if q else 15.0
    if args.list:
        for n in WORKLOADS:
            print(n)
        return

    if args.framework == "jax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    fw = args.framework
    peer = PEERS[fw](args)
    for name in selected(WORKLOADS, args.only):
        w = WORKLOADS[name]
        base = dict(framework=fw, workload=name, params=w.params, metric=w.metric,
                    version=peer.version)
        build = getattr(peer, name, None)
        if build is None:
            emit(dict(base, status="skipped", reason=f"{fw} has no implementation",
                      median_ms=None, min_ms=None, repeats=0, value=None, cpu_util=None))
            print(f"[{fw}] {name}: skipped", file=sys.stderr)
            continue
        try:
            quiet = wait_quiet(args.wait_quiet, args.quiet_threshold)
            r = bench(build(w.params), w.warmup, args, w.budget_scale)
        except Exception as e:  # noqa: BLE001 - one failing workload must not stop the rest
            traceback.print_exc(file=sys.stderr)
            emit(dict(base, status="failed", reason=f"{type(e).__name__}: {e}"[:400],
                      median_ms=None, min_ms=None, repeats=0, value=None, cpu_util=None))
            continue
        rec = dict(base, median_ms=rnd(r["median_s"] * 1e3), min_ms=rnd(r["min_s"] * 1e3),
                   repeats=r["n"], value=rnd(w.value(r["median_s"])), cpu_util=r["cpu_util"],
                   impl=getattr(peer, "impl_" + name, None), first_call_ms=rnd(r["first_s"] * 1e3),
                   peak_rss_mb=peak_rss_mb(),
                   timed_window_s=round(r["window_s"], 3), other_load=r["other_load"],
                   quiet_wait_load=quiet)
        emit(rec)
        print(f"[{fw}] {name}: {rec['value']} {w.metric} (median {rec['median_ms']} ms, "
              f"n={r['n']}, cpu_util {r['cpu_util']}, other_load {r['other_load']})",
              file=sys.stderr)


if __name__ == "__main__":
    main()
