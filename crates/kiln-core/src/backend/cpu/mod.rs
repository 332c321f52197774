//! The CPU backend: SIMD kernels with run-time ISA dispatch, multi-threaded
//! over large arrays, single-threaded for small ones.

#[cfg(target_arch = "x86_64")]
mod amx;
mod binary;
mod conv;
pub(crate) mod fast;
mod fft;
mod fused;
pub(crate) mod gemm;
mod indexing;
mod linalg;
pub mod math;
mod pool;
mod qmv;
mod quantized;
mod random;
mod reduce;
mod scan;
mod select;
mod sgemm;
pub mod simd;
mod softmax;
mod sort;
pub mod strided;
mod unary;

use super::LinalgOp;
use super::{ArgReduceOp, Backend, BinaryOp, ReduceOp, ScanOp, ScatterOp, UnaryOp};
use crate::array::{Array, Data};
use crate::dtype::{Dtype, Scalar};
use crate::error::Result;
use crate::primitive::OutSpec;

/// The CPU backend.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn fill(&self, value: Scalar, out: &OutSpec<'_>) -> Result<Data> {
        strided::fill(value, out)
    }
    fn arange(&self, start: f64, step: f64, out: &OutSpec<'_>) -> Result<Data> {
        strided::arange(start, step, out)
    }
    fn copy(&self, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        strided::copy(x, out)
    }
    fn copy_into(
        &self,
        src: &Array,
        dst: &Data,
        dst_dtype: Dtype,
        dst_offset: isize,
        dst_strides: &[isize],
    ) -> Result<()> {
        strided::copy_into(src, &src.data(), dst, dst_dtype, dst_offset, dst_strides);
        Ok(())
    }
    fn unary(&self, op: UnaryOp, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        unary::unary(op, x, out)
    }
    fn nan_to_num(&self, x: &Array, nan: f64, posinf: f64, neginf: f64, out: &OutSpec<'_>) -> Result<Data> {
        unary::nan_to_num(x, nan, posinf, neginf, out)
    }
    fn binary(&self, op: BinaryOp, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        binary::binary(op, a, b, out)
    }
    fn select(&self, cond: &Array, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        select::select(cond, a, b, out)
    }
    fn reduce(&self, op: ReduceOp, x: &Array, axes: &[usize], out: &OutSpec<'_>) -> Result<Data> {
        reduce::reduce(op, x, axes, out)
    }
    fn arg_reduce(&self, op: ArgReduceOp, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        reduce::arg_reduce(op, x, axis, out)
    }
    fn scan(
        &self,
        op: ScanOp,
        x: &Array,
        axis: usize,
        reverse: bool,
        inclusive: bool,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        scan::scan(op, x, axis, reverse, inclusive, out)
    }
    fn softmax(&self, x: &Array, _precise: bool, out: &OutSpec<'_>) -> Result<Data> {
        softmax::softmax(x, out)
    }
    fn logsumexp(&self, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        softmax::logsumexp(x, out)
    }
    fn sort(&self, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        sort::sort(x, axis, sort::SortMode::Values, out)
    }
    fn argsort(&self, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        sort::sort(x, axis, sort::SortMode::Indices, out)
    }
    fn partition(&self, x: &Array, kth: usize, axis: usize, indices: bool, out: &OutSpec<'_>) -> Result<Data> {
        let mode = if indices { sort::SortMode::PartIndices(kth) } else { sort::SortMode::PartValues(kth) };
        sort::sort(x, axis, mode, out)
    }
    fn take_along_u32(&self, x: &Array, idx: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        sort::take_along(x, idx, axis, out)
    }
    fn random_bits(&self, key: &Array, out: &OutSpec<'_>) -> Result<Data> {
        random::random_bits(key, out)
    }
    fn fft(
        &self,
        x: &Array,
        axes: &[usize],
        kind: super::FftKind,
        n_real: usize,
        scale: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        fft::fft(x, axes, kind, n_real, scale, out)
    }
    fn linalg(&self, op: LinalgOp, inputs: &[Array], outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        linalg::linalg(op, inputs, outs)
    }
    fn gather(
        &self,
        a: &Array,
        indices: &[Array],
        axes: &[usize],
        slice_sizes: &[usize],
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        indexing::gather(a, indices, axes, slice_sizes, out)
    }
    fn scatter(
        &self,
        op: ScatterOp,
        a: &Array,
        indices: &[Array],
        updates: &Array,
        axes: &[usize],
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        indexing::scatter(op, a, indices, updates, axes, out)
    }
    fn matmul(&self, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        gemm::matmul(a, b, out)
    }
    fn gather_mm(&self, a: &Array, b: &Array, lhs: &Array, rhs: &Array, out: &OutSpec<'_>) -> Result<Data> {
        gemm::gather_mm(a, b, lhs, rhs, out)
    }
    fn conv(
        &self,
        input: &Array,
        weight: &Array,
        params: &crate::ops::conv::ConvParams,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        conv::conv(input, weight, params, out)
    }
    fn fused(
        &self,
        program: &crate::ops::fused::FusedProgram,
        inputs: &[Array],
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        fused::fused(program, inputs, outs)
    }
    fn searchsorted(&self, sorted: &Array, values: &Array, right: bool, out: &OutSpec<'_>) -> Result<Data> {
        indexing::searchsorted(sorted, values, right, out)
    }
    fn rms_norm(&self, x: &Array, weight: Option<&Array>, eps: f32, out: &OutSpec<'_>) -> Result<Data> {
        fast::norm(x, weight, None, eps, false, out)
    }
    fn layer_norm(
        &self,
        x: &Array,
        weight: Option<&Array>,
        bias: Option<&Array>,
        eps: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        fast::norm(x, weight, bias, eps, true, out)
    }
    fn rms_norm_vjp(
        &self,
        x: &Array,
        weight: Option<&Array>,
        g: &Array,
        eps: f32,
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        fast::norm_vjp(x, weight, g, eps, false, weight.is_some(), false, outs)
    }
    fn layer_norm_vjp(
        &self,
        x: &Array,
        weight: Option<&Array>,
        g: &Array,
        eps: f32,
        has_bias: bool,
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        fast::norm_vjp(x, weight, g, eps, true, weight.is_some(), has_bias, outs)
    }
    fn rope(
        &self,
        x: &Array,
        offset: &Array,
        freqs: Option<&Array>,
        dims: usize,
        traditional: bool,
        base: f32,
        scale: f32,
        forward: bool,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        fast::rope(x, offset, freqs, dims, traditional, base, scale, forward, out)
    }
    fn scaled_dot_product_attention(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        mask: Option<&Array>,
        kind: fast::MaskKind,
        scale: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        fast::sdpa(q, k, v, mask, kind, scale, out)
    }
    fn scaled_dot_product_attention_vjp(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        mask: Option<&Array>,
        g: &Array,
        kind: crate::ops::fast::MaskKind,
        scale: f32,
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        fast::sdpa_vjp(q, k, v, mask, g, kind, scale, outs)
    }
    fn quantize(&self, w: &Array, spec: crate::ops::quantized::QuantSpec, outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        quantized::quantize(w, spec, outs)
    }
    fn dequantize(&self, inputs: &[Array], spec: crate::ops::quantized::QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
        quantized::dequantize(inputs, spec, out)
    }
    fn quantized_matmul(
        &self,
        inputs: &[Array],
        transpose: bool,
        spec: crate::ops::quantized::QuantSpec,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        quantized::quantized_matmul(inputs, transpose, spec, out)
    }
    fn gather_qmm(
        &self,
        inputs: &[Array],
        transpose: bool,
        spec: crate::ops::quantized::QuantSpec,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        quantized::gather_qmm(inputs, transpose, spec, out)
    }
}
