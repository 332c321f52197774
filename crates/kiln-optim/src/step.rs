//! A whole training step — forward, backward, optional gradient clipping and
//! the optimizer update — compiled as one function (MLX's `mx.compile(step,
//! inputs=state, outputs=state)`): the parameters and the optimizer state
//! are explicit inputs and outputs of the traced graph, so the step is traced
//! once, simplified and fused, then replayed every call.

use crate::{clip_grad_norm, Optimizer};
use kiln_core::{tree_flatten, tree_unflatten, Array, Error, Result};
use kiln_nn::{Module, ModuleExt};
use std::marker::PhantomData;

/// A compiled function of a flat list of arrays.
type StepFn = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

/// A compiled training step for model type `M` and optimizer type `O`.
///
/// Build it once the optimizer state has all its keys (after one ordinary
/// update, or after restoring a checkpoint), so its inputs keep one layout.
///
/// ```
/// use kiln_core::{ops, Array};
/// use kiln_nn::{self as nn, Forward};
/// use kiln_optim::{Optimizer, Sgd, TrainStep};
///
/// let mut model = nn::Linear::new(3, 1, true).unwrap();
/// let mut opt = Sgd::new(0.01);
/// let loss = |m: &nn::Linear, a: &[Array]| ops::mean(&ops::square(&m.forward(&a[0])?)?, ops::Axes::All, false);
/// let step = TrainStep::new(&model, &opt, loss, None).unwrap();
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
/// let first = step.run(&mut model, &mut opt, &[x.clone()]).unwrap().item::<f32>().unwrap();
/// let second = step.run(&mut model, &mut opt, &[x]).unwrap().item::<f32>().unwrap();
/// assert!(second < first);
/// ```
pub struct TrainStep<M, O> {
    params: Vec<String>,
    state: Vec<String>,
    step: StepFn,
    _types: PhantomData<fn(M, O)>,
}

impl<M, O> TrainStep<M, O>
where
    M: Module + Clone + 'static,
    O: Optimizer + Clone + 'static,
{
    /// Traces lazily (on the first [`TrainStep::run`]) the step that
    /// minimises `loss(model, batch)`, clipping the gradients' global norm to
    /// `max_grad_norm` when given. `model` and `opt` are templates: their
    /// structure and hyper-parameters are captured, their values are inputs.
    pub fn new<F>(model: &M, opt: &O, loss: F, max_grad_norm: Option<f64>) -> Result<TrainStep<M, O>>
    where
        F: Fn(&M, &[Array]) -> Result<Array> + 'static,
    {
        let params: Vec<String> = model.named_parameters().into_iter().map(|(k, _)| k).collect();
        let state: Vec<String> = tree_flatten(&opt.state()?).into_iter().map(|(k, _)| k).collect();
        let (np, ns) = (params.len(), state.len());
        let (pk, sk) = (params.clone(), state.clone());
        let (model, opt) = (model.clone(), opt.clone());
        let vg = kiln_nn::value_and_grad(loss);
        let f = move |args: &[Array]| -> Result<Vec<Array>> {
            let (p, rest) = args.split_at(np);
            let (st, batch) = rest.split_at(ns);
            let mut m = model.clone();
            m.update(&tree_unflatten(pk.iter().cloned().zip(p.iter().cloned()).collect::<Vec<_>>())?)?;
            let mut o = opt.clone();
            o.set_state(&tree_unflatten(sk.iter().cloned().zip(st.iter().cloned()).collect::<Vec<_>>())?)?;
            let (loss, grads) = vg(&m, batch)?;
            let grads = match max_grad_norm {
                Some(n) => clip_grad_norm(&grads, n)?.0,
                None => grads,
            };
            o.update(&mut m, &grads)?;
            let mut out = vec![loss];
            out.extend(m.named_parameters().into_iter().map(|(_, a)| a));
            out.extend(tree_flatten(&o.state()?).into_iter().map(|(_, a)| a));
            Ok(out)
        };
        Ok(TrainStep { params, state, step: Box::new(kiln_core::compile(f)), _types: PhantomData })
    }

    /// Runs the step on `batch`, moves `model` and `opt` to the new values
    /// (lazy: evaluate them, or the loss, to compute) and returns the loss.
    pub fn run(&self, model: &mut M, opt: &mut O, batch: &[Array]) -> Result<Array> {
        let names: Vec<String> = model.named_parameters().into_iter().map(|(k, _)| k).collect();
        let state = tree_flatten(&opt.state()?);
        if names != self.params || state.iter().map(|(k, _)| k).ne(self.state.iter()) {
            return Err(Error::invalid(
                "TrainStep",
                "The model's parameters or the optimizer's state keys differ from the ones the step was built for.",
            ));
        }
        let mut args: Vec<Array> = model.named_parameters().into_iter().map(|(_, a)| a).collect();
        args.extend(state.into_iter().map(|(_, a)| a));
        args.extend(batch.iter().cloned());
        let mut out = (self.step)(&args)?.into_iter();
        let loss = out.next().ok_or_else(|| Error::runtime("TrainStep", "The compiled step returned nothing."))?;
        let p: Vec<(String, Array)> = self.params.iter().cloned().zip(out.by_ref().take(self.params.len())).collect();
        model.update(&tree_unflatten(p)?)?;
        let s: Vec<(String, Array)> = self.state.iter().cloned().zip(out).collect();
        opt.set_state(&tree_unflatten(s)?)?;
        Ok(loss)
    }
}
