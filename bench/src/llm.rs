//! LLM inference workloads (Kiln side of `bench/llm_peers.py`).
//!
//! `llm_prefill_4l_d512_p128` / `llm_decode_4l_d512_g64`: a synthetic pre-LN
//! GPT (4 layers, d_model 512, 8 heads, FFN 2048, vocab 1000, learned
//! positions, untied head, GELU(tanh)) with a KV cache preallocated for 192
//! positions. Prefill runs the 128-token prompt into a fresh cache; decode
//! takes 64 greedy steps from position 128 (the prompt is prefilled once at
//! set-up) and reads every token back to the host, as a streaming loop must.
//!
//! `smollm2_{prompt,decode}_{q4,f32}`: SmolLM2-135M-Instruct through
//! `kiln_models::llama` (what `kiln generate` runs), from the GGUF with its
//! Q4_1/Q8_0 weights kept packed (`q4`) or dequantized (`f32`). Prompt = 128
//! tokens into a fresh cache up to the first greedy token; decode = the next
//! 64 greedy tokens (timed by the generation loop itself).

use super::{obj, Json, Rng, Thunk, Workload, OWN_SECONDS, R};
use kiln::ops::{self, fast};
use kiln::Array;

const LAYERS: usize = 4;
const D: usize = 512;
const HEADS: usize = 8;
const FFN: usize = 2048;
const VOCAB: usize = 1000;
const PROMPT: usize = 128;
const GEN: usize = 64;
const MAXLEN: usize = PROMPT + GEN;
const ARCH: &str =
    "pre-LN GPT, learned positions, untied head, GELU(tanh), KV cache preallocated (192), greedy argmax, sync every token";

fn dec_params(phase: &str) -> Json {
    obj(vec![
        ("layers", LAYERS.into()),
        ("d_model", D.into()),
        ("heads", HEADS.into()),
        ("ffn", FFN.into()),
        ("vocab", VOCAB.into()),
        ("prompt", PROMPT.into()),
        ("gen", GEN.into()),
        ("batch", 1usize.into()),
        ("dtype", "float32".into()),
        ("arch", ARCH.into()),
        ("phase", phase.into()),
    ])
}

/// The workloads of this module.
pub(crate) fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "llm_prefill_4l_d512_p128",
            metric: "tokens/s",
            params: dec_params("prefill"),
            desc: "kiln ops: fast::layer_norm, matmul, fast::scaled_dot_product_attention, slice_update KV cache",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| PROMPT as f64 / s,
            setup: setup_prefill,
        },
        Workload {
            name: "llm_decode_4l_d512_g64",
            metric: "tokens/s",
            params: dec_params("decode"),
            desc: "kiln ops, one eval and host read per token",
            warmup: 2,
            budget_scale: 1.0,
            value: |s| GEN as f64 / s,
            setup: setup_decode,
        },
        smol("smollm2_prompt_q4", "prompt", true),
        smol("smollm2_decode_q4", "decode", true),
        smol("smollm2_prompt_f32", "prompt", false),
        smol("smollm2_decode_f32", "decode", false),
    ]
}

/// A workload's set-up function.
type Setup = fn(&mut Rng) -> R<Thunk>;

const SMOL_PROMPT: usize = 128;
const SMOL_GEN: usize = 64;

fn smol(name: &'static str, phase: &'static str, q4: bool) -> Workload {
    let weights = if q4 { "GGUF Q4_1 (Q8_0 embeddings); f32 activations" } else { "the GGUF dequantized to f32" };
    let params = obj(vec![
        ("prompt", SMOL_PROMPT.into()),
        ("gen", SMOL_GEN.into()),
        ("batch", 1usize.into()),
        ("model", "SmolLM2-135M-Instruct".into()),
        ("sampling", "greedy".into()),
        ("weights", weights.into()),
        ("phase", phase.into()),
    ]);
    let (value, setup): (fn(f64) -> f64, Setup) = match (phase, q4) {
        ("prompt", true) => (|s| SMOL_PROMPT as f64 / s, |_| smol_thunk(true, false)),
        ("prompt", false) => (|s| SMOL_PROMPT as f64 / s, |_| smol_thunk(false, false)),
        (_, true) => (|s| SMOL_GEN as f64 / s, |_| smol_thunk(true, true)),
        (_, false) => (|s| SMOL_GEN as f64 / s, |_| smol_thunk(false, true)),
    };
    Workload {
        name,
        metric: "tokens/s",
        params,
        desc: if q4 {
            "kiln_models::llama::Llama::generate, weights packed (affine group 32), quantized_matmul"
        } else {
            "kiln_models::llama::Llama::generate, f32 weights"
        },
        warmup: 2,
        budget_scale: 2.0,
        value,
        setup,
    }
}

