//! `compile`: compiled and uncompiled functions agree (randomized graphs and
//! their gradients), the trace cache is bounded, shapeless mode does not
//! retrace on new sizes, transforms nest, captured state, errors.

mod common;

use common::Rng;
use kiln_core::transforms::{CompileOptions, Compiled, State};
use kiln_core::{
    compile, compile_shapeless, compile_with_state, disable_compile, enable_compile, grad, jvp, ops, value_and_grad,
    vjp, vmap, Array, Dtype, ErrorKind, Result, Tree,
};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::RwLock;

/// `disable_compile` is global: the test that flips it takes the write lock,
/// every other test a read lock.
static GLOBAL: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner())
}

fn f32s(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

fn rand32(rng: &mut Rng, shape: &[usize]) -> Array {
    ops::astype(&rng.array(shape, -1.0, 1.0), Dtype::F32).unwrap()
}

/// Asserts equal shapes and values within `rtol` (0 means bit-exact; NaNs and
/// infinities must match).
fn assert_close(ctx: &str, got: &Array, want: &Array, rtol: f32) {
    assert_eq!(got.shape(), want.shape(), "{ctx}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{ctx}: dtype");
    let (g, w) = (f32s(got), f32s(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if rtol == 0.0 {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        } else {
            a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= rtol * (1.0 + b.abs())
        };
        assert!(ok, "{ctx}: element {i}: compiled {a}, uncompiled {b}");
    }
}

fn assert_all_close(ctx: &str, got: &[Array], want: &[Array], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{ctx}: number of outputs");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(&format!("{ctx} output {k}"), g, w, rtol);
    }
}

// ---------------------------------------------------------------- random graphs

/// One instruction of a random program; operands index earlier values
/// (the inputs come first: x (r,c), y (c,), z (r,1), w (c,c)).
#[derive(Clone, Debug)]
enum Ins {
    Unary(u8, usize),
    Binary(u8, usize, usize),
    Scale(usize, f32),
    Reduce(u8, usize, Option<i32>, bool),
    Matmul(usize),
    Softmax(usize),
    LogSumExp(usize),
    Where(usize, usize, usize),
    Cast(usize),
    /// Recomputes instruction `.0` (a common subexpression).
    Repeat(usize),
}

#[derive(Clone, Debug)]
struct Program {
    ins: Vec<Ins>,
    outputs: Vec<usize>,
}

const N_INPUTS: usize = 4;

fn input_shapes(r: usize, c: usize) -> Vec<Vec<usize>> {
    vec![vec![r, c], vec![c], vec![r, 1], vec![c, c]]
}

impl Program {
    /// A random program over the inputs; `shapeless` leaves out ops whose
    /// recorded graph fixes a size (mean bakes 1/n in).
    fn random(rng: &mut Rng, len: usize, shapeless: bool) -> Program {
        let (r, c) = (3usize, 4usize);
        let mut shapes = input_shapes(r, c);
        let mut ins: Vec<Ins> = Vec::new();
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        while ins.len() < len {
            let n = shapes.len();
            // w (input 3) only enters through Matmul.
            let operand = |i: usize| if i == 3 { 0 } else { i };
            let a = operand(pick(rng, n));
            let b = operand(pick(rng, n));
            let sa = shapes[a].clone();
            let compat = |x: &[usize], y: &[usize]| {
                x.iter().rev().zip(y.iter().rev()).all(|(p, q)| p == q || *p == 1 || *q == 1)
            };
            // An operand that does not broadcast with `a` is replaced by `a`.
            let b = if compat(&sa, &shapes[b]) { b } else { a };
            let bshape = |x: &[usize], y: &[usize]| -> Vec<usize> {
                let nd = x.len().max(y.len());
                (0..nd)
                    .map(|i| {
                        let dx = if i + x.len() >= nd { x[i + x.len() - nd] } else { 1 };
                        let dy = if i + y.len() >= nd { y[i + y.len() - nd] } else { 1 };
                        dx.max(dy)
                    })
                    .collect()
            };
            let (instr, shape) = match pick(rng, 11) {
                0 | 1 => (Ins::Unary(pick(rng, 7) as u8, a), sa),
                2 | 3 => (Ins::Binary(pick(rng, 5) as u8, a, b), bshape(&sa, &shapes[b])),
                4 => (Ins::Scale(a, [2.0, 0.5, -1.5][pick(rng, 3)]), sa),
                5 => {
                    let kind = pick(rng, if shapeless { 2 } else { 3 }) as u8;
                    let keep = pick(rng, 2) == 1;
                    if sa.is_empty() || pick(rng, 3) == 0 {
                        (Ins::Reduce(kind, a, None, keep), if keep { vec![1; sa.len()] } else { vec![] })
                    } else {
                        let ax = if pick(rng, 2) == 0 { -1 } else { 0 };
                        let axu = if ax < 0 { sa.len() - 1 } else { 0 };
                        let mut s = sa.clone();
                        if keep {
                            s[axu] = 1;
                        } else {
                            s.remove(axu);
                        }
                        (Ins::Reduce(kind, a, Some(ax), keep), s)
                    }
                }
                6 if sa.last() == Some(&c) => {
                    let mut s = sa.clone();
                    *s.last_mut().unwrap() = c;
                    (Ins::Matmul(a), s)
                }
                7 if !sa.is_empty() => (Ins::Softmax(a), sa),
                8 if !sa.is_empty() => {
                    let mut s = sa.clone();
                    *s.last_mut().unwrap() = 1;
                    (Ins::LogSumExp(a), s)
                }
                9 => {
                    let cc = operand(pick(rng, n));
                    let cc = if compat(&sa, &shapes[cc]) && compat(&shapes[b], &shapes[cc]) { cc } else { a };
                    let s = bshape(&bshape(&shapes[cc], &sa), &shapes[b]);
                    (Ins::Where(cc, a, b), s)
                }
                10 if !ins.is_empty() => {
                    let k = pick(rng, ins.len());
                    (Ins::Repeat(k), shapes[N_INPUTS + k].clone())
                }
                _ => (Ins::Cast(a), sa),
            };
            ins.push(instr);
            shapes.push(shape);
        }
        let total = N_INPUTS + ins.len();
        let mut outputs = vec![total - 1];
        for _ in 0..pick(rng, 3) {
            outputs.push(N_INPUTS + pick(rng, ins.len()));
        }
        Program { ins, outputs }
    }

    fn step(&self, ins: &Ins, v: &[Array]) -> Result<Array> {
        Ok(match *ins {
            Ins::Unary(k, a) => {
                let x = &v[a];
                match k {
                    0 => ops::sin(x)?,
                    1 => ops::cos(x)?,
                    2 => ops::tanh(x)?,
                    3 => ops::sigmoid(x)?,
                    4 => ops::negative(x)?,
                    5 => ops::abs(x)?,
                    _ => ops::exp(&ops::negative(&ops::square(x)?)?)?,
                }
            }
            Ins::Binary(k, a, b) => {
                let (x, y) = (&v[a], &v[b]);
                match k {
                    0 => ops::add(x, y)?,
                    1 => ops::subtract(x, y)?,
                    2 => ops::multiply(x, y)?,
                    3 => ops::maximum(x, y)?,
                    _ => ops::divide(x, &ops::add(&ops::square(y)?, 1.0)?)?,
                }
            }
            Ins::Scale(a, s) => ops::multiply(&v[a], s)?,
            Ins::Reduce(k, a, ax, keep) => {
                let axes = ax.map(|a| vec![a]).unwrap_or_default();
                let axes: kiln_core::Axes = if ax.is_some() { axes.into() } else { None::<i32>.into() };
                match k {
                    0 => ops::sum(&v[a], axes, keep)?,
                    1 => ops::max(&v[a], axes, keep)?,
                    _ => ops::mean(&v[a], axes, keep)?,
                }
            }
            Ins::Matmul(a) => ops::matmul(&v[a], &v[3])?,
            Ins::Softmax(a) => ops::softmax(&v[a], -1, true)?,
            Ins::LogSumExp(a) => ops::logsumexp(&v[a], -1, true)?,
            Ins::Where(c, a, b) => ops::where_(&ops::greater(&v[c], 0.0)?, &v[a], &v[b])?,
            Ins::Cast(a) => ops::astype(&ops::tanh(&ops::astype(&v[a], Dtype::F64)?)?, Dtype::F32)?,
            Ins::Repeat(k) => self.step(&self.ins[k], v)?,
        })
    }

    fn run(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let mut v: Vec<Array> = xs.to_vec();
        for ins in &self.ins {
            let y = self.step(ins, &v)?;
            v.push(y);
        }
        Ok(self.outputs.iter().map(|&i| v[i].clone()).collect())
    }

    /// A scalar loss of all outputs (for gradients).
    fn loss(&self, xs: &[Array]) -> Result<Vec<Array>> {
        let outs = self.run(xs)?;
        let mut acc = ops::sum(&outs[0], None::<i32>, false)?;
        for o in &outs[1..] {
            acc = ops::add(&acc, &ops::sum(&ops::multiply(o, 0.5)?, None::<i32>, false)?)?;
        }
        Ok(vec![acc])
    }
}

fn inputs(rng: &mut Rng, r: usize, c: usize) -> Vec<Array> {
    input_shapes(r, c).iter().map(|s| rand32(rng, s)).collect()
}

#[test]
fn random_graphs_compiled_match_uncompiled() {
    let _g = shared();
    // SEED=n explores other random graphs.
    let mut rng = Rng::new(std::env::var("SEED").map(|s| s.parse().unwrap()).unwrap_or(2024));
    for case in 0..60 {
        let p = Rc::new(Program::random(&mut rng, 6 + case % 10, false));
        let ctx = format!("program {case} {:?}", p);
        let pc = p.clone();
        let cf = Compiled::new(move |x: &[Array]| pc.run(x), CompileOptions::default());
        // Two different input values of one signature: one trace, then replays.
        for call in 0..2 {
            let xs = inputs(&mut rng, 3, 4);
            let want = p.run(&xs).unwrap();
            let got = cf.call(&xs).unwrap();
            // Replay records the same primitives: results are bit-identical.
            assert_all_close(&format!("{ctx} call {call}"), &got, &want, 0.0);
        }
        assert_eq!(cf.trace_count(), 1, "{ctx}");
        // Without simplification too.
        let pc = p.clone();
        let nc = Compiled::new(move |x: &[Array]| pc.run(x), CompileOptions { simplify: false, ..Default::default() });
        let xs = inputs(&mut rng, 3, 4);
        assert_all_close(&format!("{ctx} unsimplified"), &nc.call(&xs).unwrap(), &p.run(&xs).unwrap(), 0.0);
    }
}

#[test]
fn random_graph_gradients_compiled_match_uncompiled() {
    let _g = shared();
    // SEED=n explores other random graphs.
    let mut rng = Rng::new(std::env::var("SEED").map(|s| s.parse().unwrap()).unwrap_or(77));
    let argnums = [0usize, 1, 2, 3];
    for case in 0..40 {
        let p = Rc::new(Program::random(&mut rng, 5 + case % 8, false));
        let ctx = format!("program {case} {:?}", p);
        let xs = inputs(&mut rng, 3, 4);
        let p1 = p.clone();
        let want = grad(move |x: &[Array]| p1.loss(x), &argnums)(&xs).unwrap();
        // compile of grad
        let p2 = p.clone();
        let cg = compile(grad(move |x: &[Array]| p2.loss(x), &argnums));
        assert_all_close(&format!("{ctx} compile(grad)"), &cg(&xs).unwrap(), &want, 1e-5);
        let xs2 = inputs(&mut rng, 3, 4);
        let p3 = p.clone();
        let want2 = grad(move |x: &[Array]| p3.loss(x), &argnums)(&xs2).unwrap();
        assert_all_close(&format!("{ctx} compile(grad) replay"), &cg(&xs2).unwrap(), &want2, 1e-5);
        // grad of compile
        let p4 = p.clone();
        let cf = compile(move |x: &[Array]| p4.loss(x));
        let gc = grad(cf, &argnums);
        assert_all_close(&format!("{ctx} grad(compile)"), &gc(&xs).unwrap(), &want, 1e-5);
        // jvp of compile
        let tans = inputs(&mut rng, 3, 4);
        let p5 = p.clone();
        let (_, t_want) = jvp(move |x: &[Array]| p5.run(x), &xs, &tans).unwrap();
        let p6 = p.clone();
        let cr = compile(move |x: &[Array]| p6.run(x));
        let (_, t_got) = jvp(cr, &xs, &tans).unwrap();
        assert_all_close(&format!("{ctx} jvp(compile)"), &t_got, &t_want, 1e-5);
    }
}

#[test]
fn vmap_of_compiled_random_graphs() {
    let _g = shared();
    let mut rng = Rng::new(5);
    for case in 0..20 {
        let p = Rc::new(Program::random(&mut rng, 6 + case % 6, false));
        let ctx = format!("program {case} {:?}", p);
        let mut xs = inputs(&mut rng, 3, 4);
        xs[0] = rand32(&mut rng, &[2, 3, 4]); // x batched along axis 0
        let axes = [Some(0), None, None, None];
        let p1 = p.clone();
        let want = vmap(move |x: &[Array]| p1.run(x), &axes, &[0])(&xs).unwrap();
        let p2 = p.clone();
        let got = vmap(compile(move |x: &[Array]| p2.run(x)), &axes, &[0])(&xs).unwrap();
        assert_all_close(&ctx, &got, &want, 1e-6);
    }
}

#[test]
fn shapeless_random_graphs_do_not_retrace() {
    let _g = shared();
    let mut rng = Rng::new(99);
    let mut ran = 0;
    for case in 0..40 {
        let p = Rc::new(Program::random(&mut rng, 6 + case % 8, true));
        let ctx = format!("program {case} {:?}", p);
        let pc = p.clone();
        let cf = Compiled::new(move |x: &[Array]| pc.run(x), CompileOptions { shapeless: true, ..Default::default() });
        for (r, c) in [(3, 4), (5, 2), (2, 7), (6, 6)] {
            let xs = inputs(&mut rng, r, c);
            let want = p.run(&xs).unwrap();
            let got = cf.call(&xs).unwrap_or_else(|e| panic!("{ctx} at ({r},{c}): {e}"));
            assert_all_close(&format!("{ctx} at ({r},{c})"), &got, &want, 0.0);
        }
        assert_eq!(cf.trace_count(), 1, "{ctx}");
        ran += 1;
    }
    assert_eq!(ran, 40);
}

// ---------------------------------------------------------------- cache

#[test]
fn cache_stays_bounded_with_thousands_of_shapes() {
    let _g = shared();
    let cf = Compiled::new(
        |x: &[Array]| Ok(vec![ops::exp(&x[0])?]),
        CompileOptions { cache_capacity: 16, ..Default::default() },
    );
    let keep = ops::zeros(&[1], Dtype::F32).unwrap();
    for n in 2..3002 {
        let x = ops::zeros(&[n], Dtype::F32).unwrap();
        assert_eq!(cf.call(&[x]).unwrap()[0].shape(), &[n]);
        // A shape used all the time stays cached (least recently used eviction).
        cf.call(std::slice::from_ref(&keep)).unwrap();
        assert!(cf.cache_len() <= 16);
    }
    assert_eq!(cf.cache_len(), 16);
    assert_eq!(cf.trace_count(), 3001);
    assert_eq!(cf.call(&[keep]).unwrap()[0].to_vec::<f32>().unwrap(), vec![1.0]);
    assert_eq!(cf.trace_count(), 3001);
    // An evicted shape retraces.
    cf.call(&[ops::zeros(&[2], Dtype::F32).unwrap()]).unwrap();
    assert_eq!(cf.trace_count(), 3002);
    cf.clear_cache();
    assert_eq!(cf.cache_len(), 0);
}

#[test]
fn cache_key_is_shapes_dtypes_and_count() {
    let _g = shared();
    let cf = Compiled::new(
        |x: &[Array]| Ok(vec![x.iter().skip(1).try_fold(x[0].clone(), |a, b| ops::add(&a, b))?]),
        CompileOptions::default(),
    );
    let a = ops::ones(&[2], Dtype::F32).unwrap();
    cf.call(std::slice::from_ref(&a)).unwrap();
    cf.call(std::slice::from_ref(&a)).unwrap();
    assert_eq!(cf.trace_count(), 1);
    cf.call(&[ops::ones(&[3], Dtype::F32).unwrap()]).unwrap();
    assert_eq!(cf.trace_count(), 2);
    let y = cf.call(&[ops::ones(&[2], Dtype::I32).unwrap()]).unwrap();
    assert_eq!((cf.trace_count(), y[0].dtype()), (3, Dtype::I32));
    let y = cf.call(&[a.clone(), a.clone()]).unwrap();
    assert_eq!((cf.trace_count(), y[0].to_vec::<f32>().unwrap()), (4, vec![2.0, 2.0]));
}

#[test]
fn shapeless_retraces_only_on_dtype_or_rank() {
    let _g = shared();
    let cf = Compiled::new(
        |x: &[Array]| Ok(vec![ops::sum(&ops::multiply(&ops::square(&x[0])?, 2.0)?, -1, false)?]),
        CompileOptions { shapeless: true, ..Default::default() },
    );
    for n in 2..40 {
        let x = ops::ones(&[3, n], Dtype::F32).unwrap();
        assert_eq!(cf.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![2.0 * n as f32; 3]);
    }
    assert_eq!(cf.trace_count(), 1);
    cf.call(&[ops::ones(&[3, 4], Dtype::F64).unwrap()]).unwrap();
    assert_eq!(cf.trace_count(), 2);
    let y = cf.call(&[ops::ones(&[2, 3, 4], Dtype::F32).unwrap()]).unwrap();
    assert_eq!((cf.trace_count(), y[0].shape()), (3, &[2usize, 3][..]));
    // The public wrapper too.
    let f = compile_shapeless(|x: &[Array]| Ok(vec![ops::matmul(&x[0], &x[1])?]));
    for (m, k, n) in [(2, 3, 4), (5, 1, 2), (1, 7, 3)] {
        let a = ops::ones(&[m, k], Dtype::F32).unwrap();
        let b = ops::ones(&[k, n], Dtype::F32).unwrap();
        let y = f(&[a, b]).unwrap();
        assert_eq!(y[0].shape(), &[m, n]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![k as f32; m * n]);
    }
    // Incompatible new shapes are reported, not silently broadcast.
    let a = ops::ones(&[2, 3], Dtype::F32).unwrap();
    let b = ops::ones(&[4, 2], Dtype::F32).unwrap();
    let e = f(&[a, b]).unwrap_err();
    assert!(e.to_string().contains("matmul"), "{e}");
}

// ---------------------------------------------------------------- simplification

#[test]
fn simplify_merges_common_subexpressions_and_scalars() {
    let _g = shared();
    let f = |x: &[Array]| {
        let a = ops::multiply(&ops::exp(&x[0])?, 2.0)?;
        let b = ops::multiply(&ops::exp(&x[0])?, 2.0)?; // same op on an equal scalar
        let _dead = ops::sin(&x[0])?;
        Ok(vec![ops::add(&a, &b)?])
    };
    let x = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
    // Without fusion, so the add and its operands stay separate nodes to inspect.
    let cse = Compiled::new(f, CompileOptions { fuse: false, ..Default::default() });
    let y = cse.call(std::slice::from_ref(&x)).unwrap();
    let ins = y[0].inputs();
    assert_eq!(ins[0].id(), ins[1].id(), "both operands of the add are one node after CSE");
    assert_close("cse", &y[0], &f(&[x.clone()]).unwrap()[0], 0.0);
    // Without simplification, the duplicate stays.
    let nc = Compiled::new(f, CompileOptions { simplify: false, fuse: false, ..Default::default() });
    let y = nc.call(&[x]).unwrap();
    let ins = y[0].inputs();
    assert_ne!(ins[0].id(), ins[1].id());
}

#[test]
fn compile_of_grad_removes_copies_and_keeps_values() {
    let _g = shared();
    let f = |x: &[Array]| Ok(vec![ops::sum(&ops::multiply(&ops::sin(&x[0])?, &x[0])?, None::<i32>, false)?]);
    let vg = value_and_grad(f, &[0]);
    let g = compile(move |x: &[Array]| {
        let (mut v, g) = vg(x)?;
        v.extend(g);
        Ok(v)
    });
    let x = Array::from_slice(&[0.5f32, -1.0, 2.0], &[3]).unwrap();
    let out = g(std::slice::from_ref(&x)).unwrap();
    // No transform boundary (Copy) survives in the replayed graph.
    let mut stack = out.clone();
    let mut nodes = 0;
    let mut seen = std::collections::HashSet::new();
    while let Some(a) = stack.pop() {
        if !seen.insert(a.id()) {
            continue;
        }
        if let Some(p) = a.primitive() {
            nodes += 1;
            assert_ne!(p.name(), "Copy");
        }
        stack.extend(a.inputs());
    }
    assert!(nodes > 3, "walked the lazy graph ({nodes} nodes)");
    let (v, dx) = value_and_grad(f, &[0])(std::slice::from_ref(&x)).unwrap();
    assert_close("value", &out[0], &v[0], 1e-6);
    assert_close("grad", &out[1], &dx[0], 1e-6);
}

#[test]
fn outputs_may_be_inputs_or_constants() {
    let _g = shared();
    let c = Array::from_slice(&[5.0f32], &[1]).unwrap();
    let cc = c.clone();
    let f = compile(move |x: &[Array]| Ok(vec![x[0].clone(), cc.clone(), ops::add(&x[0], &cc)?]));
    let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
    let y = f(std::slice::from_ref(&x)).unwrap();
    assert_eq!(y[0].id(), x.id());
    assert_eq!(y[1].to_vec::<f32>().unwrap(), vec![5.0]);
    assert_eq!(y[2].to_vec::<f32>().unwrap(), vec![6.0]);
}

// ---------------------------------------------------------------- nesting

#[test]
fn grad_and_vmap_of_compiled_check_by_finite_differences() {
    let _g = shared();
    let mut rng = Rng::new(3);
    let cf = Rc::new(Compiled::new(
        |x: &[Array]| {
            let h = ops::tanh(&ops::matmul(&x[0], &x[1])?)?;
            Ok(vec![ops::sum(&ops::multiply(&ops::softmax(&h, -1, true)?, &h)?, -1, false)?])
        },
        CompileOptions::default(),
    ));
    let xs = [rng.array(&[2, 3], -1.0, 1.0), rng.array(&[3, 4], -1.0, 1.0)];
    let c1 = cf.clone();
    common::check_grad("compiled", move |x| Ok(c1.call(x)?[0].clone()), &xs);
    // grad of grad through a compiled function
    let c2 = cf.clone();
    let inner = move |x: &[Array]| Ok(vec![ops::sum(&c2.call(x)?[0], None::<i32>, false)?]);
    let g = grad(inner, &[0]);
    let gg = grad(move |x: &[Array]| Ok(vec![ops::sum(&ops::square(&g(x)?[0])?, None::<i32>, false)?]), &[1]);
    assert_eq!(gg(&xs).unwrap()[0].shape(), &[3, 4]);
    // vjp with a cotangent
    let c3 = cf.clone();
    let (_, gs) = vjp(move |x: &[Array]| c3.call(x), &xs, &[rng.array(&[2], -1.0, 1.0)]).unwrap();
    assert_eq!(gs[1].shape(), &[3, 4]);
    // vmap of compiled against a loop
    let c4 = cf.clone();
    let xb = rng.array(&[5, 2, 3], -1.0, 1.0);
    let vm = vmap(move |x: &[Array]| c4.call(x), &[Some(0), None], &[0])(&[xb.clone(), xs[1].clone()]).unwrap();
    for b in 0..5 {
        let xi = common::take_host(&xb, 0, b);
        let yi = cf.call(&[xi, xs[1].clone()]).unwrap();
        let row = common::take_host(&vm[0], 0, b);
        assert_close(&format!("vmap row {b}"), &row, &yi[0], 1e-6);
    }
}

#[test]
fn compiled_inside_compiled() {
    let _g = shared();
    let inner = Rc::new(Compiled::new(|x: &[Array]| Ok(vec![ops::exp(&x[0])?]), CompileOptions::default()));
    let i2 = inner.clone();
    let outer = compile(move |x: &[Array]| Ok(vec![ops::add(&i2.call(x)?[0], 1.0)?]));
    let x = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
    let y = outer(std::slice::from_ref(&x)).unwrap();
    assert_close("nested", &y[0], &ops::add(&ops::exp(&x).unwrap(), 1.0).unwrap(), 0.0);
    assert_eq!(inner.trace_count(), 1);
}

// ---------------------------------------------------------------- state

struct Mlp {
    sizes: Vec<usize>,
}

impl Mlp {
    fn init(&self, rng: &mut Rng) -> Tree {
        let mut layers = Vec::new();
        for w in self.sizes.windows(2) {
            let mut m = BTreeMap::new();
            let scale = 1.0 / (w[0] as f64).sqrt();
            m.insert(
                "weight".to_string(),
                Tree::Leaf(ops::astype(&rng.array(&[w[0], w[1]], -scale, scale), Dtype::F32).unwrap()),
            );
            m.insert("bias".to_string(), Tree::Leaf(ops::zeros(&[w[1]], Dtype::F32).unwrap()));
            layers.push(Tree::Map(m));
        }
        let mut root = BTreeMap::new();
        root.insert("layers".to_string(), Tree::List(layers));
        Tree::Map(root)
    }

    fn loss(params: &Tree, x: &Array, y: &Array) -> Result<Array> {
        let Some(Tree::List(layers)) = params.get("layers") else { panic!("layers") };
        let mut h = x.clone();
        for (i, l) in layers.iter().enumerate() {
            let (w, b) = (l.array("weight").unwrap(), l.array("bias").unwrap());
            h = ops::add(&ops::matmul(&h, w)?, b)?;
            if i + 1 < layers.len() {
                h = ops::maximum(&h, 0.0)?;
            }
        }
        let lse = ops::logsumexp(&h, -1, true)?;
        let logp = ops::subtract(&h, &lse)?;
        ops::negative(&ops::mean(&ops::sum(&ops::multiply(&logp, y)?, -1, false)?, None::<i32>, false)?)
    }

    /// One SGD step on `params` (in place); returns the loss.
    fn step(params: &mut Tree, x: &Array, y: &Array, lr: f32) -> Result<Array> {
        let vg = kiln_core::value_and_grad_tree(|p: &Tree| Mlp::loss(p, x, y));
        let (loss, grads) = vg(params)?;
        let flat_g = kiln_core::tree_flatten(&grads);
        let new: Vec<(String, Array)> = kiln_core::tree_flatten(params)
            .into_iter()
            .zip(flat_g)
            .map(|((k, p), (_, g))| -> Result<(String, Array)> { Ok((k, ops::subtract(&p, &ops::multiply(&g, lr)?)?)) })
            .collect::<Result<_>>()?;
        *params = kiln_core::tree_unflatten(new)?;
        Ok(loss)
    }
}

#[test]
fn training_step_with_state_matches_uncompiled() {
    let _g = shared();
    let mut rng = Rng::new(11);
    let mlp = Mlp { sizes: vec![8, 16, 4] };
    let init = mlp.init(&mut rng);
    let batches: Vec<(Array, Array)> = (0..4)
        .map(|_| {
            let x = rand32(&mut rng, &[6, 8]);
            let labels: Vec<f32> = (0..24).map(|i| if i % 4 == (i / 4) % 3 { 1.0 } else { 0.0 }).collect();
            (x, Array::from_slice(&labels, &[6, 4]).unwrap())
        })
        .collect();
    // Uncompiled reference
    let mut params = init.clone();
    let mut want = Vec::new();
    for s in 0..20 {
        let (x, y) = &batches[s % 4];
        let l = Mlp::step(&mut params, x, y, 0.5).unwrap();
        want.push(l.item::<f32>().unwrap());
    }
    // The whole step compiled as one function with the parameters as state.
    let state = State::new(init);
    let cstep = Compiled::with_state(
        |xs: &[Array], p: &mut Tree| Ok(vec![Mlp::step(p, &xs[0], &xs[1], 0.5)?]),
        &state,
        CompileOptions::default(),
    );
    let mut got = Vec::new();
    for s in 0..20 {
        let (x, y) = &batches[s % 4];
        let l = cstep.call(&[x.clone(), y.clone()]).unwrap();
        state.eval().unwrap();
        got.push(l[0].item::<f32>().unwrap());
    }
    assert_eq!(cstep.trace_count(), 1);
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "step {s}: compiled loss {g}, uncompiled {w}");
    }
    assert!(got[19] < got[0], "the loss decreases: {got:?}");
    // Final parameters agree too.
    for ((k, a), (_, b)) in kiln_core::tree_flatten(&state.get()).iter().zip(kiln_core::tree_flatten(&params)) {
        assert_close(k, a, &b, 1e-5);
    }
    // The closure wrapper.
    let acc = State::from_arrays(vec![Array::scalar(0.0f32)]);
    let f = compile_with_state(
        |x: &[Array], s: &mut Tree| {
            let Tree::List(l) = s else { panic!("list") };
            let Tree::Leaf(a) = &l[0] else { panic!("leaf") };
            let next = ops::add(a, &x[0])?;
            l[0] = Tree::Leaf(next.clone());
            Ok(vec![next])
        },
        &acc,
    );
    for i in 1..=5 {
        let y = f(&[Array::scalar(i as f32)]).unwrap();
        assert_eq!(y[0].item::<f32>().unwrap(), (i * (i + 1) / 2) as f32);
    }
    assert_eq!(acc.arrays()[0].item::<f32>().unwrap(), 15.0);
}

