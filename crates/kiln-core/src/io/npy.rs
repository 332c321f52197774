//! NumPy `.npy`: a magic string, a Python-literal header
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`) and the
//! raw elements.
//!
//! Reads versions 1 to 3, little- and big-endian data and Fortran order
//! (loaded as a column-major view, no copy). bfloat16 uses MLX's convention:
//! written as the 2-byte void type `<V2`, and `V2` reads back as bfloat16.
//! `complex128`, strings, objects and structured dtypes are rejected.

use super::{checked_nbytes, io_err, write_file, Cursor, Decode, Load, Source};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::Result;
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8] = b"\x93NUMPY";
const OP: &str = "load_npy";

/// Loads a `.npy` file lazily (MLX's `mx.load` on a `.npy`).
pub fn load_npy(path: impl AsRef<Path>) -> Result<Array> {
    let src = Arc::new(Source::open(path.as_ref(), OP)?);
    let len = src.bytes().len();
    parse(&src, 0, len, OP)
}

/// Loads a `.npy` image held in memory.
pub fn load_npy_bytes(bytes: Vec<u8>) -> Result<Array> {
    let src = Arc::new(Source::from_bytes(bytes, "<npy bytes>"));
    let len = src.bytes().len();
    parse(&src, 0, len, OP)
}

/// A parsed header: dtype, shape, how to decode, order, and header length.
pub(crate) struct Header {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) decode: Decode,
    pub(crate) fortran: bool,
    /// Bytes before the data.
    pub(crate) data_start: usize,
    /// Bytes of data the header implies.
    pub(crate) nbytes: usize,
}

/// Parses the `.npy` stored at `offset..offset + len` of `src` into a lazy array.
pub(crate) fn parse(src: &Arc<Source>, offset: usize, len: usize, op: &'static str) -> Result<Array> {
    let bytes = &src.bytes()[offset..offset + len];
    let h = parse_header(bytes, op, src.name())?;
    if bytes.len() - h.data_start < h.nbytes {
        return Err(io_err(
            op,
            format!(
                "Malformed file {}: the header declares {} bytes of data but {} follow it (truncated).",
                src.name(),
                h.nbytes,
                bytes.len() - h.data_start
            ),
        ));
    }
    Ok(Load::array(src, op, offset + h.data_start, h.nbytes, h.shape, h.dtype, h.decode, None, h.fortran))
}

/// Parses the magic and header of a `.npy` image (the data need not follow).
pub(crate) fn parse_header(bytes: &[u8], op: &'static str, name: &str) -> Result<Header> {
    let mut c = Cursor::new(bytes, op, name);
    if c.take(MAGIC.len()).ok() != Some(MAGIC) {
        return Err(c.err("not a .npy file (bad magic string)"));
    }
    let major = c.u8()?;
    let _minor = c.u8()?;
    let hlen = match major {
        1 => c.u16()? as usize,
        2 | 3 => c.u32()? as usize,
        v => return Err(c.err(format_args!("unsupported .npy version {v}"))),
    };
    let text = c.take(hlen)?;
    let data_start = c.pos;
    // Versions 1 and 2 are latin-1; the dict itself must be ASCII for us.
    let text = std::str::from_utf8(text).map_err(|_| c.err("the header is not valid text"))?;
    let mut p = Lit { s: text.as_bytes(), i: 0 };
    let v = p.value(0).map_err(|m| c.err(format_args!("bad header: {m}")))?;
    p.ws();
    if p.i != p.s.len() {
        return Err(c.err("bad header: trailing characters after the dictionary"));
    }
    let Value::Dict(items) = v else { return Err(c.err("bad header: not a dictionary")) };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (k, v) in items {
        match (k.as_str(), v) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("descr", _) => return Err(c.err("structured dtypes are not supported")),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => {
                let dims: Option<Vec<usize>> =
                    t.into_iter().map(|d| if let Value::Int(i) = d { usize::try_from(i).ok() } else { None }).collect();
                shape = Some(dims.ok_or_else(|| c.err("bad header: shape must be a tuple of non-negative ints"))?);
            }
            (k, _) => return Err(c.err(format_args!("bad header: unexpected or malformed key '{k}'"))),
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(c.err("bad header: 'descr', 'fortran_order' and 'shape' are required"));
    };
    let (dtype, big) = parse_descr(&descr).ok_or_else(|| c.err(format_args!("unsupported dtype '{descr}'")))?;
    let nbytes = checked_nbytes(op, name, &shape, dtype.size())?;
    let decode = if dtype == Dtype::Bool {
        Decode::Bool
    } else {
        Decode::Raw { swap: dtype.size() > 1 && big != cfg!(target_endian = "big") }
    };
    let fortran = fortran && shape.len() > 1;
    Ok(Header { dtype, shape, decode, fortran, data_start, nbytes })
}

/// `'<f4'` → (float32, big-endian = false).
fn parse_descr(d: &str) -> Option<(Dtype, bool)> {
    let (order, code) = match d.as_bytes().first()? {
        b'<' | b'|' | b'=' => (false, &d[1..]),
        b'>' => (true, &d[1..]),
        _ => (false, d),
    };
    let dt = match code {
        "b1" | "?" => Dtype::Bool,
        "u1" | "B" => Dtype::U8,
        "u2" => Dtype::U16,
        "u4" => Dtype::U32,
        "u8" => Dtype::U64,
        "i1" | "b" => Dtype::I8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "f2" | "e" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "c8" => Dtype::C64,
        "V2" => Dtype::BF16,
        _ => return None,
    };
    Some((dt, order))
}

fn descr(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "|b1",
        Dtype::U8 => "|u1",
        Dtype::U16 => "<u2",
        Dtype::U32 => "<u4",
        Dtype::U64 => "<u8",
        Dtype::I8 => "|i1",
        Dtype::I16 => "<i2",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::F16 => "<f2",
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::BF16 => "<V2",
        Dtype::C64 => "<c8",
    }
}

/// The `.npy` image of an array (evaluates it), row-major.
pub fn to_npy_bytes(a: &Array) -> Result<Vec<u8>> {
    let shape = match a.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut h = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(a.dtype()));
    let v1 = h.len() + 11 <= u16::MAX as usize;
    let pre = if v1 { 10 } else { 12 };
    while !(pre + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = Vec::with_capacity(pre + h.len() + a.nbytes());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&super::array_bytes(a)?);
    Ok(out)
}

/// Saves an array as `.npy`, appending the extension when `path` lacks it
/// (as `mx.save` does). bfloat16 is written as `<V2`, as MLX does.
pub fn save_npy(path: impl AsRef<Path>, a: &Array) -> Result<()> {
    let mut p = path.as_ref().to_path_buf();
    if p.extension().and_then(|e| e.to_str()) != Some("npy") {
        let mut s = p.into_os_string();
        s.push(".npy");
        p = s.into();
    }
    write_file("save_npy", &p, &to_npy_bytes(a)?)
}

/// A Python literal in a `.npy` header.
enum Value {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

/// A parser for the Python literals `.npy` headers use.
struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        if depth > 8 {
            return Err("nested too deeply".into());
        }
        match self.peek().ok_or("unexpected end")? {
            b'\'' | b'"' => self.string().map(Value::Str),
            b'{' => {
                self.i += 1;
                let mut items = Vec::new();
                while !self.eat(b'}') {
                    // A header has three keys; a long dict only costs time.
                    if items.len() >= 16 {
                        return Err("too many keys".into());
                    }
                    let Value::Str(k) = self.value(depth + 1)? else { return Err("keys must be strings".into()) };
                    if !self.eat(b':') {
                        return Err("expected ':'".into());
                    }
                    if items.iter().any(|(x, _)| *x == k) {
                        return Err(format!("duplicate key '{k}'"));
                    }
                    items.push((k, self.value(depth + 1)?));
                    if !self.eat(b',') && self.peek() != Some(b'}') {
                        return Err("expected ',' or '}'".into());
                    }
                }
                Ok(Value::Dict(items))
            }
            open @ (b'(' | b'[') => {
                self.i += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                while !self.eat(close) {
                    if items.len() >= 64 {
                        return Err("too many dimensions".into());
                    }
                    items.push(self.value(depth + 1)?);
                    if !self.eat(b',') && self.peek() != Some(close) {
                        return Err("expected ',' or a closing bracket".into());
                    }
                }
                // A list is a structured dtype description.
                if open == b'[' {
                    return Err("lists (structured dtypes) are not supported".into());
                }
                Ok(Value::Tuple(items))
            }
            b'0'..=b'9' => {
                let st = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[st..self.i]).map_err(|_| "bad integer")?;
                let v = t.parse::<u64>().map_err(|_| format!("integer {t} is out of range"))?;
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1; // Python 2 long suffix
                }
                Ok(Value::Int(v))
            }
            _ => {
                for (w, b) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if self.s[self.i..].starts_with(w) {
                        self.i += w.len();
                        return Ok(Value::Bool(b));
                    }
                }
                Err(format!("unexpected character '{}'", self.s[self.i].escape_ascii()))
            }
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = self.s[self.i];
        self.i += 1;
        let st = self.i;
        while self.i < self.s.len() && self.s[self.i] != q {
            if self.s[self.i] == b'\\' {
                return Err("escapes in strings are not supported".into());
            }
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err("unterminated string".into());
        }
        let out = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
        self.i += 1;
        Ok(out)
    }
}
