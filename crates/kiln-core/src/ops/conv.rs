//! Convolution: `conv1d/2d/3d`, `conv_transpose1d/2d/3d` and `conv_general`,
//! all recorded as one `Convolution` primitive (as MLX does), with its shape
//! and dtype rules, kernel dispatch and transform rules.
//!
//! Layouts are channels-last, as in MLX: input `(N, spatial..., C_in)`,
//! weight `(C_out, kernel spatial..., C_in / groups)`, output
//! `(N, spatial..., C_out)`.
//!
//! Per spatial axis, with input length `L`, kernel length `K`, stride `s`,
//! padding `lo`/`hi`, kernel dilation `d` and input dilation `e`, the input is
//! first dilated (`e - 1` zeros between elements: length `(L - 1) e + 1`),
//! padded with `lo` zeros before and `hi` after (negative padding crops), and
//! the dilated kernel (extent `(K - 1) d + 1`) slides over it with stride `s`:
//! the output length is `(padded - ((K - 1) d + 1)) / s + 1`. `flip` reverses
//! the kernel (convolution instead of cross-correlation).

use super::creation::astype;
use super::shape::{broadcast_to, moveaxis, reshape_to, transpose_perm};
use super::slicing::flip;
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::promote_types;
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive};

/// The parameters of a convolution, one entry per spatial axis (resolved:
/// every vector has the number of spatial axes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    /// Step of the kernel over the (dilated, padded) input.
    pub stride: Vec<usize>,
    /// Zeros added before the input (negative crops).
    pub padding_lo: Vec<i64>,
    /// Zeros added after the input (negative crops).
    pub padding_hi: Vec<i64>,
    /// Spacing between kernel taps.
    pub kernel_dilation: Vec<usize>,
    /// Spacing between input elements (a transposed convolution's stride).
    pub input_dilation: Vec<usize>,
    /// Channel groups (input and output channels split into `groups` blocks).
    pub groups: usize,
    /// Reverse the kernel along every spatial axis.
    pub flip: bool,
}

impl ConvParams {
    /// Output length along spatial axis `i` for input length `l` and kernel
    /// length `k`, or `None` when the dilated kernel does not fit.
    pub fn out_len(&self, i: usize, l: usize, k: usize) -> Option<usize> {
        let dil_in = if l == 0 { 0 } else { (l as i64 - 1) * self.input_dilation[i] as i64 + 1 };
        let padded = dil_in + self.padding_lo[i] + self.padding_hi[i];
        let dil_k = (k as i64 - 1) * self.kernel_dilation[i] as i64 + 1;
        if k == 0 || padded < dil_k {
            return None;
        }
        Some(((padded - dil_k) / self.stride[i] as i64 + 1) as usize)
    }
}

/// The convolution primitive (inputs: input and weight, same dtype).
#[derive(Debug, PartialEq)]
pub struct Convolution {
    /// Resolved parameters.
    pub params: ConvParams,
}

