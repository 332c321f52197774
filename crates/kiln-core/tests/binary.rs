//! Binary, comparison, logical and selection ops: golden values from MLX,
//! promotion and weak scalars, gradients and vmap, broadcasting against a
//! host reference, strided inputs, half types, the parallel path and donation.

mod common;

use common::{check_grad, check_vmap, run_golden, Case, Rng};
use kiln_core::ops::{self, Operand};
use kiln_core::{bf16, f16, Array, Dtype, Scalar};

fn scalar_kw(case: &Case, key: &str) -> Option<Operand> {
    let v = case.kw(key)?;
    Some(Operand::Scalar(match v {
        serde_json::Value::Bool(b) => Scalar::Bool(*b),
        serde_json::Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
        serde_json::Value::Number(n) if n.is_u64() => Scalar::UInt(n.as_u64().unwrap()),
        x => Scalar::Float(common::json_f64(x)),
    }))
}

/// Runs one of this family's ops on a golden case (None for other ops).
fn run_op(case: &Case) -> Option<kiln_core::Result<Vec<Array>>> {
    let i = &case.inputs;
    let one = |r: kiln_core::Result<Array>| Some(r.map(|a| vec![a]));
    match case.op.as_str() {
        "add" => one(ops::add(&i[0], &i[1])),
        "subtract" => one(ops::subtract(&i[0], &i[1])),
        "multiply" => one(ops::multiply(&i[0], &i[1])),
        "divide" => one(ops::divide(&i[0], &i[1])),
        "floor_divide" => one(ops::floor_divide(&i[0], &i[1])),
        "remainder" => one(ops::remainder(&i[0], &i[1])),
        "divmod" => Some(ops::divmod(&i[0], &i[1]).map(|(q, r)| vec![q, r])),
        "power" => one(ops::power(&i[0], &i[1])),
        "maximum" => one(ops::maximum(&i[0], &i[1])),
        "minimum" => one(ops::minimum(&i[0], &i[1])),
        "logaddexp" => one(ops::logaddexp(&i[0], &i[1])),
        "arctan2" => one(ops::arctan2(&i[0], &i[1])),
        "bitwise_and" => one(ops::bitwise_and(&i[0], &i[1])),
        "bitwise_or" => one(ops::bitwise_or(&i[0], &i[1])),
        "bitwise_xor" => one(ops::bitwise_xor(&i[0], &i[1])),
        "left_shift" => one(ops::left_shift(&i[0], &i[1])),
        "right_shift" => one(ops::right_shift(&i[0], &i[1])),
        "equal" => one(ops::equal(&i[0], &i[1])),
        "not_equal" => one(ops::not_equal(&i[0], &i[1])),
        "greater" => one(ops::greater(&i[0], &i[1])),
        "greater_equal" => one(ops::greater_equal(&i[0], &i[1])),
        "less" => one(ops::less(&i[0], &i[1])),
        "less_equal" => one(ops::less_equal(&i[0], &i[1])),
        "logical_and" => one(ops::logical_and(&i[0], &i[1])),
        "logical_or" => one(ops::logical_or(&i[0], &i[1])),
        "logical_xor" => one(ops::logical_xor(&i[0], &i[1])),
        "where" => one(ops::where_(&i[0], &i[1], &i[2])),
        "clip" => {
            let mut rest = i[1..].iter();
            let mut bound = |k: &str| -> Option<Operand> {
                if case.kwargs.get(k).is_some() {
                    scalar_kw(case, k)
                } else {
                    rest.next().map(Operand::from)
                }
            };
            let lo = bound("a_min");
            let hi = bound("a_max");
            one(ops::clip(&i[0], lo, hi))
        }
        "isclose" | "allclose" => {
            let rtol = case.kw_f64("rtol").unwrap_or(1e-5);
            let atol = case.kw_f64("atol").unwrap_or(1e-8);
            let en = case.kw_bool("equal_nan", false);
            let f = if case.op == "isclose" { ops::isclose } else { ops::allclose };
            one(f(&i[0], &i[1], rtol, atol, en))
        }
        "array_equal" => one(ops::array_equal(&i[0], &i[1], case.kw_bool("equal_nan", false))),
        "add_scalar" => {
            let s = scalar_kw(case, "scalar").unwrap();
            one(ops::add(&i[0], s))
        }
        _ => None,
    }
}

