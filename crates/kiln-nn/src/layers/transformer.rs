//! The transformer decoder and the encoder–decoder transformer, as MLX's
//! `nn.TransformerDecoderLayer`, `nn.TransformerDecoder` and
//! `nn.Transformer` (the encoder and attention live in `attention.rs`).

use super::attention::{AttentionMask, FeedForwardActivation, MultiHeadAttention, TransformerEncoder};
use crate::module::{Module, ModuleField};
use crate::{Dropout, Forward, LayerNorm, Linear, ModuleExt};
use kiln_core::ops;
use kiln_core::{Array, Error, Result};

/// `f(module, inputs)` under gradient checkpointing (MLX's
/// `nn.utils.checkpoint`): the module's parameters and the inputs are the
/// arguments of a [`kiln_core::checkpoint`]ed function, so the backward pass
/// recomputes the module's intermediates instead of keeping them. Values and
/// gradients are those of `f`.
fn checkpointed<M>(
    module: &M,
    inputs: &[Array],
    f: impl Fn(&M, &[Array]) -> Result<Array> + Send + Sync + 'static,
) -> Result<Array>
where
    M: Module + Clone + Send + Sync + 'static,
{
    let params = module.named_parameters();
    let n = params.len();
    let keys: Vec<String> = params.iter().map(|(k, _)| k.clone()).collect();
    let template = module.clone();
    let g = kiln_core::checkpoint(move |xs: &[Array]| {
        let mut m = template.clone();
        m.visit_params_mut("", &mut |k, p| {
            if let Some(i) = keys.iter().position(|q| q == k) {
                p.set(xs[i].clone());
            }
        });
        Ok(vec![f(&m, &xs[n..])?])
    });
    let mut args: Vec<Array> = params.into_iter().map(|(_, a)| a).collect();
    args.extend_from_slice(inputs);
    Ok(g(&args)?.remove(0))
}

/// Self-attention, cross-attention over an encoder's output (the memory) and
/// a feed-forward block, each with a residual connection and a layer norm
/// (MLX's `nn.TransformerDecoderLayer`).
#[derive(Clone, Debug, crate::Module)]
pub struct TransformerDecoderLayer {
    /// Attention of the target sequence to itself.
    pub self_attention: MultiHeadAttention,
    /// Attention of the target sequence to the memory.
    pub cross_attention: MultiHeadAttention,
    /// Norm around self-attention.
    pub ln1: LayerNorm,
    /// Norm around cross-attention.
    pub ln2: LayerNorm,
    /// Norm around the feed-forward block.
    pub ln3: LayerNorm,
    /// `dims → mlp_dims`.
    pub linear1: Linear,
    /// `mlp_dims → dims`.
    pub linear2: Linear,
    /// After self-attention.
    pub dropout1: Dropout,
    /// After cross-attention.
    pub dropout2: Dropout,
    /// Inside the feed-forward block.
    pub dropout3: Dropout,
    /// Feed-forward activation.
    pub activation: FeedForwardActivation,
    /// Pre-norm (true, MLX's default) or post-norm.
    pub norm_first: bool,
}

impl TransformerDecoderLayer {
    /// A layer with `mlp_dims` (MLX's default is `4·dims`), dropout `p` and
    /// ReLU (see [`TransformerDecoderLayer::with_activation`]); attention
    /// projections without biases, as MLX.
    pub fn new(dims: usize, num_heads: usize, mlp_dims: Option<usize>, dropout: f32, norm_first: bool) -> Result<Self> {
        let mlp = mlp_dims.unwrap_or(4 * dims);
        Ok(TransformerDecoderLayer {
            self_attention: MultiHeadAttention::new(dims, num_heads, false)?,
            cross_attention: MultiHeadAttention::new(dims, num_heads, false)?,
            ln1: LayerNorm::new(dims, 1e-5, true, true)?,
            ln2: LayerNorm::new(dims, 1e-5, true, true)?,
            ln3: LayerNorm::new(dims, 1e-5, true, true)?,
            linear1: Linear::new(dims, mlp, true)?,
            linear2: Linear::new(mlp, dims, true)?,
            dropout1: Dropout::new(dropout)?,
            dropout2: Dropout::new(dropout)?,
            dropout3: Dropout::new(dropout)?,
            activation: FeedForwardActivation::Relu,
            norm_first,
        })
    }

    /// The same layer with another feed-forward activation.
    pub fn with_activation(mut self, activation: FeedForwardActivation) -> Self {
        self.activation = activation;
        self
    }

    /// The model dimension.
    pub fn dims(&self) -> usize {
        self.linear1.weight.shape()[1]
    }

    fn feed_forward(&self, x: &Array) -> Result<Array> {
        let y = self.activation.apply(&self.linear1.forward(x)?)?;
        self.linear2.forward(&self.dropout3.forward(&y)?)
    }

