//! NumPy `.npz`: a zip archive of `.npy` files, with a minimal zip reader and
//! writer of Kiln's own.
//!
//! Reading supports stored (method 0) and deflated (method 8) entries, ZIP64
//! sizes and offsets, and checks every entry's range against the file. A
//! stored entry loads lazily straight from the mapping; a deflated one
//! inflates its header at load time and the whole entry (CRC-checked) when
//! the array is evaluated. Inflated sizes are bounded by deflate's maximum
//! ratio over the compressed bytes actually present, so a lying size cannot
//! trigger a huge allocation. Writing produces stored entries (`savez`) or
//! deflated ones (`savez_compressed`), with ZIP64 records where the classic
//! format's 4 GiB or 65535-entry limits are reached.

use super::{io_err, npy, ArrayMap, Cursor, Inflate, Load, Source};
use crate::array::Array;
use crate::error::Result;
use std::path::Path;
use std::sync::Arc;

const OP: &str = "load_npz";
/// Deflate cannot expand data by more than about 1032:1.
const MAX_RATIO: usize = 1032;

/// Loads a `.npz` file lazily: entry `name.npy` becomes the array `name`.
/// Entries that are not `.npy` files are skipped.
pub fn load_npz(path: impl AsRef<Path>) -> Result<ArrayMap> {
    parse(&Arc::new(Source::open(path.as_ref(), OP)?))
}

/// Loads a `.npz` image held in memory.
pub fn load_npz_bytes(bytes: Vec<u8>) -> Result<ArrayMap> {
    parse(&Arc::new(Source::from_bytes(bytes, "<npz bytes>")))
}

struct Entry {
    name: String,
    method: u16,
    crc: u32,
    csize: usize,
    usize: usize,
    local: usize,
}

