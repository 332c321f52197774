//! Elementwise binary ops with broadcasting, weak scalars and the arithmetic operators.

use super::{promote_operands, Operand};
use crate::array::{Array, Data};
use crate::backend::{Backend, BinaryOp};
use crate::dtype::Dtype;
use crate::error::Result;
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
    fn vjp(
        &self,
        primals: &[Array],
        cotangents: &[Array],
        argnums: &[usize],
        _outputs: &[Array],
    ) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        let mut out = Vec::with_capacity(argnums.len());
        for &i in argnums {
            let gi = match (self.op, i) {
                (BinaryOp::Add, _) => g.clone(),
                (BinaryOp::Subtract, 0) => g.clone(),
                (BinaryOp::Subtract, _) => super::unary::negative(g)?,
                (BinaryOp::Multiply, 0) => multiply(g, &primals[1])?,
                (BinaryOp::Multiply, _) => multiply(g, &primals[0])?,
                _ => return Err(self.missing("vjp")),
            };
            out.push(super::reduce::sum_to_shape(&gi, primals[i].shape())?);
        }
        Ok(out)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let mut acc: Option<Array> = None;
        for (t, &i) in tangents.iter().zip(argnums) {
            let ti = match (self.op, i) {
                (BinaryOp::Add, _) => t.clone(),
                (BinaryOp::Subtract, 0) => t.clone(),
                (BinaryOp::Subtract, _) => super::unary::negative(t)?,
                (BinaryOp::Multiply, 0) => multiply(t, &primals[1])?,
                (BinaryOp::Multiply, _) => multiply(t, &primals[0])?,
                _ => return Err(self.missing("jvp")),
            };
            acc = Some(match acc {
                None => ti,
                Some(a) => add(&a, &ti)?,
            });
        }
        let shape = broadcast_shapes(primals[0].shape(), primals[1].shape())?;
        super::shape::broadcast_to(&acc.expect("jvp needs at least one tangent"), &shape).map(|a| vec![a])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let (a, b, ax) = super::shape::align_batch_axes(&inputs[0], axes[0], &inputs[1], axes[1])?;
        Ok((vec![binary_same(self.op, &a, &b, out_dtype(self.op, a.dtype()))?], vec![ax]))
    }
    crate::prim_common!();
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
    let shape = broadcast_shapes(a.shape(), b.shape())
        .map_err(|e| crate::error::Error::invalid(binary_name(op).to_lowercase(), e.message().to_string()))?;
    Ok(Array::from_op(shape, out, Binary { op }, vec![a.clone(), b.clone()]))
}

/// Promotes the operands and records `op`.
pub fn binary(op: BinaryOp, a: impl Into<Operand>, b: impl Into<Operand>) -> Result<Array> {
    let name = binary_name(op).to_lowercase();
    let (a, b) = promote_operands(&name, a.into(), b.into())?;
    let d = a.dtype();
    binary_same(op, &a, &b, out_dtype(op, d))
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
