//! Data types, MLX's promotion table, and the element trait kernels are generic over.

use std::fmt;

pub use half::{bf16, f16};
/// Complex number with `f32` parts (MLX's `complex64`).
#[allow(non_camel_case_types)]
pub type c64 = num_complex::Complex<f32>;

/// The 14 element types of Kiln, in MLX's order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Dtype {
    /// Boolean, one byte per element.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BF16,
    /// Complex with two `f32` parts.
    C64,
}

/// Coarse classes of dtypes, used by op validation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// Unsigned integers.
    Unsigned,
    /// Signed integers.
    Signed,
    /// Real floating point (f16, bf16, f32, f64).
    Float,
    /// `complex64`.
    Complex,
}

use Dtype::*;

/// All dtypes, in MLX's order (the order of the promotion table).
pub const ALL_DTYPES: [Dtype; 14] = [Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, BF16, C64];

// MLX's promotion table (a JAX-style lattice), rows and columns in ALL_DTYPES order.
const PROMOTE: [[Dtype; 14]; 14] = [
    [Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, BF16, C64],
    [U8, U8, U16, U32, U64, I16, I16, I32, I64, F16, F32, F64, BF16, C64],
    [U16, U16, U16, U32, U64, I32, I32, I32, I64, F16, F32, F64, BF16, C64],
    [U32, U32, U32, U32, U64, I64, I64, I64, I64, F16, F32, F64, BF16, C64],
    [U64, U64, U64, U64, U64, F32, F32, F32, F32, F16, F32, F64, BF16, C64],
    [I8, I16, I32, I64, F32, I8, I16, I32, I64, F16, F32, F64, BF16, C64],
    [I16, I16, I32, I64, F32, I16, I16, I32, I64, F16, F32, F64, BF16, C64],
    [I32, I32, I32, I64, F32, I32, I32, I32, I64, F16, F32, F64, BF16, C64],
    [I64, I64, I64, I64, F32, I64, I64, I64, I64, F16, F32, F64, BF16, C64],
    [F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, F32, F64, F32, C64],
    [F32, F32, F32, F32, F32, F32, F32, F32, F32, F32, F32, F64, F32, C64],
    [F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, C64],
    [BF16, BF16, BF16, BF16, BF16, BF16, BF16, BF16, BF16, F32, F32, F64, BF16, C64],
    [C64, C64, C64, C64, C64, C64, C64, C64, C64, C64, C64, C64, C64, C64],
];

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Bool | U8 | I8 => 1,
            U16 | I16 | F16 | BF16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | C64 => 8,
        }
    }
    /// MLX's name for the dtype (`float32`, `bfloat16`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Bool => "bool",
            U8 => "uint8",
            U16 => "uint16",
            U32 => "uint32",
            U64 => "uint64",
            I8 => "int8",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            F16 => "float16",
            F32 => "float32",
            F64 => "float64",
            BF16 => "bfloat16",
            C64 => "complex64",
        }
    }
    /// Parses an MLX dtype name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        ALL_DTYPES.iter().copied().find(|d| d.name() == name)
    }
    /// The dtype's kind.
    pub const fn kind(self) -> Kind {
        match self {
            Bool => Kind::Bool,
            U8 | U16 | U32 | U64 => Kind::Unsigned,
            I8 | I16 | I32 | I64 => Kind::Signed,
            F16 | F32 | F64 | BF16 => Kind::Float,
            C64 => Kind::Complex,
        }
    }
    /// Position in [`ALL_DTYPES`].
    pub const fn index(self) -> usize {
        self as usize
    }
    /// Real floating point (f16, bf16, f32, f64).
    pub const fn is_floating(self) -> bool {
        matches!(self.kind(), Kind::Float)
    }
    /// Floating or complex (MLX's `inexact`).
    pub const fn is_inexact(self) -> bool {
        matches!(self.kind(), Kind::Float | Kind::Complex)
    }
    /// `complex64`.
    pub const fn is_complex(self) -> bool {
        matches!(self, C64)
    }
    /// Signed or unsigned integer (not bool).
    pub const fn is_integer(self) -> bool {
        matches!(self.kind(), Kind::Signed | Kind::Unsigned)
    }
    /// Signed integer.
    pub const fn is_signed_integer(self) -> bool {
        matches!(self.kind(), Kind::Signed)
    }
    /// Unsigned integer.
    pub const fn is_unsigned(self) -> bool {
        matches!(self.kind(), Kind::Unsigned)
    }
    /// Bool or integer: the dtypes bitwise ops accept.
    pub const fn is_integral(self) -> bool {
        matches!(self.kind(), Kind::Bool | Kind::Signed | Kind::Unsigned)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The dtype two arrays promote to under MLX's rules.
pub fn promote_types(a: Dtype, b: Dtype) -> Dtype {
    PROMOTE[a.index()][b.index()]
}

/// The dtype a list of arrays promotes to (`result_type`); `None` for an empty list.
pub fn result_type(dtypes: &[Dtype]) -> Option<Dtype> {
    let mut it = dtypes.iter().copied();
    let first = it.next()?;
    Some(it.fold(first, promote_types))
}

/// Output dtype of an inexact op (sqrt, exp, division…): floats keep their type, others become f32.
pub fn to_inexact(d: Dtype) -> Dtype {
    if d.is_inexact() {
        d
    } else {
        F32
    }
}

/// A host scalar of any dtype family, used by `full`, weak scalars and `item`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A real float.
    Float(f64),
    /// A complex number.
    Complex(f64, f64),
}

