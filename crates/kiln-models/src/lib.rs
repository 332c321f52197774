//! # kiln-models
//!
//! Models built from `kiln-nn` layers. [`gpt`] is the GPT-style transformer
//! language model that `kiln train` trains; [`tokenizer`] holds the
//! character-level tokenizer it uses.
#![warn(missing_docs)]

pub mod gpt;
pub mod tokenizer;
