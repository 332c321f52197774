//! The fft namespace: golden values against MLX 0.32.4, transform rules,
//! round trips, large and odd sizes against a direct DFT, and error cases.

mod common;

use common::{check_grad_eps, check_vmap, load, values, Case, Rng};
use kiln_core::fft::{self, IstftOptions, Norm, StftOptions};
use kiln_core::{c64, ops, Array, Dtype, Result};

fn norm_of(c: &Case) -> Result<Norm> {
    match c.kw("norm").and_then(|v| v.as_str()) {
        Some(s) => Norm::from_name(&c.op, s),
        None => Ok(Norm::Backward),
    }
}

fn ints(c: &Case, k: &str) -> Option<Vec<i64>> {
    c.kw(k).map(|v| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect())
}

fn axes32(c: &Case) -> Option<Vec<i32>> {
    ints(c, "axes").map(|v| v.iter().map(|&x| x as i32).collect())
}

fn usize_kw(c: &Case, k: &str) -> Option<usize> {
    c.kw_i64(k).map(|v| v as usize)
}

/// Runs one golden case through Kiln (`vjp:<op>`/`jvp:<op>`: the transform
/// rule of `<op>` at `inputs[0]` applied to `inputs[1]`).
fn run(c: &Case) -> Result<Array> {
    if let Some((rule, op)) = c.op.split_once(':') {
        let f = move |xs: &[Array]| Ok(vec![run_op(c, op, &xs[0])?]);
        let x = std::slice::from_ref(&c.inputs[0]);
        let v = std::slice::from_ref(&c.inputs[1]);
        return Ok(if rule == "vjp" { kiln_core::vjp(f, x, v)?.1 } else { kiln_core::jvp(f, x, v)?.1 }[0].clone());
    }
    let x = if c.inputs.is_empty() { Array::scalar(0.0f32) } else { c.inputs[0].clone() };
    run_op(c, &c.op, &x)
}

fn run_op(c: &Case, op: &str, x: &Array) -> Result<Array> {
    let x = || x.clone();
    let norm = norm_of(c)?;
    let n = c.kw_i64("n");
    let axis = c.kw_i64("axis").unwrap_or(-1) as i32;
    let s = ints(c, "s");
    let axes = axes32(c);
    let (s, axes) = (s.as_deref(), axes.as_deref());
    match op {
        "fft" => fft::fft(&x(), n, axis, norm),
        "ifft" => fft::ifft(&x(), n, axis, norm),
        "rfft" => fft::rfft(&x(), n, axis, norm),
        "irfft" => fft::irfft(&x(), n, axis, norm),
        "fft2" => fft::fft2(&x(), s, axes, norm),
        "ifft2" => fft::ifft2(&x(), s, axes, norm),
        "rfft2" => fft::rfft2(&x(), s, axes, norm),
        "irfft2" => fft::irfft2(&x(), s, axes, norm),
        "fftn" => fft::fftn(&x(), s, axes, norm),
        "ifftn" => fft::ifftn(&x(), s, axes, norm),
        "rfftn" => fft::rfftn(&x(), s, axes, norm),
        "irfftn" => fft::irfftn(&x(), s, axes, norm),
        "fftshift" => fft::fftshift(&x(), axes),
        "ifftshift" => fft::ifftshift(&x(), axes),
        "fftfreq" => fft::fftfreq(c.kw_i64("n").unwrap(), c.kw_f64("d").unwrap_or(1.0)),
        "rfftfreq" => fft::rfftfreq(c.kw_i64("n").unwrap(), c.kw_f64("d").unwrap_or(1.0)),
        "stft" => {
            let opts = StftOptions {
                n_fft: usize_kw(c, "n_fft").unwrap_or(2048),
                hop_length: usize_kw(c, "hop_length"),
                win_length: usize_kw(c, "win_length"),
                window: c.inputs.get(1).cloned(),
                center: c.kw_bool("center", true),
                pad_mode: c.kw("pad_mode").and_then(|v| v.as_str()).unwrap_or("reflect").to_string(),
                norm,
                onesided: c.kw("onesided").and_then(|v| v.as_bool()),
            };
            fft::stft(&x(), &opts)
        }
        "istft" => {
            let opts = IstftOptions {
                n_fft: usize_kw(c, "n_fft"),
                hop_length: usize_kw(c, "hop_length"),
                win_length: usize_kw(c, "win_length"),
                window: c.inputs.get(1).cloned(),
                center: c.kw_bool("center", true),
                norm,
                onesided: c.kw("onesided").and_then(|v| v.as_bool()),
                length: usize_kw(c, "length"),
            };
            fft::istft(&x(), &opts)
        }
        op => panic!("unknown op {op}"),
    }
}