#[test]
fn golden_binary() {
    let n = run_golden("binary.json", run_op);
    assert!(n >= 340, "ran {n}");
}

#[test]
fn golden_compare_logical() {
    let n = run_golden("compare_logical.json", run_op);
    assert!(n >= 115, "ran {n}");
}

#[test]
fn golden_promotion() {
    let n = run_golden("promotion.json", run_op);
    // 196 dtype pairs plus the weak-scalar cases (two are known deviations).
    assert!(n >= 196 + 120, "ran {n}");
}

#[test]
fn golden_errors() {
    let n = run_golden("errors.json", run_op);
    assert!(n >= 30, "ran {n}");
}

#[test]
fn deviations_are_errors_not_truncation() {
    let b = Array::from_slice(&[true], &[1]).unwrap();
    assert!(ops::add(&b, 1i64 << 40).is_err());
    let u = Array::from_slice(&[1u64], &[1]).unwrap();
    assert!(ops::add(&u, -1).is_err());
    let i8a = Array::from_slice(&[1i8], &[1]).unwrap();
    assert!(ops::add(&i8a, 1000).is_err());
    let h = Array::from_slice(&[f16::from_f32(1.0)], &[1]).unwrap();
    assert_eq!((&h + 1.5).dtype(), Dtype::F16);
}

#[test]
fn integer_division_by_zero_is_defined() {
    for d in [Dtype::I8, Dtype::I32, Dtype::I64, Dtype::U8, Dtype::U32] {
        let a = ops::astype(&Array::from_slice(&[7i32, -7, 0, 5], &[4]).unwrap(), d).unwrap();
        let z = ops::zeros(&[4], d).unwrap();
        let (q, r) = ops::divmod(&a, &z).unwrap();
        let q = ops::astype(&q, Dtype::I64).unwrap().to_vec::<i64>().unwrap();
        let r = ops::astype(&r, Dtype::I64).unwrap();
        assert_eq!(q, vec![0; 4], "{d}");
        assert_eq!(r.to_vec::<i64>().unwrap(), ops::astype(&a, Dtype::I64).unwrap().to_vec::<i64>().unwrap());
    }
    let m = Array::from_slice(&[i32::MIN], &[1]).unwrap();
    assert_eq!(ops::floor_divide(&m, -1).unwrap().to_vec::<i32>().unwrap(), vec![i32::MIN]);
    assert_eq!(ops::remainder(&m, -1).unwrap().to_vec::<i32>().unwrap(), vec![0]);
    let b = Array::from_slice(&[true, false], &[2]).unwrap();
    let f = Array::from_slice(&[false, false], &[2]).unwrap();
    assert!(ops::floor_divide(&b, &f).unwrap().eval().is_ok());
}

#[test]
fn shifts_out_of_range() {
    let a = Array::from_slice(&[1i32, -8, 3], &[3]).unwrap();
    let s = Array::from_slice(&[40i32, 40, -1], &[3]).unwrap();
    assert_eq!(ops::left_shift(&a, &s).unwrap().to_vec::<i32>().unwrap(), vec![0, 0, 0]);
    assert_eq!(ops::right_shift(&a, &s).unwrap().to_vec::<i32>().unwrap(), vec![0, -1, 0]);
    let u = Array::from_slice(&[0x80u8], &[1]).unwrap();
    assert_eq!((&u >> 9).to_vec::<u8>().unwrap(), vec![0]);
}

