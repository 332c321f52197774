//! Devices and streams: runtime values that decide where each op runs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The kind of a device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DeviceType {
    /// The host CPU (multi-threaded SIMD backend).
    Cpu,
    /// A GPU (the wgpu backend, a later addition).
    Gpu,
}

/// A device: a type and an index. Arrays are not tied to devices; the stream
/// of each op decides where it runs (memory is unified).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Device {
    /// CPU or GPU.
    pub kind: DeviceType,
    /// Index among devices of that type.
    pub index: usize,
}

impl Device {
    /// The CPU device.
    pub const fn cpu() -> Device {
        Device { kind: DeviceType::Cpu, index: 0 }
    }
    /// The GPU device with `index`.
    pub const fn gpu(index: usize) -> Device {
        Device { kind: DeviceType::Gpu, index }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceType::Cpu => write!(f, "Device(cpu, {})", self.index),
            DeviceType::Gpu => write!(f, "Device(gpu, {})", self.index),
        }
    }
}

/// A stream: an ordered queue of work on one device. Every op records the
/// stream it runs on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Stream {
    /// Unique stream index.
    pub index: usize,
    /// The device the stream runs on.
    pub device: Device,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stream({}, {})", self.device, self.index)
    }
}

static NEXT_STREAM: AtomicUsize = AtomicUsize::new(1);
/// Whether stream 0 (the CPU default stream of the first thread that asks) is taken.
static CPU_ZERO_TAKEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    static DEFAULT_DEVICE: Cell<Device> = const { Cell::new(Device::cpu()) };
    static DEFAULT_STREAM: Cell<Option<Stream>> = const { Cell::new(None) };
    /// This thread's own default stream per device, created on first use.
    static THREAD_STREAMS: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// The default device of this thread (the CPU unless changed).
pub fn default_device() -> Device {
    DEFAULT_DEVICE.with(|d| d.get())
}

/// Sets this thread's default device; the default stream follows it.
pub fn set_default_device(device: Device) {
    DEFAULT_DEVICE.with(|d| d.set(device));
    DEFAULT_STREAM.with(|s| s.set(None));
}

/// This thread's default stream on `device`.
///
/// As in MLX, default streams are kept per device *and per thread*: the first
/// thread to ask for the CPU's gets stream 0, every other thread gets a stream
/// of its own, so work queued by one thread never waits behind another's.
/// [`crate::eval()`] runs the calling thread's default stream on the calling
/// thread itself; [`crate::async_eval`] hands it to the stream's worker.
pub fn default_stream_for(device: Device) -> Stream {
    THREAD_STREAMS.with(|t| {
        if let Some(s) = t.borrow().iter().find(|s| s.device == device) {
            return *s;
        }
        let index = if device == Device::cpu() && !CPU_ZERO_TAKEN.swap(true, Ordering::Relaxed) {
            0
        } else {
            NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
        };
        let s = Stream { index, device };
        t.borrow_mut().push(s);
        s
    })
}

/// The stream ops run on when none is given: this thread's default.
pub fn default_stream() -> Stream {
    DEFAULT_STREAM.with(|s| s.get()).unwrap_or_else(|| default_stream_for(default_device()))
}

/// Sets this thread's default stream.
pub fn set_default_stream(stream: Stream) {
    DEFAULT_STREAM.with(|s| s.set(Some(stream)));
}

/// A new stream on `device`, with its own worker thread (started on first use).
pub fn new_stream(device: Device) -> Stream {
    Stream { index: NEXT_STREAM.fetch_add(1, Ordering::Relaxed), device }
}

/// Runs `f` with `stream` as the default stream, restoring the previous one after.
pub fn with_stream<R>(stream: Stream, f: impl FnOnce() -> R) -> R {
    let prev = DEFAULT_STREAM.with(|s| s.replace(Some(stream)));
    struct Restore(Option<Stream>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFAULT_STREAM.with(|s| s.set(self.0));
        }
    }
    let _r = Restore(prev);
    f()
}
