//! Convolution: MLX golden values, a randomized comparison against a naive
//! direct convolution in f64, validation errors, and the transform rules
//! (vjp/jvp by finite differences, grad of grad, vmap with batched inputs
//! and weights).

mod common;

use common::{check_grad, check_vmap, Case, Rng};
use kiln_core::{ops, Array, Dtype, Result};

fn usize_list(v: Option<Vec<i64>>, n: usize, default: usize) -> Vec<usize> {
    match v {
        None => vec![default; n],
        Some(v) if v.len() == 1 => vec![v[0] as usize; n],
        Some(v) => v.iter().map(|&x| x as usize).collect(),
    }
}

fn i64_list(v: Option<Vec<i64>>, n: usize) -> Vec<i64> {
    match v {
        None => vec![0; n],
        Some(v) if v.len() == 1 => vec![v[0]; n],
        Some(v) => v,
    }
}

fn run_case(c: &Case) -> Result<Vec<Array>> {
    let (x, w) = (&c.inputs[0], &c.inputs[1]);
    let groups = c.kw_i64("groups").unwrap_or(1) as usize;
    let nsp = if let Some(d) = c.op.strip_prefix("conv_transpose") {
        d[..1].parse::<usize>().unwrap()
    } else if let Some(d) = c.op.strip_prefix("conv") {
        d.get(..1).and_then(|s| s.parse::<usize>().ok()).unwrap_or(x.ndim().saturating_sub(2))
    } else {
        unreachable!()
    };
    let stride = usize_list(c.kw_ints("stride"), nsp, 1);
    let dilation = usize_list(c.kw_ints("dilation"), nsp, 1);
    let y = match c.op.as_str() {
        "conv_general" => {
            let (lo, hi) = match c.kw("padding") {
                Some(serde_json::Value::Array(a)) if a.first().is_some_and(|v| v.is_array()) => {
                    let side =
                        |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
                    (side(&a[0]), side(&a[1]))
                }
                _ => {
                    let p = i64_list(c.kw_ints("padding"), nsp);
                    (p.clone(), p)
                }
            };
            let kd = usize_list(c.kw_ints("kernel_dilation"), nsp, 1);
            let id = usize_list(c.kw_ints("input_dilation"), nsp, 1);
            ops::conv_general(x, w, &stride, &lo, &hi, &kd, &id, groups, c.kw_bool("flip", false))?
        }
        op if op.starts_with("conv_transpose") => {
            let pad = usize_list(c.kw_ints("padding"), nsp, 0);
            let op_ = usize_list(c.kw_ints("output_padding"), nsp, 0);
            match nsp {
                1 => ops::conv_transpose1d(x, w, stride[0], pad[0], dilation[0], op_[0], groups)?,
                2 => ops::conv_transpose2d(
                    x,
                    w,
                    [stride[0], stride[1]],
                    [pad[0], pad[1]],
                    [dilation[0], dilation[1]],
                    [op_[0], op_[1]],
                    groups,
                )?,
                _ => ops::conv_transpose3d(
                    x,
                    w,
                    [stride[0], stride[1], stride[2]],
                    [pad[0], pad[1], pad[2]],
                    [dilation[0], dilation[1], dilation[2]],
                    [op_[0], op_[1], op_[2]],
                    groups,
                )?,
            }
        }
        _ => {
            let pad = i64_list(c.kw_ints("padding"), nsp);
            if pad.iter().any(|&p| p < 0) {
                // MLX accepts negative padding (cropping); Kiln's conv2d takes
                // sizes, conv_general takes signed per-side padding.
                ops::conv_general(x, w, &stride, &pad, &pad, &dilation, &[1], groups, false)?
            } else {
                let pad: Vec<usize> = pad.iter().map(|&p| p as usize).collect();
                match nsp {
                    1 => ops::conv1d(x, w, stride[0], pad[0], dilation[0], groups)?,
                    2 => {
                        ops::conv2d(x, w, [stride[0], stride[1]], [pad[0], pad[1]], [dilation[0], dilation[1]], groups)?
                    }
                    _ => ops::conv3d(
                        x,
                        w,
                        [stride[0], stride[1], stride[2]],
                        [pad[0], pad[1], pad[2]],
                        [dilation[0], dilation[1], dilation[2]],
                        groups,
                    )?,
                }
            }
        }
    };
    Ok(vec![y])
}

#[test]
fn golden_conv() {
    let n = common::run_golden("conv.json", |c| {
        if !c.op.starts_with("conv") {
            return None;
        }
        // Accumulation order differs from MLX; half-precision outputs are
        // checked separately with a tolerance scaled to the sum's length.
        if matches!(c.out.first().map(|o| o.dtype()), Some(Dtype::F16 | Dtype::BF16)) {
            return None;
        }
        Some(run_case(c))
    });
    assert!(n >= 50, "only {n} golden cases ran");
}

