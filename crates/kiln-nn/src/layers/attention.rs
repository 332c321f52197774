//! Attention, transformer layers and positional encodings, as MLX's
//! `nn.MultiHeadAttention`, `nn.Transformer*`, `nn.RoPE`,
//! `nn.SinusoidalPositionalEncoding`, `nn.ALiBi`, and `mx.fast`'s
//! `scaled_dot_product_attention` and `rope` (the fused kernels of
//! `kiln_core::ops::fast`).

use crate::{Dropout, Forward, LayerNorm, Linear};
use kiln_core::ops;
use kiln_core::{Array, Dtype, Error, Result};

/// The mask of [`scaled_dot_product_attention`].
#[derive(Clone, Debug)]
pub enum AttentionMask {
    /// Query `i` sees keys `j ≤ i + (S - L)` (aligned to the last key, as MLX's "causal").
    Causal,
    /// A boolean mask (true = attend) or an additive float mask, broadcast to `(B, H, L, S)`.
    Array(Array),
}

/// `softmax(scale · q kᵀ + mask) v` for `q (B, Hq, L, D)`, `k (B, Hkv, S, D)`,
/// `v (B, Hkv, S, Dv)`; `Hq` must be a multiple of `Hkv` (grouped-query
/// attention shares each key/value head between `Hq/Hkv` query heads). The
/// softmax runs in float32 for half-precision inputs. Masked-out scores
/// become the lowest finite value rather than -inf (as MLX), so a query that
/// may see no key gets the mean of the values, not NaN. The fused kernel
/// never materialises the scores, forward or backward.
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: Option<&AttentionMask>,
) -> Result<Array> {
    // The fused kernel (forward and backward) of `kiln_core::ops::fast`.
    let mask = match mask {
        None => ops::fast::AttentionMask::None,
        Some(AttentionMask::Causal) => ops::fast::AttentionMask::Causal,
        Some(AttentionMask::Array(m)) => ops::fast::AttentionMask::Array(m),
    };
    ops::fast::scaled_dot_product_attention(q, k, v, scale, mask)
}

/// An additive causal mask `(n, n)`: 0 on and below the diagonal, the
/// dtype's lowest value above (MLX's `create_additive_causal_mask`).
pub fn create_additive_causal_mask(n: usize, dtype: Dtype) -> Result<Array> {
    let i = ops::arange_int(0, n as i64, 1)?;
    let above = ops::less(&ops::expand_dims(&i, 1)?, &ops::expand_dims(&i, 0)?)?;
    let lowest = match dtype {
        Dtype::F16 => -65504.0,
        Dtype::BF16 => -3.3895313892515355e38,
        Dtype::F64 => f64::MIN,
        _ => f32::MIN as f64,
    };
    ops::multiply(&ops::astype(&above, dtype)?, lowest)
}

/// Multi-head attention with query/key/value/output projections (MLX's
/// `nn.MultiHeadAttention`; no biases by default).
#[derive(Clone, Debug, crate::Module)]
pub struct MultiHeadAttention {
    /// `dims → dims` query projection.
    pub query_proj: Linear,
    /// Key projection.
    pub key_proj: Linear,
    /// Value projection.
    pub value_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
}

impl MultiHeadAttention {
    /// Attention over `dims` features split into `num_heads` heads, with all
    /// input dimensions equal to `dims`.
    pub fn new(dims: usize, num_heads: usize, bias: bool) -> Result<MultiHeadAttention> {
        MultiHeadAttention::with_dims(dims, num_heads, [dims, dims, dims], dims, dims, bias)
    }
    /// Every dimension given: query/key/value input dims, value dims and value output dims.
    pub fn with_dims(
        dims: usize,
        num_heads: usize,
        input_dims: [usize; 3],
        value_dims: usize,
        value_output_dims: usize,
        bias: bool,
    ) -> Result<MultiHeadAttention> {
        if num_heads == 0 || !dims.is_multiple_of(num_heads) {
            return Err(Error::invalid(
                "MultiHeadAttention",
                format!("The input feature dimensions should be divisible by the number of heads ({dims} % {num_heads}) != 0"),
            ));
        }
        Ok(MultiHeadAttention {
            query_proj: Linear::new(input_dims[0], dims, bias)?,
            key_proj: Linear::new(input_dims[1], dims, bias)?,
            value_proj: Linear::new(input_dims[2], value_dims, bias)?,
            out_proj: Linear::new(value_dims, value_output_dims, bias)?,
            num_heads,
        })
    }