/// Compares with a tolerance relative to the largest magnitude of the
/// expected output (FFT rounding scales with the norm of the whole line).
fn close(actual: &Array, expected: &Array, rtol: f64) -> std::result::Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!("dtype {} != expected {}", actual.dtype(), expected.dtype()));
    }
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?} != expected {:?}", actual.shape(), expected.shape()));
    }
    let (a, e) = (values(actual), values(expected));
    let scale = e.iter().map(|(r, i)| r.hypot(*i)).fold(0.0f64, f64::max).max(1.0);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        if (x.0 - y.0).abs() > rtol * scale || (x.1 - y.1).abs() > rtol * scale {
            return Err(format!("element {i}: {x:?} != expected {y:?}"));
        }
    }
    Ok(())
}

#[test]
fn golden_mlx() {
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut errors = 0;
    for c in load("fft.json") {
        ran += 1;
        let got = run(&c);
        match (&c.error, got) {
            (Some(_), Err(_)) => errors += 1,
            (Some((cls, msg)), Ok(_)) => failures.push(format!("{}: expected {cls} ({msg}), got Ok", c.id)),
            (None, Err(e)) => failures.push(format!("{}: unexpected error {e}", c.id)),
            (None, Ok(out)) => {
                if let Err(m) = close(&out, &c.out[0], 2e-6) {
                    failures.push(format!("{}: {m}", c.id));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} golden cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(ran > 250 && errors > 20, "ran {ran} cases, {errors} errors");
}

// ------------------------------------------------------------ direct DFT reference

/// Direct O(n^2) DFT in f64 of complex rows (`sign` -1 forward, +1 inverse), unnormalised.
fn dft(x: &[(f64, f64)], sign: f64) -> Vec<(f64, f64)> {
    let n = x.len();
    (0..n)
        .map(|k| {
            let mut acc = (0.0, 0.0);
            for (t, &(re, im)) in x.iter().enumerate() {
                let a = sign * 2.0 * std::f64::consts::PI * ((k * t) % n) as f64 / n as f64;
                let (c, s) = (a.cos(), a.sin());
                acc.0 += re * c - im * s;
                acc.1 += re * s + im * c;
            }
            acc
        })
        .collect()
}

fn complex_array(rng: &mut Rng, shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<c64> = (0..n).map(|_| c64::new(rng.uniform(-1.0, 1.0) as f32, rng.uniform(-1.0, 1.0) as f32)).collect();
    Array::from_vec(v, shape).unwrap()
}

fn max_err(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x.0 - y.0).abs().max((x.1 - y.1).abs())).fold(0.0, f64::max)
}

/// Sizes rustfft handles with different algorithms: powers of two, mixed radix,
/// primes (Rader / Bluestein), and large prime factors.
const SIZES: &[usize] = &[1, 2, 3, 4, 9, 30, 64, 97, 127, 210, 256, 509, 1000, 1024, 1031];

#[test]
fn fft_matches_direct_dft_on_many_sizes() {
    let mut rng = Rng::new(3);
    for &n in SIZES {
        let x = complex_array(&mut rng, &[2, n]);
        let xv = values(&x);
        for (inverse, sign) in [(false, -1.0), (true, 1.0)] {
            let y =
                if inverse { fft::ifft(&x, None, -1, Norm::Forward) } else { fft::fft(&x, None, -1, Norm::Backward) }
                    .unwrap();
            let yv = values(&y);
            for r in 0..2 {
                let want = dft(&xv[r * n..(r + 1) * n], sign);
                let err = max_err(&yv[r * n..(r + 1) * n], &want);
                assert!(err < 1e-5 * (n as f64).sqrt() * 4.0, "n={n} inverse={inverse}: err {err}");
            }
        }
    }
}

#[test]
fn real_transforms_match_direct_dft_on_many_sizes() {
    let mut rng = Rng::new(4);
    for &n in SIZES {
        let x = ops::astype(&rng.array(&[3, n], -1.0, 1.0), Dtype::F32).unwrap();
        let xv = values(&x);
        let y = fft::rfft(&x, None, -1, Norm::Backward).unwrap();
        let m = n / 2 + 1;
        assert_eq!(y.shape(), &[3, m]);
        let yv = values(&y);
        for r in 0..3 {
            let want = dft(&xv[r * n..(r + 1) * n], -1.0);
            let err = max_err(&yv[r * m..(r + 1) * m], &want[..m]);
            assert!(err < 2e-5 * (n as f64).sqrt() * 2.0, "rfft n={n}: err {err}");
        }
        // irfft(rfft(x), n) == x, for odd and even n.
        let back = fft::irfft(&y, Some(n as i64), -1, Norm::Backward).unwrap();
        let err = max_err(&values(&back), &xv);
        assert!(err < 1e-5 * (n as f64).log2().max(1.0), "irfft n={n}: err {err}");
    }
}

#[test]
fn transforms_along_non_last_axes_match_last_axis() {
    // Tiled transposes (more columns than a tile, and a ragged last tile).
    let mut rng = Rng::new(5);
    let x = complex_array(&mut rng, &[3, 12, 37]);
    let a = fft::fft(&x, None, 1, Norm::Backward).unwrap();
    let b =
        ops::swapaxes(&fft::fft(&ops::swapaxes(&x, 1, 2).unwrap(), None, -1, Norm::Backward).unwrap(), 1, 2).unwrap();
    assert!(max_err(&values(&a), &values(&b)) < 1e-6);
    let xr = ops::astype(&rng.array(&[3, 12, 37], -1.0, 1.0), Dtype::F32).unwrap();
    let a = fft::rfft(&xr, None, 1, Norm::Backward).unwrap();
    let b =
        ops::swapaxes(&fft::rfft(&ops::swapaxes(&xr, 1, 2).unwrap(), None, -1, Norm::Backward).unwrap(), 1, 2).unwrap();
    assert!(max_err(&values(&a), &values(&b)) < 1e-6);
    let back = fft::irfft(&a, Some(12), 1, Norm::Backward).unwrap();
    assert!(max_err(&values(&back), &values(&xr)) < 1e-5);
    // rfftn with the real axis first, over a transposed (strided) input.
    let xt = ops::transpose(&xr).unwrap();
    let y = fft::rfftn(&xt, None, Some(&[2, 0]), Norm::Ortho).unwrap();
    let back = fft::irfftn(&y, Some(&[3, 37]), Some(&[2, 0]), Norm::Ortho).unwrap();
    assert!(max_err(&values(&back), &values(&xt)) < 1e-5);
}

#[test]
fn large_batched_fft_runs_in_parallel_and_matches_rows() {
    // Big enough to be split across threads; each row must equal its own transform.
    let mut rng = Rng::new(6);
    let x = complex_array(&mut rng, &[64, 1024]);
    let y = fft::fft(&x, None, -1, Norm::Backward).unwrap();
    let row = fft::fft(&ops::slice(&x, &[17, 0], &[18, 1024], &[1, 1]).unwrap(), None, -1, Norm::Backward).unwrap();
    let yr = ops::slice(&y, &[17, 0], &[18, 1024], &[1, 1]).unwrap();
    assert_eq!(values(&row), values(&yr));
    let back = fft::ifft(&y, None, -1, Norm::Backward).unwrap();
    assert!(max_err(&values(&back), &values(&x)) < 1e-5);
    // Same along axis 0 (tiled path, parallel over tiles).
    let y0 = fft::fft2(&x, None, None, Norm::Ortho).unwrap();
    let back = fft::ifft2(&y0, None, None, Norm::Ortho).unwrap();
    assert!(max_err(&values(&back), &values(&x)) < 1e-5);
}

#[test]
fn fft_of_donated_input_is_in_place_and_correct() {
    let mut rng = Rng::new(8);
    let x = complex_array(&mut rng, &[4, 16]);
    let want = values(&fft::fft(&x, None, -1, Norm::Backward).unwrap());
    // An intermediate only the graph holds can lend its buffer to the transform.
    let tmp = ops::multiply(&x, 1.0).unwrap();
    let y = fft::fft(&tmp, None, -1, Norm::Backward).unwrap();
    drop(tmp);
    assert!(max_err(&values(&y), &want) < 1e-6);
}

// ------------------------------------------------------------ stft / istft

#[test]
fn stft_istft_round_trip() {
    let mut rng = Rng::new(9);
    let x = ops::astype(&rng.array(&[2, 3, 100], -1.0, 1.0), Dtype::F32).unwrap();
    let hann: Vec<f32> =
        (0..16).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / 16.0).cos()) as f32).collect();
    let hann = Array::from_vec(hann, &[16]).unwrap();
    for (hop, center, window, onesided, norm) in [
        (4, true, Some(hann.clone()), None, Norm::Backward),
        (5, true, None, None, Norm::Ortho),
        (4, true, Some(hann.clone()), Some(false), Norm::Forward),
        (3, false, None, None, Norm::Backward),
    ] {
        let s = fft::stft(
            &x,
            &StftOptions {
                n_fft: 16,
                hop_length: Some(hop),
                window: window.clone(),
                center,
                norm,
                onesided,
                ..Default::default()
            },
        )
        .unwrap();
        let freqs = if onesided == Some(false) { 16 } else { 9 };
        assert_eq!(&s.shape()[..3], &[2, 3, freqs]);
        let len = if center { 100 } else { 16 + hop * (s.shape()[3] - 1) };
        let y = fft::istft(
            &s,
            &IstftOptions {
                n_fft: Some(16),
                hop_length: Some(hop),
                window,
                center,
                norm,
                onesided,
                length: Some(len),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 3, len]);
        let xs = ops::slice(&x, &[0, 0, 0], &[2, 3, len as i64], &[1, 1, 1]).unwrap();
        assert!(max_err(&values(&y), &values(&xs)) < 1e-5, "hop {hop} center {center}");
    }
}

