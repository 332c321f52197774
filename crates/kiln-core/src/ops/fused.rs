//! Kernel fusion: chains of elementwise ops evaluated by one kernel in one
//! pass over memory.
//!
//! [`fuse_graph`] walks the lazy graph behind some outputs, finds maximal
//! groups of elementwise nodes of one shape (unary, binary, comparison,
//! select and astype over f32/f16/bf16/f64/bool) whose interior results
//! nobody outside the group reads, and replaces each group of two or more
//! nodes by one [`Fused`] node holding a small [`FusedProgram`]. The CPU
//! kernel (`backend/cpu/fused.rs`) runs the program tile by tile, so the
//! intermediates stay in L1 instead of travelling through memory.
//!
//! Results are bit-identical to the unfused graph: every instruction uses
//! the same per-element function as the unfused kernel, and half-precision
//! results are rounded to their dtype after every instruction exactly as the
//! unfused chain rounds when it stores each op's output.
//!
//! Transforms of a fused node replay the original primitives (kept in the
//! program) on the inputs, so vjp, jvp and vmap are those of the unfused graph.

use crate::array::{Array, Data};
use crate::backend::{Backend, BinaryOp, UnaryOp};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive};
use std::collections::HashMap;
use std::sync::Arc;

/// What one fused instruction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedOp {
    /// An elementwise unary op (the `Unary` primitive).
    Unary(UnaryOp),
    /// An elementwise binary op (the `Binary` primitive); both arguments share a dtype.
    Binary(BinaryOp),
    /// `cond ? x : y` (the `Select` primitive).
    Select,
    /// A dtype conversion (the `AsType` primitive) to the instruction's dtype.
    Cast,
}

/// One instruction: `op` applied to registers `args`, giving a register of `dtype`.
#[derive(Clone)]
pub struct FusedInst {
    /// The operation.
    pub op: FusedOp,
    /// Argument registers (inputs are registers `0..n_inputs`, instruction
    /// `i` writes register `n_inputs + i`).
    pub args: Vec<usize>,
    /// Result dtype.
    pub dtype: Dtype,
    /// The original primitive, replayed by the transform rules.
    pub prim: Arc<dyn Primitive>,
}

impl std::fmt::Debug for FusedInst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}{:?} -> {}", self.op, self.args, self.dtype)
    }
}

impl PartialEq for FusedInst {
    fn eq(&self, o: &Self) -> bool {
        self.op == o.op && self.args == o.args && self.dtype == o.dtype && self.prim.is_equivalent(o.prim.as_ref())
    }
}

/// A fused elementwise program over inputs that broadcast to `shape`.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedProgram {
    /// Number of input registers (the fused node's inputs, in order).
    pub n_inputs: usize,
    /// The instructions, in dependency order.
    pub insts: Vec<FusedInst>,
    /// The registers the node outputs, in order (each an instruction result).
    pub outputs: Vec<usize>,
    /// The shape of every instruction result and output.
    pub shape: Vec<usize>,
}

impl FusedProgram {
    /// Dtype of register `r` given the input dtypes.
    pub fn reg_dtype(&self, r: usize, inputs: &[Dtype]) -> Dtype {
        if r < self.n_inputs {
            inputs[r]
        } else {
            self.insts[r - self.n_inputs].dtype
        }
    }

    /// Replays the original primitives on `inputs`; returns every register.
    /// `known` supplies arrays for registers already computed (the outputs).
    fn replay(&self, inputs: &[Array], known: &HashMap<usize, Array>) -> Vec<Array> {
        let mut regs: Vec<Array> = inputs.to_vec();
        for (i, inst) in self.insts.iter().enumerate() {
            let r = self.n_inputs + i;
            let a = match known.get(&r) {
                Some(a) => a.clone(),
                None => {
                    let args: Vec<Array> = inst.args.iter().map(|&k| regs[k].clone()).collect();
                    Array::from_op_arc(self.shape.clone(), inst.dtype, inst.prim.clone(), args)
                }
            };
            regs.push(a);
        }
        regs
    }
}