fn parse(src: &Arc<Source>) -> Result<ArrayMap> {
    let data = src.bytes();
    let name = src.name();
    let mut c = Cursor::new(data, OP, name);
    // End of central directory: 22 bytes plus a comment of up to 64 KiB.
    let lo = data.len().saturating_sub(22 + 0xFFFF);
    let eocd = (lo..=data.len().saturating_sub(22))
        .rev()
        .find(|&i| data.len() >= 22 && data[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| c.err("not a zip archive (no end of central directory record)"))?;
    c.pos = eocd + 10;
    let mut count = c.u16()? as u64;
    let mut cd_size = c.u32()? as u64;
    let mut cd_off = c.u32()? as u64;
    // ZIP64: a locator just before the record points at the ZIP64 record.
    // Without one, saturated values are real (Python's zipfile writes exactly
    // 65535 entries in the classic format).
    let saturated = count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_off == 0xFFFF_FFFF;
    let locator = eocd.checked_sub(20).filter(|&l| data[l..l + 4] == [0x50, 0x4b, 0x06, 0x07]);
    if let (true, Some(loc)) = (saturated, locator) {
        c.pos = loc + 8;
        let rec = c.len64()?;
        if rec > data.len() {
            return Err(c.err("ZIP64 record offset out of bounds"));
        }
        c.pos = rec;
        if c.u32()? != 0x06064b50 {
            return Err(c.err("bad ZIP64 end of central directory record"));
        }
        c.pos += 8 + 2 + 2 + 4 + 4 + 8;
        count = c.u64()?;
        cd_size = c.u64()?;
        cd_off = c.u64()?;
    }
    let cd_end = cd_off.checked_add(cd_size).filter(|&e| e <= data.len() as u64);
    if cd_end.is_none() {
        return Err(c.err("central directory out of bounds"));
    }
    let mut cd = Cursor::new(&data[cd_off as usize..(cd_off + cd_size) as usize], OP, name);
    let mut entries: Vec<Entry> = Vec::new();
    for _ in 0..count {
        if cd.u32()? != 0x02014b50 {
            return Err(cd.err("bad central directory entry signature"));
        }
        cd.pos += 4;
        let flags = cd.u16()?;
        let method = cd.u16()?;
        cd.pos += 4;
        let crc = cd.u32()?;
        let mut csize = cd.u32()? as u64;
        let mut usize_ = cd.u32()? as u64;
        let nlen = cd.u16()? as usize;
        let elen = cd.u16()? as usize;
        let clen = cd.u16()? as usize;
        cd.pos += 8;
        let mut local = cd.u32()? as u64;
        let ename = cd.take(nlen)?;
        let extra = cd.take(elen)?;
        cd.take(clen)?;
        // ZIP64 extended information replaces saturated fields, in order.
        let mut x = Cursor::new(extra, OP, name);
        while x.remaining() >= 4 {
            let id = x.u16()?;
            let sz = x.u16()? as usize;
            let body = x.take(sz)?;
            if id == 1 {
                let mut b = Cursor::new(body, OP, name);
                for f in [&mut usize_, &mut csize, &mut local] {
                    if *f == 0xFFFF_FFFF {
                        *f = b.u64()?;
                    }
                }
            }
        }
        if flags & 1 != 0 {
            return Err(cd.err("encrypted zip entries are not supported"));
        }
        let ename = String::from_utf8(ename.to_vec()).map_err(|_| cd.err("entry name is not valid UTF-8"))?;
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| cd.err("entry size is too large"));
        entries.push(Entry {
            name: ename,
            method,
            crc,
            csize: to_usize(csize)?,
            usize: to_usize(usize_)?,
            local: to_usize(local)?,
        });
    }
    // Resolve data ranges and reject overlapping entries (zip bombs).
    let mut ranges = Vec::with_capacity(entries.len());
    let mut out = ArrayMap::new();
    for e in &entries {
        let mut l = Cursor::new(data, OP, name);
        if e.local > data.len() {
            return Err(l.err(format_args!("entry '{}' has its header out of bounds", e.name)));
        }
        l.pos = e.local;
        if l.u32()? != 0x04034b50 {
            return Err(l.err(format_args!("entry '{}' has a bad local header signature", e.name)));
        }
        l.pos += 22;
        let nlen = l.u16()? as usize;
        let elen = l.u16()? as usize;
        l.take(nlen)?;
        l.take(elen)?;
        let start = l.pos;
        l.take(e.csize).map_err(|_| l.err(format_args!("entry '{}' extends past the end of the file", e.name)))?;
        ranges.push((e.local, start + e.csize, e.name.as_str()));
        let Some(stem) = e.name.strip_suffix(".npy") else { continue };
        let arr = match e.method {
            0 => {
                if e.usize != e.csize {
                    return Err(l.err(format_args!("stored entry '{}' has differing sizes", e.name)));
                }
                npy::parse(src, start, e.csize, OP)?
            }
            8 => deflated(src, e, start)?,
            m => return Err(l.err(format_args!("entry '{}' uses unsupported compression method {m}", e.name))),
        };
        if out.insert(stem.to_string(), arr).is_some() {
            return Err(l.err(format_args!("duplicate entry '{}'", e.name)));
        }
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(io_err(OP, format!("Malformed file {name}: entries '{}' and '{}' overlap.", w[0].2, w[1].2)));
        }
    }
    Ok(out)
}

fn deflated(src: &Arc<Source>, e: &Entry, start: usize) -> Result<Array> {
    let name = src.name();
    let raw = &src.bytes()[start..start + e.csize];
    let bound = e.csize.saturating_mul(MAX_RATIO).saturating_add(64);
    if e.usize > bound {
        return Err(io_err(
            OP,
            format!("Malformed file {name}: entry '{}' claims {} inflated bytes from {}.", e.name, e.usize, e.csize),
        ));
    }
    // Inflate only the start, enough for the header.
    let head = match miniz_oxide::inflate::decompress_to_vec_with_limit(raw, e.usize.min(1 << 16)) {
        Ok(v) => v,
        Err(err) if err.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => err.output,
        Err(err) => {
            return Err(io_err(
                OP,
                format!("Malformed file {name}: entry '{}' is not valid deflate data ({err}).", e.name),
            ))
        }
    };
    let h = npy::parse_header(&head, OP, name)?;
    if h.data_start.checked_add(h.nbytes).is_none_or(|n| n > e.usize) {
        return Err(io_err(
            OP,
            format!(
                "Malformed file {name}: entry '{}' holds {} bytes, fewer than its header declares.",
                e.name, e.usize
            ),
        ));
    }
    let inf = Inflate { skip: h.data_start, total: e.usize, crc: e.crc };
    Ok(Load::array(src, OP, start, e.csize, h.shape, h.dtype, h.decode, Some(inf), h.fortran))
}

