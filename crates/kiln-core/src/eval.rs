//! Graph evaluation: a topological schedule of the unevaluated nodes, run in
//! order, detaching each evaluated node from its inputs so intermediates are
//! freed as soon as their last consumer has run.

use crate::array::Array;
use crate::backend::backend_for;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use std::collections::HashSet;

/// Evaluates `arrays` and everything they depend on.
///
/// The traversal is iterative, so graphs of any depth evaluate without
/// recursion. Nodes created outside transforms are detached once computed
/// (they become leaves), which releases the graph behind them.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let order = schedule(arrays);
    run(order)
}

/// Evaluates a list of owned arrays (convenience for transform outputs).
pub fn eval_all(arrays: &[Array]) -> Result<()> {
    let refs: Vec<&Array> = arrays.iter().collect();
    eval(&refs)
}

/// Post-order of the unevaluated nodes reachable from `arrays`.
fn schedule(arrays: &[&Array]) -> Vec<Option<Array>> {
    let mut order = Vec::new();
    let mut visited: HashSet<usize> = HashSet::new();
    // (node, its inputs, next input to visit)
    let mut stack: Vec<(Array, Vec<Array>, usize)> = Vec::new();
    let push = |a: &Array, visited: &mut HashSet<usize>, stack: &mut Vec<(Array, Vec<Array>, usize)>| {
        if a.try_data().is_some() || !visited.insert(a.id()) {
            return;
        }
        let inputs = a.expr().map(|(e, _)| e.inputs.clone()).unwrap_or_default();
        stack.push((a.clone(), inputs, 0));
    };
    for a in arrays {
        push(a, &mut visited, &mut stack);
        while let Some(top) = stack.last_mut() {
            if top.2 < top.1.len() {
                let next = top.1[top.2].clone();
                top.2 += 1;
                push(&next, &mut visited, &mut stack);
            } else {
                let (node, _, _) = stack.pop().unwrap();
                order.push(Some(node));
            }
        }
    }
    order
}

fn run(mut order: Vec<Option<Array>>) -> Result<()> {
    for slot in order.iter_mut() {
        let arr = slot.take().expect("each node is scheduled once");
        if arr.try_data().is_some() {
            continue; // computed as the sibling of an earlier node
        }
        let Some((expr, _)) = arr.expr() else {
            return Err(Error::runtime(
                "eval",
                "Attempting to eval an array without a primitive: it is a transform placeholder or was never computed.",
            ));
        };
        let (outputs, _) = arr.siblings();
        let tracer = arr.is_tracer();
        // A tracer's inputs stay referenced by its graph and must not be
        // overwritten: holding an extra handle blocks donation.
        let _pin: Vec<Array> = if tracer { expr.inputs.clone() } else { Vec::new() };
        let specs: Vec<OutSpec<'_>> = outputs.iter().map(|o| OutSpec { shape: o.shape(), dtype: o.dtype() }).collect();
        let backend = backend_for(expr.stream.device)?;
        let datas = expr.prim.eval(backend, &expr.inputs, &specs)?;
        debug_assert_eq!(datas.len(), outputs.len(), "{} returned the wrong number of outputs", expr.prim.name());
        drop(specs);
        for (o, d) in outputs.iter().zip(datas) {
            let mut st = o.0.lock();
            st.data = Some(d);
            if !o.is_tracer() {
                st.expr = None;
            }
        }
    }
    Ok(())
}
