//! Elementwise binary ops with broadcasting, weak scalars and the operators
//! (`+ - * / % & | ^ << >>`, unary `!` is bitwise NOT / logical NOT for bool).
//!
//! Semantics follow MLX 0.32.4 (see the golden README). Deliberate choices
//! where MLX is undefined or silently truncates:
//! * integer (and bool) division by zero: `x // 0 = 0`, `x % 0 = x`, so
//!   `divmod` keeps `x == q*y + r`; `MIN // -1` wraps to `MIN`;
//! * shifts by a negative amount or by at least the bit width give 0 (`<<`,
//!   unsigned `>>`) or the sign fill (signed `>>`);
//! * integer `power` with a negative exponent is 0 (as MLX, even for ±1);
//! * a weak int scalar that overflows the array's dtype is an error, also for
//!   uint64 arrays (MLX wraps) and bool arrays beyond int32 (MLX truncates);
//! * bitwise ops and shifts on floats are `InvalidArgument` errors (MLX raises
//!   `RuntimeError`).

use super::creation::{astype, zeros_like};
use super::reduce::sum_to_shape;
use super::unary::{exp, log, negative};
use super::{promote_operands, Operand};
use crate::array::{Array, Data};
use crate::backend::{Backend, BinaryOp};
use crate::dtype::{to_inexact, Dtype};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::broadcast_shapes;

/// An elementwise binary primitive. Its inputs share a dtype and broadcast
/// against each other; the kernel reads them through broadcast strides, so no
/// broadcast copies are made.
#[derive(Debug, PartialEq)]
pub struct Binary {
    /// Which function.
    pub op: BinaryOp,
}

