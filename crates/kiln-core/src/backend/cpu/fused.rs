//! The fused elementwise kernel: a tiled interpreter.
//!
//! The output is processed in tiles of [`TILE`] elements. For each tile every
//! input is made available as a register (read in place when it is dense and
//! already in its compute type, otherwise converted or gathered through its
//! broadcast strides into a slot; size-1 inputs are splat once per thread
//! chunk), then each instruction runs as a vectorised loop over the tile into
//! its own slot, and the outputs are written. Slots are reused once their
//! register is dead, so a program touches a few KiB that stay in L1; memory
//! sees one read of each input and one write of each output.
//!
//! Compute types: f32 for f32/f16/bf16 (half results are rounded to their
//! dtype after every instruction, exactly as the unfused kernels round when
//! they store), f64, and bool. Each op uses the same per-element function as
//! the unfused kernel ([`super::math`] for f32 transcendentals, `std` for
//! f64), so results are bit-identical to the unfused graph.

use super::math as m;
use super::simd::{parallel_for, SendPtr};
use super::strided::{alloc_out, strides_for, Rows};
use crate::array::{Array, Data};
use crate::backend::{BinaryOp, UnaryOp};
use crate::dtype::{bf16, f16, Dtype};
use crate::error::{Error, Result};
use crate::ops::fused::{FusedOp, FusedProgram};
use crate::primitive::OutSpec;
use crate::shape::numel;
use half::slice::HalfFloatSliceExt;

/// Elements per tile.
const TILE: usize = 1024;

/// Compute class of a register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// f32 values (f16/bf16 registers hold exactly representable values).
    F,
    /// f64.
    D,
    /// bool.
    B,
}

fn class(d: Dtype) -> Result<Class> {
    Ok(match d {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Class::F,
        Dtype::F64 => Class::D,
        Dtype::Bool => Class::B,
        _ => return Err(Error::unsupported("Fused", format!("No fused CPU kernel for {d}."))),
    })
}

fn csize(c: Class) -> usize {
    match c {
        Class::F => 4,
        Class::D => 8,
        Class::B => 1,
    }
}

/// One cache line of slot storage (keeps slots 64-byte aligned).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const SLOT_LINES: usize = TILE * 8 / 64;
const SLOT_BYTES: usize = SLOT_LINES * 64;

/// Where a register lives during a tile.
#[derive(Clone, Copy, Debug)]
enum Loc {
    /// In the input buffer at the tile's position (dense, compute-typed input).
    Direct(usize),
    /// In a slot.
    Slot(usize),
    /// In output `k`'s buffer at the tile's position.
    Out(usize),
}

/// How an input is brought into its register.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    /// Read in place.
    Direct,
    /// A single element splat into the slot once per chunk.
    Splat,
    /// Converted (dense half) or gathered (strided/broadcast) per tile.
    Load,
}

