//! LLaMA-family decoder-only language models (LLaMA 2/3, SmolLM2, TinyLlama,
//! …): token embedding, pre-norm blocks of grouped-query self-attention with
//! rotary position embeddings and a SwiGLU MLP, RMS norms, and an output head
//! (tied to the embedding when the checkpoint has none).
//!
//! Loads from a GGUF file ([`Llama::from_gguf`]; `general.architecture =
//! llama`, weights dequantized to float32 or kept block-quantized) or from a
//! Hugging Face directory with `config.json` and `*.safetensors`
//! ([`Llama::from_hf_dir`]). Every projection goes through [`linear`], so
//! dense and quantized [`Weight`]s are interchangeable.
//!
//! Generation keeps a key/value cache per layer ([`KvCache`], pre-allocated
//! and grown in steps, or [`RotatingKvCache`] for a sliding window); a prompt
//! runs as one batched forward with a causal mask, then one token per step.

use kiln_core::io::{GgmlType, GgufFile, GgufTensor, GgufValue};
use kiln_core::ops::fast::{self, AttentionMask};
use kiln_core::ops::QuantSpec;
use kiln_core::{ops, Array, Dtype, Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

const OP: &str = "Llama";

/// Model hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Number of tokens.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Hidden width of the MLP.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Rotated features per head (usually `head_dim`).
    pub rope_dims: usize,
    /// `true`: RoPE rotates adjacent pairs (GGUF weights as stored by
    /// llama.cpp); `false`: it rotates the two halves (Hugging Face layout).
    pub rope_traditional: bool,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// Whether the output head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_token_id: Option<u32>,
}

fn meta_uint(meta: &BTreeMap<String, GgufValue>, k: &str) -> Option<usize> {
    match meta.get(k)? {
        GgufValue::U8(v) => Some(*v as usize),
        GgufValue::U16(v) => Some(*v as usize),
        GgufValue::U32(v) => Some(*v as usize),
        GgufValue::U64(v) => usize::try_from(*v).ok(),
        GgufValue::I32(v) => usize::try_from(*v).ok(),
        GgufValue::I64(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

fn meta_float(meta: &BTreeMap<String, GgufValue>, k: &str) -> Option<f32> {
    match meta.get(k)? {
        GgufValue::F32(v) => Some(*v),
        GgufValue::F64(v) => Some(*v as f32),
        _ => None,
    }
}

impl LlamaConfig {
    /// From GGUF metadata (`general.architecture` must be `llama`). GGUF
    /// weights keep llama.cpp's Q/K row order, so `rope_traditional` is true.
    pub fn from_gguf_metadata(meta: &BTreeMap<String, GgufValue>) -> Result<LlamaConfig> {
        match meta.get("general.architecture") {
            Some(GgufValue::String(a)) if a == "llama" => {}
            Some(GgufValue::String(a)) => {
                return Err(Error::invalid(
                    OP,
                    format!("Unsupported architecture '{a}' (general.architecture); only 'llama' is implemented."),
                ))
            }
            _ => return Err(Error::invalid(OP, "The GGUF has no general.architecture string.")),
        }
        let need = |k: &str| {
            meta_uint(meta, k).ok_or_else(|| Error::invalid(OP, format!("The GGUF lacks the integer metadata {k}.")))
        };
        let hidden = need("llama.embedding_length")?;
        let heads = need("llama.attention.head_count")?;
        let kv = meta_uint(meta, "llama.attention.head_count_kv").unwrap_or(heads);
        let head_dim = hidden.checked_div(heads).unwrap_or(0);
        let vocab = match meta_uint(meta, "llama.vocab_size") {
            Some(v) => v,
            None => match meta.get("tokenizer.ggml.tokens") {
                Some(GgufValue::Array(t)) => t.len(),
                _ => return Err(Error::invalid(OP, "The GGUF gives no vocabulary size.")),
            },
        };
        let c = LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: need("llama.feed_forward_length")?,
            num_layers: need("llama.block_count")?,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            rms_norm_eps: meta_float(meta, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: meta_float(meta, "llama.rope.freq_base").unwrap_or(10000.0),
            rope_dims: meta_uint(meta, "llama.rope.dimension_count").unwrap_or(head_dim),
            rope_traditional: true,
            max_position_embeddings: meta_uint(meta, "llama.context_length").unwrap_or(2048),
            tie_word_embeddings: true,
            bos_token_id: meta_uint(meta, "tokenizer.ggml.bos_token_id").map(|v| v as u32),
            eos_token_id: meta_uint(meta, "tokenizer.ggml.eos_token_id").map(|v| v as u32),
        };
        c.validate()?;
        Ok(c)
    }

    /// From a Hugging Face `config.json` (`model_type` llama or mistral-like);
    /// HF weights use `rotate_half` RoPE, so `rope_traditional` is false.
    pub fn from_hf_json(text: &str) -> Result<LlamaConfig> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(OP, format!("config.json: {e}")))?;
        if let Some(t) = v["model_type"].as_str() {
            if !matches!(t, "llama" | "mistral") {
                return Err(Error::invalid(OP, format!("Unsupported model_type '{t}' in config.json.")));
            }
        }
        let need = |k: &str| {
            v[k].as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| Error::invalid(OP, format!("config.json lacks the integer {k}.")))
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let head_dim = v["head_dim"].as_u64().map(|x| x as usize).unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let eos = match &v["eos_token_id"] {
            serde_json::Value::Array(a) => a.first().and_then(|x| x.as_u64()),
            x => x.as_u64(),
        };
        let c = LlamaConfig {
            vocab_size: need("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: need("intermediate_size")?,
            num_layers: need("num_hidden_layers")?,
            num_heads: heads,
            num_kv_heads: v["num_key_value_heads"].as_u64().map(|x| x as usize).unwrap_or(heads),
            head_dim,
            rms_norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10000.0) as f32,
            rope_dims: head_dim,
            rope_traditional: false,
            max_position_embeddings: v["max_position_embeddings"].as_u64().unwrap_or(2048) as usize,
            tie_word_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            bos_token_id: v["bos_token_id"].as_u64().map(|x| x as u32),
            eos_token_id: eos.map(|x| x as u32),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.max_position_embeddings,
        ];
        if sizes.contains(&0) {
            return Err(Error::invalid(OP, format!("Every size must be positive: {self:?}.")));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::invalid(
                OP,
                format!("num_heads ({}) must be a multiple of num_kv_heads ({}).", self.num_heads, self.num_kv_heads),
            ));
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return Err(Error::invalid(
                OP,
                format!("rope_dims ({}) must be even and at most head_dim ({}).", self.rope_dims, self.head_dim),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Weights

/// A projection matrix `(out, in)`: dense, or affine-quantized along `in`.
#[derive(Clone, Debug)]
pub enum Weight {
    /// A dense `(out, in)` matrix.
    Dense(Array),
    /// A dense matrix held as its transpose `(in, out)` (an evaluated view of
    /// an `(out, in)` matrix), so `x · wᵀ` is a single matmul node.
    Transposed(Array),
    /// Affine-quantized rows (MLX packing): `uint32` codes `(out, in·bits/32)`,
    /// scales and biases `(out, in/group_size)`.
    Quantized {
        /// Packed codes.
        w: Array,
        /// Per-group scales.
        scales: Array,
        /// Per-group biases.
        biases: Array,
        /// Quantization parameters.
        spec: QuantSpec,
    },
}

impl Weight {
    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Weight::Dense(w) => (w.shape()[0], w.shape()[1]),
            Weight::Transposed(t) => (t.shape()[1], t.shape()[0]),
            Weight::Quantized { w, spec, .. } => (w.shape()[0], spec.unpacked_len(w.shape()[1])),
        }
    }

    /// Rows `ids` (any shape) as float32 vectors: an embedding lookup.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        match self {
            Weight::Dense(w) => ops::take(w, ids, Some(0)),
            Weight::Transposed(_) => ops::take(&self.dense_array()?, ids, Some(0)),
            // Scales may be stored in f16; the rows come out in f32 either way.
            Weight::Quantized { w, scales, biases, spec } => ops::dequantize(
                &ops::take(w, ids, Some(0))?,
                &ops::astype(&ops::take(scales, ids, Some(0))?, Dtype::F32)?,
                Some(&ops::astype(&ops::take(biases, ids, Some(0))?, Dtype::F32)?),
                *spec,
            ),
        }
    }

    /// The weights stacked along `out` (e.g. Q, K and V into one projection).
    pub fn concat(parts: &[Weight]) -> Result<Weight> {
        if let Some(Weight::Quantized { spec, .. }) = parts.first() {
            let mut ws = Vec::new();
            let mut ss = Vec::new();
            let mut bs = Vec::new();
            let mut all = true;
            for p in parts {
                match p {
                    Weight::Quantized { w, scales, biases, spec: s2 } if s2 == spec => {
                        ws.push(w.clone());
                        ss.push(scales.clone());
                        bs.push(biases.clone());
                    }
                    _ => all = false,
                }
            }
            if all {
                return Ok(Weight::Quantized {
                    w: ops::concatenate(&ws, Some(0))?,
                    scales: ops::concatenate(&ss, Some(0))?,
                    biases: ops::concatenate(&bs, Some(0))?,
                    spec: *spec,
                });
            }
        }
        let dense: Vec<Array> = parts.iter().map(Weight::dense_array).collect::<Result<_>>()?;
        Ok(Weight::Dense(ops::concatenate(&dense, Some(0))?))
    }

    /// The matrix as a dense `(out, in)` array (dequantized if needed).
    pub fn dense_array(&self) -> Result<Array> {
        match self {
            Weight::Dense(w) => Ok(w.clone()),
            Weight::Transposed(t) => ops::transpose(t),
            Weight::Quantized { w, scales, biases, spec } => {
                ops::dequantize(w, &ops::astype(scales, Dtype::F32)?, Some(&ops::astype(biases, Dtype::F32)?), *spec)
            }
        }
    }

    /// The form [`linear`] runs fastest: a dense matrix becomes
    /// [`Weight::Transposed`] (evaluated, no copy); others are unchanged.
    pub fn prepared(&self) -> Result<Weight> {
        match self {
            Weight::Dense(w) => {
                w.eval()?;
                let t = ops::transpose(w)?;
                t.eval()?;
                Ok(Weight::Transposed(t))
            }
            other => Ok(other.clone()),
        }
    }

    /// Every array it holds.
    pub fn arrays(&self) -> Vec<Array> {
        match self {
            Weight::Dense(w) => vec![w.clone()],
            Weight::Transposed(t) => vec![t.clone()],
            Weight::Quantized { w, scales, biases, .. } => vec![w.clone(), scales.clone(), biases.clone()],
        }
    }

    /// Bytes of weight data.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.size() * a.dtype().size()).sum()
    }
}