impl Primitive for Convolution {
    fn name(&self) -> &'static str {
        "Convolution"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.conv(&inputs[0], &inputs[1], &self.params, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let (x, w, g) = (&primals[0], &primals[1], &cotangents[0]);
        argnums
            .iter()
            .map(|&a| if a == 0 { grad_input(&self.params, x, w, g) } else { grad_weight(&self.params, x, w, g) })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let (x, w) = (&primals[0], &primals[1]);
        let mut out: Option<Array> = None;
        for (t, &a) in tangents.iter().zip(argnums) {
            let term = if a == 0 { conv_raw(t, w, &self.params)? } else { conv_raw(x, t, &self.params)? };
            out = Some(match out {
                Some(o) => super::binary::add(&o, &term)?,
                None => term,
            });
        }
        Ok(vec![out.expect("jvp needs at least one tangent")])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let (x, w) = (&inputs[0], &inputs[1]);
        match (axes[0], axes[1]) {
            (None, None) => Ok((vec![conv_raw(x, w, &self.params)?], vec![None])),
            (Some(ax), None) => {
                // Fold the batch into N.
                let x = moveaxis(x, ax as i32, 0)?;
                let (b, n) = (x.shape()[0], x.shape()[1]);
                let mut s = vec![b * n];
                s.extend_from_slice(&x.shape()[2..]);
                let y = conv_raw(&reshape_to(&x, &s)?, w, &self.params)?;
                let mut ys = vec![b, n];
                ys.extend_from_slice(&y.shape()[1..]);
                Ok((vec![reshape_to(&y, &ys)?], vec![Some(0)]))
            }
            (xa, Some(wa)) => {
                // A batched weight: fold the batch into the channels and use
                // `batch * groups` groups.
                let w = moveaxis(w, wa as i32, 0)?;
                let b = w.shape()[0];
                let x = match xa {
                    Some(ax) => moveaxis(x, ax as i32, 0)?,
                    None => {
                        let mut s = vec![b];
                        s.extend_from_slice(x.shape());
                        broadcast_to(&super::shape::expand_dims(x, 0)?, &s)?
                    }
                };
                // Unbatched rank.
                let nd = x.ndim() - 1;
                // (B, N, sp..., C) -> (N, sp..., B, C) -> (N, sp..., B*C)
                let mut perm: Vec<usize> = (1..nd).collect();
                perm.push(0);
                perm.push(nd);
                let xt = transpose_perm(&x, &perm)?;
                let mut xs = xt.shape()[..nd - 1].to_vec();
                xs.push(b * x.shape()[nd]);
                let xf = reshape_to(&xt, &xs)?;
                let mut ws = vec![b * w.shape()[1]];
                ws.extend_from_slice(&w.shape()[2..]);
                let wf = reshape_to(&w, &ws)?;
                let mut p = self.params.clone();
                p.groups *= b;
                let y = conv_raw(&xf, &wf, &p)?;
                let cout = w.shape()[1];
                let mut ys = y.shape()[..nd - 1].to_vec();
                ys.push(b);
                ys.push(cout);
                let y = reshape_to(&y, &ys)?;
                Ok((vec![moveaxis(&y, nd as i32 - 1, 0)?], vec![Some(0)]))
            }
        }
    }
    crate::prim_common!();
}

/// The cotangent of the input: a convolution of the cotangent with the
/// channel-swapped weight, strided by the input dilation, dilated by the
/// stride, and with the opposite flip.
fn grad_input(p: &ConvParams, x: &Array, w: &Array, g: &Array) -> Result<Array> {
    let nsp = x.ndim() - 2;
    let groups = p.groups;
    let cout = w.shape()[0];
    let cg = w.shape()[nsp + 1];
    let og = cout / groups;
    // (G*Og, K..., Cg) -> (G, Og, K..., Cg) -> (G, Cg, K..., Og) -> (G*Cg, K..., Og)
    let mut s = vec![groups, og];
    s.extend_from_slice(&w.shape()[1..=nsp]);
    s.push(cg);
    let w5 = reshape_to(w, &s)?;
    let mut perm = vec![0, nsp + 2];
    perm.extend(2..nsp + 2);
    perm.push(1);
    let wt = transpose_perm(&w5, &perm)?;
    let mut ws = vec![groups * cg];
    ws.extend_from_slice(&w.shape()[1..=nsp]);
    ws.push(og);
    let wt = reshape_to(&wt, &ws)?;
    let mut q = ConvParams {
        stride: p.input_dilation.clone(),
        padding_lo: vec![0; nsp],
        padding_hi: vec![0; nsp],
        kernel_dilation: p.kernel_dilation.clone(),
        input_dilation: p.stride.clone(),
        groups,
        flip: !p.flip,
    };
    for i in 0..nsp {
        let (l, k, o) = (x.shape()[i + 1] as i64, w.shape()[i + 1] as i64, g.shape()[i + 1] as i64);
        let (d, s, e) = (p.kernel_dilation[i] as i64, p.stride[i] as i64, p.input_dilation[i] as i64);
        let lo = p.padding_lo[i];
        q.padding_lo[i] = (k - 1) * d - lo;
        q.padding_hi[i] = (l - 1) * e - (o - 1) * s + lo;
    }
    if x.shape()[1..=nsp].contains(&0) || g.size() == 0 {
        return super::creation::zeros_like(x);
    }
    conv_raw(g, &wt, &q)
}

