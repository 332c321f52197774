//! MLX's `mx.fast` namespace: fused RMS norm, layer norm, rotary embeddings
//! and scaled dot-product attention.
//!
//! Each op is one primitive with a fused CPU kernel (`backend/cpu/fast.rs`)
//! and the semantics of MLX's composed definition (its CPU path), which is
//! also written here as a *fallback* graph of ordinary ops. The norms have
//! dedicated backward primitives (`RMSNormVJP`, `LayerNormVJP`) with fused
//! kernels; rope's vjp is rope with the opposite rotation. Rules that are
//! rarely on a hot path (jvp, the backward primitives' own rules, attention's
//! vjp) differentiate or batch the fallback graph, so they nest to any order.

use super::binary::{add, greater_equal, multiply, subtract};
use super::creation::{arange_int, astype, zeros_like};
use super::reduce::{mean, softmax};
use super::shape::{broadcast_to, expand_dims, flatten, moveaxis, reshape_to, swapaxes, unflatten};
use super::unary::rsqrt;
use super::{matmul, where_};
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::{promote_types, Dtype, Scalar};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use std::sync::Arc;

pub use crate::backend::cpu::fast::MaskKind;

// ------------------------------------------------------------------ fallback helpers

type Graph<'a> = &'a dyn Fn(&[Array]) -> Result<Vec<Array>>;

/// Cotangents for `argnums` by reverse-differentiating the fallback graph `f`.
fn vjp_via(f: Graph<'_>, primals: &[Array], cotangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
    let (_, g) = crate::transforms::vjp(|xs: &[Array]| f(xs), primals, cotangents)?;
    Ok(argnums.iter().map(|&i| g[i].clone()).collect())
}

/// Output tangents by forward-differentiating the fallback graph `f`.
fn jvp_via(f: Graph<'_>, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
    let mut full: Vec<Array> = primals.iter().map(zeros_like).collect::<Result<_>>()?;
    for (&i, t) in argnums.iter().zip(tangents) {
        full[i] = t.clone();
    }
    Ok(crate::transforms::jvp(|xs: &[Array]| f(xs), primals, &full)?.1)
}

/// Batches the fallback graph `f` (outputs batched along axis 0).
fn vmap_via(
    f: Graph<'_>,
    inputs: &[Array],
    axes: &[Option<usize>],
    n_out: usize,
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    let in_axes: Vec<Option<i32>> = axes.iter().map(|a| a.map(|v| v as i32)).collect();
    let res = crate::transforms::vmap(|xs: &[Array]| f(xs), &in_axes, &vec![0; n_out])(inputs)?;
    Ok((res, vec![Some(0); n_out]))
}

/// The batch size of a vmapped call.
fn batch_size(inputs: &[Array], axes: &[Option<usize>]) -> usize {
    inputs.iter().zip(axes).find_map(|(x, a)| a.map(|a| x.shape()[a])).unwrap_or(1)
}

/// `x` with its batch axis (if any) moved to the front, or broadcast to `n` in front.
fn batch_front(x: &Array, ax: Option<usize>, n: usize) -> Result<Array> {
    match ax {
        Some(a) => moveaxis(x, a as i32, 0),
        None => {
            let mut s = vec![n];
            s.extend_from_slice(x.shape());
            broadcast_to(&expand_dims(x, 0)?, &s)
        }
    }
}

/// `x`'s dtype when it is f64, otherwise float32 (MLX normalises in f32).
fn compute_dtype(d: Dtype) -> Dtype {
    if d == Dtype::F64 {
        Dtype::F64
    } else {
        Dtype::F32
    }
}

// ------------------------------------------------------------------ norms

/// Which normalisation, with which affine inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct NormSpec {
    eps: f32,
    /// Subtract the mean first (layer norm) or not (RMS norm).
    center: bool,
    has_weight: bool,
    has_bias: bool,
}

