//! Function transforms over the graph: `vjp`, `jvp`, `grad`, `value_and_grad`,
//! `vmap` and `stop_gradient`.
//!
//! Transforms trace: they call the function on stand-in arrays, walk the graph
//! it recorded, and apply each primitive's own vjp/jvp/vmap rule. Rules build
//! ordinary graph nodes, so transforms nest (grad of grad, vmap of grad, …).
//! Arrays created while a transform traces are *tracers*: evaluating them
//! keeps their graph, which an outer transform may still walk.

pub mod compile;
pub mod custom;
mod tree;
pub use compile::{
    compile, compile_shapeless, compile_with_state, disable_compile, enable_compile, is_compile_enabled,
    CompileOptions, Compiled, State,
};

pub use custom::{checkpoint, custom_function, CustomFunction};
pub use tree::{tree_flatten, tree_map, tree_unflatten, Tree};

use crate::array::{tracing, Array, Data};
use crate::backend::Backend;
use crate::error::{fmt_shape, Error, Result};
use crate::ops::{moveaxis, zeros_like};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Identity that marks the boundary of a transform (the traced copy of a primal).
#[derive(Debug, PartialEq)]
pub struct Copy;

impl Primitive for Copy {
    fn name(&self) -> &'static str {
        "Copy"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], _: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![inputs[0].data()])
    }
    fn vjp(&self, _: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![cotangents[0].clone()])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![tangents[0].clone()])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![inputs[0].clone()], vec![axes[0]]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

fn traced_copy(a: &Array) -> Array {
    Array::from_op(a.shape().to_vec(), a.dtype(), Copy, vec![a.clone()])
}

/// Identity in value, zero in derivative: a boundary for vjp and jvp.
#[derive(Debug, PartialEq)]
pub struct StopGradient;

