//! Opt-in kernel timing: with `KILN_PROFILE=1` in the environment, every
//! primitive's kernel is timed and the totals are kept per primitive name
//! and output shape, so [`report`] shows where an evaluation spends its
//! time. Off, it costs one relaxed load per kernel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

type Key = (&'static str, Vec<usize>);
static TOTALS: Mutex<Option<HashMap<Key, (u64, u64)>>> = Mutex::new(None);

/// Whether kernels are being timed (`KILN_PROFILE` set to anything but `0`).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("KILN_PROFILE").is_ok_and(|v| v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Adds one kernel call of `name` producing `shape` that took `nanos`.
pub(crate) fn record(name: &'static str, shape: &[usize], nanos: u64) {
    let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let e = t.get_or_insert_with(HashMap::new).entry((name, shape.to_vec())).or_insert((0, 0));
    e.0 += 1;
    e.1 += nanos;
}

/// The recorded totals, longest first, one line per primitive and output
/// shape: total milliseconds, calls, microseconds per call. Empty when
/// profiling is off.
pub fn report() -> String {
    let t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = t.as_ref() else { return String::new() };
    let mut rows: Vec<_> = t.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    let total: u64 = rows.iter().map(|r| r.1 .1).sum();
    let mut s = format!("kernel time {:.3} ms\n", total as f64 / 1e6);
    for ((name, shape), (calls, ns)) in rows {
        s += &format!(
            "{:>10.3} ms {:>6} calls {:>9.1} us  {name} {shape:?}\n",
            *ns as f64 / 1e6,
            calls,
            *ns as f64 / 1e3 / *calls as f64
        );
    }
    s
}

/// Forgets the recorded totals.
pub fn reset() {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}
