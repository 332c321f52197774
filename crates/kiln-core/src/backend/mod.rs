//! The backend interface: the kernel families a device must provide.
//!
//! Primitives call these methods on the backend of their stream's device; the
//! graph never sees SIMD, threads or GPU queues. The CPU backend implements
//! every method; another backend may implement a subset and inherit the
//! default, which reports the kernel as unavailable on that device.

pub mod cpu;

use crate::array::{Array, Data};
use crate::device::{Device, DeviceType};
use crate::dtype::Scalar;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

/// Elementwise unary kernels.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Abs,
    Negative,
    Sign,
    Floor,
    Ceil,
    /// Round half to even (decimals are handled by the op with scaling).
    Round,
    Sqrt,
    Rsqrt,
    Square,
    Reciprocal,
    Exp,
    Expm1,
    Log,
    Log2,
    Log10,
    Log1p,
    Sin,
    Cos,
    Tan,
    ArcSin,
    ArcCos,
    ArcTan,
    Sinh,
    Cosh,
    Tanh,
    ArcSinh,
    ArcCosh,
    ArcTanh,
    Erf,
    ErfInv,
    Sigmoid,
    Conjugate,
    Real,
    Imag,
    IsNan,
    IsInf,
    IsPosInf,
    IsNegInf,
    IsFinite,
    LogicalNot,
    BitwiseInvert,
    /// Round toward zero.
    Trunc,
}

/// Elementwise binary kernels (inputs already share a dtype, except shifts).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    FloorDivide,
    Remainder,
    Power,
    Maximum,
    Minimum,
    LogAddExp,
    ArcTan2,
    Equal,
    /// Equality that treats NaN == NaN (for `array_equal(equal_nan)` / `isclose`).
    EqualNan,
    NotEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    LogicalAnd,
    LogicalOr,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    LeftShift,
    RightShift,
}

/// Reductions over a set of axes.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    And,
    Or,
}

/// Index-returning reductions along one axis.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgReduceOp {
    ArgMax,
    ArgMin,
}

/// Cumulative scans along one axis.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanOp {
    Sum,
    Prod,
    Max,
    Min,
    LogAddExp,
}

/// Dense linear-algebra kernels. Inputs are float32/float64 matrices batched
/// over their leading dimensions (two-input kernels get equal batch shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinalgOp {
    /// Inverse of a square matrix (partial-pivot LU).
    Inv,
    /// Inverse of the lower (or upper) triangle of a square matrix.
    TriInv {
        /// Use the upper triangle.
        upper: bool,
    },
    /// Lower Cholesky factor of the symmetric matrix given by the lower triangle (NaN if not positive definite).
    Cholesky,
    /// Reduced QR: outputs Q (m×k) and R (k×n), k = min(m, n).
    Qr,
    /// SVD: outputs U (m×m), S (k) and Vᵀ (n×n), or S alone.
    Svd {
        /// Compute U and Vᵀ.
        compute_uv: bool,
    },
    /// LU with partial pivoting: outputs packed LU (m×n), LAPACK pivots (k,
    /// 0-based) and the row permutation p with A = L[p] U.
    LuFactor,
    /// Solves A X = B for square A (n×n) and B (n×k).
    Solve,
    /// Solves T X = B with T the lower (or upper) triangle of A.
    SolveTriangular {
        /// Use the upper triangle.
        upper: bool,
    },
    /// Eigen-decomposition of the symmetric matrix given by the lower
    /// triangle: ascending eigenvalues (n) and, optionally, eigenvectors (n×n, columns).
    Eigh {
        /// Compute eigenvectors.
        vectors: bool,
    },
    /// Eigen-decomposition of a general square matrix: complex eigenvalues
    /// and, optionally, complex eigenvectors (columns).
    Eig {
        /// Compute eigenvectors.
        vectors: bool,
    },
    /// Determinant (one 0-d output per matrix).
    Det,
    /// Sign and log of the absolute value of the determinant.
    SlogDet,
}

/// The kernels a device provides. Inputs are evaluated arrays (any strides);
/// each method returns the data of one output described by `out`.
pub trait Backend: Send + Sync {
    /// Backend name for messages.
    fn name(&self) -> &'static str;