// ------------------------------------------------------------ transform rules

/// Real and imaginary parts of a complex result side by side (as f64).
fn parts(z: &Array) -> Result<Array> {
    let r = ops::astype(&ops::real(z)?, Dtype::F64)?;
    let i = ops::astype(&ops::imag(z)?, Dtype::F64)?;
    ops::concatenate(&[r, i], Some(-1))
}

type F = fn(&[Array]) -> Result<Array>;

/// Functions of f64 inputs through every transform kind, sizes and norms.
/// Complex inputs are made by transforms of real ones (a spectrum from `rfft`
/// covers every input `irfft` depends on); the vjp of each transform on
/// arbitrary complex inputs is compared with MLX in the golden file.
fn rule_cases() -> Vec<(&'static str, F, Vec<Vec<usize>>)> {
    vec![
        ("fft", |a| parts(&fft::fft(&a[0], None, -1, Norm::Backward)?), vec![vec![2, 5]]),
        ("fft_n_pad", |a| parts(&fft::fft(&a[0], Some(7), 0, Norm::Ortho)?), vec![vec![4, 3]]),
        ("ifft_crop", |a| parts(&fft::ifft(&a[0], Some(3), -1, Norm::Backward)?), vec![vec![6]]),
        (
            "fft_of_spectrum",
            |a| parts(&fft::fft(&fft::rfft(&a[0], None, -1, Norm::Backward)?, None, -1, Norm::Backward)?),
            vec![vec![2, 7]],
        ),
        ("rfft_even", |a| parts(&fft::rfft(&a[0], None, -1, Norm::Backward)?), vec![vec![2, 6]]),
        ("rfft_odd_axis0", |a| parts(&fft::rfft(&a[0], None, 0, Norm::Forward)?), vec![vec![5, 2]]),
        (
            "irfft_even",
            |a| {
                let z = fft::rfft(&a[0], None, -1, Norm::Backward)?;
                ops::astype(&fft::irfft(&ops::square(&z)?, None, -1, Norm::Backward)?, Dtype::F64)
            },
            vec![vec![2, 6]],
        ),
        (
            "irfft_odd_crop",
            |a| {
                let z = fft::fft(&a[0], None, -1, Norm::Backward)?;
                ops::astype(&fft::irfft(&z, Some(7), -1, Norm::Ortho)?, Dtype::F64)
            },
            vec![vec![8]],
        ),
        ("fft2", |a| parts(&fft::fft2(&a[0], Some(&[3, 4]), None, Norm::Ortho)?), vec![vec![3, 3]]),
        ("rfftn", |a| parts(&fft::rfftn(&a[0], None, Some(&[1, 0]), Norm::Backward)?), vec![vec![4, 3]]),
        (
            "irfftn",
            |a| {
                let z = fft::fftn(&a[0], None, None, Norm::Backward)?;
                ops::astype(&fft::irfftn(&z, Some(&[3, 4]), Some(&[0, 1]), Norm::Backward)?, Dtype::F64)
            },
            vec![vec![3, 3]],
        ),
        (
            "power_rfft",
            |a| {
                let z = fft::rfft(&a[0], None, -1, Norm::Backward)?;
                let p = ops::add(&ops::square(&ops::real(&z)?)?, &ops::square(&ops::imag(&z)?)?)?;
                ops::astype(&p, Dtype::F64)
            },
            vec![vec![6]],
        ),
        (
            "stft",
            |a| {
                let o = StftOptions { n_fft: 4, hop_length: Some(2), ..Default::default() };
                parts(&fft::stft(&a[0], &o)?)
            },
            vec![vec![9]],
        ),
        (
            "istft_of_stft",
            |a| {
                let s = fft::stft(&a[0], &StftOptions { n_fft: 4, hop_length: Some(1), ..Default::default() })?;
                let s = ops::square(&s)?;
                let o = IstftOptions { n_fft: Some(4), hop_length: Some(2), length: Some(5), ..Default::default() };
                ops::astype(&fft::istft(&s, &o)?, Dtype::F64)
            },
            vec![vec![6]],
        ),
        ("fftshift", |a| fft::fftshift(&a[0], None), vec![vec![3, 4]]),
    ]
}

