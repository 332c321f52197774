//! # kiln-models
//!
//! Models built from `kiln-nn` layers. [`gpt`] is the GPT-style transformer
//! language model that `kiln train` trains; [`tokenizer`] holds the
//! character-level tokenizer it uses.
#![warn(missing_docs)]

pub mod bpe;
pub mod gpt;
pub mod llama;
pub mod tokenizer;
mod unicode_tables;
