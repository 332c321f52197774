//! `compile`: trace a function once per input signature, simplify the traced
//! graph, and replay it on later calls.
//!
//! A compiled function is traced by calling it on placeholder arrays (arrays
//! with a shape and dtype but no data and no primitive). The graph it records
//! is turned into a *tape*: a list of primitive applications over the inputs,
//! constants (arrays captured by closure or created inside the function
//! without depending on the inputs) and earlier tape entries. The tape is
//! simplified once per trace:
//!
//! * equal scalar constants (same dtype and bits) are merged;
//! * `Copy` nodes (transform boundaries left by `grad` traced inside) are removed;
//! * common subexpressions (same primitive, [`Primitive::is_equivalent`], same
//!   inputs) are merged;
//! * nodes not reachable from the outputs are dropped;
//!
//! and then cached under a key made of the inputs' shapes and dtypes (in
//! shapeless mode only their dtypes and number of dimensions) and the layout
//! of the captured state. The cache is a bounded LRU (unlike MLX's, which
//! never evicts).
//!
//! Each call *replays* the tape over the real inputs: it records new lazy
//! nodes with the same primitives, exactly the nodes the uncompiled function
//! would have recorded minus the ones simplification removed, so results are
//! identical. Because replayed nodes are ordinary graph nodes, transforms
//! compose: `grad`/`vjp`/`jvp`/`vmap` of a compiled function differentiate or
//! batch the replayed nodes through their own rules, and compiling a `grad`
//! simply traces the larger graph that `grad` records.
//!
//! Captured state (model parameters, optimizer state: MLX's `inputs=` and
//! `outputs=`) is a [`State`]: a shared [`Tree`] that is passed to the function
//! as extra traced inputs and that the function may update in place; the
//! updated leaves become extra outputs and are written back after each call.
//!
//! ```
//! use kiln_core::{compile, ops, Array};
//! let f = compile(|x: &[Array]| Ok(vec![ops::exp(&(&x[0] * 2.0))?]));
//! let x = Array::from_slice(&[0.0f32, 0.5], &[2]).unwrap();
//! let y = f(&[x.clone()]).unwrap(); // traced on this shape, then replayed
//! let z = f(&[x]).unwrap(); // cache hit: replayed only
//! assert_eq!(y[0].to_vec::<f32>().unwrap(), z[0].to_vec::<f32>().unwrap());
//! ```

use super::tree::{tree_flatten, tree_unflatten, Tree};
use super::Copy;
use crate::array::{tracing, Array};
use crate::dtype::{Dtype, Scalar};
use crate::error::{fmt_shape, Error, ErrorKind, Result};
use crate::primitive::Primitive;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

// ---------------------------------------------------------------------------
// Global switch

/// 0: not yet read from the environment, 1: enabled, 2: disabled.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Turns compilation off globally: compiled functions then call the original
/// function directly (as MLX's `disable_compile`). The environment variable
/// `KILN_DISABLE_COMPILE` (any value but `0`) sets the initial state.
pub fn disable_compile() {
    ENABLED.store(2, Ordering::SeqCst);
}

/// Turns compilation back on (as MLX's `enable_compile`).
pub fn enable_compile() {
    ENABLED.store(1, Ordering::SeqCst);
}

/// Whether compiled functions trace and replay (see [`disable_compile`]).
pub fn is_compile_enabled() -> bool {
    match ENABLED.load(Ordering::SeqCst) {
        1 => true,
        2 => false,
        _ => {
            let off = std::env::var("KILN_DISABLE_COMPILE").is_ok_and(|v| v != "0" && !v.is_empty());
            let _ = ENABLED.compare_exchange(0, if off { 2 } else { 1 }, Ordering::SeqCst, Ordering::SeqCst);
            ENABLED.load(Ordering::SeqCst) == 1
        }
    }
}

// ---------------------------------------------------------------------------
// Options and state