/// `x · wᵀ` for `x (..., in)`: the one function every projection goes through.
pub fn linear(x: &Array, w: &Weight) -> Result<Array> {
    match w {
        Weight::Dense(w) => ops::matmul(x, &ops::transpose(w)?),
        Weight::Transposed(t) => ops::matmul(x, t),
        Weight::Quantized { w, scales, biases, spec } => ops::quantized_matmul(x, w, scales, Some(biases), true, *spec),
    }
}

// ---------------------------------------------------------------------------
// Key/value caches

/// Which keys a batch of queries may see, as returned by a cache.
#[derive(Clone, Debug)]
pub enum CacheMask {
    /// All of them (a single query).
    None,
    /// Causal, aligned to the last key.
    Causal,
    /// An explicit boolean mask `(L_q, L_k)` (true = attend).
    Array(Array),
}

/// A per-layer key/value store for incremental decoding.
pub trait LayerCache: std::fmt::Debug {
    /// Appends `k`, `v` `(B, H_kv, L, D)` and returns the keys and values to
    /// attend to, with the mask the `L` new queries need.
    fn update(&mut self, k: &Array, v: &Array) -> Result<(Array, Array, CacheMask)>;
    /// Positions seen so far.
    fn offset(&self) -> usize;
    /// Bytes held.
    fn nbytes(&self) -> usize;
    /// Makes room for `n` more positions now, computing any regrown storage
    /// at once, so the old storage is dead when this returns (a generation
    /// loop then releases it before the next step allocates). Returns whether
    /// storage was regrown. The default does nothing.
    fn reserve(&mut self, n: usize) -> Result<bool> {
        let _ = n;
        Ok(false)
    }
}

/// A growing cache: storage for `step` more positions is allocated whenever
/// it fills up, and new keys are written into it with `slice_update`.
#[derive(Debug)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    step: usize,
}

impl KvCache {
    /// An empty cache growing `step` positions at a time.
    pub fn new(step: usize) -> KvCache {
        KvCache { keys: None, values: None, offset: 0, step: step.max(1) }
    }
}

impl Default for KvCache {
    fn default() -> Self {
        KvCache::new(256)
    }
}

fn grow(buf: Option<&Array>, new: &Array, used: usize, extra: usize) -> Result<Array> {
    let s = new.shape();
    let fresh = ops::zeros(&[s[0], s[1], extra, s[3]], new.dtype())?;
    match buf {
        None => Ok(fresh),
        Some(b) => {
            let b = if b.shape()[2] != used { slice_axis2(b, 0, used)? } else { b.clone() };
            ops::concatenate(&[b, fresh], Some(2))
        }
    }
}