/// The cotangent of the weight: a convolution of the input (channels moved to
/// the batch axis, batch to the channels) with the cotangent as the kernel.
fn grad_weight(p: &ConvParams, x: &Array, w: &Array, g: &Array) -> Result<Array> {
    let nsp = x.ndim() - 2;
    let groups = p.groups;
    let n = x.shape()[0];
    let cin = x.shape()[nsp + 1];
    let cg = cin / groups;
    let cout = w.shape()[0];
    let og = cout / groups;
    if n == 0 || x.shape()[1..=nsp].contains(&0) || g.size() == 0 {
        return super::creation::zeros_like(w);
    }
    // x: (N, sp..., G, Cg) -> (Cg, sp..., G, N) -> (Cg, sp..., G*N)
    let mut s = x.shape()[..=nsp].to_vec();
    s.push(groups);
    s.push(cg);
    let x5 = reshape_to(x, &s)?;
    let mut perm = vec![nsp + 2];
    perm.extend(1..=nsp);
    perm.push(nsp + 1);
    perm.push(0);
    let xt = transpose_perm(&x5, &perm)?;
    let mut xs = vec![cg];
    xs.extend_from_slice(&x.shape()[1..=nsp]);
    xs.push(groups * n);
    let xt = reshape_to(&xt, &xs)?;
    // g: (N, osp..., G, Og) -> (G, Og, osp..., N) -> (G*Og, osp..., N)
    let mut s = g.shape()[..=nsp].to_vec();
    s.push(groups);
    s.push(og);
    let g5 = reshape_to(g, &s)?;
    let mut perm = vec![nsp + 1, nsp + 2];
    perm.extend(1..=nsp);
    perm.push(0);
    let gt = transpose_perm(&g5, &perm)?;
    let mut gs = vec![cout];
    gs.extend_from_slice(&g.shape()[1..=nsp]);
    gs.push(n);
    let gt = reshape_to(&gt, &gs)?;
    let mut q = ConvParams {
        stride: p.kernel_dilation.clone(),
        padding_lo: p.padding_lo.clone(),
        padding_hi: vec![0; nsp],
        kernel_dilation: p.stride.clone(),
        input_dilation: p.input_dilation.clone(),
        groups,
        flip: false,
    };
    for i in 0..nsp {
        let (l, k, o) = (x.shape()[i + 1] as i64, w.shape()[i + 1] as i64, g.shape()[i + 1] as i64);
        let (d, s, e) = (p.kernel_dilation[i] as i64, p.stride[i] as i64, p.input_dilation[i] as i64);
        q.padding_hi[i] = (k - 1) * d + (o - 1) * s + 1 - ((l - 1) * e + 1) - p.padding_lo[i];
    }
    // (Cg, K..., G*Og) -> (G*Og, K..., Cg)
    let r = conv_raw(&xt, &gt, &q)?;
    let mut perm = vec![nsp + 1];
    perm.extend(1..=nsp);
    perm.push(0);
    let r = transpose_perm(&r, &perm)?;
    if p.flip {
        let axes: Vec<i32> = (1..=nsp as i32).collect();
        return flip(&r, Some(&axes));
    }
    Ok(r)
}

