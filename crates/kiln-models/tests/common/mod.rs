//! Shared helpers for the model tests: the SmolLM2 asset (fetched when missing).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The cache directory (`$KILN_CACHE` or `~/.cache/kiln`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("KILN_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kiln"),
    }
}

/// The SmolLM2-135M GGUF, running scripts/fetch_smollm2.sh if it is not cached
/// (so the tests never skip silently: no asset and no network is a failure).
pub fn smollm2_gguf() -> PathBuf {
    let p = cache_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.exists() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_smollm2.sh");
        let out = Command::new("bash").arg(&script).output().expect("run scripts/fetch_smollm2.sh");
        assert!(out.status.success(), "scripts/fetch_smollm2.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(p.exists(), "{} is missing after the fetch script ran", p.display());
    p
}

/// The converted Hugging Face directory (scripts/gguf_to_safetensors.py), if present.
pub fn smollm2_hf_dir() -> Option<PathBuf> {
    let d = cache_dir().join("smollm2-hf");
    (d.join("config.json").exists() && d.join("model.safetensors").exists()).then_some(d)
}

/// "Once upon a time," as SmolLM2 token ids.
pub const PROMPT_IDS: [u32; 5] = [6403, 1980, 253, 655, 28];

/// The greedy continuation of [`PROMPT_IDS`] (24 tokens, float32 arithmetic
/// over the dequantized weights; from independent numpy forward passes).
pub const GOLDEN: [u32; 24] = [
    260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228, 28, 351, 25854, 41658, 284, 14055, 9018, 30, 1249, 347, 260,
    929, 3514, 411, 28,
];
