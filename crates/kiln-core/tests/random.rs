//! `random`: golden comparisons with MLX (random.json) for every sampler —
//! bit-exact for keys, split, uniform, randint, bernoulli, permutation,
//! categorical and the global sequence; within a few ulp where MLX's
//! transcendental kernels (erfinv, log, log1p, erf) round differently from
//! Kiln's — plus vmap over keys, gradients through array parameters, and errors.

mod common;

use common::{check_grad, check_vmap, load, values, Case, Rng};
use kiln_core::random::{self, Samples};
use kiln_core::{ops, Array, Dtype, Operand};
use serde_json::Value;

fn shape(c: &Case) -> Option<Vec<usize>> {
    c.kw("shape").map(|v| v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect())
}

fn dtype(c: &Case) -> Dtype {
    c.kw_dtype("dtype").unwrap_or(Dtype::F32)
}

fn key(c: &Case) -> Array {
    random::key(c.kw("key_seed").unwrap().as_u64().unwrap())
}

/// A JSON number kwarg as a weak scalar operand (int or float as written).
fn num(c: &Case, k: &str) -> Option<Operand> {
    c.kw(k).map(|v| match v {
        Value::Number(n) if n.is_i64() => Operand::from(n.as_i64().unwrap()),
        v => Operand::from(common::json_f64(v)),
    })
}

/// Runs one case; None for ops this file does not know.
fn run(c: &Case) -> kiln_core::Result<Array> {
    let k = c.kw("key_seed").map(|_| key(c));
    let k = k.as_ref();
    let sh = shape(c);
    let shp = sh.clone().unwrap_or_default();
    match c.op.as_str() {
        "random.key" => Ok(random::key(c.kw("seed").unwrap().as_u64().unwrap())),
        "random.split" => random::split(k.unwrap(), c.kw_i64("num").unwrap() as usize),
        "random.uniform" => {
            if c.inputs.len() == 2 {
                random::uniform(&c.inputs[0], &c.inputs[1], &shp, dtype(c), k)
            } else {
                let lo = num(c, "low").unwrap_or(Operand::from(0.0));
                let hi = num(c, "high").unwrap_or(Operand::from(1.0));
                random::uniform(lo, hi, &shp, dtype(c), k)
            }
        }
        "random.normal" => {
            let scale = c.inputs.first().map(Operand::from).or_else(|| num(c, "scale"));
            random::normal(&shp, dtype(c), num(c, "loc"), scale, k)
        }
        "random.randint" => random::randint(
            num(c, "low").unwrap(),
            num(c, "high").unwrap(),
            &shp,
            c.kw_dtype("dtype").unwrap_or(Dtype::I32),
            k,
        ),
        "random.bernoulli" => {
            let p = c.inputs.first().map(Operand::from).or_else(|| num(c, "p")).unwrap();
            random::bernoulli(p, sh.as_deref(), k)
        }
        "random.truncated_normal" => {
            if c.inputs.len() == 2 {
                random::truncated_normal(&c.inputs[0], &c.inputs[1], sh.as_deref(), dtype(c), k)
            } else {
                random::truncated_normal(num(c, "lower").unwrap(), num(c, "upper").unwrap(), sh.as_deref(), dtype(c), k)
            }
        }
        "random.gumbel" => random::gumbel(&shp, dtype(c), k),
        "random.laplace" => random::laplace(
            &shp,
            dtype(c),
            c.kw_f64("loc").unwrap_or(0.0) as f32,
            c.kw_f64("scale").unwrap_or(1.0) as f32,
            k,
        ),
        "random.categorical" => {
            let axis = c.kw_i64("axis").unwrap_or(-1) as i32;
            let s = match (sh, c.kw_i64("num_samples")) {
                (Some(s), _) => Samples::Shape(s),
                (None, Some(n)) => Samples::Num(n as usize),
                _ => Samples::One,
            };
            random::categorical(&c.inputs[0], axis, s, k)
        }
        "random.permutation" => match c.inputs.first() {
            Some(x) => random::permutation_of(x, c.kw_i64("axis").unwrap_or(0) as i32, k),
            None => random::permutation(c.kw_i64("x").unwrap() as usize, k),
        },
        "random.multivariate_normal" => random::multivariate_normal(&c.inputs[0], &c.inputs[1], &shp, Dtype::F32, k),
        "random.seed_sequence" => {
            random::seed(c.kw("seed").unwrap().as_u64().unwrap());
            let a = random::uniform(0.0, 1.0, &shp, Dtype::F32, None)?;
            let b = random::uniform(0.0, 1.0, &shp, Dtype::F32, None)?;
            ops::concatenate(&[a, b], Some(0))
        }
        other => panic!("unknown op {other}"),
    }
}

