//! Kernel fusion (`ops::fused`): fused graphs give bit-identical results to
//! the unfused ones for every supported op and dtype, with broadcasting,
//! strided inputs, several outputs and odd sizes; shared intermediates are
//! not fused across, but cheap ones are recomputed where that saves reads;
//! transforms through fused nodes are exact.

mod common;

use common::{check_grad, check_vmap, Rng};
use kiln_core::backend::{BinaryOp, UnaryOp};
use kiln_core::ops::fused::{fuse_graph, Fused, FusedInst, FusedOp, FusedProgram};
use kiln_core::ops::{self, Axes};
use kiln_core::{Array, Dtype, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const FLOATS: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];

/// Exact values as f64 bit patterns (NaNs collapsed to one pattern).
fn bits(a: &Array) -> Vec<u64> {
    let v = ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    v.iter().map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }).collect()
}

/// Primitive names in the graph behind `outs` with counts. A node with
/// several outputs (siblings, one array each) counts once.
fn prims(outs: &[Array]) -> BTreeMap<String, usize> {
    let mut seen = HashSet::new();
    let mut m = BTreeMap::new();
    let mut stack: Vec<Array> = outs.to_vec();
    while let Some(a) = stack.pop() {
        let node = a.siblings().0.iter().map(|s| s.id()).min().unwrap_or(a.id());
        if !seen.insert(node) {
            continue;
        }
        if let Some(p) = a.primitive() {
            *m.entry(p.name().to_string()).or_insert(0) += 1;
        }
        stack.extend(a.inputs());
    }
    m
}

/// Builds `f` twice on `inputs`: evaluates it as is and after fusion, checks
/// the fused graph has `want_fused` Fused nodes (if given) and that every
/// output matches bit for bit. Returns the fused outputs.
fn same(
    name: &str,
    f: impl Fn(&[Array]) -> Result<Vec<Array>>,
    inputs: &[Array],
    want_fused: Option<usize>,
) -> Vec<Array> {
    let plain = f(inputs).unwrap();
    let fused = fuse_graph(&f(inputs).unwrap());
    let p = prims(&fused);
    if let Some(w) = want_fused {
        assert_eq!(p.get("Fused").copied().unwrap_or(0), w, "{name}: fused node count in {p:?}");
    }
    for (k, (a, b)) in plain.iter().zip(&fused).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{name}: output {k} shape");
        assert_eq!(a.dtype(), b.dtype(), "{name}: output {k} dtype");
        let (x, y) = (bits(a), bits(b));
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            panic!("{name}: output {k}[{i}]: unfused {} fused {}", f64::from_bits(x[i]), f64::from_bits(y[i]));
        }
    }
    fused
}

/// Values spread over [lo, hi) plus special values (0, -0, ±inf, NaN, huge).
fn data(rng: &mut Rng, n: usize, lo: f64, hi: f64, d: Dtype) -> Array {
    let mut v = rng.vec(n, lo, hi);
    let specials = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 3.0e7, -2.5e6, 1.0, -1.0, 0.5];
    for (i, s) in specials.iter().enumerate() {
        if n > 40 {
            v[i * 3 + 1] = *s;
        }
    }
    ops::astype(&Array::from_vec(v, &[n]).unwrap(), d).unwrap().tap_eval()
}

trait TapEval {
    fn tap_eval(self) -> Self;
}
impl TapEval for Array {
    fn tap_eval(self) -> Array {
        self.eval().unwrap();
        self
    }
}

const UNARY: [UnaryOp; 32] = {
    use UnaryOp::*;
    [
        Abs, Negative, Sign, Floor, Ceil, Round, Trunc, Sqrt, Rsqrt, Square, Reciprocal, Exp, Expm1, Log, Log2, Log10,
        Log1p, Sin, Cos, Tan, ArcSin, ArcCos, ArcTan, Sinh, Cosh, Tanh, ArcSinh, ArcCosh, ArcTanh, Erf, ErfInv,
        Sigmoid,
    ]
};

const PREDICATES: [UnaryOp; 6] = {
    use UnaryOp::*;
    [IsNan, IsInf, IsPosInf, IsNegInf, IsFinite, LogicalNot]
};

