//! Prompt and decode speed of a LLaMA model (e.g. SmolLM2-135M), and where a
//! decode step's time goes: building the graph, versus evaluating it.
//!
//!     cargo run --release -p kiln-models --example llama_bench -- MODEL [--dequantize] [--prompt-tokens 128] [--decode 64]

use kiln_core::{ops, Array, Dtype, Result};
use kiln_models::llama::{self, LayerWeights, Llama, LlamaConfig, Weight};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_model(path: &str, dequantize: bool, n_prompt: usize, n_decode: usize) -> Result<LlamaConfig> {
    let t = Instant::now();
    let (model, tok) = llama::load(path, dequantize)?;
    println!(
        "loaded in {:.2} s: {:.1} MiB of weights, peak RSS so far {:.1} MiB",
        t.elapsed().as_secs_f64(),
        model.nbytes() as f64 / 1048576.0,
        peak_rss_mib()
    );
    let text = "The history of the city begins with a small settlement on the river, where farmers and traders met. "
        .repeat(16);
    let mut ids = tok.encode(&text);
    ids.truncate(n_prompt);
    let prompt = Array::from_slice(&ids.iter().map(|&t| t as i32).collect::<Vec<_>>(), &[1, ids.len()])?;
    let run = |model: &Llama, timed: bool| -> Result<(f64, Vec<f64>, Vec<f64>)> {
        let mut cache = model.new_cache();
        let t = Instant::now();
        let l = model.forward_last(&prompt, Some(&mut cache))?;
        l.eval()?;
        let prompt_s = t.elapsed().as_secs_f64();
        let mut build = Vec::new();
        let mut total = Vec::new();
        let mut next = 0i32;
        for _ in 0..if timed { n_decode } else { 4 } {
            let t0 = Instant::now();
            let x = Array::from_slice(&[next], &[1, 1])?;
            let l = model.forward_last(&x, Some(&mut cache))?;
            let t1 = Instant::now();
            let v = l.to_vec::<f32>()?;
            next = (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as i32;
            build.push((t1 - t0).as_secs_f64());
            total.push(t0.elapsed().as_secs_f64());
        }
        Ok((prompt_s, build, total))
    };
    run(&model, false)?; // warm-up
    let mut prompts = Vec::new();
    let mut res = None;
    for _ in 0..3 {
        let r = run(&model, true)?;
        prompts.push(r.0);
        res = Some(r);
    }
    let (_, build, total) = res.unwrap();
    let p = median(prompts);
    let (b, tt) = (median(build), median(total));
    println!("prompt: {} tokens in {:.1} ms = {:.0} tokens/s", ids.len(), p * 1e3, ids.len() as f64 / p);
    println!(
        "decode: {:.2} ms/token = {:.1} tokens/s (graph building {:.3} ms, evaluation {:.2} ms)",
        tt * 1e3,
        1.0 / tt,
        b * 1e3,
        (tt - b) * 1e3
    );
    // The same through Llama::generate (greedy decoding is pipelined there).
    let mut tps = Vec::new();
    for _ in 0..3 {
        let st = model.generate(&ids, n_decode + 1, &llama::Sampling::default(), None, |_| Ok(true))?;
        tps.push(st.generation_tps());
    }
    println!("generate(): {:.1} tokens/s decode (pipelined greedy)", median(tps));
    Ok(model.config().clone())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: llama_bench MODEL [--dequantize] [--prompt-tokens N] [--decode N]");
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let dequantize = args.iter().any(|a| a == "--dequantize");
    let (n_prompt, n_decode) = (opt("--prompt-tokens", 128), opt("--decode", 64));
    let c = if path == "tiny" {
        LlamaConfig::from_hf_json(
            r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
                "num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":8192}"#,
        )?
    } else {
        bench_model(path, dequantize, n_prompt, n_decode)?
    };
    // The same graph with tiny matrices: its step time is almost all per-op overhead.
    let small = LlamaConfig { vocab_size: 64, hidden_size: 72, intermediate_size: 64, head_dim: 8, rope_dims: 8, ..c };
    let w = |r: usize, k: usize| Weight::Dense(ops::full(&[r, k], 0.01f32, Dtype::F32).unwrap());
    let layers = (0..small.num_layers)
        .map(|_| LayerWeights {
            attn_norm: ops::ones(&[72], Dtype::F32).unwrap(),
            q: w(72, 72),
            k: w(24, 72),
            v: w(24, 72),
            o: w(72, 72),
            ffn_norm: ops::ones(&[72], Dtype::F32).unwrap(),
            gate: w(64, 72),
            up: w(64, 72),
            down: w(72, 64),
        })
        .collect();
    let tiny = Llama::from_parts(small, w(64, 72), layers, ops::ones(&[72], Dtype::F32)?, None)?;
    let mut cache = tiny.new_cache();
    tiny.forward_last(&Array::from_slice(&[1i32, 2, 3], &[1, 3])?, Some(&mut cache))?.eval()?;
    let mut steps = Vec::new();
    let n_tiny: i32 = std::env::var("TINY_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    for i in 0..n_tiny {
        let t0 = Instant::now();
        tiny.forward_last(&Array::from_slice(&[i % 64], &[1, 1])?, Some(&mut cache))?.eval()?;
        steps.push(t0.elapsed().as_secs_f64());
    }
    println!("same graph with tiny weights: {:.3} ms/step (per-op overhead bound)", median(steps) * 1e3);
    println!(
        "peak RSS {:.1} MiB, peak Kiln arrays {:.1} MiB",
        peak_rss_mib(),
        kiln_core::get_peak_memory() as f64 / 1048576.0
    );
    Ok(())
}
