//! Elementwise unary ops: one `Unary` primitive parameterised by [`UnaryOp`].

use crate::array::{Array, Data};
use crate::backend::{Backend, UnaryOp};
use crate::dtype::{to_inexact, Dtype};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive};

/// An elementwise unary primitive.
#[derive(Debug, PartialEq)]
pub struct Unary {
    /// Which function.
    pub op: UnaryOp,
}

impl Primitive for Unary {
    fn name(&self) -> &'static str {
        unary_name(self.op)
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.unary(self.op, &inputs[0], &outputs[0])?])
    }
    fn vjp(
        &self,
        primals: &[Array],
        cotangents: &[Array],
        _argnums: &[usize],
        outputs: &[Array],
    ) -> Result<Vec<Array>> {
        let (_x, g, y) = (&primals[0], &cotangents[0], &outputs[0]);
        Ok(vec![match self.op {
            UnaryOp::Exp => multiply(g, y)?,
            UnaryOp::Negative => negative(g)?,
            _ => return Err(self.missing("vjp")),
        }])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _argnums: &[usize]) -> Result<Vec<Array>> {
        let (x, t) = (&primals[0], &tangents[0]);
        Ok(vec![match self.op {
            UnaryOp::Exp => multiply(t, &exp(x)?)?,
            UnaryOp::Negative => negative(t)?,
            _ => return Err(self.missing("jvp")),
        }])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![unary(self.op, &inputs[0])?], vec![axes[0]]))
    }
    crate::prim_common!();
}

use super::binary::multiply;

/// MLX's primitive name for a unary op.
pub fn unary_name(op: UnaryOp) -> &'static str {
    use UnaryOp::*;
    match op {
        Abs => "Abs",
        Negative => "Negative",
        Sign => "Sign",
        Floor => "Floor",
        Ceil => "Ceil",
        Round => "Round",
        Sqrt => "Sqrt",
        Rsqrt => "Rsqrt",
        Square => "Square",
        Reciprocal => "Reciprocal",
        Exp => "Exp",
        Expm1 => "Expm1",
        Log => "Log",
        Log2 => "Log2",
        Log10 => "Log10",
        Log1p => "Log1p",
        Sin => "Sin",
        Cos => "Cos",
        Tan => "Tan",
        ArcSin => "ArcSin",
        ArcCos => "ArcCos",
        ArcTan => "ArcTan",
        Sinh => "Sinh",
        Cosh => "Cosh",
        Tanh => "Tanh",
        ArcSinh => "ArcSinh",
        ArcCosh => "ArcCosh",
        ArcTanh => "ArcTanh",
        Erf => "Erf",
        ErfInv => "ErfInv",
        Sigmoid => "Sigmoid",
        Conjugate => "Conjugate",
        Real => "Real",
        Imag => "Imag",
        IsNan => "IsNaN",
        IsInf => "IsInf",
        IsPosInf => "IsPosInf",
        IsNegInf => "IsNegInf",
        IsFinite => "IsFinite",
        LogicalNot => "LogicalNot",
        BitwiseInvert => "BitwiseInvert",
    }
}

/// The output dtype of `op` on `d`, or an error if the op rejects `d`.
pub fn unary_dtype(op: UnaryOp, d: Dtype) -> Result<Dtype> {
    use UnaryOp::*;
    let name = unary_name(op).to_lowercase();
    match op {
        Abs | Negative | Sign | Square => Ok(d),
        Floor | Ceil | Round => {
            if d.is_complex() {
                Err(Error::invalid(name, format!("Not supported for {d}.")))
            } else {
                Ok(d)
            }
        }
        Conjugate => Ok(d),
        Real | Imag => Ok(if d.is_complex() { Dtype::F32 } else { d }),
        IsNan | IsInf | IsPosInf | IsNegInf | IsFinite | LogicalNot => Ok(Dtype::Bool),
        BitwiseInvert => {
            if d.is_integral() {
                Ok(d)
            } else {
                Err(Error::invalid(
                    "bitwise_invert",
                    format!("Bitwise inversion only supports integer types, got {d}."),
                ))
            }
        }
        Erf | ErfInv => {
            if d.is_complex() {
                Err(Error::invalid(name, format!("Not supported for {d}.")))
            } else {
                Ok(to_inexact(d))
            }
        }
        _ => Ok(to_inexact(d)),
    }
}

/// Applies a unary op (validating the dtype; integer inputs of float ops become f32).
pub fn unary(op: UnaryOp, a: &Array) -> Result<Array> {
    let out = unary_dtype(op, a.dtype())?;
    let input = if out.is_inexact()
        && !a.dtype().is_inexact()
        && !matches!(op, UnaryOp::Abs | UnaryOp::Negative | UnaryOp::Sign | UnaryOp::Square)
    {
        super::creation::astype(a, out)?
    } else {
        a.clone()
    };
    Ok(Array::from_op(a.shape().to_vec(), out, Unary { op }, vec![input]))
}

/// Elementwise e^x.
pub fn exp(a: &Array) -> Result<Array> {
    unary(UnaryOp::Exp, a)
}

/// Elementwise -x.
pub fn negative(a: &Array) -> Result<Array> {
    if a.dtype() == Dtype::Bool {
        return Err(Error::invalid("negative", "The negative op is not supported for bool arrays."));
    }
    unary(UnaryOp::Negative, a)
}

/// Elementwise: Absolute value.
pub fn abs(a: &Array) -> Result<Array> {
    unary(UnaryOp::Abs, a)
}

/// Elementwise: Sign (-1, 0 or 1).
pub fn sign(a: &Array) -> Result<Array> {
    unary(UnaryOp::Sign, a)
}