/// Records a convolution whose inputs already share a floating dtype and
/// whose parameters are resolved and valid.
fn conv_raw(x: &Array, w: &Array, p: &ConvParams) -> Result<Array> {
    let nsp = x.ndim() - 2;
    let mut shape = vec![x.shape()[0]];
    for i in 0..nsp {
        let o = p.out_len(i, x.shape()[i + 1], w.shape()[i + 1]).ok_or_else(|| {
            Error::invalid("conv", "Spatial dimensions of input after padding cannot be smaller than the kernel.")
        })?;
        shape.push(o);
    }
    shape.push(w.shape()[0]);
    let dtype = promote_types(x.dtype(), w.dtype());
    let x = astype(x, dtype)?;
    let w = astype(w, dtype)?;
    Ok(Array::from_op(shape, dtype, Convolution { params: p.clone() }, vec![x, w]))
}

/// Expands a per-axis parameter given once or per spatial axis.
fn per_axis<T: Copy + std::fmt::Debug>(name: &str, v: &[T], nsp: usize) -> Result<Vec<T>> {
    match v.len() {
        1 => Ok(vec![v[0]; nsp]),
        n if n == nsp => Ok(v.to_vec()),
        _ => Err(Error::invalid(
            "conv",
            format!("{name} must have 1 or {nsp} entries (one per spatial dimension), got {v:?}."),
        )),
    }
}

fn fmt_list<T: std::fmt::Display>(v: &[T]) -> String {
    format!("({})", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
}

/// General convolution (MLX's `conv_general`): per-side padding, kernel and
/// input dilation, groups, and `flip` (true convolution instead of
/// cross-correlation). Each per-axis slice holds one value for every spatial
/// axis or one per spatial axis.
///
/// ```
/// use kiln_core::{ops, Array};
/// let x = ops::ones(&[1, 5, 5, 3], kiln_core::Dtype::F32).unwrap();
/// let w = ops::ones(&[4, 3, 3, 3], kiln_core::Dtype::F32).unwrap();
/// let y = ops::conv_general(&x, &w, &[1], &[1], &[1], &[1], &[1], 1, false).unwrap();
/// assert_eq!(y.shape(), &[1, 5, 5, 4]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv_general(
    input: &Array,
    weight: &Array,
    stride: &[usize],
    padding_lo: &[i64],
    padding_hi: &[i64],
    kernel_dilation: &[usize],
    input_dilation: &[usize],
    groups: usize,
    flip: bool,
) -> Result<Array> {
    if input.ndim() < 3 || input.ndim() > 5 {
        return Err(Error::invalid(
            "conv",
            format!(
                "Only works for inputs with 1-3 spatial dimensions. The inputs must be in the format [N, ..., C_in], got shape {}.",
                fmt_shape(input.shape())
            ),
        ));
    }
    let nsp = input.ndim() - 2;
    if weight.ndim() != input.ndim() {
        return Err(Error::invalid(
            "conv",
            format!(
                "Invalid weight array with {} dimensions for {nsp}D convolution. Expected an array with {} dimensions following the format [C_out, ..., C_in].",
                weight.ndim(),
                input.ndim()
            ),
        ));
    }
    let mut p = ConvParams {
        stride: per_axis("stride", stride, nsp)?,
        padding_lo: per_axis("padding", padding_lo, nsp)?,
        padding_hi: per_axis("padding", padding_hi, nsp)?,
        kernel_dilation: per_axis("kernel_dilation", kernel_dilation, nsp)?,
        input_dilation: per_axis("input_dilation", input_dilation, nsp)?,
        groups,
        flip,
    };
    // As MLX: negative padding crops whole input elements before the input
    // is dilated (the primitive itself crops the dilated input).
    let mut x = input.clone();
    for i in 0..nsp {
        let (lo, hi) = (p.padding_lo[i], p.padding_hi[i]);
        if lo < 0 || hi < 0 {
            let l = x.shape()[i + 1] as i64;
            let start = (-lo).max(0).min(l);
            let len = (l - start - (-hi).max(0)).max(0);
            x = super::slicing::slice_axis(&x, i + 1, start as isize, len as usize, 1)?;
            p.padding_lo[i] = lo.max(0);
            p.padding_hi[i] = hi.max(0);
        }
    }
    check(&x, weight, &p)?;
    conv_raw(&x, weight, &p)
}

