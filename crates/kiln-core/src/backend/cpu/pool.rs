//! A small spinning thread pool for [`parallel_for`](super::simd::parallel_for).
//!
//! LLM decoding and other small-batch work runs hundreds of parallel kernels
//! of 10–100 µs each per step. Waking a sleeping thread through the OS costs
//! tens of microseconds here, as much as the kernel itself, so the workers of
//! this pool spin for a short while after each job before they park: a job
//! that follows within the spin window starts at once. The calling thread
//! always takes part, so `threads - 1` workers exist.
//!
//! One caller uses the pool at a time; a second caller (another thread, or a
//! kernel nested inside a chunk) gets `false` from [`run`] and uses rayon.
//!
//! Protocol: the caller publishes a pointer to a job that lives on its stack
//! and then an odd `gen`. A worker registers in `refs`, re-reads `gen`, and
//! only then reads the job; the caller, once every chunk is done, sets `gen`
//! even and waits for `refs` to drop to zero before its stack frame (and the
//! job) goes away. All of these accesses are `SeqCst`, so a worker either
//! sees the even `gen` (and leaves without touching the job) or is counted
//! in `refs` before the caller stops waiting.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);
/// After this long, the spinning worker also yields its core now and then.
const YIELD_AFTER: Duration = Duration::from_micros(100);

/// One parallel loop: chunks of `per` indices of `0..n`.
struct Job<'a> {
    f: &'a (dyn Fn(Range<usize>) + Sync),
    n: usize,
    per: usize,
    chunks: usize,
    /// Next chunk to claim.
    next: AtomicUsize,
    /// Chunks not yet finished.
    left: AtomicUsize,
    /// The first panic of a chunk, re-raised on the calling thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        loop {
            let c = self.next.fetch_add(1, SeqCst);
            if c >= self.chunks {
                return;
            }
            let range = c * self.per..((c + 1) * self.per).min(self.n);
            // A panicking chunk must still count as finished, or the caller
            // would wait forever (and unwind past a job workers still read).
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.f)(range))) {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            }
            self.left.fetch_sub(1, SeqCst);
        }
    }
}

struct Pool {
    /// Odd while a job is published.
    gen: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    /// Workers that may be reading the current job.
    refs: AtomicUsize,
    /// Held by the one caller that owns the pool.
    busy: AtomicBool,
    /// Parked workers wait here for a new `gen`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    workers: usize,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let threads = rayon::current_num_threads();
        if threads < 2 || std::env::var_os("KILN_NO_SPIN_POOL").is_some() {
            return None;
        }
        let p: &'static Pool = Box::leak(Box::new(Pool {
            gen: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            refs: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            workers: threads - 1,
        }));
        for i in 0..p.workers {
            let spawned = std::thread::Builder::new().name(format!("kiln-worker-{i}")).spawn(move || worker(p));
            if spawned.is_err() {
                return None;
            }
        }
        Some(p)
    })
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    loop {
        // Wait for a new odd gen: spin first, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let g = loop {
            let g = p.gen.load(SeqCst);
            if g != seen && !g.is_multiple_of(2) {
                break g;
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                let waited = start.elapsed();
                if waited > SPIN {
                    let mut guard = p.lock.lock().unwrap_or_else(|e| e.into_inner());
                    p.sleepers.fetch_add(1, SeqCst);
                    loop {
                        let g = p.gen.load(SeqCst);
                        if g != seen && !g.is_multiple_of(2) {
                            break;
                        }
                        guard = p.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    p.sleepers.fetch_sub(1, SeqCst);
                    continue;
                }
                if waited > YIELD_AFTER {
                    // Other runnable threads (rayon's, another process) get the
                    // core; with nothing else to run this returns at once.
                    std::thread::yield_now();
                }
            }
            std::hint::spin_loop();
        };
        seen = g;
        p.refs.fetch_add(1, SeqCst);
        if p.gen.load(SeqCst) == g {
            // SAFETY: the caller keeps the job alive until `refs` is zero,
            // and `gen` still names the job the pointer was published with.
            let job = unsafe { &*p.job.load(SeqCst) };
            job.work();
        }
        p.refs.fetch_sub(1, SeqCst);
    }
}

/// Runs `f` over `chunks` chunks of `0..n` on the pool plus the calling
/// thread. Returns false, having run nothing, when the pool is unavailable
/// or in use.
pub(crate) fn run(n: usize, chunks: usize, f: &(dyn Fn(Range<usize>) + Sync)) -> bool {
    let Some(p) = pool() else { return false };
    if rayon::current_num_threads() != p.workers + 1 || p.busy.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
        return false;
    }
    let per = n.div_ceil(chunks.max(1));
    let chunks = n.div_ceil(per);
    let job =
        Job { f, n, per, chunks, next: AtomicUsize::new(0), left: AtomicUsize::new(chunks), panic: Mutex::new(None) };
    // SAFETY (lifetime erasure): workers reach the job only between the odd
    // and the following even `gen` while counted in `refs`, and this
    // function waits for both before returning.
    let ptr = &job as *const Job<'_> as *mut Job<'static>;
    p.job.store(ptr, SeqCst);
    p.gen.fetch_add(1, SeqCst);
    if p.sleepers.load(SeqCst) > 0 {
        let _g = p.lock.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    job.work();
    let mut spins = 0u32;
    while job.left.load(SeqCst) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            // A worker was descheduled mid-chunk: let it run.
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    p.gen.fetch_add(1, SeqCst);
    while p.refs.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
    p.busy.store(false, SeqCst);
    if let Some(e) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(e);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::simd::parallel_for;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index is visited exactly once, for many back-to-back jobs (the
    /// workers pick up jobs while still spinning) and after idle gaps (parked).
    #[test]
    fn every_index_once() {
        for round in 0..200 {
            let n = 1 + round * 37 % 5000;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(n, 1 << 16, |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
            if round % 50 == 49 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }

    /// Nested loops and concurrent callers fall back to rayon and still
    /// cover everything.
    #[test]
    fn nested_and_concurrent() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..20 {
                        parallel_for(64, 1 << 16, |outer| {
                            for _ in outer {
                                parallel_for(100, 1 << 16, |inner| {
                                    total.fetch_add(inner.len(), Ordering::Relaxed);
                                });
                            }
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 20 * 64 * 100);
    }

    /// A panic in any chunk reaches the caller after every chunk finished,
    /// and the pool stays usable.
    #[test]
    fn panics_propagate() {
        for bad in [0usize, 7] {
            let done = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                parallel_for(8, 1 << 20, |r| {
                    if r.contains(&bad) {
                        panic!("chunk {bad}");
                    }
                    done.fetch_add(r.len(), Ordering::Relaxed);
                })
            }));
            assert!(r.is_err());
            assert_eq!(done.load(Ordering::Relaxed), 7);
        }
        let sum = AtomicUsize::new(0);
        parallel_for(1000, 1 << 16, |r| {
            sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
    }
}