const BINARY: [BinaryOp; 11] = {
    use BinaryOp::*;
    [Add, Subtract, Multiply, Divide, FloorDivide, Remainder, Power, Maximum, Minimum, LogAddExp, ArcTan2]
};

const COMPARE: [BinaryOp; 9] = {
    use BinaryOp::*;
    [Equal, NotEqual, Greater, GreaterEqual, Less, LessEqual, LogicalAnd, LogicalOr, Equal]
};

#[test]
fn gelu_chain_fuses_into_one_kernel_bit_exact() {
    let mut rng = Rng::new(1);
    for d in FLOATS {
        for n in [1usize, 7, 511, 512, 513, 1000, 70_001] {
            let x = ops::astype(&rng.array(&[n], -4.0, 4.0), d).unwrap().tap_eval();
            let out = same(&format!("gelu {d} n={n}"), |a| Ok(vec![gelu(&a[0])?]), &[x], Some(1));
            assert_eq!(out[0].dtype(), d);
        }
    }
}

fn gelu(x: &Array) -> Result<Array> {
    let z = ops::add(&ops::multiply(x, 1.5)?, 0.5)?;
    let z3 = ops::multiply(&ops::multiply(&ops::multiply(0.044715, &z)?, &z)?, &z)?;
    let inner = ops::multiply(0.797_884_560_802_865_4, &ops::add(&z, &z3)?)?;
    let t = ops::tanh(&inner)?;
    ops::multiply(&ops::multiply(0.5, &z)?, &ops::add(1.0, &t)?)
}

#[test]
fn every_unary_op_and_float_dtype() {
    let mut rng = Rng::new(2);
    for d in FLOATS {
        let x = data(&mut rng, 1500, -3.0, 3.0, d);
        let u = data(&mut rng, 1500, 0.05, 0.95, d);
        for op in UNARY {
            for (tag, inp) in [("wide", &x), ("unit", &u)] {
                same(
                    &format!("{op:?} {d} {tag}"),
                    |a| Ok(vec![ops::add(&ops::unary(op, &ops::multiply(&a[0], 1.25)?)?, 0.5)?]),
                    std::slice::from_ref(inp),
                    Some(1),
                );
            }
        }
        for op in PREDICATES {
            same(
                &format!("{op:?} {d}"),
                |a| {
                    let m = ops::unary(op, &ops::exp(&a[0])?)?;
                    Ok(vec![ops::where_(&m, &a[0], 2.0)?])
                },
                std::slice::from_ref(&x),
                Some(1),
            );
        }
    }
}

#[test]
fn every_binary_and_compare_op_with_broadcasting() {
    let mut rng = Rng::new(3);
    for d in FLOATS {
        let x = ops::reshape_to(&data(&mut rng, 6 * 250, -3.0, 3.0, d), &[6, 250]).unwrap().tap_eval();
        let row = data(&mut rng, 250, -2.0, 2.0, d);
        let col = ops::astype(&rng.array(&[6, 1], 0.2, 2.0), d).unwrap().tap_eval();
        let s = Array::scalar(0.75f64).astype(d).unwrap().tap_eval();
        for op in BINARY {
            for (tag, y) in [("row", &row), ("col", &col), ("scalar", &s), ("full", &x)] {
                same(
                    &format!("{op:?} {d} {tag}"),
                    |a| {
                        let l = ops::sin(&a[0])?;
                        let r = ops::add(&a[1], 0.25)?;
                        Ok(vec![ops::multiply(&ops::binary(op, &l, &r)?, 2.0)?, ops::binary(op, &r, &l)?])
                    },
                    &[x.clone(), y.clone()],
                    None,
                );
            }
        }
        for op in COMPARE {
            same(
                &format!("{op:?} {d}"),
                |a| {
                    let c = ops::binary(op, &ops::cos(&a[0])?, &a[1])?;
                    let c2 = ops::logical_not(&ops::isnan(&a[0])?)?;
                    let c = ops::logical_and(&c, &c2)?;
                    Ok(vec![ops::where_(&c, &ops::exp(&a[0])?, &a[1])?, c])
                },
                &[x.clone(), row.clone()],
                Some(1),
            );
        }
    }
}