/// How a function is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Key the cache by dtype and number of dimensions only, and recompute
    /// every node's shape on replay, so new sizes do not retrace.
    pub shapeless: bool,
    /// Most traces kept (least recently used ones are evicted); at least 1.
    pub cache_capacity: usize,
    /// Run the simplification passes (scalar merge, CSE, dead-node removal).
    pub simplify: bool,
    /// Fuse chains of elementwise ops into single kernels.
    pub fuse: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { shapeless: false, cache_capacity: 64, simplify: true, fuse: true }
    }
}

/// Captured state of a compiled function (MLX's `inputs=`/`outputs=`): a
/// shared, updatable [`Tree`] of arrays such as model parameters and
/// optimizer state. Clones share the same tree.
#[derive(Clone, Debug)]
pub struct State(Arc<Mutex<Tree>>);

impl State {
    /// State holding `tree`.
    pub fn new(tree: Tree) -> State {
        State(Arc::new(Mutex::new(tree)))
    }
    /// State holding a list of arrays (keys `0`, `1`, …).
    pub fn from_arrays(arrays: Vec<Array>) -> State {
        State::new(Tree::List(arrays.into_iter().map(Tree::Leaf).collect()))
    }
    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The current tree.
    pub fn get(&self) -> Tree {
        self.lock().clone()
    }
    /// Replaces the tree.
    pub fn set(&self, tree: Tree) {
        *self.lock() = tree;
    }
    /// The leaves in [`tree_flatten`] order.
    pub fn arrays(&self) -> Vec<Array> {
        tree_flatten(&self.lock()).into_iter().map(|(_, a)| a).collect()
    }
    /// Evaluates every leaf (so the graph behind updated state is released).
    pub fn eval(&self) -> Result<()> {
        let arrays = self.arrays();
        crate::eval::eval(&arrays.iter().collect::<Vec<_>>())
    }
}

// ---------------------------------------------------------------------------
// The tape

/// Where a tape value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Src {
    /// The i-th traced input (arguments, then state leaves).
    Input(usize),
    /// A constant array held by the tape.
    Const(usize),
    /// Output `.1` of tape node `.0`.
    Node(usize, usize),
}

struct TapeNode {
    prim: Arc<dyn Primitive>,
    inputs: Vec<Src>,
    /// Shape and dtype of each output at trace time.
    outs: Vec<(Vec<usize>, Dtype)>,
    /// Input shapes at trace time (shapeless replay of Reshape).
    in_shapes: Vec<Vec<usize>>,
    /// Recorded as a multi-output primitive (siblings).
    multi: bool,
}

struct Tape {
    nodes: Vec<TapeNode>,
    consts: Vec<Array>,
    outputs: Vec<Src>,
}

