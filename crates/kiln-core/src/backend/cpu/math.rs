//! Branch-free scalar math written so loops over it vectorise.
//!
//! `std`'s `exp`, `tanh`, … call into libm one element at a time; these
//! versions use range reduction and polynomials in plain arithmetic, which the
//! compiler turns into SIMD code inside multiversioned loops.

/// e^x for f32, relative error below 2 ulp over the full range; overflows to
/// inf, underflows to 0, propagates NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-104.0, 89.0);
    let k = (xc * LOG2E).round_ties_even();
    let r = xc - k * LN2_HI - k * LN2_LO;
    // exp(r) on |r| <= ln2/2, degree-6 minimax-style Taylor.
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // Scale by 2^k in two steps so k down to -150 still reaches subnormals.
    let k1 = (k * 0.5).floor();
    let k2 = k - k1;
    let s1 = f32::from_bits(((k1 as i32 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k2 as i32 + 127) as u32) << 23);
    let y = p * s1 * s2;
    let y = if x > 88.72284 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
