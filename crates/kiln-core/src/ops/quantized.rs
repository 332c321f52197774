//! Quantization, as MLX's `mx.quantize`, `mx.dequantize`,
//! `mx.quantized_matmul` and `mx.gather_qmm`: the `Quantize`, `Dequantize`,
//! `QuantizedMatmul` and `GatherQMM` primitives with their shape/dtype rules
//! and transform rules.
//!
//! # Formats (bit-for-bit as MLX packs them)
//! A matrix `w` of shape `(..., K)` is split into groups of `group_size`
//! consecutive elements along its last axis. The codes of a row form one
//! little-endian bit stream: code `i` occupies stream bits
//! `[i·bits, (i+1)·bits)`, and word `j` of the packed `uint32` row holds stream
//! bits `[32·j, 32·j + 32)` (so 3, 5 and 6-bit codes straddle word
//! boundaries). The packed row has `K·bits/32` words.
//! * **affine** (group sizes 32, 64, 128; bits 1, 2, 3, 4, 5, 6, 8): per group a
//!   scale `s` and bias `b` in `w`'s dtype with `w ≈ s·q + b`, `q` in
//!   `0..2^bits`. The edge of larger magnitude (min or max) is represented
//!   exactly (`b` is that edge, or 0 when it rounds to code 0).
//! * **mxfp4** (group 32, 4 bits): FP4 E2M1 codes and a `uint8` E8M0 scale
//!   (power of two, bias 127) per group.
//! * **nvfp4** (group 16, 4 bits): FP4 E2M1 codes and a `uint8` FP8 E4M3 scale
//!   per group.
//! * **mxfp8** (group 32, 8 bits): FP8 E4M3 codes and a `uint8` E8M0 scale.
//!
//! Dequantized affine values have the scales' dtype; the floating-point modes
//! dequantize to bfloat16 (MLX's default). `quantized_matmul` returns the
//! promotion of `x` and the scales for affine, `x`'s dtype otherwise.

use super::binary::{add, multiply};
use super::creation::{arange_int, astype, ones_like, zeros_like};
use super::reduce::{sum, sum_to_shape};
use super::shape::{broadcast_to, expand_dims, moveaxis, reshape_to, swapaxes};
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::{promote_types, Dtype};
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use crate::shape::{broadcast_shapes, numel};

/// A quantization format (MLX's `mode` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// Integer codes with a scale and bias per group.
    Affine,
    /// OCP microscaling FP4 (E2M1 codes, E8M0 scales, groups of 32).
    Mxfp4,
    /// NVIDIA FP4 (E2M1 codes, E4M3 scales, groups of 16).
    Nvfp4,
    /// OCP microscaling FP8 (E4M3 codes, E8M0 scales, groups of 32).
    Mxfp8,
}

impl QuantMode {
    /// MLX's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Nvfp4 => "nvfp4",
            QuantMode::Mxfp8 => "mxfp8",
        }
    }
}

/// Quantization parameters: group size, bits per code and format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    /// Consecutive elements of the last axis sharing one scale (and bias).
    pub group_size: usize,
    /// Bits per code.
    pub bits: u32,
    /// The format.
    pub mode: QuantMode,
}

impl QuantSpec {
    /// Affine quantization with `group_size` and `bits`.
    pub fn affine(group_size: usize, bits: u32) -> QuantSpec {
        QuantSpec { group_size, bits, mode: QuantMode::Affine }
    }

    /// MLX's default parameters of a mode: affine (64, 4), mxfp4 (32, 4),
    /// nvfp4 (16, 4), mxfp8 (32, 8).
    pub fn default_for(mode: QuantMode) -> QuantSpec {
        let (group_size, bits) = match mode {
            QuantMode::Affine => (64, 4),
            QuantMode::Mxfp4 => (32, 4),
            QuantMode::Nvfp4 => (16, 4),
            QuantMode::Mxfp8 => (32, 8),
        };
        QuantSpec { group_size, bits, mode }
    }

