//! Branch-free scalar math written so loops over it vectorise.
//!
//! `std`'s `exp`, `tanh`, … call into libm one element at a time; these
//! versions use range reduction and polynomials in plain arithmetic, which the
//! compiler turns into SIMD code inside multiversioned loops.

// The exponentials reduce x = k·ln2 + r with ln2 in two parts (`LN2_HI`,
// `LN2_LO`, shared with the logarithms below).
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;

/// e^x for f32, relative error below 2 ulp over the full range; overflows to
/// inf, underflows to 0, propagates NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = sel(x < -104.0, -104.0, sel(x > 89.0, 89.0, x));
    // Round to nearest with the 1.5 * 2^23 trick (vectorises everywhere;
    // `round_ties_even` may become a libm call per element).
    let t = xc.mul_add(LOG2E, MAGIC);
    let k = t - MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(0x4b40_0000);
    let r = xc - k * LN2_HI - k * LN2_LO;
    // exp(r) on |r| <= ln2/2, degree-6 minimax-style Taylor.
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // Scale by 2^k in two steps so k down to -150 still reaches subnormals.
    // Wrapping integer ops: overflow checks (debug builds) would block vectorisation.
    let k1 = ki >> 1;
    let k2 = ki.wrapping_sub(k1);
    let s1 = f32::from_bits((k1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((k2.wrapping_add(127) as u32) << 23);
    let y = p * s1 * s2;
    let y = sel(x > 88.72284, f32::INFINITY, y);
    sel(x.is_nan(), x, y)
}

/// e^x for `x` whose result is a normal f32 (|x| ≤ 87): [`exp_f32`]'s
/// reduction and polynomial without its clamps, overflow and NaN checks, and
/// a single exponent scale.
#[inline(always)]
fn exp_normal_f32(x: f32) -> f32 {
    let t = x.mul_add(LOG2E, MAGIC);
    let k = t - MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(0x4b40_0000);
    let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x));
    let p = horner(r, &[1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0]);
    p * f32::from_bits((ki.wrapping_add(127) as u32) << 23)
}

/// e^x for softmax-like sums, written so that every step vectorises (no
/// float→int casts): 2^k is built from the bits of `k + 1.5·2^23`. Results
/// below e^-86 (≈ 4e-38) flush to 0; relative error is about 2 ulp. Flushing keeps
/// masked scores (the dtype's lowest value) from computing subnormal
/// intermediates, which cost a microcode assist per lane on x86.
#[inline(always)]
pub fn exp_flush_f32(x: f32) -> f32 {
    let xc = x.clamp(-86.0, 88.7);
    let k = (xc * LOG2E).round_ties_even();
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is an integer in [-125, 128]; its two's complement sits in the low mantissa bits.
    let ki = (k + MAGIC).to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(ki.wrapping_add(126) << 23);
    let y = p * scale * 2.0;
    let y = if x < -86.0 { 0.0 } else { y };
    let y = if x > 88.72284 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn sel(c: bool, a: f32, b: f32) -> f32 {
    if c {
        a
    } else {
        b
    }
}

#[inline(always)]
fn horner<const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    // Fixed-length fold: fully unrolled, no inner loop to block vectorisation.
    let mut acc = c[N - 1];
    let mut i = N - 1;
    while i > 0 {
        i -= 1;
        acc = acc.mul_add(x, c[i]);
    }
    acc
}

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// Splits a positive finite `x` into `(m - 1, e)` with `x = m * 2^e`,
/// `m` in [sqrt(1/2), sqrt(2)); subnormals are scaled first.
#[inline(always)]
fn log_reduce(x: f32) -> (f32, f32) {
    let sub = x < f32::MIN_POSITIVE;
    let xs = sel(sub, x * 8_388_608.0, x);
    let bits = xs.to_bits() as i32;
    // Shift the mantissa so that m lands in [sqrt(1/2), sqrt(2)).
    let adj = bits.wrapping_sub(0x3f35_04f3);
    let e = (adj >> 23) as f32 - sel(sub, 23.0, 0.0);
    let mbits = bits.wrapping_sub(adj & !0x007f_ffff) as u32;
    (f32::from_bits(mbits) - 1.0, e)
}

/// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1].
#[inline(always)]
fn log1p_small(f: f32) -> f32 {
    let s = f / (2.0 + f);
    let z = s * s;
    // 2 atanh(s) = 2s (1 + z/3 + z^2/5 + ...); written as f - s(f - 2s*P) form.
    let p = horner(z, &[1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0]);
    let hf = 0.5 * f * f;
    // log1p(f) = f - hf + s (hf + z p * 2) keeps the leading term exact.
    f - (hf - s * (hf + 2.0 * z * p))
}

/// Handles the special inputs of a logarithm: NaN and negatives give NaN,
/// zero gives -inf, +inf gives +inf.
#[inline(always)]
fn log_special(x: f32, y: f32) -> f32 {
    let y = sel(x == f32::INFINITY, f32::INFINITY, y);
    let y = sel(x == 0.0, f32::NEG_INFINITY, y);
    sel(x < 0.0 || x.is_nan(), f32::NAN, y)
}

/// Natural logarithm.
#[inline(always)]
pub fn log_f32(x: f32) -> f32 {
    let (f, e) = log_reduce(x);
    let y = e * LN2_HI + (e * LN2_LO + log1p_small(f));
    log_special(x, y)
}

/// Base-2 logarithm (exact for powers of two).
#[inline(always)]
pub fn log2_f32(x: f32) -> f32 {
    let (f, e) = log_reduce(x);
    let y = e + log1p_small(f) * std::f32::consts::LOG2_E;
    log_special(x, y)
}

/// Base-10 logarithm.
#[inline(always)]
pub fn log10_f32(x: f32) -> f32 {
    const L10_2_HI: f32 = 0.301_025_4;
    const L10_2_LO: f32 = 4.605_039e-6;
    let (f, e) = log_reduce(x);
    let y = e * L10_2_HI + (e * L10_2_LO + log1p_small(f) * std::f32::consts::LOG10_E);
    log_special(x, y)
}

/// log(1 + x), accurate near zero.
#[inline(always)]
pub fn log1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    // log(u) * x / (u - 1) cancels the rounding of 1 + x.
    let d = u - 1.0;
    let l = log_f32(u);
    let y = sel(d == 0.0, x, l * (x / sel(d == 0.0, 1.0, d)));
    let y = sel(x == f32::INFINITY, f32::INFINITY, y);
    sel(u == 0.0, f32::NEG_INFINITY, y)
}

/// e^x - 1, accurate near zero.
#[inline(always)]
pub fn expm1_f32(x: f32) -> f32 {
    // Small |x|: Taylor series; otherwise exp(x) - 1 loses at most a few ulp.
    let small = horner(
        x,
        &[1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362_880.0],
    ) * x;
    let u = exp_f32(x);
    // (u - 1) * x / log(u) corrects the rounding of u (Kahan).
    let big = u - 1.0;
    let y = sel(x.abs() < 0.5, small, big);
    sel(x.is_nan(), x, y)
}

/// Reduces `x` modulo pi/2 in f64: returns `(r, q)` with `x = q * pi/2 + r`.
#[inline(always)]
fn trig_reduce(x: f32) -> (f32, i32) {
    const P1: f64 = 1.570_796_326_734_125_6; // pi/2 to 33 bits
    const P2: f64 = 6.077_100_506_506_192e-11;
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: rounds to an integer
    let xd = x as f64;
    let t = xd.mul_add(std::f64::consts::FRAC_2_PI, MAGIC);
    let q = t - MAGIC;
    let r = (xd - q * P1) - q * P2;
    (r as f32, t.to_bits() as i32)
}

#[inline(always)]
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    r + r * z * horner(z, &[-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0, -1.0 / 39_916_800.0])
}