#[test]
fn casts_between_fused_dtypes_and_bool() {
    let mut rng = Rng::new(4);
    let dts = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64, Dtype::Bool];
    for from in FLOATS {
        let x = data(&mut rng, 700, -70000.0, 70000.0, from);
        let xs = data(&mut rng, 700, -1.0, 1.0, from);
        for to in dts {
            for inp in [&x, &xs] {
                same(
                    &format!("{from} -> {to}"),
                    |a| {
                        let y = ops::astype(&ops::multiply(&a[0], 1.0009765625)?, to)?;
                        let back = ops::astype(&y, from)?;
                        Ok(vec![ops::add(&back, 1.0)?, y])
                    },
                    std::slice::from_ref(inp),
                    Some(1),
                );
            }
        }
    }
    // Bool logic inside a group.
    let x = data(&mut rng, 900, -2.0, 2.0, Dtype::F32);
    same(
        "bool ops",
        |a| {
            let p = ops::greater(&a[0], 0.0)?;
            let q = ops::less(&ops::sin(&a[0])?, 0.3)?;
            let r = ops::bitwise_xor(&p, &ops::bitwise_invert(&q)?)?;
            let r = ops::logical_or(&ops::bitwise_and(&r, &p)?, &ops::bitwise_or(&q, &ops::logical_not(&p)?)?)?;
            Ok(vec![ops::astype(&ops::add(&r, &p)?, Dtype::F32)?, ops::where_(&r, &a[0], &ops::negative(&a[0])?)?])
        },
        &[x],
        Some(1),
    );
}

#[test]
fn random_chains_with_broadcasting_and_strided_inputs() {
    let mut rng = Rng::new(5);
    for trial in 0..24 {
        let d = FLOATS[trial % 4];
        let (r, c) = [(3, 5), (17, 61), (40, 33), (300, 257)][trial % 4];
        // x: transposed (non-contiguous); y: a strided slice; row/col/scalar broadcast.
        let xt = ops::astype(&rng.array(&[c, r], -2.0, 2.0), d).unwrap();
        let x = ops::transpose(&xt).unwrap().tap_eval();
        let yb = ops::astype(&rng.array(&[r, 2 * c], -2.0, 2.0), d).unwrap();
        let y = ops::slice(&yb, &[0, 0], &[r as i64, 2 * c as i64], &[1, 2]).unwrap().tap_eval();
        let row = ops::astype(&rng.array(&[c], -1.0, 1.0), d).unwrap().tap_eval();
        let col = ops::astype(&rng.array(&[r, 1], 0.5, 1.5), d).unwrap().tap_eval();
        let s = Array::scalar(0.3f64).astype(d).unwrap().tap_eval();
        let seed = rng.next_u64();
        let chain = move |a: &[Array]| -> Result<Vec<Array>> {
            let mut g = Rng::new(seed);
            let mut pool: Vec<Array> = a.to_vec();
            for _ in 0..12 {
                let pick = |g: &mut Rng, pool: &Vec<Array>| pool[(g.next_u64() as usize) % pool.len()].clone();
                let v = match g.next_u64() % 6 {
                    0 | 1 => {
                        let op =
                            [UnaryOp::Tanh, UnaryOp::Sin, UnaryOp::Exp, UnaryOp::Abs, UnaryOp::Sigmoid, UnaryOp::Erf]
                                [(g.next_u64() % 6) as usize];
                        ops::unary(op, &pick(&mut g, &pool))?
                    }
                    2 | 3 => {
                        let op = [BinaryOp::Add, BinaryOp::Multiply, BinaryOp::Subtract, BinaryOp::Maximum]
                            [(g.next_u64() % 4) as usize];
                        ops::binary(op, &pick(&mut g, &pool), &pick(&mut g, &pool))?
                    }
                    4 => ops::where_(
                        &ops::greater(&pick(&mut g, &pool), &pick(&mut g, &pool))?,
                        &pick(&mut g, &pool),
                        &pick(&mut g, &pool),
                    )?,
                    _ => ops::astype(&ops::astype(&pick(&mut g, &pool), Dtype::F32)?, pool[0].dtype())?,
                };
                pool.push(v);
            }
            // The last value broadcast to the full shape, plus one interior value.
            let last = ops::add(&pool[pool.len() - 1], &ops::multiply(&a[0], 0.0)?)?;
            Ok(vec![last, pool[a.len() + 3].clone()])
        };
        same(&format!("random chain {trial} {d} {r}x{c}"), chain, &[x, y, row, col, s], None);
    }
}

