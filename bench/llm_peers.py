"""LLM inference workloads of the peer side (imported by bench/peers.py).

Two families:

* ``llm_prefill_4l_d512_p128`` / ``llm_decode_4l_d512_g64``: a synthetic pre-LN
  GPT (4 layers, d_model 512, 8 heads, FFN 2048, vocab 1000, learned positions,
  untied head, GELU(tanh)) with a KV cache preallocated for 192 positions.
  Prefill runs a 128-token prompt into a fresh cache; decode takes 64 greedy
  steps from position 128 (the prompt is prefilled once at set-up), syncing on
  every token as a chat loop must.
* ``smollm2_{prompt,decode}_{f32,q4}``: SmolLM2-135M-Instruct, the real model
  of ``kiln generate``. Prompt = 128 tokens into a fresh cache; decode = 64
  greedy tokens after that prompt. torch (transformers) and MLX (mlx-lm) run
  the f32 weights (the GGUF dequantized to HF-layout safetensors by
  ``scripts/gguf_to_safetensors.py``); llama.cpp runs both the Q4_1 file and
  its F32 conversion through its own ``llama-bench``.

The classes below are mixins of the framework classes in peers.py.
"""
import json
import math
import os
import subprocess
import time

DEC = dict(layers=4, d_model=512, heads=8, ffn=2048, vocab=1000, prompt=128, gen=64, batch=1)
DEC_MAXLEN = DEC["prompt"] + DEC["gen"]
DEC_ARCH = ("pre-LN GPT, learned positions, untied head, GELU(tanh), KV cache preallocated "
            "(192), greedy argmax, sync every token")