impl Primitive for Binary {
    fn name(&self) -> &'static str {
        binary_name(self.op)
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.binary(self.op, &inputs[0], &inputs[1], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        let (a, b) = (&primals[0], &primals[1]);
        if is_nondiff(self.op) {
            return argnums.iter().map(|&i| zeros_like(&primals[i])).collect();
        }
        let mut out = Vec::with_capacity(argnums.len());
        // Complex inputs follow MLX's convention: the cotangent times the conjugate partial.
        let conj = |d: &Array| if d.dtype().is_complex() { super::unary::conjugate(d) } else { Ok(d.clone()) };
        for &i in argnums {
            let gi = match (self.op, i) {
                (BinaryOp::Add, _) | (BinaryOp::Subtract, 0) => g.clone(),
                (BinaryOp::Subtract, _) => negative(g)?,
                (BinaryOp::Multiply, 0) => multiply(g, &conj(b)?)?,
                (BinaryOp::Multiply, _) => multiply(g, &conj(a)?)?,
                _ => multiply(g, &conj(&partial(self.op, a, b, Some(&outputs[0]), i)?)?)?,
            };
            out.push(sum_to_shape(&gi, primals[i].shape())?);
        }
        Ok(out)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let (a, b) = (&primals[0], &primals[1]);
        let shape = broadcast_shapes(a.shape(), b.shape())?;
        if is_nondiff(self.op) {
            return Ok(vec![super::creation::zeros(&shape, out_dtype(self.op, a.dtype()))?]);
        }
        let mut acc: Option<Array> = None;
        for (t, &i) in tangents.iter().zip(argnums) {
            let ti = match (self.op, i) {
                (BinaryOp::Add, _) | (BinaryOp::Subtract, 0) => t.clone(),
                (BinaryOp::Subtract, _) => negative(t)?,
                (BinaryOp::Multiply, 0) => multiply(t, b)?,
                (BinaryOp::Multiply, _) => multiply(t, a)?,
                _ => multiply(t, &partial(self.op, a, b, None, i)?)?,
            };
            acc = Some(match acc {
                None => ti,
                Some(p) => add(&p, &ti)?,
            });
        }
        super::shape::broadcast_to(&acc.expect("jvp needs at least one tangent"), &shape).map(|a| vec![a])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let (a, b, ax) = super::shape::align_batch_axes(&inputs[0], axes[0], &inputs[1], axes[1])?;
        Ok((vec![binary_same(self.op, &a, &b, out_dtype(self.op, a.dtype()))?], vec![ax]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![broadcast_shapes(inputs[0].shape(), inputs[1].shape())?])
    }
    crate::prim_common!();
}

/// Comparisons, logical and bitwise ops: piecewise constant, zero derivative.
fn is_nondiff(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(
        op,
        Equal
            | EqualNan
            | NotEqual
            | Greater
            | GreaterEqual
            | Less
            | LessEqual
            | LogicalAnd
            | LogicalOr
            | BitwiseAnd
            | BitwiseOr
            | BitwiseXor
            | LeftShift
            | RightShift
    )
}

/// The partial derivative of `op(a, b)` with respect to input `i`, as an
/// array broadcastable to the output (built from ops, so it differentiates
/// again). `out` is the forward output when the caller has it.
fn partial(op: BinaryOp, a: &Array, b: &Array, out: Option<&Array>, i: usize) -> Result<Array> {
    use BinaryOp::*;
    let out = || -> Result<Array> {
        match out {
            Some(o) => Ok(o.clone()),
            None => binary_same(op, a, b, out_dtype(op, a.dtype())),
        }
    };
    let mask = |m: Array| astype(&m, a.dtype());
    match (op, i) {
        (Divide, 0) => divide(1.0, b),
        (Divide, _) => negative(&divide(&out()?, b)?),
        // floor(a / b) is piecewise constant.
        (FloorDivide, _) => zeros_like(&out()?),
        (Remainder, 0) => super::creation::ones_like(&out()?),
        (Remainder, _) => negative(&floor_divide(a, b)?),
        (Power, 0) => multiply(b, &power(a, &subtract(b, 1)?)?),
        (Power, _) => multiply(&out()?, &log(a)?),
        (Maximum, 0) => mask(greater_equal(a, b)?),
        (Maximum, _) => mask(less(a, b)?),
        (Minimum, 0) => mask(less_equal(a, b)?),
        (Minimum, _) => mask(greater(a, b)?),
        (LogAddExp, 0) => exp(&subtract(a, &out()?)?),
        (LogAddExp, _) => exp(&subtract(b, &out()?)?),
        (ArcTan2, 0) => divide(b, &add(&multiply(a, a)?, &multiply(b, b)?)?),
        (ArcTan2, _) => divide(&negative(a)?, &add(&multiply(a, a)?, &multiply(b, b)?)?),
        _ => Err(Error::unsupported(binary_name(op), "no derivative rule")),
    }
}

/// MLX's Python name for a binary op (used in error messages).
pub fn op_name(op: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match op {
        Add => "add",
        Subtract => "subtract",
        Multiply => "multiply",
        Divide => "divide",
        FloorDivide => "floor_divide",
        Remainder => "remainder",
        Power => "power",
        Maximum => "maximum",
        Minimum => "minimum",
        LogAddExp => "logaddexp",
        ArcTan2 => "arctan2",
        Equal | EqualNan => "equal",
        NotEqual => "not_equal",
        Greater => "greater",
        GreaterEqual => "greater_equal",
        Less => "less",
        LessEqual => "less_equal",
        LogicalAnd => "logical_and",
        LogicalOr => "logical_or",
        BitwiseAnd => "bitwise_and",
        BitwiseOr => "bitwise_or",
        BitwiseXor => "bitwise_xor",
        LeftShift => "left_shift",
        RightShift => "right_shift",
    }
}

/// MLX's primitive name for a binary op.
pub fn binary_name(op: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match op {
        Add => "Add",
        Subtract => "Subtract",
        Multiply => "Multiply",
        Divide => "Divide",
        FloorDivide => "FloorDivide",
        Remainder => "Remainder",
        Power => "Power",
        Maximum => "Maximum",
        Minimum => "Minimum",
        LogAddExp => "LogAddExp",
        ArcTan2 => "ArcTan2",
        Equal => "Equal",
        EqualNan => "EqualNaN",
        NotEqual => "NotEqual",
        Greater => "Greater",
        GreaterEqual => "GreaterEqual",
        Less => "Less",
        LessEqual => "LessEqual",
        LogicalAnd => "LogicalAnd",
        LogicalOr => "LogicalOr",
        BitwiseAnd => "BitwiseAnd",
        BitwiseOr => "BitwiseOr",
        BitwiseXor => "BitwiseXor",
        LeftShift => "LeftShift",
        RightShift => "RightShift",
    }
}

/// Output dtype of `op` for inputs of (common) dtype `d`.
pub fn out_dtype(op: BinaryOp, d: Dtype) -> Dtype {
    use BinaryOp::*;
    match op {
        Equal | EqualNan | NotEqual | Greater | GreaterEqual | Less | LessEqual | LogicalAnd | LogicalOr => Dtype::Bool,
        _ => d,
    }
}

/// Records `op(a, b)` for arrays that already share a dtype.
pub(crate) fn binary_same(op: BinaryOp, a: &Array, b: &Array, out: Dtype) -> Result<Array> {
    let shape = if a.shape() == b.shape() {
        a.shape().to_vec()
    } else {
        broadcast_shapes(a.shape(), b.shape()).map_err(|e| Error::invalid(op_name(op), e.message().to_string()))?
    };
    Ok(Array::from_op(shape, out, Binary { op }, vec![a.clone(), b.clone()]))
}

/// The dtype an operand has before promotion (a weak scalar: its default).
fn operand_dtype(o: &Operand) -> Dtype {
    match o {
        Operand::Array(a) => a.dtype(),
        Operand::Scalar(s) => s.default_dtype(),
    }
}

/// Promotes the operands, applies `op`'s dtype rule and records it.
///
/// Dtype rules (MLX): `divide`, `logaddexp` and `arctan2` give a float
/// (integers and bools become float32); comparisons and logical ops give bool
/// (logical ops test inputs for non-zero); bitwise ops and shifts need
/// integers or bools (shifts of bools give uint8); `remainder` and `arctan2`
/// reject complex64. Everything else keeps the promoted dtype.
pub fn binary(op: BinaryOp, a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    use BinaryOp::*;
    let name = op_name(op);
    let (a, b) = (a.into(), b.into());
    if matches!(op, BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift) {
        let (da, db) = (operand_dtype(&a), operand_dtype(&b));
        if !da.is_integral() || !db.is_integral() {
            return Err(Error::invalid(
                name,
                format!("Only allowed on integer or boolean types but got types {da} and {db}."),
            ));
        }
    }
    let (a, b) = promote_operands(name, a, b)?;
    let d = a.dtype();
    let target = match op {
        Divide | LogAddExp | ArcTan2 => {
            if op == ArcTan2 && d.is_complex() {
                return Err(Error::invalid(name, format!("Not supported for {d}.")));
            }
            to_inexact(d)
        }
        Remainder if d.is_complex() => return Err(Error::invalid(name, "Complex type not supported.")),
        LeftShift | RightShift if d == Dtype::Bool => Dtype::U8,
        LogicalAnd | LogicalOr => Dtype::Bool,
        _ => d,
    };
    let (a, b) = if target != d { (astype(&a, target)?, astype(&b, target)?) } else { (a, b) };
    binary_same(op, &a, &b, out_dtype(op, target))
}

/// Elementwise `a + b` with broadcasting.
pub fn add(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Add, a, b)
}
/// Elementwise `a - b` with broadcasting.
pub fn subtract(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Subtract, a, b)
}
/// Elementwise `a * b` with broadcasting.
pub fn multiply(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Multiply, a, b)
}

