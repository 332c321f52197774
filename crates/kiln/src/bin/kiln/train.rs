//! `kiln train`: trains the GPT-style character model of `kiln-models` on a
//! text file, with a held-out split, a progress line, checkpoints and resume;
//! `kiln sample` generates from a checkpoint.

use crate::args::Args;
use kiln_core::{eval, ops, random, tree_flatten, tree_unflatten, Array, Dtype, Error, Result};
use kiln_models::gpt::{Gpt, GptConfig};
use kiln_models::tokenizer::CharTokenizer;
use kiln_nn::{self as nn, ModuleExt};
use kiln_optim::{clip_grad_norm, schedule, AdamW, Optimizer, TrainStep};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const TRAIN_HELP: &str = "usage: kiln train [flags]

Trains a GPT-style character-level language model and writes checkpoints.

  --data PATH        training text (default: data/shakespeare.txt)
  --out DIR          checkpoint directory (default: runs/shakespeare)
  --resume           continue from the checkpoint in --out
  --steps N          optimizer steps (default 1500)
  --batch N          sequences per step (default 32)
  --context N        tokens per sequence (default 128)
  --layers N         transformer blocks (default 4)
  --d-model N        residual width (default 128)
  --heads N          attention heads (default 4)
  --lr X             peak learning rate (default 3e-3)
  --min-lr X         final learning rate of the cosine schedule (default 3e-4)
  --warmup N         linear warm-up steps (default 100)
  --schedule S       cosine | constant (default cosine)
  --weight-decay X   AdamW weight decay (default 0.1)
  --eval-every N     held-out evaluation interval (default 250)
  --eval-batches N   batches per evaluation (default 8)
  --save-every N     checkpoint interval (default 500)
  --seed N           seed for initialisation and batches (default 0)
  --stop-at N        stop after step N, as if interrupted (the schedule still spans --steps)
  --eager            run each step op by op instead of as one compiled, fused graph";

pub const SAMPLE_HELP: &str =
    "usage: kiln sample --checkpoint DIR [--prompt TEXT] [--max-tokens N] [--temp T] [--seed N]

Generates text from a `kiln train` checkpoint (greedy when --temp 0).";

#[derive(Clone, Debug)]
struct TrainArgs {
    data: PathBuf,
    out: PathBuf,
    resume: bool,
    steps: usize,
    batch: usize,
    context: usize,
    layers: usize,
    d_model: usize,
    heads: usize,
    lr: f64,
    min_lr: f64,
    warmup: usize,
    cosine: bool,
    weight_decay: f64,
    eval_every: usize,
    eval_batches: usize,
    save_every: usize,
    seed: u64,
    eager: bool,
    stop_at: usize,
}

fn parse_train(raw: &[String]) -> std::result::Result<TrainArgs, String> {
    let known = [
        "data",
        "out",
        "steps",
        "batch",
        "context",
        "layers",
        "d-model",
        "heads",
        "lr",
        "min-lr",
        "warmup",
        "schedule",
        "weight-decay",
        "eval-every",
        "eval-batches",
        "save-every",
        "seed",
        "stop-at",
    ];
    let a = Args::parse(raw, &known, &["resume", "eager"])?;
    let schedule = a.get("schedule", "cosine".to_string())?;
    if schedule != "cosine" && schedule != "constant" {
        return Err(format!("--schedule must be cosine or constant, got '{schedule}'"));
    }
    let t = TrainArgs {
        data: a.get("data", PathBuf::from("data/shakespeare.txt"))?,
        out: a.get("out", PathBuf::from("runs/shakespeare"))?,
        resume: a.flag("resume"),
        steps: a.get("steps", 1500)?,
        batch: a.get("batch", 32)?,
        context: a.get("context", 128)?,
        layers: a.get("layers", 4)?,
        d_model: a.get("d-model", 128)?,
        heads: a.get("heads", 4)?,
        lr: a.get("lr", 3e-3)?,
        min_lr: a.get("min-lr", 3e-4)?,
        warmup: a.get("warmup", 100)?,
        cosine: schedule == "cosine",
        weight_decay: a.get("weight-decay", 0.1)?,
        eval_every: a.get("eval-every", 250)?,
        eval_batches: a.get("eval-batches", 8)?,
        save_every: a.get("save-every", 500)?,
        seed: a.get("seed", 0)?,
        eager: a.flag("eager"),
        stop_at: a.get("stop-at", usize::MAX)?,
    };
    if t.batch == 0 || t.context == 0 || t.steps == 0 || t.eval_every == 0 || t.save_every == 0 {
        return Err("--steps, --batch, --context, --eval-every and --save-every must be positive".into());
    }
    Ok(t)
}

