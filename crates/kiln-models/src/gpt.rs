//! A GPT-style decoder-only transformer language model: token and learned
//! position embeddings, pre-norm blocks of causal self-attention and a GELU
//! MLP, a final norm, and an output head tied to the token embedding.

use kiln_core::{ops, Array, Dtype, Error, Result};
use kiln_nn::{self as nn, AttentionMask, Forward};

/// Model sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptConfig {
    /// Number of tokens.
    pub vocab_size: usize,
    /// Longest sequence (learned position embeddings).
    pub context: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads per block (must divide `d_model`).
    pub n_heads: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
}

impl GptConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let fields = [self.vocab_size, self.context, self.d_model, self.n_layers, self.n_heads, self.d_ff];
        if fields.contains(&0) {
            return Err(Error::invalid("GptConfig", format!("Every size must be positive: {self:?}.")));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::invalid(
                "GptConfig",
                format!("d_model ({}) must be divisible by n_heads ({}).", self.d_model, self.n_heads),
            ));
        }
        Ok(())
    }
}

/// One pre-norm block.
#[derive(Clone, Debug, nn::Module)]
pub struct Block {
    /// Norm before attention.
    pub ln1: nn::LayerNorm,
    /// Causal self-attention.
    pub attn: nn::MultiHeadAttention,
    /// Norm before the MLP.
    pub ln2: nn::LayerNorm,
    /// `d_model → d_ff`.
    pub fc: nn::Linear,
    /// `d_ff → d_model`.
    pub proj: nn::Linear,
}

impl Block {
    fn new(c: &GptConfig) -> Result<Block> {
        Ok(Block {
            ln1: nn::LayerNorm::new(c.d_model, 1e-5, true, true)?,
            attn: nn::MultiHeadAttention::new(c.d_model, c.n_heads, false)?,
            ln2: nn::LayerNorm::new(c.d_model, 1e-5, true, true)?,
            fc: nn::Linear::new(c.d_model, c.d_ff, true)?,
            proj: nn::Linear::new(c.d_ff, c.d_model, true)?,
        })
    }

    fn apply(&self, x: &Array) -> Result<Array> {
        let h = self.ln1.forward(x)?;
        let x = ops::add(x, &self.attn.attend(&h, &h, &h, Some(&AttentionMask::Causal))?)?;
        let h = nn::gelu_approx(&self.fc.forward(&self.ln2.forward(&x)?)?)?;
        ops::add(&x, &self.proj.forward(&h)?)
    }
}

/// The language model.
#[derive(Clone, Debug, nn::Module)]
pub struct Gpt {
    /// Token embedding, also the output head.
    pub wte: nn::Embedding,
    /// Position embedding.
    pub wpe: nn::Embedding,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub ln_f: nn::LayerNorm,
    #[module(skip)]
    config: GptConfig,
}

impl Gpt {
    /// A freshly initialised model (embeddings normal with std 0.02, as GPT-2).
    pub fn new(config: GptConfig) -> Result<Gpt> {
        config.validate()?;
        let mut wte = nn::Embedding::new(config.vocab_size, config.d_model)?;
        wte.weight = nn::Param::new(nn::init::normal(&[config.vocab_size, config.d_model], 0.0, 0.02, Dtype::F32)?);
        let mut wpe = nn::Embedding::new(config.context, config.d_model)?;
        wpe.weight = nn::Param::new(nn::init::normal(&[config.context, config.d_model], 0.0, 0.02, Dtype::F32)?);
        let blocks = (0..config.n_layers).map(|_| Block::new(&config)).collect::<Result<_>>()?;
        Ok(Gpt { wte, wpe, blocks, ln_f: nn::LayerNorm::new(config.d_model, 1e-5, true, true)?, config })
    }