    fn heads(&self, x: &Array) -> Result<Array> {
        let s = x.shape();
        let (b, l, d) = (s[0], s[1], s[2]);
        ops::transpose_axes(&ops::reshape_to(x, &[b, l, self.num_heads, d / self.num_heads])?, &[0, 2, 1, 3])
    }

    /// Attends `queries (B, L, ·)` to `keys`/`values (B, S, ·)`.
    pub fn attend(&self, queries: &Array, keys: &Array, values: &Array, mask: Option<&AttentionMask>) -> Result<Array> {
        for (name, x) in [("queries", queries), ("keys", keys), ("values", values)] {
            if x.ndim() != 3 {
                return Err(Error::invalid(
                    "MultiHeadAttention",
                    format!("{name} must be (batch, length, dims), got {:?}.", x.shape()),
                ));
            }
        }
        let q = self.heads(&self.query_proj.forward(queries)?)?;
        let k = self.heads(&self.key_proj.forward(keys)?)?;
        let v = self.heads(&self.value_proj.forward(values)?)?;
        let scale = (1.0 / q.shape()[3] as f64).sqrt() as f32;
        let o = scaled_dot_product_attention(&q, &k, &v, scale, mask)?;
        let (b, l) = (o.shape()[0], o.shape()[2]);
        let o = ops::reshape_to(&ops::transpose_axes(&o, &[0, 2, 1, 3])?, &[b, l, o.shape()[1] * o.shape()[3]])?;
        self.out_proj.forward(&o)
    }
}

/// The feed-forward activation of the transformer layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// ReLU (MLX's default).
    #[default]
    Relu,
    /// Exact GELU.
    Gelu,
}

impl crate::ModuleField for FeedForwardActivation {}

impl FeedForwardActivation {
    pub(crate) fn apply(self, x: &Array) -> Result<Array> {
        match self {
            FeedForwardActivation::Relu => crate::relu(x),
            FeedForwardActivation::Gelu => crate::gelu(x),
        }
    }
}

/// Self-attention + feed-forward block (MLX's `nn.TransformerEncoderLayer`).
#[derive(Clone, Debug, crate::Module)]
pub struct TransformerEncoderLayer {
    /// Self-attention.
    pub attention: MultiHeadAttention,
    /// Norm before (norm-first) or after attention.
    pub ln1: LayerNorm,
    /// Norm around the feed-forward block.
    pub ln2: LayerNorm,
    /// `dims → mlp_dims`.
    pub linear1: Linear,
    /// `mlp_dims → dims`.
    pub linear2: Linear,
    /// After attention.
    pub dropout1: Dropout,
    /// Inside the feed-forward block.
    pub dropout2: Dropout,
    /// Feed-forward activation.
    pub activation: FeedForwardActivation,
    /// Pre-norm (true, MLX's default) or post-norm.
    pub norm_first: bool,
}

impl TransformerEncoderLayer {
    /// A layer with `mlp_dims` (MLX's default is `4·dims`) and dropout `p`.
    pub fn new(dims: usize, num_heads: usize, mlp_dims: Option<usize>, dropout: f32, norm_first: bool) -> Result<Self> {
        let mlp = mlp_dims.unwrap_or(4 * dims);
        Ok(TransformerEncoderLayer {
            attention: MultiHeadAttention::new(dims, num_heads, false)?,
            ln1: LayerNorm::new(dims, 1e-5, true, true)?,
            ln2: LayerNorm::new(dims, 1e-5, true, true)?,
            linear1: Linear::new(dims, mlp, true)?,
            linear2: Linear::new(mlp, dims, true)?,
            dropout1: Dropout::new(dropout)?,
            dropout2: Dropout::new(dropout)?,
            activation: FeedForwardActivation::Relu,
            norm_first,
        })
    }