#[test]
fn multiple_outputs_and_shared_intermediates() {
    let mut rng = Rng::new(6);
    let x = rng.array(&[64, 33], -2.0, 2.0).astype(Dtype::F32).unwrap().tap_eval();
    // An interior value requested as an output: one kernel with two outputs.
    let two = |a: &[Array]| {
        let e = ops::exp(&ops::multiply(&a[0], 0.5)?)?;
        let y = ops::tanh(&ops::add(&e, 1.0)?)?;
        Ok(vec![y, e])
    };
    same("two outputs", two, std::slice::from_ref(&x), Some(1));
    // (Checked before evaluation, which detaches arrays from their node.)
    let out = fuse_graph(&two(std::slice::from_ref(&x)).unwrap());
    let (s0, _) = out[0].siblings();
    assert_eq!(s0.len(), 2, "both outputs come from one Fused node");
    assert!(s0.iter().any(|s| s.id() == out[1].id()));
    // An intermediate also read by a reduction: it is a separate group's
    // output, never recomputed inside another group.
    let shared = |a: &[Array]| {
        let e = ops::exp(&ops::sin(&a[0])?)?;
        let y = ops::multiply(&ops::add(&e, 1.0)?, 3.0)?;
        let s = ops::sum(&e, Axes::List(vec![1]), true)?;
        Ok(vec![ops::add(&y, &s)?])
    };
    same("shared with a reduction", shared, std::slice::from_ref(&x), Some(2));
    let fused = fuse_graph(&shared(std::slice::from_ref(&x)).unwrap());
    // The consumer group reads `e` (the other group's output) as an input.
    let p = prims(&fused);
    assert_eq!(p.get("Sum"), Some(&1));
    assert!(!p.contains_key("Exp") && !p.contains_key("Sin"), "{p:?}");
    // The root kernel's group has the broadcast sum as an input and is one node.
    let root_inputs = fused[0].inputs();
    assert!(root_inputs.iter().any(|i| i.primitive().is_some_and(|p| p.name() == "Sum")));
    // Two chains reading the same input are one kernel ...
    same(
        "siblings on one input",
        |a| Ok(vec![ops::sin(&ops::multiply(&a[0], 2.0)?)?, ops::tanh(&ops::exp(&a[0])?)?]),
        std::slice::from_ref(&x),
        Some(1),
    );
    // ... unless one depends on the other through a reduction (merging
    // them would make the kernel its own input).
    same(
        "siblings through a reduction",
        |a| {
            let y1 = ops::multiply(&ops::sin(&a[0])?, 2.0)?;
            let s = ops::sum(&y1, Axes::List(vec![1]), true)?;
            Ok(vec![y1, ops::add(&ops::cos(&a[0])?, &s)?])
        },
        std::slice::from_ref(&x),
        Some(2),
    );
    // A value with consumers of another shape stays a group boundary.
    same(
        "different shapes",
        |a| {
            let row = ops::exp(&ops::sum(&a[0], Axes::List(vec![0]), false)?)?;
            let r2 = ops::sigmoid(&row)?;
            Ok(vec![ops::multiply(&ops::tanh(&a[0])?, &r2)?])
        },
        std::slice::from_ref(&x),
        Some(2),
    );
    // Evaluated inputs stay as they are; a single op is not wrapped.
    let single = fuse_graph(&[ops::exp(&x).unwrap()]);
    assert_eq!(single[0].primitive().unwrap().name(), "Exp");
    let ev = ops::exp(&x).unwrap().tap_eval();
    let kept = fuse_graph(&[ev.clone()]);
    assert_eq!(kept[0].id(), ev.id());
}