#[inline(always)]
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    1.0 - 0.5 * z
        + z * z * horner(z, &[1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3_628_800.0, 1.0 / 479_001_600.0])
}

/// Inputs above this magnitude fall back to `std` (see [`trig_needs_fixup`]).
pub const TRIG_BIG: f32 = 1.0e6;

/// Whether the branch-free sin/cos/tan lose accuracy for `x` (|x| > 1e6) and
/// the caller should recompute with `std`.
#[inline(always)]
pub fn trig_needs_fixup(x: f32) -> bool {
    x.abs() > TRIG_BIG && x.is_finite()
}

/// Sine (accurate for |x| <= 1e6; larger values need [`trig_needs_fixup`]).
#[inline(always)]
pub fn sin_f32(x: f32) -> f32 {
    let (r, q) = trig_reduce(x);
    let s = sin_poly(r);
    let c = cos_poly(r);
    let y = sel(q & 1 == 0, s, c);
    let y = sel(q & 2 == 0, y, -y);
    sel(x.is_finite(), y, f32::NAN)
}

/// Cosine (accurate for |x| <= 1e6).
#[inline(always)]
pub fn cos_f32(x: f32) -> f32 {
    let (r, q) = trig_reduce(x);
    let s = sin_poly(r);
    let c = cos_poly(r);
    let y = sel(q & 1 == 0, c, -s);
    let y = sel(q & 2 == 0, y, -y);
    sel(x.is_finite(), y, f32::NAN)
}

/// Tangent (accurate for |x| <= 1e6).
#[inline(always)]
pub fn tan_f32(x: f32) -> f32 {
    let (r, q) = trig_reduce(x);
    let s = sin_poly(r);
    let c = cos_poly(r);
    let y = sel(q & 1 == 0, s / c, -c / s);
    sel(x.is_finite(), y, f32::NAN)
}

/// Hyperbolic tangent.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const Q: [f32; 7] =
        [-0.333_333_34, 0.133_334_89, -0.054_021_765, 0.022_481_807, -0.011_935_295, 0.010_554_387, -0.007_095_055_6];
    let a = x.abs();
    let z = x * x;
    let small = x + x * z * horner(z, &Q);
    // tanh rounds to ±1 in f32 from |x| ≈ 9.01 on, so clamping |x| at 9.5
    // changes nothing and keeps e^(2|x|) normal: the exponential then needs
    // no range checks (a NaN becomes 9.5 here and is restored below).
    let e = exp_normal_f32(2.0 * a.min(9.5));
    let big = 1.0 - 2.0 / (e + 1.0);
    let y = sel(a < 0.625, small, big.copysign(x));
    sel(x.is_nan(), x, y)
}

/// Logistic sigmoid 1 / (1 + e^-x), accurate in both tails.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let r = 1.0 / (1.0 + e);
    let y = sel(x >= 0.0, r, e * r);
    sel(x.is_nan(), x, y)
}

/// Hyperbolic sine.
#[inline(always)]
pub fn sinh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small = x + x * z * horner(z, &[1.0 / 6.0, 1.0 / 120.0, 1.0 / 5040.0, 1.0 / 362_880.0, 1.0 / 39_916_800.0]);
    let (e, h) = (exp_f32(a), exp_f32(0.5 * a));
    // Near overflow, e^|x| / 2 is formed as (e^(|x|/2) / 2) e^(|x|/2).
    let big = sel(a < 88.0, 0.5 * e - 0.5 / e, (0.5 * h) * h);
    let y = sel(a < 1.0, small, big.copysign(x));
    sel(x.is_nan(), x, y)
}

/// Hyperbolic cosine.
#[inline(always)]
pub fn cosh_f32(x: f32) -> f32 {
    let a = x.abs();
    let (e, h) = (exp_f32(a), exp_f32(0.5 * a));
    sel(a < 88.0, 0.5 * e + 0.5 / e, (0.5 * h) * h)
}

