//! Matmul probe: `[B, M, K] @ [K, N]` (or, with `t=1`, `[B, K, M]ᵀ @ [B, K, N]`, the
//! weight-gradient form; with `t=2`, `[B, M, K] @ [N, K]ᵀ`, a linear layer) in GFLOP/s.
//!
//! `cargo run --release --example mm -- B M N K [t] [reps]`
use kiln::ops::random;
use kiln::Dtype;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (b, m, n, k, t, reps) = (get(0, 16), get(1, 128), get(2, 256), get(3, 256), get(4, 0), get(5, 100));
    let x = |s: &[usize]| {
        let r = random::normal(s, Dtype::F32, None, None, None).unwrap();
        r.eval().unwrap();
        r
    };
    let (lhs, rhs) = if t == 1 {
        (kiln::ops::swapaxes(&x(&[b, k, m]), 1, 2).unwrap(), x(&[b, k, n]))
    } else if t == 2 {
        (x(&[b, m, k]), kiln::ops::swapaxes(&x(&[n, k]), 0, 1).unwrap())
    } else {
        (x(&[b, m, k]), x(&[k, n]))
    };
    let f = || kiln::ops::matmul(&lhs, &rhs).unwrap().eval().unwrap();
    f();
    let mut best = f64::MAX;
    let mut total = 0.0;
    for _ in 0..reps {
        let t0 = Instant::now();
        f();
        let dt = t0.elapsed().as_secs_f64();
        best = best.min(dt);
        total += dt;
    }
    let fl = 2.0 * (b * m * n * k) as f64;
    println!(
        "mean {:8.3} ms {:6.1} GFLOP/s   best {:8.3} ms {:6.1} GFLOP/s",
        total / reps as f64 * 1e3,
        fl / (total / reps as f64) / 1e9,
        best * 1e3,
        fl / best / 1e9
    );
}