    /// Checks that the group size and bits are allowed for the mode.
    pub fn validate(&self, op: &str) -> Result<()> {
        match self.mode {
            QuantMode::Affine => {
                if ![32, 64, 128].contains(&self.group_size) {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "The requested group size {} is not supported. The supported group sizes are 32, 64, and 128.",
                            self.group_size
                        ),
                    ));
                }
                if ![1, 2, 3, 4, 5, 6, 8].contains(&self.bits) {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "The requested number of bits {} is not supported. The supported bits are 1, 2, 3, 4, 5, 6 and 8.",
                            self.bits
                        ),
                    ));
                }
            }
            m => {
                let d = QuantSpec::default_for(m);
                if self.group_size != d.group_size {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "{} quantization requires group size {} but got {}.",
                            m.name(),
                            d.group_size,
                            self.group_size
                        ),
                    ));
                }
                if self.bits != d.bits {
                    return Err(Error::invalid(
                        op,
                        format!("{} quantization requires bits to be {} but got {}.", m.name(), d.bits, self.bits),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Packed `uint32` words holding `k` codes.
    pub fn packed_len(&self, k: usize) -> usize {
        k * self.bits as usize / 32
    }

    /// Codes held by `words` packed `uint32` words.
    pub fn unpacked_len(&self, words: usize) -> usize {
        words * 32 / self.bits as usize
    }
}

// ---------------------------------------------------------------- validation

/// Checks `wq`, `scales` and `biases` against each other and the spec;
/// returns the unpacked length of `wq`'s last axis.
fn check_packed(op: &str, wq: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<usize> {
    spec.validate(op)?;
    if wq.dtype() != Dtype::U32 {
        return Err(Error::invalid(op, format!("The weight matrix should be uint32 but received {}.", wq.dtype())));
    }
    if wq.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!("The quantized matrix must have at least 2 dimensions, got shape {}.", fmt_shape(wq.shape())),
        ));
    }
    match (spec.mode, biases) {
        (QuantMode::Affine, None) => {
            return Err(Error::invalid(op, "Biases must be provided for affine quantization."));
        }
        (QuantMode::Affine, Some(b)) => {
            if !scales.dtype().is_floating() || b.dtype() != scales.dtype() {
                return Err(Error::invalid(
                    op,
                    format!(
                        "Affine scales and biases must share one floating dtype, got {} and {}.",
                        scales.dtype(),
                        b.dtype()
                    ),
                ));
            }
            if b.shape() != scales.shape() {
                return Err(Error::invalid(
                    op,
                    format!(
                        "Scales and biases should have the same shape. Received scales with shape {} and biases with {}.",
                        fmt_shape(scales.shape()),
                        fmt_shape(b.shape())
                    ),
                ));
            }
        }
        (m, Some(_)) => {
            return Err(Error::invalid(op, format!("Biases must be None for {} quantization.", m.name())));
        }
        (m, None) => {
            if scales.dtype() != Dtype::U8 {
                return Err(Error::invalid(op, format!("{} scales must be uint8, got {}.", m.name(), scales.dtype())));
            }
        }
    }
    let (ws, ss) = (wq.shape(), scales.shape());
    let k = spec.unpacked_len(ws[ws.len() - 1]);
    if ws.len() != ss.len() || ws[..ws.len() - 1] != ss[..ss.len() - 1] || ss[ss.len() - 1] * spec.group_size != k {
        return Err(Error::invalid(
            op,
            format!(
                "The shapes of the weight and scales are incompatible based on bits and group_size. w.shape() == {} and scales.shape() == {} with group_size={} and bits={}.",
                fmt_shape(ws),
                fmt_shape(ss),
                spec.group_size,
                spec.bits
            ),
        ));
    }
    Ok(k)
}

// ---------------------------------------------------------------- Quantize

/// Quantizes the last axis of a floating matrix. Outputs: packed `uint32`
/// codes, scales and (affine only) biases.
#[derive(Debug, PartialEq)]
pub struct Quantize {
    /// Format.
    pub spec: QuantSpec,
}

impl Primitive for Quantize {
    fn name(&self) -> &'static str {
        "Quantize"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        backend.quantize(&inputs[0], self.spec, outputs)
    }
    fn rules(&self) -> Rules {
        let why = "rounding to integer codes is piecewise constant (MLX defines no derivative either)";
        Rules { vjp: Rule::No(why), jvp: Rule::No(why), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = match axes[0] {
            Some(a) => moveaxis(&inputs[0], a as i32, 0)?,
            None => inputs[0].clone(),
        };
        let outs = quantize_raw(&x, self.spec)?;
        let ax = axes[0].map(|_| 0);
        let n = outs.len();
        Ok((outs, vec![ax; n]))
    }
    crate::prim_common!();
}