/// SplitMix64: batch positions depend only on (seed, step), so a resumed run
/// sees exactly the batches the uninterrupted run would have.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `(inputs, targets)` of `batch` windows of `context + 1` tokens starting at
/// positions drawn from `stream`.
fn batch(tokens: &[u32], batch: usize, context: usize, stream: u64) -> Result<(Array, Array)> {
    let span = tokens.len() - context - 1;
    let mut x = Vec::with_capacity(batch * context);
    let mut y = Vec::with_capacity(batch * context);
    for b in 0..batch {
        let start = (splitmix(stream.wrapping_mul(1_000_003).wrapping_add(b as u64)) % span as u64) as usize;
        x.extend(tokens[start..start + context].iter().map(|&t| t as i32));
        y.extend(tokens[start + 1..start + context + 1].iter().map(|&t| t as i32));
    }
    Ok((Array::from_vec(x, &[batch, context])?, Array::from_vec(y, &[batch, context])?))
}

fn lr_schedule(t: &TrainArgs) -> Result<schedule::Schedule> {
    let warm = t.warmup.max(1) as u64;
    let warmup = schedule::linear_schedule(t.lr / warm as f64, t.lr, warm)?;
    let rest = if t.cosine {
        schedule::cosine_decay(t.lr, (t.steps as u64).saturating_sub(warm).max(1), t.min_lr)?
    } else {
        schedule::exponential_decay(t.lr, 1.0)
    };
    schedule::join_schedules(vec![warmup, rest], &[warm])
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::new(kiln_core::ErrorKind::Io, "kiln train", format!("{}: {e}", path.display()))
}

fn config_json(c: &GptConfig, tok: &CharTokenizer, step: usize, t: &TrainArgs, val_loss: Option<f64>) -> Value {
    json!({
        "model": "gpt",
        "vocab": tok.chars().iter().collect::<String>(),
        "context": c.context, "d_model": c.d_model, "n_layers": c.n_layers, "n_heads": c.n_heads, "d_ff": c.d_ff,
        "step": step,
        "val_loss": val_loss,
        "train": {
            "steps": t.steps, "batch": t.batch, "lr": t.lr, "min_lr": t.min_lr, "warmup": t.warmup,
            "cosine": t.cosine, "weight_decay": t.weight_decay, "seed": t.seed, "data": t.data.display().to_string(),
        },
    })
}

fn read_config(dir: &Path) -> Result<(GptConfig, CharTokenizer, usize)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid("kiln", format!("{} is not valid JSON: {e}", path.display())))?;
    let num = |k: &str| -> Result<usize> {
        v[k].as_u64().map(|x| x as usize).ok_or_else(|| Error::invalid("kiln", format!("{} lacks {k}", path.display())))
    };
    let vocab = v["vocab"].as_str().ok_or_else(|| Error::invalid("kiln", format!("{} lacks vocab", path.display())))?;
    let tok = CharTokenizer::from_chars(vocab.chars().collect())?;
    let c = GptConfig {
        vocab_size: tok.vocab_size(),
        context: num("context")?,
        d_model: num("d_model")?,
        n_layers: num("n_layers")?,
        n_heads: num("n_heads")?,
        d_ff: num("d_ff")?,
    };
    c.validate()?;
    Ok((c, tok, num("step")?))
}

fn save_checkpoint(dir: &Path, model: &Gpt, opt: &AdamW, config: &Value) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    // Write to temporary names and rename, so an interrupted save keeps the last good checkpoint.
    let tmp = |n: &str| dir.join(format!(".partial-{n}"));
    model.save_weights(tmp("model.safetensors"))?;
    let state = tree_flatten(&opt.state()?).into_iter().collect();
    kiln_core::io::save_safetensors(tmp("optimizer.safetensors"), &state, &Default::default())?;
    std::fs::write(tmp("config.json"), serde_json::to_string_pretty(config).unwrap_or_default())
        .map_err(|e| io_err(dir, e))?;
    for n in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        std::fs::rename(tmp(n), dir.join(n)).map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