/// A backward-shaped group reading several of a forward group's
/// intermediates across a reduction recomputes them from the forward's input
/// (the forward kernel then writes only its result); one reading a single
/// intermediate whose cone needs as many inputs reads it instead.
#[test]
fn groups_recompute_cheap_intermediates_of_other_groups() {
    let mut rng = Rng::new(9);
    for d in [Dtype::F32, Dtype::BF16] {
        let x = rng.array(&[48, 70], -3.0, 3.0).astype(d).unwrap().tap_eval();
        // Forward: GELU's cube, inner value and tanh; the "backward" reads all three.
        let fwd_bwd = |a: &[Array], reads_all: bool| {
            let x = &a[0];
            let x3 = ops::multiply(&ops::multiply(x, x)?, x)?;
            let inner = ops::multiply(0.797_884_6, &ops::add(x, &ops::multiply(0.044715, &x3)?)?)?;
            let t = ops::tanh(&inner)?;
            let h = ops::multiply(&ops::multiply(0.5, x)?, &ops::add(1.0, &t)?)?;
            let s = ops::sum(&h, Axes::List(vec![1]), true)?;
            let dt = ops::multiply(&s, &ops::subtract(1.0, &ops::square(&t)?)?)?;
            let back = if reads_all { ops::add(&ops::multiply(&dt, &inner)?, &ops::multiply(&x3, &s)?)? } else { dt };
            Ok(vec![h, back])
        };
        for reads_all in [true, false] {
            let name = format!("{d} reads_all={reads_all}");
            same(&name, |a| fwd_bwd(a, reads_all), std::slice::from_ref(&x), Some(2));
            let out = fuse_graph(&fwd_bwd(std::slice::from_ref(&x), reads_all).unwrap());
            let fwd_outputs = out[0].siblings().0.len();
            let back_reads_fused = out[1].inputs().iter().any(|i| i.primitive().is_some_and(|p| p.name() == "Fused"));
            if reads_all {
                // Three full-size reads replaced by one (x): recomputed.
                assert_eq!(fwd_outputs, 1, "{name}");
                assert!(!back_reads_fused, "{name}");
            } else {
                // tanh alone (one read) would be replaced by x (one read): kept.
                assert_eq!(fwd_outputs, 2, "{name}");
                assert!(back_reads_fused, "{name}");
            }
        }
    }
}

#[test]
fn large_arrays_use_threads_and_match() {
    let mut rng = Rng::new(7);
    for d in [Dtype::F32, Dtype::BF16] {
        let x = ops::astype(&rng.array(&[300, 701], -3.0, 3.0), d).unwrap().tap_eval();
        let row = ops::astype(&rng.array(&[701], -1.0, 1.0), d).unwrap().tap_eval();
        same(
            &format!("large {d}"),
            |a| Ok(vec![gelu(&ops::add(&a[0], &a[1])?)?, ops::exp(&ops::negative(&a[0])?)?]),
            &[x.clone(), row.clone()],
            Some(1),
        );
        let xt = ops::transpose(&x).unwrap().tap_eval();
        same(&format!("large transposed {d}"), |a| Ok(vec![gelu(&a[0])?]), &[xt], Some(1));
    }
}