/// `op` over `len` elements: plain loops the compiler vectorises.
mod loops {
    crate::multiversion! {
        pub fn map<S: Copy, D: Copy, F: Fn(S) -> D>(src: &[S], dst: &mut [D], f: F) {
            for (o, &x) in dst.iter_mut().zip(src) {
                *o = f(x);
            }
        }
    }
    crate::multiversion! {
        pub fn zip<S: Copy, D: Copy, F: Fn(S, S) -> D>(a: &[S], b: &[S], dst: &mut [D], f: F) {
            for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
    }
    crate::multiversion! {
        pub fn select<T: Copy>(c: &[bool], x: &[T], y: &[T], o: &mut [T]) {
            for (((o, &c), &x), &y) in o.iter_mut().zip(c).zip(x).zip(y) {
                *o = if c { x } else { y };
            }
        }
    }
}

/// Recomputes sin/cos/tan of huge arguments with `std` in f64 (as the unfused kernel does).
fn trig_fixup(src: &[f32], dst: &mut [f32], f: fn(f64) -> f64) {
    if !src.iter().any(|&x| m::trig_needs_fixup(x)) {
        return;
    }
    for (o, &x) in dst.iter_mut().zip(src) {
        if m::trig_needs_fixup(x) {
            *o = f(x as f64) as f32;
        }
    }
}

#[inline(always)]
fn max_nan<T: PartialOrd + Copy>(x: T, y: T, nan: bool) -> T {
    if x > y || nan {
        x
    } else {
        y
    }
}
#[inline(always)]
fn min_nan<T: PartialOrd + Copy>(x: T, y: T, nan: bool) -> T {
    if x < y || nan {
        x
    } else {
        y
    }
}

macro_rules! float_impl {
    ($T:ident, $unary:ident, $binary:ident, $pred:ident) => {
        /// Unary op on a float tile; false if the op is not a same-type float op.
        fn $unary(op: UnaryOp, s: &[$T], d: &mut [$T]) -> bool {
            use UnaryOp::*;
            use loops::map;
            match op {
                Abs => map(s, d, |v: $T| v.abs()),
                Negative => map(s, d, |v: $T| -v),
                Sign => map(s, d, |v: $T| (v > 0.0) as u8 as $T - (v < 0.0) as u8 as $T),
                Floor => map(s, d, |v: $T| v.floor()),
                Ceil => map(s, d, |v: $T| v.ceil()),
                Round => map(s, d, |v: $T| v.round_ties_even()),
                Trunc => map(s, d, |v: $T| v.trunc()),
                Sqrt => map(s, d, |v: $T| v.sqrt()),
                Rsqrt => map(s, d, |v: $T| 1.0 / v.sqrt()),
                Square => map(s, d, |v: $T| v * v),
                Reciprocal => map(s, d, |v: $T| 1.0 / v),
                Conjugate | Real => d.copy_from_slice(s),
                Imag => d.fill(0.0),
                _ => return float_impl!(@trans $T, op, s, d),
            }
            true
        }

        /// Binary op on float tiles with a same-type or bool result.
        fn $binary(op: BinaryOp, a: &[$T], b: &[$T], d: *mut u8, len: usize) -> bool {
            use BinaryOp::*;
            use loops::zip;
            // SAFETY: the caller passes an output of `len` elements of the op's
            // result type, distinct from `a` and `b`.
            let f = || unsafe { std::slice::from_raw_parts_mut(d as *mut $T, len) };
            // SAFETY: as above, for a bool result.
            let c = || unsafe { std::slice::from_raw_parts_mut(d as *mut bool, len) };
            match op {
                Add => zip(a, b, f(), |x: $T, y: $T| x + y),
                Subtract => zip(a, b, f(), |x: $T, y: $T| x - y),
                Multiply => zip(a, b, f(), |x: $T, y: $T| x * y),
                Divide => zip(a, b, f(), |x: $T, y: $T| x / y),
                FloorDivide => zip(a, b, f(), |x: $T, y: $T| (x / y).floor()),
                Remainder => zip(a, b, f(), |x: $T, y: $T| {
                    let r = x % y;
                    if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                        r + y
                    } else {
                        r
                    }
                }),
                Power => zip(a, b, f(), |x: $T, y: $T| x.powf(y)),
                Maximum => zip(a, b, f(), |x: $T, y: $T| max_nan(x, y, x.is_nan())),
                Minimum => zip(a, b, f(), |x: $T, y: $T| min_nan(x, y, x.is_nan())),
                LogAddExp => zip(a, b, f(), |x: $T, y: $T| {
                    let m = max_nan(x, y, x.is_nan());
                    if m.is_nan() || m == <$T>::NEG_INFINITY || m.is_infinite() {
                        m
                    } else {
                        m + (-(x - y).abs()).exp().ln_1p()
                    }
                }),
                ArcTan2 => zip(a, b, f(), |x: $T, y: $T| x.atan2(y)),
                Equal => zip(a, b, c(), |x: $T, y: $T| x == y),
                EqualNan => zip(a, b, c(), |x: $T, y: $T| x == y || (x.is_nan() && y.is_nan())),
                NotEqual => zip(a, b, c(), |x: $T, y: $T| x != y),
                Greater => zip(a, b, c(), |x: $T, y: $T| x > y),
                GreaterEqual => zip(a, b, c(), |x: $T, y: $T| x >= y),
                Less => zip(a, b, c(), |x: $T, y: $T| x < y),
                LessEqual => zip(a, b, c(), |x: $T, y: $T| x <= y),
                LogicalAnd => zip(a, b, c(), |x: $T, y: $T| (x != 0.0) & (y != 0.0)),
                LogicalOr => zip(a, b, c(), |x: $T, y: $T| (x != 0.0) | (y != 0.0)),
                _ => return false,
            }
            true
        }

        /// Float predicates giving bool.
        fn $pred(op: UnaryOp, s: &[$T], d: &mut [bool]) -> bool {
            use UnaryOp::*;
            use loops::map;
            match op {
                IsNan => map(s, d, |v: $T| v.is_nan()),
                IsInf => map(s, d, |v: $T| v.is_infinite()),
                IsPosInf => map(s, d, |v: $T| v.is_infinite() && v.is_sign_positive()),
                IsNegInf => map(s, d, |v: $T| v.is_infinite() && v.is_sign_negative()),
                IsFinite => map(s, d, |v: $T| v.is_finite()),
                LogicalNot => map(s, d, |v: $T| v == 0.0),
                _ => return false,
            }
            true
        }
    };
    (@trans f32, $op:expr, $s:expr, $d:expr) => {{
        use UnaryOp::*;
        let (s, d) = ($s, $d);
        match $op {
            Exp => map(s, d, m::exp_f32),
            Expm1 => map(s, d, m::expm1_f32),
            Log => map(s, d, m::log_f32),
            Log2 => map(s, d, m::log2_f32),
            Log10 => map(s, d, m::log10_f32),
            Log1p => map(s, d, m::log1p_f32),
            Sin => {
                map(s, d, m::sin_f32);
                trig_fixup(s, d, f64::sin);
            }
            Cos => {
                map(s, d, m::cos_f32);
                trig_fixup(s, d, f64::cos);
            }
            Tan => {
                map(s, d, m::tan_f32);
                trig_fixup(s, d, f64::tan);
            }
            ArcSin => map(s, d, m::asin_f32),
            ArcCos => map(s, d, m::acos_f32),
            ArcTan => map(s, d, m::atan_f32),
            Sinh => map(s, d, m::sinh_f32),
            Cosh => map(s, d, m::cosh_f32),
            Tanh => map(s, d, m::tanh_f32),
            ArcSinh => map(s, d, m::asinh_f32),
            ArcCosh => map(s, d, m::acosh_f32),
            ArcTanh => map(s, d, m::atanh_f32),
            Erf => map(s, d, m::erf_f32),
            ErfInv => map(s, d, m::erfinv_f32),
            Sigmoid => map(s, d, m::sigmoid_f32),
            _ => return false,
        }
        true
    }};
    (@trans f64, $op:expr, $s:expr, $d:expr) => {{
        use UnaryOp::*;
        let (s, d) = ($s, $d);
        match $op {
            Exp => map(s, d, f64::exp),
            Expm1 => map(s, d, f64::exp_m1),
            Log => map(s, d, f64::ln),
            Log2 => map(s, d, f64::log2),
            Log10 => map(s, d, f64::log10),
            Log1p => map(s, d, f64::ln_1p),
            Sin => map(s, d, f64::sin),
            Cos => map(s, d, f64::cos),
            Tan => map(s, d, f64::tan),
            ArcSin => map(s, d, f64::asin),
            ArcCos => map(s, d, f64::acos),
            ArcTan => map(s, d, f64::atan),
            Sinh => map(s, d, f64::sinh),
            Cosh => map(s, d, f64::cosh),
            Tanh => map(s, d, f64::tanh),
            ArcSinh => map(s, d, f64::asinh),
            ArcCosh => map(s, d, f64::acosh),
            ArcTanh => map(s, d, f64::atanh),
            Erf => map(s, d, libm::erf),
            ErfInv => map(s, d, super::unary::erfinv_f64),
            Sigmoid => map(s, d, |v: f64| {
                let e = (-v.abs()).exp();
                let r = 1.0 / (1.0 + e);
                if v >= 0.0 {
                    r
                } else {
                    e * r
                }
            }),
            _ => return false,
        }
        true
    }};
}