impl Primitive for StopGradient {
    fn name(&self) -> &'static str {
        "StopGradient"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], _: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![inputs[0].data()])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::Yes, jvp: Rule::Yes, vmap: Rule::Yes }
    }
    fn vjp(&self, primals: &[Array], _: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![zeros_like(&primals[0])?])
    }
    fn jvp(&self, primals: &[Array], _: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![zeros_like(&primals[0])?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![stop_gradient(&inputs[0])], vec![axes[0]]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

/// `a` in value, with no gradient flowing through it.
pub fn stop_gradient(a: &Array) -> Array {
    Array::from_op(a.shape().to_vec(), a.dtype(), StopGradient, vec![a.clone()])
}

fn is_stop_gradient(p: &Arc<dyn Primitive>) -> bool {
    p.as_any().is::<StopGradient>()
}

/// One primitive application on the path from the inputs to the outputs.
struct Step {
    prim: Arc<dyn Primitive>,
    inputs: Vec<Array>,
    outputs: Vec<Array>,
}

/// The nodes between `sources` and `outputs`, in topological order (inputs
/// first), each multi-output primitive once. Iterative, so deep graphs work.
fn tape(sources: &HashSet<usize>, outputs: &[Array], through_stop_gradient: bool) -> (Vec<Step>, HashMap<usize, bool>) {
    let mut depends: HashMap<usize, bool> = HashMap::new();
    let mut seen_expr: HashSet<usize> = HashSet::new();
    let mut steps = Vec::new();
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        let id = a.id();
        if depends.contains_key(&id) && !expanded {
            continue;
        }
        if sources.contains(&id) {
            depends.insert(id, true);
            continue;
        }
        let Some((expr, _)) = a.expr() else {
            depends.insert(id, false);
            continue;
        };
        if !through_stop_gradient && is_stop_gradient(&expr.prim) {
            depends.insert(id, false);
            continue;
        }
        if !expanded {
            stack.push((a.clone(), true));
            for i in &expr.inputs {
                if !depends.contains_key(&i.id()) {
                    stack.push((i.clone(), false));
                }
            }
            continue;
        }
        let dep = expr.inputs.iter().any(|i| depends.get(&i.id()).copied().unwrap_or(false));
        let (sibs, _) = a.siblings();
        for s in &sibs {
            depends.insert(s.id(), dep);
        }
        if dep && seen_expr.insert(Arc::as_ptr(&expr) as *const u8 as usize) {
            steps.push(Step { prim: expr.prim.clone(), inputs: expr.inputs.clone(), outputs: sibs });
        }
    }
    (steps, depends)
}

fn add_into(map: &mut HashMap<usize, Array>, id: usize, g: Array) -> Result<()> {
    let v = match map.remove(&id) {
        Some(prev) => crate::ops::add(&prev, &g)?,
        None => g,
    };
    map.insert(id, v);
    Ok(())
}

/// Reverse mode: runs `f` on `primals` and returns its outputs and the
/// cotangents of the primals given `cotangents` for the outputs.
pub fn vjp<F>(f: F, primals: &[Array], cotangents: &[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnOnce(&[Array]) -> Result<Vec<Array>>,
{
    tracing(|| {
        let inputs: Vec<Array> = primals.iter().map(traced_copy).collect();
        let outputs = f(&inputs)?;
        if outputs.len() < cotangents.len() {
            return Err(Error::invalid(
                "vjp",
                format!("{} cotangents for {} outputs.", cotangents.len(), outputs.len()),
            ));
        }
        let mut cot: HashMap<usize, Array> = HashMap::new();
        for (o, c) in outputs.iter().zip(cotangents) {
            if o.shape() != c.shape() {
                return Err(Error::invalid(
                    "vjp",
                    format!(
                        "Cotangent shape {} does not match output shape {}.",
                        fmt_shape(c.shape()),
                        fmt_shape(o.shape())
                    ),
                ));
            }
            if o.primitive().is_some_and(|p| is_stop_gradient(&p)) {
                continue;
            }
            add_into(&mut cot, o.id(), crate::ops::astype(c, o.dtype())?)?;
        }
        let sources: HashSet<usize> = inputs.iter().map(|a| a.id()).collect();
        let (steps, depends) = tape(&sources, &outputs[..cotangents.len()], false);
        for step in steps.iter().rev() {
            if step.outputs.iter().all(|o| !cot.contains_key(&o.id())) {
                continue;
            }
            let cts: Vec<Array> = step
                .outputs
                .iter()
                .map(|o| match cot.remove(&o.id()) {
                    Some(c) => Ok(c),
                    None => zeros_like(o),
                })
                .collect::<Result<_>>()?;
            let argnums: Vec<usize> = (0..step.inputs.len())
                .filter(|&i| depends.get(&step.inputs[i].id()).copied().unwrap_or(false))
                .collect();
            let grads = step.prim.vjp(&step.inputs, &cts, &argnums, &step.outputs)?;
            for (&i, g) in argnums.iter().zip(grads) {
                let inp = &step.inputs[i];
                if g.shape() != inp.shape() {
                    return Err(Error::runtime(
                        step.prim.name(),
                        format!(
                            "vjp produced shape {} for an input of shape {}.",
                            fmt_shape(g.shape()),
                            fmt_shape(inp.shape())
                        ),
                    ));
                }
                add_into(&mut cot, inp.id(), g)?;
            }
        }
        let grads = inputs
            .iter()
            .map(|i| match cot.remove(&i.id()) {
                Some(g) => crate::ops::astype(&g, i.dtype()),
                None => zeros_like(i),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((outputs, grads))
    })
}

/// Forward mode: runs `f` on `primals` and returns its outputs and their
/// tangents given `tangents` for the primals.
pub fn jvp<F>(f: F, primals: &[Array], tangents: &[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnOnce(&[Array]) -> Result<Vec<Array>>,
{
    if primals.len() != tangents.len() {
        return Err(Error::invalid("jvp", format!("{} tangents for {} primals.", tangents.len(), primals.len())));
    }
    for (p, t) in primals.iter().zip(tangents) {
        if p.shape() != t.shape() {
            return Err(Error::invalid(
                "jvp",
                format!("Tangent shape {} does not match primal shape {}.", fmt_shape(t.shape()), fmt_shape(p.shape())),
            ));
        }
    }
    tracing(|| {
        let inputs: Vec<Array> = primals.iter().map(traced_copy).collect();
        let outputs = f(&inputs)?;
        let mut tan: HashMap<usize, Array> = HashMap::new();
        for (i, t) in inputs.iter().zip(tangents) {
            tan.insert(i.id(), crate::ops::astype(t, i.dtype())?);
        }
        let sources: HashSet<usize> = inputs.iter().map(|a| a.id()).collect();
        let (steps, _) = tape(&sources, &outputs, false);
        for step in &steps {
            let argnums: Vec<usize> =
                (0..step.inputs.len()).filter(|&i| tan.contains_key(&step.inputs[i].id())).collect();
            if argnums.is_empty() {
                continue;
            }
            let ts: Vec<Array> = argnums.iter().map(|&i| tan[&step.inputs[i].id()].clone()).collect();
            let outs = step.prim.jvp(&step.inputs, &ts, &argnums)?;
            for (o, t) in step.outputs.iter().zip(outs) {
                tan.insert(o.id(), t);
            }
        }
        let tangents_out = outputs
            .iter()
            .map(|o| tan.get(&o.id()).cloned().map(Ok).unwrap_or_else(|| zeros_like(o)))
            .collect::<Result<Vec<_>>>()?;
        Ok((outputs, tangents_out))
    })
}

/// `(values, gradients)` of `f`'s first output (a scalar) with respect to the
/// arguments in `argnums`. Outputs after the first are auxiliary: returned as
/// values, not differentiated.
pub fn value_and_grad<F>(f: F, argnums: &[usize]) -> impl Fn(&[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    let argnums = argnums.to_vec();
    move |args: &[Array]| {
        if argnums.is_empty() {
            return Err(Error::invalid("value_and_grad", "Must specify at least one argument."));
        }
        let mut seen = HashSet::new();
        for &a in &argnums {
            if a >= args.len() {
                return Err(Error::invalid(
                    "value_and_grad",
                    format!("Can't compute the gradient of argument index {a} because the function is called with only {} arguments.", args.len()),
                ));
            }
            if !seen.insert(a) {
                return Err(Error::invalid("value_and_grad", format!("Duplicate argument index {a}.")));
            }
        }
        let primals: Vec<Array> = argnums.iter().map(|&i| args[i].clone()).collect();
        let wrapped = |xs: &[Array]| -> Result<Vec<Array>> {
            let mut full: Vec<Array> = args.to_vec();
            for (k, &i) in argnums.iter().enumerate() {
                full[i] = xs[k].clone();
            }
            let out = f(&full)?;
            let Some(loss) = out.first() else {
                return Err(Error::invalid("value_and_grad", "The function must return at least one array."));
            };
            if loss.ndim() != 0 {
                return Err(Error::invalid(
                    "value_and_grad",
                    format!("The output of the function must be a scalar, got shape {}.", fmt_shape(loss.shape())),
                ));
            }
            let mut res = vec![loss.clone()];
            res.extend(out[1..].iter().map(stop_gradient));
            Ok(res)
        };
        // The seed cotangent is a scalar 1 (vjp casts it to the output's dtype).
        vjp(wrapped, &primals, &[Array::scalar(1.0f32)])
    }
}

/// Gradients of `f`'s scalar first output with respect to the arguments in `argnums`.
pub fn grad<F>(f: F, argnums: &[usize]) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    let vg = value_and_grad(f, argnums);
    move |args: &[Array]| vg(args).map(|(_, g)| g)
}

/// Gradient and value of a scalar function of a parameter tree: the gradient
/// is a tree shaped like the parameters (keys such as `layers.0.weight`).
pub fn value_and_grad_tree<F>(f: F) -> impl Fn(&Tree) -> Result<(Array, Tree)>
where
    F: Fn(&Tree) -> Result<Array>,
{
    move |params: &Tree| {
        let flat = tree_flatten(params);
        let keys: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
        let arrays: Vec<Array> = flat.into_iter().map(|(_, a)| a).collect();
        let g = value_and_grad(
            |xs: &[Array]| {
                let t = tree_unflatten(keys.iter().cloned().zip(xs.iter().cloned()))?;
                Ok(vec![f(&t)?])
            },
            &(0..arrays.len()).collect::<Vec<_>>(),
        );
        let (vals, grads) = g(&arrays)?;
        Ok((vals[0].clone(), tree_unflatten(keys.iter().cloned().zip(grads))?))
    }
}

/// Vectorises `f` over a batch axis of its inputs (`in_axes`, `None` for an
/// input that is shared) and puts the batch axis of each output at `out_axes`.
pub fn vmap<F>(f: F, in_axes: &[Option<i32>], out_axes: &[i32]) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    let in_axes = in_axes.to_vec();
    let out_axes = out_axes.to_vec();
    move |args: &[Array]| vmap_call(&f, &in_axes, &out_axes, args)
}

fn vmap_call<F>(f: &F, in_axes: &[Option<i32>], out_axes: &[i32], args: &[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    if in_axes.len() != args.len() {
        return Err(Error::invalid("vmap", format!("{} in_axes for {} arguments.", in_axes.len(), args.len())));
    }
    let mut batch: Option<usize> = None;
    let mut axes: Vec<Option<usize>> = Vec::with_capacity(args.len());
    for (a, ax) in args.iter().zip(in_axes) {
        match ax {
            None => axes.push(None),
            Some(ax) => {
                if a.ndim() == 0 {
                    return Err(Error::invalid("vmap", "Cannot vmap an input with zero dimensions."));
                }
                let ax = crate::shape::normalize_axis("vmap", *ax, a.ndim())?;
                let n = a.shape()[ax];
                if batch.is_some_and(|b| b != n) {
                    return Err(Error::invalid(
                        "vmap",
                        format!("Inconsistent axis sizes: {} and {n}.", batch.unwrap()),
                    ));
                }
                batch = Some(n);
                axes.push(Some(ax));
            }
        }
    }
    let Some(batch) = batch else {
        return Err(Error::invalid("vmap", "At least one input must be mapped."));
    };
    tracing(|| {
        let placeholders: Vec<Array> = args
            .iter()
            .zip(&axes)
            .map(|(a, ax)| match ax {
                None => a.clone(),
                Some(ax) => {
                    let mut s = a.shape().to_vec();
                    s.remove(*ax);
                    Array::placeholder(s, a.dtype())
                }
            })
            .collect();
        let outputs = f(&placeholders)?;
        if !out_axes.is_empty() && out_axes.len() != outputs.len() && out_axes.len() != 1 {
            return Err(Error::invalid("vmap", format!("{} out_axes for {} outputs.", out_axes.len(), outputs.len())));
        }
        let mut mapped: HashMap<usize, (Array, Option<usize>)> = HashMap::new();
        let mut sources = HashSet::new();
        for ((p, a), ax) in placeholders.iter().zip(args).zip(&axes) {
            if ax.is_some() {
                mapped.insert(p.id(), (a.clone(), *ax));
                sources.insert(p.id());
            }
        }
        let (steps, _) = tape(&sources, &outputs, true);
        for step in &steps {
            let mut ins = Vec::with_capacity(step.inputs.len());
            let mut ins_axes = Vec::with_capacity(step.inputs.len());
            for i in &step.inputs {
                match mapped.get(&i.id()) {
                    Some((a, ax)) => {
                        ins.push(a.clone());
                        ins_axes.push(*ax);
                    }
                    None => {
                        ins.push(i.clone());
                        ins_axes.push(None);
                    }
                }
            }
            let (outs, oaxes) = step.prim.vmap(&ins, &ins_axes)?;
            for ((o, new), ax) in step.outputs.iter().zip(outs).zip(oaxes) {
                mapped.insert(o.id(), (new, ax));
            }
        }
        outputs
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let oax = if out_axes.is_empty() { 0 } else { out_axes[k.min(out_axes.len() - 1)] };
                match mapped.get(&o.id()) {
                    Some((a, Some(ax))) => {
                        let dst = crate::shape::normalize_axis("vmap", oax, a.ndim())?;
                        moveaxis(a, *ax as i32, dst as i32)
                    }
                    other => {
                        // Not batched: repeat along a new axis.
                        let a = other.map(|(a, _)| a.clone()).unwrap_or_else(|| o.clone());
                        let dst = crate::shape::normalize_axis("vmap", oax, a.ndim() + 1)?;
                        let e = crate::ops::expand_dims(&a, dst as i32)?;
                        let mut shape = e.shape().to_vec();
                        shape[dst] = batch;
                        crate::ops::broadcast_to(&e, &shape)
                    }
                }
            })
            .collect()
    })
}
