//! Memory behaviour through the memory API. The allocator's counters are
//! process-wide, so everything runs inside one test function in its own binary.

use kiln_core::{ops, Array, ErrorKind};

#[test]
fn memory_api_donation_detach_and_limits() {
    // 1. A chain of 20 elementwise ops on a 64 MB input peaks at no more than
    //    3x the input: donation reuses buffers and detach frees intermediates.
    let n = 16 * 1024 * 1024;
    let x = Array::from_vec(vec![0.5f32; n], &[n]).unwrap();
    let input_bytes = x.nbytes();
    let start = kiln_core::get_active_memory();
    kiln_core::reset_peak_memory();
    let mut y = &x * 1.5;
    for i in 0..19 {
        y = match i % 3 {
            0 => &y + 0.5,
            1 => &y * 0.75,
            _ => &y - &x,
        };
    }
    y.eval().unwrap();
    let peak = kiln_core::get_peak_memory();
    assert!(
        peak <= start + 2 * input_bytes + (1 << 20),
        "peak {peak} bytes with {start} active before; input is {input_bytes} bytes"
    );
    assert!(peak <= 3 * input_bytes + (1 << 20));
    // Spot-check the values: the recurrence on a constant input.
    let mut v = 0.5f32 * 1.5;
    for i in 0..19 {
        v = match i % 3 {
            0 => v + 0.5,
            1 => v * 0.75,
            _ => v - 0.5,
        };
    }
    let got = y.to_vec::<f32>().unwrap();
    assert!((got[0] - v).abs() < 1e-6 && (got[n - 1] - v).abs() < 1e-6, "{} vs {v}", got[0]);
    drop(got);

    // 2. Dropping the result returns active memory to where it started.
    drop(y);
    assert_eq!(kiln_core::get_active_memory(), start);

    // 3. Freed buffers are cached; clear_cache returns them.
    assert!(kiln_core::get_cache_memory() > 0);
    kiln_core::clear_cache();
    assert_eq!(kiln_core::get_cache_memory(), 0);

    // 4. The memory limit turns an oversized allocation into an error, not an abort.
    let prev = kiln_core::set_memory_limit(start + 10 * input_bytes);
    let big = ops::zeros(&[20 * n], kiln_core::Dtype::F32).unwrap();
    let err = big.eval().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    assert!(err.to_string().starts_with("[malloc]"), "{err}");
    kiln_core::set_memory_limit(prev);
    assert_eq!(kiln_core::get_memory_limit(), prev);
    big.eval().unwrap();
    drop(big);

    // 5. The cache limit bounds what is kept.
    let old = kiln_core::set_cache_limit(0);
    let t = ops::zeros(&[1024], kiln_core::Dtype::F32).unwrap();
    t.eval().unwrap();
    drop(t);
    assert_eq!(kiln_core::get_cache_memory(), 0);
    kiln_core::set_cache_limit(old);
    assert_eq!(kiln_core::get_active_memory(), start);
    drop(x);
}
