//! Matrix multiplication kernels: a thin wrapper over the `gemm` crate (packed,
//! cache-blocked AVX-512/AVX2 micro-kernels, multi-threaded through rayon)
//! plus a direct loop for tiny products, and the batched matmul kernel.
//!
//! Internal API for other kernels (convolution, …): [`gemm`] multiplies two
//! strided matrices into a strided destination, optionally accumulating.
//! f16/bf16 operands are widened to f32 (O(n²) next to the O(n³) product) and
//! run through the f32 kernel.

use super::simd::{num_threads, parallel_for, SendPtr};
use super::strided::copy_into;
use crate::array::{Array, Data};
use crate::dtype::{c64, Dtype};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitive::OutSpec;
use crate::shape::{broadcast_strides, numel, row_major_strides};

/// Element types the GEMM kernel handles natively.
pub(crate) trait GemmScalar:
    Copy + Send + Sync + 'static + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
}
impl GemmScalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmScalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmScalar for c64 {
    const ZERO: Self = c64::new(0.0, 0.0);
    const ONE: Self = c64::new(1.0, 0.0);
}

/// A strided matrix operand: pointer to element (0, 0), row stride and column
/// stride in elements (any sign; 0 for broadcast rows/columns).
#[derive(Clone, Copy)]
pub(crate) struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

/// Products with at most this many multiply-adds use the direct loop: the
/// packing and dispatch of the blocked kernel cost more than they save.
const SMALL_MNK: usize = 8 * 8 * 8;

/// Above this many multiply-adds a single product is split across threads.
const PAR_MNK: usize = 48 * 48 * 48;
/// Up to this many multiply-adds the split runs on Kiln's pool ([`split_gemm`]); larger
/// products use the gemm crate's own parallel schedule.
const POOL_MNK: usize = 512 * 512 * 512;

/// `C = alpha * A·B + beta * C` for an `m×k` A and a `k×n` B, with `beta`
/// `None` meaning C is overwritten without being read. `threads` > 1 lets the
/// kernel split the product across the rayon pool.
///
/// # Safety
/// Every element addressed through the pointers and strides (rows `0..m`,
/// columns `0..n`, depth `0..k`) must be valid; `c` must be writable and must
/// not alias `a` or `b`, and distinct (row, col) of `c` must be distinct
/// elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: GemmScalar>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    a: Mat<T>,
    b: Mat<T>,
    alpha: T,
    beta: Option<T>,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || m * n * k <= SMALL_MNK {
        // SAFETY: forwarded contract.
        unsafe { small_gemm(m, n, k, c, c_rs, c_cs, a, b, alpha, beta) };
        return;
    }
    let mnk = m * n * k;
    // Products deeper than they are wide (a weight gradient with the batch
    // folded into k) also split on the pool: the gemm crate's own schedule runs
    // them at about two thirds of the speed.
    let tall = k >= m.max(n);
    if threads > 1 && mnk >= PAR_MNK && (mnk < POOL_MNK || tall) && pool_split() {
        // SAFETY: forwarded contract.
        unsafe { split_gemm(m, n, k, c, c_rs, c_cs, a, b, alpha, beta, threads) };
        return;
    }
    let par = if threads > 1 && mnk >= PAR_MNK { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let (read, dst_scale) = match beta {
        Some(bt) => (true, bt),
        None => (false, T::ZERO),
    };
    // SAFETY: the caller guarantees every addressed element is valid; the
    // `gemm` crate reads `a`/`b` through the given strides and writes `c`.
    // Its convention is dst = alpha·dst + beta·lhs·rhs, hence the swap.
    unsafe {
        gemm::gemm(
            m, n, k, c, c_cs, c_rs, read, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, dst_scale, alpha, false, false, false,
            par,
        )
    }
}