#[test]
fn transforms_through_fused_nodes() {
    let mut rng = Rng::new(8);
    let f1 = |a: &[Array]| -> Result<Array> {
        let y = ops::add(&ops::multiply(&gelu(&a[0])?, &a[1])?, &ops::sigmoid(&a[1])?)?;
        let out = fuse_graph(&[y]);
        assert!(out[0].primitive().is_some_and(|p| p.name() == "Fused"));
        Ok(out[0].clone())
    };
    let x = rng.array(&[3, 4], -2.0, 2.0);
    let b = rng.array(&[4], -1.0, 1.0);
    check_grad("fused gelu*b", f1, &[x.clone(), b.clone()]);
    check_vmap("fused gelu*b", f1, &[rng.array(&[5, 3, 4], -2.0, 2.0), b.clone()], &[Some(0), None]);
    check_vmap(
        "fused gelu*b axis1",
        f1,
        &[rng.array(&[3, 5, 4], -2.0, 2.0), rng.array(&[4, 5], -1.0, 1.0)],
        &[Some(1), Some(1)],
    );
    // Select, compare, astype and a squared argument inside the group. The
    // f64 -> f32 -> f64 round trip makes finite differences useless (f32
    // rounding over a 1e-6 step), so that variant's gradient is compared
    // with the unfused graph's instead; the f64 -> f32 -> f64 cast of the
    // selected value with `to` = F64 keeps full precision for check_grad.
    let select = |a: &[Array], mid: Dtype, fuse: bool| -> Result<Array> {
        let m = ops::greater(&a[0], &a[1])?;
        let w = ops::where_(&m, &ops::multiply(&a[0], &a[0])?, &ops::exp(&a[1])?)?;
        let c = ops::astype(&ops::astype(&w, mid)?, Dtype::F64)?;
        let y = ops::add(&ops::multiply(&c, &w)?, &ops::tanh(&a[0])?)?;
        if !fuse {
            return Ok(y);
        }
        let out = fuse_graph(&[y]);
        assert!(out[0].primitive().is_some_and(|p| p.name() == "Fused"));
        Ok(out[0].clone())
    };
    let f2 = move |a: &[Array]| select(a, Dtype::F64, true);
    let x1 = rng.array(&[3, 4], -2.0, 2.0);
    check_grad("fused select", f2, &[x.clone(), x1.clone()]);
    check_vmap("fused select", f2, &[rng.array(&[2, 3, 4], -2.0, 2.0), b.clone()], &[Some(0), None]);
    let sum_of = |fuse: bool| {
        kiln_core::grad(
            move |a: &[Array]| Ok(vec![ops::sum(&select(a, Dtype::F32, fuse)?, Axes::All, false)?]),
            &[0, 1],
        )
    };
    let (gf, gu) = (sum_of(true)(&[x.clone(), x1.clone()]).unwrap(), sum_of(false)(&[x.clone(), x1]).unwrap());
    // Equal up to the order in which cotangents are summed.
    for (k, (a, b)) in gf.iter().zip(&gu).enumerate() {
        let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-13 * q.abs().max(1.0),
                "fused select via f32: gradient {k}[{i}]: {p} vs unfused {q}"
            );
        }
    }
    // Several outputs: gradient of a function of both.
    let f3 = |a: &[Array]| -> Result<Array> {
        let e = ops::exp(&ops::multiply(&a[0], 0.3)?)?;
        let y = ops::sin(&ops::add(&e, &a[0])?)?;
        let outs = fuse_graph(&[y, e]);
        assert_eq!(outs[0].siblings().0.len(), 2);
        ops::add(&ops::sum(&outs[0], Axes::All, false)?, &ops::sum(&ops::square(&outs[1])?, Axes::All, false)?)
    };
    check_grad("fused two outputs", f3, std::slice::from_ref(&x));
    // Grad of grad through a fused node.
    let g = kiln_core::grad(
        |a: &[Array]| {
            Ok(vec![ops::sum(&fuse_graph(&[ops::tanh(&ops::multiply(&a[0], &a[0])?)?])[0], Axes::All, false)?])
        },
        &[0],
    );
    let gg = kiln_core::grad(move |a: &[Array]| Ok(vec![ops::sum(&g(a)?[0], Axes::All, false)?]), &[0]);
    let x0 = rng.array(&[5], -1.0, 1.0);
    let got = gg(std::slice::from_ref(&x0)).unwrap()[0].to_vec::<f64>().unwrap();
    for (xv, gv) in x0.to_vec::<f64>().unwrap().iter().zip(got) {
        // d²/dx² tanh(x²) = 2 sech²(x²) - 8 x² tanh(x²) sech²(x²)
        let (t, s2) = ((xv * xv).tanh(), 1.0 - (xv * xv).tanh().powi(2));
        let want = 2.0 * s2 - 8.0 * xv * xv * t * s2;
        assert!((gv - want).abs() < 1e-9, "grad of grad {gv} vs {want}");
    }
    // jvp of a fused node against the unfused graph.
    let (_, t1) =
        kiln_core::jvp(|a: &[Array]| Ok(vec![f1(a)?]), &[x.clone(), b.clone()], &[x.clone(), b.clone()]).unwrap();
    let (_, t2) = kiln_core::jvp(
        |a: &[Array]| Ok(vec![ops::add(&ops::multiply(&gelu(&a[0])?, &a[1])?, &ops::sigmoid(&a[1])?)?]),
        &[x.clone(), b.clone()],
        &[x.clone(), b.clone()],
    )
    .unwrap();
    let (v1, v2) = (t1[0].to_vec::<f64>().unwrap(), t2[0].to_vec::<f64>().unwrap());
    for (p, q) in v1.iter().zip(&v2) {
        assert!((p - q).abs() <= 1e-12 * (1.0 + q.abs()), "jvp {p} vs {q}");
    }
}