#[test]
fn grads_match_finite_differences() {
    let mut rng = Rng::new(11);
    for (name, f, shapes) in rule_cases() {
        let inputs: Vec<Array> = shapes.iter().map(|s| rng.array(s, -1.0, 1.0)).collect();
        // The transforms compute in float32: a large step keeps rounding out of the
        // differences, which are exact for these linear and quadratic functions.
        check_grad_eps(name, f, &inputs, 0.25);
    }
}

#[test]
fn vmap_matches_loop() {
    let mut rng = Rng::new(12);
    for (name, f, shapes) in rule_cases() {
        let batched: Vec<Array> = shapes
            .iter()
            .map(|s| {
                let mut b = s.clone();
                b.push(3);
                rng.array(&b, -1.0, 1.0)
            })
            .collect();
        check_vmap(name, f, &batched, &vec![Some(-1); batched.len()]);
        let front: Vec<Array> = shapes
            .iter()
            .map(|s| {
                let mut b = vec![2];
                b.extend(s);
                rng.array(&b, -1.0, 1.0)
            })
            .collect();
        check_vmap(name, f, &front, &vec![Some(0); front.len()]);
    }
}

#[test]
fn grad_of_grad_through_fft() {
    // d/dx sum(|fft(x)|^2) = 2 n x (Parseval); its derivative is linear, so second order works too.
    let x = Array::from_vec(vec![0.3f64, -1.2, 0.7, 2.0, 0.1], &[5]).unwrap();
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let y = fft::fft(&xs[0], None, -1, Norm::Backward)?;
        let p = ops::astype(&ops::square(&ops::abs(&y)?)?, Dtype::F64)?;
        Ok(vec![ops::sum(&p, kiln_core::Axes::All, false)?])
    };
    let g = kiln_core::grad(f, &[0]);
    let gx = g(&[x.clone()]).unwrap()[0].clone();
    let gv = gx.to_vec::<f64>().unwrap();
    for (a, b) in gv.iter().zip(x.to_vec::<f64>().unwrap()) {
        assert!((a - 10.0 * b).abs() < 1e-4, "{a} vs {}", 10.0 * b);
    }
}