    /// Applies the layer to the target `x (B, L, dims)` with the encoder
    /// output `memory (B, S, dims)`; `x_mask` masks self-attention (e.g. a
    /// causal mask), `memory_mask` cross-attention.
    pub fn apply(
        &self,
        x: &Array,
        memory: &Array,
        x_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        let dims = self.dims();
        for (name, a) in [("target", x), ("memory", memory)] {
            if a.ndim() != 3 || a.shape()[2] != dims {
                return Err(Error::invalid(
                    "TransformerDecoderLayer",
                    format!("The {name} must be (batch, length, {dims}), got shape {:?}.", a.shape()),
                ));
            }
        }
        if self.norm_first {
            let y = self.ln1.forward(x)?;
            let y = self.dropout1.forward(&self.self_attention.attend(&y, &y, &y, x_mask)?)?;
            let x = ops::add(x, &y)?;
            let y = self.ln2.forward(&x)?;
            let y = self.dropout2.forward(&self.cross_attention.attend(&y, memory, memory, memory_mask)?)?;
            let x = ops::add(&x, &y)?;
            let y = self.feed_forward(&self.ln3.forward(&x)?)?;
            ops::add(&x, &y)
        } else {
            let y = self.dropout1.forward(&self.self_attention.attend(x, x, x, x_mask)?)?;
            let x = self.ln1.forward(&ops::add(x, &y)?)?;
            let y = self.dropout2.forward(&self.cross_attention.attend(&x, memory, memory, memory_mask)?)?;
            let x = self.ln2.forward(&ops::add(&x, &y)?)?;
            let y = self.feed_forward(&x)?;
            self.ln3.forward(&ops::add(&x, &y)?)
        }
    }
}

/// A stack of decoder layers and a final norm (MLX's `nn.TransformerDecoder`).
#[derive(Clone, Debug, crate::Module)]
pub struct TransformerDecoder {
    /// The layers.
    pub layers: Vec<TransformerDecoderLayer>,
    /// Final norm.
    pub ln: LayerNorm,
    /// Gradient checkpointing of every layer (MLX's `checkpoint`): less
    /// memory for activations, one more forward pass per layer in the backward pass.
    pub checkpoint: bool,
}

impl TransformerDecoder {
    /// `num_layers` layers as [`TransformerDecoderLayer::new`].
    pub fn new(
        num_layers: usize,
        dims: usize,
        num_heads: usize,
        mlp_dims: Option<usize>,
        dropout: f32,
        norm_first: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| TransformerDecoderLayer::new(dims, num_heads, mlp_dims, dropout, norm_first))
            .collect::<Result<_>>()?;
        Ok(TransformerDecoder { layers, ln: LayerNorm::new(dims, 1e-5, true, true)?, checkpoint: false })
    }
    /// The same decoder with gradient checkpointing on or off.
    pub fn with_checkpoint(mut self, checkpoint: bool) -> Self {
        self.checkpoint = checkpoint;
        self
    }
    /// The same decoder with another feed-forward activation in every layer.
    pub fn with_activation(mut self, activation: FeedForwardActivation) -> Self {
        for l in &mut self.layers {
            l.activation = activation;
        }
        self
    }
    /// Applies every layer, then the norm.
    pub fn apply(
        &self,
        x: &Array,
        memory: &Array,
        x_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        decode_layers(&self.layers, &self.ln, x, memory, x_mask, memory_mask, self.checkpoint)
    }
}

fn decode_layers(
    layers: &[TransformerDecoderLayer],
    ln: &LayerNorm,
    x: &Array,
    memory: &Array,
    x_mask: Option<&AttentionMask>,
    memory_mask: Option<&AttentionMask>,
    checkpoint: bool,
) -> Result<Array> {
    let mut x = x.clone();
    for l in layers {
        x = if checkpoint {
            let (xm, mm) = (x_mask.cloned(), memory_mask.cloned());
            checkpointed(l, &[x, memory.clone()], move |l, a| l.apply(&a[0], &a[1], xm.as_ref(), mm.as_ref()))?
        } else {
            l.apply(&x, memory, x_mask, memory_mask)?
        };
    }
    ln.forward(&x)
}

/// The encoder half of a [`Transformer`]: [`TransformerEncoder`] or a custom
/// module (MLX's `custom_encoder`).
pub trait TransformerEncoderModule: Module + ModuleField + Clone + Send + Sync + 'static {
    /// Encodes `src (B, S, dims)` under an optional source mask.
    fn encode(&self, src: &Array, src_mask: Option<&AttentionMask>) -> Result<Array>;
    /// [`TransformerEncoderModule::encode`] under gradient checkpointing (by
    /// default of the whole module; [`TransformerEncoder`] checkpoints each layer).
    fn encode_checkpointed(&self, src: &Array, src_mask: Option<&AttentionMask>) -> Result<Array> {
        let mask = src_mask.cloned();
        checkpointed(self, std::slice::from_ref(src), move |m, a| m.encode(&a[0], mask.as_ref()))
    }
}