/// Mid-sized products run as one single-threaded product per thread, each on a
/// slice of the longer output side, through the spinning pool: the gemm crate's
/// own rayon split would wake rayon workers while the pool's workers still spin,
/// and on two cores the two sets of threads then contend. Measured in one run:
/// the MLP train step went from 189 to 270 steps/s and the transformer train
/// step from 6,090 to 7,740 tokens/s.
///
/// # Safety
/// As for [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn split_gemm<T: GemmScalar>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    a: Mat<T>,
    b: Mat<T>,
    alpha: T,
    beta: Option<T>,
    threads: usize,
) {
    let (cp, ap, bp) = (SendPtr(c), SendPtr(a.ptr as *mut T), SendPtr(b.ptr as *mut T));
    let rows = m >= n;
    let len = if rows { m } else { n };
    // Slices of whole 16-element groups, one per thread.
    let groups = len.div_ceil(16);
    let parts = threads.min(groups);
    parallel_for(parts, usize::MAX / parts, |range| {
        for p in range {
            let (g0, g1) = (groups * p / parts, groups * (p + 1) / parts);
            let (s0, s1) = ((g0 * 16).min(len), (g1 * 16).min(len));
            if s0 == s1 {
                continue;
            }
            // SAFETY: the slice s0..s1 of C's rows (or columns) and the matching rows of A (or
            // columns of B) lie inside the operands; slices of different parts are disjoint.
            unsafe {
                let (a, b, c, mm, nn) = if rows {
                    let a = Mat { ptr: ap.get().offset(s0 as isize * a.rs), ..a };
                    (a, Mat { ptr: bp.get(), ..b }, cp.get().offset(s0 as isize * c_rs), s1 - s0, n)
                } else {
                    let b = Mat { ptr: bp.get().offset(s0 as isize * b.cs), ..b };
                    (Mat { ptr: ap.get(), ..a }, b, cp.get().offset(s0 as isize * c_cs), m, s1 - s0)
                };
                gemm(mm, nn, k, c, c_rs, c_cs, a, b, alpha, beta, 1);
            }
        }
    });
}

/// Whether mid-sized products use [`split_gemm`]; `KILN_GEMM_RAYON=1` restores the gemm
/// crate's own split, for comparison.
fn pool_split() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KILN_GEMM_RAYON").is_none())
}

/// The direct triple loop for tiny products (and `k == 0`).
///
/// # Safety
/// As for [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn small_gemm<T: GemmScalar>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    a: Mat<T>,
    b: Mat<T>,
    alpha: T,
    beta: Option<T>,
) {
    for i in 0..m as isize {
        for j in 0..n as isize {
            let mut acc = T::ZERO;
            for p in 0..k as isize {
                // SAFETY: (i, p) and (p, j) are inside A and B by the contract.
                unsafe { acc = acc + *a.ptr.offset(i * a.rs + p * a.cs) * *b.ptr.offset(p * b.rs + j * b.cs) };
            }
            // SAFETY: (i, j) is inside C by the contract.
            unsafe {
                let o = c.offset(i * c_rs + j * c_cs);
                *o = match beta {
                    Some(bt) => alpha * acc + bt * *o,
                    None => alpha * acc,
                };
            }
        }
    }
}

/// Offsets of the matrices of every batch element (row-major over `batch`)
/// for an operand whose batch dims have `strides` (already broadcast).
fn batch_offsets(batch: &[usize], strides: &[isize]) -> Vec<isize> {
    let n = numel(batch);
    let mut offs = Vec::with_capacity(n);
    let mut idx = vec![0usize; batch.len()];
    let mut off = 0isize;
    for _ in 0..n {
        offs.push(off);
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < batch[d] {
                break;
            }
            off -= strides[d] * batch[d] as isize;
            idx[d] = 0;
        }
    }
    offs
}

