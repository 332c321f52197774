//! The op set. Each file holds a family of primitives together with their
//! public functions, shape/dtype rules, kernel dispatch and transform rules.

pub mod binary;
pub mod compare;
pub mod conv;
pub mod creation;
pub mod fast;
pub mod fft;
pub mod fused;
pub mod index_api;
pub mod indexing;
pub mod linalg;
pub mod matmul;
pub mod quantized;
pub use quantized::*;
pub mod random;
pub mod reduce;
pub mod scan;
pub mod shape;
pub mod slicing;
pub use matmul::*;
pub mod sort;
pub mod unary;

pub use binary::*;
pub use compare::*;
pub use conv::*;
pub use creation::*;
pub use index_api::*;
pub use indexing::*;
pub use reduce::*;
pub use scan::*;
pub use shape::*;
pub use slicing::*;
pub use sort::*;
pub use unary::*;

use crate::array::Array;
use crate::dtype::{Dtype, Kind, Scalar};
use crate::error::{Error, Result};

/// Which axes an op works over: all of them, or a list (negative counts from the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// Every axis.
    All,
    /// These axes.
    List(Vec<i32>),
}

impl Axes {
    /// Resolves to sorted, unique, non-negative axes for rank `ndim`.
    pub fn resolve(&self, op: &str, ndim: usize) -> Result<Vec<usize>> {
        match self {
            Axes::All => Ok((0..ndim).collect()),
            Axes::List(v) => crate::shape::normalize_axes(op, v, ndim),
        }
    }
}

impl From<i32> for Axes {
    fn from(a: i32) -> Self {
        Axes::List(vec![a])
    }
}
impl From<&[i32]> for Axes {
    fn from(a: &[i32]) -> Self {
        Axes::List(a.to_vec())
    }
}
impl<const N: usize> From<[i32; N]> for Axes {
    fn from(a: [i32; N]) -> Self {
        Axes::List(a.to_vec())
    }
}
impl<const N: usize> From<&[i32; N]> for Axes {
    fn from(a: &[i32; N]) -> Self {
        Axes::List(a.to_vec())
    }
}
impl From<Vec<i32>> for Axes {
    fn from(a: Vec<i32>) -> Self {
        Axes::List(a)
    }
}
impl From<Option<i32>> for Axes {
    fn from(a: Option<i32>) -> Self {
        match a {
            Some(a) => Axes::List(vec![a]),
            None => Axes::All,
        }
    }
}

/// An operand of a binary op: an array, or a weakly typed Rust scalar that
/// adopts the array's dtype as MLX's Python scalars do (`&a_f16 + 1.5` stays
/// f16; `&a_i8 + 1000` is an overflow error).
#[derive(Clone, Debug)]
pub enum Operand {
    /// An array (strongly typed).
    Array(Array),
    /// A weakly typed scalar.
    Scalar(Scalar),
}

impl From<&Array> for Operand {
    fn from(a: &Array) -> Self {
        Operand::Array(a.clone())
    }
}
impl From<Array> for Operand {
    fn from(a: Array) -> Self {
        Operand::Array(a)
    }
}
impl From<&&Array> for Operand {
    fn from(a: &&Array) -> Self {
        Operand::Array((*a).clone())
    }
}
macro_rules! operand_from_scalar {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand {
            fn from(x: $t) -> Self { Operand::Scalar(Scalar::from(x)) }
        }
    )*};
}
operand_from_scalar!(bool, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);
impl From<Scalar> for Operand {
    fn from(s: Scalar) -> Self {
        Operand::Scalar(s)
    }
}

/// The dtype a weak scalar takes next to an array of dtype `d`, or an
/// overflow error for an integer that does not fit.
pub(crate) fn weak_scalar_dtype(op: &str, s: Scalar, d: Dtype) -> Result<Dtype> {
    Ok(match (s, d.kind()) {
        (Scalar::Complex(..), _) => Dtype::C64,
        (_, Kind::Complex) => Dtype::C64,
        (Scalar::Float(_), Kind::Float) => d,
        (Scalar::Float(_), _) => Dtype::F32,
        (Scalar::Bool(_), _) => d,
        // MLX silently truncates an int scalar beyond int32 next to a bool
        // array; Kiln reports the overflow instead.
        (Scalar::Int(i), Kind::Bool) => {
            if i32::try_from(i).is_err() {
                return Err(Error::invalid(op, format!("Converting {i} to int32 would result in overflow.")));
            }
            Dtype::I32
        }
        (Scalar::UInt(u), Kind::Bool) => {
            return Err(Error::invalid(op, format!("Converting {u} to int32 would result in overflow.")))
        }
        (Scalar::Int(_) | Scalar::UInt(_), Kind::Float) => d,
        (Scalar::Int(i), Kind::Signed | Kind::Unsigned) => {
            let (lo, hi): (i128, i128) = match d {
                Dtype::I8 => (i8::MIN as i128, i8::MAX as i128),
                Dtype::I16 => (i16::MIN as i128, i16::MAX as i128),
                Dtype::I32 => (i32::MIN as i128, i32::MAX as i128),
                Dtype::I64 => (i64::MIN as i128, i64::MAX as i128),
                Dtype::U8 => (0, u8::MAX as i128),
                Dtype::U16 => (0, u16::MAX as i128),
                Dtype::U32 => (0, u32::MAX as i128),
                _ => (0, u64::MAX as i128),
            };
            if (i as i128) < lo || (i as i128) > hi {
                return Err(Error::invalid(op, format!("Converting {i} to {d} would result in overflow.")));
            }
            d
        }
        (Scalar::UInt(u), Kind::Signed | Kind::Unsigned) => {
            if d != Dtype::U64 {
                return Err(Error::invalid(op, format!("Converting {u} to {d} would result in overflow.")));
            }
            d
        }
    })
}

/// Resolves two operands to arrays of their common dtype (weak scalars adopt
/// the array's dtype; two scalars use MLX's default scalar dtypes).
pub(crate) fn promote_operands(op: &str, a: Operand, b: Operand) -> Result<(Array, Array)> {
    match (a, b) {
        (Operand::Array(a), Operand::Array(b)) => {
            let d = crate::dtype::promote_types(a.dtype(), b.dtype());
            Ok((astype(&a, d)?, astype(&b, d)?))
        }
        (Operand::Array(a), Operand::Scalar(s)) => {
            let d = weak_scalar_dtype(op, s, a.dtype())?;
            Ok((astype(&a, d)?, Array::scalar_as(s, d)))
        }
        (Operand::Scalar(s), Operand::Array(b)) => {
            let d = weak_scalar_dtype(op, s, b.dtype())?;
            Ok((Array::scalar_as(s, d), astype(&b, d)?))
        }
        (Operand::Scalar(x), Operand::Scalar(y)) => {
            let d = crate::dtype::promote_types(x.default_dtype(), y.default_dtype());
            Ok((Array::scalar_as(x, d), Array::scalar_as(y, d)))
        }
    }
}

impl Operand {
    /// The operand as an array (a weak scalar takes its default dtype).
    pub fn into_array(self) -> Array {
        match self {
            Operand::Array(a) => a,
            Operand::Scalar(s) => Array::scalar_as(s, s.default_dtype()),
        }
    }
}
