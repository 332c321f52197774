//! GGML's `.gguf`: a header, typed metadata key/value pairs, tensor
//! descriptions and aligned tensor data.
//!
//! Reads versions 2 and 3 and every metadata value type (numbers, bools,
//! strings and nested arrays). Tensor types F32, F16, BF16, F64, I8, I16,
//! I32 and I64 load as their own dtypes; the block-quantized types Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and
//! Q8_K, and the non-linear IQ4_NL and IQ4_XS are **dequantized to float32**
//! at eval time, matching the `gguf` Python package's `gguf.quants` (MLX
//! converts Q4_0/Q4_1/Q8_0 to affine-quantized triples and other
//! quantizations to float16; Kiln keeps full precision). Other GGML types
//! are rejected with an error naming the type id. [`read_gguf`] exposes each
//! tensor's type, shape and raw bytes ([`GgufTensor`]) for callers that want
//! the quantized blocks.
//!
//! GGML lists dimensions fastest-first; Kiln shapes are the reverse, as in MLX.

use super::{checked_nbytes, io_err, write_file, ArrayMap, Cursor, Decode, Load, Source};
use crate::array::Array;
use crate::dtype::{f16, Dtype};
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const OP: &str = "load_gguf";
const MAX_DIMS: usize = 4;
const MAX_NESTING: usize = 8;
const DEFAULT_ALIGNMENT: usize = 32;

/// A GGML tensor type that Kiln can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// 32 4-bit values and a float16 scale per block (18 bytes).
    Q4_0,
    /// 32 4-bit values, a float16 scale and minimum per block (20 bytes).
    Q4_1,
    /// 32 5-bit values and a float16 scale per block (22 bytes).
    Q5_0,
    /// 32 5-bit values, a float16 scale and minimum per block (24 bytes).
    Q5_1,
    /// 32 8-bit values and a float16 scale per block (34 bytes).
    Q8_0,
    /// 256 4-bit values in 8 sub-blocks with 6-bit scales and minimums (144 bytes).
    Q4_K,
    /// 256 5-bit values in 8 sub-blocks with 6-bit scales and minimums (176 bytes).
    Q5_K,
    /// 256 6-bit values in 16 sub-blocks with 8-bit scales (210 bytes).
    Q6_K,
    /// 256 2-bit values in 16 sub-blocks with 4-bit scales and minimums (84 bytes).
    Q2_K,
    /// 256 3-bit values in 16 sub-blocks with 6-bit scales (110 bytes).
    Q3_K,
    /// 256 8-bit values and a float32 scale, plus 16 partial sums (292 bytes).
    Q8_K,
    /// 32 4-bit indices into a fixed non-linear table and a float16 scale (18 bytes).
    IQ4_NL,
    /// 256 4-bit non-linear indices in 8 sub-blocks with 6-bit scales (136 bytes).
    IQ4_XS,
    /// int8.
    I8,
    /// int16.
    I16,
    /// int32.
    I32,
    /// int64.
    I64,
    /// float64.
    F64,
    /// bfloat16.
    BF16,
}