/// Batched product of strided operands into the row-major `out` (`batch × m × n`).
/// `a_off[i]`/`b_off[i]` are the element offsets of batch `i`'s matrices.
#[allow(clippy::too_many_arguments)]
fn batched<T: GemmScalar>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    a_off: &[isize],
    b: Mat<T>,
    b_off: &[isize],
    out: *mut T,
) {
    let nb = a_off.len();
    let mnk = m * n * k;
    let threads = num_threads();
    let outp = SendPtr(out);
    let (ap, bp) = (SendPtr(a.ptr as *mut T), SendPtr(b.ptr as *mut T));
    let run = |i: usize, threads: usize| {
        // SAFETY: batch offsets address matrices inside the operands' views;
        // batch i writes only its own m×n block of the output.
        unsafe {
            gemm(
                m,
                n,
                k,
                outp.get().add(i * m * n),
                n as isize,
                1,
                Mat { ptr: ap.get().offset(a_off[i]), ..a },
                Mat { ptr: bp.get().offset(b_off[i]), ..b },
                T::ONE,
                None,
                threads,
            )
        }
    };
    if nb >= 2 && threads > 1 && mnk < 256 * 256 * 256 {
        // Many smaller products: one per task, each single-threaded.
        parallel_for(nb, mnk.max(1), |r| {
            for i in r {
                run(i, 1);
            }
        });
    } else {
        for i in 0..nb {
            run(i, threads);
        }
    }
}

/// Batched matmul kernel: `a` is `(..., m, k)`, `b` is `(..., k, n)` (batch
/// dims broadcast to `out.shape[..-2]`), any strides; output row-major.
pub fn matmul(a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let nd = out.shape.len();
    let (m, n) = (out.shape[nd - 2], out.shape[nd - 1]);
    let k = a.shape()[a.ndim() - 1];
    let batch = &out.shape[..nd - 2];
    let buf = Buffer::alloc(numel(out.shape) * out.dtype.size())?;
    let data = Data::contiguous(buf, out.shape);
    if numel(out.shape) == 0 {
        return Ok(data);
    }
    match out.dtype {
        Dtype::F32 => run_typed::<f32>(a.shape(), &a.data(), b.shape(), &b.data(), batch, m, n, k, data.ptr()),
        Dtype::F64 => run_typed::<f64>(a.shape(), &a.data(), b.shape(), &b.data(), batch, m, n, k, data.ptr()),
        Dtype::C64 => run_typed::<c64>(a.shape(), &a.data(), b.shape(), &b.data(), batch, m, n, k, data.ptr()),
        #[cfg(target_arch = "x86_64")]
        Dtype::BF16
            if a.dtype() == Dtype::BF16
                && b.dtype() == Dtype::BF16
                && m * n * k >= 32 * 32 * 32
                && super::amx::available() =>
        {
            // AMX tiles multiply bf16 natively with f32 accumulation and round the result once.
            amx_batched(a.shape(), &a.data(), b.shape(), &b.data(), batch, m, n, k, data.ptr());
        }
        Dtype::F16 | Dtype::BF16 => {
            // Widen both operands to f32, multiply, round the result once.
            let widen = |x: &Array| -> Result<Data> {
                let d = Data::contiguous(Buffer::alloc(x.size() * 4)?, x.shape());
                copy_into(x, &x.data(), &d, Dtype::F32, 0, &row_major_strides(x.shape()));
                Ok(d)
            };
            let (a32, b32) = (widen(a)?, widen(b)?);
            let o32 = Data::contiguous(Buffer::alloc(numel(out.shape) * 4)?, out.shape);
            run_typed::<f32>(a.shape(), &a32, b.shape(), &b32, batch, m, n, k, o32.ptr());
            let o = Array::from_data(out.shape.to_vec(), Dtype::F32, o32.clone());
            copy_into(&o, &o32, &data, out.dtype, 0, &row_major_strides(out.shape));
        }
        d => return Err(Error::invalid("matmul", format!("No matmul kernel for dtype {d}."))),
    }
    Ok(data)
}

/// Batch offsets and (row, column) strides of the matrices of both operands,
/// their batch dims broadcast to `batch`.
type Layout = (Vec<isize>, [isize; 2], Vec<isize>, [isize; 2]);