float_impl!(f32, unary_f32, binary_f32, pred_f32);
float_impl!(f64, unary_f64, binary_f64, pred_f64);

fn unary_bool(op: UnaryOp, s: &[bool], d: &mut [bool]) -> bool {
    use UnaryOp::*;
    match op {
        Abs | Sign | Square | Floor | Ceil | Round | Trunc | Conjugate | Real => d.copy_from_slice(s),
        Imag => d.fill(false),
        BitwiseInvert | LogicalNot => loops::map(s, d, |v: bool| !v),
        _ => return false,
    }
    true
}

fn binary_bool(op: BinaryOp, a: &[bool], b: &[bool], d: &mut [bool]) -> bool {
    use loops::zip;
    use BinaryOp::*;
    match op {
        Add | Maximum | LogicalOr | BitwiseOr => zip(a, b, d, |x: bool, y: bool| x | y),
        Subtract | BitwiseXor | NotEqual => zip(a, b, d, |x: bool, y: bool| x ^ y),
        Multiply | FloorDivide | Minimum | LogicalAnd | BitwiseAnd => zip(a, b, d, |x: bool, y: bool| x & y),
        Remainder => zip(a, b, d, |x: bool, y: bool| x & !y),
        Power => zip(a, b, d, |x: bool, y: bool| x | !y),
        Equal | EqualNan => zip(a, b, d, |x: bool, y: bool| x == y),
        Greater => zip(a, b, d, |x: bool, y: bool| x & !y),
        GreaterEqual => zip(a, b, d, |x: bool, y: bool| x | !y),
        Less => zip(a, b, d, |x: bool, y: bool| !x & y),
        LessEqual => zip(a, b, d, |x: bool, y: bool| !x | y),
        _ => return false,
    }
    true
}