// ---------------------------------------------------------------- errors and switches

#[test]
fn errors_are_reported() {
    let _g = shared();
    // eval inside a compiled function
    let f = compile(|x: &[Array]| {
        let s = ops::sum(&x[0], None::<i32>, false)?;
        let v = s.item::<f32>()?;
        Ok(vec![ops::multiply(&x[0], v)?])
    });
    let e = f(&[ops::ones(&[2], Dtype::F32).unwrap()]).unwrap_err();
    assert_eq!(e.op(), "compile");
    assert!(e.message().contains("Cannot evaluate"), "{e}");
    // Shapeless with an op that fixes a shape
    let g = compile_shapeless(|x: &[Array]| Ok(vec![ops::broadcast_to(&x[0], &[3, 2])?]));
    let e = g(&[ops::ones(&[2], Dtype::F32).unwrap()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("Broadcast") && e.message().contains("shapeless"), "{e}");
    // A general reshape traced shapeless replays only on its traced shape.
    let cf = Compiled::new(
        |x: &[Array]| Ok(vec![ops::reshape(&x[0], &[-1])?]),
        CompileOptions { shapeless: true, ..Default::default() },
    );
    let e = cf.call(&[ops::ones(&[2, 3], Dtype::F32).unwrap()]).unwrap_err();
    assert!(e.message().contains("Reshape"), "{e}");
    // Errors of the function pass through, and a failed trace does not poison the cache.
    let h = Compiled::new(|x: &[Array]| Ok(vec![ops::matmul(&x[0], &x[1])?]), CompileOptions::default());
    let a = ops::ones(&[2, 3], Dtype::F32).unwrap();
    let e = h.call(&[a.clone(), a.clone()]).unwrap_err();
    assert!(e.to_string().contains("matmul"), "{e}");
    assert_eq!(h.cache_len(), 0);
    let b = ops::ones(&[3, 2], Dtype::F32).unwrap();
    assert_eq!(h.call(&[a, b]).unwrap()[0].to_vec::<f32>().unwrap(), vec![3.0; 4]);
}

#[test]
fn disable_compile_calls_the_function() {
    let _w = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    let cf = Compiled::new(|x: &[Array]| Ok(vec![ops::exp(&x[0])?]), CompileOptions::default());
    let x = Array::from_slice(&[0.0f32], &[1]).unwrap();
    disable_compile();
    assert!(!kiln_core::transforms::is_compile_enabled());
    assert_eq!(cf.call(std::slice::from_ref(&x)).unwrap()[0].to_vec::<f32>().unwrap(), vec![1.0]);
    assert_eq!(cf.trace_count(), 0);
    enable_compile();
    assert_eq!(cf.call(std::slice::from_ref(&x)).unwrap()[0].to_vec::<f32>().unwrap(), vec![1.0]);
    assert_eq!(cf.trace_count(), 1);
}
