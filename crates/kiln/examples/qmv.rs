//! Quantized matmul probe: `M` rows of x (1 by default: decode-shaped)
//! against a model's worth of 4-bit and 8-bit matrices (more than the L2
//! holds), reporting the packed bytes streamed and GFLOP/s.
//!
//! `cargo run --release --example qmv -- N K COUNT BITS M`
use kiln::ops::{quantize, quantized_matmul, random, QuantSpec};
use kiln::Dtype;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, k, count, bits) = (
        args.first().copied().unwrap_or(1536),
        args.get(1).copied().unwrap_or(576),
        args.get(2).copied().unwrap_or(40),
        args.get(3).copied().unwrap_or(4) as u32,
    );
    let m = args.get(4).copied().unwrap_or(1);
    let spec = QuantSpec::affine(32, bits);
    let mats: Vec<_> = (0..count)
        .map(|_| {
            let w = random::normal(&[n, k], Dtype::F32, None, None, None).unwrap();
            let (q, s, b) = quantize(&w, spec).unwrap();
            kiln::eval(&[&q, &s, b.as_ref().unwrap()]).unwrap();
            (q, s, b.unwrap())
        })
        .collect();
    let x = random::normal(&[m, k], Dtype::F32, None, None, None).unwrap();
    x.eval().unwrap();
    let bytes: usize = mats.iter().map(|(q, s, b)| q.nbytes() + s.nbytes() + b.nbytes()).sum();
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        for (q, s, b) in &mats {
            quantized_matmul(&x, q, s, Some(b), true, spec).unwrap().eval().unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{count} × ({m}×{k} @ ({n}×{k}, {bits}-bit)ᵀ): {:.3} ms per pass, {:.1} µs per matmul, {:.2} GB/s, {:.1} GFLOP/s",
        best * 1e3,
        best * 1e6 / count as f64,
        bytes as f64 / best / 1e9,
        2.0 * (m * n * k * count) as f64 / best / 1e9
    );
}