impl NormSpec {
    fn n_in(&self) -> usize {
        1 + self.has_weight as usize + self.has_bias as usize
    }
    /// MLX's composed definition on inputs `[x, weight?, bias?]` (all of the output dtype).
    fn graph(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let x = &xs[0];
        let xf = astype(x, compute_dtype(x.dtype()))?;
        let xc = if self.center { subtract(&xf, &mean(&xf, -1, true)?)? } else { xf };
        let v = mean(&multiply(&xc, &xc)?, -1, true)?;
        let mut y = astype(&multiply(&xc, &rsqrt(&add(&v, self.eps as f64)?)?)?, x.dtype())?;
        let mut k = 1;
        if self.has_weight {
            y = multiply(&y, &xs[k])?;
            k += 1;
        }
        if self.has_bias {
            y = add(&y, &xs[k])?;
        }
        Ok(vec![y])
    }
    /// The vjp of [`NormSpec::graph`] on inputs `[x, weight?, bias?, g]`.
    fn vjp_graph(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let n = self.n_in();
        let (_, g) = crate::transforms::vjp(|a: &[Array]| self.graph(a), &xs[..n], &xs[n..])?;
        Ok(g)
    }
}

fn check_affine(op: &str, what: &str, a: &Array, d: usize) -> Result<()> {
    if a.ndim() != 1 {
        return Err(Error::invalid(
            op,
            format!("{what} must have 1 dimension but has {} dimensions (shape {:?}).", a.ndim(), a.shape()),
        ));
    }
    if a.size() != d {
        return Err(Error::invalid(
            op,
            format!("{what} must have the same size as the last dimension of x ({d}) but has {} elements.", a.size()),
        ));
    }
    Ok(())
}

fn norm_op(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32, center: bool) -> Result<Array> {
    let op = if center { "layer_norm" } else { "rms_norm" };
    if x.ndim() == 0 {
        return Err(Error::invalid(op, "Input must have at least 1 dimension but got input with 0 dimensions."));
    }
    let d = x.shape()[x.ndim() - 1];
    let mut out = x.dtype();
    for (what, a) in [("weight", weight), ("bias", bias)] {
        if let Some(a) = a {
            check_affine(op, what, a, d)?;
            out = promote_types(out, a.dtype());
        }
    }
    if !out.is_floating() {
        return Err(Error::invalid(op, format!("Received unsupported type {out}.")));
    }
    let spec = NormSpec { eps, center, has_weight: weight.is_some(), has_bias: bias.is_some() };
    let mut inputs = vec![astype(x, out)?];
    for a in [weight, bias].into_iter().flatten() {
        inputs.push(astype(a, out)?);
    }
    Ok(Array::from_op(x.shape().to_vec(), out, Norm(spec), inputs))
}

/// RMS normalisation over the last axis, `x / sqrt(mean(x²) + eps) * weight`
/// (MLX's `mx.fast.rms_norm`). `weight` must have shape `(D,)`; the output
/// dtype is the promotion of `x` and `weight`; half types accumulate in f32.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    norm_op(x, weight, None, eps, false)
}

/// Layer normalisation over the last axis, `(x - mean) / sqrt(var + eps) *
/// weight + bias` (MLX's `mx.fast.layer_norm`). `weight` and `bias` must have
/// shape `(D,)`; the output dtype is the promotion of the inputs.
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    norm_op(x, weight, bias, eps, true)
}

/// Fused RMS norm (`RMSNorm`) or layer norm (`LayerNorm`); inputs `[x, weight?, bias?]`.
#[derive(Debug, PartialEq)]
struct Norm(NormSpec);