impl GgmlType {
    /// The type for a GGML type id (`None` for ids Kiln does not support).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            10 => Q2_K,
            11 => Q3_K,
            15 => Q8_K,
            20 => IQ4_NL,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            _ => return None,
        })
    }
    /// The GGML type id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q2_K => 10,
            Q3_K => 11,
            Q8_K => 15,
            IQ4_NL => 20,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
        }
    }
    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL => 32,
            Q4_K | Q5_K | Q6_K | Q2_K | Q3_K | Q8_K | IQ4_XS => 256,
            _ => 1,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q2_K => 84,
            Q3_K => 110,
            Q8_K => 292,
            IQ4_NL => 18,
            IQ4_XS => 136,
            I8 => 1,
            F16 | BF16 | I16 => 2,
            F32 | I32 => 4,
            F64 | I64 => 8,
        }
    }
    /// Whether the type is block-quantized.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
    /// The dtype a loaded tensor of this type has (float32 for quantized types).
    pub fn dtype(self) -> Dtype {
        use GgmlType::*;
        match self {
            F16 => Dtype::F16,
            BF16 => Dtype::BF16,
            F64 => Dtype::F64,
            I8 => Dtype::I8,
            I16 => Dtype::I16,
            I32 => Dtype::I32,
            I64 => Dtype::I64,
            _ => Dtype::F32,
        }
    }
    /// Bytes of `n` elements (`None` unless `n` is whole blocks).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_size())
            .then(|| n / self.block_size())
            .and_then(|b| b.checked_mul(self.block_bytes()))
    }
    fn from_dtype(d: Dtype) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match d {
            Dtype::F32 => F32,
            Dtype::F16 => F16,
            Dtype::BF16 => BF16,
            Dtype::F64 => F64,
            Dtype::I8 => I8,
            Dtype::I16 => I16,
            Dtype::I32 => I32,
            Dtype::I64 => I64,
            _ => return None,
        })
    }
}

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT32`.
    F32(f32),
    /// `FLOAT64`.
    F64(f64),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (UTF-8).
    String(String),
    /// `ARRAY`: elements of one type (arrays may nest).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        use GgufValue::*;
        match self {
            U8(_) => 0,
            I8(_) => 1,
            U16(_) => 2,
            I16(_) => 3,
            U32(_) => 4,
            I32(_) => 5,
            F32(_) => 6,
            Bool(_) => 7,
            String(_) => 8,
            Array(_) => 9,
            U64(_) => 10,
            I64(_) => 11,
            F64(_) => 12,
        }
    }

    /// The value as an array, as MLX returns GGUF metadata: a 0-d array for a
    /// number or bool, a 1-d array for an array of numbers or bools (`None`
    /// for strings, arrays of strings and nested arrays).
    pub fn to_array(&self) -> Option<Array> {
        use GgufValue::*;
        Some(match self {
            U8(v) => crate::Array::scalar(*v),
            I8(v) => crate::Array::scalar(*v),
            U16(v) => crate::Array::scalar(*v),
            I16(v) => crate::Array::scalar(*v),
            U32(v) => crate::Array::scalar(*v),
            I32(v) => crate::Array::scalar(*v),
            U64(v) => crate::Array::scalar(*v),
            I64(v) => crate::Array::scalar(*v),
            F32(v) => crate::Array::scalar(*v),
            F64(v) => crate::Array::scalar(*v),
            Bool(v) => crate::Array::scalar(*v),
            String(_) => return None,
            Array(items) => {
                let parts: Option<Vec<crate::Array>> = items.iter().map(|v| v.to_array()).collect();
                let parts = parts?;
                match parts.first() {
                    None => crate::Array::from_slice::<f32>(&[], &[0]).ok()?,
                    Some(p) if p.ndim() == 0 => {
                        let flat: Vec<crate::Array> =
                            parts.iter().map(|p| crate::ops::reshape(p, &[1])).collect::<crate::Result<_>>().ok()?;
                        crate::ops::concatenate(&flat, Some(0)).ok()?
                    }
                    Some(_) => return None,
                }
            }
        })
    }
}

/// One tensor of a GGUF file: its type, shape and raw (possibly quantized) bytes.
#[derive(Clone)]
pub struct GgufTensor {
    /// The tensor's name.
    pub name: String,
    /// The GGML type of its elements.
    pub ggml_type: GgmlType,
    /// Kiln shape (GGML's dimensions reversed).
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub nbytes: usize,
    source: Arc<Source>,
}

impl GgufTensor {
    /// The raw bytes as stored (quantized blocks for quantized types).
    pub fn bytes(&self) -> &[u8] {
        &self.source.bytes()[self.offset..self.offset + self.nbytes]
    }
    /// The tensor as a lazy array (quantized types dequantize to float32).
    pub fn to_array(&self) -> Array {
        let decode = if self.ggml_type.is_quantized() {
            Decode::Ggml(self.ggml_type)
        } else {
            Decode::Raw { swap: cfg!(target_endian = "big") }
        };
        let dtype = self.ggml_type.dtype();
        Load::array(&self.source, OP, self.offset, self.nbytes, self.shape.clone(), dtype, decode, None, false)
    }
}

impl std::fmt::Debug for GgufTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufTensor({}, {:?}, {:?}, {} bytes)", self.name, self.ggml_type, self.shape, self.nbytes)
    }
}

/// A parsed GGUF file: version, metadata and tensor descriptions.
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Data alignment in bytes (`general.alignment`, 32 by default).
    pub alignment: usize,
    /// Metadata key/value pairs.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
}

/// Parses a GGUF file's header (tensor data stays in the mapping).
pub fn read_gguf(path: impl AsRef<Path>) -> Result<GgufFile> {
    parse(&Arc::new(Source::open(path.as_ref(), OP)?))
}

/// Parses a GGUF image held in memory.
pub fn read_gguf_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
    parse(&Arc::new(Source::from_bytes(bytes, "<gguf bytes>")))
}

/// Loads a `.gguf` file lazily, with its metadata (MLX's `mx.load` with
/// `return_metadata=True`; quantized tensors dequantize to float32).
pub fn load_gguf(path: impl AsRef<Path>) -> Result<(ArrayMap, BTreeMap<String, GgufValue>)> {
    let f = read_gguf(path)?;
    Ok((f.tensors.iter().map(|t| (t.name.clone(), t.to_array())).collect(), f.metadata))
}

/// Loads a `.gguf` image held in memory.
pub fn load_gguf_bytes(bytes: Vec<u8>) -> Result<(ArrayMap, BTreeMap<String, GgufValue>)> {
    let f = read_gguf_bytes(bytes)?;
    Ok((f.tensors.iter().map(|t| (t.name.clone(), t.to_array())).collect(), f.metadata))
}

fn string(c: &mut Cursor<'_>) -> Result<String> {
    let n = c.len64()?;
    let b = c.take(n)?;
    String::from_utf8(b.to_vec()).map_err(|_| c.err("string is not valid UTF-8"))
}

fn value(c: &mut Cursor<'_>, ty: u32, depth: usize) -> Result<GgufValue> {
    use GgufValue as V;
    Ok(match ty {
        0 => V::U8(c.u8()?),
        1 => V::I8(c.u8()? as i8),
        2 => V::U16(c.u16()?),
        3 => V::I16(c.u16()? as i16),
        4 => V::U32(c.u32()?),
        5 => V::I32(c.u32()? as i32),
        6 => V::F32(f32::from_bits(c.u32()?)),
        7 => match c.u8()? {
            0 => V::Bool(false),
            1 => V::Bool(true),
            b => return Err(c.err(format_args!("bool value {b} is neither 0 nor 1"))),
        },
        8 => V::String(string(c)?),
        9 => {
            if depth >= MAX_NESTING {
                return Err(c.err("metadata arrays nested too deeply"));
            }
            let ety = c.u32()?;
            let n = c.len64()?;
            // Every element takes at least one byte: the count cannot exceed what is left.
            if n > c.remaining() {
                return Err(c.err(format_args!("array of {n} elements exceeds the file")));
            }
            let mut items = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                items.push(value(c, ety, depth + 1)?);
            }
            V::Array(items)
        }
        10 => V::U64(c.u64()?),
        11 => V::I64(c.u64()? as i64),
        12 => V::F64(f64::from_bits(c.u64()?)),
        t => return Err(c.err(format_args!("unknown metadata value type {t}"))),
    })
}

fn parse(src: &Arc<Source>) -> Result<GgufFile> {
    let data = src.bytes();
    let mut c = Cursor::new(data, OP, src.name());
    if c.take(4).ok() != Some(b"GGUF") {
        return Err(c.err("not a GGUF file (bad magic)"));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(c.err(format_args!("unsupported GGUF version {version}")));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = string(&mut c)?;
        let ty = c.u32()?;
        let v = value(&mut c, ty, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(c.err(format_args!("duplicate metadata key '{key}'")));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
        Some(_) => return Err(c.err("general.alignment must be a power-of-two uint32")),
    };
    struct Info {
        name: String,
        ty: GgmlType,
        shape: Vec<usize>,
        off: usize,
        nbytes: usize,
    }
    let mut infos: Vec<Info> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let name = string(&mut c)?;
        let nd = c.u32()? as usize;
        if nd > MAX_DIMS {
            return Err(c.err(format_args!("tensor '{name}' has {nd} dimensions (at most {MAX_DIMS})")));
        }
        let mut ne = Vec::with_capacity(nd);
        for _ in 0..nd {
            ne.push(c.len64()?);
        }
        let id = c.u32()?;
        let ty = GgmlType::from_id(id)
            .ok_or_else(|| c.err(format_args!("tensor '{name}' has unsupported GGML type {id}")))?;
        let off = c.len64()?;
        if !off.is_multiple_of(alignment) {
            return Err(c.err(format_args!("tensor '{name}' data offset {off} is not aligned to {alignment}")));
        }
        if ne.first().is_some_and(|&d| !d.is_multiple_of(ty.block_size())) {
            return Err(c.err(format_args!("tensor '{name}' rows are not whole {:?} blocks", ty)));
        }
        let shape: Vec<usize> = ne.iter().rev().copied().collect();
        let n = checked_nbytes(OP, src.name(), &shape, 1)?;
        let nbytes = ty.row_bytes(n).ok_or_else(|| c.err(format_args!("tensor '{name}' is too large")))?;
        if !names.insert(name.clone()) {
            return Err(c.err(format_args!("duplicate tensor '{name}'")));
        }
        infos.push(Info { name, ty, shape, off, nbytes });
    }
    let base = c.pos.div_ceil(alignment).checked_mul(alignment).filter(|&b| b <= data.len() || infos.is_empty());
    let base = base.ok_or_else(|| c.err("tensor data section starts past the end of the file"))?;
    let avail = data.len().saturating_sub(base);
    let mut ranges: Vec<(usize, usize, &str)> = Vec::with_capacity(infos.len());
    for i in &infos {
        if i.off.checked_add(i.nbytes).is_none_or(|e| e > avail) {
            return Err(io_err(
                OP,
                format!(
                    "Malformed file {}: tensor '{}' ({} bytes at offset {}) lies outside the {avail} data bytes.",
                    src.name(),
                    i.name,
                    i.nbytes,
                    i.off
                ),
            ));
        }
        ranges.push((i.off, i.off + i.nbytes, &i.name));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(io_err(
                OP,
                format!("Malformed file {}: tensors '{}' and '{}' overlap.", src.name(), w[0].2, w[1].2),
            ));
        }
    }
    let tensors = infos
        .into_iter()
        .map(|i| GgufTensor {
            name: i.name,
            ggml_type: i.ty,
            shape: i.shape,
            offset: base + i.off,
            nbytes: i.nbytes,
            source: src.clone(),
        })
        .collect();
    Ok(GgufFile { version, alignment, metadata, tensors })
}

/// The non-linear 4-bit code book of IQ4_NL and IQ4_XS.
const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Scale and minimum `j` (0..8) of a Q4_K/Q5_K block's 12 packed 6-bit values.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// One Q4_K (`FIVE = false`) or Q5_K block: 4 groups of 64 values, each two
/// sub-blocks of 32 with their own 6-bit scale and minimum.
#[inline(always)]
fn kquant<const FIVE: bool>(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let dmin = h(b, 2);
    let scales = &b[4..16];
    let (qh, qs): (&[u8; 32], &[u8; 128]) = if FIVE {
        (b[16..48].try_into().unwrap(), b[48..176].try_into().unwrap())
    } else {
        (&[0; 32], b[16..144].try_into().unwrap())
    };
    let y: &mut [f32; 256] = (&mut y[..256]).try_into().unwrap();
    for g in 0..4 {
        let (s1, m1) = scale_min_k4(2 * g, scales);
        let (s2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, m1, d2, m2) = (d * s1, dmin * m1, d * s2, dmin * m2);
        for l in 0..32 {
            let q = qs[32 * g + l];
            let lo = (q & 0xF) as u32 + (((qh[l] >> (2 * g)) & 1) as u32) * 16;
            let hi = (q >> 4) as u32 + (((qh[l] >> (2 * g + 1)) & 1) as u32) * 16;
            y[64 * g + l] = d1 * lo as f32 - m1;
            y[64 * g + 32 + l] = d2 * hi as f32 - m2;
        }
    }
}

/// Dequantizes one block into `y` (`block_size` values).
fn dequant_block(t: GgmlType, b: &[u8], y: &mut [f32]) {
    use GgmlType::*;
    match t {
        Q4_0 | Q4_1 => {
            let d = h(b, 0);
            let (m, qs) = if t == Q4_0 { (-8.0 * d, &b[2..18]) } else { (h(b, 2), &b[4..20]) };
            for j in 0..16 {
                y[j] = (qs[j] & 0xF) as f32 * d + m;
                y[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        Q5_0 | Q5_1 => {
            let d = h(b, 0);
            let (m, rest) = if t == Q5_0 { (-16.0 * d, &b[2..22]) } else { (h(b, 2), &b[4..24]) };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            for j in 0..16 {
                let lo = (qs[j] & 0xF) as u32 | ((qh >> j) & 1) << 4;
                let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                y[j] = lo as f32 * d + m;
                y[j + 16] = hi as f32 * d + m;
            }
        }
        Q8_0 => {
            let d = h(b, 0);
            for j in 0..32 {
                y[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        Q4_K => kquant::<false>(b, y),
        Q5_K => kquant::<true>(b, y),
        Q6_K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = h(b, 208);
            for half in 0..2 {
                let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                let y = &mut y[128 * half..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        Q2_K => {
            // scales[16] (low nibble: scale, high: minimum), qs[64], d, dmin.
            let (sc, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (h(b, 80), h(b, 82));
            for (i, v) in y[..256].iter_mut().enumerate() {
                let (half, shift, l) = (i / 128, (i / 32) % 4, i % 32);
                let q = (qs[32 * half + l] >> (2 * shift)) & 3;
                let s = sc[i / 16];
                let (dl, ml) = (d * (s & 0xF) as f32, dmin * (s >> 4) as f32);
                *v = dl * q as f32 - ml;
            }
        }
        Q3_K => {
            // hmask[32], qs[64], 16 6-bit scales packed in 12 bytes, d.
            let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
            let d = h(b, 108);
            let mut dl = [0f32; 16];
            for (j, o) in dl.iter_mut().enumerate() {
                let lo = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
                let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
                *o = d * ((lo | (hi << 4)) as i8 - 32) as f32;
            }
            for (i, v) in y[..256].iter_mut().enumerate() {
                let (half, shift, l) = (i / 128, (i / 32) % 4, i % 32);
                let lo = ((qs[32 * half + l] >> (2 * shift)) & 3) as i8;
                // The high bit *clear* subtracts 4.
                let hbit = (hmask[l] >> (4 * half + shift)) & 1;
                let q = lo - (((hbit ^ 1) << 2) as i8);
                *v = dl[i / 16] * q as f32;
            }
        }
        Q8_K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            for (v, &q) in y[..256].iter_mut().zip(&b[4..260]) {
                *v = d * (q as i8) as f32;
            }
        }
        IQ4_NL => {
            let d = h(b, 0);
            for l in 0..16 {
                y[l] = d * IQ4_VALUES[(b[2 + l] & 0xF) as usize] as f32;
                y[l + 16] = d * IQ4_VALUES[(b[2 + l] >> 4) as usize] as f32;
            }
        }
        IQ4_XS => {
            // d, scales_h (u16: 2 bits per sub-block), scales_l[4] (nibbles), qs[128].
            let d = h(b, 0);
            let sh = u16::from_le_bytes([b[2], b[3]]);
            let (sl, qs) = (&b[4..8], &b[8..136]);
            for ib in 0..8 {
                let lo = (sl[ib / 2] >> (4 * (ib % 2))) & 0xF;
                let hi = ((sh >> (2 * ib)) & 3) as u8;
                let dl = d * ((lo | (hi << 4)) as i8 - 32) as f32;
                let (q, y) = (&qs[16 * ib..16 * ib + 16], &mut y[32 * ib..32 * ib + 32]);
                for l in 0..16 {
                    y[l] = dl * IQ4_VALUES[(q[l] & 0xF) as usize] as f32;
                    y[l + 16] = dl * IQ4_VALUES[(q[l] >> 4) as usize] as f32;
                }
            }
        }
        _ => unreachable!("plain types are not dequantized"),
    }
}

/// Dequantizes whole blocks of `src` into float32 little-endian bytes in `dst`.
pub(crate) fn dequantize_into(t: GgmlType, src: &[u8], dst: &mut [u8]) {
    use rayon::prelude::*;
    let (bs, bb) = (t.block_size(), t.block_bytes());
    // SAFETY: every bit pattern is a valid f32; `align_to_mut` only reinterprets
    // the aligned middle part, and the fallback below handles any remainder.
    let (pre, mid, post) = unsafe { dst.align_to_mut::<f32>() };
    if pre.is_empty() && post.is_empty() && cfg!(target_endian = "little") {
        mid.par_chunks_mut(bs).zip(src.par_chunks(bb)).with_min_len(256).for_each(|(out, blk)| {
            dequant_block(t, blk, out);
        });
        return;
    }
    dst.par_chunks_mut(bs * 4).zip(src.par_chunks(bb)).with_min_len(256).for_each(|(out, blk)| {
        let mut y = [0f32; 256];
        dequant_block(t, blk, &mut y[..bs]);
        for (o, v) in out.chunks_exact_mut(4).zip(&y[..bs]) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    });
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    use GgufValue as V;
    match v {
        V::U8(x) => out.push(*x),
        V::I8(x) => out.push(*x as u8),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Bool(x) => out.push(*x as u8),
        V::String(s) => write_str(out, s),
        V::Array(items) => {
            let ty = items.first().map_or(0, |v| v.type_id());
            if items.iter().any(|v| v.type_id() != ty) {
                return Err(io_err("save_gguf", "GGUF metadata arrays must hold values of one type."));
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for v in items {
                write_value(out, v)?;
            }
        }
    }
    Ok(())
}

/// The GGUF (version 3) image of `arrays` and `metadata`.
pub(crate) fn to_bytes(arrays: &ArrayMap, metadata: &BTreeMap<String, GgufValue>) -> Result<Vec<u8>> {
    const W: &str = "save_gguf";
    let align = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
        Some(_) => return Err(io_err(W, "general.alignment must be a power-of-two uint32.")),
    };
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(arrays.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        write_value(&mut out, v)?;
    }
    let mut body = Vec::new();
    for (name, a) in arrays {
        let ty = GgmlType::from_dtype(a.dtype())
            .ok_or_else(|| io_err(W, format!("Array '{name}' has dtype {}, which GGUF cannot hold.", a.dtype())))?;
        if a.ndim() > MAX_DIMS {
            return Err(io_err(W, format!("Array '{name}' has {} dimensions; GGUF holds at most 4.", a.ndim())));
        }
        write_str(&mut out, name);
        out.extend_from_slice(&(a.ndim() as u32).to_le_bytes());
        for &d in a.shape().iter().rev() {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&ty.id().to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        body.extend_from_slice(&super::array_bytes(a)?);
        body.resize(body.len().div_ceil(align) * align, 0);
    }
    out.resize(out.len().div_ceil(align) * align, 0);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Saves arrays and metadata as `.gguf` (MLX's `mx.save_gguf`). Dtypes
/// float32, float16, bfloat16, float64, int8, int16, int32 and int64 are
/// written (MLX writes only float32, float16, int8, int16 and int32); arrays
/// have at most 4 dimensions. Appends `.gguf` when `path` lacks it.
pub fn save_gguf(path: impl AsRef<Path>, arrays: &ArrayMap, metadata: &BTreeMap<String, GgufValue>) -> Result<()> {
    let mut p = path.as_ref().to_path_buf();
    if p.extension().and_then(|e| e.to_str()) != Some("gguf") {
        let mut s = p.into_os_string();
        s.push(".gguf");
        p = s.into();
    }
    write_file("save_gguf", &p, &to_bytes(arrays, metadata)?)
}
