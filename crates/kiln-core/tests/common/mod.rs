//! Shared test utilities: golden-file loading, value comparison, finite-difference
//! gradient checks and vmap-versus-loop checks. Each test binary includes this
//! module with `mod common;` and uses what it needs.
#![allow(dead_code, clippy::needless_range_loop)]

use kiln_core::{c64, ops, Array, Dtype, Element};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

/// Deterministic xorshift generator for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// An f64 array of `shape` with entries uniform in [lo, hi).
    pub fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> Array {
        let n = shape.iter().product();
        Array::from_vec(self.vec(n, lo, hi), shape).unwrap()
    }
}

// ---------------------------------------------------------------- golden files

/// One golden case.
pub struct Case {
    pub id: String,
    pub op: String,
    pub inputs: Vec<Array>,
    pub kwargs: Value,
    /// Expected outputs (one for single-output ops).
    pub out: Vec<Array>,
    /// For error cases: MLX's exception class and message.
    pub error: Option<(String, String)>,
}

impl Case {
    pub fn kw(&self, k: &str) -> Option<&Value> {
        self.kwargs.get(k).filter(|v| !v.is_null())
    }
    pub fn kw_bool(&self, k: &str, default: bool) -> bool {
        self.kw(k).and_then(|v| v.as_bool()).unwrap_or(default)
    }
    pub fn kw_i64(&self, k: &str) -> Option<i64> {
        self.kw(k).and_then(|v| v.as_i64())
    }
    pub fn kw_f64(&self, k: &str) -> Option<f64> {
        self.kw(k).map(json_f64)
    }
    /// An int or a list of ints as a Vec.
    pub fn kw_ints(&self, k: &str) -> Option<Vec<i64>> {
        let v = self.kw(k)?;
        Some(match v {
            Value::Array(a) => a.iter().map(|x| x.as_i64().unwrap()).collect(),
            x => vec![x.as_i64().unwrap()],
        })
    }
    pub fn kw_dtype(&self, k: &str) -> Option<Dtype> {
        self.kw(k).and_then(|v| v.as_str()).map(|s| Dtype::from_name(s).unwrap())
    }
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Ids MLX gets wrong or leaves undefined (see golden/README.md).
pub fn known_deviations() -> HashSet<String> {
    let text = std::fs::read_to_string(golden_dir().join("known_deviations.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let list = v.get("cases").or_else(|| v.get("deviations")).cloned().unwrap_or(v.clone());
    match list {
        Value::Array(a) => a
            .iter()
            .filter_map(|e| {
                e.get("id").and_then(|i| i.as_str()).map(String::from).or_else(|| e.as_str().map(String::from))
            })
            .collect(),
        _ => HashSet::new(),
    }
}

pub fn json_f64(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("bad float string {other}"),
        },
        Value::Bool(b) => *b as u8 as f64,
        v => v.as_f64().unwrap(),
    }
}

/// Parses a golden tensor into an array.
pub fn tensor(v: &Value) -> Array {
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let dtype = Dtype::from_name(v["dtype"].as_str().unwrap()).unwrap();
    let data = v["data"].as_array().unwrap();
    fn mk<T: Element>(data: &[Value], shape: &[usize], f: impl Fn(&Value) -> T) -> Array {
        Array::from_vec(data.iter().map(f).collect::<Vec<T>>(), shape).unwrap()
    }
    match dtype {
        Dtype::Bool => mk(data, &shape, |x| x.as_bool().unwrap()),
        Dtype::U8 => mk(data, &shape, |x| x.as_u64().unwrap() as u8),
        Dtype::U16 => mk(data, &shape, |x| x.as_u64().unwrap() as u16),
        Dtype::U32 => mk(data, &shape, |x| x.as_u64().unwrap() as u32),
        Dtype::U64 => mk(data, &shape, |x| x.as_u64().unwrap()),
        Dtype::I8 => mk(data, &shape, |x| x.as_i64().unwrap() as i8),
        Dtype::I16 => mk(data, &shape, |x| x.as_i64().unwrap() as i16),
        Dtype::I32 => mk(data, &shape, |x| x.as_i64().unwrap() as i32),
        Dtype::I64 => mk(data, &shape, |x| x.as_i64().unwrap()),
        Dtype::F16 => mk(data, &shape, |x| kiln_core::f16::from_f64(json_f64(x))),
        Dtype::BF16 => mk(data, &shape, |x| kiln_core::bf16::from_f64(json_f64(x))),
        Dtype::F32 => mk(data, &shape, |x| json_f64(x) as f32),
        Dtype::F64 => mk(data, &shape, json_f64),
        Dtype::C64 => mk(data, &shape, |x| {
            let p = x.as_array().unwrap();
            c64::new(json_f64(&p[0]) as f32, json_f64(&p[1]) as f32)
        }),
    }
}

/// Loads `file` (e.g. "unary.json") from the golden folder.
pub fn load(file: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(golden_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let out = match c.get("out") {
                Some(Value::Array(list)) => list.iter().map(tensor).collect(),
                Some(t @ Value::Object(_)) => vec![tensor(t)],
                _ => vec![],
            };
            let error = c.get("error").map(|e| {
                (e.as_str().unwrap().to_string(), c.get("message").and_then(|m| m.as_str()).unwrap_or("").to_string())
            });
            Case {
                id: c["id"].as_str().unwrap().to_string(),
                op: c["op"].as_str().unwrap().to_string(),
                inputs: c["inputs"].as_array().map(|a| a.iter().map(tensor).collect()).unwrap_or_default(),
                kwargs: c.get("kwargs").cloned().unwrap_or(Value::Null),
                out,
                error,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- comparisons

/// Elements of any array as complex f64 pairs (real dtypes have im = 0).
pub fn values(a: &Array) -> Vec<(f64, f64)> {
    match a.dtype() {
        Dtype::C64 => a.to_vec::<c64>().unwrap().iter().map(|c| (c.re as f64, c.im as f64)).collect(),
        d => {
            let f = ops::astype(a, Dtype::F64).unwrap();
            let _ = d;
            f.to_vec::<f64>().unwrap().into_iter().map(|x| (x, 0.0)).collect()
        }
    }
}

/// Default tolerance for a dtype (relative, absolute).
pub fn tol(d: Dtype) -> (f64, f64) {
    match d {
        Dtype::F16 => (2e-3, 1e-3),
        Dtype::BF16 => (1.6e-2, 1e-2),
        Dtype::F32 | Dtype::C64 => (2e-5, 1e-6),
        Dtype::F64 => (1e-12, 1e-13),
        _ => (0.0, 0.0),
    }
}

/// Checks dtype, shape and values (NaN matches NaN, infinities must match exactly).
/// Returns a description of the first mismatch.
pub fn compare(actual: &Array, expected: &Array, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!("dtype {} != expected {}", actual.dtype(), expected.dtype()));
    }
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?} != expected {:?}", actual.shape(), expected.shape()));
    }
    let (a, e) = (values(actual), values(expected));
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        for (p, q) in [(x.0, y.0), (x.1, y.1)] {
            let ok = (p.is_nan() && q.is_nan())
                || p == q
                || (p.is_finite() && q.is_finite() && (p - q).abs() <= atol + rtol * q.abs());
            if !ok {
                return Err(format!("element {i}: {:?} != expected {:?}", x, y));
            }
        }
    }
    Ok(())
}

