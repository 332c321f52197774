//! Reading and writing arrays in the file formats MLX supports: NumPy's
//! `.npy` and `.npz`, `.safetensors` and `.gguf` (MLX's `mx.load`,
//! `mx.save`, `mx.savez`, `mx.savez_compressed`, `mx.save_safetensors`,
//! `mx.save_gguf`).
//!
//! Loading maps the file ([`Source`]) and parses only its header; every array
//! it returns is a lazy node whose [`Load`] primitive copies (and converts,
//! byte-swaps or dequantizes) its own byte range at eval time, so using one
//! tensor of a large file reads only that tensor.
//!
//! Malformed files give an [`ErrorKind::Io`] error naming the file and the
//! problem, never a panic; no allocation is sized by a count or length the
//! file declares before that size has been checked against the file's real
//! size.

mod gguf;
mod mmap;
mod npy;
mod npz;
mod safetensors;

pub use gguf::{
    load_gguf, load_gguf_bytes, read_gguf, read_gguf_bytes, save_gguf, GgmlType, GgufFile, GgufTensor, GgufValue,
};
pub use mmap::Source;
pub use npy::{load_npy, load_npy_bytes, save_npy, to_npy_bytes};
pub use npz::{load_npz, load_npz_bytes, npz_bytes_with_limits, save_npz, Zip64Limits};
pub use safetensors::{load_safetensors, load_safetensors_bytes, save_safetensors};

use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::memory::Buffer;
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Named arrays, as a file holds them (sorted by name).
pub type ArrayMap = BTreeMap<String, Array>;

/// The file formats [`load`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy`: one array.
    Npy,
    /// NumPy `.npz`: a zip of `.npy` files.
    Npz,
    /// Hugging Face `.safetensors`.
    Safetensors,
    /// GGML's `.gguf`.
    Gguf,
}

impl Format {
    /// The format a file name's extension names (`None` for an unknown one).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "npy" => Some(Format::Npy),
            "npz" => Some(Format::Npz),
            "safetensors" => Some(Format::Safetensors),
            "gguf" => Some(Format::Gguf),
            _ => None,
        }
    }
}

/// Metadata a file carries alongside its arrays.
#[derive(Clone, Debug, PartialEq)]
pub enum Metadata {
    /// The format has none (`.npy`, `.npz`).
    None,
    /// `.safetensors`' `__metadata__` string map.
    Strings(BTreeMap<String, String>),
    /// `.gguf` key/value pairs.
    Gguf(BTreeMap<String, GgufValue>),
}

/// What [`load`] returns: one array for `.npy`, named arrays otherwise.
#[derive(Clone, Debug)]
pub enum Loaded {
    /// A `.npy` file's array.
    Array(Array),
    /// Named arrays and the file's metadata.
    Arrays(ArrayMap, Metadata),
}

/// Loads a file, choosing the format from `format` or else the extension
/// (MLX's `mx.load(file, format, return_metadata=True)`).
pub fn load(path: impl AsRef<Path>, format: Option<Format>) -> Result<Loaded> {
    let path = path.as_ref();
    let format = format.or_else(|| Format::from_path(path)).ok_or_else(|| {
        Error::invalid(
            "load",
            format!("Unknown file format for {}: give a format or a known extension.", path.display()),
        )
    })?;
    Ok(match format {
        Format::Npy => Loaded::Array(load_npy(path)?),
        Format::Npz => Loaded::Arrays(load_npz(path)?, Metadata::None),
        Format::Safetensors => {
            let (a, m) = load_safetensors(path)?;
            Loaded::Arrays(a, Metadata::Strings(m))
        }
        Format::Gguf => {
            let (a, m) = load_gguf(path)?;
            Loaded::Arrays(a, Metadata::Gguf(m))
        }
    })
}

/// An I/O or malformed-file error raised by `op`.
pub(crate) fn io_err(op: &str, msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Io, op, msg)
}