    /// The sizes.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Logits `(B, T, vocab)` for token ids `(B, T)` with `T ≤ context`.
    pub fn logits(&self, tokens: &Array) -> Result<Array> {
        if tokens.ndim() != 2 {
            return Err(Error::invalid("Gpt", format!("Tokens must be (batch, time), got {:?}.", tokens.shape())));
        }
        let t = tokens.shape()[1];
        if t == 0 || t > self.config.context {
            return Err(Error::invalid(
                "Gpt",
                format!("The sequence length {t} must be between 1 and the context ({}).", self.config.context),
            ));
        }
        let pos = ops::arange_int(0, t as i64, 1)?;
        let mut x = ops::add(&self.wte.forward(tokens)?, &self.wpe.forward(&pos)?)?;
        for b in &self.blocks {
            x = b.apply(&x)?;
        }
        self.wte.as_linear(&self.ln_f.forward(&x)?)
    }

    /// Mean next-token cross entropy of `inputs (B, T)` against `targets (B, T)`.
    pub fn loss(&self, inputs: &Array, targets: &Array) -> Result<Array> {
        let logits = self.logits(inputs)?;
        nn::losses::cross_entropy(&logits, targets, None, -1, 0.0, nn::losses::Reduction::Mean)
    }
}

impl Forward for Gpt {
    fn forward(&self, tokens: &Array) -> Result<Array> {
        self.logits(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_nn::{Module, ModuleExt};

    fn tiny() -> GptConfig {
        GptConfig { vocab_size: 11, context: 8, d_model: 16, n_layers: 2, n_heads: 4, d_ff: 32 }
    }

    #[test]
    fn shapes_keys_and_causality() {
        let m = Gpt::new(tiny()).unwrap();
        let keys: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys[0], "wte.weight");
        assert!(keys.contains(&"blocks.1.attn.query_proj.weight".to_string()));
        assert_eq!(keys.len(), 2 + 2 * 12 + 2);
        let tokens = Array::from_slice(&[1i32, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1], &[2, 6]).unwrap();
        let y = m.logits(&tokens).unwrap();
        assert_eq!(y.shape(), &[2, 6, 11]);
        // Changing a later token leaves earlier logits unchanged.
        let tokens2 = Array::from_slice(&[1i32, 2, 3, 4, 5, 0, 7, 8, 9, 10, 0, 1], &[2, 6]).unwrap();
        let y2 = m.logits(&tokens2).unwrap();
        let first = |a: &Array| ops::slice(a, &[0, 0, 0], &[1, 5, 11], &[1, 1, 1]).unwrap().to_vec::<f32>().unwrap();
        let (a, b) = (first(&y), first(&y2));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5);
        }
        assert!(m.logits(&ops::zeros(&[1, 9], Dtype::I32).unwrap()).is_err());
        assert!(Gpt::new(GptConfig { n_heads: 3, ..tiny() }).is_err());
    }

    #[test]
    fn a_few_steps_reduce_the_loss() {
        kiln_core::random::seed(3);
        let mut m = Gpt::new(tiny()).unwrap();
        let data: Vec<i32> = (0..64i32).map(|i| i * 7 % 11).collect();
        let x = Array::from_slice(&data[..48], &[6, 8]).unwrap();
        let y = Array::from_slice(&data[1..49], &[6, 8]).unwrap();
        let vg = nn::value_and_grad(|m: &Gpt, a: &[Array]| m.loss(&a[0], &a[1]));
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..30 {
            let (loss, grads) = vg(&m, &[x.clone(), y.clone()]).unwrap();
            let l = loss.item::<f32>().unwrap();
            first.get_or_insert(l);
            last = l;
            let flat: std::collections::HashMap<String, Array> = kiln_core::tree_flatten(&grads).into_iter().collect();
            m.visit_params_mut("", &mut |k, p| {
                let g = &flat[k];
                p.set(ops::subtract(p.value(), &ops::multiply(g, 0.05).unwrap()).unwrap());
            });
        }
        assert!(last < first.unwrap() * 0.8, "loss {first:?} -> {last}");
    }
}