#[test]
fn operators() {
    let a = Array::from_slice(&[6i32, 3, -4], &[3]).unwrap();
    let b = Array::from_slice(&[3i32, 5, 1], &[3]).unwrap();
    assert_eq!((&a & &b).to_vec::<i32>().unwrap(), vec![2, 1, 0]);
    assert_eq!((&a | &b).to_vec::<i32>().unwrap(), vec![7, 7, -3]);
    assert_eq!((&a ^ &b).to_vec::<i32>().unwrap(), vec![5, 6, -3]);
    assert_eq!((&a << 1).to_vec::<i32>().unwrap(), vec![12, 6, -8]);
    assert_eq!((&a >> 1).to_vec::<i32>().unwrap(), vec![3, 1, -2]);
    assert_eq!((&a % 4).to_vec::<i32>().unwrap(), vec![2, 3, 0]);
    assert_eq!((&a / 2).dtype(), Dtype::F32);
    let f = Array::from_slice(&[1.0f32], &[1]).unwrap();
    let r = std::panic::catch_unwind(|| &f & &f);
    let msg = r.err().and_then(|e| e.downcast::<String>().ok()).unwrap();
    assert!(msg.contains("bitwise_and"), "{msg}");
}

#[test]
fn comparison_dtypes_and_bool_arith() {
    let t = Array::from_slice(&[true, false, true, false], &[4]).unwrap();
    let f = Array::from_slice(&[true, true, false, false], &[4]).unwrap();
    let v = |a: Array| a.to_vec::<bool>().unwrap();
    assert_eq!(v(ops::add(&t, &f).unwrap()), vec![true, true, true, false]);
    assert_eq!(v(ops::subtract(&t, &f).unwrap()), vec![false, true, true, false]);
    assert_eq!(v(ops::multiply(&t, &f).unwrap()), vec![true, false, false, false]);
    assert_eq!(ops::left_shift(&t, &f).unwrap().dtype(), Dtype::U8);
    assert_eq!(ops::bitwise_and(&t, 3).unwrap().dtype(), Dtype::I32);
    let x = Array::from_slice(&[0.0f32, f32::NAN], &[2]).unwrap();
    assert_eq!(v(ops::logical_or(&x, &x).unwrap()), vec![false, true]);
    assert!(!ops::array_equal(&x, &t, false).unwrap().item::<bool>().unwrap());
}

// ---------------------------------------------------------------- transforms

type OpFn = fn(&[Array]) -> kiln_core::Result<Array>;

fn differentiable() -> Vec<(&'static str, OpFn, f64, f64)> {
    vec![
        ("add", |x| ops::add(&x[0], &x[1]), -2.0, 2.0),
        ("subtract", |x| ops::subtract(&x[0], &x[1]), -2.0, 2.0),
        ("multiply", |x| ops::multiply(&x[0], &x[1]), -2.0, 2.0),
        ("divide", |x| ops::divide(&x[0], &x[1]), 0.5, 2.0),
        ("remainder", |x| ops::remainder(&x[0], &x[1]), 0.3, 0.45),
        ("power", |x| ops::power(&x[0], &x[1]), 0.5, 2.0),
        ("maximum", |x| ops::maximum(&x[0], &x[1]), -2.0, 2.0),
        ("minimum", |x| ops::minimum(&x[0], &x[1]), -2.0, 2.0),
        ("logaddexp", |x| ops::logaddexp(&x[0], &x[1]), -2.0, 2.0),
        ("arctan2", |x| ops::arctan2(&x[0], &x[1]), 0.5, 2.0),
    ]
}

#[test]
fn grads_with_broadcasting() {
    let mut rng = Rng::new(11);
    for (name, f, lo, hi) in differentiable() {
        for (sa, sb) in [(&[3usize, 1][..], &[4usize][..]), (&[2, 3][..], &[2, 3][..]), (&[][..], &[3][..])] {
            let a = rng.array(sa, lo, hi);
            let b = rng.array(sb, lo, hi);
            // Keep remainder away from its jumps: a in (0.3, 0.45), b in (1.3, 1.45).
            let b = if name == "remainder" { ops::add(&b, 1.0).unwrap() } else { b };
            check_grad(name, f, &[a, b]);
        }
    }
    // floor_divide and comparisons: zero gradient.
    let a = Array::from_slice(&[0.3f64, 1.7, -2.3], &[3]).unwrap();
    let b = Array::from_slice(&[1.1f64], &[1]).unwrap();
    check_grad("floor_divide", |x| ops::floor_divide(&x[0], &x[1]), &[a.clone(), b.clone()]);
    let g = kiln_core::grad(
        |x: &[Array]| {
            let m = ops::greater(&x[0], 0.0)?;
            Ok(vec![ops::sum(&ops::multiply(&x[0], &ops::astype(&m, Dtype::F64)?)?, ops::Axes::All, false)?])
        },
        &[0],
    );
    assert_eq!(g(&[a]).unwrap()[0].to_vec::<f64>().unwrap(), vec![1.0, 1.0, 0.0]);
}