/// Writes `bytes` to `path`, mapping OS errors.
pub(crate) fn write_file(op: &str, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_err(op, format!("Cannot write file {}: {e}.", path.display())))
}

/// A bounds-checked little-endian reader over a file's bytes.
pub(crate) struct Cursor<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) op: &'static str,
    pub(crate) name: &'a str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], op: &'static str, name: &'a str) -> Self {
        Cursor { data, pos: 0, op, name }
    }
    /// Bytes left after the position.
    pub(crate) fn remaining(&self) -> usize {
        // Callers may skip fields by moving `pos` past the end; reads then fail.
        self.data.len().saturating_sub(self.pos)
    }
    pub(crate) fn err(&self, msg: impl std::fmt::Display) -> Error {
        io_err(self.op, format!("Malformed file {}: {msg} (at byte {}).", self.name, self.pos))
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format_args!(
                "needs {n} more bytes but only {} remain (truncated or lying header)",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A u64 count or length that must fit in `usize`.
    pub(crate) fn len64(&mut self) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| self.err(format_args!("declared length {v} is too large")))
    }
}

/// Bytes of `numel` elements of `dtype`, checked against overflow.
///
/// The product of the non-zero dimensions must fit too: an empty array of
/// shape `(0, 2^40, 2^40)` holds no bytes, but its strides would overflow.
pub(crate) fn checked_nbytes(op: &str, name: &str, shape: &[usize], itemsize: usize) -> Result<usize> {
    let limit = isize::MAX as usize / 16;
    let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(itemsize.max(1), |acc, &d| acc.checked_mul(d));
    shape
        .iter()
        .try_fold(itemsize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= limit && nonzero.is_some_and(|z| z <= limit))
        .ok_or_else(|| io_err(op, format!("Malformed file {name}: shape {shape:?} has too many elements.")))
}

/// How the bytes of a [`Load`] become elements of its output dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decode {
    /// Elements of the output dtype; byte-swapped when `swap` (big-endian files).
    Raw {
        /// Reverse the bytes of each scalar (each part of a complex).
        swap: bool,
    },
    /// One byte per bool; any non-zero byte reads as `true`.
    Bool,
    /// GGML blocks dequantized to float32.
    Ggml(GgmlType),
}

/// Where a [`Load`] finds its bytes when they are deflated inside a zip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inflate {
    /// Bytes of the inflated stream to skip (the `.npy` header).
    pub(crate) skip: usize,
    /// Exact inflated length of the entry.
    pub(crate) total: usize,
    /// CRC-32 of the inflated entry.
    pub(crate) crc: u32,
}

/// Reads one array's bytes from a file mapping at eval time: a leaf of the
/// graph (no inputs) that copies, byte-swaps, inflates or dequantizes the
/// byte range `offset..offset + len` of its [`Source`].
pub struct Load {
    source: Arc<Source>,
    offset: usize,
    len: usize,
    decode: Decode,
    inflate: Option<Inflate>,
    fortran: bool,
    op: &'static str,
}

impl Load {
    /// Records a lazy array of `shape`/`dtype` read from `source`. Callers have
    /// checked that the range lies in the source and holds enough bytes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn array(
        source: &Arc<Source>,
        op: &'static str,
        offset: usize,
        len: usize,
        shape: Vec<usize>,
        dtype: Dtype,
        decode: Decode,
        inflate: Option<Inflate>,
        fortran: bool,
    ) -> Array {
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= source.bytes().len()));
        let prim = Load { source: source.clone(), offset, len, decode, inflate, fortran, op };
        Array::from_op(shape, dtype, prim, vec![])
    }
}