/// The same prompt ids as bench/llm_peers.py's `SMOL_PROMPT`.
fn smol_prompt() -> Vec<u32> {
    (0..SMOL_PROMPT as u32).map(|i| 1000 + 7 * i).collect()
}

fn smol_thunk(q4: bool, decode: bool) -> R<Thunk> {
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("KILN_CACHE").unwrap_or_else(|_| format!("{home}/.cache/kiln"));
    let path = std::path::PathBuf::from(cache).join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        return Err(format!("{} is missing: run bench/setup_llm.sh", path.display()).into());
    }
    let (model, _) = kiln_models::llama::load(&path, !q4)?;
    let greedy = kiln_models::llama::Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };
    let prompt = smol_prompt();
    Ok(Box::new(move || {
        let n = if decode { SMOL_GEN + 1 } else { 1 };
        let stats = model.generate(&prompt, n, &greedy, None, |_| Ok(true))?;
        if stats.generated_tokens != n {
            return Err(format!("generated {} tokens, expected {n}", stats.generated_tokens).into());
        }
        let own = if decode { stats.generation_seconds } else { stats.prompt_seconds };
        OWN_SECONDS.with(|c| c.set(Some(own)));
        Ok(())
    }))
}

struct Block {
    ln1: (Array, Array),
    qkv: (Array, Array),
    proj: (Array, Array),
    ln2: (Array, Array),
    fc1: (Array, Array),
    fc2: (Array, Array),
}

struct Gpt {
    tok: Array,
    pos: Array,
    blocks: Vec<Block>,
    ln_f: (Array, Array),
    head: Array,
}

/// Per layer: keys and values, `(1, HEADS, MAXLEN, D / HEADS)`.
type Cache = Vec<(Array, Array)>;

impl Gpt {
    fn new(rng: &mut Rng) -> R<Gpt> {
        let mut w =
            |shape: &[usize]| -> R<Array> { Ok(ops::multiply(&rng.normal_array(shape)?, &Array::scalar(0.02f32))?) };
        let ones = |n| ops::ones(&[n], kiln::Dtype::F32);
        let zeros = |n| ops::zeros(&[n], kiln::Dtype::F32);
        let mut blocks = Vec::new();
        for _ in 0..LAYERS {
            blocks.push(Block {
                ln1: (ones(D)?, zeros(D)?),
                qkv: (w(&[D, 3 * D])?, w(&[3 * D])?),
                proj: (w(&[D, D])?, w(&[D])?),
                ln2: (ones(D)?, zeros(D)?),
                fc1: (w(&[D, FFN])?, w(&[FFN])?),
                fc2: (w(&[FFN, D])?, w(&[D])?),
            });
        }
        let m = Gpt {
            tok: w(&[VOCAB, D])?,
            pos: w(&[MAXLEN, D])?,
            blocks,
            ln_f: (ones(D)?, zeros(D)?),
            head: w(&[D, VOCAB])?,
        };
        let mut all = vec![&m.tok, &m.pos, &m.head];
        for b in &m.blocks {
            for (a, c) in [&b.ln1, &b.qkv, &b.proj, &b.ln2, &b.fc1, &b.fc2] {
                all.extend([a, c]);
            }
        }
        kiln::eval(&all)?;
        Ok(m)
    }

    fn fresh_cache() -> R<Cache> {
        let shape = [1, HEADS, MAXLEN, D / HEADS];
        (0..LAYERS)
            .map(|_| Ok((ops::zeros(&shape, kiln::Dtype::F32)?, ops::zeros(&shape, kiln::Dtype::F32)?)))
            .collect()
    }