/// Elementwise: Round down.
pub fn floor(a: &Array) -> Result<Array> {
    unary(UnaryOp::Floor, a)
}

/// Elementwise: Round up.
pub fn ceil(a: &Array) -> Result<Array> {
    unary(UnaryOp::Ceil, a)
}

/// Elementwise: Square root.
pub fn sqrt(a: &Array) -> Result<Array> {
    unary(UnaryOp::Sqrt, a)
}

/// Elementwise: Reciprocal square root.
pub fn rsqrt(a: &Array) -> Result<Array> {
    unary(UnaryOp::Rsqrt, a)
}

/// Elementwise: x*x.
pub fn square(a: &Array) -> Result<Array> {
    unary(UnaryOp::Square, a)
}

/// Elementwise: 1/x.
pub fn reciprocal(a: &Array) -> Result<Array> {
    unary(UnaryOp::Reciprocal, a)
}

/// Elementwise: e^x - 1, accurate near 0.
pub fn expm1(a: &Array) -> Result<Array> {
    unary(UnaryOp::Expm1, a)
}

/// Elementwise: Natural logarithm.
pub fn log(a: &Array) -> Result<Array> {
    unary(UnaryOp::Log, a)
}

/// Elementwise: Base-2 logarithm.
pub fn log2(a: &Array) -> Result<Array> {
    unary(UnaryOp::Log2, a)
}

/// Elementwise: Base-10 logarithm.
pub fn log10(a: &Array) -> Result<Array> {
    unary(UnaryOp::Log10, a)
}

/// Elementwise: log(1+x), accurate near 0.
pub fn log1p(a: &Array) -> Result<Array> {
    unary(UnaryOp::Log1p, a)
}

/// Elementwise: Sine.
pub fn sin(a: &Array) -> Result<Array> {
    unary(UnaryOp::Sin, a)
}

/// Elementwise: Cosine.
pub fn cos(a: &Array) -> Result<Array> {
    unary(UnaryOp::Cos, a)
}

/// Elementwise: Tangent.
pub fn tan(a: &Array) -> Result<Array> {
    unary(UnaryOp::Tan, a)
}

/// Elementwise: Inverse sine.
pub fn arcsin(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcSin, a)
}

/// Elementwise: Inverse cosine.
pub fn arccos(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcCos, a)
}

/// Elementwise: Inverse tangent.
pub fn arctan(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcTan, a)
}

/// Elementwise: Hyperbolic sine.
pub fn sinh(a: &Array) -> Result<Array> {
    unary(UnaryOp::Sinh, a)
}

/// Elementwise: Hyperbolic cosine.
pub fn cosh(a: &Array) -> Result<Array> {
    unary(UnaryOp::Cosh, a)
}

/// Elementwise: Hyperbolic tangent.
pub fn tanh(a: &Array) -> Result<Array> {
    unary(UnaryOp::Tanh, a)
}

/// Elementwise: Inverse hyperbolic sine.
pub fn arcsinh(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcSinh, a)
}

/// Elementwise: Inverse hyperbolic cosine.
pub fn arccosh(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcCosh, a)
}

/// Elementwise: Inverse hyperbolic tangent.
pub fn arctanh(a: &Array) -> Result<Array> {
    unary(UnaryOp::ArcTanh, a)
}

/// Elementwise: Error function.
pub fn erf(a: &Array) -> Result<Array> {
    unary(UnaryOp::Erf, a)
}

/// Elementwise: Inverse error function.
pub fn erfinv(a: &Array) -> Result<Array> {
    unary(UnaryOp::ErfInv, a)
}

/// Elementwise: Logistic sigmoid 1/(1+e^-x).
pub fn sigmoid(a: &Array) -> Result<Array> {
    unary(UnaryOp::Sigmoid, a)
}

/// Elementwise: Complex conjugate.
pub fn conjugate(a: &Array) -> Result<Array> {
    unary(UnaryOp::Conjugate, a)
}

/// Elementwise: Real part.
pub fn real(a: &Array) -> Result<Array> {
    unary(UnaryOp::Real, a)
}

/// Elementwise: Imaginary part.
pub fn imag(a: &Array) -> Result<Array> {
    unary(UnaryOp::Imag, a)
}

/// Elementwise: Elementwise NaN test.
pub fn isnan(a: &Array) -> Result<Array> {
    unary(UnaryOp::IsNan, a)
}

/// Elementwise: Elementwise infinity test.
pub fn isinf(a: &Array) -> Result<Array> {
    unary(UnaryOp::IsInf, a)
}

/// Elementwise: Elementwise +inf test.
pub fn isposinf(a: &Array) -> Result<Array> {
    unary(UnaryOp::IsPosInf, a)
}

/// Elementwise: Elementwise -inf test.
pub fn isneginf(a: &Array) -> Result<Array> {
    unary(UnaryOp::IsNegInf, a)
}

/// Elementwise: Elementwise finiteness test.
pub fn isfinite(a: &Array) -> Result<Array> {
    unary(UnaryOp::IsFinite, a)
}

/// Elementwise: Logical negation (non-zero is true).
pub fn logical_not(a: &Array) -> Result<Array> {
    unary(UnaryOp::LogicalNot, a)
}

/// Elementwise: Bitwise NOT of integers and bools.
pub fn bitwise_invert(a: &Array) -> Result<Array> {
    unary(UnaryOp::BitwiseInvert, a)
}

/// Elementwise round half to even, to `decimals` places.
pub fn round(a: &Array, decimals: i32) -> Result<Array> {
    if decimals == 0 || !a.dtype().is_inexact() {
        return unary(UnaryOp::Round, a);
    }
    let s = 10f64.powi(decimals);
    super::binary::divide(&unary(UnaryOp::Round, &multiply(a, s)?)?, s)
}