/// Inflates a whole deflated entry, which must be exactly `total` bytes with
/// CRC-32 `crc`.
pub(crate) fn inflate(raw: &[u8], inf: Inflate, op: &str, name: &str) -> Result<Vec<u8>> {
    let v = miniz_oxide::inflate::decompress_to_vec_with_limit(raw, inf.total)
        .map_err(|e| io_err(op, format!("Malformed file {name}: bad deflate data ({e}).")))?;
    if v.len() != inf.total || crc32(&v) != inf.crc {
        return Err(io_err(op, format!("Malformed file {name}: a deflated entry fails its size or CRC check.")));
    }
    Ok(v)
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE, as zip uses it).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// When the zip writer switches to ZIP64 records: sizes and offsets at or
/// above `size`, or at least `count` entries (the classic format's limits by
/// default; smaller in tests so that ZIP64 archives can be written small).
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub struct Zip64Limits {
    /// Sizes and offsets from this value on use ZIP64 fields.
    pub size: u64,
    /// Entry counts from this value on use the ZIP64 end records.
    pub count: u64,
}

impl Default for Zip64Limits {
    fn default() -> Self {
        Zip64Limits { size: 0xFFFF_FFFF, count: 0xFFFF }
    }
}

/// Saves arrays as `.npz` (MLX's `mx.savez`, or `mx.savez_compressed` when
/// `compressed`): each array becomes the entry `name.npy`. Appends `.npz`
/// when `path` lacks it, as MLX does. Entries or archives over 4 GiB and
/// archives of 65535 entries or more get ZIP64 records, as Python's
/// `zipfile` writes them. The archive is streamed to the file.
pub fn save_npz(path: impl AsRef<Path>, arrays: &ArrayMap, compressed: bool) -> Result<()> {
    let mut p = path.as_ref().to_path_buf();
    if p.extension().and_then(|e| e.to_str()) != Some("npz") {
        let mut s = p.into_os_string();
        s.push(".npz");
        p = s.into();
    }
    let file = std::fs::File::create(&p).map_err(|e| io_err(W, format!("Cannot write file {}: {e}.", p.display())))?;
    let mut w = std::io::BufWriter::new(file);
    write_npz(&mut w, arrays, compressed, Zip64Limits::default(), &p.display().to_string())?;
    std::io::Write::flush(&mut w).map_err(|e| io_err(W, format!("Cannot write file {}: {e}.", p.display())))
}

/// The `.npz` image of `arrays`, switching to ZIP64 records at `limits`
/// (for tests of the ZIP64 writer; [`save_npz`] uses the format's limits).
#[doc(hidden)]
pub fn npz_bytes_with_limits(arrays: &ArrayMap, compressed: bool, limits: Zip64Limits) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_npz(&mut out, arrays, compressed, limits, "<npz bytes>")?;
    Ok(out)
}

const W: &str = "save_npz";

/// A writer that counts the bytes written.
struct Counted<'a, T: std::io::Write> {
    w: &'a mut T,
    pos: u64,
    name: &'a str,
}

impl<T: std::io::Write> Counted<'_, T> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|e| io_err(W, format!("Cannot write file {}: {e}.", self.name)))?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