fn layout(a_shape: &[usize], ad: &Data, b_shape: &[usize], bd: &Data, batch: &[usize]) -> Layout {
    let (na, nb) = (a_shape.len(), b_shape.len());
    let (sa, sb) = (ad.strides(), bd.strides());
    let a_bs = broadcast_strides(&a_shape[..na - 2], &sa[..na - 2], batch);
    let b_bs = broadcast_strides(&b_shape[..nb - 2], &sb[..nb - 2], batch);
    (batch_offsets(batch, &a_bs), [sa[na - 2], sa[na - 1]], batch_offsets(batch, &b_bs), [sb[nb - 2], sb[nb - 1]])
}

/// The bf16 batched product on AMX tiles into the row-major bf16 `out`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn amx_batched(
    a_shape: &[usize],
    ad: &Data,
    b_shape: &[usize],
    bd: &Data,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
    out: *mut half::bf16,
) {
    use super::amx::{gemm_bf16, Mat as AmxMat};
    let (a_off, [a_rs, a_cs], b_off, [b_rs, b_cs]) = layout(a_shape, ad, b_shape, bd, batch);
    let (ap, bp) = (SendPtr(ad.ptr::<half::bf16>()), SendPtr(bd.ptr::<half::bf16>()));
    let outp = SendPtr(out);
    let run = |i: usize, parallel: bool| {
        // SAFETY: the offsets and strides address the operands' own views (validated shapes);
        // batch i writes only its m×n block of `out`; AMX availability was checked by the caller.
        unsafe {
            let a = AmxMat { ptr: ap.get().offset(a_off[i]), rs: a_rs, cs: a_cs };
            let b = AmxMat { ptr: bp.get().offset(b_off[i]), rs: b_rs, cs: b_cs };
            gemm_bf16(m, n, k, a, b, outp.get().add(i * m * n), n, parallel);
        }
    };
    let nb = a_off.len();
    if nb >= 2 && num_threads() > 1 && m * n * k < 256 * 256 * 256 {
        // Many smaller products: one per task, each single-threaded.
        parallel_for(nb, m * n * k, |r| r.for_each(|i| run(i, false)));
    } else {
        (0..nb).for_each(|i| run(i, true));
    }
}

#[allow(clippy::too_many_arguments)]
fn run_typed<T: GemmScalar>(
    a_shape: &[usize],
    ad: &Data,
    b_shape: &[usize],
    bd: &Data,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
    out: *mut T,
) {
    let (a_off, [a_rs, a_cs], mut b_off, [b_rs, b_cs]) = layout(a_shape, ad, b_shape, bd, batch);
    let a = Mat { ptr: ad.ptr::<T>() as *const T, rs: a_rs, cs: a_cs };
    let mut b = Mat { ptr: bd.ptr::<T>() as *const T, rs: b_rs, cs: b_cs };
    // Keeps the row-major copy of b (if one is made) alive through the product.
    let _copy = row_major_shared_b(m, n, k, &mut b, &mut b_off);
    batched(m, n, k, a, &a_off, b, &b_off, out);
}

/// A linear layer's `x·Wᵀ` multiplies by a column-major `b` shared by every
/// batch element. The gemm crate packs such a `b` one scalar at a time, for
/// every product of the batch (a tenth of a transformer train step went
/// there), so f32 on AVX-512 transposes it once, in 16×16 register blocks
/// and in parallel, into a row-major copy that the batch then packs with
/// vector copies.
/// Rewrites `b` and `b_off` to the copy and returns it; `None` leaves them.
fn row_major_shared_b<T: GemmScalar>(
    m: usize,
    n: usize,
    k: usize,
    b: &mut Mat<T>,
    b_off: &mut [isize],
) -> Option<Buffer> {
    #[cfg(target_arch = "x86_64")]
    {
        let column_major = b.rs == 1 && b.cs >= k as isize && n > 1;
        let shared = b_off.iter().all(|&o| o == b_off[0]);
        // The copy costs k·n moves against m·n·k multiply-adds per product, and
        // pays off across a batch; a single product (an MLP's layer) measured
        // 5% slower with it than with the crate's own packing.
        let worth = b_off.len() >= 2 && m * b_off.len() >= 64 && m * n * k > SMALL_MNK;
        if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>()
            || !(column_major && shared && worth && super::sgemm::available())
        {
            return None;
        }
        let cs = b.cs as usize;
        // SAFETY: T is f32 (checked above). The shared matrix's columns are
        // `n` runs of `k` contiguous values, `cs` apart, inside b's view.
        let src = unsafe { std::slice::from_raw_parts((b.ptr as *const f32).offset(b_off[0]), (n - 1) * cs + k) };
        let (copy, ld) = super::sgemm::transposed_copy(src, n, k, cs).ok()?;
        *b = Mat { ptr: copy.as_ptr() as *const T, rs: ld as isize, cs: 1 };
        b_off.fill(0);
        Some(copy)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, b, b_off);
        None
    }
}