SMOL = dict(prompt=128, gen=64, batch=1, model="SmolLM2-135M-Instruct", sampling="greedy")
# Same prompt ids on every side: the 128 ids after skipping the first 1000 special/byte tokens.
SMOL_PROMPT = [1000 + 7 * i for i in range(SMOL["prompt"])]
CACHE = os.path.expanduser(os.environ.get("KILN_CACHE", "~/.cache/kiln"))
SMOL_GGUF = os.path.join(CACHE, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMOL_GGUF_F32 = os.path.join(CACHE, "smollm2", "SmolLM2-135M-Instruct.F32.gguf")
SMOL_HF = os.path.join(CACHE, "smollm2-hf")
LLAMA_BENCH = os.path.join(CACHE, "llamacpp", "llama-bench")


def llm_workloads(Workload):
    """The Workload entries of this module (tokens/s, higher is better)."""
    dec = dict(DEC, dtype="float32", arch=DEC_ARCH)
    ws = [
        Workload("llm_prefill_4l_d512_p128", "tokens/s", dict(dec, phase="prefill"),
                 lambda s: DEC["prompt"] / s, warmup=3),
        Workload("llm_decode_4l_d512_g64", "tokens/s", dict(dec, phase="decode"),
                 lambda s: DEC["gen"] / s, warmup=2),
    ]
    for q in ("q4", "f32"):
        weights = ("GGUF Q4_1 (Q8_0 embeddings); f32 activations" if q == "q4"
                   else "the GGUF dequantized to f32")
        ws += [
            Workload(f"smollm2_prompt_{q}", "tokens/s", dict(SMOL, weights=weights, phase="prompt"),
                     lambda s: SMOL["prompt"] / s, warmup=2, budget_scale=2.0),
            Workload(f"smollm2_decode_{q}", "tokens/s", dict(SMOL, weights=weights, phase="decode"),
                     lambda s: SMOL["gen"] / s, warmup=2, budget_scale=2.0),
        ]
    return ws


def _need(path, what):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run bench/setup_llm.sh ({what})")


# ----------------------------------------------------------------------------
# torch
# ----------------------------------------------------------------------------

class TorchLlm:
    def _dec_model(self):
        torch = self.torch
        nn, F = torch.nn, torch.nn.functional
        d, h, ff = DEC["d_model"], DEC["heads"], DEC["ffn"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
                self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

            def forward(self, x, ck, cv, pos):
                b, t, _ = x.shape
                q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
                ck[:, :, pos:pos + t] = k
                cv[:, :, pos:pos + t] = v
                a = F.scaled_dot_product_attention(q, ck[:, :, :pos + t], cv[:, :, :pos + t],
                                                   is_causal=t > 1)
                x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
                return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

        class Gpt(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok, self.pos = nn.Embedding(DEC["vocab"], d), nn.Embedding(DEC_MAXLEN, d)
                self.blocks = nn.ModuleList([Block() for _ in range(DEC["layers"])])
                self.ln_f = nn.LayerNorm(d)
                self.head = nn.Linear(d, DEC["vocab"], bias=False)

            def forward(self, idx, cache, pos):
                x = self.tok(idx) + self.pos(torch.arange(pos, pos + idx.shape[1]))
                for blk, (ck, cv) in zip(self.blocks, cache):
                    x = blk(x, ck, cv, pos)
                return self.head(self.ln_f(x[:, -1]))

        model = Gpt().eval()
        hd = d // h
        cache = [(torch.zeros(DEC["batch"], h, DEC_MAXLEN, hd), torch.zeros(DEC["batch"], h, DEC_MAXLEN, hd))
                 for _ in range(DEC["layers"])]
        prompt = torch.randint(0, DEC["vocab"], (DEC["batch"], DEC["prompt"]))
        return model, cache, prompt

    impl_llm_prefill_4l_d512_p128 = "torch.nn GPT, F.scaled_dot_product_attention, inference_mode (eager)"

    def llm_prefill_4l_d512_p128(self, p):
        torch = self.torch
        model, cache, prompt = self._dec_model()

        def f():
            with torch.inference_mode():
                return int(model(prompt, cache, 0).argmax(-1)[0])
        return f

    impl_llm_decode_4l_d512_g64 = impl_llm_prefill_4l_d512_p128

    def llm_decode_4l_d512_g64(self, p):
        torch = self.torch
        model, cache, prompt = self._dec_model()
        with torch.inference_mode():
            first = model(prompt, cache, 0).argmax(-1, keepdim=True)

        def f():
            with torch.inference_mode():
                tok = first
                for i in range(DEC["gen"]):
                    tok = model(tok, cache, DEC["prompt"] + i).argmax(-1, keepdim=True)
                    int(tok[0, 0])      # sync, as a streaming loop must
            return tok
        return f

    def _smol(self):
        if getattr(self, "_smol_model", None) is None:
            _need(os.path.join(SMOL_HF, "config.json"), "the HF-layout f32 conversion")
            from transformers import LlamaForCausalLM
            self._smol_model = LlamaForCausalLM.from_pretrained(SMOL_HF, dtype=self.torch.float32).eval()
        return self._smol_model

    impl_smollm2_prompt_f32 = "transformers LlamaForCausalLM (eager attention), f32 safetensors"

    def smollm2_prompt_f32(self, p):
        torch, model = self.torch, self._smol()
        ids = torch.tensor([SMOL_PROMPT])

        def f():
            with torch.inference_mode():
                return int(model(ids, use_cache=True, logits_to_keep=1).logits[0, -1].argmax())
        return f

    impl_smollm2_decode_f32 = impl_smollm2_prompt_f32

    def smollm2_decode_f32(self, p):
        torch, model = self.torch, self._smol()
        ids = torch.tensor([SMOL_PROMPT])

        def f():
            # The prompt is re-run (untimed work is not separable with
            # transformers' cache objects), then subtracted below.
            with torch.inference_mode():
                out = model(ids, use_cache=True, logits_to_keep=1)
                kv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                t0 = time.perf_counter()
                for _ in range(SMOL["gen"]):
                    out = model(tok, past_key_values=kv, use_cache=True)
                    kv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    int(tok[0, 0])
                return time.perf_counter() - t0
        return Timed(f)


class Timed:
    """A thunk that returns its own timed seconds (the part after its set-up)."""

    def __init__(self, f):
        self.f = f

    def __call__(self):
        return self.f()


# ----------------------------------------------------------------------------
# MLX
# ----------------------------------------------------------------------------

class MlxLlm:
    def _dec_model(self):
        mx = self.mx
        d, h, ff, L = DEC["d_model"], DEC["heads"], DEC["ffn"], DEC["layers"]
        hd = d // h
        r = lambda *s: self.rand(*s) * 0.02
        w = dict(tok=r(DEC["vocab"], d), pos=r(DEC_MAXLEN, d), head=r(d, DEC["vocab"]),
                 blocks=[dict(qkv=r(d, 3 * d), bqkv=r(3 * d), proj=r(d, d), bproj=r(d),
                              fc1=r(d, ff), b1=r(ff), fc2=r(ff, d), b2=r(d)) for _ in range(L)])
        ln = lambda x: mx.fast.layer_norm(x, None, None, 1e-5)

        def gelu(x):
            return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))

        def fwd(idx, cache, pos):
            b, t = idx.shape
            x = w["tok"][idx] + w["pos"][pos:pos + t]
            for blk, kv in zip(w["blocks"], cache):
                qkv = (ln(x) @ blk["qkv"] + blk["bqkv"]).reshape(b, t, 3, h, hd).transpose(2, 0, 3, 1, 4)
                kv[0][:, :, pos:pos + t] = qkv[1]
                kv[1][:, :, pos:pos + t] = qkv[2]
                a = mx.fast.scaled_dot_product_attention(
                    qkv[0], kv[0][:, :, :pos + t], kv[1][:, :, :pos + t], scale=hd ** -0.5,
                    mask="causal" if t > 1 else None)
                x = x + a.transpose(0, 2, 1, 3).reshape(b, t, d) @ blk["proj"] + blk["bproj"]
                x = x + gelu(ln(x) @ blk["fc1"] + blk["b1"]) @ blk["fc2"] + blk["b2"]
            return ln(x[:, -1]) @ w["head"]

        def fresh():
            return [[mx.zeros((DEC["batch"], h, DEC_MAXLEN, hd)) for _ in range(2)] for _ in range(L)]
        prompt = mx.random.randint(0, DEC["vocab"], (DEC["batch"], DEC["prompt"]))
        return fwd, fresh, prompt

    impl_llm_prefill_4l_d512_p128 = "mx ops, mx.fast.layer_norm / scaled_dot_product_attention"

    def llm_prefill_4l_d512_p128(self, p):
        mx = self.mx
        fwd, fresh, prompt = self._dec_model()
        cache = fresh()

        def f():
            y = mx.argmax(fwd(prompt, cache, 0), axis=-1)
            mx.eval(y, cache)
            return y
        return f

    impl_llm_decode_4l_d512_g64 = impl_llm_prefill_4l_d512_p128

    def llm_decode_4l_d512_g64(self, p):
        mx = self.mx
        fwd, fresh, prompt = self._dec_model()
        cache = fresh()
        first = mx.argmax(fwd(prompt, cache, 0), axis=-1, keepdims=True)
        mx.eval(first, cache)

        def f():
            tok = first
            for i in range(DEC["gen"]):
                tok = mx.argmax(fwd(tok, cache, DEC["prompt"] + i), axis=-1, keepdims=True)
                mx.eval(tok)
                tok.item()
            return tok
        return f

    def _smol(self):
        if getattr(self, "_smol_model", None) is None:
            _need(os.path.join(SMOL_HF, "config.json"), "the HF-layout f32 conversion")
            from pathlib import Path
            from mlx_lm.utils import load_model
            model, _ = load_model(Path(SMOL_HF))
            self._smol_model = model
        return self._smol_model

    impl_smollm2_prompt_f32 = "mlx-lm llama model, f32 safetensors, mlx_lm KVCache"

    def smollm2_prompt_f32(self, p):
        mx = self.mx
        from mlx_lm.models.cache import make_prompt_cache
        model = self._smol()
        ids = mx.array([SMOL_PROMPT])

        def f():
            y = mx.argmax(model(ids, cache=make_prompt_cache(model))[0, -1])
            mx.eval(y)
            return y
        return f

    impl_smollm2_decode_f32 = impl_smollm2_prompt_f32

    def smollm2_decode_f32(self, p):
        mx = self.mx
        from mlx_lm.models.cache import make_prompt_cache
        model = self._smol()
        ids = mx.array([SMOL_PROMPT])

        def f():
            cache = make_prompt_cache(model)
            tok = mx.argmax(model(ids, cache=cache)[:, -1:], axis=-1)
            mx.eval(tok)
            t0 = time.perf_counter()
            for _ in range(SMOL["gen"]):
                tok = mx.argmax(model(tok, cache=cache)[:, -1:], axis=-1)
                mx.eval(tok)
                tok.item()
            return time.perf_counter() - t0
        return Timed(f)


# ----------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------

class JaxLlm:
    def _dec_model(self):
        jax, jnp = self.jax, self.jnp
        d, h, ff, L = DEC["d_model"], DEC["heads"], DEC["ffn"], DEC["layers"]
        hd = d // h
        r = lambda *s: self.rand(*s) * 0.02
        w = dict(tok=r(DEC["vocab"], d), pos=r(DEC_MAXLEN, d), head=r(d, DEC["vocab"]),
                 blocks=[dict(qkv=r(d, 3 * d), bqkv=r(3 * d), proj=r(d, d), bproj=r(d),
                              fc1=r(d, ff), b1=r(ff), fc2=r(ff, d), b2=r(d)) for _ in range(L)])

        def ln(x):
            m = x.mean(-1, keepdims=True)
            v = ((x - m) ** 2).mean(-1, keepdims=True)
            return (x - m) * jax.lax.rsqrt(v + 1e-5)

        def fwd(w, idx, ck, cv, pos):
            # Fixed shapes: the whole 192-slot cache is attended, later slots masked.
            b, t = idx.shape
            x = w["tok"][idx] + jax.lax.dynamic_slice_in_dim(w["pos"], pos, t)
            qpos = pos + jnp.arange(t)
            mask = jnp.arange(DEC_MAXLEN)[None, :] <= qpos[:, None]
            nk, nv = [], []
            for i, blk in enumerate(w["blocks"]):
                qkv = (ln(x) @ blk["qkv"] + blk["bqkv"]).reshape(b, t, 3, h, hd)
                k = jax.lax.dynamic_update_slice_in_dim(ck[i], qkv[:, :, 1], pos, axis=1)
                v = jax.lax.dynamic_update_slice_in_dim(cv[i], qkv[:, :, 2], pos, axis=1)
                nk.append(k)
                nv.append(v)
                a = jax.nn.dot_product_attention(qkv[:, :, 0], k, v, mask=mask[None, None])
                x = x + a.reshape(b, t, d) @ blk["proj"] + blk["bproj"]
                x = x + jax.nn.gelu(ln(x) @ blk["fc1"] + blk["b1"], approximate=True) @ blk["fc2"] + blk["b2"]
            logits = ln(x[:, -1]) @ w["head"]
            return jnp.argmax(logits, -1, keepdims=True).astype(jnp.int32), jnp.stack(nk), jnp.stack(nv)

        step = jax.jit(fwd)
        zeros = jnp.zeros((L, DEC["batch"], DEC_MAXLEN, h, hd), jnp.float32)
        self.key, k = jax.random.split(self.key)
        prompt = jax.random.randint(k, (DEC["batch"], DEC["prompt"]), 0, DEC["vocab"], dtype=jnp.int32)
        return w, step, zeros, prompt

    impl_llm_prefill_4l_d512_p128 = "jax.jit forward, fixed-shape masked cache, jax.nn.dot_product_attention"

    def llm_prefill_4l_d512_p128(self, p):
        w, step, zeros, prompt = self._dec_model()
        return lambda: step(w, prompt, zeros, zeros, 0)[0].block_until_ready()

    impl_llm_decode_4l_d512_g64 = impl_llm_prefill_4l_d512_p128

    def llm_decode_4l_d512_g64(self, p):
        w, step, zeros, prompt = self._dec_model()
        first, ck, cv = step(w, prompt, zeros, zeros, 0)

        def f():
            tok, k, v = first, ck, cv
            for i in range(DEC["gen"]):
                tok, k, v = step(w, tok, k, v, DEC["prompt"] + i)
                int(tok[0, 0])
            return tok
        return f


# ----------------------------------------------------------------------------
# llama.cpp (its own llama-bench binary; built by bench/setup_llm.sh)
# ----------------------------------------------------------------------------

class LlamaCppPeer:
    """llama.cpp's ``llama-bench``: pp128 and tg64 at 2 threads, 5 repetitions.
    It times itself, so each method returns a ``Measured`` result."""

    def __init__(self, args):
        _need(LLAMA_BENCH, "llama.cpp build")
        self.threads = args.threads
        self.repeats = max(3, min(args.repeats, 5))
        v = subprocess.run([LLAMA_BENCH, "--version"], capture_output=True, text=True)
        self.version = ((v.stdout + v.stderr).strip().splitlines() or ["llama.cpp"])[0]
        self._runs = {}

    def _run(self, path):
        if path not in self._runs:
            _need(path, "model file")
            out = subprocess.run([LLAMA_BENCH, "-m", path, "-p", str(SMOL["prompt"]), "-n", str(SMOL["gen"]),
                                  "-t", str(self.threads), "-r", str(self.repeats), "-o", "jsonl"],
                                 capture_output=True, text=True, check=True).stdout
            self._runs[path] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return self._runs[path]

    def _measure(self, path, phase):
        for rec in self._run(path):
            prompt, gen = rec.get("n_prompt", 0), rec.get("n_gen", 0)
            if (phase == "prompt") == (prompt > 0 and gen == 0):
                ns = rec["samples_ns"]
                return Measured(sorted(ns)[len(ns) // 2] / 1e9, min(ns) / 1e9, len(ns))
        raise RuntimeError(f"llama-bench printed no {phase} record")

    impl_smollm2_prompt_q4 = "llama-bench (pp128/tg64), Q4_1 GGUF as shipped; 8-bit activations"
    impl_smollm2_decode_q4 = impl_smollm2_prompt_q4
    impl_smollm2_prompt_f32 = "llama-bench (pp128/tg64), the GGUF converted to F32 by llama-quantize"
    impl_smollm2_decode_f32 = impl_smollm2_prompt_f32

    def smollm2_prompt_q4(self, p):
        return self._measure(SMOL_GGUF, "prompt")

    def smollm2_decode_q4(self, p):
        return self._measure(SMOL_GGUF, "decode")

    def smollm2_prompt_f32(self, p):
        return self._measure(SMOL_GGUF_F32, "prompt")

    def smollm2_decode_f32(self, p):
        return self._measure(SMOL_GGUF_F32, "decode")


class Measured:
    """A result a peer timed itself: median and min seconds of one call, repeats."""

    def __init__(self, median_s, min_s, n):
        self.median_s, self.min_s, self.n = median_s, min_s, n