/// Elementwise with broadcasting: a / b (true division: integers give float32).
pub fn divide(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Divide, a, b)
}
/// Elementwise with broadcasting: floor(a / b); integers keep their type.
pub fn floor_divide(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::FloorDivide, a, b)
}
/// Elementwise with broadcasting: a mod b with the sign of b (Python semantics).
pub fn remainder(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Remainder, a, b)
}
/// Elementwise with broadcasting: a raised to b.
pub fn power(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Power, a, b)
}
/// Elementwise with broadcasting: Larger of a and b (NaN propagates).
pub fn maximum(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Maximum, a, b)
}
/// Elementwise with broadcasting: Smaller of a and b (NaN propagates).
pub fn minimum(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Minimum, a, b)
}
/// Elementwise with broadcasting: log(e^a + e^b), computed stably.
pub fn logaddexp(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::LogAddExp, a, b)
}
/// Elementwise with broadcasting: Angle of (b, a): atan2(a, b).
pub fn arctan2(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::ArcTan2, a, b)
}
/// Elementwise with broadcasting: a == b.
pub fn equal(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Equal, a, b)
}
/// Elementwise with broadcasting: a != b.
pub fn not_equal(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::NotEqual, a, b)
}
/// Elementwise with broadcasting: a > b.
pub fn greater(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Greater, a, b)
}
/// Elementwise with broadcasting: a >= b.
pub fn greater_equal(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::GreaterEqual, a, b)
}
/// Elementwise with broadcasting: a < b.
pub fn less(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::Less, a, b)
}
/// Elementwise with broadcasting: a <= b.
pub fn less_equal(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::LessEqual, a, b)
}
/// Elementwise with broadcasting: Logical AND (non-zero is true).
pub fn logical_and(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::LogicalAnd, a, b)
}
/// Elementwise with broadcasting: Logical OR (non-zero is true).
pub fn logical_or(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::LogicalOr, a, b)
}
/// Elementwise with broadcasting: Bitwise AND.
pub fn bitwise_and(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::BitwiseAnd, a, b)
}
/// Elementwise with broadcasting: Bitwise OR.
pub fn bitwise_or(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::BitwiseOr, a, b)
}
/// Elementwise with broadcasting: Bitwise XOR.
pub fn bitwise_xor(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::BitwiseXor, a, b)
}
/// Elementwise with broadcasting: a << b.
pub fn left_shift(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::LeftShift, a, b)
}
/// Elementwise with broadcasting: a >> b.
pub fn right_shift(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    binary(BinaryOp::RightShift, a, b)
}