/// Converts the graph between `inputs` and `outputs` into a tape. Nodes that
/// do not depend on any input, and evaluated arrays, become constants.
fn extract(inputs: &[Array], outputs: &[Array]) -> Tape {
    let mut memo: HashMap<usize, Src> = inputs.iter().enumerate().map(|(i, a)| (a.id(), Src::Input(i))).collect();
    // Expression address -> tape node index (multi-output primitives appear once).
    let mut expr_node: HashMap<usize, usize> = HashMap::new();
    let mut const_ids: HashMap<usize, usize> = HashMap::new();
    let mut tape = Tape { nodes: Vec::new(), consts: Vec::new(), outputs: Vec::new() };
    let mut add_const = |a: &Array, tape: &mut Tape| -> Src {
        let k = *const_ids.entry(a.id()).or_insert_with(|| {
            tape.consts.push(a.clone());
            tape.consts.len() - 1
        });
        Src::Const(k)
    };
    let mut stack: Vec<(Array, bool)> = outputs.iter().rev().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        let id = a.id();
        if memo.contains_key(&id) {
            continue;
        }
        let expr = if a.is_evaluated() { None } else { a.expr() };
        let Some((expr, pos)) = expr else {
            let s = add_const(&a, &mut tape);
            memo.insert(id, s);
            continue;
        };
        if !expanded {
            stack.push((a.clone(), true));
            for i in expr.inputs.iter().rev() {
                if !memo.contains_key(&i.id()) {
                    stack.push((i.clone(), false));
                }
            }
            continue;
        }
        let srcs: Vec<Src> = expr.inputs.iter().map(|i| memo[&i.id()]).collect();
        if expr.prim.as_any().is::<Copy>() && srcs.len() == 1 {
            memo.insert(id, srcs[0]);
            continue;
        }
        if srcs.iter().all(|s| matches!(s, Src::Const(_))) {
            let s = add_const(&a, &mut tape);
            memo.insert(id, s);
            continue;
        }
        let key = Arc::as_ptr(&expr) as *const u8 as usize;
        let idx = match expr_node.get(&key) {
            Some(&k) => k,
            None => {
                let multi = expr.siblings.get().is_some();
                let outs = if multi { expr.metas.clone() } else { vec![(a.shape().to_vec(), a.dtype())] };
                tape.nodes.push(TapeNode {
                    prim: expr.prim.clone(),
                    inputs: srcs,
                    outs,
                    in_shapes: expr.inputs.iter().map(|i| i.shape().to_vec()).collect(),
                    multi,
                });
                expr_node.insert(key, tape.nodes.len() - 1);
                tape.nodes.len() - 1
            }
        };
        memo.insert(id, Src::Node(idx, pos));
    }
    tape.outputs = outputs.iter().map(|o| memo[&o.id()]).collect();
    tape
}

/// Bits of an evaluated 0-d constant, for merging equal scalars.
fn scalar_bits(a: &Array) -> Option<(Dtype, u8, u64, u64)> {
    if a.ndim() != 0 || !a.is_evaluated() {
        return None;
    }
    let s = a.item_scalar().ok()?;
    let (tag, x, y) = match s {
        Scalar::Bool(b) => (0, b as u64, 0),
        Scalar::Int(i) => (1, i as u64, 0),
        Scalar::UInt(u) => (2, u, 0),
        Scalar::Float(f) => (3, f.to_bits(), 0),
        Scalar::Complex(r, i) => (4, r.to_bits(), i.to_bits()),
    };
    Some((a.dtype(), tag, x, y))
}

/// Scalar merge, common-subexpression elimination and dead-node removal.
fn simplify(tape: Tape) -> Tape {
    let Tape { nodes, consts, outputs } = tape;
    // Equal scalar constants share one slot.
    let mut const_map: Vec<usize> = (0..consts.len()).collect();
    let mut seen: HashMap<(Dtype, u8, u64, u64), usize> = HashMap::new();
    for (i, c) in consts.iter().enumerate() {
        if let Some(b) = scalar_bits(c) {
            const_map[i] = *seen.entry(b).or_insert(i);
        }
    }
    // CSE in topological order: inputs are already canonical when a node is visited.
    let mut node_map: Vec<usize> = Vec::with_capacity(nodes.len());
    let mut buckets: HashMap<(std::any::TypeId, Vec<Src>), Vec<usize>> = HashMap::new();
    let canon = |s: Src, node_map: &[usize]| match s {
        Src::Const(k) => Src::Const(const_map[k]),
        Src::Node(n, p) => Src::Node(node_map[n], p),
        s => s,
    };
    let mut kept: Vec<Option<TapeNode>> = Vec::with_capacity(nodes.len());
    for (i, mut n) in nodes.into_iter().enumerate() {
        n.inputs = n.inputs.iter().map(|&s| canon(s, &node_map)).collect();
        let key = (n.prim.as_any().type_id(), n.inputs.clone());
        let bucket = buckets.entry(key).or_default();
        let same = bucket.iter().copied().find(|&j| {
            let m = kept[j].as_ref().expect("bucket entries are kept");
            m.outs == n.outs && m.multi == n.multi && m.prim.is_equivalent(n.prim.as_ref())
        });
        match same {
            Some(j) => {
                node_map.push(j);
                kept.push(None);
            }
            None => {
                bucket.push(i);
                node_map.push(i);
                kept.push(Some(n));
            }
        }
    }
    let outputs: Vec<Src> = outputs.iter().map(|&s| canon(s, &node_map)).collect();
    prune(kept, consts, outputs)
}