    /// Runs `tokens` (1, t) at positions `pos..pos + t`, writing their keys and
    /// values into `cache`; returns the greedy next token, (1, 1) int32.
    fn step(&self, tokens: &Array, cache: &mut Cache, pos: usize) -> R<Array> {
        let t = tokens.shape()[1];
        let hd = D / HEADS;
        let lin = |x: &Array, (w, b): &(Array, Array)| -> kiln::Result<Array> { ops::add(&ops::matmul(x, w)?, b) };
        let heads = |x: &Array| -> kiln::Result<Array> {
            ops::transpose_axes(&ops::reshape(x, &[1, t as i64, HEADS as i64, hd as i64])?, &[0, 2, 1, 3])
        };
        let positions = ops::slice(&self.pos, &[pos as i64, 0], &[(pos + t) as i64, D as i64], &[1, 1])?;
        let mut x = ops::add(&ops::take(&self.tok, tokens, Some(0))?, &positions)?;
        for (b, (ck, cv)) in self.blocks.iter().zip(cache.iter_mut()) {
            let h = fast::layer_norm(&x, Some(&b.ln1.0), Some(&b.ln1.1), 1e-5)?;
            let qkv = lin(&h, &b.qkv)?;
            let part =
                |i: usize| ops::slice(&qkv, &[0, 0, (i * D) as i64], &[1, t as i64, ((i + 1) * D) as i64], &[1, 1, 1]);
            let (q, k, v) = (heads(&part(0)?)?, heads(&part(1)?)?, heads(&part(2)?)?);
            let (lo, hi) = (pos as i64, (pos + t) as i64);
            let upd = |c: &Array, new: &Array| {
                ops::slice_update(c, new, &[0, 0, lo, 0], &[1, HEADS as i64, hi, hd as i64], &[1, 1, 1, 1])
            };
            *ck = upd(ck, &k)?;
            *cv = upd(cv, &v)?;
            let visible = |c: &Array| ops::slice(c, &[0, 0, 0, 0], &[1, HEADS as i64, hi, hd as i64], &[1, 1, 1, 1]);
            let mask = if t > 1 { fast::AttentionMask::Causal } else { fast::AttentionMask::None };
            let a = fast::scaled_dot_product_attention(&q, &visible(ck)?, &visible(cv)?, (hd as f32).powf(-0.5), mask)?;
            let a = ops::reshape(&ops::transpose_axes(&a, &[0, 2, 1, 3])?, &[1, t as i64, D as i64])?;
            x = ops::add(&x, &lin(&a, &b.proj)?)?;
            let h = fast::layer_norm(&x, Some(&b.ln2.0), Some(&b.ln2.1), 1e-5)?;
            x = ops::add(&x, &lin(&kiln_nn::gelu_approx(&lin(&h, &b.fc1)?)?, &b.fc2)?)?;
        }
        let last = ops::slice(&x, &[0, (t - 1) as i64, 0], &[1, t as i64, D as i64], &[1, 1, 1])?;
        let logits = ops::matmul(&fast::layer_norm(&last, Some(&self.ln_f.0), Some(&self.ln_f.1), 1e-5)?, &self.head)?;
        Ok(ops::astype(&ops::argmax(&logits, Some(-1), false)?, kiln::Dtype::I32)?)
    }
}

fn prompt(rng: &mut Rng) -> R<Array> {
    let v: Vec<i32> = (0..PROMPT).map(|_| (rng.next_u64() % VOCAB as u64) as i32).collect();
    Ok(Array::from_slice(&v, &[1, PROMPT])?)
}

fn setup_prefill(rng: &mut Rng) -> R<Thunk> {
    let (m, p) = (Gpt::new(rng)?, prompt(rng)?);
    Ok(Box::new(move || {
        let mut cache = Gpt::fresh_cache()?;
        let tok = m.step(&p, &mut cache, 0)?;
        let mut live: Vec<&Array> = vec![&tok];
        live.extend(cache.iter().flat_map(|(k, v)| [k, v]));
        kiln::eval(&live)?;
        Ok(())
    }))
}

fn setup_decode(rng: &mut Rng) -> R<Thunk> {
    let (m, p) = (Gpt::new(rng)?, prompt(rng)?);
    let mut prefilled = Gpt::fresh_cache()?;
    let first = m.step(&p, &mut prefilled, 0)?;
    let mut live: Vec<&Array> = vec![&first];
    live.extend(prefilled.iter().flat_map(|(k, v)| [k, v]));
    kiln::eval(&live)?;
    Ok(Box::new(move || {
        let mut cache = prefilled.clone();
        let mut tok = first.clone();
        for i in 0..GEN {
            tok = m.step(&tok, &mut cache, PROMPT + i)?;
            let id = tok.to_vec::<i32>()?[0];
            tok = Array::from_slice(&[id], &[1, 1])?;
        }
        Ok(())
    }))
}
