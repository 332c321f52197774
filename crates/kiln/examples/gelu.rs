//! Fused elementwise probe: a compiled `gelu_approx(x + b)` and its gradient
//! at the transformer step's FFN shape, in GB/s of the arrays read and written.
//!
//! `cargo run --release --example gelu -- B L F [reps]`
use kiln::ops::{self, random};
use kiln::{Array, Dtype};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (b, l, f, reps) = (get(0, 16), get(1, 128), get(2, 1024), get(3, 50));
    let x = |s: &[usize]| {
        let r = random::normal(s, Dtype::F32, None, None, None).unwrap();
        r.eval().unwrap();
        r
    };
    let (h, bias, g) = (x(&[b, l, f]), x(&[f]), x(&[b, l, f]));
    let fwd = kiln::compile(|xs: &[Array]| Ok(vec![kiln_nn::gelu_approx(&ops::add(&xs[0], &xs[1])?)?]));
    let bwd = kiln::compile(|xs: &[Array]| {
        let (_, gr) =
            kiln::vjp(|ys: &[Array]| Ok(vec![kiln_nn::gelu_approx(&ops::add(&ys[0], &ys[1])?)?]), &xs[..2], &xs[2..3])?;
        Ok(vec![gr[0].clone()])
    });
    let time = |f: &dyn Fn() -> Vec<Array>| {
        kiln::eval(&f().iter().collect::<Vec<_>>()).unwrap();
        let t = Instant::now();
        for _ in 0..reps {
            kiln::eval(&f().iter().collect::<Vec<_>>()).unwrap();
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let mb = (b * l * f * 4) as f64 / 1e6;
    let tf = time(&|| fwd(&[h.clone(), bias.clone()]).unwrap());
    let tb = time(&|| bwd(&[h.clone(), bias.clone(), g.clone()]).unwrap());
    println!("forward  {:7.3} ms  {:6.1} GB/s (1 read, 1 write)", tf * 1e3, 2.0 * mb / tf / 1e3);
    println!("backward {:7.3} ms  {:6.1} GB/s (2 reads, 1 write)", tb * 1e3, 3.0 * mb / tb / 1e3);
}