/// The decoder half of a [`Transformer`]: [`TransformerDecoder`] or a custom
/// module (MLX's `custom_decoder`).
pub trait TransformerDecoderModule: Module + ModuleField + Clone + Send + Sync + 'static {
    /// Decodes `tgt (B, L, dims)` attending to `memory (B, S, dims)`.
    fn decode(
        &self,
        tgt: &Array,
        memory: &Array,
        tgt_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array>;
    /// [`TransformerDecoderModule::decode`] under gradient checkpointing (by
    /// default of the whole module; [`TransformerDecoder`] checkpoints each layer).
    fn decode_checkpointed(
        &self,
        tgt: &Array,
        memory: &Array,
        tgt_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        let (tm, mm) = (tgt_mask.cloned(), memory_mask.cloned());
        checkpointed(self, &[tgt.clone(), memory.clone()], move |m, a| m.decode(&a[0], &a[1], tm.as_ref(), mm.as_ref()))
    }
}

impl TransformerEncoderModule for TransformerEncoder {
    fn encode(&self, src: &Array, src_mask: Option<&AttentionMask>) -> Result<Array> {
        self.apply(src, src_mask)
    }
    fn encode_checkpointed(&self, src: &Array, src_mask: Option<&AttentionMask>) -> Result<Array> {
        let mut x = src.clone();
        for l in &self.layers {
            let mask = src_mask.cloned();
            x = checkpointed(l, &[x], move |l, a| l.apply(&a[0], mask.as_ref()))?;
        }
        self.ln.forward(&x)
    }
}

impl TransformerDecoderModule for TransformerDecoder {
    fn decode(
        &self,
        tgt: &Array,
        memory: &Array,
        tgt_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        self.apply(tgt, memory, tgt_mask, memory_mask)
    }
    fn decode_checkpointed(
        &self,
        tgt: &Array,
        memory: &Array,
        tgt_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        decode_layers(&self.layers, &self.ln, tgt, memory, tgt_mask, memory_mask, true)
    }
}

/// An encoder–decoder transformer (MLX's `nn.Transformer`): the encoder maps
/// the source to a memory, the decoder attends to it. Keys are `encoder.…`
/// and `decoder.…` as MLX's. The halves may be custom modules.
#[derive(Clone, Debug, crate::Module)]
pub struct Transformer<
    E: TransformerEncoderModule = TransformerEncoder,
    D: TransformerDecoderModule = TransformerDecoder,
> {
    /// The encoder.
    pub encoder: E,
    /// The decoder.
    pub decoder: D,
    /// Gradient checkpointing of the encoder's and the decoder's layers
    /// (MLX's `checkpoint`).
    pub checkpoint: bool,
}

impl Transformer {
    /// MLX's `nn.Transformer(dims, num_heads, num_encoder_layers,
    /// num_decoder_layers, mlp_dims, dropout, norm_first=…)` with ReLU and
    /// without checkpointing (see [`Transformer::with_activation`] and
    /// [`Transformer::with_checkpoint`]). MLX's defaults are 512, 8, 6, 6,
    /// `4·dims`, 0 and `true`.
    pub fn new(
        dims: usize,
        num_heads: usize,
        num_encoder_layers: usize,
        num_decoder_layers: usize,
        mlp_dims: Option<usize>,
        dropout: f32,
        norm_first: bool,
    ) -> Result<Transformer> {
        Ok(Transformer {
            encoder: TransformerEncoder::new(num_encoder_layers, dims, num_heads, mlp_dims, dropout, norm_first)?,
            decoder: TransformerDecoder::new(num_decoder_layers, dims, num_heads, mlp_dims, dropout, norm_first)?,
            checkpoint: false,
        })
    }
    /// The same model with another feed-forward activation in every layer.
    pub fn with_activation(mut self, activation: FeedForwardActivation) -> Transformer {
        for l in &mut self.encoder.layers {
            l.activation = activation;
        }
        self.decoder = self.decoder.with_activation(activation);
        self
    }
}

impl<E: TransformerEncoderModule, D: TransformerDecoderModule> Transformer<E, D> {
    /// A transformer from given halves (MLX's `custom_encoder`/`custom_decoder`).
    pub fn from_parts(encoder: E, decoder: D) -> Self {
        Transformer { encoder, decoder, checkpoint: false }
    }
    /// The same model with gradient checkpointing on or off.
    pub fn with_checkpoint(mut self, checkpoint: bool) -> Self {
        self.checkpoint = checkpoint;
        self
    }
    /// `decoder(tgt, encoder(src, src_mask), tgt_mask, memory_mask)`.
    pub fn apply(
        &self,
        src: &Array,
        tgt: &Array,
        src_mask: Option<&AttentionMask>,
        tgt_mask: Option<&AttentionMask>,
        memory_mask: Option<&AttentionMask>,
    ) -> Result<Array> {
        if self.checkpoint {
            let memory = self.encoder.encode_checkpointed(src, src_mask)?;
            self.decoder.decode_checkpointed(tgt, &memory, tgt_mask, memory_mask)
        } else {
            let memory = self.encoder.encode(src, src_mask)?;
            self.decoder.decode(tgt, &memory, tgt_mask, memory_mask)
        }
    }
}