#[test]
fn golden_conv_half() {
    let mut ran = 0;
    for c in common::load("conv.json") {
        let Some(e) = c.out.first() else { continue };
        if !matches!(e.dtype(), Dtype::F16 | Dtype::BF16) {
            continue;
        }
        ran += 1;
        let y = run_case(&c).unwrap_or_else(|err| panic!("{}: {err}", c.id))[0].clone();
        assert_eq!(y.dtype(), e.dtype(), "{}", c.id);
        assert_eq!(y.shape(), e.shape(), "{}", c.id);
        // One rounding of the f32 result to the half type, on values of
        // magnitude up to ~the number of taps.
        let (rt, at) = if e.dtype() == Dtype::F16 { (2e-3, 2e-2) } else { (1.6e-2, 8e-2) };
        common::compare(&y, e, rt, at).unwrap_or_else(|m| panic!("{}: {m}", c.id));
    }
    assert!(ran >= 10, "only {ran} half-precision cases");
}

// ---------------------------------------------------------------- naive reference

/// A convolution setting for the reference comparison.
#[derive(Clone, Debug)]
struct Cfg {
    x: Vec<usize>,
    w: Vec<usize>,
    stride: Vec<usize>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    kd: Vec<usize>,
    id: Vec<usize>,
    groups: usize,
    flip: bool,
}

/// Direct convolution in f64 from the definition.
fn naive(c: &Cfg, x: &[f64], w: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let nsp = c.x.len() - 2;
    let pad3 = |v: &[usize], d: usize| -> [usize; 3] {
        let mut a = [d; 3];
        a[..nsp].copy_from_slice(&v[..nsp]);
        a
    };
    let l = pad3(&c.x[1..], 1);
    let k = pad3(&c.w[1..], 1);
    let s = pad3(&c.stride, 1);
    let kd = pad3(&c.kd, 1);
    let id = pad3(&c.id, 1);
    // Negative padding crops whole input elements before dilation (as MLX),
    // i.e. `-p * dilation` positions of the dilated input.
    let mut lo = [0i64; 3];
    let mut hi = [0i64; 3];
    for i in 0..nsp {
        lo[i] = if c.lo[i] < 0 { c.lo[i] * id[i] as i64 } else { c.lo[i] };
        hi[i] = if c.hi[i] < 0 { c.hi[i] * id[i] as i64 } else { c.hi[i] };
    }
    let mut o = [1usize; 3];
    for i in 0..3 {
        let padded = (l[i] as i64 - 1) * id[i] as i64 + 1 + lo[i] + hi[i];
        o[i] = ((padded - ((k[i] as i64 - 1) * kd[i] as i64 + 1)) / s[i] as i64 + 1) as usize;
    }
    let (n, cin, cout) = (c.x[0], c.x[nsp + 1], c.w[0]);
    let (cg, og) = (cin / c.groups, cout / c.groups);
    let mut out = vec![0.0; n * o[0] * o[1] * o[2] * cout];
    let mut shape = vec![n];
    shape.extend_from_slice(&o[..nsp]);
    shape.push(cout);
    for b in 0..n {
        for p0 in 0..o[0] {
            for p1 in 0..o[1] {
                for p2 in 0..o[2] {
                    for co in 0..cout {
                        let g = co / og;
                        let mut acc = 0.0;
                        for a0 in 0..k[0] {
                            for a1 in 0..k[1] {
                                for a2 in 0..k[2] {
                                    let (pp, aa) = ([p0, p1, p2], [a0, a1, a2]);
                                    let mut idx = [0usize; 3];
                                    let mut ok = true;
                                    for i in 0..3 {
                                        let kk = if c.flip { k[i] - 1 - aa[i] } else { aa[i] };
                                        let q = (pp[i] * s[i] + kk * kd[i]) as i64 - lo[i];
                                        if q < 0 || q % id[i] as i64 != 0 || q / id[i] as i64 >= l[i] as i64 {
                                            ok = false;
                                        } else {
                                            idx[i] = (q / id[i] as i64) as usize;
                                        }
                                    }
                                    if !ok {
                                        continue;
                                    }
                                    for ci in 0..cg {
                                        let xi =
                                            (((b * l[0] + idx[0]) * l[1] + idx[1]) * l[2] + idx[2]) * cin + g * cg + ci;
                                        let wi = (((co * k[0] + a0) * k[1] + a1) * k[2] + a2) * cg + ci;
                                        acc += x[xi] * w[wi];
                                    }
                                }
                            }
                        }
                        out[(((b * o[0] + p0) * o[1] + p1) * o[2] + p2) * cout + co] = acc;
                    }
                }
            }
        }
    }
    (shape, out)
}