fn quantize_raw(w: &Array, spec: QuantSpec) -> Result<Vec<Array>> {
    let s = w.shape();
    let k = s[s.len() - 1];
    let mut qs = s.to_vec();
    *qs.last_mut().expect("rank >= 2") = spec.packed_len(k);
    let mut ss = s.to_vec();
    *ss.last_mut().expect("rank >= 2") = k / spec.group_size;
    let mut outs = vec![(qs, Dtype::U32)];
    if spec.mode == QuantMode::Affine {
        outs.push((ss.clone(), w.dtype()));
        outs.push((ss, w.dtype()));
    } else {
        outs.push((ss, Dtype::U8));
    }
    Ok(Array::from_op_multi(outs, std::sync::Arc::new(Quantize { spec }), vec![w.clone()]))
}

/// Quantizes `w` (floating, at least 2-D, last axis a multiple of the group
/// size) as MLX's `mx.quantize`: returns the packed `uint32` codes (last axis
/// `K·bits/32`), the scales (last axis `K/group_size`; `w`'s dtype for
/// affine, `uint8` otherwise) and, for affine only, the biases.
///
/// ```
/// use kiln_core::{ops, Array};
/// let w = Array::from_vec((0..64).map(|i| i as f32 / 8.0).collect(), &[2, 32]).unwrap();
/// let (wq, scales, biases) = ops::quantize(&w, ops::QuantSpec::affine(32, 4)).unwrap();
/// assert_eq!(wq.shape(), &[2, 4]);
/// let back = ops::dequantize(&wq, &scales, biases.as_ref(), ops::QuantSpec::affine(32, 4)).unwrap();
/// assert_eq!(back.shape(), &[2, 32]);
/// ```
pub fn quantize(w: &Array, spec: QuantSpec) -> Result<(Array, Array, Option<Array>)> {
    let op = "quantize";
    spec.validate(op)?;
    if !w.dtype().is_floating() {
        return Err(Error::invalid(
            op,
            format!("Only real floating types can be quantized but w has type {}.", w.dtype()),
        ));
    }
    if w.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!(
                "The matrix to be quantized must have at least 2 dimension but it has only {} (shape {}).",
                w.ndim(),
                fmt_shape(w.shape())
            ),
        ));
    }
    if !w.shape()[w.ndim() - 1].is_multiple_of(spec.group_size) {
        return Err(Error::invalid(
            op,
            format!(
                "The last dimension of the matrix needs to be divisible by the quantization group size {}. However the provided matrix has shape {}.",
                spec.group_size,
                fmt_shape(w.shape())
            ),
        ));
    }
    let mut outs = quantize_raw(w, spec)?.into_iter();
    let wq = outs.next().expect("codes");
    let scales = outs.next().expect("scales");
    Ok((wq, scales, outs.next()))
}

// ---------------------------------------------------------------- Dequantize

/// Expands packed codes back to floats. Inputs: codes, scales and (affine)
/// biases.
#[derive(Debug, PartialEq)]
pub struct Dequantize {
    /// Format.
    pub spec: QuantSpec,
}