// ------------------------------------------------------------ errors and dtypes

#[test]
fn bad_inputs_are_errors() {
    let x = Array::from_vec(vec![1.0f32; 8], &[2, 4]).unwrap();
    assert!(fft::fft(&x, Some(0), -1, Norm::Backward).is_err());
    assert!(fft::fft(&x, None, 5, Norm::Backward).is_err());
    assert!(fft::rfft2(&x, Some(&[2, 0]), None, Norm::Backward).is_err());
    assert!(fft::irfftn(&x, Some(&[2]), Some(&[0, 0]), Norm::Backward).is_err());
    assert!(fft::fftshift(&x, Some(&[2])).is_err());
    assert!(Norm::from_name("fft", "none").is_err());
    let e = fft::fftn(&x, Some(&[2, 2]), None, Norm::Backward).unwrap_err();
    assert!(e.to_string().contains("axes"), "{e}");
    let o = StftOptions { n_fft: 4, pad_mode: "symmetric".into(), ..Default::default() };
    assert!(fft::stft(&x, &o).is_err());
    let o = IstftOptions { n_fft: Some(4), win_length: Some(5), ..Default::default() };
    assert!(fft::istft(&ops::astype(&x, Dtype::C64).unwrap(), &o).is_err());
}

#[test]
fn dtypes_follow_mlx() {
    let x = Array::from_vec(vec![1i32, 2, 3, 4], &[4]).unwrap();
    assert_eq!(fft::fft(&x, None, -1, Norm::Backward).unwrap().dtype(), Dtype::C64);
    assert_eq!(fft::rfft(&x, None, -1, Norm::Backward).unwrap().dtype(), Dtype::C64);
    assert_eq!(fft::irfft(&x, None, -1, Norm::Backward).unwrap().dtype(), Dtype::F32);
    let x64 = ops::astype(&x, Dtype::F64).unwrap();
    assert_eq!(fft::fft(&x64, None, -1, Norm::Backward).unwrap().dtype(), Dtype::C64);
    assert_eq!(fft::fftshift(&x, None).unwrap().dtype(), Dtype::I32);
    assert_eq!(fft::fftfreq(4, 1.0).unwrap().dtype(), Dtype::F32);
}

