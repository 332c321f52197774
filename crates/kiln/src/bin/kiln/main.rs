//! The `kiln` command line:
//! - `kiln train` trains a GPT-style character model on a text (the main job),
//! - `kiln sample` generates text from a checkpoint,
//! - `kiln generate` / `kiln chat` run a LLaMA-family model (GGUF or safetensors),
//! - `kiln demo` builds, differentiates and vectorises a small computation.

mod args;
mod generate;
mod train;

use kiln::{ops, Array, Axes, Result};
use std::process::ExitCode;

const HELP: &str = "usage: kiln <command> [flags]

commands:
  train    train a character-level transformer language model (kiln train --help)
  sample   generate text from a checkpoint (kiln sample --help)
  generate generate text with a LLaMA-family model, e.g. SmolLM2 (kiln generate --help)
  chat     chat with a LLaMA-family model (kiln chat --help)
  demo     build, differentiate and vectorise a small computation";

fn demo() -> Result<()> {
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    let w = Array::from_slice(&[0.5f32, -1.0, 2.0], &[3])?;
    println!("x = {x}");
    println!("w = {w}");

    // Ops only record a graph; printing evaluates it.
    let y = ops::exp(&(&(&x * &w) * 0.1))?;
    println!("y = exp(0.1 * x * w) = {y}");
    let s = ops::sum(&y, 1, false)?;
    println!("row sums = {s}");

    // Gradient of a scalar loss with respect to w.
    let loss = |args: &[Array]| -> Result<Vec<Array>> {
        let p = &args[0] * &args[1];
        Ok(vec![ops::sum(&(&p * &p), Axes::All, false)?])
    };
    let g = kiln::grad(loss, &[1])(&[x.clone(), w.clone()])?;
    println!("d/dw sum((x*w)^2) = {}", g[0]);

    // vmap: apply a per-row function to every row at once.
    let row_dot = |args: &[Array]| -> Result<Vec<Array>> { Ok(vec![ops::sum(&(&args[0] * &args[1]), 0, false)?]) };
    let v = kiln::vmap(row_dot, &[Some(0), None], &[0])(&[x, w])?;
    println!("vmap(row . w) = {}", v[0]);
    Ok(())
}

fn report(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let wants_help = rest.iter().any(|a| a == "--help" || a == "-h");
    match args.first().map(String::as_str) {
        Some("train") if wants_help => {
            println!("{}", train::TRAIN_HELP);
            ExitCode::SUCCESS
        }
        Some("sample") if wants_help => {
            println!("{}", train::SAMPLE_HELP);
            ExitCode::SUCCESS
        }
        Some("generate") if wants_help => {
            println!("{}", generate::GENERATE_HELP);
            ExitCode::SUCCESS
        }
        Some("chat") if wants_help => {
            println!("{}", generate::CHAT_HELP);
            ExitCode::SUCCESS
        }
        Some("generate") => report(generate::generate(rest)),
        Some("chat") => report(generate::chat(rest)),
        Some("train") => report(train::train(rest)),
        Some("sample") => report(train::sample(rest)),
        Some("demo") => report(demo()),
        None | Some("--help") | Some("-h") | Some("help") => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("kiln: unknown command '{other}' (try 'kiln help')");
            ExitCode::from(2)
        }
    }
}
