//! Random numbers as MLX's `mx.random` namespace: counter-based Threefry-2x32
//! keys, bit-for-bit equal to MLX for the same key, shape and dtype.
//!
//! A key is a `(2,)` uint32 array ([`key`]); [`bits`] records the lazy
//! [`RandomBits`] primitive with the key as its input, and every sampler is
//! ordinary ops on those bits, in MLX's order of operations, so the values
//! match MLX's (exactly wherever Kiln's elementwise ops round as MLX's do:
//! `uniform`, `randint`, `bernoulli`, `permutation`, `gumbel`'s bits; the
//! samplers through `erfinv`/`log` agree to a few ulp).
//!
//! Calls without a key draw the next key from a global sequence, as MLX's:
//! seeded from the clock at first use, reset by [`seed`]; each draw splits
//! the sequence key into (new sequence key, key for this call).
//!
//! No gradients flow through the bits (they are integers, not a function of
//! a differentiable input); `uniform`/`normal` with array bounds, location or
//! scale differentiate through the ordinary ops that apply them.

use super::binary::{add, divide, equal, less, less_equal, maximum, minimum, multiply, subtract};
use super::creation::astype;
use super::reduce::{argmax, max, sum};
use super::scan::cumsum;
use super::shape::{broadcast_to, expand_dims, reshape_to, squeeze_axes};
use super::slicing::{batch_front, concatenate};
use super::sort::{argsort, permute_along};
use super::unary::{abs, erf, erfinv, exp, isinf, log, log1p, negative, sign};
use super::Operand;
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::{Dtype, Kind};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use crate::shape::broadcast_shapes;
use std::sync::Mutex;

const NO_GRAD: &str = "random bits are integers drawn from a key, not a differentiable function of an input";

/// Threefry-2x32 random bits of `shape` (uint8/16/32 for width 1/2/4) from a `(2,)` uint32 key.
#[derive(Debug, PartialEq)]
pub struct RandomBits {
    /// Output shape.
    pub shape: Vec<usize>,
    /// Bytes per element.
    pub width: usize,
}

impl Primitive for RandomBits {
    fn name(&self) -> &'static str {
        "RandomBits"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.random_bits(&inputs[0], &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::No(NO_GRAD), jvp: Rule::No(NO_GRAD), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        // A batch of keys gives one independent draw per key (as MLX's kernel
        // does for keys shaped (N, 2)).
        let Some(ax) = axes[0] else {
            return Ok((vec![bits_raw(&inputs[0], &self.shape, self.width)], vec![None]));
        };
        let b = inputs[0].shape()[ax];
        let keys = batch_front(&inputs[0], Some(ax), b)?;
        let mut outs = Vec::with_capacity(b);
        for i in 0..b {
            let k = super::slicing::slice_axis(&keys, 0, i as isize, 1, 1)?;
            let k = reshape_to(&k, &[2])?;
            outs.push(expand_dims(&bits_raw(&k, &self.shape, self.width), 0)?);
        }
        if outs.is_empty() {
            let mut s = vec![0];
            s.extend(&self.shape);
            return Ok((vec![super::creation::zeros(&s, width_dtype(self.width))?], vec![Some(0)]));
        }
        Ok((vec![concatenate(&outs, Some(0))?], vec![Some(0)]))
    }
    crate::prim_common!();
}

fn width_dtype(width: usize) -> Dtype {
    match width {
        1 => Dtype::U8,
        2 => Dtype::U16,
        _ => Dtype::U32,
    }
}

fn bits_raw(key: &Array, shape: &[usize], width: usize) -> Array {
    Array::from_op(shape.to_vec(), width_dtype(width), RandomBits { shape: shape.to_vec(), width }, vec![key.clone()])
}

/// Threefry-2x32 of the counter pair under `key` (host side, for the key sequence).
fn threefry(key: (u32, u32), c0: u32, c1: u32) -> (u32, u32) {
    const ROT: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
    let ks = [key.0, key.1, key.0 ^ key.1 ^ 0x1BD1_1BDA];
    let (mut x0, mut x1) = (c0.wrapping_add(ks[0]), c1.wrapping_add(ks[1]));
    for i in 0..5 {
        for &r in &ROT[i % 2] {
            x0 = x0.wrapping_add(x1);
            x1 = x1.rotate_left(r) ^ x0;
        }
        x0 = x0.wrapping_add(ks[(i + 1) % 3]);
        x1 = x1.wrapping_add(ks[(i + 2) % 3]).wrapping_add(i as u32 + 1);
    }
    (x0, x1)
}

