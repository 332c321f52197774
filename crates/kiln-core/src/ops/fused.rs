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
pub fn fuse_graph(outputs: &[Array]) -> Vec<Array> {
    // Post-order of the unevaluated nodes (one representative per expression).
    let mut order: Vec<Array> = Vec::new();
    let mut seen: HashMap<usize, ()> = HashMap::new();
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    let lazy = |a: &Array| {
        let st = a.0.lock();
        st.data.is_none() && st.expr.is_some()
    };
    let mut stack: Vec<(Array, bool)> = outputs.iter().rev().map(|o| (o.clone(), false)).collect();
    while let Some((a, done)) = stack.pop() {
        if done {
            order.push(a);
            continue;
        }
        if seen.contains_key(&a.id()) || !lazy(&a) {
            continue;
        }
        let (sibs, _) = a.siblings();
        for s in &sibs {
            seen.insert(s.id(), ());
        }
        stack.push((a.clone(), true));
        for i in a.inputs().iter().rev() {
            consumers.entry(i.id()).or_default().push(a.id());
            if !seen.contains_key(&i.id()) {
                stack.push((i.clone(), false));
            }
        }
    }
    let requested: HashMap<usize, ()> = outputs.iter().map(|o| (o.id(), ())).collect();

    // Groups, consumers first: a node joins its consumers' group when every
    // consumer is in that one group and the shapes match.
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new(); // indices into `order`
    let mut fop: HashMap<usize, FusedOp> = HashMap::new();
    for k in (0..order.len()).rev() {
        let a = &order[k];
        if a.siblings().0.len() != 1 {
            continue;
        }
        let Some(prim) = a.primitive() else { continue };
        let Some(op) = fusable_op(a, &prim, &a.inputs()) else { continue };
        fop.insert(a.id(), op);
        let cons = consumers.get(&a.id()).map(|v| v.as_slice()).unwrap_or(&[]);
        let g = cons.first().and_then(|c| group_of.get(c)).copied();
        let joins = g.is_some_and(|g| {
            cons.iter().all(|c| group_of.get(c) == Some(&g)) && order[members[g][0]].shape() == a.shape()
        });
        let g = if joins {
            g.expect("checked")
        } else {
            members.push(Vec::new());
            members.len() - 1
        };
        group_of.insert(a.id(), g);
        members[g].push(k);
    }

    // Rebuild in topological order.
    let mut map: HashMap<usize, Array> = HashMap::new();
    let get = |map: &HashMap<usize, Array>, a: &Array| map.get(&a.id()).cloned().unwrap_or_else(|| a.clone());
    for (k, a) in order.iter().enumerate() {
        if map.contains_key(&a.id()) {
            continue;
        }
        if let Some(&g) = group_of.get(&a.id()) {
            let mem = &members[g];
            if mem.len() > 1 {
                // The root (first pushed) is the last member in topological order.
                if mem[0] == k {
                    build_group(&order, mem, &fop, &requested, &consumers, &group_of, &mut map, &get);
                }
                continue;
            }
        }
        let inputs = a.inputs();
        let new_inputs: Vec<Array> = inputs.iter().map(|i| get(&map, i)).collect();
        if inputs.iter().zip(&new_inputs).all(|(x, y)| x.id() == y.id()) {
            continue; // unchanged: keep the node itself
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
    outputs.iter().map(|o| get(&map, o)).collect()
}

#[allow(clippy::too_many_arguments)]
fn build_group(
    order: &[Array],
    mem: &[usize],
    fop: &HashMap<usize, FusedOp>,
    requested: &HashMap<usize, ()>,
    consumers: &HashMap<usize, Vec<usize>>,
    group_of: &HashMap<usize, usize>,
    map: &mut HashMap<usize, Array>,
    get: &dyn Fn(&HashMap<usize, Array>, &Array) -> Array,
) {
    let mut idx: Vec<usize> = mem.to_vec();
    idx.sort_unstable();
    let g = group_of[&order[mem[0]].id()];
    let in_group = |a: &Array| group_of.get(&a.id()) == Some(&g);
    let mut inputs: Vec<Array> = Vec::new();
    let mut reg: HashMap<usize, usize> = HashMap::new();
    // Input registers first.
    for &k in &idx {
        for i in order[k].inputs() {
            if !in_group(&i) && !reg.contains_key(&i.id()) {
                reg.insert(i.id(), inputs.len());
                inputs.push(i);
            }
        }
    }
    let n_inputs = inputs.len();
    let mut insts = Vec::with_capacity(idx.len());
    let mut outs: Vec<(usize, usize)> = Vec::new(); // (register, order index)
    for (j, &k) in idx.iter().enumerate() {
        let a = &order[k];
        let args: Vec<usize> = a.inputs().iter().map(|i| reg[&i.id()]).collect();
        insts.push(FusedInst { op: fop[&a.id()], args, dtype: a.dtype(), prim: a.primitive().expect("lazy node") });
        reg.insert(a.id(), n_inputs + j);
        let external = consumers.get(&a.id()).is_some_and(|c| c.iter().any(|c| group_of.get(c) != Some(&g)));
        if k == mem[0] || requested.contains_key(&a.id()) || external {
            outs.push((n_inputs + j, k));
        }
    }
    let shape = order[mem[0]].shape().to_vec();
    let program = FusedProgram { n_inputs, insts, outputs: outs.iter().map(|o| o.0).collect(), shape: shape.clone() };
    let new_inputs: Vec<Array> = inputs.iter().map(|i| get(map, i)).collect();
    let metas: Vec<(Vec<usize>, Dtype)> = outs.iter().map(|&(_, k)| (shape.clone(), order[k].dtype())).collect();
    let prim: Arc<dyn Primitive> = Arc::new(Fused { program: Arc::new(program) });
    let arrays = if metas.len() == 1 {
        vec![Array::from_op_arc(shape.clone(), metas[0].1, prim, new_inputs)]
    } else {
        Array::from_op_multi(metas, prim, new_inputs)
    };
    for (&(_, k), a) in outs.iter().zip(arrays) {
        map.insert(order[k].id(), a);
    }
}