/// Validates dtypes, channels, groups and sizes with MLX's messages.
fn check(x: &Array, w: &Array, p: &ConvParams) -> Result<()> {
    let nsp = x.ndim() - 2;
    if !x.dtype().is_floating() {
        return Err(Error::invalid(
            "conv",
            format!(
                "Invalid input array with type {}. Convolution currently only supports floating point types.",
                x.dtype()
            ),
        ));
    }
    let out = promote_types(x.dtype(), w.dtype());
    if !out.is_floating() {
        return Err(Error::invalid(
            "conv",
            format!(
                "Invalid weight array with type {}. Convolution currently only supports floating point types.",
                w.dtype()
            ),
        ));
    }
    if p.stride.contains(&0) {
        return Err(Error::invalid(
            "conv",
            format!("Stride sizes must be positive. Got strides {}.", fmt_list(&p.stride)),
        ));
    }
    if p.kernel_dilation.contains(&0) {
        return Err(Error::invalid(
            "conv",
            format!("Kernel dilation sizes must be positive. Got kernel dilation {}.", fmt_list(&p.kernel_dilation)),
        ));
    }
    if p.input_dilation.contains(&0) {
        return Err(Error::invalid(
            "conv",
            format!("Input dilation sizes must be positive. Got input dilation {}.", fmt_list(&p.input_dilation)),
        ));
    }
    if p.groups == 0 {
        return Err(Error::invalid("conv", "The number of groups must be positive, got 0."));
    }
    let cin = x.shape()[nsp + 1];
    if !cin.is_multiple_of(p.groups) {
        return Err(Error::invalid(
            "conv",
            format!(
                "The input channels must be divisible by the number of groups. Got input with shape {} and {} groups.",
                fmt_shape(x.shape()),
                p.groups
            ),
        ));
    }
    let cout = w.shape()[0];
    if p.groups > 1 && !cout.is_multiple_of(p.groups) {
        return Err(Error::invalid(
            "conv",
            format!(
                "If groups > 1, the output channels must be divisible by the number of groups. Got {cout} output channels and {} groups.",
                p.groups
            ),
        ));
    }
    if w.shape()[nsp + 1] * p.groups != cin {
        return Err(Error::invalid(
            "conv",
            format!(
                "Expect the input channels in the input and weight array to match but got shapes - input: {} and weight: {}.",
                fmt_shape(x.shape()),
                fmt_shape(w.shape())
            ),
        ));
    }
    for i in 0..nsp {
        if p.out_len(i, x.shape()[i + 1], w.shape()[i + 1]).is_none() {
            return Err(Error::invalid(
                "conv",
                format!(
                    "Spatial dimensions of input after padding cannot be smaller than weight spatial dimensions. Got error at axis {} for input with shape {}, padding low {}, padding high {}, and weight of shape {}.",
                    i + 1,
                    fmt_shape(x.shape()),
                    fmt_list(&p.padding_lo),
                    fmt_list(&p.padding_hi),
                    fmt_shape(w.shape())
                ),
            ));
        }
    }
    Ok(())
}

fn check_rank(input: &Array, weight: &Array, nsp: usize) -> Result<()> {
    if input.ndim() != nsp + 2 {
        return Err(Error::invalid(
            "conv",
            format!(
                "Invalid input array with {} dimensions for {nsp}D convolution. Expected an array with {} dimensions following the format [N, ..., C_in].",
                input.ndim(),
                nsp + 2
            ),
        ));
    }
    if weight.ndim() != nsp + 2 {
        return Err(Error::invalid(
            "conv",
            format!(
                "Invalid weight array with {} dimensions for {nsp}D convolution. Expected an array with {} dimensions following the format [C_out, ..., C_in].",
                weight.ndim(),
                nsp + 2
            ),
        ));
    }
    Ok(())
}