static SEQUENCE: Mutex<Option<(u32, u32)>> = Mutex::new(None);

fn key_pair(seed: u64) -> (u32, u32) {
    ((seed >> 32) as u32, seed as u32)
}

/// The next key of the global sequence (MLX's `KeySequence::next`: split the
/// sequence key in two, keep the first, return the second).
pub fn next_key() -> Array {
    let mut g = SEQUENCE.lock().unwrap_or_else(|e| e.into_inner());
    let k = *g.get_or_insert_with(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64);
        key_pair(t.unwrap_or(0))
    });
    // split(k, 2) = bits((2, 2)): words (w0, w2) = f(0, 2), (w1, w3) = f(1, 3).
    let (w0, w2) = threefry(k, 0, 2);
    let (w1, w3) = threefry(k, 1, 3);
    *g = Some((w0, w1));
    Array::from_slice(&[w2, w3], &[2]).expect("two words")
}

/// Seeds the global key sequence (MLX's `mx.random.seed`).
pub fn seed(s: u64) {
    *SEQUENCE.lock().unwrap_or_else(|e| e.into_inner()) = Some(key_pair(s));
}

/// A PRNG key from a seed: `[seed >> 32, seed & 0xffffffff]` as uint32.
pub fn key(seed: u64) -> Array {
    let (a, b) = key_pair(seed);
    Array::from_slice(&[a, b], &[2]).expect("two words")
}

fn resolve_key(op: &str, key: Option<&Array>) -> Result<Array> {
    let k = match key {
        Some(k) => k.clone(),
        None => return Ok(next_key()),
    };
    if k.dtype() != Dtype::U32 {
        return Err(Error::invalid(op, format!("Expected key type uint32 but received {}.", k.dtype())));
    }
    if k.shape() != [2] {
        return Err(Error::invalid(op, format!("Expected key shape (2) but received {:?}.", k.shape())));
    }
    Ok(k)
}

/// Random bits of `shape`, `width` bytes each (1, 2 or 4 → uint8, uint16, uint32).
pub fn bits(shape: &[usize], width: usize, key: Option<&Array>) -> Result<Array> {
    if ![1, 2, 4].contains(&width) {
        return Err(Error::invalid("bits", format!("Bit width must be in {{1, 2, 4}} but got {width}.")));
    }
    crate::shape::checked_numel("bits", shape)?;
    let k = resolve_key("bits", key)?;
    Ok(bits_raw(&k, shape, width))
}

/// `num` new keys from `key`, shape `(num, 2)`.
pub fn split(key: &Array, num: usize) -> Result<Array> {
    bits(&[num, 2], 4, Some(key))
}

fn operand_as(o: Operand, dtype: Dtype) -> Result<Array> {
    astype(&o.into_array(), dtype)
}

fn check_float(op: &str, dtype: Dtype) -> Result<()> {
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(Error::invalid(op, format!("Unsupported type {dtype}: expected float32, float16 or bfloat16.")));
    }
    Ok(())
}

/// The largest value below 1.0 in `dtype`, as float32.
fn below_one(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F16 => crate::dtype::f16::from_bits(0x3bff).to_f32(),
        Dtype::BF16 => crate::dtype::bf16::from_bits(0x3f7f).to_f32(),
        _ => f32::from_bits(0x3f7f_ffff),
    }
}

fn uniform_arrays(
    op: &str,
    lo: &Array,
    hi: &Array,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_float(op, dtype)?;
    let lo = astype(lo, dtype)?;
    let hi = astype(hi, dtype)?;
    let range = subtract(&hi, &lo)?;
    let out_shape = broadcast_shapes(shape, range.shape())?;
    if out_shape != shape {
        return Err(Error::invalid(
            op,
            format!("Cannot generate random values of shape {shape:?} from broadcasted shape {out_shape:?}."),
        ));
    }
    let b = bits(shape, 4, key)?;
    let u = divide(&b, &Array::scalar(u32::MAX as f32))?;
    let u = astype(&minimum(&u, &Array::scalar(below_one(dtype)))?, dtype)?;
    add(&multiply(&range, &u)?, &lo)
}

/// Uniform samples in `[low, high)` of `shape` and `dtype` (float32/16, bfloat16).
/// Scalar bounds take their default dtype first, as MLX's Python scalars do.
pub fn uniform(
    low: impl Into<Operand>,
    high: impl Into<Operand>,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    let lo = low.into().into_array();
    let hi = high.into().into_array();
    uniform_arrays("uniform", &lo, &hi, shape, dtype, key)
}

