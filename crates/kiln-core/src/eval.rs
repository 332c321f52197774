//! Graph evaluation: a topological schedule of the unevaluated nodes, run in
//! order, detaching each evaluated node from its inputs so intermediates are
//! freed as soon as their last consumer has run.

use crate::array::{Array, Expr};
use crate::backend::backend_for;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Hasher for node ids (addresses): one multiply, no SipHash rounds.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of node ids.
pub(crate) type IdSet = HashSet<usize, BuildHasherDefault<IdHasher>>;

/// Evaluates `arrays` and everything they depend on.
///
/// The traversal is iterative, so graphs of any depth evaluate without
/// recursion. Nodes created outside transforms are detached once computed
/// (they become leaves), which releases the graph behind them.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let order = schedule(arrays);
    run(order)
}

/// Post-order of the unevaluated nodes reachable from `arrays`.
fn schedule(arrays: &[&Array]) -> Vec<Option<(Array, Arc<Expr>)>> {
    let mut order = Vec::new();
    let mut visited = IdSet::default();
    // (node, its expression, next input to visit)
    let mut stack: Vec<(Array, Arc<Expr>, usize)> = Vec::new();
    let push = |a: &Array, visited: &mut IdSet, stack: &mut Vec<(Array, Arc<Expr>, usize)>| {
        let expr = {
            let st = a.0.lock();
            if st.data.is_some() {
                return;
            }
            st.expr.as_ref().map(|(e, _)| e.clone())
        };
        if !visited.insert(a.id()) {
            return;
        }
        match expr {
            Some(e) => stack.push((a.clone(), e, 0)),
            // A placeholder: reported when run reaches it.
            None => stack.push((a.clone(), Arc::new(Expr::placeholder()), 0)),
        }
    };
    for a in arrays {
        push(a, &mut visited, &mut stack);
        while let Some(top) = stack.last_mut() {
            if top.2 < top.1.inputs.len() {
                let next = top.1.inputs[top.2].clone();
                top.2 += 1;
                push(&next, &mut visited, &mut stack);
            } else {
                let (node, expr, _) = stack.pop().unwrap();
                order.push(Some((node, expr)));
            }
        }
    }
    order
}

fn run(mut order: Vec<Option<(Array, Arc<Expr>)>>) -> Result<()> {
    for slot in order.iter_mut() {
        let (arr, expr) = slot.take().expect("each node is scheduled once");
        if expr.is_placeholder() {
            return Err(Error::runtime(
                "eval",
                "Attempting to eval an array without a primitive: it is a transform placeholder (eval inside vmap is not supported).",
            ));
        }
        if arr.0.lock().data.is_some() {
            continue; // computed as the sibling of an earlier node
        }
        let tracer = arr.is_tracer();
        // A tracer's inputs stay referenced by its graph and must not be
        // overwritten: holding an extra handle blocks donation.
        let _pin: Vec<Array> = if tracer { expr.inputs.clone() } else { Vec::new() };
        let backend = backend_for(expr.stream.device)?;
        if expr.siblings.get().is_none() {
            let spec = [OutSpec { shape: arr.shape(), dtype: arr.dtype() }];
            let mut datas = expr.prim.eval(backend, &expr.inputs, &spec)?;
            debug_assert_eq!(datas.len(), 1, "{} returned the wrong number of outputs", expr.prim.name());
            let d = datas.pop().expect("one output");
            drop(expr);
            let mut st = arr.0.lock();
            st.data = Some(d);
            if !tracer {
                st.expr = None;
            }
            continue;
        }
        let (outputs, _) = arr.siblings();
        let specs: Vec<OutSpec<'_>> = outputs.iter().map(|o| OutSpec { shape: o.shape(), dtype: o.dtype() }).collect();
        let datas = expr.prim.eval(backend, &expr.inputs, &specs)?;
        debug_assert_eq!(datas.len(), outputs.len(), "{} returned the wrong number of outputs", expr.prim.name());
        drop(specs);
        drop(expr);
        for (o, d) in outputs.iter().zip(datas) {
            let mut st = o.0.lock();
            st.data = Some(d);
            if !tracer {
                st.expr = None;
            }
        }
    }
    Ok(())
}
