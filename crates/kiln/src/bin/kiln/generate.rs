//! `kiln generate`: text generation with a LLaMA-family model (a GGUF file
//! or a Hugging Face safetensors directory), streamed to stdout; `kiln chat`:
//! an interactive loop over the model's ChatML template.

use crate::args::Args;
use kiln_core::{Error, Result};
use kiln_models::bpe::{BpeTokenizer, ChatMessage, StreamDecoder};
use kiln_models::llama::{self, GenerationStats, Llama, Sampling};
use std::io::{BufRead, Write};

pub const GENERATE_HELP: &str = "usage: kiln generate --model PATH --prompt TEXT [flags]

Generates text with a LLaMA-family model and streams it to stdout; speeds and
peak memory go to stderr.

  --model PATH       a .gguf file, or a directory with config.json, *.safetensors
                     and tokenizer.json
  --prompt TEXT      the prompt
  --max-tokens N     tokens to generate at most (default 128)
  --temp T           sampling temperature; 0 = greedy (default 0)
  --top-p P          nucleus sampling mass (default 1.0)
  --seed S           random seed (default 0)
  --chat             wrap the prompt in the model's chat template
  --dequantize       run a quantized GGUF in float32 instead of from packed weights";

pub const CHAT_HELP: &str =
    "usage: kiln chat --model PATH [--max-tokens N] [--temp T] [--top-p P] [--seed S] [--system TEXT] [--dequantize]

An interactive chat over the model's ChatML template: type a message, get the
reply; an empty line or end of input quits.";

const OP: &str = "kiln generate";

struct Common {
    model: String,
    max_tokens: usize,
    sampling: Sampling,
    dequantize: bool,
}

fn common(a: &Args, op: &str) -> Result<Common> {
    let e = |m: String| Error::invalid(op, m);
    let model = a.opt("model").ok_or_else(|| e("--model PATH is required".into()))?.to_string();
    let temperature: f32 = a.get("temp", 0.0).map_err(e)?;
    let top_p: f32 = a.get("top-p", 1.0).map_err(e)?;
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(e(format!("--temp must be a non-negative number, got {temperature}")));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(e(format!("--top-p must be in (0, 1], got {top_p}")));
    }
    Ok(Common {
        model,
        max_tokens: a.get("max-tokens", 128).map_err(e)?,
        sampling: Sampling { temperature, top_p, seed: a.get("seed", 0).map_err(e)? },
        dequantize: a.flag("dequantize"),
    })
}

/// Peak resident set size of this process in bytes (`VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn report(stats: &GenerationStats) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "\n[prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | peak memory: {:.1} MiB arrays, {} RSS]",
        stats.prompt_tokens,
        stats.prompt_tps(),
        stats.generated_tokens,
        stats.generation_tps(),
        mib(kiln_core::get_peak_memory() as u64),
        peak_rss().map_or("unknown".to_string(), |b| format!("{:.1} MiB", mib(b))),
    );
    if kiln_core::profile::enabled() {
        eprint!("{}", kiln_core::profile::report());
    }
}

/// Streams the reply to `prompt` to stdout; returns the generated ids and timings.
fn stream(
    model: &Llama,
    tok: &BpeTokenizer,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
) -> Result<(Vec<u32>, GenerationStats)> {
    let mut out = std::io::stdout().lock();
    let mut dec = StreamDecoder::new();
    let mut ids = Vec::new();
    let eos = tok.eos();
    let io = |e: std::io::Error| Error::new(kiln_core::ErrorKind::Io, OP, format!("Cannot write to stdout: {e}."));
    let stats = model.generate(prompt, max_tokens, sampling, eos, |t| {
        ids.push(t);
        if Some(t) != eos {
            out.write_all(dec.push(tok, t).as_bytes()).map_err(io)?;
            out.flush().map_err(io)?;
        }
        Ok(true)
    })?;
    out.write_all(dec.finish().as_bytes()).map_err(io)?;
    out.flush().map_err(io)?;
    Ok((ids, stats))
}

fn load(c: &Common) -> Result<(Llama, BpeTokenizer)> {
    llama::load(&c.model, c.dequantize)
}

/// `kiln generate`.
pub fn generate(raw: &[String]) -> Result<()> {
    let a = Args::parse(raw, &["model", "prompt", "max-tokens", "temp", "top-p", "seed"], &["chat", "dequantize"])
        .map_err(|e| Error::invalid(OP, e))?;
    let c = common(&a, OP)?;
    let prompt = a.opt("prompt").ok_or_else(|| Error::invalid(OP, "--prompt TEXT is required"))?.to_string();
    let (model, tok) = load(&c)?;
    let text = if a.flag("chat") {
        tok.apply_chat_template(&[ChatMessage::new("user", &prompt)], true)?
    } else {
        prompt.clone()
    };
    let ids = tok.encode(&text);
    if ids.is_empty() {
        return Err(Error::invalid(OP, "The prompt is empty."));
    }
    let ctx = model.config().max_position_embeddings;
    if ids.len() > ctx {
        return Err(Error::invalid(
            OP,
            format!("The prompt has {} tokens, more than the model's context of {ctx}.", ids.len()),
        ));
    }
    if !a.flag("chat") {
        print!("{prompt}");
    }
    let (_, stats) = stream(&model, &tok, &ids, c.max_tokens, &c.sampling)?;
    println!();
    report(&stats);
    Ok(())
}

/// `kiln chat`.
pub fn chat(raw: &[String]) -> Result<()> {
    const OPC: &str = "kiln chat";
    let a = Args::parse(raw, &["model", "max-tokens", "temp", "top-p", "seed", "system"], &["dequantize"])
        .map_err(|e| Error::invalid(OPC, e))?;
    let c = common(&a, OPC)?;
    let (model, tok) = load(&c)?;
    let mut messages = Vec::new();
    if let Some(s) = a.opt("system") {
        messages.push(ChatMessage::new("system", s));
    }
    let stdin = std::io::stdin();
    let mut sampling = c.sampling.clone();
    loop {
        eprint!("> ");
        let mut line = String::new();
        let n = stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::new(kiln_core::ErrorKind::Io, OPC, format!("Cannot read stdin: {e}.")))?;
        let line = line.trim_end_matches(['\n', '\r']);
        if n == 0 || line.is_empty() {
            return Ok(());
        }
        messages.push(ChatMessage::new("user", line));
        let ids = tok.encode(&tok.apply_chat_template(&messages, true)?);
        // The whole conversation is re-encoded each turn (simple, and cheap at this size).
        let (reply, stats) = stream(&model, &tok, &ids, c.max_tokens, &sampling)?;
        println!();
        report(&stats);
        let text: Vec<u32> = reply.into_iter().filter(|&t| Some(t) != tok.eos()).collect();
        messages.push(ChatMessage::new("assistant", &tok.decode(&text)));
        sampling.seed = sampling.seed.wrapping_add(1);
    }
}