impl Primitive for Dequantize {
    fn name(&self) -> &'static str {
        "Dequantize"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.dequantize(inputs, self.spec, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        let gs = self.spec.group_size as i64;
        argnums
            .iter()
            .map(|&i| match i {
                0 => Err(no_packed_grad("Dequantize")),
                _ if self.spec.mode != QuantMode::Affine => Err(no_fp_scale_grad("Dequantize", self.spec)),
                1 => {
                    let q = codes_of(&primals[0], &primals[1], &primals[2], self.spec)?;
                    let gq = multiply(&group_view(g, gs)?, &group_view(&q, gs)?)?;
                    sum(&gq, -1, false)
                }
                _ => sum(&group_view(g, gs)?, -1, false),
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        // Linear in (scales, biases) jointly.
        if argnums.contains(&0) {
            return Err(no_packed_grad("Dequantize"));
        }
        if self.spec.mode != QuantMode::Affine {
            return Err(no_fp_scale_grad("Dequantize", self.spec));
        }
        let (ts, tb) = scale_bias_tangents(primals, tangents, argnums, 1)?;
        Ok(vec![dequantize_raw(&primals[0], &ts, Some(&tb), self.spec)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let v = super::slicing::batch_size(inputs, axes);
        let ins: Vec<Array> =
            inputs.iter().zip(axes).map(|(x, &a)| super::slicing::batch_front(x, a, v)).collect::<Result<_>>()?;
        Ok((vec![dequantize_raw(&ins[0], &ins[1], ins.get(2), self.spec)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

fn no_packed_grad(op: &str) -> Error {
    Error::unsupported(op, "no gradient with respect to the packed quantized weights (integer codes).")
}

fn no_fp_scale_grad(op: &str, spec: QuantSpec) -> Error {
    Error::unsupported(
        op,
        format!("no gradient with respect to the uint8 scales of {} quantization.", spec.mode.name()),
    )
}

/// `x` with its last axis split into `(groups, gs)`.
fn group_view(x: &Array, gs: i64) -> Result<Array> {
    super::shape::unflatten(x, -1, &[-1, gs])
}

/// The integer codes of `wq` as values of the scales' dtype (dequantized
/// with unit scales and zero biases).
fn codes_of(wq: &Array, scales: &Array, biases: &Array, spec: QuantSpec) -> Result<Array> {
    dequantize_raw(wq, &ones_like(scales)?, Some(&zeros_like(biases)?), spec)
}

/// Tangents of the scales and biases (inputs `first` and `first + 1`), zeros
/// for the one without a tangent.
fn scale_bias_tangents(
    primals: &[Array],
    tangents: &[Array],
    argnums: &[usize],
    first: usize,
) -> Result<(Array, Array)> {
    let pick = |i: usize| -> Result<Array> {
        match argnums.iter().position(|&a| a == i) {
            Some(p) => Ok(tangents[p].clone()),
            None => zeros_like(&primals[i]),
        }
    };
    Ok((pick(first)?, pick(first + 1)?))
}

fn dequantize_raw(wq: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<Array> {
    let mut shape = wq.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = spec.unpacked_len(shape[last]);
    let dtype = if spec.mode == QuantMode::Affine { scales.dtype() } else { Dtype::BF16 };
    let mut inputs = vec![wq.clone(), scales.clone()];
    inputs.extend(biases.cloned());
    Ok(Array::from_op(shape, dtype, Dequantize { spec }, inputs))
}

/// Expands packed codes as MLX's `mx.dequantize`: affine gives
/// `scale·q + bias` in the scales' dtype; mxfp4/nvfp4/mxfp8 give
/// `value(q)·scale` in bfloat16. `biases` must be given for affine and only
/// for affine.
pub fn dequantize(wq: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<Array> {
    check_packed("dequantize", wq, scales, biases, spec)?;
    dequantize_raw(wq, scales, biases, spec)
}

// ---------------------------------------------------------------- QuantizedMatmul

/// `x @ dequantize(w)ᵀ` (`transpose`) or `x @ dequantize(w)` computed from the
/// packed codes. Inputs: x, codes, scales and (affine) biases; batched
/// weights have been broadcast against x's batch by the op.
#[derive(Debug, PartialEq)]
pub struct QuantizedMatmul {
    /// Format.
    pub spec: QuantSpec,
    /// Whether the codes hold the rows of `Wᵀ` (`x @ Wᵀ` with `W` of shape `(N, K)`).
    pub transpose: bool,
}

const PACKED_WHY: &str =
    "the packed weights are integer codes (MLX differentiates x, and scales/biases for affine, but not the codes)";

impl Primitive for QuantizedMatmul {
    fn name(&self) -> &'static str {
        "QuantizedMatmul"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.quantized_matmul(inputs, self.transpose, self.spec, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        let x = &primals[0];
        let b = primals.get(3);
        let mut dw: Option<Array> = None;
        argnums
            .iter()
            .map(|&i| match i {
                0 => {
                    let d = qmm_raw(g, &primals[1], &primals[2], b, !self.transpose, self.spec)?;
                    sum_to_shape(&d, x.shape())
                }
                1 => Err(Error::unsupported("QuantizedMatmul", format!("vjp: {PACKED_WHY}."))),
                _ if self.spec.mode != QuantMode::Affine => Err(no_fp_scale_grad("QuantizedMatmul", self.spec)),
                _ => {
                    if dw.is_none() {
                        dw = Some(dense_weight_grad(x, g, primals[1].ndim(), self.transpose, self.spec)?);
                    }
                    let dsb = dw.as_ref().expect("set above");
                    let d = if i == 3 {
                        sum(dsb, -1, false)?
                    } else {
                        let q = group_view(&codes_of(&primals[1], &primals[2], &primals[3], self.spec)?, self.gs())?;
                        sum(&multiply(dsb, &q)?, -1, false)?
                    };
                    astype(&d, primals[i].dtype())
                }
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        if argnums.contains(&1) {
            return Err(Error::unsupported("QuantizedMatmul", format!("jvp: {PACKED_WHY}.")));
        }
        let mut acc: Option<Array> = None;
        let b = primals.get(3);
        if let Some(p) = argnums.iter().position(|&a| a == 0) {
            acc = Some(qmm_raw(&tangents[p], &primals[1], &primals[2], b, self.transpose, self.spec)?);
        }
        if argnums.iter().any(|&a| a >= 2) {
            if self.spec.mode != QuantMode::Affine {
                return Err(no_fp_scale_grad("QuantizedMatmul", self.spec));
            }
            let (ts, tb) = scale_bias_tangents(primals, tangents, argnums, 2)?;
            let t = qmm_raw(&primals[0], &primals[1], &ts, Some(&tb), self.transpose, self.spec)?;
            acc = Some(match acc {
                None => t,
                Some(a) => add(&a, &t)?,
            });
        }
        Ok(vec![acc.expect("jvp needs a tangent")])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let w_batched = axes[1..].iter().any(|a| a.is_some());
        if !w_batched && inputs[1].ndim() == 2 {
            // Only x is batched: the batch axis becomes a leading row dimension.
            let x = moveaxis(&inputs[0], axes[0].expect("x is batched") as i32, 0)?;
            return Ok((
                vec![qmm_raw(&x, &inputs[1], &inputs[2], inputs.get(3), self.transpose, self.spec)?],
                vec![Some(0)],
            ));
        }
        // Batched weights: the batch axis becomes a leading batch dimension of
        // every operand; ranks are padded after it so the batch dims line up.
        let v = super::slicing::batch_size(inputs, axes);
        let mut ins: Vec<Array> =
            inputs.iter().zip(axes).map(|(x, &a)| super::slicing::batch_front(x, a, v)).collect::<Result<_>>()?;
        let x_vec = ins[0].ndim() == 2;
        if x_vec {
            ins[0] = expand_dims(&ins[0], -2)?;
        }
        while ins[0].ndim() < ins[1].ndim() {
            ins[0] = expand_dims(&ins[0], 1)?;
        }
        while ins[1].ndim() < ins[0].ndim() {
            for w in &mut ins[1..] {
                *w = expand_dims(w, 1)?;
            }
        }
        let (x, rest) = broadcast_qmm_operands(&ins[0], &ins[1..])?;
        let mut y = qmm_raw(&x, &rest[0], &rest[1], rest.get(2), self.transpose, self.spec)?;
        if x_vec {
            y = super::shape::squeeze_axes(&y, &[-2])?;
        }
        Ok((vec![y], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let w = inputs[1].shape();
        let n = if self.transpose { w[w.len() - 2] } else { self.spec.unpacked_len(w[w.len() - 1]) };
        let mut s = inputs[0].shape().to_vec();
        *s.last_mut().expect("x has rank >= 1") = n;
        Ok(vec![s])
    }
    crate::prim_common!();
}

impl QuantizedMatmul {
    fn gs(&self) -> i64 {
        self.spec.group_size as i64
    }
}

/// The gradient of `x @ W(ᵀ)` with respect to the dense weight `W` (in its
/// stored layout), with the last axis split into groups.
fn dense_weight_grad(x: &Array, g: &Array, w_ndim: usize, transpose: bool, spec: QuantSpec) -> Result<Array> {
    let (x2, g2) = if w_ndim == 2 {
        let k = x.shape()[x.ndim() - 1];
        let n = g.shape()[g.ndim() - 1];
        (reshape_to(x, &[x.size() / k.max(1), k])?, reshape_to(g, &[g.size() / n.max(1), n])?)
    } else {
        (x.clone(), g.clone())
    };
    let dw = if transpose {
        super::matmul::matmul(&swapaxes(&g2, -1, -2)?, &x2)?
    } else {
        super::matmul::matmul(&swapaxes(&x2, -1, -2)?, &g2)?
    };
    group_view(&dw, spec.group_size as i64)
}

/// Broadcasts x's batch dims (all but the last two) against the weights',
/// and the weights' (codes, scales, biases) against x's.
fn broadcast_qmm_operands(x: &Array, w: &[Array]) -> Result<(Array, Vec<Array>)> {
    let xs = x.shape();
    let ws = w[0].shape();
    let bs = broadcast_shapes(&xs[..xs.len() - 2], &ws[..ws.len() - 2]).map_err(|_| {
        Error::invalid(
            "quantized_matmul",
            format!(
                "Batch dimensions of x with shape {} and weights with shape {} cannot be broadcast.",
                fmt_shape(xs),
                fmt_shape(ws)
            ),
        )
    })?;
    let with = |a: &Array| -> Result<Array> {
        let s = a.shape();
        let mut t = bs.clone();
        t.extend_from_slice(&s[s.len() - 2..]);
        if t.as_slice() == s {
            Ok(a.clone())
        } else {
            broadcast_to(a, &t)
        }
    };
    Ok((with(x)?, w.iter().map(with).collect::<Result<_>>()?))
}

fn qmm_raw(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    spec: QuantSpec,
) -> Result<Array> {
    let ws = wq.shape();
    let n = if transpose { ws[ws.len() - 2] } else { spec.unpacked_len(ws[ws.len() - 1]) };
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("x has rank >= 1") = n;
    let dtype = if spec.mode == QuantMode::Affine { promote_types(x.dtype(), scales.dtype()) } else { x.dtype() };
    let mut inputs = vec![astype(x, dtype)?, wq.clone()];
    if spec.mode == QuantMode::Affine {
        // Scales and biases stay in their own float dtype (the kernels widen
        // them as they read them): f16 scales under f32 activations, as
        // GGUF stores them, are not copied to f32 on every call.
        inputs.push(scales.clone());
        inputs.push(biases.expect("affine has biases").clone());
    } else {
        inputs.push(scales.clone());
    }
    Ok(Array::from_op(shape, dtype, QuantizedMatmul { spec, transpose }, inputs))
}

/// Checks x against the quantized matrix; returns the output dtype, the
/// inner (K) and outer (N) sizes.
fn check_qmm_x(
    op: &str,
    x: &Array,
    wq: &Array,
    scales: &Array,
    transpose: bool,
    spec: QuantSpec,
    k_packed: usize,
) -> Result<Dtype> {
    let ws = wq.shape();
    let (inner, outer) = if transpose { (k_packed, ws[ws.len() - 2]) } else { (ws[ws.len() - 2], k_packed) };
    if x.ndim() == 0 || x.shape()[x.ndim() - 1] != inner {
        return Err(Error::invalid(
            op,
            format!(
                "Last dimension of first input with shape {} does not match the expanded quantized matrix ({inner}, {outer}) computed from shape {} with group_size={}, bits={} and transpose={transpose}.",
                fmt_shape(x.shape()),
                fmt_shape(ws),
                spec.group_size,
                spec.bits
            ),
        ));
    }
    let dtype = if spec.mode == QuantMode::Affine { promote_types(x.dtype(), scales.dtype()) } else { x.dtype() };
    if !dtype.is_floating() || !x.dtype().is_floating() {
        return Err(Error::invalid(
            op,
            format!("Only real floating types are supported but x.dtype() == {}.", x.dtype()),
        ));
    }
    Ok(dtype)
}

/// Matrix product with a quantized matrix, as MLX's `mx.quantized_matmul`:
/// `x @ Wᵀ` when `transpose` (codes of shape `(..., N, K·bits/32)`), else
/// `x @ W` (codes of shape `(..., K, N·bits/32)`), where `W` is the
/// dequantized matrix; computed from the packed codes without expanding `W`.
/// Weights with batch dimensions broadcast against x's (x then needs at
/// least 3 dimensions). The result has the promotion of `x` and the scales
/// (affine) or `x`'s dtype; x must be floating.
///
/// ```
/// use kiln_core::{ops, Array};
/// let w = Array::from_vec((0..128).map(|i| (i % 7) as f32 - 3.0).collect(), &[2, 64]).unwrap();
/// let spec = ops::QuantSpec::affine(64, 8);
/// let (wq, s, b) = ops::quantize(&w, spec).unwrap();
/// let x = ops::ones(&[1, 64], kiln_core::Dtype::F32).unwrap();
/// let y = ops::quantized_matmul(&x, &wq, &s, b.as_ref(), true, spec).unwrap();
/// assert_eq!(y.shape(), &[1, 2]);
/// ```
pub fn quantized_matmul(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    spec: QuantSpec,
) -> Result<Array> {
    let op = "quantized_matmul";
    let k = check_packed(op, wq, scales, biases, spec)?;
    check_qmm_x(op, x, wq, scales, transpose, spec, k)?;
    if wq.ndim() > 2 {
        if x.ndim() < 3 {
            return Err(Error::invalid(
                op,
                format!(
                    "Weights with batch dimensions (shape {}) need x with batch dimensions too, got shape {}.",
                    fmt_shape(wq.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
        let mut ws = vec![wq.clone(), scales.clone()];
        ws.extend(biases.cloned());
        let (x, w) = broadcast_qmm_operands(x, &ws)?;
        return qmm_raw(&x, &w[0], &w[1], w.get(2), transpose, spec);
    }
    qmm_raw(x, wq, scales, biases, transpose, spec)
}

// ---------------------------------------------------------------- GatherQMM

/// Gathered quantized matmul: output batch element `i` is x's matrix
/// `lhs[i]` times the quantized matrix `rhs[i]`. Inputs: x, codes, scales,
/// (affine) biases, lhs and rhs indices (`uint32`, one shape).
#[derive(Debug, PartialEq)]
pub struct GatherQMM {
    /// Format.
    pub spec: QuantSpec,
    /// As in [`QuantizedMatmul`].
    pub transpose: bool,
}

impl Primitive for GatherQMM {
    fn name(&self) -> &'static str {
        "GatherQMM"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.gather_qmm(inputs, self.transpose, self.spec, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let n = primals.len();
        let (li, ri) = (&primals[n - 2], &primals[n - 1]);
        let g = &cotangents[0];
        let x = &primals[0];
        let biases = if self.spec.mode == QuantMode::Affine { Some(&primals[3]) } else { None };
        argnums
            .iter()
            .map(|&i| {
                if i == 0 {
                    // Per output batch element: g @ W(ᵀ)ᵀ, then summed into x's matrices at lhs.
                    let ident = arange_like_indices(ri)?;
                    let d =
                        gather_qmm_raw(g, &primals[1], &primals[2], biases, &ident, ri, !self.transpose, self.spec)?;
                    scatter_matrices(&d, li, x)
                } else if i >= n - 2 {
                    Err(Error::unsupported("GatherQMM", "vjp: the gradient with respect to indices is not defined."))
                } else if i == 1 {
                    Err(Error::unsupported("GatherQMM", format!("vjp: {PACKED_WHY}.")))
                } else {
                    Err(Error::unsupported(
                        "GatherQMM",
                        "vjp with respect to scales or biases is not implemented (x only).",
                    ))
                }
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        if argnums != [0] {
            return Err(Error::unsupported("GatherQMM", "jvp is implemented with respect to x only."));
        }
        let n = primals.len();
        let biases = if self.spec.mode == QuantMode::Affine { Some(&primals[3]) } else { None };
        Ok(vec![gather_qmm_raw(
            &tangents[0],
            &primals[1],
            &primals[2],
            biases,
            &primals[n - 2],
            &primals[n - 1],
            self.transpose,
            self.spec,
        )?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        // A loop over the batch: each element is an ordinary gather_qmm.
        let v = super::slicing::batch_size(inputs, axes);
        let n = inputs.len();
        let mut outs = Vec::with_capacity(v);
        for b in 0..v {
            let pick = |i: usize| -> Result<Array> {
                match axes[i] {
                    Some(a) => super::shape::squeeze_axes(
                        &super::slicing::slice_axis(&inputs[i], a, b as isize, 1, 1)?,
                        &[a as i32],
                    ),
                    None => Ok(inputs[i].clone()),
                }
            };
            let ins: Vec<Array> = (0..n).map(pick).collect::<Result<_>>()?;
            let biases = if self.spec.mode == QuantMode::Affine { Some(&ins[3]) } else { None };
            let bs = broadcast_shapes(ins[n - 2].shape(), ins[n - 1].shape())?;
            let li = broadcast_to(&ins[n - 2], &bs)?;
            let ri = broadcast_to(&ins[n - 1], &bs)?;
            outs.push(gather_qmm_raw(&ins[0], &ins[1], &ins[2], biases, &li, &ri, self.transpose, self.spec)?);
        }
        Ok((vec![super::shape::stack(&outs, 0)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// Indices `0..size` shaped like `idx` (each output batch element reads its own matrix).
fn arange_like_indices(idx: &Array) -> Result<Array> {
    reshape_to(&astype(&arange_int(0, idx.size() as i64, 1)?, Dtype::U32)?, idx.shape())
}

/// Sums the matrices of `g` (batch shape = `idx.shape`) into zeros shaped like
/// `like` at the flat matrix positions `idx` (a one-hot matmul, differentiable).
fn scatter_matrices(g: &Array, idx: &Array, like: &Array) -> Result<Array> {
    let s = like.shape();
    let count = numel(&s[..s.len() - 2]);
    let mk = s[s.len() - 2] * s[s.len() - 1];
    let r = astype(&arange_int(0, count as i64, 1)?, Dtype::I64)?;
    let oh = super::binary::equal(&expand_dims(&astype(idx, Dtype::I64)?, -1)?, &r)?;
    let oh = reshape_to(&astype(&oh, g.dtype())?, &[idx.size(), count])?;
    let gf = reshape_to(g, &[idx.size(), mk])?;
    reshape_to(&super::matmul::matmul(&swapaxes(&oh, 0, 1)?, &gf)?, s)
}

#[allow(clippy::too_many_arguments)]
fn gather_qmm_raw(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    li: &Array,
    ri: &Array,
    transpose: bool,
    spec: QuantSpec,
) -> Result<Array> {
    let ws = wq.shape();
    let n = if transpose { ws[ws.len() - 2] } else { spec.unpacked_len(ws[ws.len() - 1]) };
    let mut shape = li.shape().to_vec();
    shape.push(x.shape()[x.ndim() - 2]);
    shape.push(n);
    let dtype = if spec.mode == QuantMode::Affine { promote_types(x.dtype(), scales.dtype()) } else { x.dtype() };
    let mut inputs = vec![astype(x, dtype)?, wq.clone()];
    if spec.mode == QuantMode::Affine {
        // Scales and biases stay in their own float dtype (the kernels widen
        // them as they read them): f16 scales under f32 activations, as
        // GGUF stores them, are not copied to f32 on every call.
        inputs.push(scales.clone());
        inputs.push(biases.expect("affine has biases").clone());
    } else {
        inputs.push(scales.clone());
    }
    inputs.push(astype(li, Dtype::U32)?);
    inputs.push(astype(ri, Dtype::U32)?);
    Ok(Array::from_op(shape, dtype, GatherQMM { spec, transpose }, inputs))
}

/// Quantized matmul of gathered matrices, as MLX's `mx.gather_qmm` (the
/// mixture-of-experts product): output batch element `i` is
/// `x[lhs[i]] @ W[rhs[i]]ᵀ` (or `@ W[rhs[i]]` without `transpose`), where
/// indices count matrices in the flattened batch dims of `x`
/// (`(..., M, K)`) and of the quantized weights. Missing indices default to
/// `arange` over the operand's batch shape; the two index arrays broadcast
/// and give the output's batch shape: `(idx..., M, N)`.
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    spec: QuantSpec,
) -> Result<Array> {
    let op = "gather_qmm";
    let k = check_packed(op, wq, scales, biases, spec)?;
    check_qmm_x(op, x, wq, scales, transpose, spec, k)?;
    if x.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!("x must have at least 2 dimensions, got shape {}.", fmt_shape(x.shape())),
        ));
    }
    let default_idx = |a: &Array| -> Result<Array> {
        let bs = &a.shape()[..a.ndim() - 2];
        reshape_to(&astype(&arange_int(0, numel(bs) as i64, 1)?, Dtype::U32)?, bs)
    };
    let check = |i: &Array, of: &Array, what: &str| -> Result<Array> {
        if !i.dtype().is_integer() {
            return Err(Error::invalid(op, format!("{what} indices must be integers, got {}.", i.dtype())));
        }
        let count = numel(&of.shape()[..of.ndim() - 2]);
        if i.is_evaluated() {
            // Evaluated indices are range-checked here; lazy ones by the kernel.
            let v = astype(i, Dtype::I64)?.to_vec::<i64>()?;
            if let Some(bad) = v.iter().find(|&&j| j < 0 || j as usize >= count) {
                return Err(Error::out_of_range(
                    op,
                    format!(
                        "{what} index {bad} is out of range for {count} matrices (shape {}).",
                        fmt_shape(of.shape())
                    ),
                ));
            }
        }
        Ok(i.clone())
    };
    let li = match lhs_indices {
        Some(i) => check(i, x, "lhs")?,
        None => default_idx(x)?,
    };
    let ri = match rhs_indices {
        Some(i) => check(i, wq, "rhs")?,
        None => default_idx(wq)?,
    };
    let bs = broadcast_shapes(li.shape(), ri.shape()).map_err(|_| {
        Error::invalid(
            op,
            format!("Index shapes {} and {} cannot be broadcast.", fmt_shape(li.shape()), fmt_shape(ri.shape())),
        )
    })?;
    let (li, ri) = (broadcast_to(&li, &bs)?, broadcast_to(&ri, &bs)?);
    gather_qmm_raw(x, wq, scales, biases, &li, &ri, transpose, spec)
}