/// Drops nodes and constants not reachable from `outputs` and renumbers.
fn prune(nodes: Vec<Option<TapeNode>>, consts: Vec<Array>, outputs: Vec<Src>) -> Tape {
    let mut live = vec![false; nodes.len()];
    let mut live_const = vec![false; consts.len()];
    let mark = |s: &Src, live: &mut Vec<bool>, live_const: &mut Vec<bool>| match *s {
        Src::Node(n, _) => live[n] = true,
        Src::Const(k) => live_const[k] = true,
        Src::Input(_) => {}
    };
    for s in &outputs {
        mark(s, &mut live, &mut live_const);
    }
    for (i, n) in nodes.iter().enumerate().rev() {
        if live[i] {
            for s in &n.as_ref().expect("live nodes are kept").inputs {
                mark(s, &mut live, &mut live_const);
            }
        }
    }
    let mut new_const = vec![usize::MAX; consts.len()];
    let mut kept_consts = Vec::new();
    for (i, c) in consts.into_iter().enumerate() {
        if live_const[i] {
            new_const[i] = kept_consts.len();
            kept_consts.push(c);
        }
    }
    let mut new_node = vec![usize::MAX; nodes.len()];
    let mut kept_nodes = Vec::new();
    let remap = |s: Src, new_node: &[usize]| match s {
        Src::Const(k) => Src::Const(new_const[k]),
        Src::Node(n, p) => Src::Node(new_node[n], p),
        s => s,
    };
    for (i, n) in nodes.into_iter().enumerate() {
        if !live[i] {
            continue;
        }
        let mut n = n.expect("live nodes are kept");
        n.inputs = n.inputs.iter().map(|&s| remap(s, &new_node)).collect();
        new_node[i] = kept_nodes.len();
        kept_nodes.push(n);
    }
    let outputs = outputs.iter().map(|&s| remap(s, &new_node)).collect();
    Tape { nodes: kept_nodes, consts: kept_consts, outputs }
}

fn is_reshape(p: &dyn Primitive) -> bool {
    p.as_any().is::<crate::ops::shape::Reshape>()
}