fn slice_axis2(a: &Array, start: usize, stop: usize) -> Result<Array> {
    let s = a.shape();
    ops::slice(a, &[0, 0, start as i64, 0], &[s[0] as i64, s[1] as i64, stop as i64, s[3] as i64], &[1, 1, 1, 1])
}

fn write_axis2(buf: &Array, upd: &Array, start: usize) -> Result<Array> {
    let s = buf.shape();
    let n = upd.shape()[2];
    ops::slice_update(
        buf,
        upd,
        &[0, 0, start as i64, 0],
        &[s[0] as i64, s[1] as i64, (start + n) as i64, s[3] as i64],
        &[1, 1, 1, 1],
    )
}

impl KvCache {
    /// Regrows the storage (lazily) when `n` more positions of keys and
    /// values shaped like `k`, `v` do not fit; returns whether it did.
    fn make_room(&mut self, k: &Array, v: &Array, n: usize) -> Result<bool> {
        let cap = self.keys.as_ref().map_or(0, |a| a.shape()[2]);
        if self.offset + n <= cap {
            return Ok(false);
        }
        let extra = n.div_ceil(self.step) * self.step;
        self.keys = Some(grow(self.keys.as_ref(), k, self.offset, extra)?);
        self.values = Some(grow(self.values.as_ref(), v, self.offset, extra)?);
        Ok(true)
    }
}

impl LayerCache for KvCache {
    fn update(&mut self, k: &Array, v: &Array) -> Result<(Array, Array, CacheMask)> {
        let n = k.shape()[2];
        let prev = self.offset;
        self.make_room(k, v, n)?;
        // Take the buffers out so the slice_update nodes are their only owners
        // (the kernel then writes in place instead of copying the cache).
        let kb = write_axis2(&self.keys.take().unwrap(), k, prev)?;
        let vb = write_axis2(&self.values.take().unwrap(), v, prev)?;
        self.offset = prev + n;
        let ko = slice_axis2(&kb, 0, self.offset)?;
        let vo = slice_axis2(&vb, 0, self.offset)?;
        self.keys = Some(kb);
        self.values = Some(vb);
        Ok((ko, vo, if n > 1 { CacheMask::Causal } else { CacheMask::None }))
    }
    fn offset(&self) -> usize {
        self.offset
    }
    fn nbytes(&self) -> usize {
        [&self.keys, &self.values].iter().flat_map(|a| a.iter()).map(|a| a.size() * a.dtype().size()).sum()
    }
    fn reserve(&mut self, n: usize) -> Result<bool> {
        let (Some(k), Some(v)) = (self.keys.clone(), self.values.clone()) else { return Ok(false) };
        if !self.make_room(&k, &v, n)? {
            return Ok(false);
        }
        drop((k, v));
        kiln_core::eval(&[self.keys.as_ref().unwrap(), self.values.as_ref().unwrap()])?;
        Ok(true)
    }
}

/// A sliding-window cache holding the last `window` positions: position `p`
/// lives in slot `p % window`, so single-token steps overwrite the oldest
/// entry in place. Multi-token updates attend to the window before them and
/// get an explicit causal-and-window mask.
#[derive(Debug)]
pub struct RotatingKvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    window: usize,
    step: usize,
}

impl RotatingKvCache {
    /// An empty cache keeping the last `window` positions (storage grows
    /// `step` positions at a time up to `window`).
    pub fn new(window: usize, step: usize) -> RotatingKvCache {
        RotatingKvCache { keys: None, values: None, offset: 0, window: window.max(1), step: step.max(1) }
    }

    /// Cached entries in temporal order (oldest first).
    fn temporal(&self, buf: &Array) -> Result<Array> {
        let held = self.offset.min(self.window);
        if self.offset <= self.window {
            return slice_axis2(buf, 0, held);
        }
        let s = self.offset % self.window;
        if s == 0 {
            return Ok(buf.clone());
        }
        ops::concatenate(&[slice_axis2(buf, s, self.window)?, slice_axis2(buf, 0, s)?], Some(2))
    }
}

impl LayerCache for RotatingKvCache {
    fn update(&mut self, k: &Array, v: &Array) -> Result<(Array, Array, CacheMask)> {
        let n = k.shape()[2];
        let w = self.window;
        if n == 1 {
            let cap = self.keys.as_ref().map_or(0, |a| a.shape()[2]);
            if self.offset >= cap && cap < w {
                let extra = self.step.min(w - cap);
                self.keys = Some(grow(self.keys.as_ref(), k, cap, extra)?);
                self.values = Some(grow(self.values.as_ref(), v, cap, extra)?);
            }
            let slot = self.offset % w;
            let kb = write_axis2(&self.keys.take().unwrap(), k, slot)?;
            let vb = write_axis2(&self.values.take().unwrap(), v, slot)?;
            self.offset += 1;
            let held = self.offset.min(w);
            let (ko, vo) = (slice_axis2(&kb, 0, held)?, slice_axis2(&vb, 0, held)?);
            self.keys = Some(kb);
            self.values = Some(vb);
            // Every held position is inside the window of the new query.
            return Ok((ko, vo, CacheMask::None));
        }
        // Several queries: attend to the last w-1 cached positions plus the new ones.
        let past = self.offset.min(w - 1);
        let (ka, va) = match (&self.keys, &self.values) {
            (Some(kb), Some(vb)) if past > 0 => {
                let (kt, vt) = (self.temporal(kb)?, self.temporal(vb)?);
                let h = kt.shape()[2];
                let (kt, vt) = (slice_axis2(&kt, h - past, h)?, slice_axis2(&vt, h - past, h)?);
                (ops::concatenate(&[kt, k.clone()], Some(2))?, ops::concatenate(&[vt, v.clone()], Some(2))?)
            }
            _ => (k.clone(), v.clone()),
        };
        let total = past + n;
        // Query i sits at key index past + i; key j is visible iff j <= past + i and past + i - j < w.
        let qi = ops::reshape(&ops::arange_int(past as i64, total as i64, 1)?, &[n as i64, 1])?;
        let kj = ops::reshape(&ops::arange_int(0, total as i64, 1)?, &[1, total as i64])?;
        let d = ops::subtract(&qi, &kj)?;
        let mask = ops::logical_and(&ops::greater_equal(&d, 0)?, &ops::less(&d, w as i64)?)?;
        // Store the last min(w, total) positions so that position p is in slot p % w.
        let keep = total.min(w);
        let end = self.offset + n;
        let first = end - keep;
        let store = |a: &Array| -> Result<Array> {
            let t = slice_axis2(a, total - keep, total)?;
            let r = first % w;
            if keep == w && r != 0 {
                ops::concatenate(&[slice_axis2(&t, w - r, w)?, slice_axis2(&t, 0, w - r)?], Some(2))
            } else {
                Ok(t)
            }
        };
        let (ks, vs) = (store(&ka)?, store(&va)?);
        self.keys = Some(ks);
        self.values = Some(vs);
        self.offset = end;
        Ok((ka, va, CacheMask::Array(mask)))
    }
    fn offset(&self) -> usize {
        self.offset
    }
    fn nbytes(&self) -> usize {
        [&self.keys, &self.values].iter().flat_map(|a| a.iter()).map(|a| a.size() * a.dtype().size()).sum()
    }
}