impl Scalar {
    /// The scalar as f64 (real part for complex, 0/1 for bool).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => b as u8 as f64,
            Scalar::Int(i) => i as f64,
            Scalar::UInt(u) => u as f64,
            Scalar::Float(f) => f,
            Scalar::Complex(r, _) => r,
        }
    }
    /// The dtype MLX gives this scalar on its own (`array(1)` is int32, `array(1.0)` float32).
    pub fn default_dtype(self) -> Dtype {
        match self {
            Scalar::Bool(_) => Bool,
            Scalar::Int(i) if i32::try_from(i).is_ok() => I32,
            Scalar::Int(_) => I64,
            Scalar::UInt(_) => U64,
            Scalar::Float(_) => F32,
            Scalar::Complex(..) => C64,
        }
    }
}

macro_rules! scalar_from {
    ($($t:ty => $v:ident as $c:ty),*) => {$(
        impl From<$t> for Scalar { fn from(x: $t) -> Self { Scalar::$v(x as $c) } }
    )*};
}
scalar_from!(i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
             u8 => Int as i64, u16 => Int as i64, u32 => Int as i64, f32 => Float as f64, f64 => Float as f64);
impl From<bool> for Scalar {
    fn from(x: bool) -> Self {
        Scalar::Bool(x)
    }
}
impl From<u64> for Scalar {
    fn from(x: u64) -> Self {
        match i64::try_from(x) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(x),
        }
    }
}
impl From<f16> for Scalar {
    fn from(x: f16) -> Self {
        Scalar::Float(x.to_f64())
    }
}
impl From<bf16> for Scalar {
    fn from(x: bf16) -> Self {
        Scalar::Float(x.to_f64())
    }
}
impl From<c64> for Scalar {
    fn from(x: c64) -> Self {
        Scalar::Complex(x.re as f64, x.im as f64)
    }
}

/// A Rust type that stores one element of a Kiln dtype.
///
/// The conversions implement C-style casts as MLX does them: float→int truncates
/// (saturating), int→int wraps, anything→bool tests for non-zero, complex→real
/// keeps the real part.
pub trait Element: Copy + Send + Sync + PartialEq + fmt::Debug + Default + 'static {
    /// The matching dtype.
    const DTYPE: Dtype;
    /// Widen to f64 (real part for complex).
    fn to_f64(self) -> f64;
    /// Widen to i64 (truncating floats; wrapping u64).
    fn to_i64(self) -> i64;
    /// Widen to u64 (truncating floats; wrapping negatives).
    fn to_u64(self) -> u64;
    /// Widen to complex.
    fn to_c64(self) -> c64 {
        c64::new(self.to_f64() as f32, 0.0)
    }
    /// Narrow from f64.
    fn from_f64(x: f64) -> Self;
    /// Narrow from i64.
    fn from_i64(x: i64) -> Self;
    /// Narrow from u64.
    fn from_u64(x: u64) -> Self;
    /// Narrow from complex (drops the imaginary part for real types).
    fn from_c64(x: c64) -> Self {
        Self::from_f64(x.re as f64)
    }
    /// Converts from any other element type with MLX cast semantics.
    #[inline(always)]
    fn cast_from<T: Element>(x: T) -> Self {
        match T::DTYPE.kind() {
            Kind::Complex => Self::from_c64(x.to_c64()),
            Kind::Float => Self::from_f64(x.to_f64()),
            Kind::Unsigned => Self::from_u64(x.to_u64()),
            Kind::Signed | Kind::Bool => Self::from_i64(x.to_i64()),
        }
    }
    /// This element as a [`Scalar`].
    fn to_scalar(self) -> Scalar;
}

macro_rules! int_element {
    ($t:ty, $d:ident, $v:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                self as u64
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                if <$t>::BITS <= 32 {
                    // The saturating result of `as` (NaN -> 0), written as a
                    // select, clamp and truncation: LLVM vectorises this,
                    // while it scalarises the saturating cast.
                    let c = if x.is_nan() { 0.0 } else { x.max(<$t>::MIN as f64).min(<$t>::MAX as f64) };
                    // SAFETY: `c` is finite and within the type's range (both
                    // bounds are exact in f64 for integers of at most 32 bits).
                    unsafe { c.to_int_unchecked::<$t>() }
                } else {
                    x as $t
                }
            }
            #[inline(always)]
            fn from_i64(x: i64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn from_u64(x: u64) -> Self {
                x as $t
            }
            fn to_scalar(self) -> Scalar {
                Scalar::from(self)
            }
        }
    };
}
int_element!(u8, U8, Int);
int_element!(u16, U16, Int);
int_element!(u32, U32, Int);
int_element!(u64, U64, UInt);
int_element!(i8, I8, Int);
int_element!(i16, I16, Int);
int_element!(i32, I32, Int);
int_element!(i64, I64, Int);

