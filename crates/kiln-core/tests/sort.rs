//! Sorting and selection: golden comparisons with MLX (sort.json), the
//! partition property, stability, NaN order, gradients, vmap and errors.

mod common;

use common::{check_grad, check_vmap, load, run_golden, values, Case, Rng};
use kiln_core::{ops, Array, Dtype};
use std::cmp::Ordering;

fn axis(c: &Case) -> Option<i32> {
    c.kw("axis").map(|v| v.as_i64().unwrap() as i32)
}

/// MLX's order on (re, im) pairs: NaN last (all NaNs equal), -0 == 0.
fn order(a: &(f64, f64), b: &(f64, f64)) -> Ordering {
    let (an, bn) = (a.0.is_nan() || a.1.is_nan(), b.0.is_nan() || b.1.is_nan());
    match (an, bn) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(b).unwrap(),
    }
}

fn same(a: &(f64, f64), b: &(f64, f64)) -> bool {
    order(a, b) == Ordering::Equal
}

/// Lines of `x` along `axis` (None: flattened) as value pairs.
fn lines(x: &Array, axis: Option<i32>) -> Vec<Vec<(f64, f64)>> {
    let x = match axis {
        None => ops::reshape(x, &[-1]).unwrap(),
        Some(a) => ops::moveaxis(x, a, -1).unwrap(),
    };
    let n = *x.shape().last().unwrap_or(&1);
    let v = values(&x);
    if n == 0 {
        return vec![];
    }
    v.chunks(n).map(|c| c.to_vec()).collect()
}

fn idx_lines(x: &Array, axis: Option<i32>) -> Vec<Vec<usize>> {
    lines(x, axis).into_iter().map(|l| l.into_iter().map(|p| p.0 as usize).collect()).collect()
}

fn sorted(mut l: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    l.sort_by(order);
    l
}

/// Checks that `got` is a partition of line `x` around `k` with MLX's pivot value.
fn check_partition(id: &str, got: &[(f64, f64)], expected: &[(f64, f64)], x: &[(f64, f64)], k: usize) {
    assert!(same(&got[k], &expected[k]), "{id}: pivot {:?} != MLX {:?}", got[k], expected[k]);
    for (i, v) in got.iter().enumerate() {
        let o = order(v, &got[k]);
        assert!(
            (i < k && o != Ordering::Greater) || (i > k && o != Ordering::Less) || i == k,
            "{id}: element {i} = {v:?} on the wrong side of {:?}",
            got[k]
        );
    }
    let (a, b) = (sorted(got.to_vec()), sorted(x.to_vec()));
    assert!(a.iter().zip(&b).all(|(p, q)| same(p, q)), "{id}: not a permutation of the input");
}

#[test]
fn golden_sort_argsort() {
    let ran = run_golden("sort.json", |c| match c.op.as_str() {
        "sort" => Some(ops::sort(&c.inputs[0], axis(c)).map(|y| vec![y])),
        "argsort" => Some(ops::argsort(&c.inputs[0], axis(c)).map(|y| vec![y])),
        _ => None,
    });
    assert!(ran > 250, "{ran}");
}