/// Error function.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_26,
        0.112_835_854,
        -0.026_853_82,
        0.005_188_341_7,
        -0.000_801_030_66,
        7.854_206e-5,
    ];
    const Q: [f32; 11] = [
        2.989_802_7e-5,
        0.563_639_04,
        0.003_729_9,
        -0.288_855_7,
        -0.057_234_96,
        0.873_138_3,
        -1.485_011_2,
        1.385_3,
        -0.786_008_3,
        0.255_604_1,
        -0.036_747_478,
    ];
    let a = x.abs();
    let small = x * horner(x * x, &P);
    let ac = a.clamp(1.0, 4.0);
    let erfc = exp_f32(-ac * ac) * horner(1.0 / ac, &Q);
    let big = sel(a >= 4.0, 1.0, 1.0 - erfc).copysign(x);
    let y = sel(a < 1.0, small, big);
    sel(x.is_nan(), x, y)
}

/// Inverse error function on [-1, 1] (±inf at ±1, NaN outside).
#[inline(always)]
pub fn erfinv_f32(x: f32) -> f32 {
    const A: [f32; 9] = [
        1.501_409_4,
        0.246_640_73,
        -0.004_177_707_7,
        -0.001_253_707_6,
        0.000_218_602_17,
        -4.396_773_4e-6,
        -3.528_853e-6,
        3.437_263_3e-7,
        2.853_425_8e-8,
    ];
    const B: [f32; 9] = [
        2.832_977,
        1.001_674_3,
        0.009_434_039,
        -0.007_628_07,
        0.005_771_818,
        -0.003_649_786_6,
        0.001_278_961,
        7.592_459e-5,
        -0.000_150_333_46,
    ];
    let w = -log_f32((1.0 - x) * (1.0 + x));
    let pa = horner(w - 2.5, &A);
    let pb = horner(w.sqrt() - 3.0, &B);
    let y = x * sel(w < 5.0, pa, pb);
    let a = x.abs();
    let y = sel(a == 1.0, f32::INFINITY.copysign(x), y);
    sel(a > 1.0 || x.is_nan(), f32::NAN, y)
}

/// atan on [0, inf] (NaN propagates).
#[inline(always)]
fn atan_pos(a: f32) -> f32 {
    const P: [f32; 6] = [-0.333_333_34, 0.200_000_94, -0.142_906_23, 0.111_828_566, -0.093_847_37, 0.068_401_22];
    const PI_2: f32 = std::f32::consts::FRAC_PI_2;
    const PI_4: f32 = std::f32::consts::FRAC_PI_4;
    // Reduce to t in [0, tan(pi/8)].
    let inv = a > 1.0;
    let t = sel(inv, 1.0 / a, a);
    let mid = t > 0.414_213_57;
    let t = sel(mid, (t - 1.0) / (t + 1.0), t);
    let z = t * t;
    let p = t + t * z * horner(z, &P);
    let p = sel(mid, PI_4 + p, p);
    sel(inv, PI_2 - p, p)
}

/// Inverse tangent.
#[inline(always)]
pub fn atan_f32(x: f32) -> f32 {
    atan_pos(x.abs()).copysign(x)
}

/// asin of `a` in [0, 1] (NaN above 1).
#[inline(always)]
fn asin_pos(a: f32) -> f32 {
    const P: [f32; 6] = [0.166_666_67, 0.075_000_52, 0.044_609_014, 0.031_012_85, 0.017_498_728, 0.033_185_71];
    let big = a > 0.5;
    let z = sel(big, 0.5 * (1.0 - a), a * a);
    let s = sel(big, z.sqrt(), a);
    let p = s + s * z * horner(z, &P);
    sel(big, std::f32::consts::FRAC_PI_2 - 2.0 * p, p)
}

/// Inverse sine.
#[inline(always)]
pub fn asin_f32(x: f32) -> f32 {
    let a = x.abs();
    sel(a > 1.0, f32::NAN, asin_pos(a).copysign(x))
}