/// Output shape of a Reshape replayed on a new input shape, valid when the
/// traced reshape only inserted or removed size-1 dimensions (a squeeze or
/// expand_dims, as `keepdims=false` reductions record).
fn reshape_shapeless(traced_in: &[usize], traced_out: &[usize], new_in: &[usize]) -> Result<Vec<usize>> {
    let fail = |why: &str| {
        Error::unsupported(
            "compile",
            format!(
                "Shapeless compile cannot replay Reshape from {} to {} on an input of shape {}: {why} Compile without shapeless, or keep the reshape outside the compiled function.",
                fmt_shape(traced_in),
                fmt_shape(traced_out),
                fmt_shape(new_in)
            ),
        )
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(traced_out.len());
    while i < traced_in.len() || j < traced_out.len() {
        if i < traced_in.len() && j < traced_out.len() && traced_in[i] == traced_out[j] {
            if traced_in[i] == 1 && new_in[i] != 1 {
                return Err(fail("a size-1 dimension of the traced shape is ambiguous."));
            }
            out.push(new_in[i]);
            i += 1;
            j += 1;
        } else if j < traced_out.len() && traced_out[j] == 1 {
            out.push(1);
            j += 1;
        } else if i < traced_in.len() && traced_in[i] == 1 {
            if new_in[i] != 1 {
                return Err(fail("a removed size-1 dimension is no longer 1."));
            }
            i += 1;
        } else {
            return Err(fail("the shape it reshapes to is fixed."));
        }
    }
    Ok(out)
}

/// Replays `tape` over `inputs`. With `shapeless`, output shapes are
/// recomputed from the new input shapes instead of taken from the trace.
fn replay(tape: &Tape, inputs: &[Array], shapeless: bool) -> Result<Vec<Array>> {
    let mut vals: Vec<Vec<Array>> = Vec::with_capacity(tape.nodes.len());
    let get = |s: &Src, vals: &[Vec<Array>]| -> Array {
        match *s {
            Src::Input(i) => inputs[i].clone(),
            Src::Const(k) => tape.consts[k].clone(),
            Src::Node(n, p) => vals[n][p].clone(),
        }
    };
    for n in &tape.nodes {
        let ins: Vec<Array> = n.inputs.iter().map(|s| get(s, &vals)).collect();
        let unchanged = !shapeless || ins.iter().zip(&n.in_shapes).all(|(a, s)| a.shape() == s.as_slice());
        let outs: Vec<(Vec<usize>, Dtype)> = if unchanged {
            n.outs.clone()
        } else if is_reshape(n.prim.as_ref()) {
            // Reshape bakes its target shape into the primitive: record a new one.
            let shape = reshape_shapeless(&n.in_shapes[0], &n.outs[0].0, ins[0].shape())?;
            vals.push(vec![crate::ops::reshape_to(&ins[0], &shape)?]);
            continue;
        } else {
            let shapes = n.prim.output_shapes(&ins)?;
            shapes.into_iter().zip(&n.outs).map(|(s, (_, d))| (s, *d)).collect()
        };
        let arrays = if n.multi {
            Array::from_op_multi(outs, n.prim.clone(), ins)
        } else {
            let (shape, dtype) = outs.into_iter().next().expect("one output");
            vec![Array::from_op_arc(shape, dtype, n.prim.clone(), ins)]
        };
        vals.push(arrays);
    }
    Ok(tape.outputs.iter().map(|s| get(s, &vals)).collect())
}

/// Checks at trace time that every node can recompute its output shapes.
fn check_shapeless(tape: &Tape, inputs: &[Array]) -> Result<()> {
    let mut vals: Vec<Vec<Array>> = Vec::with_capacity(tape.nodes.len());
    for n in &tape.nodes {
        let ins: Vec<Array> = n
            .inputs
            .iter()
            .map(|s| match *s {
                Src::Input(i) => inputs[i].clone(),
                Src::Const(k) => tape.consts[k].clone(),
                Src::Node(k, p) => vals[k][p].clone(),
            })
            .collect();
        if is_reshape(n.prim.as_ref()) {
            reshape_shapeless(&n.in_shapes[0], &n.outs[0].0, &n.in_shapes[0])?;
        } else {
            let shapes = n.prim.output_shapes(&ins).map_err(|e| {
                Error::unsupported(
                    "compile",
                    format!(
                        "Shapeless compile cannot infer the output shapes of {} (its parameters fix a shape): {} Compile without shapeless instead.",
                        n.prim.name(),
                        e.message()
                    ),
                )
            })?;
            let traced: Vec<&Vec<usize>> = n.outs.iter().map(|(s, _)| s).collect();
            if shapes.iter().collect::<Vec<_>>() != traced {
                return Err(Error::runtime(
                    "compile",
                    format!("{}::output_shapes disagrees with the shapes it was recorded with.", n.prim.name()),
                ));
            }
        }
        // Placeholders stand in for the node's outputs: only shapes matter here.
        vals.push(n.outs.iter().map(|(s, d)| Array::placeholder(s.clone(), *d)).collect());
    }
    Ok(())
}

/// Elementwise chains of the traced graph become single `Fused` kernels.
fn fuse_graph(outputs: &[Array]) -> Vec<Array> {
    crate::ops::fused::fuse_graph(outputs)
}

// ---------------------------------------------------------------------------
// The cache

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Key {
    /// Dtype and shape of every input (zeros of the same length in shapeless mode).
    sig: Vec<(Dtype, Vec<usize>)>,
    /// Keys of the state leaves.
    state_keys: Vec<String>,
}

struct Entry {
    /// The simplified tape (used when replaying under another transform).
    plain: Tape,
    /// The simplified and fused tape, when fusion changed anything.
    fused: Option<Tape>,
    /// Outputs of the function proper (the rest are state leaves).
    n_outputs: usize,
    /// Keys of the state leaves the function returned.
    state_out_keys: Vec<String>,
}

struct Lru {
    map: HashMap<Key, (Arc<Entry>, u64)>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, k: &Key) -> Option<Arc<Entry>> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(k).map(|(e, last)| {
            *last = t;
            e.clone()
        })
    }
    fn insert(&mut self, k: Key, e: Arc<Entry>, cap: usize) {
        self.tick += 1;
        self.map.insert(k, (e, self.tick));
        while self.map.len() > cap.max(1) {
            let oldest = self.map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.map.remove(&k),
                None => break,
            };
        }
    }
}

