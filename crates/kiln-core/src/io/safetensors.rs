//! Hugging Face `.safetensors`: an 8-byte little-endian header length, a JSON
//! header (`{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
//! "__metadata__": {"key": "value"}}`) and the tensor bytes.
//!
//! The header is read by a small strict JSON parser (depth and size limited);
//! every tensor's byte range is checked to lie inside the data section, match
//! its shape and dtype, and not overlap another's. As in MLX, the 8-bit float
//! types `F8_E4M3`, `F8_E5M2` and `F8_E8M0` load as uint8.

use super::{checked_nbytes, io_err, write_file, ArrayMap, Cursor, Decode, Load, Source};
use crate::dtype::Dtype;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const OP: &str = "load_safetensors";
/// Largest header accepted (the reference implementation's limit).
const MAX_HEADER: usize = 100 << 20;
const MAX_DEPTH: usize = 32;

/// Loads a `.safetensors` file lazily, with its `__metadata__` string map.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<(ArrayMap, BTreeMap<String, String>)> {
    parse(&Arc::new(Source::open(path.as_ref(), OP)?))
}

/// Loads a `.safetensors` image held in memory.
pub fn load_safetensors_bytes(bytes: Vec<u8>) -> Result<(ArrayMap, BTreeMap<String, String>)> {
    parse(&Arc::new(Source::from_bytes(bytes, "<safetensors bytes>")))
}

fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::Bool,
        "U8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => Dtype::U8,
        "I8" => Dtype::I8,
        "U16" => Dtype::U16,
        "I16" => Dtype::I16,
        "U32" => Dtype::U32,
        "I32" => Dtype::I32,
        "U64" => Dtype::U64,
        "I64" => Dtype::I64,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        "C64" => Dtype::C64,
        _ => return None,
    })
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "BOOL",
        Dtype::U8 => "U8",
        Dtype::I8 => "I8",
        Dtype::U16 => "U16",
        Dtype::I16 => "I16",
        Dtype::U32 => "U32",
        Dtype::I32 => "I32",
        Dtype::U64 => "U64",
        Dtype::I64 => "I64",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::C64 => "C64",
    }
}

fn parse(src: &Arc<Source>) -> Result<(ArrayMap, BTreeMap<String, String>)> {
    let data = src.bytes();
    let name = src.name();
    let mut c = Cursor::new(data, OP, name);
    let hlen = c.u64()?;
    if hlen > MAX_HEADER as u64 || hlen > c.remaining() as u64 {
        return Err(c.err(format_args!("header length {hlen} exceeds the file or the 100 MiB limit")));
    }
    let text = c.take(hlen as usize)?;
    let base = c.pos;
    let text = std::str::from_utf8(text).map_err(|_| c.err("the header is not valid UTF-8"))?;
    let mut p = Json { s: text.as_bytes(), i: 0 };
    let root = p.value(0).and_then(|v| {
        p.ws();
        if p.i == p.s.len() {
            Ok(v)
        } else {
            Err(p.fail("trailing characters after the header"))
        }
    });
    let root = root.map_err(|m| io_err(OP, format!("Malformed file {name}: bad JSON header: {m}.")))?;
    let bad = |m: String| io_err(OP, format!("Malformed file {name}: {m}."));
    let Json_::Obj(items) = root else { return Err(bad("the header is not a JSON object".into())) };
    let data_len = data.len() - base;
    let mut meta = BTreeMap::new();
    let mut arrays = ArrayMap::new();
    let mut ranges = Vec::new();
    for (key, v) in items {
        if key == "__metadata__" {
            // MLX's `save_weights` writes `"__metadata__": null`. The parser keeps null, true and
            // false as one literal; none of them carries metadata.
            if matches!(v, Json_::Literal) {
                continue;
            }
            let Json_::Obj(m) = v else { return Err(bad("__metadata__ must be an object or null".into())) };
            for (k, v) in m {
                let Json_::Str(s) = v else { return Err(bad(format!("metadata value of '{k}' is not a string"))) };
                meta.insert(k, s);
            }
            continue;
        }
        let Json_::Obj(fields) = v else { return Err(bad(format!("tensor '{key}' is not an object"))) };
        let (mut dtype, mut shape, mut offs) = (None, None, None);
        for (f, v) in fields {
            match (f.as_str(), v) {
                ("dtype", Json_::Str(s)) => {
                    dtype = Some(parse_dtype(&s).ok_or_else(|| bad(format!("tensor '{key}' has unknown dtype '{s}'")))?)
                }
                ("shape", Json_::Arr(a)) => {
                    shape = Some(ints(&a).ok_or_else(|| bad(format!("tensor '{key}' has a bad shape")))?)
                }
                ("data_offsets", Json_::Arr(a)) => match ints(&a).as_deref() {
                    Some(&[b, e]) => offs = Some((b, e)),
                    _ => return Err(bad(format!("tensor '{key}' has bad data_offsets"))),
                },
                (f, _) => return Err(bad(format!("tensor '{key}' has an unexpected or malformed field '{f}'"))),
            }
        }
        let (Some(dtype), Some(shape), Some((b, e))) = (dtype, shape, offs) else {
            return Err(bad(format!("tensor '{key}' needs dtype, shape and data_offsets")));
        };
        if b > e || e > data_len {
            return Err(bad(format!("tensor '{key}' has data_offsets [{b}, {e}] outside the {data_len} data bytes")));
        }
        let nbytes = checked_nbytes(OP, name, &shape, dtype.size())?;
        if e - b != nbytes {
            return Err(bad(format!("tensor '{key}' holds {} bytes but its shape and dtype need {nbytes}", e - b)));
        }
        ranges.push((b, e, key.clone()));
        let decode =
            if dtype == Dtype::Bool { Decode::Bool } else { Decode::Raw { swap: cfg!(target_endian = "big") } };
        arrays.insert(key, Load::array(src, OP, base + b, nbytes, shape, dtype, decode, None, false));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2)));
        }
    }
    Ok((arrays, meta))
}

