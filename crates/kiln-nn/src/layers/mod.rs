//! Layers, as MLX's `mlx.nn` classes of the same names.

mod attention;
mod basic;
mod conv;
mod norm;
mod quantized;
mod recurrent;
mod transformer;
mod upsample;

pub use attention::{
    create_additive_causal_mask, rope, scaled_dot_product_attention, ALiBi, AttentionMask, FeedForwardActivation,
    MultiHeadAttention, RoPE, SinusoidalPositionalEncoding, TransformerEncoder, TransformerEncoderLayer,
};
pub use basic::{Bilinear, Dropout, Dropout2d, Dropout3d, Embedding, Identity, Linear, Sequential, SequentialLayer};
pub use conv::{
    AvgPool1d, AvgPool2d, AvgPool3d, Conv, Conv1d, Conv2d, Conv3d, ConvTranspose, ConvTranspose1d, ConvTranspose2d,
    ConvTranspose3d, MaxPool1d, MaxPool2d, MaxPool3d, Pool, PoolKind,
};
pub use norm::{layer_norm, rms_norm, BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm, RunningStat};
pub use quantized::{
    quantize, AnyEmbedding, AnyLinear, Quantizable, QuantizeChoice, QuantizePredicate, QuantizedEmbedding,
    QuantizedLinear,
};
pub use recurrent::{RnnNonlinearity, GRU, LSTM, RNN};
pub use transformer::{
    Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerDecoderModule, TransformerEncoderModule,
};
pub use upsample::{upsample_cubic, upsample_linear, upsample_nearest, Upsample, UpsampleMode};