/// Rounds f32 values to `d` (f16/bf16) and back, as storing them would.
fn round_to(d: Dtype, v: &mut [f32]) {
    match d {
        Dtype::F16 => {
            let mut t = [f16::ZERO; TILE];
            t[..v.len()].convert_from_f32_slice(v);
            t[..v.len()].convert_to_f32_slice(v);
        }
        Dtype::BF16 => {
            let mut t = [bf16::ZERO; TILE];
            t[..v.len()].convert_from_f32_slice(v);
            t[..v.len()].convert_to_f32_slice(v);
        }
        _ => {}
    }
}

/// A register's pointer for the current tile.
#[inline]
fn slice<'a, T>(p: *mut u8, len: usize) -> &'a [T] {
    // SAFETY: every register pointer addresses `len` (≤ TILE) live elements of
    // its compute type for the current tile (see `Kernel::run_tile`).
    unsafe { std::slice::from_raw_parts(p as *const T, len) }
}
#[inline]
fn slice_mut<'a, T>(p: *mut u8, len: usize) -> &'a mut [T] {
    // SAFETY: as in `slice`; a destination never overlaps its arguments.
    unsafe { std::slice::from_raw_parts_mut(p as *mut T, len) }
}

/// Runs instruction `op` (result dtype `od`, argument dtype `ad`) on a tile.
fn exec(op: FusedOp, ad: Dtype, od: Dtype, args: &[*mut u8], dst: *mut u8, len: usize) -> Result<()> {
    let ac = class(ad)?;
    let oc = class(od)?;
    let ok = match op {
        FusedOp::Unary(u) => match (ac, oc) {
            (Class::F, Class::F) => unary_f32(u, slice(args[0], len), slice_mut(dst, len)),
            (Class::D, Class::D) => unary_f64(u, slice(args[0], len), slice_mut(dst, len)),
            (Class::F, Class::B) => pred_f32(u, slice(args[0], len), slice_mut(dst, len)),
            (Class::D, Class::B) => pred_f64(u, slice(args[0], len), slice_mut(dst, len)),
            (Class::B, Class::B) => unary_bool(u, slice(args[0], len), slice_mut(dst, len)),
            _ => false,
        },
        FusedOp::Binary(b) => match ac {
            Class::F => binary_f32(b, slice(args[0], len), slice(args[1], len), dst, len),
            Class::D => binary_f64(b, slice(args[0], len), slice(args[1], len), dst, len),
            Class::B => binary_bool(b, slice(args[0], len), slice(args[1], len), slice_mut(dst, len)),
        },
        FusedOp::Select => {
            let c: &[bool] = slice(args[0], len);
            match oc {
                Class::F => loops::select::<f32>(c, slice(args[1], len), slice(args[2], len), slice_mut(dst, len)),
                Class::D => loops::select::<f64>(c, slice(args[1], len), slice(args[2], len), slice_mut(dst, len)),
                Class::B => loops::select::<bool>(c, slice(args[1], len), slice(args[2], len), slice_mut(dst, len)),
            }
            true
        }
        FusedOp::Cast => {
            match (ac, oc) {
                (Class::F, Class::F) => {
                    slice_mut::<f32>(dst, len).copy_from_slice(slice(args[0], len));
                }
                (Class::F, Class::D) => loops::map(slice(args[0], len), slice_mut(dst, len), |v: f32| v as f64),
                (Class::F, Class::B) => loops::map(slice(args[0], len), slice_mut(dst, len), |v: f32| v != 0.0),
                (Class::D, Class::F) => {
                    let (s, d) = (slice::<f64>(args[0], len), slice_mut::<f32>(dst, len));
                    // f64 rounds straight to the half type (no double rounding).
                    match od {
                        Dtype::F16 => loops::map(s, d, |v: f64| f16::from_f64(v).to_f32()),
                        Dtype::BF16 => loops::map(s, d, |v: f64| bf16::from_f64(v).to_f32()),
                        _ => loops::map(s, d, |v: f64| v as f32),
                    }
                }
                (Class::D, Class::D) => slice_mut::<f64>(dst, len).copy_from_slice(slice(args[0], len)),
                (Class::D, Class::B) => loops::map(slice(args[0], len), slice_mut(dst, len), |v: f64| v != 0.0),
                (Class::B, Class::F) => loops::map(slice(args[0], len), slice_mut(dst, len), |v: bool| v as u8 as f32),
                (Class::B, Class::D) => loops::map(slice(args[0], len), slice_mut(dst, len), |v: bool| v as u8 as f64),
                (Class::B, Class::B) => slice_mut::<bool>(dst, len).copy_from_slice(slice(args[0], len)),
            }
            true
        }
    };
    if !ok {
        return Err(Error::unsupported("Fused", format!("No fused CPU kernel for {op:?} on {ad}.")));
    }
    // Half results round to their dtype, as storing the unfused op's output does.
    if oc == Class::F && od != Dtype::F32 && !matches!(op, FusedOp::Select) {
        round_to(od, slice_mut(dst, len));
    }
    Ok(())
}