/// Inverse cosine.
#[inline(always)]
pub fn acos_f32(x: f32) -> f32 {
    const P: [f32; 6] = [0.166_666_67, 0.075_000_52, 0.044_609_014, 0.031_012_85, 0.017_498_728, 0.033_185_71];
    let a = x.abs();
    // |x| > 1/2: acos(|x|) = 2 asin(sqrt((1 - |x|) / 2)), reflected for x < 0.
    let z = 0.5 * (1.0 - a);
    let s = z.sqrt();
    let h = 2.0 * (s + s * z * horner(z, &P));
    let big = sel(x < 0.0, std::f32::consts::PI - h, h);
    let y = sel(a > 0.5, big, std::f32::consts::FRAC_PI_2 - asin_pos(a).copysign(x));
    sel(a > 1.0, f32::NAN, y)
}

/// Inverse hyperbolic sine.
#[inline(always)]
pub fn asinh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let mid = log1p_f32(a + z / (1.0 + (1.0 + z).sqrt()));
    let huge = log_f32(a) + std::f32::consts::LN_2;
    let y = sel(a > 1.0e18, huge, mid);
    sel(x.is_nan(), x, y.copysign(x))
}

/// Inverse hyperbolic cosine (NaN below 1).
#[inline(always)]
pub fn acosh_f32(x: f32) -> f32 {
    let t = x - 1.0;
    let near = log1p_f32(t + (2.0 * t + t * t).sqrt());
    let mid = log_f32(x + (x * x - 1.0).sqrt());
    let huge = log_f32(x) + std::f32::consts::LN_2;
    let y = sel(x < 2.0, near, sel(x > 1.0e18, huge, mid));
    sel(x < 1.0 || x.is_nan(), f32::NAN, y)
}