// ---------------------------------------------------------------------------
// The model

/// One transformer block.
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    /// RMS norm weight before attention.
    pub attn_norm: Array,
    /// Q, K and V projections stacked: `((H + 2·H_kv)·D, hidden)`.
    pub qkv: Weight,
    /// Output projection.
    pub o: Weight,
    /// RMS norm weight before the MLP.
    pub ffn_norm: Array,
    /// Gate and up projections stacked: `(2·ffn, hidden)`.
    pub gate_up: Weight,
    /// Down projection.
    pub down: Weight,
}

/// A LLaMA-family language model.
#[derive(Clone, Debug)]
pub struct Llama {
    config: LlamaConfig,
    /// Token embedding `(vocab, hidden)`.
    pub embed: Weight,
    /// The blocks.
    pub layers: Vec<LlamaLayer>,
    /// Final RMS norm weight.
    pub norm: Array,
    /// Output head `(vocab, hidden)`; `None` when tied to the embedding.
    pub output: Option<Weight>,
    /// The head as [`linear`] uses it.
    head: Weight,
}

/// Raw per-layer weights by role, before stacking.
pub struct LayerWeights {
    /// `attn_norm`.
    pub attn_norm: Array,
    /// Q projection `(H·D, hidden)`.
    pub q: Weight,
    /// K projection `(H_kv·D, hidden)`.
    pub k: Weight,
    /// V projection `(H_kv·D, hidden)`.
    pub v: Weight,
    /// Output projection.
    pub o: Weight,
    /// `ffn_norm`.
    pub ffn_norm: Array,
    /// Gate projection.
    pub gate: Weight,
    /// Up projection.
    pub up: Weight,
    /// Down projection.
    pub down: Weight,
}

fn layer_arrays(l: &LlamaLayer) -> Vec<Array> {
    let mut v = vec![l.attn_norm.clone(), l.ffn_norm.clone()];
    for w in [&l.qkv, &l.o, &l.gate_up, &l.down] {
        v.extend(w.arrays());
    }
    v
}

fn check_shape(name: &str, got: (usize, usize), want: (usize, usize)) -> Result<()> {
    if got != want {
        return Err(Error::invalid(OP, format!("Weight {name} has shape {got:?}, expected {want:?}.")));
    }
    Ok(())
}

impl Llama {
    /// Assembles a model from its weights, checking every shape.
    pub fn from_parts(
        config: LlamaConfig,
        embed: Weight,
        layers: Vec<LayerWeights>,
        norm: Array,
        output: Option<Weight>,
    ) -> Result<Llama> {
        config.validate()?;
        let c = &config;
        let (h, d) = (c.hidden_size, c.head_dim);
        check_shape("embedding", embed.shape(), (c.vocab_size, h))?;
        if let Some(o) = &output {
            check_shape("output", o.shape(), (c.vocab_size, h))?;
        }
        if layers.len() != c.num_layers {
            return Err(Error::invalid(OP, format!("Expected {} layers, got {}.", c.num_layers, layers.len())));
        }
        let vec_check = |name: &str, a: &Array| {
            if a.shape() != [h] {
                return Err(Error::invalid(OP, format!("Norm {name} has shape {:?}, expected [{h}].", a.shape())));
            }
            ops::astype(a, Dtype::F32)
        };
        let norm = vec_check("norm", &norm)?;
        let mut out = Vec::new();
        for (i, l) in layers.into_iter().enumerate() {
            check_shape(&format!("layer {i} q"), l.q.shape(), (c.num_heads * d, h))?;
            check_shape(&format!("layer {i} k"), l.k.shape(), (c.num_kv_heads * d, h))?;
            check_shape(&format!("layer {i} v"), l.v.shape(), (c.num_kv_heads * d, h))?;
            check_shape(&format!("layer {i} o"), l.o.shape(), (h, c.num_heads * d))?;
            check_shape(&format!("layer {i} gate"), l.gate.shape(), (c.intermediate_size, h))?;
            check_shape(&format!("layer {i} up"), l.up.shape(), (c.intermediate_size, h))?;
            check_shape(&format!("layer {i} down"), l.down.shape(), (h, c.intermediate_size))?;
            let layer = LlamaLayer {
                attn_norm: vec_check("attn_norm", &l.attn_norm)?,
                qkv: Weight::concat(&[l.q, l.k, l.v])?.prepared()?,
                o: l.o.prepared()?,
                ffn_norm: vec_check("ffn_norm", &l.ffn_norm)?,
                gate_up: Weight::concat(&[l.gate, l.up])?.prepared()?,
                down: l.down.prepared()?,
            };
            // Evaluate layer by layer so the unstacked parts are freed as we go
            // (peak memory stays near the model's size).
            let arrays = layer_arrays(&layer);
            kiln_core::eval(&arrays.iter().collect::<Vec<_>>())?;
            out.push(layer);
            // The unstacked parts just freed sit in the allocator's cache in
            // sizes no later op asks for: give them back to the system now,
            // or the resident peak would hold them all by the last layer.
            kiln_core::memory::clear_cache();
        }
        let head = output.as_ref().unwrap_or(&embed).prepared()?;
        let m = Llama { config, embed, layers: out, norm, output, head };
        let all = m.arrays();
        kiln_core::eval(&all.iter().collect::<Vec<_>>())?;
        kiln_core::memory::clear_cache();
        Ok(m)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Every weight array.
    pub fn arrays(&self) -> Vec<Array> {
        let mut v = self.embed.arrays();
        for l in &self.layers {
            v.extend(layer_arrays(l));
        }
        v.push(self.norm.clone());
        if let Some(o) = &self.output {
            v.extend(o.arrays());
        }
        v
    }

    /// Bytes of weights.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.size() * a.dtype().size()).sum()
    }

    /// One growing cache per layer, 128 positions per step: half MLX's 256,
    /// so a generation holds at most 127 unused positions per layer (the
    /// resident peak of a small model is largely its cache), for twice as
    /// many (cheap) regrowths.
    pub fn new_cache(&self) -> Vec<Box<dyn LayerCache>> {
        (0..self.config.num_layers).map(|_| Box::new(KvCache::new(128)) as Box<dyn LayerCache>).collect()
    }