#[test]
fn equivalence_and_unsupported_dtypes() {
    let mut rng = Rng::new(9);
    let x = rng.array(&[10], -1.0, 1.0).astype(Dtype::F32).unwrap().tap_eval();
    let a = fuse_graph(&[gelu(&x).unwrap()]);
    let b = fuse_graph(&[gelu(&x).unwrap()]);
    let c = fuse_graph(&[ops::exp(&ops::sin(&x).unwrap()).unwrap()]);
    let (pa, pb, pc) = (a[0].primitive().unwrap(), b[0].primitive().unwrap(), c[0].primitive().unwrap());
    assert!(pa.is_equivalent(pb.as_ref()));
    assert!(!pa.is_equivalent(pc.as_ref()));
    // Integer graphs are not fused.
    let i = Array::from_vec(vec![1i32, 2, 3], &[3]).unwrap();
    let y = fuse_graph(&[ops::multiply(&ops::add(&i, 1).unwrap(), 3).unwrap()]);
    assert!(!prims(&y).contains_key("Fused"));
    assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![6, 9, 12]);
    // A hand-built program over an integer input is an error, not a panic.
    let prog = FusedProgram {
        n_inputs: 1,
        insts: vec![FusedInst {
            op: FusedOp::Unary(UnaryOp::Negative),
            args: vec![0],
            dtype: Dtype::I32,
            prim: pc.clone(),
        }],
        outputs: vec![1],
        shape: vec![3],
    };
    let bad = Array::from_op(vec![3], Dtype::I32, Fused { program: Arc::new(prog) }, vec![i]);
    assert!(bad.eval().is_err());
}

// ---------------------------------------------------------------- benchmark

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}
extern "C" {
    fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32;
}

/// CPU seconds used by the whole process (all threads).
fn cpu_time() -> f64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: CLOCK_PROCESS_CPUTIME_ID (2) is valid on Linux and `t` is a valid out-pointer.
    unsafe { clock_gettime(2, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// `cargo test --release --test fused -- --ignored --nocapture bench`:
/// the harness's gelu chain (16M f32), unfused vs fused, in CPU time.
#[test]
#[ignore]
fn bench_gelu_chain() {
    let n: usize = std::env::var("GELU_N").ok().and_then(|s| s.parse().ok()).unwrap_or(1 << 24);
    let mut rng = Rng::new(10);
    let x = rng.array(&[n], -3.0, 3.0).astype(Dtype::F32).unwrap().tap_eval();
    let bytes = (2 * 4 * n) as f64;
    for mode in ["unfused", "fused", "unfused", "fused"] {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let y = gelu(&x).unwrap();
            let y = if mode == "fused" { fuse_graph(&[y]).pop().unwrap() } else { y };
            let (t0, w0) = (cpu_time(), std::time::Instant::now());
            y.eval().unwrap();
            let (cpu, wall) = (cpu_time() - t0, w0.elapsed().as_secs_f64());
            best = best.min(cpu);
            let _ = wall;
        }
        println!("gelu {mode}: {:.3} ms CPU, {:.2} GB/s per core", best * 1e3, bytes / best / 1e9);
    }
}