fn conv_nd(
    input: &Array,
    weight: &Array,
    nsp: usize,
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    groups: usize,
) -> Result<Array> {
    check_rank(input, weight, nsp)?;
    let pad: Vec<i64> = padding.iter().map(|&v| v as i64).collect();
    conv_general(input, weight, stride, &pad, &pad, dilation, &[1], groups, false)
}

/// 1-D convolution (cross-correlation): input `(N, L, C_in)`, weight
/// `(C_out, K, C_in / groups)`, output `(N, L_out, C_out)`.
pub fn conv1d(
    input: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Array> {
    conv_nd(input, weight, 1, &[stride], &[padding], &[dilation], groups)
}

/// 2-D convolution: input `(N, H, W, C_in)`, weight `(C_out, KH, KW, C_in / groups)`.
pub fn conv2d(
    input: &Array,
    weight: &Array,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Result<Array> {
    conv_nd(input, weight, 2, &stride, &padding, &dilation, groups)
}

/// 3-D convolution: input `(N, D, H, W, C_in)`, weight `(C_out, KD, KH, KW, C_in / groups)`.
pub fn conv3d(
    input: &Array,
    weight: &Array,
    stride: [usize; 3],
    padding: [usize; 3],
    dilation: [usize; 3],
    groups: usize,
) -> Result<Array> {
    conv_nd(input, weight, 3, &stride, &padding, &dilation, groups)
}

#[allow(clippy::too_many_arguments)]
fn conv_transpose_nd(
    input: &Array,
    weight: &Array,
    nsp: usize,
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    output_padding: &[usize],
    groups: usize,
) -> Result<Array> {
    check_rank(input, weight, nsp)?;
    // As MLX: a stride-1 convolution of the stride-dilated input with the
    // flipped kernel, padded by `dilation * (K - 1) - padding` on each side
    // (plus `output_padding` at the end).
    let mut lo = vec![0i64; nsp];
    let mut hi = vec![0i64; nsp];
    for i in 0..nsp {
        let k = weight.shape()[i + 1] as i64;
        let base = dilation[i] as i64 * (k - 1) - padding[i] as i64;
        lo[i] = base;
        hi[i] = base + output_padding[i] as i64;
    }
    conv_general(input, weight, &[1], &lo, &hi, dilation, stride, groups, true)
}

/// 1-D transposed convolution: input `(N, L, C_in)`, weight `(C_out, K, C_in / groups)`.
pub fn conv_transpose1d(
    input: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
    groups: usize,
) -> Result<Array> {
    conv_transpose_nd(input, weight, 1, &[stride], &[padding], &[dilation], &[output_padding], groups)
}

/// 2-D transposed convolution: input `(N, H, W, C_in)`, weight `(C_out, KH, KW, C_in / groups)`.
pub fn conv_transpose2d(
    input: &Array,
    weight: &Array,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    output_padding: [usize; 2],
    groups: usize,
) -> Result<Array> {
    conv_transpose_nd(input, weight, 2, &stride, &padding, &dilation, &output_padding, groups)
}

/// 3-D transposed convolution: input `(N, D, H, W, C_in)`, weight `(C_out, KD, KH, KW, C_in / groups)`.
pub fn conv_transpose3d(
    input: &Array,
    weight: &Array,
    stride: [usize; 3],
    padding: [usize; 3],
    dilation: [usize; 3],
    output_padding: [usize; 3],
    groups: usize,
) -> Result<Array> {
    conv_transpose_nd(input, weight, 3, &stride, &padding, &dilation, &output_padding, groups)
}