/// Normal samples: `loc + scale * sqrt(2) * erfinv(u)` with `u` uniform in (-1, 1).
pub fn normal(
    shape: &[usize],
    dtype: Dtype,
    loc: Option<Operand>,
    scale: Option<Operand>,
    key: Option<&Array>,
) -> Result<Array> {
    if dtype == Dtype::C64 {
        let mut s = shape.to_vec();
        s.push(2);
        let u = uniform_arrays(
            "normal",
            &Array::scalar(f32::from_bits(0xbf7f_ffff)),
            &Array::scalar(1.0f32),
            &s,
            Dtype::F32,
            key,
        )?;
        let z = super::creation::view(&erfinv(&u)?, Dtype::C64)?;
        let mut z = squeeze_axes(&z, &[-1])?;
        if let Some(sc) = scale {
            z = multiply(sc.into_array(), &z)?;
        }
        if let Some(l) = loc {
            z = add(l.into_array(), &z)?;
        }
        return Ok(z);
    }
    check_float("normal", dtype)?;
    let u = uniform_arrays(
        "normal",
        &Array::scalar(f32::from_bits(0xbf7f_ffff)),
        &Array::scalar(1.0f32),
        shape,
        Dtype::F32,
        key,
    )?;
    let mut applied = Array::scalar_as(crate::dtype::Scalar::Float(2f64.sqrt()), dtype);
    if let Some(sc) = scale {
        applied = multiply(&applied, &operand_as(sc, dtype)?)?;
    }
    let mut z = multiply(&applied, &astype(&erfinv(&u)?, dtype)?)?;
    if let Some(l) = loc {
        z = add(&operand_as(l, dtype)?, &z)?;
    }
    Ok(z)
}

/// Integers uniform in `[low, high)` (int32 by default in MLX).
pub fn randint(
    low: impl Into<Operand>,
    high: impl Into<Operand>,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if matches!(dtype.kind(), Kind::Float | Kind::Complex) {
        return Err(Error::invalid("randint", "randint only accepts integer dtypes and bool."));
    }
    let low = low.into().into_array();
    let high = high.into().into_array();
    let u = uniform_arrays("randint", &low, &high, shape, Dtype::F32, key)?;
    let out = astype(&super::unary::floor(&u)?, dtype)?;
    let hi = astype(&subtract(&high, &Array::scalar_as(crate::dtype::Scalar::Int(1), high.dtype()))?, dtype)?;
    maximum(&minimum(&out, &hi)?, &astype(&low, dtype)?)
}

/// Booleans that are true with probability `p` (float); `shape` defaults to `p`'s.
pub fn bernoulli(p: impl Into<Operand>, shape: Option<&[usize]>, key: Option<&Array>) -> Result<Array> {
    let p = p.into().into_array();
    if !matches!(p.dtype().kind(), Kind::Float) {
        return Err(Error::invalid("bernoulli", "bernoulli probability `p` must be a float type."));
    }
    let shape = shape.map(|s| s.to_vec()).unwrap_or_else(|| p.shape().to_vec());
    let upper = f32::from_bits((u32::MAX as f32).to_bits() + 1);
    let res = less(&bits(&shape, 4, key)?, &multiply(&p, &Array::scalar(upper))?)?;
    if res.shape() != shape.as_slice() {
        return Err(Error::invalid("bernoulli", "shape of `p` is incompatible with argument `shape`."));
    }
    Ok(res)
}

/// Normal samples truncated to `(lower, upper)`; `shape` defaults to the bounds' broadcast shape.
pub fn truncated_normal(
    lower: impl Into<Operand>,
    upper: impl Into<Operand>,
    shape: Option<&[usize]>,
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_float("truncated_normal", dtype)?;
    let lower = lower.into().into_array();
    let upper = upper.into().into_array();
    let shape = match shape {
        Some(s) => s.to_vec(),
        None => broadcast_shapes(lower.shape(), upper.shape())?,
    };
    let sqrt2 = Array::scalar_as(crate::dtype::Scalar::Float(2f64.sqrt()), dtype);
    let lt = astype(&lower, dtype)?;
    let ut = astype(&upper, dtype)?;
    let a = erf(&divide(&lt, &sqrt2)?)?;
    let b = erf(&divide(&ut, &sqrt2)?)?;
    let u = uniform_arrays("truncated_normal", &a, &b, &shape, dtype, key)?;
    let out = multiply(&sqrt2, &erfinv(&u)?)?;
    maximum(&minimum(&ut, &out)?, &lt)
}