#[test]
fn grad_of_grad() {
    // d²/dx² (x*x/x + x^3) = 6x
    let x = Array::from_slice(&[1.5f64, -0.5], &[2]).unwrap();
    let f = |x: &[Array]| -> kiln_core::Result<Vec<Array>> {
        let y = ops::add(&ops::divide(&ops::multiply(&x[0], &x[0])?, &x[0])?, &ops::power(&x[0], 3.0)?)?;
        Ok(vec![ops::sum(&y, ops::Axes::All, false)?])
    };
    let g = kiln_core::grad(f, &[0]);
    let gg = kiln_core::grad(move |x: &[Array]| Ok(vec![ops::sum(&g(x)?[0], ops::Axes::All, false)?]), &[0]);
    let r = gg(&[x]).unwrap()[0].to_vec::<f64>().unwrap();
    assert!((r[0] - 9.0).abs() < 1e-9 && (r[1] + 3.0).abs() < 1e-9, "{r:?}");
}

#[test]
fn where_and_clip_grads() {
    let mut rng = Rng::new(5);
    let c = Array::from_slice(&[true, false, true], &[3, 1]).unwrap();
    let x = rng.array(&[3, 4], -1.0, 1.0);
    let y = rng.array(&[4], -1.0, 1.0);
    // A float condition gets no gradient (its values stay non-zero under the
    // finite-difference steps, so the selection does not flip).
    let cf = Array::from_slice(&[1.0f64, -2.0, 3.0], &[3, 1]).unwrap();
    check_grad("where", |v| ops::where_(&v[0], &v[1], &v[2]), &[cf, x.clone(), y.clone()]);
    check_grad("where_bool", |v| ops::where_(&c, &v[0], &v[1]), &[x.clone(), y.clone()]);
    check_grad("clip", |v| ops::clip(&v[0], Some(Operand::from(&v[1])), Some(0.5.into())), &[x.clone(), y.clone()]);
    check_vmap(
        "where",
        |v| ops::where_(&ops::greater(&v[0], 0.0)?, &v[1], &v[2]),
        &[x.clone(), x.clone(), y.clone()],
        &[Some(0), Some(0), None],
    );
    check_vmap(
        "where_unbatched_x",
        |v| ops::where_(&ops::greater(&v[0], 0.0)?, &v[1], &v[2]),
        &[x.clone(), rng.array(&[3, 1], -1.0, 1.0), ops::transpose(&x).unwrap()],
        &[Some(1), None, Some(0)],
    );
    check_vmap("clip", |v| ops::clip(&v[0], Some(Operand::from(&v[1])), None), &[x, y], &[Some(0), None]);
}