/// The spacing of `dtype` at `x`.
fn ulp(x: f64, dtype: Dtype) -> f64 {
    let mant = match dtype {
        Dtype::F16 => 10,
        Dtype::BF16 => 7,
        Dtype::F64 => 52,
        _ => 23,
    };
    let min_exp = match dtype {
        Dtype::F16 => -14,
        Dtype::F64 => -1022,
        _ => -126,
    };
    let e = if x == 0.0 { min_exp } else { (x.abs().log2().floor() as i32).max(min_exp) };
    2f64.powi(e - mant)
}

/// Allowed distance in ulp of the output dtype (0 = bit-exact), and whether
/// the ulp is taken at max(|expected|, 1) rather than at the expected value.
///
/// normal and laplace agree to a few ulp (erfinv/log1p round differently).
/// truncated_normal maps its bounds through erf, and a 1-ulp difference in
/// erf(bound) shifts every sample by ~1e-7 absolute, which is many ulp for
/// samples near 0, and more near the bounds where erfinv is steep: it is
/// held to 12 ulp at 1 (seen: 9). gumbel's -log(-log(u))
/// amplifies log's rounding near u = 1 the same way. multivariate_normal
/// takes the covariance square root in f64 (Jacobi) where MLX uses a float32
/// SVD.
fn ulps_allowed(op: &str) -> (f64, bool) {
    match op {
        "random.normal" | "random.laplace" => (4.0, false),
        "random.gumbel" => (4.0, true),
        "random.truncated_normal" => (12.0, true),
        "random.multivariate_normal" => (64.0, true),
        _ => (0.0, false),
    }
}

#[test]
fn golden_random() {
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut max_ulps: std::collections::BTreeMap<String, f64> = Default::default();
    for c in load("random.json") {
        ran += 1;
        let res = run(&c);
        match (&c.error, res) {
            (Some(_), Err(_)) => {}
            (Some((cls, m)), Ok(_)) => failures.push(format!("{}: expected {cls} ({m})", c.id)),
            (None, Err(e)) => failures.push(format!("{}: {e}", c.id)),
            (None, Ok(y)) => {
                let e = &c.out[0];
                if y.dtype() != e.dtype() || y.shape() != e.shape() {
                    failures.push(format!("{}: {:?} {} != {:?} {}", c.id, y.shape(), y.dtype(), e.shape(), e.dtype()));
                    continue;
                }
                let (allowed, at_one) = ulps_allowed(&c.op);
                let mut worst = 0.0f64;
                for (i, (a, b)) in values(&y).iter().zip(values(e)).enumerate() {
                    for (p, q) in [(a.0, b.0), (a.1, b.1)] {
                        let exact = p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()) || p == q;
                        if exact {
                            continue;
                        }
                        let d = if p.is_finite() && q.is_finite() {
                            (p - q).abs() / ulp(if at_one { q.abs().max(1.0) } else { q }, y.dtype())
                        } else {
                            f64::INFINITY
                        };
                        worst = worst.max(d);
                        if d > allowed {
                            failures.push(format!("{}: element {i}: {p} != {q} ({d} ulp)", c.id));
                        }
                    }
                }
                let w = max_ulps.entry(c.op.clone()).or_default();
                *w = w.max(worst);
            }
        }
    }
    println!("largest distance from MLX per op (ulp of the output dtype): {max_ulps:?}");
    assert!(failures.is_empty(), "{} of {ran} failed:\n{}", failures.len(), failures.join("\n"));
    assert!(ran > 400);
}