/// Per-call plan: where each register lives and how each input is filled.
struct Kernel<'a> {
    prog: &'a FusedProgram,
    dtypes: Vec<Dtype>,
    /// Bytes per element of each register's compute type.
    size: Vec<usize>,
    /// The dtype each instruction computes on (its value arguments' dtype).
    arg_dtype: Vec<Dtype>,
    loc: Vec<Loc>,
    fill: Vec<Fill>,
    n_slots: usize,
    /// Input base pointers and their broadcast walk (for `Load` inputs).
    in_ptr: Vec<SendPtr<u8>>,
    in_rows: Vec<Option<Rows<1>>>,
    out_ptr: Vec<SendPtr<u8>>,
    n: usize,
}

// SAFETY: the raw pointers address buffers kept alive by the caller for the
// whole call; tiles on different threads touch disjoint output elements.
unsafe impl Sync for Kernel<'_> {}

impl Kernel<'_> {
    /// Fills the register of input `k` for the tile starting at `i0`.
    fn load(&self, k: usize, dst: *mut u8, i0: usize, len: usize) {
        let d = self.dtypes[k];
        let base = self.in_ptr[k].get();
        match self.in_rows[k].as_ref() {
            None => {
                // Dense (a half input being converted).
                match d {
                    Dtype::F16 => {
                        let s = slice::<f16>(base.wrapping_add(i0 * 2), len);
                        s.convert_to_f32_slice(slice_mut(dst, len));
                    }
                    Dtype::BF16 => {
                        let s = slice::<bf16>(base.wrapping_add(i0 * 2), len);
                        s.convert_to_f32_slice(slice_mut(dst, len));
                    }
                    _ => unreachable!("dense inputs of compute type are read in place"),
                }
            }
            Some(rows) => match d {
                Dtype::F32 => gather::<f32, f32>(rows, base, i0, len, dst, |v| v),
                Dtype::F64 => gather::<f64, f64>(rows, base, i0, len, dst, |v| v),
                Dtype::Bool => gather::<bool, bool>(rows, base, i0, len, dst, |v| v),
                Dtype::F16 => gather::<f16, f32>(rows, base, i0, len, dst, f16::to_f32),
                _ => gather::<bf16, f32>(rows, base, i0, len, dst, bf16::to_f32),
            },
        }
    }

    /// Computes elements `i0..i0+len` of every output.
    fn run_tile(&self, arena: *mut u8, i0: usize, len: usize) -> Result<()> {
        let p = self.prog;
        let nregs = self.dtypes.len();
        let mut ptr: [*mut u8; 64] = [std::ptr::null_mut(); 64];
        let mut heap: Vec<*mut u8>;
        let ptrs: &mut [*mut u8] = if nregs <= 64 {
            &mut ptr[..nregs]
        } else {
            heap = vec![std::ptr::null_mut(); nregs];
            &mut heap
        };
        for (r, slot) in ptrs.iter_mut().enumerate() {
            let c = self.size[r];
            *slot = match self.loc[r] {
                Loc::Direct(k) => self.in_ptr[k].get().wrapping_add(i0 * c),
                Loc::Slot(s) => arena.wrapping_add(s * SLOT_BYTES),
                Loc::Out(k) => self.out_ptr[k].get().wrapping_add(i0 * c),
            };
        }
        for (k, &dst) in ptrs.iter().enumerate().take(p.n_inputs) {
            if self.fill[k] == Fill::Load {
                self.load(k, dst, i0, len);
            }
        }
        let mut args = [std::ptr::null_mut::<u8>(); 3];
        for (j, inst) in p.insts.iter().enumerate() {
            let na = inst.args.len().min(3);
            for (d, &a) in args.iter_mut().zip(&inst.args) {
                *d = ptrs[a];
            }
            exec(inst.op, self.arg_dtype[j], inst.dtype, &args[..na], ptrs[p.n_inputs + j], len)?;
        }
        // Outputs that were computed in a slot: store (converting half types).
        for (k, &r) in p.outputs.iter().enumerate() {
            let Loc::Slot(_) = self.loc[r] else { continue };
            let src = ptrs[r];
            let dst = self.out_ptr[k].get();
            match self.dtypes[r] {
                Dtype::F16 => slice_mut::<f16>(dst.wrapping_add(i0 * 2), len).convert_from_f32_slice(slice(src, len)),
                Dtype::BF16 => slice_mut::<bf16>(dst.wrapping_add(i0 * 2), len).convert_from_f32_slice(slice(src, len)),
                d => {
                    let c = csize(class(d)?);
                    // SAFETY: the slot holds len elements; the output has n ≥ i0 + len.
                    unsafe { std::ptr::copy_nonoverlapping(src, dst.add(i0 * c), len * c) }
                }
            }
        }
        Ok(())
    }
}

