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
