//! A whole training step — forward, backward, optional gradient clipping and
//! the optimizer update — compiled as one function (MLX's `mx.compile(step,
//! inputs=state, outputs=state)`): the parameters and the optimizer state
//! are explicit inputs and outputs of the traced graph, so the step is traced
//! once, simplified and fused, then replayed every call.

use crate::{clip_grad_norm, Optimizer};
use kiln_core::transforms::{CompileOptions, Compiled};
use kiln_core::{ops, tree_flatten, tree_unflatten, Array, Error, Result, Tree};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// A compiled training step for model type `M` and optimizer type `O`.
///
/// The optimizer state may grow on the first update (per-parameter arrays
/// appear); the step then retraces once for the new layout, as any compiled
/// function does for a new number of inputs.
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
    /// Optimizer state keys of the call being traced (set by `run`).
    keys_in: Arc<Mutex<Vec<String>>>,
    /// Output state keys for each input state layout (set while tracing).
    keys_out: Arc<Mutex<HashMap<Vec<String>, Vec<String>>>>,
    step: Compiled,
    _types: PhantomData<fn(M, O)>,
}

impl<M, O> TrainStep<M, O>
where
    M: Module + Clone + 'static,
    O: Optimizer + Clone + 'static,
{
    /// The step that minimises `loss(model, batch)`, clipping the gradients'
    /// global norm to `max_grad_norm` when given; traced on the first
    /// [`TrainStep::run`]. `model` and `opt` are templates: their structure
    /// and hyper-parameters are captured, their values are inputs.
    pub fn new<F>(model: &M, opt: &O, loss: F, max_grad_norm: Option<f64>) -> Result<TrainStep<M, O>>
    where
        F: Fn(&M, &[Array]) -> Result<Array> + 'static,
    {
        let params: Vec<String> = model.named_parameters().into_iter().map(|(k, _)| k).collect();
        let keys_in: Arc<Mutex<Vec<String>>> = Arc::default();
        let keys_out: Arc<Mutex<HashMap<Vec<String>, Vec<String>>>> = Arc::default();
        let (pk, ki, ko) = (params.clone(), keys_in.clone(), keys_out.clone());
        // Templates: structure and hyper-parameters only. Their arrays become
        // lazy stand-ins of the same shapes and dtypes (replaced by the inputs
        // in every call), so the step does not keep the initial parameters
        // and optimizer state alive for its whole life.
        let mut model = model.clone();
        model.update(&stand_ins(model.named_parameters())?)?;
        let mut opt = opt.clone();
        opt.set_state(&stand_ins(tree_flatten(&opt.state()?))?)?;
        let vg = kiln_nn::value_and_grad(loss);
        let f = move |args: &[Array]| -> Result<Vec<Array>> {
            let sk = ki.lock().expect("keys").clone();
            let (p, rest) = args.split_at(pk.len());
            let (st, batch) = rest.split_at(sk.len());
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
            let state = tree_flatten(&o.state()?);
            ko.lock().expect("keys").insert(sk, state.iter().map(|(k, _)| k.clone()).collect());
            out.extend(state.into_iter().map(|(_, a)| a));
            Ok(out)
        };
        let step = Compiled::new(f, CompileOptions::default());
        Ok(TrainStep { params, keys_in, keys_out, step, _types: PhantomData })
    }

    /// Runs the step on `batch`, moves `model` and `opt` to the new values
    /// (lazy: evaluate them, or the loss, to compute) and returns the loss.
    pub fn run(&self, model: &mut M, opt: &mut O, batch: &[Array]) -> Result<Array> {
        let params = model.named_parameters();
        if params.iter().map(|(k, _)| k).ne(self.params.iter()) {
            return Err(Error::invalid(
                "TrainStep",
                "The model's parameters differ from the ones the step was built for.",
            ));
        }
        let state = tree_flatten(&opt.state()?);
        let keys: Vec<String> = state.iter().map(|(k, _)| k.clone()).collect();
        let mut args: Vec<Array> = params.into_iter().map(|(_, a)| a).collect();
        args.extend(state.into_iter().map(|(_, a)| a));
        args.extend(batch.iter().cloned());
        *self.keys_in.lock().expect("keys") = keys.clone();
        let outs = self.step.call(&args)?;
        let out_keys = self.keys_out.lock().expect("keys").get(&keys).cloned();
        let out_keys =
            out_keys.ok_or_else(|| Error::runtime("TrainStep", "The step was not traced for this state."))?;
        if out_keys != keys {
            // The state grew (the first update creates the per-parameter
            // arrays): the trace for the old layout will not run again, and
            // its constants (the zeros the state starts from) would stay
            // alive in the cache.
            self.step.clear_cache();
            self.keys_out.lock().expect("keys").remove(&keys);
        }
        let mut out = outs.into_iter();
        let loss = out.next().ok_or_else(|| Error::runtime("TrainStep", "The compiled step returned nothing."))?;
        let p: Vec<(String, Array)> = self.params.iter().cloned().zip(out.by_ref().take(self.params.len())).collect();
        model.update(&tree_unflatten(p)?)?;
        let s: Vec<(String, Array)> = out_keys.into_iter().zip(out).collect();
        opt.set_state(&tree_unflatten(s)?)?;
        Ok(loss)
    }
}

/// Lazy stand-ins (a broadcast zero scalar) with the shapes and dtypes of `items`.
fn stand_ins(items: Vec<(String, Array)>) -> Result<Tree> {
    let items = items
        .into_iter()
        .map(|(k, a)| Ok((k, ops::broadcast_to(&ops::zeros(&[], a.dtype())?, a.shape())?)))
        .collect::<Result<Vec<_>>>()?;
    tree_unflatten(items)
}
