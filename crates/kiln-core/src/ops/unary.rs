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
    fn rules(&self) -> Rules {
        match self.op {
            UnaryOp::BitwiseInvert => Rules {
                vjp: Rule::No("bitwise inversion of integers has no derivative (as in MLX)"),
                jvp: Rule::No("bitwise inversion of integers has no derivative (as in MLX)"),
                vmap: Rule::Yes,
            },
            _ => Rules::ALL,
        }
    }
    fn vjp(
        &self,
        primals: &[Array],
        cotangents: &[Array],
        _argnums: &[usize],
        outputs: &[Array],
    ) -> Result<Vec<Array>> {
        let (x, g, y) = (&primals[0], &cotangents[0], &outputs[0]);
        use UnaryOp::*;
        let complex = x.dtype().is_complex();
        Ok(vec![match self.op {
            BitwiseInvert => return Err(self.missing("vjp")),
            // Holomorphic-convention exceptions (MLX): |z| and the part extractors.
            Abs => multiply(g, &sign(x)?)?,
            Conjugate => conjugate(g)?,
            Real if complex => super::creation::astype(g, x.dtype())?,
            Imag if complex => multiply(&super::creation::astype(g, x.dtype())?, Scalar::from(c64::new(0.0, 1.0)))?,
            _ => match derivative(self.op, x, y)? {
                None => zeros_like(x)?,
                Some(d) if complex => multiply(g, &conjugate(&d)?)?,
                Some(d) => multiply(g, &d)?,
            },
        }])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _argnums: &[usize]) -> Result<Vec<Array>> {
        let (x, t) = (&primals[0], &tangents[0]);
        use UnaryOp::*;
        Ok(vec![match self.op {
            BitwiseInvert => return Err(self.missing("jvp")),
            Negative | Conjugate | Real | Imag => unary(self.op, t)?,
            // |z| is real: its directional derivative is Re(conj(sign z) t) (MLX).
            Abs if x.dtype().is_complex() => real(&multiply(t, &conjugate(&sign(x)?)?)?)?,
            _ => {
                let y = unary(self.op, x)?;
                match derivative(self.op, x, &y)? {
                    None => zeros_like(t)?,
                    Some(d) => multiply(t, &d)?,
                }
            }
        }])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![unary(self.op, &inputs[0])?], vec![axes[0]]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

/// d op / dx at `x` (with `y = op(x)`), or `None` where it is zero.
fn derivative(op: UnaryOp, x: &Array, y: &Array) -> Result<Option<Array>> {
    use std::f64::consts::{LN_10, LN_2, PI};
    use UnaryOp::*;
    let one_minus_sq = |v: &Array| subtract(1.0, &square(v)?);
    Ok(Some(match op {
        Abs => sign(x)?,
        Negative => full_like(x, -1.0)?,
        Sign | Floor | Ceil | Round | Trunc | IsNan | IsInf | IsPosInf | IsNegInf | IsFinite | LogicalNot => {
            return Ok(None)
        }
        Sqrt => divide(0.5, y)?,
        Rsqrt => multiply(&multiply(y, &square(y)?)?, -0.5)?,
        Square => multiply(x, 2.0)?,
        Reciprocal => negative(&square(y)?)?,
        Exp => y.clone(),
        Expm1 => add(y, 1.0)?,
        Log => reciprocal(x)?,
        Log2 => reciprocal(&multiply(x, LN_2)?)?,
        Log10 => reciprocal(&multiply(x, LN_10)?)?,
        Log1p => reciprocal(&add(x, 1.0)?)?,
        Sin => cos(x)?,
        Cos => negative(&sin(x)?)?,
        Tan => add(&square(y)?, 1.0)?,
        ArcSin => rsqrt(&one_minus_sq(x)?)?,
        ArcCos => negative(&rsqrt(&one_minus_sq(x)?)?)?,
        ArcTan => reciprocal(&add(&square(x)?, 1.0)?)?,
        Sinh => cosh(x)?,
        Cosh => sinh(x)?,
        Tanh => one_minus_sq(y)?,
        ArcSinh => rsqrt(&add(&square(x)?, 1.0)?)?,
        ArcCosh => rsqrt(&subtract(&square(x)?, 1.0)?)?,
        ArcTanh => reciprocal(&one_minus_sq(x)?)?,
        Erf => multiply(&exp(&negative(&square(x)?)?)?, 2.0 / PI.sqrt())?,
        ErfInv => multiply(&exp(&square(y)?)?, PI.sqrt() / 2.0)?,
        Sigmoid => multiply(y, &subtract(1.0, y)?)?,
        Conjugate | Real => ones_like(x)?,
        Imag => return Ok(None),
        BitwiseInvert => return Ok(None),
    }))
}

use super::binary::{add, divide, multiply, subtract};
use super::creation::{full_like, ones_like, zeros_like};
use crate::dtype::{bf16, c64, f16, Scalar};
use crate::primitive::{Rule, Rules};

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
        Trunc => "Trunc",
    }
}

