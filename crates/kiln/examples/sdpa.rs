//! Attention probe: the fused forward and backward kernels of
//! `scaled_dot_product_attention` at a training shape, in GFLOP/s of the
//! full (unmasked) products.
//!
//! `cargo run --release --example sdpa -- B H L D [causal=1] [reps] [only: 1 forward, 2 backward]`
use kiln::ops::fast::{scaled_dot_product_attention, AttentionMask};
use kiln::ops::random;
use kiln::Dtype;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (b, h, l, d, causal, reps) = (get(0, 16), get(1, 4), get(2, 128), get(3, 64), get(4, 1) == 1, get(5, 50));
    let only = get(6, 0);
    let x = |s: &[usize]| {
        let r = random::normal(s, Dtype::F32, None, None, None).unwrap();
        r.eval().unwrap();
        r
    };
    let (q, k, v, g) = (x(&[b, h, l, d]), x(&[b, h, l, d]), x(&[b, h, l, d]), x(&[b, h, l, d]));
    let mask = if causal { AttentionMask::Causal } else { AttentionMask::None };
    let scale = 1.0 / (d as f32).sqrt();
    // One product of the attention: 2·B·H·L·L·D flops (the causal mask skips about half).
    let prod = 2.0 * (b * h * l * l * d) as f64;
    let time = |f: &dyn Fn()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let fwd = if only == 2 {
        f64::NAN
    } else {
        time(&|| scaled_dot_product_attention(&q, &k, &v, scale, mask).unwrap().eval().unwrap())
    };
    let bwd = if only == 1 {
        f64::NAN
    } else {
        time(&|| {
            let (_, gr) = kiln::vjp(
                |xs: &[kiln::Array]| Ok(vec![scaled_dot_product_attention(&xs[0], &xs[1], &xs[2], scale, mask)?]),
                &[q.clone(), k.clone(), v.clone()],
                std::slice::from_ref(&g),
            )
            .unwrap();
            kiln::eval(&gr.iter().collect::<Vec<_>>()).unwrap();
        })
    };
    println!("forward  {:8.3} ms  {:6.1} GFLOP/s (2 products)", fwd * 1e3, 2.0 * prod / fwd / 1e9);
    println!("backward {:8.3} ms  {:6.1} GFLOP/s (5 products)", bwd * 1e3, 5.0 * prod / bwd / 1e9);
}
