//! Read-only file mappings: `mmap` on Linux, a plain read elsewhere.
//!
//! Headers are parsed from the mapping; tensor data is read at eval time with
//! [`Source::read_at`], which uses `pread` on the still-open file rather than
//! the mapping, after checking that the file's size and modification time are
//! those it had when opened. A file truncated or rewritten after loading thus
//! gives an error at eval, not a `SIGBUS` or silently mixed data.
//!
//! Remaining caveats of memory-mapped I/O (shared with MLX's loaders): a file
//! truncated by another process *while* its header is being parsed, or while
//! a caller holds a slice from [`Source::bytes`] (e.g. `GgufTensor::bytes`),
//! can still raise `SIGBUS`; a file replaced by rename keeps its old contents
//! visible, which is harmless.

use crate::error::{Error, ErrorKind, Result};
use std::borrow::Cow;
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
        /// The open file, for `pread` and for detecting later changes.
        file: std::fs::File,
        /// The modification time when opened.
        mtime: Option<std::time::SystemTime>,
    },
}

// SAFETY: the mapping is read-only and private; the pointer is only read and
// stays valid until `Drop` unmaps it, so sharing it across threads is sound.
unsafe impl Send for Source {}
// SAFETY: as above, no interior mutability (`File` reads by offset are thread-safe).
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
        let meta =
            file.metadata().map_err(|e| Error::new(ErrorKind::Io, op, format!("Cannot read file {name}: {e}.")))?;
        let len = usize::try_from(meta.len())
            .map_err(|_| Error::new(ErrorKind::Io, op, format!("File {name} is too large to map.")))?;
        #[cfg(target_os = "linux")]
        if len > 0 && meta.is_file() {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only private mapping of `len` bytes of an open
            // file; the result is checked against MAP_FAILED before use.
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
            };
            if ptr != libc::MAP_FAILED {
                let mtime = meta.modified().ok();
                return Ok(Source { inner: Inner::Mapped { ptr: ptr as *const u8, len, file, mtime }, name });
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
            Inner::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
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

    /// An error unless a mapped file still has the size and modification time
    /// it had when opened.
    fn check_unchanged(&self, op: &str) -> Result<()> {
        #[cfg(target_os = "linux")]
        if let Inner::Mapped { len, file, mtime, .. } = &self.inner {
            let changed = match file.metadata() {
                Ok(m) => m.len() != *len as u64 || m.modified().ok() != *mtime,
                Err(_) => true,
            };
            if changed {
                return Err(Error::new(
                    ErrorKind::Io,
                    op,
                    format!("File {} was truncated or modified after it was loaded; load it again.", self.name),
                ));
            }
        }
        let _ = op;
        Ok(())
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`: from memory, or
    /// by `pread` from a mapped file after checking it is unchanged (an error,
    /// not `SIGBUS`, when it was truncated or rewritten since it was opened).
    pub fn read_at(&self, offset: usize, dst: &mut [u8], op: &str) -> Result<()> {
        let range_err =
            || Error::new(ErrorKind::Io, op, format!("Range {offset}+{} lies outside file {}.", dst.len(), self.name));
        let end = offset.checked_add(dst.len()).ok_or_else(range_err)?;
        match &self.inner {
            Inner::Owned(v) => dst.copy_from_slice(v.get(offset..end).ok_or_else(range_err)?),
            #[cfg(target_os = "linux")]
            Inner::Mapped { len, file, .. } => {
                if end > *len {
                    return Err(range_err());
                }
                self.check_unchanged(op)?;
                use std::os::unix::fs::FileExt;
                file.read_exact_at(dst, offset as u64).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        op,
                        format!("Cannot read file {} (truncated after it was loaded?): {e}.", self.name),
                    )
                })?;
                // A change during the read would leave mixed data: check again.
                self.check_unchanged(op)?;
            }
        }
        Ok(())
    }

    /// The bytes `offset..offset + len`: borrowed from memory, or read (as by
    /// [`Source::read_at`]) from a mapped file.
    pub fn range(&self, offset: usize, len: usize, op: &str) -> Result<Cow<'_, [u8]>> {
        if let Inner::Owned(v) = &self.inner {
            let r = offset.checked_add(len).and_then(|e| v.get(offset..e));
            return r.map(Cow::Borrowed).ok_or_else(|| {
                Error::new(ErrorKind::Io, op, format!("Range {offset}+{len} lies outside file {}.", self.name))
            });
        }
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| Error::new(ErrorKind::Io, op, format!("Cannot allocate {len} bytes.")))?;
        v.resize(len, 0);
        self.read_at(offset, &mut v, op)?;
        Ok(Cow::Owned(v))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Inner::Mapped { ptr, len, .. } = self.inner {
            // SAFETY: unmaps exactly the mapping created in `open`; no slice of it
            // outlives `self` because `bytes` borrows `self`.
            unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
        }
    }
}
