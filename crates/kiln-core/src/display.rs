//! `Display` for arrays in MLX's format: `array([[1, 2],\n       [3, 4]], dtype=int32)`.
//!
//! Floats print like C's `%g` (six significant digits, trailing zeros
//! dropped); any dimension longer than six shows its first and last three
//! entries around `...`.

use crate::array::Array;
use crate::dtype::{c64, Dtype, Element};
use std::fmt;

/// Entries shown at each end of a summarised dimension.
const EDGE: usize = 3;

/// Formats `v` like C's `printf("%g")` (precision 6).
pub fn format_g(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    const P: i32 = 6;
    // Exponent after rounding to P significant digits decides the style.
    let sci = format!("{:.*e}", (P - 1) as usize, v);
    let (mant, exp) = sci.split_once('e').expect("exponent format");
    let x: i32 = exp.parse().expect("exponent");
    if !(-4..P).contains(&x) {
        let mant = strip_zeros(mant);
        let sign = if x < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", x.abs())
    } else {
        strip_zeros(&format!("{:.*}", (P - 1 - x) as usize, v))
    }
}

fn strip_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn format_elem<T: Element>(x: T) -> String {
    match T::DTYPE {
        Dtype::Bool => if x.to_i64() != 0 { "True" } else { "False" }.into(),
        Dtype::C64 => {
            let c: c64 = x.to_c64();
            let im = format_g(c.im as f64);
            let sep = if im.starts_with('-') { "" } else { "+" };
            format!("{}{sep}{im}j", format_g(c.re as f64))
        }
        d if d.is_floating() => format_g(x.to_f64()),
        Dtype::U64 => x.to_u64().to_string(),
        _ => x.to_i64().to_string(),
    }
}

fn write_dims(out: &mut String, elems: &[String], shape: &[usize], depth: usize, start: usize) {
    if shape.is_empty() {
        out.push_str(&elems[start]);
        return;
    }
    let n = shape[0];
    let stride: usize = shape[1..].iter().product();
    out.push('[');
    let summarise = n > 2 * EDGE;
    let idx: Vec<Option<usize>> = if summarise {
        (0..EDGE).map(Some).chain(std::iter::once(None)).chain((n - EDGE..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    let indent = " ".repeat(depth + 7); // "array(" plus the opening brackets
    for (k, i) in idx.iter().enumerate() {
        if k > 0 {
            if shape.len() > 1 {
                out.push_str(",\n");
                out.push_str(&indent);
            } else {
                out.push_str(", ");
            }
        }
        match i {
            Some(i) => write_dims(out, elems, &shape[1..], depth + 1, start + i * stride),
            None => out.push_str("..."),
        }
    }
    out.push(']');
}

impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(e) = self.eval() {
            return write!(f, "array(<error: {e}>)");
        }
        let elems: Vec<String> = crate::dispatch_dtype!(self.dtype(), T => {
            self.to_vec::<T>().unwrap_or_default().into_iter().map(format_elem).collect()
        });
        let mut body = String::new();
        if self.size() == 0 {
            // Empty arrays print their nesting with no elements.
            let lead = self.shape().iter().take_while(|&&d| d != 0).count();
            let rows: usize = self.shape()[..lead].iter().product();
            if lead == 0 {
                body.push_str("[]");
            } else {
                let indent = " ".repeat(7 + lead - 1);
                let parts = vec!["[]"; rows].join(&format!(",\n{indent}"));
                body = format!("{}{parts}{}", "[".repeat(lead), "]".repeat(lead));
            }
        } else {
            write_dims(&mut body, &elems, self.shape(), 0, 0);
        }
        write!(f, "array({body}, dtype={})", self.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_format_matches_c() {
        let cases = [
            (1.0, "1"),
            (2.5, "2.5"),
            (-3.25, "-3.25"),
            (1e-8, "1e-08"),
            (1e10, "1e+10"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.333333"),
            (123456789.0, "1.23457e+08"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-0.0, "-0"),
            (999999.5, "1e+06"),
        ];
        for (v, s) in cases {
            assert_eq!(format_g(v), s, "{v}");
        }
    }

    #[test]
    fn arrays_print_like_mlx() {
        let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
        assert_eq!(a.to_string(), "array([[1, 2],\n       [3, 4]], dtype=int32)");
        let b = Array::from_slice(&[1.0f32, 2.5, -3.25], &[3]).unwrap();
        assert_eq!(b.to_string(), "array([1, 2.5, -3.25], dtype=float32)");
        assert_eq!(Array::scalar(3.0f32).to_string(), "array(3, dtype=float32)");
        let t = Array::from_slice(&[true, false], &[2]).unwrap();
        assert_eq!(t.to_string(), "array([True, False], dtype=bool)");
        let c = Array::from_slice(&[c64::new(1.0, 2.0), c64::new(3.0, -1.0)], &[2]).unwrap();
        assert_eq!(c.to_string(), "array([1+2j, 3-1j], dtype=complex64)");
        let e = Array::from_slice::<f32>(&[], &[0]).unwrap();
        assert_eq!(e.to_string(), "array([], dtype=float32)");
        let e2 = Array::from_slice::<f32>(&[], &[2, 0]).unwrap();
        assert_eq!(e2.to_string(), "array([[],\n       []], dtype=float32)");
    }

    #[test]
    fn long_dims_are_summarised() {
        let v: Vec<i32> = (0..7).collect();
        let a = Array::from_slice(&v, &[7]).unwrap();
        assert_eq!(a.to_string(), "array([0, 1, 2, ..., 4, 5, 6], dtype=int32)");
        let v: Vec<i32> = (0..42).collect();
        let a = Array::from_slice(&v, &[7, 6]).unwrap();
        let expect = "array([[0, 1, 2, 3, 4, 5],\n       [6, 7, 8, 9, 10, 11],\n       [12, 13, 14, 15, 16, 17],\n       ...,\n       [24, 25, 26, 27, 28, 29],\n       [30, 31, 32, 33, 34, 35],\n       [36, 37, 38, 39, 40, 41]], dtype=int32)";
        assert_eq!(a.to_string(), expect);
        let v: Vec<i32> = (0..24).collect();
        let a = Array::from_slice(&v, &[2, 3, 4]).unwrap();
        let expect = "array([[[0, 1, 2, 3],\n        [4, 5, 6, 7],\n        [8, 9, 10, 11]],\n       [[12, 13, 14, 15],\n        [16, 17, 18, 19],\n        [20, 21, 22, 23]]], dtype=int32)";
        assert_eq!(a.to_string(), expect);
    }
}