fn evaluate(model: &Gpt, tokens: &[u32], t: &TrainArgs) -> Result<f64> {
    let mut total = 0.0;
    for i in 0..t.eval_batches {
        let (x, y) = batch(tokens, t.batch, t.context, u64::MAX - i as u64)?;
        total += model.loss(&x, &y)?.item::<f32>()? as f64;
    }
    Ok(total / t.eval_batches as f64)
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

pub fn train(raw: &[String]) -> Result<()> {
    let t = parse_train(raw).map_err(|e| Error::invalid("kiln train", e))?;
    let text = std::fs::read_to_string(&t.data).map_err(|e| io_err(&t.data, e))?;
    random::seed(t.seed);
    let (mut model, tok, mut start) = if t.resume {
        let (c, tok, step) = read_config(&t.out)?;
        let mut m = Gpt::new(c)?;
        m.load_weights(t.out.join("model.safetensors"), true)?;
        (m, tok, step)
    } else {
        let tok = CharTokenizer::from_text(&text)?;
        let c = GptConfig {
            vocab_size: tok.vocab_size(),
            context: t.context,
            d_model: t.d_model,
            n_layers: t.layers,
            n_heads: t.heads,
            d_ff: 4 * t.d_model,
        };
        (Gpt::new(c)?, tok, 0)
    };
    if model.config().context < t.context {
        return Err(Error::invalid(
            "kiln train",
            format!("--context {} exceeds the checkpoint's context {}.", t.context, model.config().context),
        ));
    }
    let tokens = tok.encode(&text)?;
    let split = tokens.len() * 9 / 10;
    let (train_toks, val_toks) = tokens.split_at(split);
    if val_toks.len() <= t.context + 1 || train_toks.len() <= t.context + 1 {
        return Err(Error::invalid("kiln train", "The text is too short for this context length."));
    }
    let mut opt = AdamW::with(lr_schedule(&t)?, (0.9, 0.95), 1e-8, t.weight_decay, true)?;
    if t.resume {
        let (state, _) = kiln_core::io::load_safetensors(t.out.join("optimizer.safetensors"))?;
        opt.set_state(&tree_unflatten(state)?)?;
    }
    if start >= t.steps {
        start = t.steps;
    }
    eprintln!(
        "kiln train: {} parameters, vocab {}, {} train / {} held-out tokens, steps {}..{}, batch {}x{}",
        model.num_parameters(),
        tok.vocab_size(),
        train_toks.len(),
        val_toks.len(),
        start,
        t.steps,
        t.batch,
        t.context
    );
    let loss_fn = |m: &Gpt, a: &[Array]| m.loss(&a[0], &a[1]);
    let vg = nn::value_and_grad(loss_fn);
    let compiled = if t.eager { None } else { Some(TrainStep::new(&model, &opt, loss_fn, Some(1.0))?) };
    let t0 = Instant::now();
    let mut smoothed: Option<f64> = None;
    let mut val_loss = None;
    let mut err = std::io::stderr();
    for step in start..t.steps.min(t.stop_at) {
        let (x, y) =
            batch(train_toks, t.batch, t.context, t.seed.wrapping_mul(0x1_0000_0001).wrapping_add(step as u64))?;
        let loss = match &compiled {
            Some(c) => c.run(&mut model, &mut opt, &[x, y])?,
            None => {
                let (loss, grads) = vg(&model, &[x, y])?;
                let (grads, _) = clip_grad_norm(&grads, 1.0)?;
                opt.update(&mut model, &grads)?;
                loss
            }
        };
        // Evaluate the new parameters and optimizer state now, so the graph does not grow across steps.
        let mut live: Vec<Array> = model.named_parameters().into_iter().map(|(_, a)| a).collect();
        live.extend(tree_flatten(&opt.state()?).into_iter().map(|(_, a)| a));
        live.push(loss.clone());
        eval(&live.iter().collect::<Vec<_>>())?;
        let l = loss.item::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::invalid("kiln train", format!("The loss became {l} at step {step}; try a lower --lr.")));
        }
        smoothed = Some(smoothed.map_or(l, |s| 0.95 * s + 0.05 * l));
        let done = step + 1;
        let elapsed = t0.elapsed().as_secs_f64();
        let per_step = elapsed / (done - start) as f64;
        let tok_s = (t.batch * t.context) as f64 / per_step;
        let width = 30;
        let filled = width * done / t.steps;
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} loss {:.4} | {:.0} tok/s | {} elapsed, ETA {}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            t.steps,
            smoothed.unwrap_or(l),
            tok_s,
            fmt_secs(elapsed),
            fmt_secs(per_step * (t.steps - done) as f64)
        );
        let _ = err.flush();
        if done.is_multiple_of(t.eval_every) || done == t.steps {
            let v = evaluate(&model, val_toks, &t)?;
            val_loss = Some(v);
            let _ =
                writeln!(err, "\nstep {done}: train loss {:.4}, held-out loss {v:.4} nats/char", smoothed.unwrap_or(l));
        }
        if done.is_multiple_of(t.save_every) || done == t.steps || done == t.stop_at {
            save_checkpoint(&t.out, &model, &opt, &config_json(model.config(), &tok, done, &t, val_loss))?;
        }
    }
    eprintln!();
    if let Some(v) = val_loss {
        println!("final held-out loss: {v:.4} nats/char; checkpoint in {}", t.out.display());
    }
    let sample = generate(&model, &tok, "\n", 200, 0.8, t.seed)?;
    println!("sample:\n{sample}");
    Ok(())
}