type TracedFn = dyn Fn(&[Array], &mut Tree) -> Result<Vec<Array>>;

/// A compiled function with its trace cache. [`compile`], [`compile_shapeless`]
/// and [`compile_with_state`] wrap one in a closure; use it directly to set
/// [`CompileOptions`] or to inspect the cache.
///
/// ```
/// use kiln_core::{ops, Array};
/// use kiln_core::transforms::{CompileOptions, Compiled};
/// let opts = CompileOptions { shapeless: true, ..Default::default() };
/// let f = Compiled::new(|x: &[Array]| Ok(vec![ops::sum(&ops::square(&x[0])?, -1, false)?]), opts);
/// for n in 1..5 {
///     let x = ops::ones(&[3, n], kiln_core::Dtype::F32).unwrap();
///     assert_eq!(f.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![n as f32; 3]);
/// }
/// assert_eq!(f.trace_count(), 1); // new sizes did not retrace
/// ```
pub struct Compiled {
    f: Box<TracedFn>,
    state: Option<State>,
    opts: CompileOptions,
    cache: Mutex<Lru>,
    traces: AtomicUsize,
    /// Trace in progress (a function that calls itself runs uncompiled).
    busy: AtomicBool,
}

impl Compiled {
    /// Compiles `f` with `opts`.
    pub fn new<F>(f: F, opts: CompileOptions) -> Compiled
    where
        F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
    {
        Compiled::build(Box::new(move |x: &[Array], _: &mut Tree| f(x)), None, opts)
    }

    /// Compiles `f`, which also reads and updates `state` (see [`compile_with_state`]).
    pub fn with_state<F>(f: F, state: &State, opts: CompileOptions) -> Compiled
    where
        F: Fn(&[Array], &mut Tree) -> Result<Vec<Array>> + 'static,
    {
        Compiled::build(Box::new(f), Some(state.clone()), opts)
    }

    fn build(f: Box<TracedFn>, state: Option<State>, opts: CompileOptions) -> Compiled {
        Compiled {
            f,
            state,
            opts,
            cache: Mutex::new(Lru { map: HashMap::new(), tick: 0 }),
            traces: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
        }
    }

    /// How many times the function has been traced.
    pub fn trace_count(&self) -> usize {
        self.traces.load(Ordering::SeqCst)
    }

    /// Number of cached traces.
    pub fn cache_len(&self) -> usize {
        self.lock_cache().map.len()
    }

    /// Drops every cached trace.
    pub fn clear_cache(&self) {
        self.lock_cache().map.clear();
    }