impl Element for bool {
    const DTYPE: Dtype = Bool;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self as u64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x != 0.0
    }
    #[inline(always)]
    fn from_i64(x: i64) -> Self {
        x != 0
    }
    #[inline(always)]
    fn from_u64(x: u64) -> Self {
        x != 0
    }
    #[inline(always)]
    fn from_c64(x: c64) -> Self {
        x.re != 0.0 || x.im != 0.0
    }
    fn to_scalar(self) -> Scalar {
        Scalar::Bool(self)
    }
}

macro_rules! float_element {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                ($to)(self) as i64
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                let v: f64 = ($to)(self);
                // Negative floats cast through i64 so -1.0 wraps like C does on x86.
                if v < 0.0 {
                    v as i64 as u64
                } else {
                    v as u64
                }
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                ($from)(x)
            }
            #[inline(always)]
            fn from_i64(x: i64) -> Self {
                ($from)(x as f64)
            }
            #[inline(always)]
            fn from_u64(x: u64) -> Self {
                ($from)(x as f64)
            }
            fn to_scalar(self) -> Scalar {
                Scalar::Float(($to)(self))
            }
        }
    };
}
float_element!(f32, F32, |x: f32| x as f64, |x: f64| x as f32);
float_element!(f64, F64, |x: f64| x, |x: f64| x);
float_element!(f16, F16, |x: f16| x.to_f64(), f16::from_f64);
float_element!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64);

impl Element for c64 {
    const DTYPE: Dtype = C64;
    fn to_f64(self) -> f64 {
        self.re as f64
    }
    fn to_i64(self) -> i64 {
        self.re as i64
    }
    fn to_u64(self) -> u64 {
        self.re as u64
    }
    fn to_c64(self) -> c64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        c64::new(x as f32, 0.0)
    }
    fn from_i64(x: i64) -> Self {
        c64::new(x as f32, 0.0)
    }
    fn from_u64(x: u64) -> Self {
        c64::new(x as f32, 0.0)
    }
    fn from_c64(x: c64) -> Self {
        x
    }
    fn to_scalar(self) -> Scalar {
        Scalar::Complex(self.re as f64, self.im as f64)
    }
}

/// Runs `$body` with `$T` bound to the element type of `$dtype`.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {{
        use $crate::dtype::Dtype as __D;
        match $dtype {
            __D::Bool => {
                type $T = bool;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::F16 => {
                type $T = $crate::dtype::f16;
                $body
            }
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::BF16 => {
                type $T = $crate::dtype::bf16;
                $body
            }
            __D::C64 => {
                type $T = $crate::dtype::c64;
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_is_symmetric_and_notable_cells_hold() {
        for a in ALL_DTYPES {
            for b in ALL_DTYPES {
                assert_eq!(promote_types(a, b), promote_types(b, a), "{a} {b}");
            }
            assert_eq!(promote_types(a, a), a);
        }
        assert_eq!(promote_types(Bool, I8), I8);
        assert_eq!(promote_types(I32, F16), F16);
        assert_eq!(promote_types(U32, I32), I64);
        assert_eq!(promote_types(U64, I8), F32);
        assert_eq!(promote_types(F16, BF16), F32);
        assert_eq!(promote_types(F64, C64), C64);
    }

    #[test]
    fn casts_follow_c_semantics() {
        assert_eq!(i8::cast_from(200i32), -56);
        assert_eq!(i32::cast_from(-2.7f32), -2);
        assert!(bool::cast_from(0.5f32));
        assert_eq!(u8::cast_from(true), 1);
        assert_eq!(f32::cast_from(c64::new(2.0, 3.0)), 2.0);
        assert_eq!(f16::cast_from(1.5f64), f16::from_f32(1.5));
        // Float to int saturates and maps NaN to 0, like `as`.
        for v in [f64::NAN, f64::INFINITY, -1e300, -129.7, -2.5, 0.0, 2.9, 255.5, 1e10] {
            assert_eq!(i8::from_f64(v), v as i8, "{v}");
            assert_eq!(u8::from_f64(v), v as u8, "{v}");
            assert_eq!(i32::from_f64(v), v as i32, "{v}");
            assert_eq!(u32::from_f64(v), v as u32, "{v}");
            assert_eq!(i64::from_f64(v), v as i64, "{v}");
        }
    }
}
