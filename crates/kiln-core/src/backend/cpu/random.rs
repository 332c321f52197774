//! Counter-based random bits: Threefry-2x32 with 20 rounds, laid out as MLX
//! lays them out so equal keys give bit-identical streams.

use super::simd::{parallel_for, SendPtr};
use super::strided::{alloc_out, gather_to_vec};
use crate::array::{Array, Data};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

/// Threefry-2x32 (20 rounds) of the counter pair `(c0, c1)` under `key`.
#[inline(always)]
pub fn threefry2x32(key: (u32, u32), c0: u32, c1: u32) -> (u32, u32) {
    const ROT: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
    let ks = [key.0, key.1, key.0 ^ key.1 ^ 0x1BD1_1BDA];
    let (mut x0, mut x1) = (c0.wrapping_add(ks[0]), c1.wrapping_add(ks[1]));
    for i in 0..5 {
        for &r in &ROT[i % 2] {
            x0 = x0.wrapping_add(x1);
            x1 = x1.rotate_left(r) ^ x0;
        }
        x0 = x0.wrapping_add(ks[(i + 1) % 3]);
        x1 = x1.wrapping_add(ks[(i + 2) % 3]).wrapping_add(i as u32 + 1);
    }
    (x0, x1)
}

/// The 32-bit words MLX's layout gives for `words` words of one key: word
/// `j < half` and word `j + half + odd` come from counter `(j, j + half + odd)`;
/// for an odd count the middle word is the first half of counter `(half, 0)`.
fn words(key: (u32, u32), nwords: usize, dst: &mut [u32]) {
    let half = nwords / 2;
    let odd = nwords % 2;
    let p = SendPtr(dst.as_mut_ptr());
    parallel_for(half, 24, |range| {
        for j in range {
            let (a, b) = threefry2x32(key, j as u32, (j + half + odd) as u32);
            // SAFETY: j < half and j + half + odd < nwords are distinct
            // positions of dst (length nwords) owned by this j.
            unsafe {
                *p.get().add(j) = a;
                *p.get().add(j + half + odd) = b;
            }
        }
    });
    if odd == 1 {
        dst[half] = threefry2x32(key, half as u32, 0).0;
    }
}

/// Random bits of `out.dtype` (uint8/16/32) and `out.shape` from a `(2,)` uint32 key.
pub fn random_bits(key: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let k: Vec<u32> = gather_to_vec::<u32>(&key.data(), key.shape());
    if k.len() != 2 {
        return Err(Error::invalid("bits", "Expected a key of two uint32 values."));
    }
    let buf = alloc_out(out)?;
    let nbytes = crate::shape::numel(out.shape) * out.dtype.size();
    let data = Data::contiguous(buf, out.shape);
    if nbytes == 0 {
        return Ok(data);
    }
    let nwords = nbytes.div_ceil(4);
    let mut w = vec![0u32; nwords];
    words((k[0], k[1]), nwords, &mut w);
    // SAFETY: the output buffer holds nbytes bytes and w holds at least
    // nbytes bytes; the regions do not overlap. Words are little-endian on
    // every supported target, matching MLX's byte copy.
    unsafe { std::ptr::copy_nonoverlapping(w.as_ptr() as *const u8, data.ptr::<u8>(), nbytes) };
    Ok(data)
}