    fn lock_cache(&self) -> MutexGuard<'_, Lru> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls the compiled function: traces on a cache miss, then replays.
    pub fn call(&self, args: &[Array]) -> Result<Vec<Array>> {
        let state_tree = self.state.as_ref().map(State::get).unwrap_or_else(|| Tree::Map(BTreeMap::new()));
        if !is_compile_enabled() || self.busy.load(Ordering::SeqCst) {
            return self.call_uncompiled(args, state_tree);
        }
        let flat = tree_flatten(&state_tree);
        let state_keys: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
        let mut inputs: Vec<Array> = args.to_vec();
        inputs.extend(flat.into_iter().map(|(_, a)| a));
        let sig = inputs
            .iter()
            .map(|a| (a.dtype(), if self.opts.shapeless { vec![0; a.ndim()] } else { a.shape().to_vec() }))
            .collect();
        let key = Key { sig, state_keys };
        let cached = self.lock_cache().get(&key);
        let entry = match cached {
            Some(e) => e,
            None => {
                let e = Arc::new(self.trace(&inputs, args.len(), &key.state_keys)?);
                self.lock_cache().insert(key, e.clone(), self.opts.cache_capacity);
                e
            }
        };
        // Under another transform (inputs are tracers), replay the unfused
        // tape: its nodes carry the vjp/jvp/vmap rules the transform needs.
        let under_transform = inputs.iter().any(Array::is_tracer);
        let tape = match (&entry.fused, under_transform) {
            (Some(t), false) => t,
            _ => &entry.plain,
        };
        let mut outs = replay(tape, &inputs, self.opts.shapeless)?;
        let state_out = outs.split_off(entry.n_outputs);
        if let Some(state) = &self.state {
            state.set(tree_unflatten(entry.state_out_keys.iter().cloned().zip(state_out))?);
        }
        Ok(outs)
    }

    fn call_uncompiled(&self, args: &[Array], mut tree: Tree) -> Result<Vec<Array>> {
        let outs = (self.f)(args, &mut tree)?;
        if let Some(state) = &self.state {
            state.set(tree);
        }
        Ok(outs)
    }

    fn trace(&self, inputs: &[Array], n_args: usize, state_keys: &[String]) -> Result<Entry> {
        struct Busy<'a>(&'a AtomicBool);
        impl Drop for Busy<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.busy.store(true, Ordering::SeqCst);
        let _busy = Busy(&self.busy);
        self.traces.fetch_add(1, Ordering::SeqCst);
        let (placeholders, outputs, n_outputs, state_out_keys) = tracing(|| -> Result<_> {
            let ph: Vec<Array> = inputs.iter().map(|a| Array::placeholder(a.shape().to_vec(), a.dtype())).collect();
            let mut tree = if self.state.is_some() {
                tree_unflatten(state_keys.iter().cloned().zip(ph[n_args..].iter().cloned()))?
            } else {
                Tree::Map(BTreeMap::new())
            };
            let mut outs = (self.f)(&ph[..n_args], &mut tree).map_err(explain_trace_error)?;
            let n_outputs = outs.len();
            let mut out_keys = Vec::new();
            if self.state.is_some() {
                for (k, a) in tree_flatten(&tree) {
                    out_keys.push(k);
                    outs.push(a);
                }
            }
            Ok((ph, outs, n_outputs, out_keys))
        })?;
        let mut plain = extract(&placeholders, &outputs);
        if self.opts.simplify {
            plain = simplify(plain);
        }
        if self.opts.shapeless {
            check_shapeless(&plain, &placeholders)?;
        }
        let fused = if self.opts.fuse { self.fuse(&plain, &placeholders) } else { None };
        Ok(Entry { plain, fused, n_outputs, state_out_keys })
    }

    /// The tape with elementwise chains fused, if fusion changed anything
    /// (and, in shapeless mode, if every fused node can recompute its shapes).
    fn fuse(&self, plain: &Tape, placeholders: &[Array]) -> Option<Tape> {
        let outs = tracing(|| replay(plain, placeholders, false)).ok()?;
        let fused_outs = fuse_graph(&outs);
        let same = fused_outs.iter().zip(&outs).all(|(a, b)| a.id() == b.id());
        if same {
            return None;
        }
        let t = extract(placeholders, &fused_outs);
        if self.opts.shapeless && check_shapeless(&t, placeholders).is_err() {
            return None;
        }
        Some(t)
    }
}