/// A group of elementwise ops evaluated by one kernel (see the module docs).
pub struct Fused {
    /// The program.
    pub program: Arc<FusedProgram>,
}

impl std::fmt::Debug for Fused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fused({:?})", self.program)
    }
}

impl Primitive for Fused {
    fn name(&self) -> &'static str {
        "Fused"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        backend.fused(&self.program, inputs, outputs)
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let p = &self.program;
        let known: HashMap<usize, Array> = p.outputs.iter().copied().zip(outputs.iter().cloned()).collect();
        let regs = p.replay(primals, &known);
        // Which registers depend on a differentiated input.
        let mut needs = vec![false; regs.len()];
        for &a in argnums {
            needs[a] = true;
        }
        for (i, inst) in p.insts.iter().enumerate() {
            needs[p.n_inputs + i] = inst.args.iter().any(|&a| needs[a]);
        }
        let mut cot: Vec<Option<Array>> = vec![None; regs.len()];
        for (&r, c) in p.outputs.iter().zip(cotangents) {
            cot[r] = Some(crate::ops::creation::astype(c, regs[r].dtype())?);
        }
        for (i, inst) in p.insts.iter().enumerate().rev() {
            let r = p.n_inputs + i;
            let Some(g) = cot[r].take() else { continue };
            let pos: Vec<usize> = (0..inst.args.len()).filter(|&k| needs[inst.args[k]]).collect();
            if pos.is_empty() {
                continue;
            }
            let args: Vec<Array> = inst.args.iter().map(|&k| regs[k].clone()).collect();
            let grads = inst.prim.vjp(&args, &[g], &pos, &[regs[r].clone()])?;
            for (&k, gk) in pos.iter().zip(grads) {
                let a = inst.args[k];
                cot[a] = Some(match cot[a].take() {
                    Some(prev) => crate::ops::add(&prev, &gk)?,
                    None => gk,
                });
            }
        }
        argnums
            .iter()
            .map(|&a| match cot[a].take() {
                Some(g) => crate::ops::creation::astype(&g, primals[a].dtype()),
                None => crate::ops::creation::zeros_like(&primals[a]),
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let p = &self.program;
        let regs = p.replay(primals, &HashMap::new());
        let mut tan: Vec<Option<Array>> = vec![None; regs.len()];
        for (&a, t) in argnums.iter().zip(tangents) {
            tan[a] = Some(t.clone());
        }
        for (i, inst) in p.insts.iter().enumerate() {
            let pos: Vec<usize> = (0..inst.args.len()).filter(|&k| tan[inst.args[k]].is_some()).collect();
            if pos.is_empty() {
                continue;
            }
            let ts: Vec<Array> = pos.iter().map(|&k| tan[inst.args[k]].clone().expect("filtered")).collect();
            let args: Vec<Array> = inst.args.iter().map(|&k| regs[k].clone()).collect();
            let mut out = inst.prim.jvp(&args, &ts, &pos)?;
            tan[p.n_inputs + i] = out.pop();
        }
        p.outputs
            .iter()
            .map(|&r| match tan[r].take() {
                Some(t) => Ok(t),
                None => crate::ops::creation::zeros_like(&regs[r]),
            })
            .collect()
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let p = &self.program;
        let mut regs: Vec<Array> = inputs.to_vec();
        let mut rax: Vec<Option<usize>> = axes.to_vec();
        for inst in &p.insts {
            let args: Vec<Array> = inst.args.iter().map(|&k| regs[k].clone()).collect();
            let ax: Vec<Option<usize>> = inst.args.iter().map(|&k| rax[k]).collect();
            let (mut o, mut oa) = if ax.iter().all(|a| a.is_none()) {
                let shape = p.shape.clone();
                (vec![Array::from_op_arc(shape, inst.dtype, inst.prim.clone(), args)], vec![None])
            } else {
                inst.prim.vmap(&args, &ax)?
            };
            regs.push(o.pop().ok_or_else(|| Error::runtime("Fused", "vmap rule gave no output"))?);
            rax.push(oa.pop().flatten());
        }
        Ok((p.outputs.iter().map(|&r| regs[r].clone()).collect(), p.outputs.iter().map(|&r| rax[r]).collect()))
    }
    fn is_equivalent(&self, other: &dyn Primitive) -> bool {
        other.as_any().downcast_ref::<Fused>().is_some_and(|o| o.program == self.program)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Dtypes the fused CPU kernel computes in.
fn fusable_dtype(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::Bool)
}

/// The fused instruction for `a`'s primitive, if the kernel supports it on
/// these dtypes.
fn fusable_op(a: &Array, prim: &Arc<dyn Primitive>, inputs: &[Array]) -> Option<FusedOp> {
    if !fusable_dtype(a.dtype()) || !inputs.iter().all(|i| fusable_dtype(i.dtype())) || a.size() == 0 {
        return None;
    }
    let any = prim.as_any();
    let op = if let Some(u) = any.downcast_ref::<super::unary::Unary>() {
        FusedOp::Unary(u.op)
    } else if let Some(b) = any.downcast_ref::<super::binary::Binary>() {
        FusedOp::Binary(b.op)
    } else if any.is::<super::compare::Select>() {
        FusedOp::Select
    } else if any.is::<super::creation::AsType>() {
        FusedOp::Cast
    } else {
        return None;
    };
    let d = inputs.first().map(|i| i.dtype())?;
    supported(op, d, a.dtype()).then_some(op)
}

/// Whether the fused kernel implements `op` on argument dtype `d` giving `out`.
pub fn supported(op: FusedOp, d: Dtype, out: Dtype) -> bool {
    use UnaryOp::*;
    let float = matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64);
    match op {
        FusedOp::Cast | FusedOp::Select => true,
        FusedOp::Unary(u) => match u {
            IsNan | IsInf | IsPosInf | IsNegInf | IsFinite | LogicalNot => out == Dtype::Bool,
            BitwiseInvert => d == Dtype::Bool,
            Abs | Sign | Square | Floor | Ceil | Round | Trunc | Conjugate | Real | Imag => true,
            _ => float && out == d,
        },
        FusedOp::Binary(b) => {
            use BinaryOp::*;
            match b {
                BitwiseAnd | BitwiseOr | BitwiseXor => d == Dtype::Bool,
                LeftShift | RightShift => false,
                Divide | LogAddExp | ArcTan2 => float,
                _ => true,
            }
        }
    }
}

/// Rebuilds the graph behind `outputs` with maximal groups of elementwise
/// nodes replaced by [`Fused`] nodes (see the module docs). Evaluated arrays
/// and non-elementwise nodes are kept (rebuilt with the same primitives where
/// an input changed); the returned arrays compute the same values.
///
/// Grouping: fusable nodes of one shape are merged along producer→consumer
/// edges, then groups of one shape that read a common input are merged too
/// (one pass over that input instead of two). A merge is made only when the
/// group stays convex — no path leaves it and comes back through a node
/// outside it (say a reduction) — so the graph of kernels stays acyclic.
/// A group may then recompute cheap elementwise values of other groups
/// instead of reading them (see `plan_remat`). Every member read outside its
/// group (and not recomputed there), or requested, becomes an output of the
/// fused node.
pub fn fuse_graph(outputs: &[Array]) -> Vec<Array> {
    let g = Graph::new(outputs);
    let n = g.order.len();

    // Fusable nodes, and a union-find over them.
    let fop: Vec<Option<FusedOp>> = g
        .order
        .iter()
        .map(|a| {
            if a.siblings().0.len() != 1 {
                return None;
            }
            let prim = a.primitive()?;
            fusable_op(a, &prim, &a.inputs())
        })
        .collect();
    let mut uf = Groups::new(n);
    let mut scratch = Walk::new(n);
    let same_shape = |x: usize, y: usize| g.order[x].shape() == g.order[y].shape();
    // Producer→consumer edges, from the outputs back (so a chain feeding a
    // requested value grows from it, and a value also read by, say, a
    // reduction stays at the boundary instead of pulling its producers in).
    for k in (0..n).rev() {
        if fop[k].is_none() {
            continue;
        }
        for &i in &g.inputs[k] {
            if fop[i].is_some() && same_shape(i, k) {
                uf.try_merge(i, k, &g, &mut scratch);
            }
        }
    }
    // Groups reading a common input (evaluated or not fusable).
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for k in 0..n {
        if fop[k].is_none() {
            continue;
        }
        for x in g.order[k].inputs() {
            let external = g.index.get(&x.id()).is_none_or(|&i| fop[i].is_none());
            if external && x.size() > 1 {
                readers.entry(x.id()).or_default().push(k);
            }
        }
    }
    let mut keys: Vec<usize> = readers.keys().copied().collect();
    keys.sort_unstable_by_key(|id| readers[id][0]);
    for id in keys {
        let r = &readers[&id];
        for w in r.windows(2) {
            if same_shape(w[0], w[1]) {
                uf.try_merge(w[0], w[1], &g, &mut scratch);
            }
        }
    }

    // Units: a group of two or more nodes, or a single node. Rebuild them in
    // a topological order of the contracted graph (acyclic by convexity).
    let unit = |k: usize| {
        let r = uf.find_const(k);
        if uf.members[r].len() > 1 {
            r
        } else {
            k
        }
    };
    let remat = plan_remat(&g, &fop, &uf, &unit);
    let mut indeg = vec![0usize; n];
    let mut out_units: Vec<Vec<usize>> = vec![Vec::new(); n];
    for k in 0..n {
        let u = unit(k);
        for &i in &g.inputs[k] {
            let v = unit(i);
            if v != u {
                out_units[v].push(u);
                indeg[u] += 1;
            }
        }
    }
    let is_unit = |k: usize| unit(k) == k;
    let mut ready: Vec<usize> = (0..n).rev().filter(|&k| is_unit(k) && indeg[k] == 0).collect();
    let mut map: HashMap<usize, Array> = HashMap::new();
    let get = |map: &HashMap<usize, Array>, a: &Array| map.get(&a.id()).cloned().unwrap_or_else(|| a.clone());
    let mut done = 0;
    while let Some(u) = ready.pop() {
        done += 1;
        // A unit is a group's root (members listed) or a node on its own.
        if uf.members[u].len() > 1 {
            build_group(&g, &uf.members[u], &fop, &uf, &remat, &mut map, &get);
        } else {
            rebuild_node(&g.order[u], &mut map, &get);
        }
        for &w in &out_units[u] {
            indeg[w] -= 1;
            if indeg[w] == 0 {
                ready.push(w);
            }
        }
    }
    debug_assert_eq!(done, (0..n).filter(|&k| is_unit(k)).count(), "fusion made the graph cyclic");
    outputs.iter().map(|o| get(&map, o)).collect()
}

/// Most nodes a group recomputes from another group ([`plan_remat`]).
const REMAT_MAX: usize = 32;

/// Rematerialization: for each group (by root), the elementwise nodes of
/// other groups it recomputes instead of reading, in topological order.
///
/// A backward pass reads the forward's elementwise intermediates (GELU's
/// cube, tanh, …), and with fusion each one read elsewhere becomes an extra
/// output the forward kernel writes and the backward kernel reads back: at
/// training sizes, memory traffic that costs more than the arithmetic. A
/// group instead recomputes the whole elementwise cone behind the values it
/// reads from other groups — same-shape fusable nodes, followed back to
/// other kernels' results, at most [`REMAT_MAX`] of them — when that cone
/// needs fewer full-size inputs than the values it replaces. The recomputed
/// instructions use the same per-element functions, so results are
/// bit-identical, and the group reads only what the cone's producers read,
/// which were computed before those producers, so the kernel graph stays
/// acyclic.
fn plan_remat(
    g: &Graph,
    fop: &[Option<FusedOp>],
    uf: &Groups,
    unit: &dyn Fn(usize) -> usize,
) -> HashMap<usize, Vec<usize>> {
    let mut plan = HashMap::new();
    for (root, mem) in uf.members.iter().enumerate() {
        if mem.len() < 2 || uf.find_const(root) != root {
            continue;
        }
        let shape = g.order[mem[0]].shape();
        let full = crate::shape::numel(shape);
        let remat_able = |k: usize| fop[k].is_some() && unit(k) != root && g.order[k].shape() == shape;
        // The cone behind the group's reads of other groups' nodes.
        let mut cone: Vec<usize> = Vec::new();
        let mut stack: Vec<usize> =
            mem.iter().flat_map(|&k| g.inputs[k].iter().copied()).filter(|&i| remat_able(i)).collect();
        let mut too_big = false;
        while let Some(k) = stack.pop() {
            if cone.contains(&k) {
                continue;
            }
            if cone.len() == REMAT_MAX {
                too_big = true;
                break;
            }
            cone.push(k);
            stack.extend(g.inputs[k].iter().copied().filter(|&i| remat_able(i)));
        }
        if cone.is_empty() || too_big {
            continue;
        }
        // Full-size values read from outside, before and after.
        let reads = |nodes: &mut dyn Iterator<Item = usize>, inside: &dyn Fn(usize) -> bool| {
            let mut ids: Vec<usize> = Vec::new();
            for k in nodes {
                for i in g.order[k].inputs() {
                    let internal = g.index.get(&i.id()).is_some_and(|&j| inside(j));
                    if !internal && i.size() == full && !ids.contains(&i.id()) {
                        ids.push(i.id());
                    }
                }
            }
            ids.len()
        };
        let in_group = |j: usize| unit(j) == root;
        let before = reads(&mut mem.iter().copied(), &in_group);
        let after = reads(&mut mem.iter().chain(&cone).copied(), &|j| in_group(j) || cone.contains(&j));
        if after < before {
            cone.sort_unstable();
            plan.insert(root, cone);
        }
    }
    plan
}

/// The unevaluated graph behind some outputs, in topological order.
struct Graph {
    /// One representative per expression, producers first.
    order: Vec<Array>,
    /// Position in `order` by array id (every sibling of a node included).
    index: HashMap<usize, usize>,
    /// Lazy inputs of each node, as positions.
    inputs: Vec<Vec<usize>>,
    /// Consumers of each node, as positions.
    consumers: Vec<Vec<usize>>,
    /// Whether each node is requested by the caller.
    requested: Vec<bool>,
}

impl Graph {
    fn new(outputs: &[Array]) -> Graph {
        let lazy = |a: &Array| {
            let st = a.0.lock();
            st.data.is_none() && st.expr.is_some()
        };
        let mut order: Vec<Array> = Vec::new();
        let mut index: HashMap<usize, usize> = HashMap::new();
        let mut seen: HashMap<usize, ()> = HashMap::new();
        let mut stack: Vec<(Array, bool)> = outputs.iter().rev().map(|o| (o.clone(), false)).collect();
        while let Some((a, done)) = stack.pop() {
            if done {
                for s in a.siblings().0 {
                    index.insert(s.id(), order.len());
                }
                order.push(a);
                continue;
            }
            if seen.contains_key(&a.id()) || !lazy(&a) {
                continue;
            }
            for s in a.siblings().0 {
                seen.insert(s.id(), ());
            }
            stack.push((a.clone(), true));
            for i in a.inputs().iter().rev() {
                if !seen.contains_key(&i.id()) {
                    stack.push((i.clone(), false));
                }
            }
        }
        let n = order.len();
        let mut inputs = vec![Vec::new(); n];
        let mut consumers = vec![Vec::new(); n];
        for (k, a) in order.iter().enumerate() {
            for i in a.inputs() {
                if let Some(&j) = index.get(&i.id()) {
                    if !inputs[k].contains(&j) {
                        inputs[k].push(j);
                        consumers[j].push(k);
                    }
                }
            }
        }
        let mut requested = vec![false; n];
        for o in outputs {
            if let Some(&k) = index.get(&o.id()) {
                requested[k] = true;
            }
        }
        Graph { order, index, inputs, consumers, requested }
    }
}

/// Union-find over node positions; a root's `members` lists its group.
struct Groups {
    parent: Vec<usize>,
    members: Vec<Vec<usize>>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups { parent: (0..n).collect(), members: (0..n).map(|k| vec![k]).collect() }
    }
    fn find_const(&self, mut k: usize) -> usize {
        while self.parent[k] != k {
            k = self.parent[k];
        }
        k
    }
    /// Merges the groups of `a` and `b` if the union stays convex.
    fn try_merge(&mut self, a: usize, b: usize, g: &Graph, w: &mut Walk) -> bool {
        let (ra, rb) = (self.find_const(a), self.find_const(b));
        if ra == rb || !self.convex(ra, rb, g, w) {
            return false;
        }
        // Attach the smaller group under the larger; members stay sorted.
        let (big, small) = if self.members[ra].len() >= self.members[rb].len() { (ra, rb) } else { (rb, ra) };
        self.parent[small] = big;
        let moved = std::mem::take(&mut self.members[small]);
        self.members[big].extend(moved);
        self.members[big].sort_unstable();
        true
    }
    /// Whether no path leaves `ra ∪ rb` and re-enters it, counting other
    /// groups as single kernels (reaching one member of a group reaches all
    /// of them, since its kernel needs every member's inputs). Without this,
    /// two convex groups could still need each other's outputs.
    fn convex(&self, ra: usize, rb: usize, g: &Graph, w: &mut Walk) -> bool {
        let inside = |k: usize| {
            let r = self.find_const(k);
            r == ra || r == rb
        };
        w.next_generation();
        let mut stack: Vec<usize> = Vec::new();
        for &m in self.members[ra].iter().chain(&self.members[rb]) {
            stack.extend(g.consumers[m].iter().copied().filter(|&c| !inside(c)));
        }
        while let Some(x) = stack.pop() {
            if !w.visit(x) {
                continue;
            }
            let r = self.find_const(x);
            let unit: &[usize] = if self.members[r].len() > 1 { &self.members[r] } else { std::slice::from_ref(&x) };
            for &y in unit {
                w.visit(y);
                for &c in &g.consumers[y] {
                    if inside(c) {
                        return false;
                    }
                    if w.mark[c] != w.generation {
                        stack.push(c);
                    }
                }
            }
        }
        true
    }
}

