#!/usr/bin/env python3
"""Golden values for kiln-nn and kiln-optim, from MLX 0.32.4 (CPU).

    /work/refvenv/bin/python crates/kiln-nn/tests/golden/gen_nn.py

Writes nn.json and mlp.safetensors next to this script. Inputs come from
numpy.random.default_rng(<fixed seed>), so the output is deterministic.
Tensors are {"shape": [...], "dtype": "float32", "data": [flat values]}.
"""

import json
import math
import os
import sys

import numpy as np
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

if mx.__version__ != "0.32.4":
    sys.exit(f"expected mlx 0.32.4, found {mx.__version__}")
mx.set_default_device(mx.cpu)
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)
mx.random.seed(0)  # layer constructors draw from the global key sequence


def enc(a):
    a = mx.array(a)
    mx.eval(a)
    n = np.array(a.astype(mx.float32)) if a.dtype == mx.bfloat16 else np.array(a)
    vals = []
    for v in n.reshape(-1).tolist():
        if isinstance(v, float) and math.isnan(v):
            vals.append("nan")
        elif isinstance(v, float) and math.isinf(v):
            vals.append("inf" if v > 0 else "-inf")
        else:
            vals.append(v)
    return {"shape": list(a.shape), "dtype": str(a.dtype).split(".")[-1], "data": vals}


def randn(*shape):
    return mx.array(rng.standard_normal(shape).astype(np.float32))


out = {"mlx_version": mx.__version__}

# Activations on one input with values around the kinks.
x = mx.concatenate([randn(3, 6) * 3, mx.array([[-1.0, -0.5, 0.0, 0.5, 1.0, 6.0]])], axis=0)
acts = {}
for name in ["sigmoid", "relu", "relu2", "relu6", "leaky_relu", "log_softmax", "elu", "softmax", "softplus",
             "softsign", "softshrink", "celu", "silu", "log_sigmoid", "gelu", "gelu_approx", "gelu_fast_approx",
             "glu", "step", "selu", "mish", "hardswish", "hard_tanh", "hard_shrink", "softmin", "tanh"]:
    acts[name] = enc(getattr(nn, name)(x))
alpha = mx.array(rng.uniform(0.1, 0.5, (6,)).astype(np.float32))
acts["prelu"] = enc(nn.prelu(x, alpha))
out["activations"] = {"x": enc(x), "alpha": enc(alpha), "out": acts}

# Losses.
L = nn.losses
logits = randn(5, 7)
cls = mx.array(rng.integers(0, 7, (5,)).astype(np.int32))
probs = mx.softmax(randn(5, 7), axis=-1)
w5 = mx.array(rng.uniform(0.5, 1.5, (5,)).astype(np.float32))
pred = randn(4, 6)
targ = randn(4, 6)
p01 = mx.sigmoid(randn(4, 6))
t01 = mx.array(rng.integers(0, 2, (4, 6)).astype(np.float32))
var = mx.abs(randn(4, 6)) + 0.1
sgn = mx.array(rng.choice([-1.0, 1.0], (4, 6)).astype(np.float32))
anc, pos, neg = randn(4, 6), randn(4, 6), randn(4, 6)
logp = mx.log(mx.softmax(randn(5, 7), axis=-1))
logq = mx.log(mx.softmax(randn(5, 7), axis=-1))
losses = {}
for red in ["none", "mean", "sum"]:
    losses[f"cross_entropy/{red}"] = enc(L.cross_entropy(logits, cls, reduction=red))
    losses[f"cross_entropy_probs/{red}"] = enc(L.cross_entropy(logits, probs, reduction=red))
    losses[f"cross_entropy_smooth_weights/{red}"] = enc(L.cross_entropy(logits, cls, weights=w5, label_smoothing=0.1, reduction=red))
    losses[f"binary_cross_entropy/{red}"] = enc(L.binary_cross_entropy(pred, t01, reduction=red))
    losses[f"binary_cross_entropy_probs/{red}"] = enc(L.binary_cross_entropy(p01, t01, with_logits=False, reduction=red))
    losses[f"l1_loss/{red}"] = enc(L.l1_loss(pred, targ, reduction=red))
    losses[f"mse_loss/{red}"] = enc(L.mse_loss(pred, targ, reduction=red))
    losses[f"nll_loss/{red}"] = enc(L.nll_loss(logp, cls, reduction=red))
    losses[f"gaussian_nll_loss/{red}"] = enc(L.gaussian_nll_loss(pred, targ, var, reduction=red))
    losses[f"gaussian_nll_loss_full/{red}"] = enc(L.gaussian_nll_loss(pred, targ, var, full=True, reduction=red))
    losses[f"kl_div_loss/{red}"] = enc(L.kl_div_loss(logp, logq, reduction=red))
    losses[f"smooth_l1_loss/{red}"] = enc(L.smooth_l1_loss(pred, targ, beta=0.5, reduction=red))
    losses[f"triplet_loss/{red}"] = enc(L.triplet_loss(anc, pos, neg, reduction=red))
    losses[f"hinge_loss/{red}"] = enc(L.hinge_loss(pred, sgn, reduction=red))
    losses[f"huber_loss/{red}"] = enc(L.huber_loss(pred, targ, delta=0.7, reduction=red))
    losses[f"log_cosh_loss/{red}"] = enc(L.log_cosh_loss(pred, targ, reduction=red))
    losses[f"cosine_similarity_loss/{red}"] = enc(L.cosine_similarity_loss(pred, targ, reduction=red))
    losses[f"margin_ranking_loss/{red}"] = enc(L.margin_ranking_loss(pred[:, 0], targ[:, 0], sgn[:, 0], margin=0.2, reduction=red))