#[test]
fn vmap_every_op() {
    let mut rng = Rng::new(3);
    let a = rng.array(&[4, 3], 0.5, 2.0);
    let b = rng.array(&[3, 4], 0.5, 2.0);
    let c = rng.array(&[3], 0.5, 2.0);
    let c4 = rng.array(&[4], 0.5, 2.0);
    let mut all = differentiable();
    all.push(("floor_divide", |x| ops::floor_divide(&x[0], &x[1]), 0.0, 0.0));
    all.push(("greater", |x| ops::greater(&x[0], &x[1]), 0.0, 0.0));
    all.push(("equal", |x| ops::equal(&x[0], &x[1]), 0.0, 0.0));
    all.push(("logical_xor", |x| ops::logical_xor(&ops::greater(&x[0], 1.0)?, &ops::greater(&x[1], 1.0)?), 0.0, 0.0));
    all.push(("isclose", |x| ops::isclose(&x[0], &x[1], 0.1, 0.1, false), 0.0, 0.0));
    for (name, f, _, _) in all {
        check_vmap(name, f, &[a.clone(), b.clone()], &[Some(0), Some(1)]);
        check_vmap(name, f, &[a.clone(), c4.clone()], &[Some(1), None]);
        check_vmap(name, f, &[c.clone(), a.clone()], &[None, Some(0)]);
    }
    let ia = ops::astype(&ops::multiply(&a, 10.0).unwrap(), Dtype::I32).unwrap();
    let ib = ops::astype(&ops::multiply(&b, 3.0).unwrap(), Dtype::I32).unwrap();
    for (name, f) in [
        ("bitwise_and", (|x: &[Array]| ops::bitwise_and(&x[0], &x[1])) as OpFn),
        ("bitwise_or", |x| ops::bitwise_or(&x[0], &x[1])),
        ("bitwise_xor", |x| ops::bitwise_xor(&x[0], &x[1])),
        ("left_shift", |x| ops::left_shift(&x[0], &x[1])),
        ("right_shift", |x| ops::right_shift(&x[0], &x[1])),
    ] {
        check_vmap(name, f, &[ia.clone(), ib.clone()], &[Some(0), Some(1)]);
    }
}

// ---------------------------------------------------------------- layouts and kernels

fn host_f64(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

/// Host broadcast reference for `f` over the numpy broadcast of two shapes.
fn host_bcast(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize], f: impl Fn(f64, f64) -> f64) -> (Vec<f64>, Vec<usize>) {
    let n = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; n - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let total: usize = out.iter().product();
    let mut r = Vec::with_capacity(total);
    for k in 0..total {
        let (mut rem, mut ia, mut ib, mut sta, mut stb) = (k, 0, 0, 1, 1);
        for d in (0..n).rev() {
            let i = rem % out[d];
            rem /= out[d];
            if pa[d] != 1 {
                ia += i * sta;
            }
            if pb[d] != 1 {
                ib += i * stb;
            }
            sta *= pa[d];
            stb *= pb[d];
        }
        r.push(f(a[ia], b[ib]));
    }
    (r, out)
}

#[test]
fn property_broadcast_matches_host() {
    let mut rng = Rng::new(42);
    for _ in 0..200 {
        let nd = (rng.next_u64() % 4) as usize + 1;
        let out: Vec<usize> = (0..nd).map(|_| (rng.next_u64() % 4) as usize + 1).collect();
        let mk = |rng: &mut Rng| -> Vec<usize> {
            let skip = (rng.next_u64() % (nd as u64 + 1)) as usize;
            out[skip..].iter().map(|&d| if rng.next_u64().is_multiple_of(3) { 1 } else { d }).collect()
        };
        let (sa, sb) = (mk(&mut rng), mk(&mut rng));
        let a = rng.array(&sa, -3.0, 3.0);
        let b = rng.array(&sb, -3.0, 3.0);
        let (ha, hb) = (host_f64(&a), host_f64(&b));
        for (name, d) in [("f32", Dtype::F32), ("i32", Dtype::I32), ("f16", Dtype::F16)] {
            let (x, y) = (ops::astype(&a, d).unwrap(), ops::astype(&b, d).unwrap());
            let (hx, hy) = (host_f64(&x), host_f64(&y));
            let got = ops::add(&ops::multiply(&x, &y).unwrap(), &x).unwrap();
            let (exp, shape) = host_bcast(&hx, &sa, &hy, &sb, |p, q| p * q);
            let (exp, _) = host_bcast(&exp, &shape, &hx, &sa, |p, q| p + q);
            assert_eq!(got.shape(), &shape[..], "{name} {sa:?} {sb:?}");
            let g = host_f64(&got);
            let tol = if d == Dtype::F16 { 2e-2 } else { 1e-5 };
            for (i, (p, q)) in g.iter().zip(&exp).enumerate() {
                assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{name} {sa:?}x{sb:?} [{i}] {p} vs {q}");
            }
            let lt = ops::less(&x, &y).unwrap();
            let (e2, _) = host_bcast(&hx, &sa, &hy, &sb, |p, q| (p < q) as u8 as f64);
            assert_eq!(host_f64(&lt), e2);
        }
        let _ = (ha, hb);
    }
}