    fn feed_forward(&self, x: &Array) -> Result<Array> {
        let y = self.activation.apply(&self.linear1.forward(x)?)?;
        self.linear2.forward(&self.dropout2.forward(&y)?)
    }

    /// Applies the layer to `x (B, L, dims)`.
    pub fn apply(&self, x: &Array, mask: Option<&AttentionMask>) -> Result<Array> {
        if self.norm_first {
            let y = self.ln1.forward(x)?;
            let y = self.dropout1.forward(&self.attention.attend(&y, &y, &y, mask)?)?;
            let x = ops::add(x, &y)?;
            let y = self.feed_forward(&self.ln2.forward(&x)?)?;
            ops::add(&x, &y)
        } else {
            let y = self.dropout1.forward(&self.attention.attend(x, x, x, mask)?)?;
            let x = self.ln1.forward(&ops::add(x, &y)?)?;
            let y = self.feed_forward(&x)?;
            self.ln2.forward(&ops::add(&x, &y)?)
        }
    }
}

/// A stack of encoder layers and a final norm (MLX's `nn.TransformerEncoder`).
#[derive(Clone, Debug, crate::Module)]
pub struct TransformerEncoder {
    /// The layers.
    pub layers: Vec<TransformerEncoderLayer>,
    /// Final norm.
    pub ln: LayerNorm,
}

impl TransformerEncoder {
    /// `num_layers` layers as [`TransformerEncoderLayer::new`].
    pub fn new(
        num_layers: usize,
        dims: usize,
        num_heads: usize,
        mlp_dims: Option<usize>,
        dropout: f32,
        norm_first: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| TransformerEncoderLayer::new(dims, num_heads, mlp_dims, dropout, norm_first))
            .collect::<Result<_>>()?;
        Ok(TransformerEncoder { layers, ln: LayerNorm::new(dims, 1e-5, true, true)? })
    }
    /// Applies every layer, then the norm.
    pub fn apply(&self, x: &Array, mask: Option<&AttentionMask>) -> Result<Array> {
        let mut x = x.clone();
        for l in &self.layers {
            x = l.apply(&x, mask)?;
        }
        self.ln.forward(&x)
    }
}

/// Rotary position embedding of the first `dims` features of the last axis,
/// positions along the second-to-last axis starting at `offset` (MLX's
/// `fast.rope`, the fused kernel [`kiln_core::ops::fast::rope`]).
/// `traditional` rotates adjacent pairs `(2i, 2i+1)`; otherwise the halves
/// `(i, i + dims/2)` are paired.
pub fn rope(x: &Array, dims: usize, traditional: bool, base: f32, scale: f32, offset: usize) -> Result<Array> {
    ops::fast::rope(x, dims, traditional, Some(base), scale, offset as i64, None)
}

/// [`rope`] as a module (MLX's `nn.RoPE`); no parameters.
#[derive(Clone, Copy, Debug, crate::Module)]
pub struct RoPE {
    /// Rotated features.
    pub dims: usize,
    /// Adjacent pairs instead of halves.
    pub traditional: bool,
    /// Frequency base.
    pub base: f32,
    /// Position scale.
    pub scale: f32,
}

impl RoPE {
    /// MLX's defaults: halves, base 10000, scale 1.
    pub fn new(dims: usize) -> RoPE {
        RoPE { dims, traditional: false, base: 10000.0, scale: 1.0 }
    }
    /// Applies the rotation with positions starting at `offset`.
    pub fn apply(&self, x: &Array, offset: usize) -> Result<Array> {
        rope(x, self.dims, self.traditional, self.base, self.scale, offset)
    }
}

/// Sinusoidal features of scalar positions (MLX's `nn.SinusoidalPositionalEncoding`).
#[derive(Clone, Debug, crate::Module)]
pub struct SinusoidalPositionalEncoding {
    #[module(skip)]
    sigmas: Array,
    /// Output scale (MLX's default `√(2/dims)`).
    pub scale: f32,
    /// `[cos, sin]` instead of `[sin, cos]`.
    pub cos_first: bool,
}