impl Primitive for Norm {
    fn name(&self) -> &'static str {
        if self.0.center {
            "LayerNorm"
        } else {
            "RMSNorm"
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let s = &self.0;
        let w = if s.has_weight { Some(&inputs[1]) } else { None };
        let b = if s.has_bias { Some(&inputs[1 + s.has_weight as usize]) } else { None };
        let d = if s.center {
            backend.layer_norm(&inputs[0], w, b, s.eps, &outputs[0])?
        } else {
            backend.rms_norm(&inputs[0], w, s.eps, &outputs[0])?
        };
        Ok(vec![d])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let s = self.0;
        let mut inputs = primals.to_vec();
        inputs.push(cotangents[0].clone());
        let outs: Vec<(Vec<usize>, Dtype)> = primals.iter().map(|p| (p.shape().to_vec(), p.dtype())).collect();
        let grads = Array::from_op_multi(outs, Arc::new(NormVjp(s)), inputs);
        Ok(argnums.iter().map(|&i| grads[i].clone()).collect())
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        jvp_via(&|xs| self.0.graph(xs), primals, tangents, argnums)
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let n = batch_size(inputs, axes);
        let x = batch_front(&inputs[0], axes[0], n)?;
        if axes[1..].iter().all(Option::is_none) {
            let y = Array::from_op(x.shape().to_vec(), x.dtype(), Norm(self.0), {
                let mut v = vec![x.clone()];
                v.extend_from_slice(&inputs[1..]);
                v
            });
            return Ok((vec![y], vec![Some(0)]));
        }
        // A batched weight or bias: normalise with the fused kernel, then apply
        // the per-batch affine map as MLX's graph does (rounded to the dtype between steps).
        let plain = NormSpec { has_weight: false, has_bias: false, ..self.0 };
        let mut y = Array::from_op(x.shape().to_vec(), x.dtype(), Norm(plain), vec![x.clone()]);
        let expand = |a: &Array, ax: Option<usize>| -> Result<Array> {
            let a = batch_front(a, ax, n)?;
            // (n, D) -> (n, 1, ..., 1, D)
            let mut s = vec![n];
            s.extend(std::iter::repeat_n(1, x.ndim() - 2));
            s.push(a.shape()[1]);
            reshape_to(&a, &s)
        };
        let mut k = 1;
        if self.0.has_weight {
            y = multiply(&y, &expand(&inputs[k], axes[k])?)?;
            k += 1;
        }
        if self.0.has_bias {
            y = add(&y, &expand(&inputs[k], axes[k])?)?;
        }
        Ok((vec![y], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

/// Fused backward pass of a norm (`RMSNormVJP`, `LayerNormVJP`): inputs
/// `[x, weight?, bias?, g]`, outputs the gradients of `[x, weight?, bias?]`.
#[derive(Debug, PartialEq)]
struct NormVjp(NormSpec);

impl Primitive for NormVjp {
    fn name(&self) -> &'static str {
        if self.0.center {
            "LayerNormVJP"
        } else {
            "RMSNormVJP"
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let s = &self.0;
        let w = if s.has_weight { Some(&inputs[1]) } else { None };
        let g = &inputs[s.n_in()];
        if s.center {
            backend.layer_norm_vjp(&inputs[0], w, g, s.eps, s.has_bias, outputs)
        } else {
            backend.rms_norm_vjp(&inputs[0], w, g, s.eps, outputs)
        }
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        vjp_via(&|xs| self.0.vjp_graph(xs), primals, cotangents, argnums)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        jvp_via(&|xs| self.0.vjp_graph(xs), primals, tangents, argnums)
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        vmap_via(&|xs| self.0.vjp_graph(xs), inputs, axes, self.0.n_in())
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(inputs[..self.0.n_in()].iter().map(|a| a.shape().to_vec()).collect())
    }
    crate::prim_common!();
}

// ------------------------------------------------------------------ rope

/// Where rope's positions start: a constant, or an integer array (a scalar
/// or one offset per entry of `x`'s first axis).
#[derive(Clone, Copy, Debug)]
pub enum RopeOffset<'a> {
    /// The same starting position for every sequence.
    Int(i64),
    /// A scalar or `(B,)` integer array.
    Array(&'a Array),
}

impl From<i64> for RopeOffset<'_> {
    fn from(v: i64) -> Self {
        RopeOffset::Int(v)
    }
}
impl From<i32> for RopeOffset<'_> {
    fn from(v: i32) -> Self {
        RopeOffset::Int(v as i64)
    }
}
impl<'a> From<&'a Array> for RopeOffset<'a> {
    fn from(a: &'a Array) -> Self {
        RopeOffset::Array(a)
    }
}

/// Rotary position embedding (MLX's `mx.fast.rope`) of `x` with shape
/// `(..., L, D)`: the first `dims` features of position `offset + l` are
/// rotated in pairs — adjacent pairs when `traditional`, otherwise the two
/// halves — by angles `(offset + l) * scale * inv_freq`, with `inv_freq =
/// base^(-i / (dims/2))` or `1 / freqs` (exactly one of `base` and `freqs`
/// must be given). An array offset may hold one position per entry of `x`'s
/// first axis.
pub fn rope<'a>(
    x: &Array,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: impl Into<RopeOffset<'a>>,
    freqs: Option<&Array>,
) -> Result<Array> {
    const OP: &str = "rope";
    if x.ndim() < 3 {
        return Err(Error::invalid(
            OP,
            format!("Input must have at least 3 dimensions but got input with {} dimensions.", x.ndim()),
        ));
    }
    if !x.dtype().is_floating() {
        return Err(Error::invalid(OP, format!("Input must be a floating type but got {}.", x.dtype())));
    }
    let offset = match offset.into() {
        RopeOffset::Int(v) => {
            let v = i32::try_from(v).map_err(|_| Error::invalid(OP, format!("offset {v} does not fit in int32.")))?;
            Array::scalar(v)
        }
        RopeOffset::Array(a) => {
            if a.ndim() > 1 {
                return Err(Error::invalid(
                    OP,
                    format!("offset must have at most one dimension but has shape {:?}.", a.shape()),
                ));
            }
            if a.size() != 1 && a.size() != x.shape()[0] {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "offset must be a scalar or vector with {} elements but has shape {:?}.",
                        x.shape()[0],
                        a.shape()
                    ),
                ));
            }
            if !a.dtype().is_integer() {
                return Err(Error::invalid(OP, format!("offset must be an integer but got type {}.", a.dtype())));
            }
            astype(a, Dtype::I32)?
        }
    };
    if dims == 0 || !dims.is_multiple_of(2) {
        return Err(Error::invalid(OP, format!("dims must be positive and even but got {dims}.")));
    }
    let d = x.shape()[x.ndim() - 1];
    if dims > d {
        return Err(Error::invalid(
            OP,
            format!("dims must not exceed the input's last dimension ({d}) but got {dims}."),
        ));
    }
    let mut inputs = vec![x.clone(), offset];
    match (freqs, base) {
        (Some(_), Some(_)) => return Err(Error::invalid(OP, "Only one of base or freqs can have a value.")),
        (None, None) => return Err(Error::invalid(OP, "Neither base nor freqs has a value.")),
        (Some(f), None) => {
            if f.ndim() != 1 || f.shape()[0] != dims / 2 {
                return Err(Error::invalid(
                    OP,
                    format!("freqs must be one dimensional with size {} but got shape {:?}.", dims / 2, f.shape()),
                ));
            }
            inputs.push(astype(f, Dtype::F32)?);
        }
        (None, Some(_)) => {}
    }
    let prim = Rope { dims, traditional, base: base.unwrap_or(1.0), scale, forward: true };
    Ok(Array::from_op(x.shape().to_vec(), x.dtype(), prim, inputs))
}