/// Gathers `len` elements starting at flat output position `i0` of a
/// broadcast/strided input into `dst`, converting with `f`.
///
/// `f` is a closure type rather than a function pointer so that it inlines:
/// a unit-stride row (a bias broadcast along the rows) is then one vectorised
/// loop instead of an indirect call per element.
fn gather<S: Copy, D: Copy>(rows: &Rows<1>, base: *mut u8, i0: usize, len: usize, dst: *mut u8, f: impl Fn(S) -> D) {
    let out = slice_mut::<D>(dst, len);
    let inner = rows.inner;
    let st = rows.inner_strides[0];
    let (mut row, mut col) = (i0 / inner, i0 % inner);
    let mut k = 0;
    let src = base as *const S;
    while k < len {
        let [o] = rows.offsets(row);
        let n = (inner - col).min(len - k);
        // SAFETY: (row, col..col+n) are positions of the input view broadcast
        // to the output shape, so every offset lies inside the input buffer.
        unsafe {
            let p = src.offset(o + col as isize * st);
            if st == 0 {
                let v = f(*p);
                out[k..k + n].fill(v);
            } else if st == 1 {
                for (o, &x) in out[k..k + n].iter_mut().zip(std::slice::from_raw_parts(p, n)) {
                    *o = f(x);
                }
            } else {
                for (t, o) in out[k..k + n].iter_mut().enumerate() {
                    *o = f(*p.offset(t as isize * st));
                }
            }
        }
        k += n;
        row += 1;
        col = 0;
    }
}

