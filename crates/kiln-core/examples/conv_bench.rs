//! Times the target convolution workload: conv2d, batch 8, 64 -> 64 channels,
//! 56x56, 3x3 kernel, padding 1, f32 (channels-last). Run with
//! `cargo run --release -p kiln-core --example conv_bench`.

use kiln_core::{ops, Array};
use std::time::Instant;

fn main() {
    let (n, h, w, c, co) = (8usize, 56usize, 56usize, 64usize, 64usize);
    let xs: Vec<f32> = (0..n * h * w * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let ws: Vec<f32> = (0..co * 9 * c).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let x = Array::from_slice(&xs, &[n, h, w, c]).unwrap();
    let wt = Array::from_slice(&ws, &[co, 3, 3, c]).unwrap();
    let flops = 2.0 * (n * h * w * co * 9 * c) as f64;
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let y = ops::conv2d(&x, &wt, [1, 1], [1, 1], [1, 1], 1).unwrap();
        y.eval().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("kiln conv2d 8x56x56x64 -> 64, 3x3 pad 1, f32: {:.2} ms, {:.1} GFLOP/s", best * 1e3, flops / best / 1e9);
}