/// Autoregressive sampling: `max_tokens` characters after `prompt`, at
/// temperature `temp` (greedy at 0), keeping the last `context` tokens.
pub fn generate(
    model: &Gpt,
    tok: &CharTokenizer,
    prompt: &str,
    max_tokens: usize,
    temp: f32,
    seed: u64,
) -> Result<String> {
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        ids.push(0);
    }
    let ctx = model.config().context;
    let mut key = random::key(seed);
    let mut out = String::new();
    for _ in 0..max_tokens {
        let window = &ids[ids.len().saturating_sub(ctx)..];
        let x = Array::from_vec(window.iter().map(|&t| t as i32).collect(), &[1, window.len()])?;
        let logits = model.logits(&x)?;
        let last = ops::slice(
            &logits,
            &[0, window.len() as i64 - 1, 0],
            &[1, window.len() as i64, tok.vocab_size() as i64],
            &[1, 1, 1],
        )?;
        let last = ops::reshape_to(&last, &[tok.vocab_size()])?;
        let next = if temp <= 0.0 {
            ops::argmax(&last, None, false)?
        } else {
            let parts = random::split(&key, 2)?;
            key = ops::take(&parts, &Array::scalar(0i32), Some(0))?;
            let sub = ops::take(&parts, &Array::scalar(1i32), Some(0))?;
            random::categorical(&ops::divide(&last, temp)?, -1, random::Samples::One, Some(&sub))?
        };
        let id = ops::astype(&next, Dtype::U32)?.item::<u32>()?;
        ids.push(id);
        out.push_str(&tok.decode(&[id])?);
    }
    Ok(out)
}

pub fn sample(raw: &[String]) -> Result<()> {
    let a = Args::parse(raw, &["checkpoint", "prompt", "max-tokens", "temp", "seed"], &[])
        .map_err(|e| Error::invalid("kiln sample", e))?;
    let dir = PathBuf::from(
        a.opt("checkpoint").ok_or_else(|| Error::invalid("kiln sample", "--checkpoint DIR is required"))?,
    );
    let parse_err = |e: String| Error::invalid("kiln sample", e);
    let prompt: String = a.get("prompt", "\n".to_string()).map_err(parse_err)?;
    let max_tokens: usize = a.get("max-tokens", 500).map_err(parse_err)?;
    let temp: f32 = a.get("temp", 0.8).map_err(parse_err)?;
    let seed: u64 = a.get("seed", 0).map_err(parse_err)?;
    let (c, tok, _) = read_config(&dir)?;
    let mut model = Gpt::new(c)?;
    model.load_weights(dir.join("model.safetensors"), true)?;
    let text = generate(&model, &tok, &prompt, max_tokens, temp, seed)?;
    println!("{prompt}{text}");
    Ok(())
}