fn write_npz<T: std::io::Write>(
    w: &mut T,
    arrays: &ArrayMap,
    compressed: bool,
    limits: Zip64Limits,
    fname_for_errors: &str,
) -> Result<()> {
    let mut out = Counted { w, pos: 0, name: fname_for_errors };
    let mut central = Vec::new();
    let big = |v: u64| v >= limits.size;
    // A field of the classic record: the value, or 0xFFFFFFFF when the ZIP64
    // extra field carries it.
    let field = |v: u64| if big(v) { u32::MAX } else { v as u32 };
    for (name, a) in arrays {
        let npy = npy::to_npy_bytes(a)?;
        let crc = crc32(&npy);
        let ulen = npy.len() as u64;
        let (method, body) = if compressed { (8u16, miniz_oxide::deflate::compress_to_vec(&npy, 6)) } else { (0, npy) };
        let clen = body.len() as u64;
        let fname = format!("{name}.npy");
        let local = out.pos;
        let nlen = u16::try_from(fname.len()).map_err(|_| io_err(W, "Array name too long for a zip entry."))?;
        // Local header: both sizes go to the ZIP64 field when either is large.
        let local64 = big(ulen) || big(clen);
        let version: u16 = if local64 || big(local) { 45 } else { 20 };
        let fixed = |v: &mut Vec<u8>, csz: u32, usz: u32, elen: u16| {
            v.extend_from_slice(&version.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // time
            v.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&csz.to_le_bytes());
            v.extend_from_slice(&usz.to_le_bytes());
            v.extend_from_slice(&nlen.to_le_bytes());
            v.extend_from_slice(&elen.to_le_bytes());
        };
        let mut head = Vec::with_capacity(64 + fname.len());
        head.extend_from_slice(&0x04034b50u32.to_le_bytes());
        if local64 {
            fixed(&mut head, u32::MAX, u32::MAX, 20);
            head.extend_from_slice(fname.as_bytes());
            head.extend_from_slice(&1u16.to_le_bytes());
            head.extend_from_slice(&16u16.to_le_bytes());
            head.extend_from_slice(&ulen.to_le_bytes());
            head.extend_from_slice(&clen.to_le_bytes());
        } else {
            fixed(&mut head, clen as u32, ulen as u32, 0);
            head.extend_from_slice(fname.as_bytes());
        }
        out.put(&head)?;
        out.put(&body)?;
        // Central directory entry: the ZIP64 field holds exactly the saturated
        // values, in the order uncompressed size, compressed size, offset.
        let extra: Vec<u8> = [ulen, clen, local].iter().filter(|&&v| big(v)).flat_map(|v| v.to_le_bytes()).collect();
        central.extend_from_slice(&0x02014b50u32.to_le_bytes());
        central.extend_from_slice(&version.to_le_bytes()); // version made by
        let elen = if extra.is_empty() { 0 } else { 4 + extra.len() as u16 };
        fixed(&mut central, field(clen), field(ulen), elen);
        central.extend_from_slice(&[0u8; 8]); // comment length, disk, internal and
        central.extend_from_slice(&0u32.to_le_bytes()[..2]); // external attributes
        central.extend_from_slice(&field(local).to_le_bytes());
        central.extend_from_slice(fname.as_bytes());
        if !extra.is_empty() {
            central.extend_from_slice(&1u16.to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&extra);
        }
    }
    let (count, cd_off, cd_size) = (arrays.len() as u64, out.pos, central.len() as u64);
    out.put(&central)?;
    let mut tail = Vec::new();
    if count >= limits.count || big(cd_off) || big(cd_size) {
        let rec = out.pos;
        // ZIP64 end of central directory record.
        tail.extend_from_slice(&0x06064b50u32.to_le_bytes());
        tail.extend_from_slice(&44u64.to_le_bytes()); // size of the rest
        tail.extend_from_slice(&45u16.to_le_bytes()); // version made by
        tail.extend_from_slice(&45u16.to_le_bytes()); // version needed
        tail.extend_from_slice(&[0u8; 8]); // this disk, disk with the directory
        tail.extend_from_slice(&count.to_le_bytes());
        tail.extend_from_slice(&count.to_le_bytes());
        tail.extend_from_slice(&cd_size.to_le_bytes());
        tail.extend_from_slice(&cd_off.to_le_bytes());
        // ZIP64 end of central directory locator.
        tail.extend_from_slice(&0x07064b50u32.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&rec.to_le_bytes());
        tail.extend_from_slice(&1u32.to_le_bytes());
    }
    let count16 = if count >= limits.count { 0xFFFF } else { count as u16 };
    tail.extend_from_slice(&0x06054b50u32.to_le_bytes());
    tail.extend_from_slice(&[0u8; 4]);
    tail.extend_from_slice(&count16.to_le_bytes());
    tail.extend_from_slice(&count16.to_le_bytes());
    tail.extend_from_slice(&field(cd_size).to_le_bytes());
    tail.extend_from_slice(&field(cd_off).to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    out.put(&tail)
}