impl SinusoidalPositionalEncoding {
    /// `dims` (even) features with frequencies from `min_freq` to `max_freq`.
    pub fn new(
        dims: usize,
        min_freq: f64,
        max_freq: f64,
        scale: Option<f32>,
        cos_first: bool,
        full_turns: bool,
    ) -> Result<Self> {
        if dims == 0 || !dims.is_multiple_of(2) {
            return Err(Error::invalid(
                "SinusoidalPositionalEncoding",
                format!("dims must be positive and even but got {dims}."),
            ));
        }
        let one_zero = if dims == 2 {
            Array::from_slice(&[1.0f32], &[1])?
        } else {
            let r = ops::arange_float(0.0, (dims / 2) as f64, 1.0)?;
            ops::subtract(1, &ops::divide(&r, (dims / 2 - 1) as f64)?)?
        };
        let (lo, hi) = (min_freq.ln(), max_freq.ln());
        let mut sigmas = ops::exp(&ops::add(&ops::multiply(&one_zero, hi - lo)?, lo)?)?;
        if full_turns {
            sigmas = ops::multiply(&sigmas, 2.0 * std::f64::consts::PI)?;
        }
        let scale = scale.unwrap_or((2.0 / dims as f64).sqrt() as f32);
        Ok(SinusoidalPositionalEncoding { sigmas, scale, cos_first })
    }
}

impl Forward for SinusoidalPositionalEncoding {
    fn forward(&self, x: &Array) -> Result<Array> {
        let y = ops::multiply(&ops::expand_dims(x, -1)?, &self.sigmas)?;
        let (c, s) = (ops::cos(&y)?, ops::sin(&y)?);
        let y =
            if self.cos_first { ops::concatenate(&[c, s], Some(-1))? } else { ops::concatenate(&[s, c], Some(-1))? };
        if self.scale != 1.0 {
            ops::multiply(&y, self.scale)
        } else {
            Ok(y)
        }
    }
}

/// Attention with linear biases (MLX's `nn.ALiBi`).
#[derive(Clone, Copy, Debug, Default, crate::Module)]
pub struct ALiBi {}

impl ALiBi {
    /// Per-head slopes `(H, 1, 1)`.
    pub fn slopes(num_heads: usize, dtype: Dtype) -> Result<Array> {
        fn get(n: usize) -> Vec<f64> {
            let l2 = (n as f64).log2();
            if l2.fract() == 0.0 {
                let start = 2f64.powf(-(2f64.powf(-(l2 - 3.0))));
                (0..n).map(|i| start * start.powi(i as i32)).collect()
            } else {
                let p = 2usize.pow(l2.floor() as u32);
                let mut s = get(p);
                s.extend(get(2 * p).into_iter().step_by(2).take(n - p));
                s
            }
        }
        let s: Vec<f32> = get(num_heads).into_iter().map(|x| x as f32).collect();
        ops::astype(&Array::from_slice(&s, &[num_heads, 1, 1])?, dtype)
    }
    /// The bias `-|i - j| · slope` of shape `(1, H, Lq - offset, Lk)`.
    pub fn matrix(q_len: usize, k_len: usize, num_heads: usize, offset: usize, dtype: Dtype) -> Result<Array> {
        let x1 = ops::arange_int(offset as i64, q_len as i64, 1)?;
        let x2 = ops::arange_int(0, k_len as i64, 1)?;
        let d = ops::subtract(&ops::expand_dims(&x1, 1)?, &ops::expand_dims(&x2, 0)?)?;
        let d = ops::negative(&ops::abs(&d)?)?;
        let d = ops::expand_dims_axes(&d, &[0, 1])?;
        ops::astype(&ops::multiply(&d, &ALiBi::slopes(num_heads, dtype)?)?, dtype)
    }
    /// Adds the bias (and an optional mask) to attention scores `(B, H, L, S)`.
    pub fn apply(&self, scores: &Array, offset: usize, mask: Option<&Array>) -> Result<Array> {
        let s = scores.shape();
        if s.len() != 4 {
            return Err(Error::invalid("ALiBi", format!("Attention scores must be (B, H, L, S), got {s:?}.")));
        }
        let mut m = ALiBi::matrix(s[2] + offset, s[3], s[1], offset, scores.dtype())?;
        if let Some(mask) = mask {
            m = ops::add(&m, mask)?;
        }
        ops::add(scores, &m)
    }
}