out["losses"] = {
    "inputs": {k: enc(v) for k, v in dict(logits=logits, cls=cls, probs=probs, w5=w5, pred=pred, targ=targ, p01=p01,
                                         t01=t01, var=var, sgn=sgn, anc=anc, pos=pos, neg=neg, logp=logp,
                                         logq=logq).items()},
    "out": losses,
}

# Layers with given weights.
xin = randn(3, 8)
lin = nn.Linear(8, 5)
ln = nn.LayerNorm(8)
ln.weight = randn(8)
ln.bias = randn(8)
rms = nn.RMSNorm(8)
rms.weight = randn(8)
emb = nn.Embedding(10, 4)
ids = mx.array([[1, 3, 9], [0, 0, 2]], dtype=mx.int32)
out["layers"] = {
    "x": enc(xin),
    "linear": {"weight": enc(lin.weight), "bias": enc(lin.bias), "out": enc(lin(xin))},
    "layer_norm": {"weight": enc(ln.weight), "bias": enc(ln.bias), "out": enc(ln(xin))},
    "layer_norm_plain": enc(nn.LayerNorm(8, affine=False)(xin)),
    "rms_norm": {"weight": enc(rms.weight), "out": enc(rms(xin))},
    "embedding": {"weight": enc(emb.weight), "ids": enc(ids), "out": enc(emb(ids)),
                  "as_linear": enc(emb.as_linear(randn(2, 4) * 0 + 1))},
}

# An MLP saved by MLX: Kiln loads it by name and must give the same outputs
# and the same gradients through nn.value_and_grad.
class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)]

    def __call__(self, x):
        for i, l in enumerate(self.layers):
            x = l(x)
            if i + 1 < len(self.layers):
                x = nn.relu(x)
        return x


mlp = Mlp()
mx.eval(mlp.parameters())
mlp.save_weights(os.path.join(HERE, "mlp.safetensors"))
yl = mx.array(rng.integers(0, 3, (3,)).astype(np.int32))


def mlp_loss(m, x, y):
    return L.cross_entropy(m(x), y, reduction="mean")


val, grads = nn.value_and_grad(mlp, mlp_loss)(mlp, xin, yl)
out["mlp"] = {"x": enc(xin), "y": enc(yl), "out": enc(mlp(xin)), "loss": enc(val),
              "grads": {k: enc(v) for k, v in tree_flatten(grads)}}