/// Evaluates a fused program (see [`crate::ops::fused`]).
pub fn fused(prog: &FusedProgram, inputs: &[Array], outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
    let n = numel(&prog.shape);
    let datas: Vec<Data> = outs.iter().map(|o| Ok(Data::contiguous(alloc_out(o)?, o.shape))).collect::<Result<_>>()?;
    if n == 0 {
        return Ok(datas);
    }
    let nregs = prog.n_inputs + prog.insts.len();
    let in_dtypes: Vec<Dtype> = inputs.iter().map(|a| a.dtype()).collect();
    let dtypes: Vec<Dtype> = (0..nregs).map(|r| prog.reg_dtype(r, &in_dtypes)).collect();
    for d in &dtypes {
        class(*d)?;
    }
    if inputs.len() != prog.n_inputs
        || inputs
            .iter()
            .any(|a| crate::shape::broadcast_shapes(a.shape(), &prog.shape).ok().as_deref() != Some(&prog.shape[..]))
    {
        return Err(Error::invalid("Fused", "inputs must match the program and broadcast to its shape"));
    }
    // Inputs.
    let in_data: Vec<Data> = inputs.iter().map(|a| a.data()).collect();
    let mut loc = vec![Loc::Slot(0); nregs];
    let mut fill = Vec::with_capacity(prog.n_inputs);
    let mut in_rows = Vec::with_capacity(prog.n_inputs);
    let mut n_slots = 0;
    for (k, (a, d)) in inputs.iter().zip(&in_data).enumerate() {
        let native = matches!(a.dtype(), Dtype::F32 | Dtype::F64 | Dtype::Bool);
        let dense = a.size() == n && d.is_row_contiguous();
        if a.size() == 1 {
            fill.push(Fill::Splat);
            in_rows.push(None);
        } else if dense && native {
            fill.push(Fill::Direct);
            in_rows.push(None);
            loc[k] = Loc::Direct(k);
            continue;
        } else {
            fill.push(Fill::Load);
            in_rows.push(if dense { None } else { Some(Rows::new(&prog.shape, [&strides_for(a, d, &prog.shape)])) });
        }
        loc[k] = Loc::Slot(n_slots);
        n_slots += 1;
    }
    // Instruction results: outputs in compute type write straight to the
    // output buffer; the rest get slots, reused after their last use.
    let mut last_use = vec![0usize; nregs];
    for (j, inst) in prog.insts.iter().enumerate() {
        for &a in &inst.args {
            last_use[a] = j;
        }
    }
    let mut is_out = vec![None; nregs];
    for (k, &r) in prog.outputs.iter().enumerate() {
        is_out[r] = Some(k);
    }
    let mut free: Vec<usize> = Vec::new();
    for (j, inst) in prog.insts.iter().enumerate() {
        let r = prog.n_inputs + j;
        loc[r] = match is_out[r] {
            Some(k) if matches!(inst.dtype, Dtype::F32 | Dtype::F64 | Dtype::Bool) => Loc::Out(k),
            _ => Loc::Slot(free.pop().unwrap_or_else(|| {
                n_slots += 1;
                n_slots - 1
            })),
        };
        for &a in &inst.args {
            if a >= prog.n_inputs && last_use[a] == j && is_out[a].is_none() {
                if let Loc::Slot(s) = loc[a] {
                    if !free.contains(&s) {
                        free.push(s);
                    }
                }
            }
        }
    }
    // `Data::ptr` offsets in elements, so take each pointer at its own type.
    let in_ptr: Vec<SendPtr<u8>> = in_data
        .iter()
        .zip(inputs)
        .map(|(d, a)| SendPtr(crate::dispatch_dtype!(a.dtype(), T => d.ptr::<T>().cast::<u8>())))
        .collect();
    let size: Vec<usize> = dtypes.iter().map(|&d| class(d).map(csize)).collect::<Result<_>>()?;
    let mut arg_dtype = Vec::with_capacity(prog.insts.len());
    for inst in &prog.insts {
        let a = match (inst.op, inst.args.as_slice()) {
            (FusedOp::Select, [_, x, _]) => *x,
            (FusedOp::Select, _) => return Err(Error::invalid("Fused", "select takes three arguments")),
            (FusedOp::Binary(_), [x, _]) | (FusedOp::Unary(_) | FusedOp::Cast, [x]) => *x,
            _ => return Err(Error::invalid("Fused", format!("wrong argument count for {:?}", inst.op))),
        };
        if a >= nregs || inst.args.iter().any(|&r| r >= prog.n_inputs + arg_dtype.len()) {
            return Err(Error::invalid("Fused", "an instruction reads a register not yet computed"));
        }
        arg_dtype.push(dtypes[a]);
    }
    if prog.outputs.len() != outs.len() || prog.outputs.iter().any(|&r| r < prog.n_inputs || r >= nregs) {
        return Err(Error::invalid("Fused", "outputs must be instruction results, one per output spec"));
    }
    let kern = Kernel {
        prog,
        size,
        arg_dtype,
        dtypes,
        loc,
        fill,
        n_slots,
        in_ptr,
        in_rows,
        out_ptr: datas.iter().map(|d| SendPtr(d.ptr::<u8>())).collect(),
        n,
    };
    let cost: usize = prog.insts.iter().map(|i| inst_cost(i.op)).sum::<usize>().max(1);
    let tiles = n.div_ceil(TILE);
    let err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    parallel_for(tiles, TILE * cost, |range| {
        let mut arena: Vec<Line> = vec![Line([0; 64]); kern.n_slots.max(1) * SLOT_LINES];
        let ap = arena.as_mut_ptr() as *mut u8;
        // Size-1 inputs: splat once per chunk.
        for k in 0..kern.prog.n_inputs {
            if kern.fill[k] == Fill::Splat {
                let Loc::Slot(s) = kern.loc[k] else { continue };
                splat(kern.dtypes[k], kern.in_ptr[k].get(), ap.wrapping_add(s * SLOT_BYTES));
            }
        }
        for t in range {
            let i0 = t * TILE;
            let len = TILE.min(kern.n - i0);
            if let Err(e) = kern.run_tile(ap, i0, len) {
                *err.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return;
            }
        }
    });
    if let Some(e) = err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(datas)
}

