//! Buffer allocation with a size-bucketed cache, and MLX's memory API.
//!
//! Every array buffer comes from one process-wide allocator. Freed buffers go
//! into a cache keyed by bucket size (so the next op of the same size reuses
//! them without a system call) while the cache stays under its limit. The
//! statistics (active, peak, cache bytes) count bucket sizes.

use crate::error::{Error, ErrorKind, Result};
use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Alignment of every buffer: one cache line, enough for AVX-512 loads.
pub const ALIGN: usize = 64;

/// Buffers at least this large are aligned to 2 MiB and asked to be backed by
/// transparent huge pages: streaming kernels then stop missing the TLB every
/// 4 KiB, and hardware prefetch runs across the whole buffer.
const HUGE: usize = 4 << 20;
const HUGE_ALIGN: usize = 2 << 20;

fn layout_for(cap: usize) -> Option<Layout> {
    Layout::from_size_align(cap, if cap >= HUGE { HUGE_ALIGN } else { ALIGN }).ok()
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, cap: usize) {
    if cap >= HUGE {
        // SAFETY: [ptr, ptr+cap) is a live allocation we own, aligned to 2 MiB;
        // madvise only changes how the kernel backs it.
        unsafe { libc::madvise(ptr as *mut libc::c_void, cap, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *mut u8, _cap: usize) {}

struct State {
    cache: BTreeMap<usize, Vec<NonNull<u8>>>,
    active: usize,
    peak: usize,
    cached: usize,
    memory_limit: usize,
    cache_limit: usize,
}

// SAFETY: the cached pointers are owned exclusively by the allocator state,
// which is only reached through the mutex.
unsafe impl Send for State {}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            Mutex::new(State {
                cache: BTreeMap::new(),
                active: 0,
                peak: 0,
                cached: 0,
                memory_limit: default_memory_limit(),
                cache_limit: default_memory_limit(),
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// 80% of physical memory (MLX's default), or 8 GiB when unknown.
fn default_memory_limit() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    total.map(|t| t / 10 * 8).unwrap_or(8 << 30)
}

/// Rounds a request to its cache bucket: powers of two up to 4 KiB, then
/// steps of 1/8 of the enclosing power of two (at most 12.5% waste).
fn bucket(size: usize) -> usize {
    if size <= 64 {
        return 64;
    }
    if size <= 4096 {
        return size.next_power_of_two();
    }
    let high_bit = 1usize << (usize::BITS - 1 - size.leading_zeros());
    let step = (high_bit / 8).max(4096);
    size.div_ceil(step) * step
}

/// A raw, 64-byte-aligned allocation owned by one array buffer.
pub struct Buffer {
    ptr: NonNull<u8>,
    /// Requested size in bytes.
    size: usize,
    /// Bucket size actually reserved (0 for empty buffers).
    cap: usize,
}

// SAFETY: a Buffer is plain memory; Kiln only writes it while computing the
// output that owns it (or a donated input nobody else reads), so sharing the
// pointer between threads is sound.
unsafe impl Send for Buffer {}
// SAFETY: see above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Allocates `size` bytes (uninitialised), reusing a cached block when one fits.
    pub fn alloc(size: usize) -> Result<Buffer> {
        if size == 0 {
            return Ok(Buffer { ptr: NonNull::<u64>::dangling().cast(), size: 0, cap: 0 });
        }
        let cap = bucket(size);
        let mut st = state();
        if let Some(list) = st.cache.get_mut(&cap) {
            if let Some(ptr) = list.pop() {
                st.cached -= cap;
                st.active += cap;
                st.peak = st.peak.max(st.active);
                return Ok(Buffer { ptr, size, cap });
            }
        }
        if st.active + cap > st.memory_limit {
            release_cache(&mut st, usize::MAX);
            if st.active + cap > st.memory_limit {
                return Err(Error::new(
                    ErrorKind::OutOfMemory,
                    "malloc",
                    format!(
                        "Unable to allocate {size} bytes: {} bytes are active and the memory limit is {} bytes.",
                        st.active, st.memory_limit
                    ),
                ));
            }
        }
        let layout = layout_for(cap)
            .ok_or_else(|| Error::new(ErrorKind::OutOfMemory, "malloc", format!("Unable to allocate {size} bytes.")))?;
        // SAFETY: layout has non-zero size.
        let mut raw = unsafe { alloc(layout) };
        if raw.is_null() {
            release_cache(&mut st, usize::MAX);
            // SAFETY: as above.
            raw = unsafe { alloc(layout) };
        }
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::new(ErrorKind::OutOfMemory, "malloc", format!("Unable to allocate {size} bytes.")))?;
        advise_huge(raw, cap);
        st.active += cap;
        st.peak = st.peak.max(st.active);
        Ok(Buffer { ptr, size, cap })
    }

    /// Allocates `size` zeroed bytes.
    pub fn zeroed(size: usize) -> Result<Buffer> {
        let b = Buffer::alloc(size)?;
        // SAFETY: the buffer owns `size` writable bytes.
        unsafe { std::ptr::write_bytes(b.ptr.as_ptr(), 0, size) };
        Ok(b)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.size
    }
    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// Bytes reserved for this buffer (its bucket).
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Start of the allocation.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.cap == 0 {
            return;
        }
        let mut st = state();
        st.active -= self.cap;
        if st.cached + self.cap <= st.cache_limit {
            st.cached += self.cap;
            st.cache.entry(self.cap).or_default().push(self.ptr);
        } else {
            // SAFETY: ptr was allocated with this layout and is owned by us.
            unsafe { dealloc(self.ptr.as_ptr(), layout_for(self.cap).expect("valid layout")) };
        }
    }
}

fn release_cache(st: &mut State, keep: usize) {
    while st.cached > keep {
        let Some((&cap, list)) = st.cache.iter_mut().next_back() else { break };
        match list.pop() {
            Some(p) => {
                st.cached -= cap;
                // SAFETY: cached blocks were allocated with this layout.
                unsafe { dealloc(p.as_ptr(), layout_for(cap).expect("valid layout")) };
            }
            None => {
                st.cache.remove(&cap);
            }
        }
    }
}

/// Bytes held by live array buffers.
pub fn get_active_memory() -> usize {
    state().active
}
/// Highest active memory since start or the last [`reset_peak_memory`].
pub fn get_peak_memory() -> usize {
    state().peak
}
/// Resets the peak to the current active memory.
pub fn reset_peak_memory() {
    let mut st = state();
    st.peak = st.active;
}
/// Bytes held in the buffer cache (freed but not returned to the system).
pub fn get_cache_memory() -> usize {
    state().cached
}
/// Sets the memory limit (bytes) and returns the previous one. An allocation
/// that would exceed it (after emptying the cache) fails with an error.
pub fn set_memory_limit(limit: usize) -> usize {
    std::mem::replace(&mut state().memory_limit, limit)
}
/// The memory limit in bytes.
pub fn get_memory_limit() -> usize {
    state().memory_limit
}
/// Sets the cache limit (bytes), trims the cache to it, and returns the previous limit.
pub fn set_cache_limit(limit: usize) -> usize {
    let mut st = state();
    release_cache(&mut st, limit);
    std::mem::replace(&mut st.cache_limit, limit)
}
/// Returns every cached buffer to the system (and, with glibc, asks the C
/// heap to hand its free pages back too, so the resident size drops).
pub fn clear_cache() {
    release_cache(&mut state(), 0);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_waste() {
        for s in [1usize, 63, 65, 4095, 4097, 100_000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let b = bucket(s);
            assert!(b >= s);
            assert!(b <= 64.max(s + s / 8 + 4096), "{s} -> {b}");
        }
    }

    #[test]
    fn huge_request_is_an_error() {
        let e = Buffer::alloc(usize::MAX / 2).err().expect("must fail");
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    }

    #[test]
    fn large_buffers_are_huge_page_aligned() {
        let b = Buffer::zeroed(HUGE + 1).unwrap();
        assert_eq!(b.as_ptr() as usize % HUGE_ALIGN, 0);
        // SAFETY: the buffer owns HUGE + 1 initialised bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(b.as_ptr(), HUGE + 1) };
        s[HUGE] = 3;
        assert_eq!(s.iter().map(|&x| x as usize).sum::<usize>(), 3);
    }

    #[test]
    fn alloc_write_read_roundtrip() {
        let b = Buffer::zeroed(1000).unwrap();
        // SAFETY: the buffer owns 1000 initialised bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(b.as_ptr(), 1000) };
        assert!(s.iter().all(|&x| x == 0));
        s[999] = 7;
        assert_eq!(s[999], 7);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
    }
}
