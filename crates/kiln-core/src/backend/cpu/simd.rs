//! Run-time instruction-set dispatch and the thread-parallel loop helper.
//!
//! Kernels are written once as plain loops over slices; [`multiversion!`]
//! compiles a loop for AVX-512, AVX2+FMA and the baseline target and picks one
//! at run time from the CPU's features, so the compiler's vectoriser emits the
//! widest SIMD the machine has. On aarch64 NEON is part of the baseline.

use std::sync::OnceLock;

/// The widest SIMD level available on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline target (SSE2 on x86_64, NEON on aarch64).
    Base,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ.
    Avx512,
}

/// The detected SIMD level (cached).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("KILN_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("fma")
            {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Level::Avx2;
            }
        }
        Level::Base
    })
}

/// Defines `$name` as a function whose body is compiled three times (AVX-512,
/// AVX2+FMA, baseline) and dispatched on [`level`]. The body must be safe code;
/// generic parameters and closures are allowed and get inlined into each copy.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$($g:ident $(: $b:path)?),*>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $(where $($wt:ty : $wb:path),*)? $body:block) => {
        $(#[$m])* $vis fn $name $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? $(where $($wt: $wb),*)? {
            #[inline(always)]
            fn inner $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? $(where $($wt: $wb),*)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
                unsafe fn v512 $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? $(where $($wt: $wb),*)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn v256 $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? $(where $($wt: $wb),*)? { inner($($arg),*) }
                match $crate::backend::cpu::simd::level() {
                    // SAFETY: level() verified the CPU supports these features.
                    $crate::backend::cpu::simd::Level::Avx512 => return unsafe { v512($($arg),*) },
                    // SAFETY: as above.
                    $crate::backend::cpu::simd::Level::Avx2 => return unsafe { v256($($arg),*) },
                    $crate::backend::cpu::simd::Level::Base => {}
                }
            }
            inner($($arg),*)
        }
    };
}

/// Work below this many elements stays on the calling thread: handing it to
/// the pool costs more than it saves.
pub const PAR_THRESHOLD: usize = 1 << 16;

/// Number of worker threads.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Splits `0..n` into contiguous ranges and runs `f` on each, in parallel when
/// `n * cost` (elements times a rough per-element weight) is large enough.
pub fn parallel_for(n: usize, cost: usize, f: impl Fn(std::ops::Range<usize>) + Sync + Send) {
    let work = n.saturating_mul(cost.max(1));
    let threads = num_threads();
    if work < PAR_THRESHOLD || threads <= 1 || n < 2 {
        f(0..n);
        return;
    }
    // A few chunks per thread balances uneven progress without much overhead.
    let chunks = (threads * 4).min(n).min(work / (PAR_THRESHOLD / 4)).max(2);
    if super::pool::run(n, chunks, &f) {
        return;
    }
    let per = n.div_ceil(chunks);
    rayon::scope(|s| {
        let f = &f;
        for c in 0..chunks {
            let start = c * per;
            let end = ((c + 1) * per).min(n);
            if start < end {
                s.spawn(move |_| f(start..end));
            }
        }
    });
}

/// A raw pointer that may cross threads; kernels use it to write disjoint
/// output ranges from parallel chunks.
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: users only write disjoint ranges through it from parallel chunks.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer.
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn sum_sq(xs: &[f32]) -> f32 {
            xs.iter().map(|x| x * x).sum()
        }
    }

    #[test]
    fn multiversioned_fn_runs() {
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert_eq!(sum_sq(&v), (0..100).map(|i| (i * i) as f32).sum::<f32>());
    }

    #[test]
    fn parallel_for_covers_range_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits: Vec<AtomicUsize> = (0..300_000).map(|_| AtomicUsize::new(0)).collect();
        parallel_for(hits.len(), 1, |r| {
            for i in r {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }
}