#[test]
fn strided_and_transposed_inputs() {
    let mut rng = Rng::new(9);
    let a = rng.array(&[5, 7], -2.0, 2.0);
    let b = rng.array(&[7, 5], -2.0, 2.0);
    for d in [Dtype::F32, Dtype::F64, Dtype::I64, Dtype::BF16, Dtype::C64] {
        let (x, y) = (ops::astype(&a, d).unwrap(), ops::astype(&b, d).unwrap());
        let yt = ops::transpose(&y).unwrap();
        let got = ops::subtract(&x, &yt).unwrap();
        let ha = host_f64(&x);
        let hb = host_f64(&y);
        let g = host_f64(&got);
        for i in 0..5 {
            for j in 0..7 {
                let e = ha[i * 7 + j] - hb[j * 5 + i];
                assert!((g[i * 7 + j] - e).abs() < 2e-2 * (1.0 + e.abs()), "{d} {i} {j}");
            }
        }
        // Both transposed, plus a broadcast row with a transposed matrix.
        let xt = ops::transpose(&x).unwrap();
        let m = ops::maximum(&xt, &y).unwrap();
        let hm = host_f64(&m);
        for i in 0..7 {
            for j in 0..5 {
                assert_eq!(hm[i * 5 + j], ha[j * 7 + i].max(hb[i * 5 + j]), "{d}");
            }
        }
        let row = ops::astype(&Array::from_slice(&[1.0f64, -1.0, 0.5, 2.0, 0.0], &[5]).unwrap(), d).unwrap();
        let s = ops::where_(&ops::greater(&xt, &row).unwrap(), &xt, &row).unwrap();
        let hs = host_f64(&s);
        let hr = host_f64(&row);
        for i in 0..7 {
            for j in 0..5 {
                let (p, q) = (ha[j * 7 + i], hr[j]);
                assert_eq!(hs[i * 5 + j], if p > q { p } else { q }, "{d}");
            }
        }
    }
}

#[test]
fn half_types() {
    let v: Vec<f32> = (0..1500).map(|i| (i as f32) * 0.37 - 200.0).collect();
    let a = Array::from_slice(&v, &[1500]).unwrap();
    for d in [Dtype::F16, Dtype::BF16] {
        let x = ops::astype(&a, d).unwrap();
        let y = ops::add(&ops::multiply(&x, 1.5).unwrap(), 0.5).unwrap();
        assert_eq!(y.dtype(), d);
        let hx = host_f64(&x);
        let hy = host_f64(&y);
        for (i, (p, q)) in hx.iter().zip(&hy).enumerate() {
            // Each op rounds to the half type once.
            let e = p * 1.5 + 0.5;
            let tol = if d == Dtype::F16 { 2e-3 } else { 1.6e-2 };
            assert!((q - e).abs() <= tol * e.abs() + 1e-2, "{d} {i}: {q} vs {e}");
        }
        let eq = ops::greater_equal(&x, 0.0).unwrap();
        assert_eq!(host_f64(&eq), hx.iter().map(|&p| (p >= 0.0) as u8 as f64).collect::<Vec<_>>());
    }
    let h = Array::from_slice(&[f16::from_f32(60000.0)], &[1]).unwrap();
    assert_eq!((&h + 10000.0).to_vec::<f16>().unwrap()[0], f16::INFINITY);
    let b = Array::from_slice(&[bf16::from_f32(1.0)], &[1]).unwrap();
    assert_eq!((&b * &b).dtype(), Dtype::BF16);
}