    /// An array of `out.shape` filled with `value` cast to `out.dtype`.
    fn fill(&self, value: Scalar, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (value, out);
        Err(self.unavailable("fill"))
    }
    /// `start + i * step` for each position of a 1-d output.
    fn arange(&self, start: f64, step: f64, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (start, step, out);
        Err(self.unavailable("arange"))
    }
    /// A row-major copy of `x` cast to `out.dtype` (astype, contiguous, materialising views).
    fn copy(&self, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, out);
        Err(self.unavailable("copy"))
    }
    /// Copies `src` (whose shape is `shape`) into the strided region of `dst`
    /// starting at element `dst_offset`, casting to `dst`'s dtype (`dst_dtype`).
    /// Used to assemble concatenations, pads and tiles into a fresh output.
    fn copy_into(
        &self,
        src: &Array,
        dst: &Data,
        dst_dtype: crate::dtype::Dtype,
        dst_offset: isize,
        dst_strides: &[isize],
    ) -> Result<()> {
        let _ = (src, dst, dst_dtype, dst_offset, dst_strides);
        Err(self.unavailable("copy_into"))
    }
    /// Elementwise unary op.
    fn unary(&self, op: UnaryOp, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (op, x, out);
        Err(self.unavailable("unary"))
    }
    /// Replaces NaN, +inf and -inf of a float `x` with the given values.
    fn nan_to_num(&self, x: &Array, nan: f64, posinf: f64, neginf: f64, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, nan, posinf, neginf, out);
        Err(self.unavailable("nan_to_num"))
    }
    /// Elementwise binary op; `a` and `b` broadcast to `out.shape`.
    fn binary(&self, op: BinaryOp, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (op, a, b, out);
        Err(self.unavailable("binary"))
    }
    /// `cond ? a : b`, broadcasting all three to `out.shape`.
    fn select(&self, cond: &Array, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (cond, a, b, out);
        Err(self.unavailable("select"))
    }
    /// Reduction of `x` over `axes` (sorted, unique); `out.shape` keeps the reduced axes as size 1.
    fn reduce(&self, op: ReduceOp, x: &Array, axes: &[usize], out: &OutSpec<'_>) -> Result<Data> {
        let _ = (op, x, axes, out);
        Err(self.unavailable("reduce"))
    }
    /// Index of the max/min along `axis` (first occurrence); `out.shape` keeps `axis` as size 1.
    fn arg_reduce(&self, op: ArgReduceOp, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (op, x, axis, out);
        Err(self.unavailable("arg_reduce"))
    }
    /// Cumulative scan along `axis`.
    fn scan(
        &self,
        op: ScanOp,
        x: &Array,
        axis: usize,
        reverse: bool,
        inclusive: bool,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (op, x, axis, reverse, inclusive, out);
        Err(self.unavailable("scan"))
    }
    /// Softmax along the last axis (`precise`: accumulate half types in f32).
    fn softmax(&self, x: &Array, precise: bool, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, precise, out);
        Err(self.unavailable("softmax"))
    }
    /// log(sum(exp(x))) along the last axis; `out.shape` keeps it as size 1.
    fn logsumexp(&self, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, out);
        Err(self.unavailable("logsumexp"))
    }
    /// Sorts along `axis` (NaNs last), returning values.
    fn sort(&self, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, axis, out);
        Err(self.unavailable("sort"))
    }
    /// The stable sorting permutation along `axis` (uint32 output).
    fn argsort(&self, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, axis, out);
        Err(self.unavailable("argsort"))
    }
    /// Partitions along `axis` around position `kth`: values, or (`indices`) the uint32 permutation.
    fn partition(&self, x: &Array, kth: usize, axis: usize, indices: bool, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, kth, axis, indices, out);
        Err(self.unavailable("partition"))
    }
    /// `out[.., k, ..] = x[.., idx[.., k, ..], ..]` along `axis`, `idx` uint32 (clamped).
    fn take_along_u32(&self, x: &Array, idx: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, idx, axis, out);
        Err(self.unavailable("take_along_u32"))
    }
    /// Threefry-2x32 random bits (MLX's layout) from a `(2,)` uint32 key; `out.dtype` is uint8/16/32.
    fn random_bits(&self, key: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (key, out);
        Err(self.unavailable("random_bits"))
    }
    /// Batched matrix product: `a` is `(..., m, k)`, `b` `(..., k, n)`, batch dims broadcast to `out.shape[..-2]`.
    fn matmul(&self, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (a, b, out);
        Err(self.unavailable("matmul"))
    }
    /// Gathered batched product: output batch `i` is `a[lhs[i]] @ b[rhs[i]]` (flat batch indices).
    fn gather_mm(&self, a: &Array, b: &Array, lhs: &Array, rhs: &Array, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (a, b, lhs, rhs, out);
        Err(self.unavailable("gather_mm"))
    }

    /// A discrete Fourier transform of `x` over `axes` (in order; the last one
    /// is the real axis of a real transform, of real length `n_real`), scaled by `scale`.
    fn fft(
        &self,
        x: &Array,
        axes: &[usize],
        kind: FftKind,
        n_real: usize,
        scale: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (x, axes, kind, n_real, scale, out);
        Err(self.unavailable("fft"))
    }

    /// Dense linear algebra over a batch of matrices (see [`LinalgOp`] for
    /// the inputs and outputs of each kernel).
    fn linalg(&self, op: LinalgOp, inputs: &[Array], outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let _ = (op, inputs, outs);
        Err(self.unavailable("linalg"))
    }

    /// `out[i, s] = a[indices[.][i] + s]`: blocks of shape `slice_sizes` at the
    /// coordinates the index arrays (one per axis in `axes`, all of one
    /// shape) give; an out-of-range index is an error.
    fn gather(
        &self,
        a: &Array,
        indices: &[Array],
        axes: &[usize],
        slice_sizes: &[usize],
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (a, indices, axes, slice_sizes, out);
        Err(self.unavailable("gather"))
    }
    /// A copy of `a` with each update block combined (`op`) into the block at
    /// the indexed coordinates, in index order; an out-of-range index is an error.
    fn scatter(
        &self,
        op: ScatterOp,
        a: &Array,
        indices: &[Array],
        updates: &Array,
        axes: &[usize],
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (op, a, indices, updates, axes, out);
        Err(self.unavailable("scatter"))
    }

    /// Convolution of channels-last `input` with `weight` (same dtype), see [`crate::ops::conv::ConvParams`].
    fn conv(
        &self,
        input: &Array,
        weight: &Array,
        params: &crate::ops::conv::ConvParams,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (input, weight, params, out);
        Err(self.unavailable("conv"))
    }

    /// Evaluates a fused elementwise program (see [`crate::ops::fused`]) over
    /// `inputs`, which broadcast to the program's shape; one output per `outs`.
    fn fused(
        &self,
        program: &crate::ops::fused::FusedProgram,
        inputs: &[Array],
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        let _ = (program, inputs, outs);
        Err(self.unavailable("fused"))
    }

    /// For every element of `values`, the number of elements of the sorted
    /// 1-D `sorted` (same dtype, NaN last) below it (`right`: at or below it), as uint32.
    fn searchsorted(&self, sorted: &Array, values: &Array, right: bool, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (sorted, values, right, out);
        Err(self.unavailable("searchsorted"))
    }

    /// RMS normalisation over the last axis of `x`, times `weight` (`(D,)`) if
    /// given; all inputs have `out.dtype` (see [`crate::ops::fast::rms_norm`]).
    fn rms_norm(&self, x: &Array, weight: Option<&Array>, eps: f32, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (x, weight, eps, out);
        Err(self.unavailable("rms_norm"))
    }
    /// Layer normalisation over the last axis of `x` with optional `(D,)`
    /// weight and bias (see [`crate::ops::fast::layer_norm`]).
    fn layer_norm(
        &self,
        x: &Array,
        weight: Option<&Array>,
        bias: Option<&Array>,
        eps: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (x, weight, bias, eps, out);
        Err(self.unavailable("layer_norm"))
    }
    /// Gradients of [`Backend::rms_norm`] for the cotangent `g`: `dx`, and `dw`
    /// when `outs` has two entries.
    fn rms_norm_vjp(
        &self,
        x: &Array,
        weight: Option<&Array>,
        g: &Array,
        eps: f32,
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        let _ = (x, weight, g, eps, outs);
        Err(self.unavailable("rms_norm_vjp"))
    }
    /// Gradients of [`Backend::layer_norm`] for the cotangent `g`: `dx`, then
    /// `dw` (with a weight), then `db` (`has_bias`).
    fn layer_norm_vjp(
        &self,
        x: &Array,
        weight: Option<&Array>,
        g: &Array,
        eps: f32,
        has_bias: bool,
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Data>> {
        let _ = (x, weight, g, eps, has_bias, outs);
        Err(self.unavailable("layer_norm_vjp"))
    }
    /// Rotary position embedding (see [`crate::ops::fast::rope`]): `offset` is
    /// an int32 scalar or `(B,)` vector, `freqs` float32 `(dims/2,)`;
    /// `forward` false rotates by the negated angles.
    #[allow(clippy::too_many_arguments)]
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
        let _ = (x, offset, freqs, dims, traditional, base, scale, forward, out);
        Err(self.unavailable("rope"))
    }
    /// Scaled dot-product attention over `(B, H, L, D)` inputs (see
    /// [`crate::ops::fast::scaled_dot_product_attention`]); `mask`, when
    /// given, is broadcast to `(B, H_q, L_q, L_k)`.
    #[allow(clippy::too_many_arguments)]
    fn scaled_dot_product_attention(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        mask: Option<&Array>,
        kind: crate::ops::fast::MaskKind,
        scale: f32,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (q, k, v, mask, kind, scale, out);
        Err(self.unavailable("scaled_dot_product_attention"))
    }
    /// Gradients of [`Backend::scaled_dot_product_attention`] with respect to
    /// `q`, `k` and `v` (three outputs) for the cotangent `g` of its output.
    #[allow(clippy::too_many_arguments)]
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
        let _ = (q, k, v, mask, g, kind, scale, outs);
        Err(self.unavailable("scaled_dot_product_attention_vjp"))
    }

    /// Quantizes the last axis of `w` (row-major groups): outputs packed
    /// `uint32` codes, scales and (affine) biases.
    fn quantize(&self, w: &Array, spec: crate::ops::quantized::QuantSpec, outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let _ = (w, spec, outs);
        Err(self.unavailable("quantize"))
    }

    /// Expands packed codes; `inputs` = codes, scales and (affine) biases.
    fn dequantize(&self, inputs: &[Array], spec: crate::ops::quantized::QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
        let _ = (inputs, spec, out);
        Err(self.unavailable("dequantize"))
    }

    /// `x @ Wᵀ` (`transpose`) or `x @ W` from packed codes; `inputs` = x,
    /// codes, scales and (affine) biases, with equal batch dims when the
    /// codes have any.
    fn quantized_matmul(
        &self,
        inputs: &[Array],
        transpose: bool,
        spec: crate::ops::quantized::QuantSpec,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (inputs, transpose, spec, out);
        Err(self.unavailable("quantized_matmul"))
    }

    /// Gathered quantized matmul; `inputs` = x, codes, scales, (affine)
    /// biases, lhs and rhs `uint32` indices of one shape.
    fn gather_qmm(
        &self,
        inputs: &[Array],
        transpose: bool,
        spec: crate::ops::quantized::QuantSpec,
        out: &OutSpec<'_>,
    ) -> Result<Data> {
        let _ = (inputs, transpose, spec, out);
        Err(self.unavailable("gather_qmm"))
    }

    /// The error for a kernel this backend lacks.
    fn unavailable(&self, kernel: &str) -> Error {
        Error::unsupported(kernel, format!("No {} implementation of this kernel.", self.name()))
    }
}

/// The backend that runs ops for `device`.
pub fn backend_for(device: Device) -> Result<&'static dyn Backend> {
    match device.kind {
        DeviceType::Cpu => Ok(&cpu::CpuBackend),
        DeviceType::Gpu => Err(Error::runtime("eval", "No GPU backend is available in this build.")),
    }
}

/// Which discrete Fourier transform an FFT kernel computes (unnormalised; the
/// kernel multiplies the result by a scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FftKind {
    /// Complex to complex, `e^{-2 pi i k t / n}`.
    Forward,
    /// Complex to complex, `e^{+2 pi i k t / n}`.
    Inverse,
    /// Real to complex over the last listed axis (keeping `n / 2 + 1` bins),
    /// then forward complex transforms over the other axes.
    Rfft,
    /// Inverse complex transforms over all but the last listed axis, then
    /// complex (Hermitian, `n / 2 + 1` bins) to real over the last one.
    Irfft,
}

/// How a scatter combines updates with the destination.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterOp {
    /// Overwrite (the last update to an element wins).
    None,
    Sum,
    Prod,
    Max,
    Min,
}
