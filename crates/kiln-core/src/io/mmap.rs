//! Read-only file mappings: `mmap` on Linux, a plain read elsewhere.
//!
//! A mapped file must not be truncated by another process while Kiln holds
//! it (the kernel would raise `SIGBUS` on access), the usual caveat of
//! memory-mapped I/O that MLX's loaders share.

use crate::error::{Error, ErrorKind, Result};
use std::path::Path;

/// The bytes of a loaded file (or of an in-memory image of one), shared by
/// every lazily loaded array that reads from it.
pub struct Source {
    inner: Inner,
    name: String,
}

enum Inner {
    Owned(Vec<u8>),
    #[cfg(target_os = "linux")]
    Mapped {
        ptr: *const u8,
        len: usize,
    },
}

// SAFETY: the mapping is read-only and private; the pointer is only read and
// stays valid until `Drop` unmaps it, so sharing it across threads is sound.
unsafe impl Send for Source {}
// SAFETY: as above, no interior mutability.
unsafe impl Sync for Source {}

impl Source {
    /// Wraps bytes already in memory (e.g. a file received over a network).
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<String>) -> Source {
        Source { inner: Inner::Owned(bytes), name: name.into() }
    }

    /// Maps (or reads) the file at `path`.
    pub fn open(path: &Path, op: &str) -> Result<Source> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::new(ErrorKind::Io, op, format!("Cannot open file {name}: {e}.")))?;
        let len =
            file.metadata().map_err(|e| Error::new(ErrorKind::Io, op, format!("Cannot read file {name}: {e}.")))?.len();
        let len = usize::try_from(len)
            .map_err(|_| Error::new(ErrorKind::Io, op, format!("File {name} is too large to map.")))?;
        #[cfg(target_os = "linux")]
        if len > 0 {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only private mapping of `len` bytes of an open
            // file; the result is checked against MAP_FAILED before use.
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
            };
            if ptr != libc::MAP_FAILED {
                return Ok(Source { inner: Inner::Mapped { ptr: ptr as *const u8, len }, name });
            }
        }
        let mut bytes = Vec::new();
        use std::io::Read;
        let mut file = file;
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::new(ErrorKind::Io, op, format!("Cannot read file {name}: {e}.")))?;
        Ok(Source { inner: Inner::Owned(bytes), name })
    }

    /// All the bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Owned(v) => v,
            #[cfg(target_os = "linux")]
            // SAFETY: the mapping covers `len` readable bytes until `Drop`.
            Inner::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }

    /// The file name (or the label given to in-memory bytes), for errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the bytes are a memory mapping (rather than a copy in memory).
    pub fn is_mapped(&self) -> bool {
        !matches!(self.inner, Inner::Owned(_))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Inner::Mapped { ptr, len } = self.inner {
            // SAFETY: unmaps exactly the mapping created in `open`; no slice of it
            // outlives `self` because `bytes` borrows `self`.
            unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
        }
    }
}