# Optimizers: three steps on a two-parameter tree with fixed gradients.
p0 = {"w": randn(3, 4), "b": randn(4)}
gs = [{"w": randn(3, 4), "b": randn(4)} for _ in range(3)]
configs = {
    "sgd": lambda: optim.SGD(0.1),
    "sgd_momentum": lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.01, dampening=0.1),
    "sgd_nesterov": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: optim.RMSprop(0.01),
    "adagrad": lambda: optim.Adagrad(0.1),
    "adadelta": lambda: optim.AdaDelta(0.5),
    "adam": lambda: optim.Adam(0.01),
    "adam_bias_correction": lambda: optim.Adam(0.01, bias_correction=True),
    "adamw": lambda: optim.AdamW(0.01, weight_decay=0.1),
    "adamax": lambda: optim.Adamax(0.01),
    "lion": lambda: optim.Lion(0.01, weight_decay=0.1),
    "adafactor": lambda: optim.Adafactor(),
    "adafactor_lr_beta": lambda: optim.Adafactor(learning_rate=0.01, relative_step=False, beta_1=0.9, weight_decay=0.01),
    "muon": lambda: optim.Muon(0.02),
    "adam_cosine": lambda: optim.Adam(optim.cosine_decay(0.1, 5, 0.01)),
}
opts = {}
for name, make in configs.items():
    o = make()
    params = dict(p0)
    steps = []
    for g in gs:
        params = o.apply_gradients(g, params)
        steps.append({k: enc(v) for k, v in tree_flatten(params)})
    state = {k: enc(v) for k, v in tree_flatten(o.state)}
    opts[name] = {"steps": steps, "state": state}
out["optimizers"] = {"params": {k: enc(v) for k, v in p0.items()},
                     "grads": [{k: enc(v) for k, v in g.items()} for g in gs], "out": opts}

clipped, total = optim.clip_grad_norm(gs[0], 1.5)
out["clip_grad_norm"] = {"max_norm": 1.5, "total": enc(total), "clipped": {k: enc(v) for k, v in tree_flatten(clipped)}}

steps = mx.arange(0, 25, dtype=mx.uint64)
out["schedules"] = {
    "exponential_decay": enc(mx.stack([optim.exponential_decay(0.1, 0.9)(s) for s in steps])),
    "step_decay": enc(mx.stack([optim.step_decay(0.1, 0.5, 4)(s) for s in steps])),
    "cosine_decay": enc(mx.stack([optim.cosine_decay(0.1, 10, 0.01)(s) for s in steps])),
    "linear_schedule": enc(mx.stack([optim.linear_schedule(0.0, 0.1, 8)(s) for s in steps])),
    "join_schedules": enc(mx.stack([optim.join_schedules([optim.linear_schedule(0.0, 0.1, 5),
                                                          optim.cosine_decay(0.1, 10)], [5])(s) for s in steps])),
}

# Initialisers draw from the global key sequence: same seed, same values.
init = {}
for name, fn in [("normal", nn.init.normal(0.5, 2.0)), ("uniform", nn.init.uniform(-0.3, 0.7)),
                 ("glorot_normal", nn.init.glorot_normal()), ("glorot_uniform", nn.init.glorot_uniform()),
                 ("he_normal", nn.init.he_normal()), ("he_uniform", nn.init.he_uniform()),
                 ("sparse", nn.init.sparse(0.5)), ("orthogonal", nn.init.orthogonal(1.5))]:
    mx.random.seed(7)
    init[name] = enc(fn(mx.zeros((6, 4))))
mx.random.seed(7)
init["he_uniform_fan_out_conv"] = enc(nn.init.he_uniform()(mx.zeros((8, 3, 3, 2)), mode="fan_out", gain=2.0))
init["constant"] = enc(nn.init.constant(0.25)(mx.zeros((2, 3))))
init["identity"] = enc(nn.init.identity()(mx.zeros((3, 3))))
mx.random.seed(11)
lin2 = nn.Linear(5, 3)
init["linear_seed11"] = {"weight": enc(lin2.weight), "bias": enc(lin2.bias)}
mx.random.seed(11)
init["embedding_seed11"] = enc(nn.Embedding(4, 3).weight)
out["init"] = init

with open(os.path.join(HERE, "nn.json"), "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote nn.json", os.path.getsize(os.path.join(HERE, "nn.json")), "bytes")