/// Inverse hyperbolic tangent (±inf at ±1, NaN outside).
#[inline(always)]
pub fn atanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let y = 0.5 * log1p_f32(2.0 * a / (1.0 - a));
    let y = sel(a > 1.0 || x.is_nan(), f32::NAN, y);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place (subnormal/zero results use the
    /// smallest normal's ulp so tiny absolute differences count as small).
    fn ulps(a: f32, b: f64) -> f64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() { 0.0 } else { f64::INFINITY };
        }
        if a.is_infinite() || b.is_infinite() || (b as f32).is_infinite() {
            return if a as f64 == b || a == b as f32 { 0.0 } else { f64::INFINITY };
        }
        let bf = b as f32;
        let ulp = (bf.abs().max(f32::MIN_POSITIVE) as f64) * f32::EPSILON as f64;
        ((a as f64 - b) / ulp).abs()
    }

    /// Test points: a dense linear sweep over [lo, hi], a geometric sweep of
    /// both signs over the whole f32 range (subnormals included), and the
    /// special values.
    fn points(lo: f32, hi: f32) -> Vec<f32> {
        let mut v = Vec::new();
        let n = 200_000;
        for i in 0..=n {
            v.push(lo + (hi - lo) * (i as f32 / n as f32));
        }
        let mut bits = 1u32;
        while bits < 0x7f80_0000 {
            let x = f32::from_bits(bits);
            v.push(x);
            v.push(-x);
            bits += 40_009;
        }
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            f32::MAX,
            -f32::MAX,
            1.0,
            -1.0,
        ]);
        v
    }

    fn check(name: &str, f: fn(f32) -> f32, r: fn(f64) -> f64, lo: f32, hi: f32, max_ulps: f64) -> Option<String> {
        let mut worst = (0.0, 0.0f32);
        for x in points(lo, hi) {
            let e = ulps(f(x), r(x as f64));
            if e > worst.0 || e.is_nan() {
                worst = (e, x);
            }
        }
        let msg = format!(
            "{name}: {} ulp at x = {:e} (got {:e}, want {:e})",
            worst.0,
            worst.1,
            f(worst.1),
            r(worst.1 as f64)
        );
        eprintln!("{msg}");
        (worst.0 > max_ulps).then_some(msg)
    }

    #[test]
    fn transcendental_functions_match_std() {
        let fails: Vec<String> = [
            check("exp", exp_f32, f64::exp, -104.0, 89.0, 2.5),
            check("expm1", expm1_f32, f64::exp_m1, -20.0, 89.0, 3.0),
            check("log", log_f32, f64::ln, 0.0, 10.0, 2.0),
            check("log2", log2_f32, f64::log2, 0.0, 10.0, 2.0),
            check("log10", log10_f32, f64::log10, 0.0, 10.0, 2.0),
            check("log1p", log1p_f32, f64::ln_1p, -1.0, 10.0, 3.0),
            check(
                "sin",
                |x| if trig_needs_fixup(x) { (x as f64).sin() as f32 } else { sin_f32(x) },
                f64::sin,
                -100.0,
                100.0,
                2.0,
            ),
            check(
                "cos",
                |x| if trig_needs_fixup(x) { (x as f64).cos() as f32 } else { cos_f32(x) },
                f64::cos,
                -100.0,
                100.0,
                2.0,
            ),
            check(
                "tan",
                |x| if trig_needs_fixup(x) { (x as f64).tan() as f32 } else { tan_f32(x) },
                f64::tan,
                -10.0,
                10.0,
                3.0,
            ),
            check("tanh", tanh_f32, f64::tanh, -10.0, 10.0, 3.0),
            check("sigmoid", sigmoid_f32, |x| 1.0 / (1.0 + (-x).exp()), -110.0, 30.0, 3.0),
            check("sinh", sinh_f32, f64::sinh, -90.0, 90.0, 4.0),
            check("cosh", cosh_f32, f64::cosh, -90.0, 90.0, 4.0),
            check("erf", erf_f32, libm::erf, -5.0, 5.0, 4.0),
            check("erfinv", erfinv_f32, crate::backend::cpu::unary::erfinv_f64, -1.0, 1.0, 8.0),
            check("atan", atan_f32, f64::atan, -10.0, 10.0, 3.0),
            check("asin", asin_f32, f64::asin, -1.0, 1.0, 3.0),
            check("acos", acos_f32, f64::acos, -1.0, 1.0, 3.0),
            check("asinh", asinh_f32, f64::asinh, -10.0, 10.0, 4.0),
            check("acosh", acosh_f32, f64::acosh, 1.0, 10.0, 4.0),
            check("atanh", atanh_f32, f64::atanh, -1.0, 1.0, 4.0),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert!(fails.is_empty(), "{}", fails.join("\n"));
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(88.72), 88.72f32.exp());
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert_eq!(log_f32(0.0), f32::NEG_INFINITY);
        assert!(log_f32(-1.0).is_nan());
        assert_eq!(log1p_f32(-1.0), f32::NEG_INFINITY);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(sigmoid_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(erfinv_f32(1.0), f32::INFINITY);
        assert_eq!(erfinv_f32(-1.0), f32::NEG_INFINITY);
        assert!(erfinv_f32(1.5).is_nan());
        assert_eq!(atanh_f32(1.0), f32::INFINITY);
        assert!(acosh_f32(0.5).is_nan());
        assert!(sin_f32(f32::INFINITY).is_nan());
        assert_eq!(expm1_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(atan_f32(f32::INFINITY), std::f32::consts::FRAC_PI_2);
        assert!(trig_needs_fixup(2.0e6) && !trig_needs_fixup(100.0));
    }

    #[test]
    fn exp_matches_std() {
        let mut x = -103.0f32;
        while x < 88.7 {
            let (a, b) = (exp_f32(x), x.exp());
            // Subnormal results keep fewer significant bits; compare them absolutely.
            let ok = if b < f32::MIN_POSITIVE {
                (a - b).abs() <= 2.0 * f32::from_bits(1)
            } else {
                ((a - b) / b).abs() < 3e-7
            };
            assert!(ok, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