#[test]
fn golden_partition_topk_errors() {
    let mut checked = 0;
    for c in load("sort.json") {
        let x = &c.inputs[0];
        let ax = axis(&c);
        let res = match c.op.as_str() {
            "partition" => ops::partition(x, c.kw_i64("kth").unwrap() as i32, ax),
            "argpartition" => ops::argpartition(x, c.kw_i64("kth").unwrap() as i32, ax),
            "topk" => ops::topk(x, c.kw_i64("k").unwrap() as i32, ax),
            "sort" | "argsort" => {
                if c.error.is_some() {
                    let r = if c.op == "sort" { ops::sort(x, ax) } else { ops::argsort(x, ax) };
                    assert!(r.is_err(), "{}: expected an error", c.id);
                    checked += 1;
                }
                continue;
            }
            _ => panic!("unknown op {}", c.op),
        };
        checked += 1;
        if c.error.is_some() {
            assert!(res.is_err(), "{}: expected an error", c.id);
            continue;
        }
        let y = res.unwrap_or_else(|e| panic!("{}: {e}", c.id));
        let e = &c.out[0];
        assert_eq!(y.shape(), e.shape(), "{}", c.id);
        assert_eq!(y.dtype(), e.dtype(), "{}", c.id);
        let xl = lines(x, ax);
        match c.op.as_str() {
            "partition" | "argpartition" => {
                let n = xl.first().map_or(0, |l| l.len()) as i64;
                let k = c.kw_i64("kth").unwrap();
                let k = if k < 0 { k + n } else { k } as usize;
                let (gl, el) = if c.op == "partition" {
                    (lines(&y, ax), lines(e, ax))
                } else {
                    // Gather the input by the indices on the host.
                    let gather = |ix: &Array| -> Vec<Vec<(f64, f64)>> {
                        idx_lines(ix, ax).iter().zip(&xl).map(|(il, l)| il.iter().map(|&i| l[i]).collect()).collect()
                    };
                    (gather(&y), gather(e))
                };
                for ((g, ex), xs) in gl.iter().zip(&el).zip(&xl) {
                    check_partition(&c.id, g, ex, xs, k);
                }
            }
            _ => {
                // topk: the same multiset as MLX's, and the largest ones.
                for ((g, ex), xs) in lines(&y, ax).iter().zip(&lines(e, ax)).zip(&xl) {
                    let (a, b) = (sorted(g.clone()), sorted(ex.clone()));
                    assert!(a.iter().zip(&b).all(|(p, q)| same(p, q)), "{}: {a:?} != {b:?}", c.id);
                    let all = sorted(xs.clone());
                    let tail = &all[all.len() - g.len()..];
                    assert!(a.iter().zip(tail).all(|(p, q)| same(p, q)), "{}: not the top values", c.id);
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn argsort_is_stable_and_nan_last() {
    // Long line (radix path) and short line (comparison path), many ties.
    for n in [40usize, 5000] {
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 5) as f32 - 2.0).collect();
        let mut v = v;
        v[3] = f32::NAN;
        v[n - 1] = -f32::NAN;
        v[4] = -0.0;
        let x = Array::from_slice(&v, &[n]).unwrap();
        let p = ops::argsort(&x, Some(-1)).unwrap().to_vec::<u32>().unwrap();
        let mut e: Vec<u32> = (0..n as u32).collect();
        e.sort_by(|&a, &b| {
            let (x, y) = (v[a as usize], v[b as usize]);
            x.is_nan().cmp(&y.is_nan()).then(x.partial_cmp(&y).unwrap_or(Ordering::Equal))
        });
        assert_eq!(p, e, "n = {n}");
        let s = ops::sort(&x, Some(0)).unwrap().to_vec::<f32>().unwrap();
        let es: Vec<f32> = e.iter().map(|&i| v[i as usize]).collect();
        assert_eq!(
            s.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            es.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_dtype_long_lines_match_std_sort() {
    let mut rng = Rng::new(3);
    let n = 1000;
    let raw: Vec<f64> = rng.vec(n * 3, -300.0, 300.0).iter().map(|v| v.round()).collect();
    for dt in [
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F32,
        Dtype::F64,
        Dtype::Bool,
        Dtype::C64,
    ] {
        // Strided input: sort along axis 0 of a transposed (n, 3) view.
        let x = ops::astype(&Array::from_vec(raw.clone(), &[3, n]).unwrap(), dt).unwrap();
        let xt = ops::transpose(&x).unwrap();
        let s = ops::sort(&xt, Some(0)).unwrap();
        let p = ops::argsort(&xt, Some(0)).unwrap();
        for (r, (sl, pl)) in lines(&s, Some(0)).iter().zip(idx_lines(&p, Some(0))).enumerate() {
            let xl = &lines(&x, Some(-1))[r];
            let mut e: Vec<usize> = (0..n).collect();
            e.sort_by(|&a, &b| order(&xl[a], &xl[b]));
            assert_eq!(pl, e, "{dt}: argsort");
            assert!(sl.iter().zip(&e).all(|(a, &i)| same(a, &xl[i])), "{dt}: sort");
        }
    }
}

#[test]
fn distinct_f64_radix() {
    let mut rng = Rng::new(17);
    for n in [400usize, 3000] {
        let v = rng.vec(n, -2.0, 2.0);
        let x = Array::from_vec(v.clone(), &[n]).unwrap();
        let p = ops::argsort(&x, Some(0)).unwrap().to_vec::<u32>().unwrap();
        let mut e: Vec<u32> = (0..n as u32).collect();
        e.sort_by(|&a, &b| v[a as usize].partial_cmp(&v[b as usize]).unwrap());
        assert_eq!(p, e);
        let xf = ops::astype(&x, Dtype::F32).unwrap();
        let vf = xf.to_vec::<f32>().unwrap();
        let p = ops::argsort(&xf, Some(0)).unwrap().to_vec::<u32>().unwrap();
        let mut e: Vec<u32> = (0..n as u32).collect();
        e.sort_by(|&a, &b| vf[a as usize].partial_cmp(&vf[b as usize]).unwrap());
        assert_eq!(p, e);
    }
}

#[test]
fn partition_long_lines_and_consistency() {
    let mut rng = Rng::new(5);
    let x = ops::astype(&rng.array(&[4, 777], -10.0, 10.0), Dtype::F32).unwrap();
    for k in [0i32, 1, 388, 776, -2] {
        let p = ops::partition(&x, k, Some(-1)).unwrap();
        let ip = ops::argpartition(&x, k, Some(-1)).unwrap();
        let kk = if k < 0 { k + 777 } else { k } as usize;
        for ((pl, il), xl) in lines(&p, Some(-1)).iter().zip(idx_lines(&ip, Some(-1))).zip(lines(&x, Some(-1))) {
            let full = sorted(xl.clone());
            check_partition("partition", pl, &full, &xl, kk);
            // argpartition is the permutation partition applies.
            assert!(il.iter().zip(pl).all(|(&i, v)| same(&xl[i], v)));
        }
    }
}

#[test]
fn topk_axis_none_and_errors() {
    let x = Array::from_slice(&[3i32, 1, 5, 2, 0, 7], &[2, 3]).unwrap();
    let t = ops::topk(&x, 2, None).unwrap();
    let mut v = t.to_vec::<i32>().unwrap();
    v.sort();
    assert_eq!(v, vec![5, 7]);
    assert_eq!(ops::topk(&x, 3, Some(1)).unwrap().to_vec::<i32>().unwrap(), vec![3, 1, 5, 2, 0, 7]);
    assert!(ops::topk(&x, 4, Some(1)).is_err());
    assert!(ops::topk(&x, -1, Some(1)).is_err());
    assert!(ops::partition(&x, 3, Some(1)).is_err());
    assert!(ops::partition(&x, -4, Some(1)).is_err());
    assert!(ops::sort(&x, Some(2)).is_err());
    assert!(ops::argsort(&Array::scalar(1.0f32), Some(0)).is_err());
    assert_eq!(ops::sort(&Array::scalar(1.0f32), None).unwrap().shape(), &[1]);
}

#[test]
fn gradients() {
    let mut rng = Rng::new(11);
    let x = rng.array(&[3, 5], -2.0, 2.0);
    check_grad("sort ax1", |a| ops::sort(&a[0], Some(1)), std::slice::from_ref(&x));
    check_grad("sort ax0", |a| ops::sort(&a[0], Some(0)), std::slice::from_ref(&x));
    check_grad("sort none", |a| ops::sort(&a[0], None), std::slice::from_ref(&x));
    check_grad("partition", |a| ops::partition(&a[0], 2, Some(1)), std::slice::from_ref(&x));
    check_grad("topk", |a| ops::topk(&a[0], 2, Some(0)), std::slice::from_ref(&x));
    // A longer line goes through the radix path of argsort.
    // (Distinct values 0.01 apart, so finite differences never swap neighbours.)
    let v: Vec<f64> = (0..400).map(|i| ((i * 7919) % 400) as f64 * 0.01 - 2.0).collect();
    let y = Array::from_vec(v, &[400]).unwrap();
    check_grad("sort long", |a| ops::sort(&a[0], Some(0)), std::slice::from_ref(&y));
    // Ties: the gradient goes to one of the tied inputs per output (sum kept).
    let t = Array::from_slice(&[1.0f64, 0.0, 1.0, 0.0], &[4]).unwrap();
    let g = kiln_core::grad(
        |a: &[Array]| {
            let s = ops::sort(&a[0], Some(0))?;
            let w = Array::from_slice(&[1.0f64, 2.0, 3.0, 4.0], &[4])?;
            Ok(vec![ops::sum(&ops::multiply(&s, &w)?, kiln_core::Axes::All, false)?])
        },
        &[0],
    )(&[t])
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![3.0, 1.0, 4.0, 2.0]);
    // Index outputs are not differentiable.
    let r = kiln_core::grad(
        |a: &[Array]| {
            Ok(vec![ops::sum(&ops::astype(&ops::argsort(&a[0], Some(0))?, Dtype::F64)?, kiln_core::Axes::All, false)?])
        },
        &[0],
    )(&[x.clone()]);
    assert!(r.is_err() || r.unwrap()[0].to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn vmaps() {
    let mut rng = Rng::new(13);
    let x = rng.array(&[3, 4, 5], -2.0, 2.0);
    check_vmap("sort", |a| ops::sort(&a[0], Some(-1)), std::slice::from_ref(&x), &[Some(0)]);
    check_vmap("sort b1", |a| ops::sort(&a[0], Some(0)), std::slice::from_ref(&x), &[Some(1)]);
    check_vmap("argsort", |a| ops::argsort(&a[0], Some(0)), std::slice::from_ref(&x), &[Some(2)]);
    check_vmap("partition", |a| ops::partition(&a[0], 1, Some(-1)), std::slice::from_ref(&x), &[Some(1)]);
    check_vmap("argpartition", |a| ops::argpartition(&a[0], 2, Some(0)), std::slice::from_ref(&x), &[Some(0)]);
    check_vmap("topk", |a| ops::topk(&a[0], 2, Some(-1)), std::slice::from_ref(&x), &[Some(0)]);
}

#[test]
fn median_still_works() {
    let x = Array::from_slice(&[3.0f32, 1.0, 2.0, 8.0], &[4]).unwrap();
    assert_eq!(ops::median(&x, 0, false).unwrap().item::<f32>().unwrap(), 2.5);
}

/// Single long lines (split across threads by the MSD pass when the pool has
/// several) in every real key width, with skewed and special values: sort and
/// argsort against a stable std sort.
#[test]
fn large_single_lines_match_std_sort() {
    let mut rng = Rng::new(31);
    let n = 300_000;
    // Normal-ish (many buckets, some large), plus clusters of exact ties.
    let mut v: Vec<f64> = rng.vec(n, -1.0, 1.0).iter().map(|x| x * x * x * 1e3).collect();
    for k in (0..n).step_by(97) {
        v[k] = 0.5;
    }
    let mut nanny = v.clone();
    nanny[5] = f64::NAN;
    nanny[n / 2] = -0.0;
    nanny[n - 3] = f64::INFINITY;
    for (what, data, dt) in [
        ("f32", &v, Dtype::F32),
        ("f32 nan/-0", &nanny, Dtype::F32),
        ("f64", &v, Dtype::F64),
        ("f64 nan/-0", &nanny, Dtype::F64),
        ("i64", &v, Dtype::I64),
        ("i16", &v, Dtype::I16),
        ("u8", &v, Dtype::U8),
        ("bf16", &nanny, Dtype::BF16),
    ] {
        let x = ops::astype(&Array::from_vec(data.clone(), &[n]).unwrap(), dt).unwrap();
        let xv: Vec<(f64, f64)> = values(&x);
        let mut e: Vec<usize> = (0..n).collect();
        e.sort_by(|&a, &b| order(&xv[a], &xv[b]));
        let p = ops::argsort(&x, Some(0)).unwrap().to_vec::<u32>().unwrap();
        assert!(p.iter().zip(&e).all(|(&a, &b)| a as usize == b), "{what}: argsort differs from a stable sort");
        let s = values(&ops::sort(&x, Some(0)).unwrap());
        // Bit-exact values (the -0.0 / 0.0 order is the stable one).
        let same_bits = s.iter().zip(&e).all(|(a, &i)| {
            let b = xv[i];
            (a.0.is_nan() && b.0.is_nan()) || (a.0.to_bits() == b.0.to_bits())
        });
        assert!(same_bits, "{what}: sort differs from a stable sort");
    }
}

/// Per-thread CPU seconds (CLOCK_THREAD_CPUTIME_ID), or the whole process's
/// (CLOCK_PROCESS_CPUTIME_ID, every thread) when `process` is set.
fn cpu_time(process: bool) -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into t; 2 and 3 are Linux's
    // CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID.
    let rc = unsafe { clock_gettime(if process { 2 } else { 3 }, &mut t) };
    assert_eq!(rc, 0);
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// CPU time of 1M-element sorts (run with `--ignored --nocapture`; with
/// `RAYON_NUM_THREADS=1` the thread time is the whole single-thread cost, and
/// the process time adds up every thread otherwise). Compare with numpy's
/// `np.sort` timed by `time.thread_time()`.
#[test]
#[ignore]
fn time_sort_1m_f32() {
    let mut rng = Rng::new(1);
    // Normal values, as the bench harness's workload (Box-Muller).
    let u = rng.vec(1 << 21, 1e-12, 1.0);
    let v: Vec<f32> =
        u.chunks(2).map(|p| ((-2.0 * p[0].ln()).sqrt() * (std::f64::consts::TAU * p[1]).cos()) as f32).collect();
    let x = Array::from_slice(&v, &[1 << 20]).unwrap();
    let x2 = ops::reshape(&x, &[64, 1 << 14]).unwrap();
    let xd = ops::astype(&x, Dtype::F64).unwrap();
    kiln_core::eval(&[&x2, &xd]).unwrap();
    for (name, a, f) in [
        ("sort 1M f32", &x, ops::sort as fn(&Array, Option<i32>) -> kiln_core::Result<Array>),
        ("argsort 1M f32", &x, ops::argsort),
        ("sort 64x16K f32", &x2, ops::sort),
        ("sort 1M f64", &xd, ops::sort),
    ] {
        let (mut best_t, mut best_p) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..15 {
            let (t0, p0) = (cpu_time(false), cpu_time(true));
            let y = f(a, Some(-1)).unwrap();
            y.eval().unwrap();
            best_t = best_t.min(cpu_time(false) - t0);
            best_p = best_p.min(cpu_time(true) - p0);
        }
        let mel = |s: f64| (1 << 20) as f64 / s / 1e6;
        println!(
            "{name}: thread cpu {:.2} ms ({:.0} Melem/s), process cpu {:.2} ms ({:.0} Melem/s per core)",
            best_t * 1e3,
            mel(best_t),
            best_p * 1e3,
            mel(best_p)
        );
    }
}