    /// One sliding-window cache per layer.
    pub fn new_rotating_cache(&self, window: usize) -> Vec<Box<dyn LayerCache>> {
        (0..self.config.num_layers)
            .map(|_| Box::new(RotatingKvCache::new(window, 256)) as Box<dyn LayerCache>)
            .collect()
    }

    fn attention(&self, l: &LlamaLayer, x: &Array, cache: Option<&mut Box<dyn LayerCache>>) -> Result<Array> {
        let c = &self.config;
        let (b, n) = (x.shape()[0], x.shape()[1]);
        let (hq, hkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let qkv = linear(x, &l.qkv)?;
        // (B, L, H+2H_kv, D) → (B, H+2H_kv, L, D); Q and K get RoPE in one op.
        let t = ops::transpose_axes(
            &ops::reshape(&qkv, &[b as i64, n as i64, (hq + 2 * hkv) as i64, d as i64])?,
            &[0, 2, 1, 3],
        )?;
        let heads = |a: &Array, from: usize, to: usize| -> Result<Array> {
            let s = a.shape();
            ops::slice(a, &[0, from as i64, 0, 0], &[s[0] as i64, to as i64, s[2] as i64, s[3] as i64], &[1, 1, 1, 1])
        };
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let qk = fast::rope(
            &heads(&t, 0, hq + hkv)?,
            c.rope_dims,
            c.rope_traditional,
            Some(c.rope_theta),
            1.0,
            offset as i64,
            None,
        )?;
        let (q, k, v) = (heads(&qk, 0, hq)?, heads(&qk, hq, hq + hkv)?, heads(&t, hq + hkv, hq + 2 * hkv)?);
        let (k, v, mask) = match cache {
            Some(cache) => cache.update(&k, &v)?,
            None => (k, v, if n > 1 { CacheMask::Causal } else { CacheMask::None }),
        };
        let mask = match &mask {
            CacheMask::None => AttentionMask::None,
            CacheMask::Causal => AttentionMask::Causal,
            CacheMask::Array(m) => AttentionMask::Array(m),
        };
        let o = fast::scaled_dot_product_attention(&q, &k, &v, 1.0 / (d as f32).sqrt(), mask)?;
        let o = ops::reshape(&ops::transpose_axes(&o, &[0, 2, 1, 3])?, &[b as i64, n as i64, (hq * d) as i64])?;
        linear(&o, &l.o)
    }

    fn mlp(&self, l: &LlamaLayer, x: &Array) -> Result<Array> {
        let f = self.config.intermediate_size as i64;
        let gu = linear(x, &l.gate_up)?;
        let parts = ops::split(&gu, ops::SplitSpec::Indices(vec![f]), -1)?;
        let g = &parts[0];
        let h = ops::multiply(&ops::multiply(g, &ops::sigmoid(g)?)?, &parts[1])?;
        linear(&h, &l.down)
    }

    /// The final hidden states `(B, L, hidden)` for token ids `(B, L)`,
    /// continuing from `cache` (updated) or, without one, from position 0.
    pub fn hidden(&self, tokens: &Array, mut cache: Option<&mut [Box<dyn LayerCache>]>) -> Result<Array> {
        let c = &self.config;
        if tokens.ndim() != 2 || tokens.shape()[1] == 0 {
            return Err(Error::invalid(
                OP,
                format!("Tokens must be a non-empty (batch, length) array, got shape {:?}.", tokens.shape()),
            ));
        }
        if tokens.dtype().is_floating() {
            return Err(Error::invalid(OP, format!("Tokens must be integers, got {}.", tokens.dtype())));
        }
        let n = tokens.shape()[1];
        let start = cache.as_ref().and_then(|c| c.first()).map_or(0, |c| c.offset());
        if start + n > c.max_position_embeddings {
            return Err(Error::invalid(
                OP,
                format!(
                    "The sequence would reach {} positions, beyond the model's context of {}.",
                    start + n,
                    c.max_position_embeddings
                ),
            ));
        }
        if let Some(cs) = &cache {
            if cs.len() != c.num_layers {
                return Err(Error::invalid(OP, format!("Expected {} layer caches, got {}.", c.num_layers, cs.len())));
            }
        }
        let mut x = self.embed.rows(tokens)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = fast::rms_norm(&x, Some(&l.attn_norm), c.rms_norm_eps)?;
            let a = self.attention(l, &h, cache.as_deref_mut().map(|cs| &mut cs[i]))?;
            x = ops::add(&x, &a)?;
            let h = fast::rms_norm(&x, Some(&l.ffn_norm), c.rms_norm_eps)?;
            x = ops::add(&x, &self.mlp(l, &h)?)?;
        }
        fast::rms_norm(&x, Some(&self.norm), c.rms_norm_eps)
    }

    /// Logits `(B, L, vocab)` of hidden states.
    pub fn head(&self, h: &Array) -> Result<Array> {
        linear(h, &self.head)
    }

    /// Logits `(B, L, vocab)` for tokens `(B, L)` (see [`Llama::hidden`]).
    pub fn forward(&self, tokens: &Array, cache: Option<&mut [Box<dyn LayerCache>]>) -> Result<Array> {
        self.head(&self.hidden(tokens, cache)?)
    }

    /// Logits `(B, vocab)` of the last position only (what generation needs;
    /// skips the output head for the other positions).
    pub fn forward_last(&self, tokens: &Array, cache: Option<&mut [Box<dyn LayerCache>]>) -> Result<Array> {
        let h = self.hidden(tokens, cache)?;
        let s = h.shape().to_vec();
        let last = if s[1] == 1 {
            ops::reshape(&h, &[s[0] as i64, s[2] as i64])?
        } else {
            ops::reshape(
                &ops::slice(&h, &[0, s[1] as i64 - 1, 0], &[s[0] as i64, s[1] as i64, s[2] as i64], &[1, 1, 1])?,
                &[s[0] as i64, s[2] as i64],
            )?
        };
        self.head(&last)
    }

    // -----------------------------------------------------------------------
    // Loading