impl Primitive for Load {
    fn name(&self) -> &'static str {
        "Load"
    }
    fn eval(&self, _backend: &dyn Backend, _inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let out = &outputs[0];
        let nbytes = crate::shape::numel(out.shape) * out.dtype.size();
        let buf = Buffer::alloc(nbytes)?;
        // SAFETY: the buffer owns `nbytes` writable bytes and nothing else refers to it yet.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr(), nbytes) };
        // Plain elements are read straight into the output (no staging copy).
        let direct = self.inflate.is_none() && matches!(self.decode, Decode::Raw { .. });
        let raw = if direct {
            if self.len < nbytes {
                return Err(self.short(self.len, nbytes));
            }
            self.source.read_at(self.offset, dst, self.op)?;
            std::borrow::Cow::Borrowed(&[][..])
        } else {
            self.source.range(self.offset, self.len, self.op)?
        };
        let inflated;
        let bytes: &[u8] = match self.inflate {
            Some(inf) => {
                inflated = npz::inflate(&raw, inf, self.op, self.source.name())?;
                inflated.get(inf.skip..).unwrap_or(&[])
            }
            None => &raw,
        };
        match self.decode {
            Decode::Raw { swap } => {
                if !direct {
                    let src = bytes.get(..nbytes).ok_or_else(|| self.short(bytes.len(), nbytes))?;
                    dst.copy_from_slice(src);
                }
                if swap {
                    let w = if out.dtype == Dtype::C64 { 4 } else { out.dtype.size() };
                    dst.chunks_exact_mut(w).for_each(|c| c.reverse());
                }
            }
            Decode::Bool => {
                let src = bytes.get(..nbytes).ok_or_else(|| self.short(bytes.len(), nbytes))?;
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = (*s != 0) as u8;
                }
            }
            Decode::Ggml(t) => {
                let n = crate::shape::numel(out.shape);
                let need = t.row_bytes(n).ok_or_else(|| self.short(bytes.len(), nbytes))?;
                let src = bytes.get(..need).ok_or_else(|| self.short(bytes.len(), need))?;
                gguf::dequantize_into(t, src, dst);
            }
        }
        Ok(vec![if self.fortran {
            let mut strides = Vec::with_capacity(out.shape.len());
            let mut s = 1isize;
            for &d in out.shape {
                strides.push(s);
                s *= d as isize;
            }
            Data::view(Arc::new(buf), out.shape, 0, strides)
        } else {
            Data::contiguous(buf, out.shape)
        }])
    }
    fn rules(&self) -> Rules {
        const WHY: Rule = Rule::No("Load is a leaf that reads a file: it has no inputs to differentiate or batch.");
        Rules { vjp: WHY, jvp: WHY, vmap: WHY }
    }
    fn is_equivalent(&self, other: &dyn Primitive) -> bool {
        other.as_any().downcast_ref::<Load>().is_some_and(|o| {
            Arc::ptr_eq(&o.source, &self.source)
                && (o.offset, o.len, o.decode, o.inflate, o.fortran)
                    == (self.offset, self.len, self.decode, self.inflate, self.fortran)
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Load {
    fn short(&self, have: usize, need: usize) -> Error {
        io_err(
            self.op,
            format!("Malformed file {}: tensor needs {need} bytes but {have} are stored.", self.source.name()),
        )
    }
}

/// The elements of an array in row-major order as little-endian bytes
/// (evaluates it).
pub(crate) fn array_bytes(a: &Array) -> Result<Vec<u8>> {
    crate::dispatch_dtype!(a.dtype(), T => {
        let v = a.to_vec::<T>()?;
        let mut out = vec![0u8; std::mem::size_of_val(v.as_slice())];
        // SAFETY: every Kiln element type is plain data without padding, so its
        // bytes may be read as u8; the destination holds exactly that many bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr().cast::<u8>(), out.as_mut_ptr(), out.len()) };
        if cfg!(target_endian = "big") {
            let w = if a.dtype() == Dtype::C64 { 4 } else { a.dtype().size() };
            out.chunks_exact_mut(w).for_each(|c| c.reverse());
        }
        Ok(out)
    })
}