/// Visited marks for repeated graph walks without clearing.
struct Walk {
    mark: Vec<u32>,
    generation: u32,
}

impl Walk {
    fn new(n: usize) -> Walk {
        Walk { mark: vec![0; n], generation: 0 }
    }
    fn next_generation(&mut self) {
        self.generation += 1;
    }
    fn visit(&mut self, k: usize) -> bool {
        let first = self.mark[k] != self.generation;
        self.mark[k] = self.generation;
        first
    }
}

/// Rebuilds one node on its (possibly replaced) inputs, keeping it as is
/// when no input changed.
fn rebuild_node(a: &Array, map: &mut HashMap<usize, Array>, get: &dyn Fn(&HashMap<usize, Array>, &Array) -> Array) {
    let inputs = a.inputs();
    let new_inputs: Vec<Array> = inputs.iter().map(|i| get(map, i)).collect();
    if inputs.iter().zip(&new_inputs).all(|(x, y)| x.id() == y.id()) {
        return;
    }
    let (expr, _) = a.expr().expect("lazy node");
    let prim = expr.prim.clone();
    let (sibs, _) = a.siblings();
    if sibs.len() == 1 {
        map.insert(a.id(), Array::from_op_arc(a.shape().to_vec(), a.dtype(), prim, new_inputs));
    } else {
        let new = Array::from_op_multi(expr.metas.clone(), prim, new_inputs);
        for (s, n) in sibs.iter().zip(new) {
            map.insert(s.id(), n);
        }
    }
}