/// Runs every case through `run` (which returns Ok(None) for ops it does not
/// handle) and panics with a list of all failures. Returns how many cases ran.
pub fn run_golden(file: &str, run: impl Fn(&Case) -> Option<kiln_core::Result<Vec<Array>>>) -> usize {
    let skip = known_deviations();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in load(file) {
        if skip.contains(&case.id) {
            continue;
        }
        let Some(res) = run(&case) else { continue };
        ran += 1;
        match (&case.error, res) {
            (Some(_), Err(_)) => {}
            (Some((cls, msg)), Ok(_)) => failures.push(format!("{}: expected {cls} ({msg}), got Ok", case.id)),
            (None, Err(e)) => failures.push(format!("{}: unexpected error {e}", case.id)),
            (None, Ok(outs)) => {
                if outs.len() != case.out.len() {
                    failures.push(format!("{}: {} outputs, expected {}", case.id, outs.len(), case.out.len()));
                    continue;
                }
                for (o, e) in outs.iter().zip(&case.out) {
                    let (rt, at) = tol(e.dtype());
                    if let Err(m) = compare(o, e, rt, at) {
                        failures.push(format!("{}: {m}", case.id));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} golden cases failed:\n{}", failures.len(), failures.join("\n"));
    ran
}

// ---------------------------------------------------------------- transform checks

fn host(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

fn with_delta(x: &Array, i: usize, d: f64) -> Array {
    let mut v = host(x);
    v[i] += d;
    Array::from_vec(v, x.shape()).unwrap()
}

/// Checks the vjp and jvp of `f` (a function of f64 arrays with one output)
/// against central finite differences at `inputs`.
pub fn check_grad(name: &str, f: impl Fn(&[Array]) -> kiln_core::Result<Array>, inputs: &[Array]) {
    check_grad_eps(name, f, inputs, 1e-6)
}

/// [`check_grad`] with a chosen finite-difference step (larger for functions
/// that round through a lower precision).
pub fn check_grad_eps(name: &str, f: impl Fn(&[Array]) -> kiln_core::Result<Array>, inputs: &[Array], eps: f64) {
    let mut rng = Rng::new(7);
    let y = f(inputs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let cot = rng.array(y.shape(), -1.0, 1.0);
    let cot = ops::astype(&cot, y.dtype()).unwrap();
    let wrapped = |xs: &[Array]| Ok(vec![f(xs)?]);
    let (_, grads) = kiln_core::vjp(wrapped, inputs, std::slice::from_ref(&cot))
        .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
    let cv = host(&cot);
    for (k, x) in inputs.iter().enumerate() {
        let g = host(&grads[k]);
        for i in 0..x.size() {
            let mut xs_p = inputs.to_vec();
            xs_p[k] = with_delta(x, i, eps);
            let mut xs_m = inputs.to_vec();
            xs_m[k] = with_delta(x, i, -eps);
            let (yp, ym) = (host(&f(&xs_p).unwrap()), host(&f(&xs_m).unwrap()));
            let num: f64 = yp.iter().zip(&ym).zip(&cv).map(|((p, m), c)| (p - m) / (2.0 * eps) * c).sum();
            assert!(
                (num - g[i]).abs() <= 1e-5 + 1e-4 * num.abs(),
                "{name}: vjp d/dx{k}[{i}] = {} but finite difference gives {num}",
                g[i]
            );
        }
    }
    // jvp along a random direction for all inputs at once.
    let tangents: Vec<Array> =
        inputs.iter().map(|x| ops::astype(&rng.array(x.shape(), -1.0, 1.0), x.dtype()).unwrap()).collect();
    let (_, touts) = kiln_core::jvp(wrapped, inputs, &tangents).unwrap_or_else(|e| panic!("{name}: jvp failed: {e}"));
    let step = |s: f64| -> Vec<f64> {
        let xs: Vec<Array> = inputs
            .iter()
            .zip(&tangents)
            .map(|(x, t)| {
                let v: Vec<f64> = host(x).iter().zip(host(t)).map(|(a, b)| a + s * b).collect();
                Array::from_vec(v, x.shape()).unwrap()
            })
            .collect();
        host(&f(&xs).unwrap())
    };
    let (yp, ym) = (step(eps), step(-eps));
    let t = host(&touts[0]);
    for i in 0..t.len() {
        let num = (yp[i] - ym[i]) / (2.0 * eps);
        assert!(
            (num - t[i]).abs() <= 1e-5 + 1e-4 * num.abs(),
            "{name}: jvp[{i}] = {} but finite difference gives {num}",
            t[i]
        );
    }
}

/// Element `b` of `x` along `axis`, built on the host (independent of Kiln's slicing ops).
pub fn take_host(x: &Array, axis: usize, b: usize) -> Array {
    let v = host(x);
    let shape = x.shape();
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        out.extend_from_slice(&v[(o * n + b) * inner..(o * n + b) * inner + inner]);
    }
    let mut s = shape.to_vec();
    s.remove(axis);
    ops::astype(&Array::from_vec(out, &s).unwrap(), x.dtype()).unwrap()
}

/// Checks `vmap(f)` over `in_axes` against calling `f` on each batch element
/// and stacking the results along axis 0.
pub fn check_vmap(
    name: &str,
    f: impl Fn(&[Array]) -> kiln_core::Result<Array> + Copy,
    inputs: &[Array],
    in_axes: &[Option<i32>],
) {
    let wrapped = move |xs: &[Array]| Ok(vec![f(xs)?]);
    let v = kiln_core::vmap(wrapped, in_axes, &[0]);
    let got = v(inputs).unwrap_or_else(|e| panic!("{name}: vmap failed: {e}"))[0].clone();
    let mut n = 0;
    for (x, ax) in inputs.iter().zip(in_axes) {
        if let Some(a) = ax {
            let a = if *a < 0 { *a + x.ndim() as i32 } else { *a } as usize;
            n = x.shape()[a];
        }
    }
    let mut expected: Vec<f64> = Vec::new();
    let mut elem_shape = vec![];
    for b in 0..n {
        let xs: Vec<Array> = inputs
            .iter()
            .zip(in_axes)
            .map(|(x, ax)| match ax {
                Some(a) => {
                    let a = if *a < 0 { *a + x.ndim() as i32 } else { *a } as usize;
                    take_host(x, a, b)
                }
                None => x.clone(),
            })
            .collect();
        let y = f(&xs).unwrap();
        elem_shape = y.shape().to_vec();
        expected.extend(host(&y));
    }
    let mut shape = vec![n];
    shape.extend(elem_shape);
    assert_eq!(got.shape(), &shape[..], "{name}: vmap shape");
    let g = host(&got);
    for (i, (a, e)) in g.iter().zip(&expected).enumerate() {
        assert!(
            (a.is_nan() && e.is_nan()) || (a - e).abs() <= 1e-9 + 1e-9 * e.abs(),
            "{name}: vmap[{i}] = {a}, loop gives {e}"
        );
    }
}