/// Rotary embedding (`RoPE`); inputs `[x, offset (int32), freqs?]`.
#[derive(Debug, PartialEq)]
struct Rope {
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    /// Rotate forward (false: by the negated angles, the vjp).
    forward: bool,
}

impl Rope {
    fn with(&self, forward: bool) -> Rope {
        Rope { forward, ..*self }
    }
    fn apply(self, x: &Array, rest: &[Array]) -> Array {
        let mut inputs = vec![x.clone()];
        inputs.extend_from_slice(rest);
        Array::from_op(x.shape().to_vec(), x.dtype(), self, inputs)
    }
}

impl Primitive for Rope {
    fn name(&self) -> &'static str {
        "RoPE"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.rope(
            &inputs[0],
            &inputs[1],
            inputs.get(2),
            self.dims,
            self.traditional,
            self.base,
            self.scale,
            self.forward,
            &outputs[0],
        )?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::Yes, jvp: Rule::Yes, vmap: Rule::Yes }
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        if argnums.iter().any(|&i| i != 0) {
            return Err(Error::unsupported(
                "rope",
                "vjp with respect to the offset or the frequencies is not supported.",
            ));
        }
        Ok(vec![self.with(!self.forward).apply(&cotangents[0], &primals[1..])])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        if argnums.iter().any(|&i| i != 0) {
            return Err(Error::unsupported(
                "rope",
                "jvp with respect to the offset or the frequencies is not supported.",
            ));
        }
        Ok(vec![self.with(self.forward).apply(&tangents[0], &primals[1..])])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        if axes.get(2).copied().flatten().is_some() {
            return Err(Error::unsupported("rope", "vmap over the frequencies is not supported."));
        }
        let n = batch_size(inputs, axes);
        let x = batch_front(&inputs[0], axes[0], n)?;
        let off = &inputs[1];
        let rest = &inputs[2..];
        if axes[1].is_none() && off.size() == 1 {
            // One offset for all: the batch is just another leading axis.
            return Ok((vec![self.with(self.forward).apply(&x, &inputs[1..])], vec![Some(0)]));
        }
        // Offsets per (batch, first axis): merge the two leading axes.
        let b0 = x.shape()[1];
        let off = match axes[1] {
            Some(a) => {
                let o = moveaxis(off, a as i32, 0)?;
                let o = reshape_to(&o, &[n, o.size() / n])?;
                broadcast_to(&o, &[n, b0])?
            }
            None => broadcast_to(&reshape_to(off, &[1, off.size()])?, &[n, b0])?,
        };
        let off = reshape_to(&super::shape::contiguous(&off, false), &[n * b0])?;
        let xf = flatten(&x, 0, 1)?;
        let mut ins = vec![off];
        ins.extend_from_slice(rest);
        let y = self.with(self.forward).apply(&xf, &ins);
        Ok((vec![reshape_to(&y, x.shape())?], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

// ------------------------------------------------------------------ attention

/// The mask of [`scaled_dot_product_attention`].
#[derive(Clone, Copy, Debug)]
pub enum AttentionMask<'a> {
    /// Every query attends to every key.
    None,
    /// Query `i` attends to keys `j <= i + (L_k - L_q)` (aligned to the
    /// bottom-right corner, MLX's `"causal"`).
    Causal,
    /// An additive float mask or a boolean mask (true = attend), broadcastable
    /// to `(B, H_q, L_q, L_k)`.
    Array(&'a Array),
}

/// Attention `softmax(scale · q·kᵀ + mask) · v` (MLX's
/// `mx.fast.scaled_dot_product_attention`) for `q` of shape `(B, H_q, L_q,
/// D)`, `k` `(B, H_kv, L_k, D)` and `v` `(B, H_kv, L_k, D_v)`; `H_q` must be
/// a multiple of `H_kv` (grouped-query attention: query head `h` uses key
/// head `h / (H_q / H_kv)`). Boolean-masked scores are set to the dtype's
/// lowest finite value (a row with no visible key averages all values, as in MLX).
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> Result<Array> {
    const OP: &str = "scaled_dot_product_attention";
    for t in [q, k, v] {
        if t.ndim() != 4 {
            return Err(Error::invalid(OP, format!("input with shape {:?} expected to be rank 4.", t.shape())));
        }
    }
    let b = q.shape()[0];
    for t in [k, v] {
        if t.shape()[0] != b {
            return Err(Error::invalid(
                OP,
                format!("mismatching batch dimension for input with shape {:?}.", t.shape()),
            ));
        }
    }
    if q.shape()[3] != k.shape()[3] {
        return Err(Error::invalid(
            OP,
            format!(
                "query, keys expected to have matching last dimension; found query shape {:?} for keys shape {:?}.",
                q.shape(),
                k.shape()
            ),
        ));
    }
    let (hq, hkv) = (q.shape()[1], k.shape()[1]);
    if v.shape()[1] != hkv {
        return Err(Error::invalid(
            OP,
            format!("keys, values expected to have matching n_kv_heads; found {hkv} and {}.", v.shape()[1]),
        ));
    }
    if k.shape()[2] != v.shape()[2] {
        return Err(Error::invalid(
            OP,
            format!("keys and values must have the same sequence length; found {:?} and {:?}.", k.shape(), v.shape()),
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(Error::invalid(
            OP,
            format!("n_heads must be a multiple of n_kv_heads, found n_heads {hq} for n_kv_heads {hkv}."),
        ));
    }
    let dt = promote_types(promote_types(q.dtype(), k.dtype()), v.dtype());
    if !dt.is_floating() {
        return Err(Error::invalid(OP, format!("Received unsupported type {dt}.")));
    }
    let mut inputs = vec![astype(q, dt)?, astype(k, dt)?, astype(v, dt)?];
    let (lq, lk) = (q.shape()[2], k.shape()[2]);
    let kind = match mask {
        AttentionMask::None => MaskKind::None,
        AttentionMask::Causal => MaskKind::Causal,
        AttentionMask::Array(m) => {
            if m.ndim() > 4 {
                return Err(Error::invalid(
                    OP,
                    format!("the mask with shape {:?} expected to have at most rank 4.", m.shape()),
                ));
            }
            let is_bool = m.dtype() == Dtype::Bool;
            if !is_bool && promote_types(m.dtype(), dt) != dt {
                return Err(Error::invalid(OP, format!("Mask type must promote to output type {dt}.")));
            }
            let m = if is_bool { m.clone() } else { astype(m, dt)? };
            inputs.push(broadcast_to(&m, &[b, hq, lq, lk])?);
            if is_bool {
                MaskKind::Bool
            } else {
                MaskKind::Additive
            }
        }
    };
    let out = vec![b, hq, lq, v.shape()[3]];
    Ok(Array::from_op(out, dt, Sdpa { scale, kind }, inputs))
}

/// Fused attention (`ScaledDotProductAttention`); inputs `[q, k, v, mask?]`
/// with the mask broadcast to `(B, H_q, L_q, L_k)`.
#[derive(Debug, PartialEq)]
struct Sdpa {
    scale: f32,
    kind: MaskKind,
}

impl Sdpa {
    /// MLX's composed definition (scores materialised; k/v broadcast across
    /// each group of query heads, never repeated).
    fn graph(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let (q, k, v) = (&xs[0], &xs[1], &xs[2]);
        let dt = q.dtype();
        let (hq, hkv) = (q.shape()[1], k.shape()[1]);
        let rep = hq / hkv;
        let mut q = multiply(q, &Array::scalar_as(Scalar::Float(self.scale as f64), dt))?;
        let (mut k, mut v) = (k.clone(), v.clone());
        if rep > 1 {
            q = unflatten(&q, 1, &[hkv as i64, rep as i64])?;
            k = expand_dims(&k, 2)?;
            v = expand_dims(&v, 2)?;
        }
        let mut s = matmul(&q, &swapaxes(&k, -1, -2)?)?;
        let mut mask = match self.kind {
            MaskKind::None => None,
            MaskKind::Causal => {
                let (lq, lk) = (q.shape()[q.ndim() - 2] as i64, k.shape()[k.ndim() - 2] as i64);
                let qi = expand_dims(&arange_int(lk - lq, lk, 1)?, 1)?;
                let ki = expand_dims(&arange_int(0, lk, 1)?, 0)?;
                Some(greater_equal(&qi, &ki)?)
            }
            _ => Some(xs[3].clone()),
        };
        if rep > 1 {
            if let Some(m) = &mask {
                if m.ndim() == 4 {
                    mask = Some(unflatten(m, 1, &[hkv as i64, rep as i64])?);
                }
            }
        }
        if let Some(m) = mask {
            s = if m.dtype() == Dtype::Bool {
                let lowest = match dt {
                    Dtype::F16 => -65504.0,
                    Dtype::BF16 => -3.389_531_389_251_535_5e38,
                    Dtype::F32 => f32::MIN as f64,
                    _ => f64::MIN,
                };
                where_(&m, &s, &Array::scalar_as(Scalar::Float(lowest), dt))?
            } else {
                add(&s, &m)?
            };
        }
        let p = softmax(&s, -1, true)?;
        let mut o = matmul(&p, &v)?;
        if rep > 1 {
            o = flatten(&o, 1, 2)?;
        }
        Ok(vec![o])
    }
}

impl Primitive for Sdpa {
    fn name(&self) -> &'static str {
        "ScaledDotProductAttention"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.scaled_dot_product_attention(
            &inputs[0],
            &inputs[1],
            &inputs[2],
            inputs.get(3),
            self.kind,
            self.scale,
            &outputs[0],
        )?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        if argnums.iter().any(|&i| i >= 3) {
            // The gradient of an additive mask: through the composed graph.
            return vjp_via(&|xs| self.graph(xs), primals, cotangents, argnums);
        }
        let mut inputs = primals.to_vec();
        inputs.push(astype(&cotangents[0], primals[0].dtype())?);
        let outs = primals[..3].iter().map(|p| (p.shape().to_vec(), p.dtype())).collect();
        let grads = Array::from_op_multi(outs, Arc::new(SdpaVjp { scale: self.scale, kind: self.kind }), inputs);
        Ok(argnums.iter().map(|&i| grads[i].clone()).collect())
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        jvp_via(&|xs| self.graph(xs), primals, tangents, argnums)
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        // Fold the vmap axis into the batch axis.
        let n = batch_size(inputs, axes);
        let mut folded = Vec::with_capacity(inputs.len());
        let mut bsz = 0;
        for (x, &a) in inputs.iter().zip(axes) {
            let f = batch_front(x, a, n)?;
            bsz = f.shape()[1];
            let f = super::shape::contiguous(&f, false);
            folded.push(flatten(&f, 0, 1)?);
        }
        let y = &Array::from_op(
            vec![n * bsz, folded[0].shape()[1], folded[0].shape()[2], folded[2].shape()[3]],
            folded[0].dtype(),
            Sdpa { scale: self.scale, kind: self.kind },
            folded,
        );
        let mut s = vec![n];
        s.extend_from_slice(y.shape());
        s[1] = bsz;
        Ok((vec![reshape_to(y, &s)?], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let (q, v) = (&inputs[0], &inputs[2]);
        Ok(vec![vec![q.shape()[0], q.shape()[1], q.shape()[2], v.shape()[3]]])
    }
    crate::prim_common!();
}

/// Fused backward pass of [`Sdpa`] (`ScaledDotProductAttentionVJP`): inputs
/// `[q, k, v, mask?, cotangent]`, outputs the gradients of `q`, `k` and `v`.
/// The scores are recomputed block by block inside the kernel, never stored.
#[derive(Debug, PartialEq)]
struct SdpaVjp {
    scale: f32,
    kind: MaskKind,
}

impl SdpaVjp {
    /// The gradients by differentiating [`Sdpa::graph`] (for higher orders).
    fn graph(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let (primals, g) = xs.split_at(xs.len() - 1);
        let sdpa = Sdpa { scale: self.scale, kind: self.kind };
        let (_, grads) = crate::transforms::vjp(|ys: &[Array]| sdpa.graph(ys), primals, g)?;
        Ok(grads[..3].to_vec())
    }
}

impl Primitive for SdpaVjp {
    fn name(&self) -> &'static str {
        "ScaledDotProductAttentionVJP"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let mask = if inputs.len() == 5 { Some(&inputs[3]) } else { None };
        backend.scaled_dot_product_attention_vjp(
            &inputs[0],
            &inputs[1],
            &inputs[2],
            mask,
            &inputs[inputs.len() - 1],
            self.kind,
            self.scale,
            outputs,
        )
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        vjp_via(&|xs| self.graph(xs), primals, cotangents, argnums)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        jvp_via(&|xs| self.graph(xs), primals, tangents, argnums)
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        vmap_via(&|xs| self.graph(xs), inputs, axes, 3)
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(inputs[..3].iter().map(|a| a.shape().to_vec()).collect())
    }
    crate::prim_common!();
}