fn random_cfg(rng: &mut Rng) -> Cfg {
    let pick = |rng: &mut Rng, lo: usize, hi: usize| lo + (rng.next_u64() as usize) % (hi - lo + 1);
    loop {
        let nsp = pick(rng, 1, 3);
        let groups = [1, 1, 2, 3][pick(rng, 0, 3)];
        let cg = pick(rng, 1, 3);
        let og = pick(rng, 1, 3);
        let mut x = vec![pick(rng, 1, 2)];
        let mut w = vec![og * groups];
        let (mut stride, mut lo, mut hi, mut kd, mut id) = (vec![], vec![], vec![], vec![], vec![]);
        let mut ok = true;
        for _ in 0..nsp {
            let l = pick(rng, 1, if nsp == 3 { 4 } else { 7 });
            let k = pick(rng, 1, 3);
            let (s, d, e) = (pick(rng, 1, 3), pick(rng, 1, 2), pick(rng, 1, 2));
            let (a, b) = (pick(rng, 0, 3) as i64 - 1, pick(rng, 0, 3) as i64 - 1);
            let (ea, eb) = (if a < 0 { a * e as i64 } else { a }, if b < 0 { b * e as i64 } else { b });
            let padded = (l as i64 - 1) * e as i64 + 1 + ea + eb;
            ok &= padded >= ((k - 1) * d + 1) as i64 && l as i64 + a.min(0) + b.min(0) >= 1;
            x.push(l);
            w.push(k);
            stride.push(s);
            lo.push(a);
            hi.push(b);
            kd.push(d);
            id.push(e);
        }
        x.push(cg * groups);
        w.push(cg);
        if ok {
            return Cfg { x, w, stride, lo, hi, kd, id, groups, flip: rng.next_u64().is_multiple_of(2) };
        }
    }
}

fn kiln_conv(c: &Cfg, x: &Array, w: &Array) -> Result<Array> {
    ops::conv_general(x, w, &c.stride, &c.lo, &c.hi, &c.kd, &c.id, c.groups, c.flip)
}

#[test]
fn random_configs_match_naive_reference() {
    let mut rng = Rng::new(2024);
    for trial in 0..150 {
        let c = random_cfg(&mut rng);
        let xv = rng.vec(c.x.iter().product(), -1.0, 1.0);
        let wv = rng.vec(c.w.iter().product(), -1.0, 1.0);
        let (shape, expected) = naive(&c, &xv, &wv);
        for dtype in [Dtype::F64, Dtype::F32] {
            let x = ops::astype(&Array::from_vec(xv.clone(), &c.x).unwrap(), dtype).unwrap();
            let w = ops::astype(&Array::from_vec(wv.clone(), &c.w).unwrap(), dtype).unwrap();
            let y = kiln_conv(&c, &x, &w).unwrap_or_else(|e| panic!("trial {trial} {c:?}: {e}"));
            assert_eq!(y.shape(), &shape[..], "trial {trial} {c:?}");
            assert_eq!(y.dtype(), dtype);
            let got = ops::astype(&y, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
            let tol = if dtype == Dtype::F64 { 1e-12 } else { 1e-5 };
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "trial {trial} {c:?} elem {i}: {a} vs {b}");
            }
        }
    }
}