    /// Loads a GGUF file (`general.architecture = llama`) with every weight
    /// dequantized to float32.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Llama> {
        Llama::from_gguf_path(path, false)
    }

    /// Loads a GGUF file; with `quantized`, Q4_0/Q4_1/Q8_0 matrices stay
    /// block-quantized (read with `pread`, so the file's pages never count
    /// towards this process's resident memory).
    pub fn from_gguf_path(path: impl AsRef<Path>, quantized: bool) -> Result<Llama> {
        let path = path.as_ref();
        let f = kiln_core::io::read_gguf(path)?;
        let file = std::fs::File::open(path)
            .map_err(|e| Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot open {}: {e}.", path.display())))?;
        Llama::build_from_gguf(&f, quantized, Some(&file))
    }

    /// Builds the model from a parsed GGUF. With `quantized`, Q4_0/Q4_1/Q8_0
    /// matrices stay block-quantized (as affine group-32 triples).
    pub fn from_gguf_file(f: &GgufFile, quantized: bool) -> Result<Llama> {
        Llama::build_from_gguf(f, quantized, None)
    }

    fn build_from_gguf(f: &GgufFile, quantized: bool, file: Option<&std::fs::File>) -> Result<Llama> {
        let config = LlamaConfig::from_gguf_metadata(&f.metadata)?;
        let by_name: BTreeMap<&str, &GgufTensor> = f.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let get = |name: &str| -> Result<&GgufTensor> {
            by_name.get(name).copied().ok_or_else(|| Error::invalid(OP, format!("The GGUF has no tensor {name}.")))
        };
        let vector = |name: &str| -> Result<Array> { Ok(get(name)?.to_array()) };
        let matrix = |name: &str| -> Result<Weight> { gguf_weight(get(name)?, quantized, file) };
        let mut layers = Vec::new();
        for i in 0..config.num_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: vector(&p("attn_norm"))?,
                q: matrix(&p("attn_q"))?,
                k: matrix(&p("attn_k"))?,
                v: matrix(&p("attn_v"))?,
                o: matrix(&p("attn_output"))?,
                ffn_norm: vector(&p("ffn_norm"))?,
                gate: matrix(&p("ffn_gate"))?,
                up: matrix(&p("ffn_up"))?,
                down: matrix(&p("ffn_down"))?,
            });
        }
        let output = match by_name.get("output.weight") {
            Some(t) => Some(gguf_weight(t, quantized, file)?),
            None => None,
        };
        let mut config = config;
        config.tie_word_embeddings = output.is_none();
        Llama::from_parts(config, matrix("token_embd.weight")?, layers, vector("output_norm.weight")?, output)
    }

    /// Loads a Hugging Face checkpoint directory: `config.json` and one or
    /// more `*.safetensors` files with `model.layers.N.…` names.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Llama> {
        let dir = dir.as_ref();
        let io = |e: std::io::Error, what: &Path| {
            Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot read {}: {e}.", what.display()))
        };
        let cfg_path = dir.join("config.json");
        let config = LlamaConfig::from_hf_json(&std::fs::read_to_string(&cfg_path).map_err(|e| io(e, &cfg_path))?)?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(e, dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid(OP, format!("No *.safetensors file in {}.", dir.display())));
        }
        let mut t = BTreeMap::new();
        for f in files {
            t.extend(kiln_core::io::load_safetensors(&f)?.0);
        }
        let mut take = |name: &str| -> Result<Array> {
            let a =
                t.remove(name).ok_or_else(|| Error::invalid(OP, format!("The checkpoint has no tensor {name}.")))?;
            ops::astype(&a, Dtype::F32)
        };
        let mut layers = Vec::new();
        for i in 0..config.num_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: take(&p("input_layernorm"))?,
                q: Weight::Dense(take(&p("self_attn.q_proj"))?),
                k: Weight::Dense(take(&p("self_attn.k_proj"))?),
                v: Weight::Dense(take(&p("self_attn.v_proj"))?),
                o: Weight::Dense(take(&p("self_attn.o_proj"))?),
                ffn_norm: take(&p("post_attention_layernorm"))?,
                gate: Weight::Dense(take(&p("mlp.gate_proj"))?),
                up: Weight::Dense(take(&p("mlp.up_proj"))?),
                down: Weight::Dense(take(&p("mlp.down_proj"))?),
            });
        }
        let embed = Weight::Dense(take("model.embed_tokens.weight")?);
        let norm = take("model.norm.weight")?;
        let output = if config.tie_word_embeddings { None } else { take("lm_head.weight").ok().map(Weight::Dense) };
        let mut config = config;
        config.tie_word_embeddings = output.is_none();
        Llama::from_parts(config, embed, layers, norm, output)
    }
}

/// A GGUF matrix as a [`Weight`]: dense float32 (dequantized) unless
/// `quantized` and the type maps losslessly to affine quantization.
fn gguf_weight(t: &GgufTensor, quantized: bool, file: Option<&std::fs::File>) -> Result<Weight> {
    if t.shape.len() != 2 {
        return Err(Error::invalid(OP, format!("Tensor {} should be a matrix, has shape {:?}.", t.name, t.shape)));
    }
    if quantized
        && matches!(t.ggml_type, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
        && t.shape[1].is_multiple_of(32)
    {
        if let Some(w) = gguf_affine(t, file)? {
            return Ok(w);
        }
    }
    Ok(Weight::Dense(ops::astype(&t.to_array(), Dtype::F32)?))
}

// ---------------------------------------------------------------------------
// Generation

/// How the next token is picked.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities add up to `top_p` (1 = all of them).
    pub top_p: f32,
    /// Seed of the random key.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// Timings of one [`Llama::generate`] call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt (up to the first generated token).
    pub prompt_seconds: f64,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds spent generating after the first token.
    pub generation_seconds: f64,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
    /// Generated tokens per second (after the first, which the prompt pass yields).
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.generation_seconds.max(1e-9)
    }
}

/// Picks a token from `logits` by `sampling`; `u` is a uniform draw in [0, 1).
pub fn sample_token(logits: &[f32], sampling: &Sampling, u: f32) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if sampling.temperature <= 0.0 || logits.is_empty() {
        return argmax();
    }
    let inv_t = 1.0 / sampling.temperature;
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut probs: Vec<(f32, u32)> =
        logits.iter().enumerate().map(|(i, &v)| (((v - max) * inv_t).exp(), i as u32)).collect();
    let total: f32 = probs.iter().map(|p| p.0).sum();
    let top_p = sampling.top_p.clamp(0.0, 1.0);
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut keep = probs.len();
    if top_p < 1.0 {
        // Most of the mass is usually in a few hundred tokens: sort those first.
        let k = 256.min(probs.len());
        if k < probs.len() {
            probs.select_nth_unstable_by(k - 1, desc);
        }
        probs[..k].sort_unstable_by(desc);
        if probs[..k].iter().map(|p| p.0).sum::<f32>() < top_p * total {
            probs.sort_unstable_by(desc);
        }
        let mut acc = 0.0;
        keep = 0;
        for p in &probs {
            acc += p.0;
            keep += 1;
            if acc >= top_p * total {
                break;
            }
        }
    }
    let kept = &probs[..keep.max(1)];
    let mass: f32 = kept.iter().map(|p| p.0).sum();
    let mut target = u * mass;
    for p in kept {
        if target < p.0 {
            return p.1;
        }
        target -= p.0;
    }
    kept[kept.len() - 1].1
}

