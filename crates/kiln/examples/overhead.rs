//! Per-op overhead probe: a chain of 1000 adds on 16 elements, then one eval.
use kiln::Array;
use std::time::Instant;

fn main() {
    let x = Array::from_slice(&[1.0f32; 16], &[16]).unwrap();
    let mut times = vec![];
    for _ in 0..200 {
        let t = Instant::now();
        let mut y = x.clone();
        for _ in 0..1000 {
            y = &y + &x;
        }
        y.eval().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median {:.3} us/op", times[times.len() / 2] * 1e6 / 1000.0);
}