#[test]
fn parallel_path_matches_serial() {
    let n = 300_000;
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
    let a = Array::from_slice(&v, &[n]).unwrap();
    let y = ops::add(&ops::multiply(&a, 1.5).unwrap(), 0.5).unwrap().to_vec::<f32>().unwrap();
    for (i, &p) in v.iter().enumerate() {
        assert_eq!(y[i], p * 1.5 + 0.5);
    }
    // Broadcast rows across threads, and a large f16 and compare path.
    let m = ops::reshape(&a, &[600, 500]).unwrap();
    let r = Array::from_slice(&(0..500).map(|i| i as f32).collect::<Vec<_>>(), &[500]).unwrap();
    let s = ops::subtract(&ops::transpose(&m).unwrap(), &ops::reshape(&r, &[500, 1]).unwrap()).unwrap();
    let hs = s.to_vec::<f32>().unwrap();
    for i in (0..500).step_by(37) {
        for j in (0..600).step_by(13) {
            assert_eq!(hs[i * 600 + j], v[j * 500 + i] - i as f32);
        }
    }
    let h = ops::astype(&a, Dtype::F16).unwrap();
    let c = ops::less(&h, 0.0).unwrap().to_vec::<bool>().unwrap();
    let hv = h.to_vec::<f16>().unwrap();
    assert!(c.iter().zip(&hv).all(|(&c, x)| c == (x.to_f32() < 0.0)));
    let sel = ops::where_(&ops::greater(&a, 0.0).unwrap(), &a, 0.0).unwrap().to_vec::<f32>().unwrap();
    assert!(sel.iter().zip(&v).all(|(&s, &x)| s == x.max(0.0)));
}

#[test]
fn donation_reuses_buffers() {
    let n = 4096;
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    // A temporary (evaluated, uniquely owned) input is donated to the output.
    let x = Array::from_slice(&v, &[n]).unwrap();
    let t = ops::multiply(&x, 2.0).unwrap();
    t.eval().unwrap();
    let ptr = t.to_vec::<f32>().unwrap();
    let _ = ptr;
    let y = ops::add(t, 1.0).unwrap();
    let out = y.to_vec::<f32>().unwrap();
    assert!(out.iter().zip(&v).all(|(&o, &x)| o == 2.0 * x + 1.0));
    // Same chain in one graph: intermediates are donated during eval; the
    // in-place kernels (aliasing either operand) must give the same values.
    let x = Array::from_slice(&v, &[n]).unwrap();
    let z = ops::subtract(10.0, &ops::add(&ops::multiply(&x, 3.0).unwrap(), 1.0).unwrap()).unwrap();
    let w = ops::maximum(&ops::multiply(&z, &z).unwrap(), &z).unwrap();
    let out = w.to_vec::<f32>().unwrap();
    for (i, &o) in out.iter().enumerate() {
        let z = 10.0 - (3.0 * i as f32 + 1.0);
        assert_eq!(o, (z * z).max(z));
    }
    // A donated bool/u8-sized input to a comparison.
    let b = ops::astype(&Array::from_slice(&[1i32, 5, 3], &[3]).unwrap(), Dtype::U8).unwrap();
    let c = ops::greater(&ops::add(&b, 1).unwrap(), 3).unwrap();
    assert_eq!(c.to_vec::<bool>().unwrap(), vec![false, true, true]);
}

#[test]
fn array_equal_shapes_and_nan() {
    let a = Array::from_slice(&[1.0f32, f32::NAN], &[2]).unwrap();
    let b = Array::from_slice(&[1.0f32, f32::NAN, 2.0], &[3]).unwrap();
    assert!(!ops::array_equal(&a, &b, true).unwrap().item::<bool>().unwrap());
    assert!(ops::array_equal(&a, &a, true).unwrap().item::<bool>().unwrap());
    assert!(!ops::array_equal(&a, &a, false).unwrap().item::<bool>().unwrap());
    assert_eq!(ops::array_equal(&a, &a, false).unwrap().ndim(), 0);
    assert!(ops::clip(&a, None, None).is_err());
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let y = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    assert!(ops::where_(true, &x, &y).is_err());
    assert!(ops::add(&x, &y).is_err());
    assert!(ops::divmod(&ops::astype(&x, Dtype::C64).unwrap(), &x).is_err());
}