impl Llama {
    /// Generates up to `max_tokens` tokens after `prompt` (a batch of one):
    /// the prompt runs as one forward pass, then one token per step with a
    /// key/value cache. `on_token` receives each token and returns false to
    /// stop; generation also stops after `stop` (e.g. the eos id).
    pub fn generate(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        sampling: &Sampling,
        stop: Option<u32>,
        mut on_token: impl FnMut(u32) -> Result<bool>,
    ) -> Result<GenerationStats> {
        if prompt.is_empty() {
            return Err(Error::invalid(OP, "The prompt is empty."));
        }
        let ctx = self.config.max_position_embeddings;
        if prompt.len() > ctx {
            return Err(Error::invalid(
                OP,
                format!("The prompt has {} tokens, more than the model's context of {ctx}.", prompt.len()),
            ));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::invalid(OP, format!("Token id {bad} is outside the vocabulary.")));
        }
        let mut stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
        if max_tokens == 0 {
            return Ok(stats);
        }
        let mut cache = self.new_cache();
        let mut key = kiln_core::random::key(sampling.seed);
        let mut draw = |logits: &Array| -> Result<u32> {
            let l = logits.to_vec::<f32>()?;
            let u = if sampling.temperature > 0.0 {
                let ks = kiln_core::random::split(&key, 2)?;
                let parts = ops::split(&ks, ops::SplitSpec::Sections(2), 0)?;
                key = ops::reshape(&parts[0], &[2])?;
                let sub = ops::reshape(&parts[1], &[2])?;
                kiln_core::random::uniform(0.0, 1.0, &[], Dtype::F32, Some(&sub))?.item::<f32>()?
            } else {
                0.0
            };
            Ok(sample_token(&l, sampling, u))
        };
        let t0 = std::time::Instant::now();
        let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        let x = Array::from_slice(&ids, &[1, ids.len()])?;
        let logits = self.forward_last(&x, Some(&mut cache))?;
        let greedy = sampling.temperature <= 0.0;
        // Greedy decoding is pipelined: step n+1's graph is built from step n's
        // lazy argmax and queued before step n's token is read, so building the
        // graph overlaps the kernels.
        let argmax = |l: &Array| ops::reshape(&ops::argmax(l, Some(-1), false)?, &[1, 1]);
        let mut y = if greedy { Some(argmax(&logits)?) } else { None };
        let mut tok = match &y {
            Some(y) => y.item::<u32>()?,
            None => draw(&logits)?,
        };
        stats.prompt_seconds = t0.elapsed().as_secs_f64();
        // The prompt's activations are dead now: hand their pages back, so
        // the resident peak is the weights plus the cache, not their sum
        // with the largest activations ever held. The same whenever the KV
        // cache has grown (its old, smaller buffers are dead).
        kiln_core::memory::clear_cache();
        // Regrow the cache a layer at a time before a step needs it, handing
        // each layer's old storage back at once: grown inside a step, every
        // layer's old and new storage would be resident together.
        let reserve = |cache: &mut [Box<dyn LayerCache>]| -> Result<()> {
            for c in cache.iter_mut() {
                if c.reserve(1)? {
                    kiln_core::memory::clear_cache();
                }
            }
            Ok(())
        };
        let t1 = std::time::Instant::now();
        stats.generated_tokens = 1;
        let mut pos = prompt.len();
        loop {
            let more = Some(tok) != stop && stats.generated_tokens < max_tokens && pos < ctx;
            if more {
                reserve(&mut cache)?;
            }
            let next = match (&y, more) {
                (Some(y), true) => {
                    let n = argmax(&self.forward_last(y, Some(&mut cache))?)?;
                    kiln_core::async_eval(&[&n])?;
                    Some(n)
                }
                _ => None,
            };
            if !on_token(tok)? || !more {
                break;
            }
            tok = match next {
                Some(n) => {
                    let t = n.item::<u32>()?;
                    y = Some(n);
                    t
                }
                None => {
                    let x = Array::from_slice(&[tok as i32], &[1, 1])?;
                    draw(&self.forward_last(&x, Some(&mut cache))?)?
                }
            };
            stats.generated_tokens += 1;
            pos += 1;
        }
        stats.generation_seconds = t1.elapsed().as_secs_f64();
        Ok(stats)
    }
}