/// Gathered batched matmul: output batch element `i` is
/// `a[lhs[i]] · b[rhs[i]]`, where `a` is `(..., m, k)` and `b` `(..., k, n)`
/// viewed as flat stacks of matrices and `lhs`/`rhs` are int indices already
/// broadcast to the output batch shape (validated by the op).
pub fn gather_mm(a: &Array, b: &Array, lhs: &Array, rhs: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let nd = out.shape.len();
    let (m, n) = (out.shape[nd - 2], out.shape[nd - 1]);
    let k = a.shape()[a.ndim() - 1];
    let batch = &out.shape[..nd - 2];
    let buf = Buffer::alloc(numel(out.shape) * out.dtype.size())?;
    let data = Data::contiguous(buf, out.shape);
    if numel(out.shape) == 0 {
        return Ok(data);
    }
    let idx = |x: &Array, mats: &Array| -> Result<Vec<isize>> {
        let i64s = crate::dispatch_dtype!(x.dtype(), T => {
            crate::backend::cpu::strided::gather_to_vec::<T>(&x.data(), x.shape())
                .into_iter()
                .map(|v| crate::dtype::Element::to_f64(v) as i64)
                .collect::<Vec<i64>>()
        });
        // Offsets of the flat-indexed matrices of `mats`.
        let nbd = mats.ndim() - 2;
        let count = numel(&mats.shape()[..nbd]);
        let offs = batch_offsets(&mats.shape()[..nbd], &mats.data().strides()[..nbd]);
        let mut flat = Vec::with_capacity(numel(batch));
        let ib = broadcast_strides(x.shape(), &row_major_strides(x.shape()), batch);
        for pos in batch_offsets(batch, &ib) {
            let v = i64s[pos as usize];
            let v = if v < 0 { v + count as i64 } else { v };
            if v < 0 || v >= count as i64 {
                return Err(Error::out_of_range(
                    "gather_mm",
                    format!("Index {v} is out of range for {count} batch matrices."),
                ));
            }
            flat.push(offs[v as usize]);
        }
        Ok(flat)
    };
    let (ao, bo) = (idx(lhs, a)?, idx(rhs, b)?);
    #[allow(clippy::too_many_arguments)]
    fn go<T: GemmScalar>(a: &Data, b: &Data, ao: &[isize], bo: &[isize], m: usize, n: usize, k: usize, out: *mut T) {
        let (sa, sb) = (a.strides(), b.strides());
        let am = Mat { ptr: a.ptr::<T>() as *const T, rs: sa[sa.len() - 2], cs: sa[sa.len() - 1] };
        let bm = Mat { ptr: b.ptr::<T>() as *const T, rs: sb[sb.len() - 2], cs: sb[sb.len() - 1] };
        batched(m, n, k, am, ao, bm, bo, out);
    }
    match out.dtype {
        Dtype::F32 => go::<f32>(&a.data(), &b.data(), &ao, &bo, m, n, k, data.ptr()),
        Dtype::F64 => go::<f64>(&a.data(), &b.data(), &ao, &bo, m, n, k, data.ptr()),
        Dtype::C64 => go::<c64>(&a.data(), &b.data(), &ao, &bo, m, n, k, data.ptr()),
        d => return Err(Error::invalid("gather_mm", format!("No gather_mm kernel for dtype {d}."))),
    }
    Ok(data)
}