/// Gumbel samples `-log(-log(u))`.
pub fn gumbel(shape: &[usize], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let u = uniform(0.0, 1.0, shape, dtype, key)?;
    negative(&log(&negative(&log(&u)?)?)?)
}

/// Laplace samples with location `loc` and scale `scale`.
pub fn laplace(shape: &[usize], dtype: Dtype, loc: f32, scale: f32, key: Option<&Array>) -> Result<Array> {
    check_float("laplace", dtype)?;
    let u = uniform_arrays(
        "laplace",
        &Array::scalar(f32::from_bits(0xbf7f_ffff)),
        &Array::scalar(1.0f32),
        shape,
        Dtype::F32,
        key,
    )?;
    let m1 = Array::scalar_as(crate::dtype::Scalar::Float(-1.0), dtype);
    let s = multiply(&sign(&u)?, &log1p(&multiply(&m1, &abs(&u)?)?)?)?;
    let mut s = astype(&s, dtype)?;
    if scale != 1.0 {
        s = multiply(&Array::scalar_as(crate::dtype::Scalar::Float(scale as f64), dtype), &s)?;
    }
    if loc != 0.0 {
        s = add(&Array::scalar_as(crate::dtype::Scalar::Float(loc as f64), dtype), &s)?;
    }
    Ok(s)
}

/// How many samples [`categorical`] draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Samples {
    /// One per distribution (the logits' shape without `axis`).
    One,
    /// An explicit output shape, broadcast-compatible with the logits' shape without `axis`.
    Shape(Vec<usize>),
    /// `n` per distribution, in a new last axis.
    Num(usize),
}

/// Indices (uint32) sampled from the categorical distributions given by
/// unnormalised `logits` along `axis`.
pub fn categorical(logits: &Array, axis: i32, samples: Samples, key: Option<&Array>) -> Result<Array> {
    let nd = logits.ndim() as i32;
    let ax = if axis < 0 { axis + nd } else { axis };
    if ax < 0 || ax >= nd {
        return Err(Error::invalid("categorical", format!("Invalid axis {axis} for logits with {nd} dimensions.")));
    }
    let ax = ax as usize;
    match samples {
        Samples::One => {
            let mut shape = logits.shape().to_vec();
            shape.remove(ax);
            categorical_impl(logits, ax, &shape, key)
        }
        Samples::Shape(shape) => {
            let mut reduced = logits.shape().to_vec();
            reduced.remove(ax);
            if broadcast_shapes(&shape, &reduced).ok().as_deref() != Some(shape.as_slice()) {
                return Err(Error::invalid(
                    "categorical",
                    format!(
                        "Requested shape {shape:?} is not broadcast compatible with reduced logits shape {reduced:?}."
                    ),
                ));
            }
            categorical_impl(logits, ax, &shape, key)
        }
        Samples::Num(n) => {
            let l = expand_dims(logits, -1)?;
            let mut shape = l.shape().to_vec();
            shape.remove(ax);
            *shape.last_mut().expect("rank >= 1") = n;
            categorical_impl(&l, ax, &shape, key)
        }
    }
}

fn categorical_impl(logits: &Array, axis: usize, shape: &[usize], key: Option<&Array>) -> Result<Array> {
    let n = logits.shape()[axis];
    if n > 0 && logits.size() == n && !shape.is_empty() {
        // Inverse CDF over the single distribution.
        let dtype = crate::dtype::promote_types(logits.dtype(), Dtype::F32);
        let x = astype(&reshape_to(logits, &[n])?, dtype)?;
        let m = max(&x, crate::ops::Axes::All, false)?;
        let w = super::compare::where_(&isinf(&m)?, &astype(&equal(&x, &m)?, dtype)?, &exp(&subtract(&x, &m)?)?)?;
        let cdf = cumsum(&w, Some(0), false, false)?;
        let u = multiply(&uniform(0.0, 1.0, shape, Dtype::F32, key)?, &sum(&w, crate::ops::Axes::All, false)?)?;
        // searchsorted(cdf, u, right) = #{cdf <= u}.
        let le = less_equal(&cdf, &expand_dims(&u, -1)?)?;
        let c = astype(&sum(&le, -1, false)?, Dtype::U32)?;
        return subtract(&c, &Array::scalar(1u32));
    }
    let mut gshape = shape.to_vec();
    let offset = axis + shape.len() + 1 - logits.ndim();
    gshape.insert(offset, n);
    let g = gumbel(&gshape, Dtype::F32, key)?;
    argmax(&add(&g, logits)?, Some(offset as i32), false)
}