/// The output dtype of `op` on `d`, or an error if the op rejects `d`.
pub fn unary_dtype(op: UnaryOp, d: Dtype) -> Result<Dtype> {
    use UnaryOp::*;
    let name = unary_name(op).to_lowercase();
    match op {
        Abs => Ok(if d.is_complex() { Dtype::F32 } else { d }),
        Negative | Sign | Square => Ok(d),
        Floor | Ceil | Trunc | Expm1 | Sigmoid => {
            if d.is_complex() {
                Err(Error::invalid(name, format!("Not supported for {d}.")))
            } else {
                Ok(if matches!(op, Expm1 | Sigmoid) { to_inexact(d) } else { d })
            }
        }
        Round | Conjugate => Ok(d),
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

/// Elementwise round toward zero (integers are returned unchanged).
pub fn trunc(a: &Array) -> Result<Array> {
    unary(UnaryOp::Trunc, a)
}

/// Elementwise +x: returns `a` unchanged.
pub fn positive(a: &Array) -> Result<Array> {
    Ok(a.clone())
}

/// Elementwise conversion from radians to degrees (integers become f32).
pub fn degrees(a: &Array) -> Result<Array> {
    multiply(&to_float(a)?, 180.0 / std::f64::consts::PI)
}

/// Elementwise conversion from degrees to radians (integers become f32).
pub fn radians(a: &Array) -> Result<Array> {
    multiply(&to_float(a)?, std::f64::consts::PI / 180.0)
}

fn to_float(a: &Array) -> Result<Array> {
    if a.dtype().is_inexact() {
        Ok(a.clone())
    } else {
        super::creation::astype(a, Dtype::F32)
    }
}

/// Replaces NaN, +inf and -inf (MLX's `nan_to_num`): `nan` defaults to 0,
/// `posinf`/`neginf` to the largest/lowest finite value of the dtype. Integer
/// and bool arrays are returned unchanged; complex arrays are rejected.
pub fn nan_to_num(a: &Array, nan: f64, posinf: Option<f64>, neginf: Option<f64>) -> Result<Array> {
    let d = a.dtype();
    if d.is_complex() {
        return Err(Error::invalid("nan_to_num", format!("Not supported for {d}.")));
    }
    if !d.is_inexact() {
        return Ok(a.clone());
    }
    let max = match d {
        Dtype::F16 => f16::MAX.to_f64(),
        Dtype::BF16 => bf16::MAX.to_f64(),
        Dtype::F32 => f32::MAX as f64,
        _ => f64::MAX,
    };
    let prim = NanToNum { nan, posinf: posinf.unwrap_or(max), neginf: neginf.unwrap_or(-max) };
    Ok(Array::from_op(a.shape().to_vec(), d, prim, vec![a.clone()]))
}

/// Replaces NaN and infinities of a float array (see [`nan_to_num`]).
#[derive(Debug, PartialEq)]
pub struct NanToNum {
    /// Value for NaN.
    pub nan: f64,
    /// Value for +inf.
    pub posinf: f64,
    /// Value for -inf.
    pub neginf: f64,
}

impl Primitive for NanToNum {
    fn name(&self) -> &'static str {
        "NanToNum"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.nan_to_num(&inputs[0], self.nan, self.posinf, self.neginf, &outputs[0])?])
    }
    fn vjp(
        &self,
        primals: &[Array],
        cotangents: &[Array],
        _argnums: &[usize],
        _outputs: &[Array],
    ) -> Result<Vec<Array>> {
        // The gradient passes where x is finite and is zero where x was replaced.
        let mask = super::creation::astype(&isfinite(&primals[0])?, cotangents[0].dtype())?;
        Ok(vec![multiply(&cotangents[0], &mask)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _argnums: &[usize]) -> Result<Vec<Array>> {
        let mask = super::creation::astype(&isfinite(&primals[0])?, tangents[0].dtype())?;
        Ok(vec![multiply(&tangents[0], &mask)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let out = nan_to_num(&inputs[0], self.nan, Some(self.posinf), Some(self.neginf))?;
        Ok((vec![out], vec![axes[0]]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
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
    let d = a.dtype();
    if decimals == 0 || (!d.is_inexact() && (decimals > 0 || d == Dtype::Bool)) {
        return unary(UnaryOp::Round, a);
    }
    if !d.is_inexact() {
        // Integers with negative decimals round through float32, as MLX does.
        return super::creation::astype(&round(&super::creation::astype(a, Dtype::F32)?, decimals)?, d);
    }
    let s = 10f64.powi(decimals);
    super::binary::divide(&unary(UnaryOp::Round, &multiply(a, s)?)?, s)
}

impl Array {
    /// Elementwise `abs` (see [`abs`]).
    pub fn abs(&self) -> Result<Array> {
        abs(self)
    }
    /// Elementwise `negative` (see [`negative`]).
    pub fn negative(&self) -> Result<Array> {
        negative(self)
    }
    /// Elementwise `sign` (see [`sign`]).
    pub fn sign(&self) -> Result<Array> {
        sign(self)
    }
    /// Elementwise `floor` (see [`floor`]).
    pub fn floor(&self) -> Result<Array> {
        floor(self)
    }
    /// Elementwise `ceil` (see [`ceil`]).
    pub fn ceil(&self) -> Result<Array> {
        ceil(self)
    }
    /// Elementwise `trunc` (see [`trunc`]).
    pub fn trunc(&self) -> Result<Array> {
        trunc(self)
    }
    /// Elementwise `sqrt` (see [`sqrt`]).
    pub fn sqrt(&self) -> Result<Array> {
        sqrt(self)
    }
    /// Elementwise `rsqrt` (see [`rsqrt`]).
    pub fn rsqrt(&self) -> Result<Array> {
        rsqrt(self)
    }
    /// Elementwise `square` (see [`square`]).
    pub fn square(&self) -> Result<Array> {
        square(self)
    }
    /// Elementwise `reciprocal` (see [`reciprocal`]).
    pub fn reciprocal(&self) -> Result<Array> {
        reciprocal(self)
    }
    /// Elementwise `exp` (see [`exp`]).
    pub fn exp(&self) -> Result<Array> {
        exp(self)
    }
    /// Elementwise `expm1` (see [`expm1`]).
    pub fn expm1(&self) -> Result<Array> {
        expm1(self)
    }
    /// Elementwise `log` (see [`log`]).
    pub fn log(&self) -> Result<Array> {
        log(self)
    }
    /// Elementwise `log2` (see [`log2`]).
    pub fn log2(&self) -> Result<Array> {
        log2(self)
    }
    /// Elementwise `log10` (see [`log10`]).
    pub fn log10(&self) -> Result<Array> {
        log10(self)
    }
    /// Elementwise `log1p` (see [`log1p`]).
    pub fn log1p(&self) -> Result<Array> {
        log1p(self)
    }
    /// Elementwise `sin` (see [`sin`]).
    pub fn sin(&self) -> Result<Array> {
        sin(self)
    }
    /// Elementwise `cos` (see [`cos`]).
    pub fn cos(&self) -> Result<Array> {
        cos(self)
    }
    /// Elementwise `tan` (see [`tan`]).
    pub fn tan(&self) -> Result<Array> {
        tan(self)
    }
    /// Elementwise `arcsin` (see [`arcsin`]).
    pub fn arcsin(&self) -> Result<Array> {
        arcsin(self)
    }
    /// Elementwise `arccos` (see [`arccos`]).
    pub fn arccos(&self) -> Result<Array> {
        arccos(self)
    }
    /// Elementwise `arctan` (see [`arctan`]).
    pub fn arctan(&self) -> Result<Array> {
        arctan(self)
    }
    /// Elementwise `sinh` (see [`sinh`]).
    pub fn sinh(&self) -> Result<Array> {
        sinh(self)
    }
    /// Elementwise `cosh` (see [`cosh`]).
    pub fn cosh(&self) -> Result<Array> {
        cosh(self)
    }
    /// Elementwise `tanh` (see [`tanh`]).
    pub fn tanh(&self) -> Result<Array> {
        tanh(self)
    }
    /// Elementwise `arcsinh` (see [`arcsinh`]).
    pub fn arcsinh(&self) -> Result<Array> {
        arcsinh(self)
    }
    /// Elementwise `arccosh` (see [`arccosh`]).
    pub fn arccosh(&self) -> Result<Array> {
        arccosh(self)
    }
    /// Elementwise `arctanh` (see [`arctanh`]).
    pub fn arctanh(&self) -> Result<Array> {
        arctanh(self)
    }
    /// Elementwise `erf` (see [`erf`]).
    pub fn erf(&self) -> Result<Array> {
        erf(self)
    }
    /// Elementwise `erfinv` (see [`erfinv`]).
    pub fn erfinv(&self) -> Result<Array> {
        erfinv(self)
    }
    /// Elementwise `sigmoid` (see [`sigmoid`]).
    pub fn sigmoid(&self) -> Result<Array> {
        sigmoid(self)
    }
    /// Elementwise `conjugate` (see [`conjugate`]).
    pub fn conjugate(&self) -> Result<Array> {
        conjugate(self)
    }
    /// Elementwise `real` (see [`real`]).
    pub fn real(&self) -> Result<Array> {
        real(self)
    }
    /// Elementwise `imag` (see [`imag`]).
    pub fn imag(&self) -> Result<Array> {
        imag(self)
    }
    /// Elementwise `isnan` (see [`isnan`]).
    pub fn isnan(&self) -> Result<Array> {
        isnan(self)
    }
    /// Elementwise `isinf` (see [`isinf`]).
    pub fn isinf(&self) -> Result<Array> {
        isinf(self)
    }
    /// Elementwise `isfinite` (see [`isfinite`]).
    pub fn isfinite(&self) -> Result<Array> {
        isfinite(self)
    }
    /// Elementwise `isposinf` (see [`isposinf`]).
    pub fn isposinf(&self) -> Result<Array> {
        isposinf(self)
    }
    /// Elementwise `isneginf` (see [`isneginf`]).
    pub fn isneginf(&self) -> Result<Array> {
        isneginf(self)
    }
    /// Elementwise `logical_not` (see [`logical_not`]).
    pub fn logical_not(&self) -> Result<Array> {
        logical_not(self)
    }
    /// Elementwise `degrees` (see [`degrees`]).
    pub fn degrees(&self) -> Result<Array> {
        degrees(self)
    }
    /// Elementwise `radians` (see [`radians`]).
    pub fn radians(&self) -> Result<Array> {
        radians(self)
    }
    /// Elementwise round half to even to `decimals` places (see [`round`]).
    pub fn round(&self, decimals: i32) -> Result<Array> {
        round(self, decimals)
    }
}