/// Speed of `x*1.5+0.5` on 16M f32 (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_fma_16m() {
    let n = 16 << 20;
    let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let x = Array::from_slice(&v, &[n]).unwrap();
    for _ in 0..2 {
        ops::add(&ops::multiply(&x, 1.5).unwrap(), 0.5).unwrap().eval().unwrap();
    }
    let reps = 10;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        ops::add(&ops::multiply(&x, 1.5).unwrap(), 0.5).unwrap().eval().unwrap();
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    // Two ops, each reads and writes 4 bytes per element.
    let bytes = 2.0 * 8.0 * n as f64;
    println!("x*1.5+0.5 16M f32: {:.2} ms, {:.1} GB/s", dt * 1e3, bytes / dt / 1e9);
    // Reference: the same two passes as plain single-threaded Rust loops into
    // preallocated memory (the machine is shared, so compare ratios).
    let mut o1 = vec![0f32; n];
    let mut o2 = vec![0f32; n];
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for (o, &x) in o1.iter_mut().zip(&v) {
            *o = x * 1.5;
        }
        for (o, &x) in o2.iter_mut().zip(&o1) {
            *o = x + 0.5;
        }
        std::hint::black_box(&o2);
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("plain loops (1 thread): {:.2} ms, {:.1} GB/s", dt * 1e3, bytes / dt / 1e9);
    let y = Array::from_slice(&v, &[n]).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..reps {
        ops::add(&x, &y).unwrap().eval().unwrap();
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("x+y 16M f32: {:.2} ms, {:.1} GB/s", dt * 1e3, 12.0 * n as f64 / dt / 1e9);
    let s = Array::from_slice(&v[..16], &[16]).unwrap();
    let reps = 100_000;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        ops::add(&s, &s).unwrap().eval().unwrap();
    }
    println!("16-element add incl. graph+eval: {:.0} ns", t.elapsed().as_secs_f64() / reps as f64 * 1e9);
    let t = std::time::Instant::now();
    for _ in 0..reps {
        std::hint::black_box(ops::add(&s, &s).unwrap());
    }
    println!("16-element add, graph build only: {:.0} ns", t.elapsed().as_secs_f64() / reps as f64 * 1e9);
    use kiln_core::backend::Backend;
    let spec = kiln_core::primitive::OutSpec { shape: &[16], dtype: Dtype::F32 };
    let t = std::time::Instant::now();
    for _ in 0..reps {
        std::hint::black_box(
            kiln_core::backend::cpu::CpuBackend.binary(kiln_core::backend::BinaryOp::Add, &s, &s, &spec).unwrap(),
        );
    }
    println!("16-element add, kernel call only: {:.0} ns", t.elapsed().as_secs_f64() / reps as f64 * 1e9);
    let t = std::time::Instant::now();
    for _ in 0..reps {
        std::hint::black_box(Array::from_slice(&v[..16], &[16]).unwrap());
    }
    println!("16-element from_slice (allocation reference): {:.0} ns", t.elapsed().as_secs_f64() / reps as f64 * 1e9);
    let t = std::time::Instant::now();
    for _ in 0..reps {
        ops::add(&s, 1.0).unwrap().eval().unwrap();
    }
    println!("16-element add scalar incl. graph+eval: {:.0} ns", t.elapsed().as_secs_f64() / reps as f64 * 1e9);
}

/// Complex gradients follow MLX: the cotangent times the conjugate of the
/// partial derivative (values from MLX 0.32.4: `mx.grad(lambda x: mx.real(x * c))`).
#[test]
fn complex_vjp_conjugates_the_partial() {
    use num_complex::Complex32 as C;
    let x = Array::scalar(C::new(1.0, 2.0));
    let c = Array::scalar(C::new(2.0, 3.0));
    type F = fn(&Array, &Array) -> kiln_core::Result<Array>;
    let cases: [(&str, F, C); 2] = [
        ("mul", |x, c| ops::real(&ops::multiply(x, c)?), C::new(2.0, -3.0)),
        ("div", |x, c| ops::real(&ops::divide(x, c)?), C::new(2.0 / 13.0, 3.0 / 13.0)),
    ];
    for (name, f, want) in cases {
        let c2 = c.clone();
        let g = kiln_core::grad(move |a: &[Array]| Ok(vec![f(&a[0], &c2)?]), &[0])(&[x.clone()]).unwrap();
        let got: C = g[0].item().unwrap();
        assert!((got - want).norm() < 1e-6, "{name}: {got} vs {want}");
    }
}