/// Rough timing of a batched 1-d FFT (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_batched_fft() {
    let mut rng = Rng::new(1);
    let x = complex_array(&mut rng, &[256, 4096]);
    let xr = ops::astype(&rng.array(&[256, 4096], -1.0, 1.0), Dtype::F32).unwrap();
    x.eval().unwrap();
    xr.eval().unwrap();
    let time = |name: &str, f: &dyn Fn() -> Array| {
        f().eval().unwrap();
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f().eval().unwrap();
        }
        println!("{name}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    };
    time("fft 256x4096 c64 axis -1", &|| fft::fft(&x, None, -1, Norm::Backward).unwrap());
    time("ifft 256x4096 c64 axis -1", &|| fft::ifft(&x, None, -1, Norm::Backward).unwrap());
    time("fft 256x4096 c64 axis 0", &|| fft::fft(&x, None, 0, Norm::Backward).unwrap());
    time("fft2 256x4096 c64", &|| fft::fft2(&x, None, None, Norm::Backward).unwrap());
    time("rfft 256x4096 f32", &|| fft::rfft(&xr, None, -1, Norm::Backward).unwrap());
    let y = fft::rfft(&xr, None, -1, Norm::Backward).unwrap();
    y.eval().unwrap();
    time("irfft 256x2049 -> 256x4096", &|| fft::irfft(&y, Some(4096), -1, Norm::Backward).unwrap());
}