#[test]
fn bits_layout_and_widths() {
    let k = random::key(42);
    // A (num, 2) draw is split(): the words of split(k, 3) are bits((6,)).
    let a = random::bits(&[6], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let b = random::split(&k, 3).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(a, b);
    // Narrow widths are the little-endian bytes of the same words when the
    // word count matches: 8 bytes = 2 words = 8 uint8 = 4 uint16.
    let w = random::bits(&[2], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let u8s = random::bits(&[8], 1, Some(&k)).unwrap().to_vec::<u8>().unwrap();
    let u16s = random::bits(&[4], 2, Some(&k)).unwrap().to_vec::<u16>().unwrap();
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(u8s, bytes);
    assert_eq!(u16s, bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>());
    // Odd byte counts truncate the last word: 3 bytes are the first 3 of 1 word.
    let one = random::bits(&[1], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let three = random::bits(&[3], 1, Some(&k)).unwrap().to_vec::<u8>().unwrap();
    assert_eq!(three, one[0].to_le_bytes()[..3].to_vec());
    // A large draw (parallel path) agrees with its split prefix layout.
    let big = random::bits(&[200_000], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let again = random::bits(&[200_000], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(big, again);
    let mean = big.iter().map(|&x| x as f64).sum::<f64>() / big.len() as f64 / u32::MAX as f64;
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
    // Errors.
    assert!(random::bits(&[2], 3, Some(&k)).is_err());
    assert!(random::bits(&[2], 4, Some(&Array::from_slice(&[1i32, 2], &[2]).unwrap())).is_err());
    assert!(random::bits(&[2], 4, Some(&Array::from_slice(&[1u32, 2, 3], &[3]).unwrap())).is_err());
}

#[test]
fn statistics() {
    let k = random::key(7);
    let n = 20_000;
    let x = random::normal(&[n], Dtype::F32, None, None, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let v = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
    assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
    let u = random::uniform(-1.0, 3.0, &[n], Dtype::BF16, Some(&k)).unwrap();
    let u = ops::astype(&u, Dtype::F32).unwrap().to_vec::<f32>().unwrap();
    assert!(u.iter().all(|&v| (-1.0..3.0).contains(&v)));
    let t = random::truncated_normal(-0.5, 0.25, Some(&[n]), Dtype::F32, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    assert!(t.iter().all(|&v| (-0.5..=0.25).contains(&v)));
    let p = random::permutation(1000, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let mut s = p.clone();
    s.sort();
    assert_eq!(s, (0..1000).collect::<Vec<u32>>());
    assert_ne!(p, (0..1000).collect::<Vec<u32>>());
}

#[test]
fn vmap_over_keys_and_gradients() {
    // vmap of a sampler over a batch of keys equals one draw per key.
    let keys = random::split(&random::key(1), 3).unwrap();
    let f = |a: &[Array]| {
        let k = ops::astype(&a[0], Dtype::U32)?;
        ops::astype(&random::uniform(0.0, 1.0, &[4], Dtype::F32, Some(&k))?, Dtype::F64)
    };
    check_vmap("uniform over keys", f, &[ops::astype(&keys, Dtype::F64).unwrap()], &[Some(0)]);
    // Gradients flow through array bounds (not the bits): with u the unit
    // draw, d out / d low = 1 - u and d out / d high = u.
    let lo = Array::from_slice(&[-2.0f32, -1.0, 0.0], &[3]).unwrap();
    let hi = Array::from_slice(&[1.0f32, 2.0, 5.0], &[3]).unwrap();
    let k = random::key(9);
    let g = kiln_core::grad(
        |a: &[Array]| {
            Ok(vec![ops::sum(
                &random::uniform(&a[0], &a[1], &[3], Dtype::F32, Some(&k))?,
                kiln_core::Axes::All,
                false,
            )?])
        },
        &[0, 1],
    )(&[lo, hi])
    .unwrap();
    let u = random::uniform(0.0, 1.0, &[3], Dtype::F32, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    let (gl, gh) = (g[0].to_vec::<f32>().unwrap(), g[1].to_vec::<f32>().unwrap());
    for i in 0..3 {
        assert!((gh[i] - u[i]).abs() < 1e-6 && (gl[i] - (1.0 - u[i])).abs() < 1e-6, "{gl:?} {gh:?} {u:?}");
    }
    // Normal with an array scale: d out / d scale = out / scale.
    let sc = Array::from_slice(&[0.5f32, 2.0], &[2]).unwrap();
    let g = kiln_core::grad(
        |a: &[Array]| {
            Ok(vec![ops::sum(
                &random::normal(&[2], Dtype::F32, None, Some(Operand::from(&a[0])), Some(&k))?,
                kiln_core::Axes::All,
                false,
            )?])
        },
        &[0],
    )(std::slice::from_ref(&sc))
    .unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let z = random::normal(&[2], Dtype::F32, None, None, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    assert!((g[0] - z[0]).abs() < 1e-5 && (g[1] - z[1]).abs() < 1e-5, "{g:?} {z:?}");
}

#[test]
fn permutation_gradient() {
    let mut rng = Rng::new(4);
    let x = rng.array(&[4, 3], -1.0, 1.0);
    let k = random::key(5);
    check_grad("permutation_of", |a| random::permutation_of(&a[0], 0, Some(&k)), std::slice::from_ref(&x));
    check_vmap("permutation_of", |a| random::permutation_of(&a[0], 0, Some(&k)), std::slice::from_ref(&x), &[Some(0)]);
}