/// Replaces the group `mem` (positions in topological order) by one Fused node.
fn build_group(
    g: &Graph,
    mem: &[usize],
    fop: &[Option<FusedOp>],
    uf: &Groups,
    remat: &HashMap<usize, Vec<usize>>,
    map: &mut HashMap<usize, Array>,
    get: &dyn Fn(&HashMap<usize, Array>, &Array) -> Array,
) {
    let root = uf.find_const(mem[0]);
    let in_group = |k: usize| uf.find_const(k) == root;
    let cone: &[usize] = remat.get(&root).map_or(&[], |c| c);
    // The group's own members plus the nodes it recomputes, in topological order.
    let mut all: Vec<usize> = mem.iter().chain(cone).copied().collect();
    all.sort_unstable();
    let computed = |k: usize| in_group(k) || cone.contains(&k);
    let member = |a: &Array| g.index.get(&a.id()).is_some_and(|&k| computed(k));
    // Whether consumer `c` (outside this group) reads `k` from this kernel:
    // not when c's group recomputes k.
    let reads_from_here = |c: usize, k: usize| remat.get(&uf.find_const(c)).is_none_or(|r| !r.contains(&k));
    let mut inputs: Vec<Array> = Vec::new();
    let mut reg: HashMap<usize, usize> = HashMap::new();
    // Input registers first.
    for &k in &all {
        for i in g.order[k].inputs() {
            if !member(&i) && !reg.contains_key(&i.id()) {
                reg.insert(i.id(), inputs.len());
                inputs.push(i);
            }
        }
    }
    let n_inputs = inputs.len();
    let mut insts = Vec::with_capacity(all.len());
    let mut outs: Vec<(usize, usize)> = Vec::new(); // (register, position)
    for (j, &k) in all.iter().enumerate() {
        let a = &g.order[k];
        let args: Vec<usize> = a.inputs().iter().map(|i| reg[&i.id()]).collect();
        insts.push(FusedInst {
            op: fop[k].expect("fusable member"),
            args,
            dtype: a.dtype(),
            prim: a.primitive().expect("lazy node"),
        });
        reg.insert(a.id(), n_inputs + j);
        if !in_group(k) {
            // Recomputed here; its own group provides it to everyone else.
            continue;
        }
        let external = g.consumers[k].iter().any(|&c| !in_group(c) && reads_from_here(c, k));
        if g.requested[k] || external {
            outs.push((n_inputs + j, k));
        }
    }
    let shape = g.order[mem[0]].shape().to_vec();
    if outs.is_empty() {
        // Every value this group computes is recomputed where it is read.
        return;
    }
    let program = FusedProgram { n_inputs, insts, outputs: outs.iter().map(|o| o.0).collect(), shape: shape.clone() };
    let new_inputs: Vec<Array> = inputs.iter().map(|i| get(map, i)).collect();
    let metas: Vec<(Vec<usize>, Dtype)> = outs.iter().map(|&(_, k)| (shape.clone(), g.order[k].dtype())).collect();
    let prim: Arc<dyn Primitive> = Arc::new(Fused { program: Arc::new(program) });
    let arrays = if metas.len() == 1 {
        vec![Array::from_op_arc(shape.clone(), metas[0].1, prim, new_inputs)]
    } else {
        Array::from_op_multi(metas, prim, new_inputs)
    };
    for (&(_, k), a) in outs.iter().zip(arrays) {
        map.insert(g.order[k].id(), a);
    }
}