/// Loads a model and its tokenizer from `path`: a `.gguf` file (weights kept
/// block-quantized unless `dequantize`) or a Hugging Face directory with
/// `config.json`, `*.safetensors` and `tokenizer.json` (+ optional
/// `tokenizer_config.json`).
pub fn load(path: impl AsRef<Path>, dequantize: bool) -> Result<(Llama, crate::bpe::BpeTokenizer)> {
    let path = path.as_ref();
    if path.is_dir() {
        let read = |name: &str| -> Result<Option<String>> {
            let p = path.join(name);
            if !p.exists() {
                return Ok(None);
            }
            std::fs::read_to_string(&p)
                .map(Some)
                .map_err(|e| Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot read {}: {e}.", p.display())))
        };
        let tj = read("tokenizer.json")?
            .ok_or_else(|| Error::invalid(OP, format!("{} has no tokenizer.json.", path.display())))?;
        let model = Llama::from_hf_dir(path)?;
        let mut tok = crate::bpe::BpeTokenizer::from_hf_json(&tj, read("tokenizer_config.json")?.as_deref())?;
        let c = model.config();
        tok.set_bos_eos(tok.bos().or(c.bos_token_id), tok.eos().or(c.eos_token_id));
        return Ok((model, tok));
    }
    if !path.exists() {
        return Err(Error::new(
            kiln_core::ErrorKind::Io,
            OP,
            format!("No such file or directory: {}.", path.display()),
        ));
    }
    let f = kiln_core::io::read_gguf(path)?;
    // Check the architecture before the tokenizer so that is the error a user sees.
    LlamaConfig::from_gguf_metadata(&f.metadata)?;
    let tok = crate::bpe::BpeTokenizer::from_gguf_metadata(&f.metadata)?;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot open {}: {e}.", path.display())))?;
    let model = Llama::build_from_gguf(&f, !dequantize, Some(&file))?;
    Ok((model, tok))
}

// ---------------------------------------------------------------------------
// GGUF blocks to affine-quantized triples

/// Codes, scales, biases and bits of [`ggml_to_affine`].
pub type AffineBlocks = (Vec<u32>, Vec<f32>, Vec<f32>, u32);

/// Bytes per block and bits per code of the GGML types that map to affine
/// triples without loss.
fn affine_layout(ty: GgmlType) -> Result<(usize, u32)> {
    match ty {
        GgmlType::Q4_1 => Ok((20, 4)),
        GgmlType::Q8_0 => Ok((34, 8)),
        GgmlType::Q4_0 => Ok((18, 4)),
        _ => Err(Error::invalid(OP, format!("GGML type {ty:?} has no lossless affine form here."))),
    }
}

/// Converts whole GGML blocks: block `i` gets `bits` code words at
/// `codes[i·bits..]` and calls `put(i, scale, bias)` (both exact in f16:
/// GGUF stores `d` and `m` as f16, and `-8·d`, `-128·d` only scale them by a
/// power of two).
fn convert_blocks(ty: GgmlType, bytes: &[u8], codes: &mut [u32], mut put: impl FnMut(usize, f32, f32)) -> Result<()> {
    let (block_bytes, bits) = affine_layout(ty)?;
    let wpb = bits as usize;
    let half = |b: &[u8]| kiln_core::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    for (i, (blk, out)) in bytes.chunks_exact(block_bytes).zip(codes.chunks_exact_mut(wpb)).enumerate() {
        let d = half(&blk[0..2]);
        match ty {
            GgmlType::Q4_1 | GgmlType::Q4_0 => {
                let (qs, bias) =
                    if ty == GgmlType::Q4_1 { (&blk[4..20], half(&blk[2..4])) } else { (&blk[2..18], -8.0 * d) };
                // Element e < 16 is the low nibble of byte e, e >= 16 the high nibble of byte e - 16.
                for (w, word) in out.iter_mut().enumerate() {
                    let mut v = 0u32;
                    for j in 0..8 {
                        let e = w * 8 + j;
                        let q = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
                        v |= (q as u32) << (4 * j);
                    }
                    *word = v;
                }
                put(i, d, bias);
            }
            _ => {
                for (w, word) in out.iter_mut().enumerate() {
                    let mut v = 0u32;
                    for j in 0..4 {
                        let q = blk[2 + w * 4 + j] as i8 as i32 + 128;
                        v |= (q as u32) << (8 * j);
                    }
                    *word = v;
                }
                put(i, d, -128.0 * d);
            }
        }
    }
    Ok(())
}

/// Checks that `bytes` holds the GGML blocks of a `(rows, cols)` matrix.
fn check_blocks(ty: GgmlType, bytes: usize, rows: usize, cols: usize) -> Result<(usize, u32)> {
    let (block_bytes, bits) = affine_layout(ty)?;
    if !cols.is_multiple_of(32) {
        return Err(Error::invalid(OP, format!("A quantized row of {cols} values is not whole blocks of 32.")));
    }
    let blocks = rows * cols / 32;
    if bytes != blocks * block_bytes {
        return Err(Error::invalid(
            OP,
            format!("Expected {} bytes of {ty:?} blocks for {rows}x{cols}, got {bytes}.", blocks * block_bytes),
        ));
    }
    Ok((block_bytes, bits))
}

/// GGML Q4_1 or Q8_0 blocks of a `(rows, cols)` matrix as affine group-32
/// triples in MLX's packing: `uint32` codes `(rows, cols·bits/32)` (code `i`
/// of a row at stream bits `[i·bits, (i+1)·bits)`, LSB first), and float32
/// scales and biases `(rows, cols/32)`, with `w = scale·q + bias`. The mapping
/// is exact: Q4_1's `x = d·q + m` gives scale `d`, bias `m`; Q8_0's `x = d·q`
/// (`q` signed) gives codes `q + 128`, scale `d` and bias `-128·d`. Returns
/// `(codes, scales, biases, bits)`. (The model loader writes the same values
/// straight into arrays, with f16 scales and biases.)
pub fn ggml_to_affine(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<AffineBlocks> {
    let (_, bits) = check_blocks(ty, bytes.len(), rows, cols)?;
    let blocks = rows * cols / 32;
    let mut codes = vec![0u32; blocks * bits as usize];
    let mut scales = vec![0f32; blocks];
    let mut biases = vec![0f32; blocks];
    convert_blocks(ty, bytes, &mut codes, |i, d, b| {
        scales[i] = d;
        biases[i] = b;
    })?;
    Ok((codes, scales, biases, bits))
}

/// Blocks converted per read when streaming a tensor from the file.
const STREAM_BLOCKS: usize = 1 << 15;

/// A quantized GGUF matrix as an affine [`Weight`], converted while it is
/// read (a bounded buffer at a time, straight into the arrays) so loading
/// never holds a second copy of the model. Scales and biases are f16 (exact,
/// see [`convert_blocks`]); `None` when a bias overflows f16 (absurd block
/// scales), and the caller loads the matrix dense instead.
fn gguf_affine(t: &GgufTensor, file: Option<&std::fs::File>) -> Result<Option<Weight>> {
    use kiln_core::f16;
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let (block_bytes, bits) = check_blocks(t.ggml_type, t.nbytes, rows, cols)?;
    let (groups, words) = (cols / 32, cols * bits as usize / 32);
    let blocks = rows * groups;
    let wpb = bits as usize;
    let mut buf = Vec::new();
    let (w, (scales, (biases, exact))) = Array::from_writer::<u32, _>(&[rows, words], |codes| {
        Array::from_writer::<f16, _>(&[rows, groups], |sc| {
            Array::from_writer::<f16, _>(&[rows, groups], |bi| {
                let mut exact = true;
                let mut b0 = 0;
                while b0 < blocks {
                    let nb = STREAM_BLOCKS.min(blocks - b0);
                    let range = b0 * block_bytes..(b0 + nb) * block_bytes;
                    let bytes: &[u8] = match file {
                        Some(f) => {
                            buf.resize(range.len(), 0);
                            read_at(t, f, t.offset as u64 + range.start as u64, &mut buf)?;
                            &buf
                        }
                        None => &t.bytes()[range],
                    };
                    convert_blocks(t.ggml_type, bytes, &mut codes[b0 * wpb..(b0 + nb) * wpb], |i, d, b| {
                        let (hd, hb) = (f16::from_f32(d), f16::from_f32(b));
                        exact &= hd.to_f32() == d && hb.to_f32() == b;
                        sc[b0 + i] = hd;
                        bi[b0 + i] = hb;
                    })?;
                    b0 += nb;
                }
                Ok(exact)
            })
        })
    })?;
    if !exact {
        return Ok(None);
    }
    Ok(Some(Weight::Quantized { w, scales, biases, spec: QuantSpec::affine(32, bits) }))
}

/// Reads `buf.len()` bytes of tensor `t` at file offset `at`.
fn read_at(t: &GgufTensor, f: &std::fs::File, at: u64, buf: &mut [u8]) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(buf, at).map_err(|e| {
            Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot read tensor {} (truncated file?): {e}.", t.name))
        })
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.read_exact(buf))
            .map_err(|e| Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot read tensor {}: {e}.", t.name)))
    }
}