/// Elementwise with broadcasting: logical XOR (non-zero is true).
pub fn logical_xor(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    let (a, b) = promote_operands("logical_xor", a.into(), b.into())?;
    let (a, b) = (astype(&a, Dtype::Bool)?, astype(&b, Dtype::Bool)?);
    binary_same(BinaryOp::NotEqual, &a, &b, Dtype::Bool)
}

/// `divmod`: the floor quotient and the remainder as one primitive with two
/// sibling outputs, computed in one evaluation.
#[derive(Debug, PartialEq)]
pub struct DivMod;

impl Primitive for DivMod {
    fn name(&self) -> &'static str {
        "DivMod"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        // Both outputs read both inputs: the extra handles stop the first
        // kernel from donating (overwriting) an input the second still needs.
        let pinned = inputs.to_vec();
        let q = backend.binary(BinaryOp::FloorDivide, &pinned[0], &pinned[1], &outputs[0])?;
        let r = backend.binary(BinaryOp::Remainder, &pinned[0], &pinned[1], &outputs[1])?;
        Ok(vec![q, r])
    }
    fn vjp(
        &self,
        primals: &[Array],
        cotangents: &[Array],
        argnums: &[usize],
        _outputs: &[Array],
    ) -> Result<Vec<Array>> {
        // The quotient is piecewise constant; r = a - b * floor(a / b). The
        // quotient is recomputed: its output may have been dropped.
        let gr = &cotangents[1];
        argnums
            .iter()
            .map(|&i| {
                let g = if i == 0 {
                    gr.clone()
                } else {
                    multiply(gr, &negative(&floor_divide(&primals[0], &primals[1])?)?)?
                };
                sum_to_shape(&g, primals[i].shape())
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let (a, b) = (&primals[0], &primals[1]);
        let shape = broadcast_shapes(a.shape(), b.shape())?;
        let q = floor_divide(a, b)?;
        let mut tr: Option<Array> = None;
        for (t, &i) in tangents.iter().zip(argnums) {
            let ti = if i == 0 { t.clone() } else { multiply(t, &negative(&q)?)? };
            tr = Some(match tr {
                None => ti,
                Some(p) => add(&p, &ti)?,
            });
        }
        let tr = super::shape::broadcast_to(&tr.expect("jvp needs at least one tangent"), &shape)?;
        Ok(vec![super::creation::zeros(&shape, a.dtype())?, tr])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let (a, b, ax) = super::shape::align_batch_axes(&inputs[0], axes[0], &inputs[1], axes[1])?;
        let (q, r) = divmod(&a, &b)?;
        Ok((vec![q, r], vec![ax, ax]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let s = broadcast_shapes(inputs[0].shape(), inputs[1].shape())?;
        Ok(vec![s.clone(), s])
    }
    crate::prim_common!();
}

/// `(floor_divide(a, b), remainder(a, b))` with broadcasting (Python
/// semantics; complex inputs are rejected). The two results are sibling
/// outputs of one `DivMod` primitive.
pub fn divmod(a: impl Into<Operand>, b: impl Into<Operand>) -> Result<(Array, Array)> {
    let (a, b) = promote_operands("divmod", a.into(), b.into())?;
    if a.dtype().is_complex() {
        return Err(Error::invalid("divmod", "Complex type not supported."));
    }
    let d = a.dtype();
    let shape =
        broadcast_shapes(a.shape(), b.shape()).map_err(|e| Error::invalid("divmod", e.message().to_string()))?;
    let mut outs = Array::from_op_multi(vec![(shape.clone(), d), (shape, d)], std::sync::Arc::new(DivMod), vec![a, b]);
    let r = outs.pop().expect("two outputs");
    let q = outs.pop().expect("two outputs");
    Ok((q, r))
}

macro_rules! operator {
    ($tr:ident, $m:ident, $f:ident) => {
        impl std::ops::$tr<&Array> for &Array {
            type Output = Array;
            fn $m(self, rhs: &Array) -> Array {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<Array> for Array {
            type Output = Array;
            fn $m(self, rhs: Array) -> Array {
                $f(&self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<&Array> for Array {
            type Output = Array;
            fn $m(self, rhs: &Array) -> Array {
                $f(&self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<Array> for &Array {
            type Output = Array;
            fn $m(self, rhs: Array) -> Array {
                $f(self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        // Only one float and one integer type, so literals (`&a * 2.0`, `&a + 1`) infer.
        operator!(@scalars $tr, $m, $f, f64, i32, bool);
    };
    (@scalars $tr:ident, $m:ident, $f:ident, $($t:ty),*) => {$(
        impl std::ops::$tr<$t> for &Array {
            type Output = Array;
            fn $m(self, rhs: $t) -> Array {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<$t> for Array {
            type Output = Array;
            fn $m(self, rhs: $t) -> Array {
                $f(&self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<&Array> for $t {
            type Output = Array;
            fn $m(self, rhs: &Array) -> Array {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<Array> for $t {
            type Output = Array;
            fn $m(self, rhs: Array) -> Array {
                $f(self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    )*};
}
operator!(Add, add, add);
operator!(Sub, sub, subtract);
operator!(Mul, mul, multiply);
operator!(Div, div, divide);
operator!(Rem, rem, remainder);
operator!(BitAnd, bitand, bitwise_and);
operator!(BitOr, bitor, bitwise_or);
operator!(BitXor, bitxor, bitwise_xor);
operator!(Shl, shl, left_shift);
operator!(Shr, shr, right_shift);

/// `!a`: bitwise NOT for integers, logical NOT for bools (MLX's `~`).
impl std::ops::Not for &Array {
    type Output = Array;
    fn not(self) -> Array {
        super::unary::bitwise_invert(self).unwrap_or_else(|e| panic!("{e}"))
    }
}
impl std::ops::Not for Array {
    type Output = Array;
    fn not(self) -> Array {
        super::unary::bitwise_invert(&self).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl std::ops::Neg for &Array {
    type Output = Array;
    fn neg(self) -> Array {
        super::unary::negative(self).unwrap_or_else(|e| panic!("{e}"))
    }
}
impl std::ops::Neg for Array {
    type Output = Array;
    fn neg(self) -> Array {
        super::unary::negative(&self).unwrap_or_else(|e| panic!("{e}"))
    }
}