/// A random permutation of `0..n` (uint32): `argsort` of random bits.
pub fn permutation(n: usize, key: Option<&Array>) -> Result<Array> {
    argsort(&bits(&[n], 4, key)?, Some(0))
}

/// `x` randomly permuted along `axis`.
pub fn permutation_of(x: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    let ax = crate::shape::normalize_axis("permutation", axis, x.ndim())?;
    let n = x.shape()[ax];
    let p = permutation(n, key)?;
    let mut s = vec![1; x.ndim()];
    s[ax] = n;
    let idx = broadcast_to(&reshape_to(&p, &s)?, x.shape())?;
    permute_along(x, &idx, ax)
}

/// Symmetric square root `V sqrt(L) V^T` of each symmetric PSD matrix in
/// `cov` (host-side Jacobi eigendecomposition in f64; `cov` is evaluated).
/// MLX takes `U sqrt(S) V^T` from an SVD, which is the same matrix for a
/// symmetric PSD input.
fn sqrtm_psd(cov: &Array) -> Result<Array> {
    let n = cov.shape()[cov.ndim() - 1];
    let v = astype(cov, Dtype::F64)?.to_vec::<f64>()?;
    let mut out = vec![0.0f64; v.len()];
    for (m, o) in v.chunks(n * n.max(1)).zip(out.chunks_mut(n * n.max(1))) {
        let mut a = m.to_vec();
        let mut q = vec![0.0; n * n];
        for i in 0..n {
            q[i * n + i] = 1.0;
        }
        for _sweep in 0..60 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                .map(|(i, j)| a[i * n + j].powi(2))
                .sum();
            if off < 1e-30 {
                break;
            }
            for p in 0..n {
                for r in p + 1..n {
                    let apr = a[p * n + r];
                    if apr.abs() < 1e-300 {
                        continue;
                    }
                    let theta = (a[r * n + r] - a[p * n + p]) / (2.0 * apr);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for k in 0..n {
                        let (akp, akr) = (a[k * n + p], a[k * n + r]);
                        a[k * n + p] = c * akp - s * akr;
                        a[k * n + r] = s * akp + c * akr;
                    }
                    for k in 0..n {
                        let (apk, ark) = (a[p * n + k], a[r * n + k]);
                        a[p * n + k] = c * apk - s * ark;
                        a[r * n + k] = s * apk + c * ark;
                    }
                    for k in 0..n {
                        let (qkp, qkr) = (q[k * n + p], q[k * n + r]);
                        q[k * n + p] = c * qkp - s * qkr;
                        q[k * n + r] = s * qkp + c * qkr;
                    }
                }
            }
        }
        for i in 0..n {
            for j in 0..n {
                o[i * n + j] = (0..n).map(|k| q[i * n + k] * a[k * n + k].max(0.0).sqrt() * q[j * n + k]).sum();
            }
        }
    }
    astype(&Array::from_vec(out, cov.shape())?, Dtype::F32)
}

/// Samples from multivariate normal distributions with `mean` (…, n) and
/// covariance `cov` (…, n, n), float32 only (as MLX). `cov` must be
/// symmetric positive semi-definite; it is evaluated to take its square root.
pub fn multivariate_normal(
    mean: &Array,
    cov: &Array,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    let op = "multivariate_normal";
    if dtype != Dtype::F32 {
        return Err(Error::invalid(op, "dtype must be float32."));
    }
    if mean.ndim() < 1 {
        return Err(Error::invalid(op, "mean must have at least one dimension."));
    }
    if cov.ndim() < 2 {
        return Err(Error::invalid(op, "cov must have at least two dimensions."));
    }
    let n = mean.shape()[mean.ndim() - 1];
    if cov.shape()[cov.ndim() - 1] != cov.shape()[cov.ndim() - 2] {
        return Err(Error::invalid(op, "last two dimensions of cov must be equal."));
    }
    if n != cov.shape()[cov.ndim() - 1] {
        return Err(Error::invalid(op, "mean and cov must have compatible shapes."));
    }
    let out = broadcast_shapes(&cov.shape()[..cov.ndim() - 2], &mean.shape()[..mean.ndim() - 1])?;
    let mut out = broadcast_shapes(&out, shape)?;
    out.push(n);
    let std = sqrtm_psd(&astype(cov, Dtype::F32)?)?;
    let z = normal(&out, dtype, Some(0.0.into()), Some(1.0.into()), key)?;
    // z @ std as a broadcast multiply and sum over the shared axis.
    let prod = multiply(&expand_dims(&z, -1)?, &std)?;
    let scaled = sum(&prod, -2, false)?;
    add(mean, &scaled)
}