/// Makes "eval of a placeholder" errors raised while tracing say what happened.
fn explain_trace_error(e: Error) -> Error {
    if e.op() == "eval" && e.kind() == ErrorKind::Runtime && e.message().contains("placeholder") {
        return Error::invalid(
            "compile",
            "Cannot evaluate an array that depends on the inputs of a compiled function while it is traced \
             (eval, item, to_vec or printing inside a compiled function): the inputs are placeholders without data. \
             Return the array as an output instead.",
        );
    }
    e
}

/// Compiles `f`: the first call with a given set of input shapes and dtypes
/// traces `f` and simplifies the graph it records; later calls with the same
/// signature replay that graph (see the [module docs](self)). Results are
/// the same as calling `f`. Arrays `f` captures by closure are frozen into the
/// trace as constants; pass values that change as inputs, or as [`State`].
///
/// `grad`, `vjp`, `jvp` and `vmap` of a compiled function, and `compile` of
/// any of them, work as for the uncompiled function.
///
/// ```
/// use kiln_core::{compile, grad, ops, Array};
/// let f = |x: &[Array]| Ok(vec![ops::sum(&ops::sin(&x[0])?, None::<i32>, false)?]);
/// let df = compile(grad(f, &[0])); // a compiled gradient
/// let x = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
/// let g = df(&[x]).unwrap();
/// assert!((g[0].to_vec::<f32>().unwrap()[1] - 1f32.cos()).abs() < 1e-6);
/// ```
pub fn compile<F>(f: F) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let c = Compiled::new(f, CompileOptions::default());
    move |args: &[Array]| c.call(args)
}

/// Compiles `f` in shapeless mode: the cache is keyed by the inputs' dtypes
/// and numbers of dimensions only, and new sizes replay the same trace with
/// shapes recomputed by [`Primitive::output_shapes`]. Ops whose parameters
/// fix a shape (a general reshape, `broadcast_to`, slices) cannot be replayed
/// shapeless; the first call reports them.
///
/// ```
/// use kiln_core::{compile_shapeless, ops, Array};
/// let f = compile_shapeless(|x: &[Array]| Ok(vec![ops::exp(&x[0])?]));
/// let a = f(&[ops::zeros(&[2], kiln_core::Dtype::F32).unwrap()]).unwrap();
/// let b = f(&[ops::zeros(&[5], kiln_core::Dtype::F32).unwrap()]).unwrap();
/// assert_eq!((a[0].shape(), b[0].shape()), (&[2usize][..], &[5usize][..]));
/// ```
pub fn compile_shapeless<F>(f: F) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let c = Compiled::new(f, CompileOptions { shapeless: true, ..Default::default() });
    move |args: &[Array]| c.call(args)
}

/// Compiles `f`, which reads and updates captured `state` (MLX's `inputs=` and
/// `outputs=`): `f` receives the state tree with traced leaves and may replace
/// leaves (new parameters, optimizer moments); after every call the state is
/// set to the updated tree. A whole training step — forward, backward and
/// update — compiles as one function this way.
///
/// ```
/// use kiln_core::{compile_with_state, ops, Array, Tree};
/// use kiln_core::transforms::State;
/// let state = State::from_arrays(vec![Array::scalar(0.0f32)]);
/// let step = compile_with_state(
///     |x: &[Array], s: &mut Tree| {
///         let Tree::List(l) = s else { unreachable!() };
///         let Tree::Leaf(acc) = &l[0] else { unreachable!() };
///         let next = ops::add(acc, &x[0])?;
///         l[0] = Tree::Leaf(next.clone());
///         Ok(vec![next])
///     },
///     &state,
/// );
/// for _ in 0..3 {
///     step(&[Array::scalar(2.0f32)]).unwrap();
/// }
/// assert_eq!(state.arrays()[0].item::<f32>().unwrap(), 6.0);
/// ```
pub fn compile_with_state<F>(f: F, state: &State) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array], &mut Tree) -> Result<Vec<Array>> + 'static,
{
    let c = Compiled::with_state(f, state, CompileOptions::default());
    move |args: &[Array]| c.call(args)
}