/// Larger shapes: multi-tile, tap-chunked and pointwise paths, strided
/// (non-contiguous) inputs, against the reference.
#[test]
fn large_and_strided_inputs_match_reference() {
    let mut rng = Rng::new(99);
    let cfgs = [
        // 3x3 same padding, several output tiles (the fast path).
        Cfg {
            x: vec![2, 20, 18, 16],
            w: vec![8, 3, 3, 16],
            stride: vec![1, 1],
            lo: vec![1, 1],
            hi: vec![1, 1],
            kd: vec![1, 1],
            id: vec![1, 1],
            groups: 1,
            flip: false,
        },
        // A large kernel with many channels: taps are split into chunks.
        Cfg {
            x: vec![1, 12, 12, 160],
            w: vec![4, 7, 7, 160],
            stride: vec![1, 1],
            lo: vec![2, 3],
            hi: vec![3, 1],
            kd: vec![1, 1],
            id: vec![1, 1],
            groups: 1,
            flip: true,
        },
        // Strided, many channels and taps: the im2col path splits taps into chunks.
        Cfg {
            x: vec![1, 13, 13, 160],
            w: vec![4, 5, 5, 160],
            stride: vec![2, 2],
            lo: vec![1, 0],
            hi: vec![0, 2],
            kd: vec![1, 1],
            id: vec![1, 1],
            groups: 1,
            flip: false,
        },
        // Shifted path in 1-D with cropping padding, and in 3-D with dilation.
        Cfg {
            x: vec![2, 30, 40],
            w: vec![5, 3, 40],
            stride: vec![1],
            lo: vec![-1],
            hi: vec![2],
            kd: vec![1],
            id: vec![1],
            groups: 1,
            flip: true,
        },
        Cfg {
            x: vec![2, 5, 6, 7, 16],
            w: vec![3, 2, 3, 3, 16],
            stride: vec![1, 1, 1],
            lo: vec![-1, 1, 0],
            hi: vec![1, 1, 2],
            kd: vec![2, 2, 1],
            id: vec![1, 1, 1],
            groups: 1,
            flip: false,
        },
        // Pointwise with groups.
        Cfg {
            x: vec![3, 15, 13, 12],
            w: vec![9, 1, 1, 4],
            stride: vec![1, 1],
            lo: vec![0, 0],
            hi: vec![0, 0],
            kd: vec![1, 1],
            id: vec![1, 1],
            groups: 3,
            flip: false,
        },
    ];
    for c in cfgs {
        let xv = rng.vec(c.x.iter().product(), -1.0, 1.0);
        let wv = rng.vec(c.w.iter().product(), -1.0, 1.0);
        let (shape, expected) = naive(&c, &xv, &wv);
        let x = Array::from_vec(xv.clone(), &c.x).unwrap();
        let w = Array::from_vec(wv.clone(), &c.w).unwrap();
        // A transposed (strided) view of the same input.
        let mut perm: Vec<usize> = (0..c.x.len()).collect();
        perm.swap(1, 2);
        let mut tshape = c.x.clone();
        tshape.swap(1, 2);
        let xt = ops::transpose_axes(
            &ops::contiguous(
                &ops::transpose_axes(&x, &perm.iter().map(|&p| p as i32).collect::<Vec<_>>()).unwrap(),
                false,
            ),
            &perm.iter().map(|&p| p as i32).collect::<Vec<_>>(),
        )
        .unwrap();
        for input in [x, xt] {
            for dtype in [Dtype::F64, Dtype::F32] {
                let xi = ops::astype(&input, dtype).unwrap();
                let wi = ops::astype(&w, dtype).unwrap();
                let y = kiln_conv(&c, &xi, &wi).unwrap();
                assert_eq!(y.shape(), &shape[..]);
                let got = ops::astype(&y, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
                let tol = if dtype == Dtype::F64 { 1e-11 } else { 2e-5 };
                for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{c:?} {dtype} elem {i}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn half_precision_computes_in_f32() {
    let mut rng = Rng::new(5);
    let x = rng.array(&[2, 9, 9, 8], -1.0, 1.0);
    let w = rng.array(&[4, 3, 3, 8], -1.0, 1.0);
    for dt in [Dtype::F16, Dtype::BF16] {
        let (xh, wh) = (ops::astype(&x, dt).unwrap(), ops::astype(&w, dt).unwrap());
        let y = ops::conv2d(&xh, &wh, [1, 1], [1, 1], [1, 1], 1).unwrap();
        assert_eq!(y.dtype(), dt);
        let r = ops::conv2d(
            &ops::astype(&xh, Dtype::F64).unwrap(),
            &ops::astype(&wh, Dtype::F64).unwrap(),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
        .unwrap();
        let r = ops::astype(&ops::astype(&r, dt).unwrap(), Dtype::F64).unwrap().to_vec::<f64>().unwrap();
        let g = ops::astype(&y, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
        // Exactly the f64 result rounded once (up to ties of the f32 sum).
        let eps = if dt == Dtype::F16 { 1e-3 } else { 8e-3 };
        for (a, b) in g.iter().zip(&r) {
            assert!((a - b).abs() <= eps * b.abs() + 1e-6, "{dt}: {a} vs {b}");
        }
    }
}

#[test]
fn mixed_dtypes_promote() {
    let x = ops::ones(&[1, 4, 4, 2], Dtype::F16).unwrap();
    let w = ops::ones(&[3, 3, 3, 2], Dtype::F32).unwrap();
    let y = ops::conv2d(&x, &w, [1, 1], [0, 0], [1, 1], 1).unwrap();
    assert_eq!(y.dtype(), Dtype::F32);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![18.0; 12]);
    // An integer weight next to a float input is cast, as in MLX.
    let wi = ops::ones(&[3, 3, 3, 2], Dtype::I32).unwrap();
    let y = ops::conv2d(&ops::astype(&x, Dtype::F32).unwrap(), &wi, [1, 1], [0, 0], [1, 1], 1).unwrap();
    assert_eq!(y.dtype(), Dtype::F32);
}

#[test]
fn empty_shapes() {
    let w = ops::ones(&[3, 3, 2], Dtype::F32).unwrap();
    let y = ops::conv1d(&ops::ones(&[0, 5, 2], Dtype::F32).unwrap(), &w, 1, 0, 1, 1).unwrap();
    assert_eq!(y.shape(), &[0, 3, 3]);
    assert_eq!(y.to_vec::<f32>().unwrap().len(), 0);
    let y = ops::conv1d(
        &ops::ones(&[2, 5, 0], Dtype::F32).unwrap(),
        &ops::ones(&[3, 3, 0], Dtype::F32).unwrap(),
        1,
        0,
        1,
        1,
    )
    .unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 18]);
    let y = ops::conv1d(
        &ops::ones(&[2, 5, 2], Dtype::F32).unwrap(),
        &ops::ones(&[0, 3, 2], Dtype::F32).unwrap(),
        1,
        0,
        1,
        1,
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 3, 0]);
    assert_eq!(y.to_vec::<f32>().unwrap().len(), 0);
}

#[test]
fn bad_inputs_are_errors() {
    let x = ops::ones(&[1, 5, 5, 4], Dtype::F32).unwrap();
    let w = ops::ones(&[2, 3, 3, 4], Dtype::F32).unwrap();
    let bad: Vec<(&str, Result<Array>)> = vec![
        ("groups 0", ops::conv2d(&x, &w, [1, 1], [0, 0], [1, 1], 0)),
        ("complex weight", ops::conv2d(&x, &ops::astype(&w, Dtype::C64).unwrap(), [1, 1], [0, 0], [1, 1], 1)),
        ("complex input", ops::conv2d(&ops::astype(&x, Dtype::C64).unwrap(), &w, [1, 1], [0, 0], [1, 1], 1)),
        ("int input", ops::conv2d(&ops::astype(&x, Dtype::I32).unwrap(), &w, [1, 1], [0, 0], [1, 1], 1)),
        ("param length", ops::conv_general(&x, &w, &[1, 1, 1], &[0], &[0], &[1], &[1], 1, false)),
        ("padding length", ops::conv_general(&x, &w, &[1], &[0, 0, 0], &[0], &[1], &[1], 1, false)),
        ("empty param", ops::conv_general(&x, &w, &[], &[0], &[0], &[1], &[1], 1, false)),
        ("1d on 2d input", ops::conv1d(&x, &w, 1, 0, 1, 1)),
        ("3d on 2d input", ops::conv3d(&x, &w, [1; 3], [0; 3], [1; 3], 1)),
        ("transpose rank", ops::conv_transpose1d(&x, &w, 1, 0, 1, 0, 1)),
        (
            "rank 2",
            ops::conv_general(&ops::ones(&[5, 4], Dtype::F32).unwrap(), &w, &[1], &[0], &[0], &[1], &[1], 1, false),
        ),
        (
            "weight rank",
            ops::conv_general(&x, &ops::ones(&[2, 3, 4], Dtype::F32).unwrap(), &[1], &[0], &[0], &[1], &[1], 1, false),
        ),
        ("kernel too big", ops::conv_general(&x, &w, &[1], &[-3], &[0], &[1], &[1], 1, false)),
        (
            "zero-size spatial",
            ops::conv2d(&ops::ones(&[1, 0, 5, 4], Dtype::F32).unwrap(), &w, [1, 1], [0, 0], [1, 1], 1),
        ),
        (
            "transpose channels",
            ops::conv_transpose2d(
                &x,
                &ops::ones(&[2, 3, 3, 3], Dtype::F32).unwrap(),
                [1, 1],
                [0, 0],
                [1, 1],
                [0, 0],
                1,
            ),
        ),
    ];
    for (name, r) in bad {
        let e = r.err().unwrap_or_else(|| panic!("{name}: expected an error"));
        assert_eq!(e.op(), "conv", "{name}");
        assert!(e.message().len() > 20, "{name}: {}", e.message());
    }
}

// ---------------------------------------------------------------- transforms

fn cfg_fn(c: &Cfg) -> impl Fn(&[Array]) -> Result<Array> + Copy + '_ {
    move |a: &[Array]| kiln_conv(c, &a[0], &a[1])
}

fn grad_cfgs() -> Vec<Cfg> {
    let c = |x: &[usize], w: &[usize], s: &[usize], lo: &[i64], hi: &[i64], kd: &[usize], id: &[usize], g, f| Cfg {
        x: x.to_vec(),
        w: w.to_vec(),
        stride: s.to_vec(),
        lo: lo.to_vec(),
        hi: hi.to_vec(),
        kd: kd.to_vec(),
        id: id.to_vec(),
        groups: g,
        flip: f,
    };
    vec![
        c(&[2, 5, 2], &[3, 3, 2], &[1], &[0], &[0], &[1], &[1], 1, false),
        c(&[1, 7, 2], &[2, 2, 2], &[2], &[1], &[2], &[2], &[1], 1, false),
        c(&[2, 6, 4], &[4, 3, 2], &[3], &[-1], &[1], &[1], &[2], 2, true),
        c(&[1, 4, 5, 2], &[2, 2, 3, 2], &[2, 1], &[1, 0], &[0, 2], &[1, 2], &[1, 1], 1, false),
        c(&[1, 4, 4, 3], &[3, 2, 2, 1], &[1, 2], &[0, 1], &[1, -1], &[2, 1], &[2, 1], 3, true),
        c(&[1, 3, 3, 3, 2], &[2, 2, 2, 2, 2], &[1, 2, 1], &[1, 0, 0], &[0, 1, 0], &[1, 1, 2], &[1, 2, 1], 1, false),
    ]
}

#[test]
fn vjp_and_jvp_match_finite_differences() {
    let mut rng = Rng::new(11);
    for c in grad_cfgs() {
        let x = rng.array(&c.x, -1.0, 1.0);
        let w = rng.array(&c.w, -1.0, 1.0);
        check_grad(&format!("conv {c:?}"), cfg_fn(&c), &[x, w]);
    }
}

#[test]
fn transposed_conv_gradients() {
    let mut rng = Rng::new(12);
    let x = rng.array(&[1, 3, 4, 2], -1.0, 1.0);
    let w = rng.array(&[3, 3, 2, 2], -1.0, 1.0);
    check_grad("conv_transpose2d", |a| ops::conv_transpose2d(&a[0], &a[1], [2, 1], [1, 0], [1, 2], [1, 0], 1), &[x, w]);
}

#[test]
fn grad_of_grad() {
    let mut rng = Rng::new(13);
    for c in grad_cfgs().into_iter().take(5) {
        let x = rng.array(&c.x, -1.0, 1.0);
        let w = rng.array(&c.w, -1.0, 1.0);
        // f(x, w) = d/dx sum(conv(x, w)^2): its own vjp nests convolutions of convolutions.
        let f = |a: &[Array]| -> Result<Array> {
            let g = kiln_core::grad(
                |b: &[Array]| {
                    let y = kiln_conv(&c, &b[0], &b[1])?;
                    Ok(vec![ops::sum(&ops::multiply(&y, &y)?, kiln_core::Axes::All, false)?])
                },
                &[0, 1],
            )(a)?;
            ops::add(
                &ops::sum(&g[0], kiln_core::Axes::All, false)?,
                &ops::sum(&ops::square(&g[1])?, kiln_core::Axes::All, false)?,
            )
        };
        check_grad(&format!("grad of grad {c:?}"), f, &[x, w]);
    }
}

#[test]
fn vmap_over_input_weight_and_both() {
    let mut rng = Rng::new(14);
    for c in grad_cfgs() {
        let f = cfg_fn(&c);
        let mut xb = vec![3];
        xb.extend(&c.x);
        let mut wb = vec![3];
        wb.extend(&c.w);
        let (x, w) = (rng.array(&c.x, -1.0, 1.0), rng.array(&c.w, -1.0, 1.0));
        let (xs, ws) = (rng.array(&xb, -1.0, 1.0), rng.array(&wb, -1.0, 1.0));
        check_vmap("conv x", f, &[xs.clone(), w.clone()], &[Some(0), None]);
        check_vmap("conv w", f, &[x.clone(), ws.clone()], &[None, Some(0)]);
        check_vmap("conv both", f, &[xs, ws], &[Some(0), Some(0)]);
        // Batch axis last on the input and in the middle of the weight.
        let mut xl = c.x.clone();
        xl.push(2);
        let mut wm = c.w.clone();
        wm.insert(1, 2);
        let (xl, wm) = (rng.array(&xl, -1.0, 1.0), rng.array(&wm, -1.0, 1.0));
        check_vmap("conv moved axes", f, &[xl, wm], &[Some(-1), Some(1)]);
    }
}

// ---------------------------------------------------------------- direct kernel

#[allow(clippy::too_many_arguments)]
fn cfg(x: &[usize], w: &[usize], stride: &[usize], lo: &[i64], hi: &[i64], kd: &[usize], flip: bool) -> Cfg {
    let nsp = x.len() - 2;
    Cfg {
        x: x.to_vec(),
        w: w.to_vec(),
        stride: stride.to_vec(),
        lo: lo.to_vec(),
        hi: hi.to_vec(),
        kd: kd.to_vec(),
        id: vec![1; nsp],
        groups: 1,
        flip,
    }
}

/// f32 result of `c` against the f64 reference (relative to the size of the
/// sum of |x w| terms, which bounds f32 rounding).
fn check_f32_against_naive(c: &Cfg, rng: &mut Rng) {
    let xv = rng.vec(c.x.iter().product(), -1.0, 1.0);
    let wv = rng.vec(c.w.iter().product(), -1.0, 1.0);
    let (shape, expected) = naive(c, &xv, &wv);
    let x = ops::astype(&Array::from_vec(xv, &c.x).unwrap(), Dtype::F32).unwrap();
    let w = ops::astype(&Array::from_vec(wv, &c.w).unwrap(), Dtype::F32).unwrap();
    let y = kiln_conv(c, &x, &w).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert_eq!(y.shape(), &shape[..], "{c:?}");
    assert_eq!(y.dtype(), Dtype::F32);
    let got = ops::astype(&y, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let terms = c.w[1..].iter().product::<usize>() as f64;
    let tol = 4e-7 * terms.sqrt() * 4.0;
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{c:?} elem {i}: {a} vs {b}");
    }
}

/// The direct (register-tile) f32 kernel: every tile width class (16, 32,
/// 48, 64 output channels per block), channel tails, several blocks, output
/// rows of uneven tile widths, padding on both edges (edge tiles), taps
/// of the outer axes in padding, strides, dilations, flips, 1-3 spatial
/// axes, batch 1 and more.
#[test]
fn direct_kernel_tails_and_edges_match_reference() {
    let mut rng = Rng::new(4242);
    let cfgs = [
        // One vector per output (5 channels, masked), 29 = 10 + 10 + 9.
        cfg(&[1, 5, 29, 7], &[5, 3, 3, 7], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        // Two vectors (20 channels), one 13-wide tile, batch 3.
        cfg(&[3, 6, 13, 20], &[20, 3, 3, 20], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        // Three vectors (40 channels), 17 = 9 + 8, uneven padding.
        cfg(&[1, 7, 17, 16], &[40, 3, 3, 16], &[1, 1], &[1, 2], &[2, 0], &[1, 1], true),
        // Four vectors, 19 = 5 + 5 + 5 + 4.
        cfg(&[2, 6, 19, 24], &[64, 3, 3, 24], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        // Three blocks: 64 + 64 + 2 channels.
        cfg(&[1, 5, 23, 9], &[130, 3, 3, 9], &[1, 1], &[1, 1], &[1, 1], &[1, 1], true),
        // Stride and dilation on both axes, flipped.
        cfg(&[2, 11, 31, 8], &[70, 3, 3, 8], &[2, 2], &[2, 1], &[1, 2], &[2, 2], true),
        // Stride 3 along the last axis, wide kernel, windows past both ends.
        cfg(&[1, 4, 50, 5], &[18, 2, 4, 5], &[1, 3], &[0, 2], &[1, 3], &[1, 1], false),
        // Every tile an edge tile (the kernel is as wide as the output row).
        cfg(&[1, 3, 9, 4], &[8, 3, 9, 4], &[1, 1], &[1, 4], &[1, 4], &[1, 1], false),
        // No padding: only interior tiles.
        cfg(&[2, 6, 30, 32], &[48, 3, 3, 32], &[1, 1], &[0, 0], &[0, 0], &[1, 1], false),
        // 1-D, dilated, uneven padding.
        cfg(&[2, 40, 12], &[33, 5, 12], &[1], &[3], &[1], &[2], false),
        // 3-D.
        cfg(&[2, 4, 5, 14, 6], &[17, 2, 3, 3, 6], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1], true),
        // A 1x1 kernel with padding (not pointwise).
        cfg(&[1, 3, 10, 19], &[66, 1, 1, 19], &[1, 1], &[1, 2], &[0, 1], &[1, 1], false),
        // The target's tile shape (6 x 64, 56 = 6 * 6 + 5 * 4), odd channels.
        cfg(&[1, 4, 56, 63], &[64, 3, 3, 63], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        // Padding wider than the kernel: outputs whose taps all read padding.
        cfg(&[1, 3, 4, 9], &[66, 3, 3, 9], &[1, 1], &[1, 5], &[1, 5], &[1, 1], false),
        // Enough input channels that they are split into blocks (the weights
        // of one output block exceed the L2 budget), edge tiles included.
        cfg(&[1, 3, 7, 500], &[70, 3, 3, 500], &[1, 1], &[1, 1], &[1, 1], &[1, 1], true),
    ];
    for c in &cfgs {
        check_f32_against_naive(c, &mut rng);
    }
}

/// Winograd F(2×2, 3×3) shapes (2-D, 3×3, unit stride, 16–256 channels, at
/// least 256 outputs): odd output sizes (tiles cut at the edge), channel
/// counts off the vector width, padding on one side only and wider than the
/// kernel (tiles that read only padding), flips, and several chunks of tiles.
#[test]
fn winograd_layers_match_reference() {
    let mut rng = Rng::new(9);
    let cfgs = [
        cfg(&[2, 9, 15, 17], &[20, 3, 3, 17], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        cfg(&[2, 16, 16, 32], &[48, 3, 3, 32], &[1, 1], &[0, 0], &[0, 0], &[1, 1], false),
        cfg(&[1, 20, 18, 24], &[33, 3, 3, 24], &[1, 1], &[2, 0], &[1, 2], &[1, 1], true),
        cfg(&[1, 14, 14, 16], &[16, 3, 3, 16], &[1, 1], &[3, 3], &[3, 3], &[1, 1], false),
        cfg(&[2, 30, 30, 16], &[16, 3, 3, 16], &[1, 1], &[1, 1], &[1, 1], &[1, 1], true),
        cfg(&[1, 16, 17, 100], &[130, 3, 3, 100], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
    ];
    for c in &cfgs {
        check_f32_against_naive(c, &mut rng);
    }
}

/// Cotangents of f32 convolutions on direct-kernel shapes (the input
/// cotangent is itself a flipped convolution, with negative padding for a
/// padded 1x1 kernel) against the same in f64, which runs the GEMM paths.
#[test]
fn direct_kernel_gradients_match_f64() {
    let mut rng = Rng::new(77);
    let cfgs = [
        cfg(&[2, 6, 14, 8], &[20, 3, 3, 8], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
        cfg(&[1, 5, 16, 5], &[9, 1, 1, 5], &[1, 1], &[1, 2], &[1, 2], &[1, 1], false),
        cfg(&[2, 9, 21, 4], &[6, 3, 3, 4], &[2, 1], &[1, 2], &[0, 1], &[1, 2], true),
        // Winograd forward, and a flipped Winograd convolution for the input cotangent.
        cfg(&[2, 12, 12, 16], &[16, 3, 3, 16], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
    ];
    for c in &cfgs {
        let x = rng.array(&c.x, -1.0, 1.0);
        let w = rng.array(&c.w, -1.0, 1.0);
        let y = kiln_conv(c, &x, &w).unwrap();
        let ct = rng.array(y.shape(), -1.0, 1.0);
        let grads = |dt: Dtype| -> Vec<Vec<f64>> {
            let prim = [ops::astype(&x, dt).unwrap(), ops::astype(&w, dt).unwrap()];
            let (_, g) = kiln_core::vjp(
                |a: &[Array]| Ok(vec![kiln_conv(c, &a[0], &a[1])?]),
                &prim,
                &[ops::astype(&ct, dt).unwrap()],
            )
            .unwrap();
            g.iter().map(|a| ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()).collect()
        };
        let (g32, g64) = (grads(Dtype::F32), grads(Dtype::F64));
        for (a, b) in g32.iter().zip(&g64) {
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{c:?} elem {i}: {p} vs {q}");
            }
        }
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_time() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Times the target workload (conv2d, batch 8, 64 -> 64 channels, 56x56, 3x3,
/// padding 1, f32) and its two cotangent convolutions, in CPU time of the
/// calling thread (meaningful on a loaded machine when single-threaded). Run
/// with `RAYON_NUM_THREADS=1 cargo test -p kiln-core --test conv --release --
/// --ignored --nocapture bench_conv2d`.
#[test]
#[ignore]
fn bench_conv2d_target() {
    let (n, h, wd, c, co) = (8usize, 56usize, 56usize, 64usize, 64usize);
    let mut rng = Rng::new(1);
    let x = ops::astype(&rng.array(&[n, h, wd, c], -1.0, 1.0), Dtype::F32).unwrap();
    let w = ops::astype(&rng.array(&[co, 3, 3, c], -1.0, 1.0), Dtype::F32).unwrap();
    let ct = ops::astype(&rng.array(&[n, h, wd, co], -1.0, 1.0), Dtype::F32).unwrap();
    x.eval().unwrap();
    w.eval().unwrap();
    ct.eval().unwrap();
    let flops = 2.0 * (n * h * wd * co * 9 * c) as f64;
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let time = |f: &dyn Fn() -> Array| {
        let mut best = f64::MAX;
        for _ in 0..reps {
            let t = thread_cpu_time();
            f().eval().unwrap();
            best = best.min(thread_cpu_time() - t);
        }
        best
    };
    let fwd = time(&|| ops::conv2d(&x, &w, [1, 1], [1, 1], [1, 1], 1).unwrap());
    println!(
        "kiln conv2d 8x56x56x64 -> 64, 3x3, pad 1, f32: {:.2} ms CPU, {:.1} GFLOP/s",
        fwd * 1e3,
        flops / fwd / 1e9
    );
    let grads = |i: usize| {
        kiln_core::vjp(
            |a: &[Array]| Ok(vec![ops::conv2d(&a[0], &a[1], [1, 1], [1, 1], [1, 1], 1)?]),
            &[x.clone(), w.clone()],
            std::slice::from_ref(&ct),
        )
        .unwrap()
        .1[i]
            .clone()
    };
    let gx = time(&|| grads(0));
    let gw = time(&|| grads(1));
    println!("  input cotangent: {:.2} ms CPU, {:.1} GFLOP/s", gx * 1e3, flops / gx / 1e9);
    println!("  weight cotangent: {:.2} ms CPU, {:.1} GFLOP/s", gw * 1e3, flops / gw / 1e9);
}

/// The same FLOPs as [`bench_conv2d_target`] as a pointwise convolution (a
/// plain GEMM: 25088 x 576 times 576 x 64), separating GEMM speed from the
/// convolution's own overheads.
#[test]
#[ignore]
fn bench_conv2d_pointwise_same_flops() {
    let mut rng = Rng::new(2);
    let x = ops::astype(&rng.array(&[8, 56, 56, 576], -1.0, 1.0), Dtype::F32).unwrap();
    let w = ops::astype(&rng.array(&[64, 1, 1, 576], -1.0, 1.0), Dtype::F32).unwrap();
    x.eval().unwrap();
    w.eval().unwrap();
    let flops = 2.0 * (8 * 56 * 56 * 64 * 576) as f64;
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        ops::conv2d(&x, &w, [1, 1], [0, 0], [1, 1], 1).unwrap().eval().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("kiln pointwise GEMM 25088x576x64 f32: {:.2} ms, {:.1} GFLOP/s", best * 1e3, flops / best / 1e9);
}