/// Fills a slot with TILE copies of the single element at `p`.
fn splat(d: Dtype, p: *mut u8, dst: *mut u8) {
    // SAFETY: `p` addresses one element of dtype `d`.
    unsafe {
        match d {
            Dtype::F32 => slice_mut::<f32>(dst, TILE).fill(*(p as *const f32)),
            Dtype::F16 => slice_mut::<f32>(dst, TILE).fill((*(p as *const f16)).to_f32()),
            Dtype::BF16 => slice_mut::<f32>(dst, TILE).fill((*(p as *const bf16)).to_f32()),
            Dtype::F64 => slice_mut::<f64>(dst, TILE).fill(*(p as *const f64)),
            _ => slice_mut::<bool>(dst, TILE).fill(*(p as *const bool)),
        }
    }
}

fn inst_cost(op: FusedOp) -> usize {
    use UnaryOp::*;
    match op {
        FusedOp::Unary(Exp | Expm1 | Log | Log2 | Log10 | Sigmoid) => 4,
        FusedOp::Unary(Sqrt | Rsqrt | Reciprocal) => 2,
        FusedOp::Unary(
            Sin | Cos | Tan | ArcSin | ArcCos | ArcTan | Sinh | Cosh | Tanh | Erf | Log1p | ArcSinh | ArcCosh | ArcTanh
            | ErfInv,
        ) => 6,
        FusedOp::Binary(BinaryOp::Power | BinaryOp::LogAddExp | BinaryOp::ArcTan2) => 16,
        _ => 1,
    }
}