/// Non-negative JSON integers as `usize`.
fn ints(a: &[Json_]) -> Option<Vec<usize>> {
    a.iter()
        .map(|v| match v {
            Json_::Num(t) if t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
            _ => None,
        })
        .collect()
}

/// Saves arrays as `.safetensors` with a `__metadata__` string map (omitted
/// when empty), as `mx.save_safetensors` does. Appends `.safetensors` when
/// `path` lacks it.
pub fn save_safetensors(path: impl AsRef<Path>, arrays: &ArrayMap, metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut p = path.as_ref().to_path_buf();
    if p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        let mut s = p.into_os_string();
        s.push(".safetensors");
        p = s.into();
    }
    write_file("save_safetensors", &p, &to_bytes(arrays, metadata)?)
}

/// The `.safetensors` image of `arrays` and `metadata`.
pub(crate) fn to_bytes(arrays: &ArrayMap, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut h = String::from("{");
    let mut first = true;
    let mut sep = |h: &mut String| {
        if !std::mem::take(&mut first) {
            h.push(',');
        }
    };
    if !metadata.is_empty() {
        sep(&mut h);
        h.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            quote(&mut h, k);
            h.push(':');
            quote(&mut h, v);
        }
        h.push('}');
    }
    let mut body = Vec::new();
    for (k, a) in arrays {
        if k == "__metadata__" {
            return Err(io_err("save_safetensors", "'__metadata__' is reserved and cannot name an array."));
        }
        let bytes = super::array_bytes(a)?;
        sep(&mut h);
        quote(&mut h, k);
        let shape: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
        h.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            dtype_name(a.dtype()),
            shape.join(","),
            body.len(),
            body.len() + bytes.len()
        ));
        body.extend_from_slice(&bytes);
    }
    h.push('}');
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + body.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON value (numbers kept as their text).
enum Json_ {
    /// `true`, `false` or `null` (never valid where Kiln reads values).
    Literal,
    Num(String),
    Str(String),
    Arr(Vec<Json_>),
    Obj(Vec<(String, Json_)>),
}

/// A strict JSON parser (RFC 8259) with a nesting limit.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn fail(&self, m: &str) -> String {
        format!("{m} at header byte {}", self.i)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, b: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.fail(&format!("expected '{}'", b as char)))
        }
    }
    fn value(&mut self, depth: usize) -> std::result::Result<Json_, String> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        match self.peek().ok_or_else(|| self.fail("unexpected end"))? {
            b'{' => {
                self.i += 1;
                let mut items: Vec<(String, Json_)> = Vec::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json_::Obj(items));
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(self.fail("expected a string key"));
                    }
                    let k = self.string()?;
                    self.expect(b':')?;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.fail("expected ',' or '}'")),
                    }
                }
                let mut keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return Err(format!("duplicate key \"{}\"", w[0]));
                }
                Ok(Json_::Obj(items))
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json_::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.fail("expected ',' or ']'")),
                    }
                }
                Ok(Json_::Arr(items))
            }
            b'"' => self.string().map(Json_::Str),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                for w in [&b"true"[..], b"false", b"null"] {
                    if self.s[self.i..].starts_with(w) {
                        self.i += w.len();
                        return Ok(Json_::Literal);
                    }
                }
                Err(self.fail("unexpected character"))
            }
        }
    }
    fn digits(&mut self) -> usize {
        let st = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - st
    }
    fn number(&mut self) -> std::result::Result<Json_, String> {
        let st = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(self.fail("bad number"));
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.fail("bad number"));
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.fail("bad number"));
            }
        }
        // The slice is ASCII by construction.
        Ok(Json_::Num(String::from_utf8_lossy(&self.s[st..self.i]).into_owned()))
    }
    fn hex4(&mut self) -> std::result::Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).ok_or_else(|| self.fail("truncated \\u escape"))?;
        let v = std::str::from_utf8(h).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
        let v = v.filter(|_| h.iter().all(|b| b.is_ascii_hexdigit())).ok_or_else(|| self.fail("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or_else(|| self.fail("unterminated string"))?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or_else(|| self.fail("unterminated escape"))?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.fail("unpaired surrogate"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.fail("unpaired surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(cp).ok_or_else(|| self.fail("invalid code point"))?
                        }
                        _ => return Err(self.fail("bad escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(self.fail("control character in string")),
                b => out.push(b),
            }
        }
        // The header was checked to be UTF-8 and escapes produce valid chars.
        String::from_utf8(out).map_err(|_| self.fail("invalid UTF-8 in string"))
    }
}
