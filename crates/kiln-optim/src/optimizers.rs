//! The optimizers. Each is a set of hyperparameters plus a [`Base`] that
//! holds the step, the learning rate (constant or scheduled) and the
//! per-parameter state; `apply_single` is MLX's update formula for one
//! parameter, written in MLX's order of operations so results match.

use crate::schedule::Schedule;
use kiln_core::ops::{self, Operand};
use kiln_core::{tree_flatten, tree_unflatten, Array, Dtype, Error, Result, Scalar, Tree};
use kiln_nn::ModuleExt;
use std::collections::BTreeMap;

/// One parameter's optimizer state (e.g. Adam's `m` and `v`), by name.
pub type ParamState = BTreeMap<String, Array>;

/// A learning rate: a constant or a [`Schedule`] of the step.
#[derive(Clone)]
pub enum LearningRate {
    /// A fixed rate.
    Constant(f64),
    /// A rate computed from the step before each update.
    Scheduled(Schedule),
}

impl From<f64> for LearningRate {
    fn from(x: f64) -> Self {
        LearningRate::Constant(x)
    }
}
impl From<f32> for LearningRate {
    fn from(x: f32) -> Self {
        LearningRate::Constant(x as f64)
    }
}
impl From<Schedule> for LearningRate {
    fn from(s: Schedule) -> Self {
        LearningRate::Scheduled(s)
    }
}

/// An optimizer: turns gradients into parameter updates and keeps state.
pub trait Optimizer {
    /// New values of the parameters that have gradients (a tree shaped like
    /// `gradients`), advancing the step and the optimizer state.
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree>;
    /// The whole state as a tree (`step`, `learning_rate`, and per-parameter
    /// arrays keyed `<parameter key>.<name>`), for checkpoints.
    fn state(&self) -> Result<Tree>;
    /// Restores a state produced by [`Optimizer::state`].
    fn set_state(&mut self, state: &Tree) -> Result<()>;
    /// The current learning rate (the last scheduled value).
    fn learning_rate(&self) -> Array;
    /// Fixes the learning rate to a constant.
    fn set_learning_rate(&mut self, lr: f64);
    /// The number of updates applied so far (a uint64 scalar array).
    fn step(&self) -> Array;
    /// Applies `gradients` to the model's parameters (MLX's `optimizer.update(model, grads)`).
    fn update<M: ModuleExt>(&mut self, model: &mut M, gradients: &Tree) -> Result<()>
    where
        Self: Sized,
    {
        let params = model.parameters();
        let new = self.apply_gradients(gradients, &params)?;
        model.update(&new)
    }
}

/// Step, learning rate and per-parameter state shared by every optimizer.
#[derive(Clone)]
pub struct Base {
    step: Array,
    lr: Array,
    /// Whether `learning_rate` belongs in the state (Adafactor without one has none, as MLX).
    has_lr: bool,
    schedule: Option<Schedule>,
    state: BTreeMap<String, ParamState>,
}

impl Base {
    /// A fresh state at step 0.
    pub fn new(lr: impl Into<LearningRate>) -> Result<Base> {
        let step = Array::scalar(0u64);
        let (lr, schedule) = match lr.into() {
            LearningRate::Constant(x) => (Array::scalar_as(Scalar::Float(x), Dtype::F32), None),
            LearningRate::Scheduled(s) => (s(&step)?, Some(s)),
        };
        Ok(Base { step, lr, has_lr: true, schedule, state: BTreeMap::new() })
    }

    /// Runs one update: schedules the learning rate at the current step,
    /// increments the step, then calls `single(key, gradient, parameter,
    /// state, base)` for every gradient, initialising missing state with `init`.
    fn apply(
        &mut self,
        gradients: &Tree,
        parameters: &Tree,
        init: impl Fn(&Array) -> Result<ParamState>,
        mut single: impl FnMut(&Array, &Array, &mut ParamState, &Base) -> Result<Array>,
    ) -> Result<Tree> {
        if let Some(s) = &self.schedule {
            self.lr = s(&self.step)?;
        }
        self.step = ops::add(&self.step, 1u64)?;
        let mut out = Vec::new();
        for (k, g) in tree_flatten(gradients) {
            let p = parameters.array(&k).ok_or_else(|| {
                Error::invalid("Optimizer.apply_gradients", format!("The gradient {k} has no matching parameter."))
            })?;
            if p.shape() != g.shape() {
                return Err(Error::invalid(
                    "Optimizer.apply_gradients",
                    format!("The gradient {k} has shape {:?} but the parameter has shape {:?}.", g.shape(), p.shape()),
                ));
            }
            let mut st = match self.state.remove(&k) {
                Some(s) => s,
                None => init(p)?,
            };
            let new = single(&g, p, &mut st, self);
            self.state.insert(k.clone(), st);
            out.push((k, new?));
        }
        tree_unflatten(out)
    }

    /// The learning rate cast to `dtype` (MLX's `learning_rate.astype(gradient.dtype)`).
    pub fn lr_as(&self, dtype: Dtype) -> Result<Array> {
        ops::astype(&self.lr, dtype)
    }

    fn to_tree(&self) -> Result<Tree> {
        let mut items = vec![("step".to_string(), self.step.clone())];
        if self.has_lr {
            items.push(("learning_rate".to_string(), self.lr.clone()));
        }
        for (k, st) in &self.state {
            for (name, a) in st {
                items.push((format!("{k}.{name}"), a.clone()));
            }
        }
        tree_unflatten(items)
    }

    fn load_tree(&mut self, tree: &Tree) -> Result<()> {
        let mut step = None;
        let mut lr = None;
        let mut state: BTreeMap<String, ParamState> = BTreeMap::new();
        for (k, a) in tree_flatten(tree) {
            match k.as_str() {
                "step" => step = Some(a),
                "learning_rate" => lr = Some(a),
                _ => {
                    let Some((param, name)) = k.rsplit_once('.') else {
                        return Err(Error::invalid("Optimizer.set_state", format!("Unexpected state key {k}.")));
                    };
                    state.entry(param.to_string()).or_default().insert(name.to_string(), a);
                }
            }
        }
        let step = step.ok_or_else(|| Error::invalid("Optimizer.set_state", "The state has no step."))?;
        if step.ndim() != 0 || step.dtype() != Dtype::U64 {
            return Err(Error::invalid(
                "Optimizer.set_state",
                format!("The step must be a uint64 scalar, got {} of shape {:?}.", step.dtype(), step.shape()),
            ));
        }
        self.step = step;
        if let Some(lr) = lr {
            self.lr = lr;
        }
        self.state = state;
        Ok(())
    }
}

macro_rules! optimizer_common {
    () => {
        fn state(&self) -> Result<Tree> {
            self.base.to_tree()
        }
        fn set_state(&mut self, state: &Tree) -> Result<()> {
            self.base.load_tree(state)
        }
        fn learning_rate(&self) -> Array {
            self.base.lr.clone()
        }
        fn set_learning_rate(&mut self, lr: f64) {
            self.base.schedule = None;
            self.base.lr = Array::scalar_as(Scalar::Float(lr), Dtype::F32);
        }
        fn step(&self) -> Array {
            self.base.step.clone()
        }
    };
}

fn zeros_state(p: &Array, names: &[&str]) -> Result<ParamState> {
    names.iter().map(|n| Ok((n.to_string(), ops::zeros_like(p)?))).collect()
}

fn get(st: &ParamState, name: &str) -> Array {
    st.get(name).cloned().expect("optimizer state initialised with this name")
}

/// `a·x`, with `a` a weakly typed Python-style float.
fn scale(a: f64, x: &Array) -> Result<Array> {
    ops::multiply(a, x)
}

/// The running average `β·old + (1-β)·new`, in MLX's order of operations.
fn ema(beta: f64, old: &Array, new: &Array) -> Result<Array> {
    ops::add(&scale(beta, old)?, &scale(1.0 - beta, new)?)
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov
/// momentum and (L2) weight decay.
#[derive(Clone)]
pub struct Sgd {
    base: Base,
    /// Momentum strength μ.
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Dampening τ of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `lr` (a constant or a schedule).
    pub fn new(lr: impl Into<LearningRate>) -> Sgd {
        Sgd::with(lr, 0.0, 0.0, 0.0, false).expect("plain SGD is valid")
    }
    /// SGD with every option. Nesterov needs momentum and no dampening.
    pub fn with(
        lr: impl Into<LearningRate>,
        momentum: f64,
        weight_decay: f64,
        dampening: f64,
        nesterov: bool,
    ) -> Result<Sgd> {
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(Error::invalid("SGD", "Nesterov momentum requires a momentum and zero dampening."));
        }
        Ok(Sgd { base: Base::new(lr)?, momentum, weight_decay, dampening, nesterov })
    }
}

impl Optimizer for Sgd {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let h = SgdHyper {
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            dampening: self.dampening,
            nesterov: self.nesterov,
        };
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["v"]),
            move |g, p, st, b| {
                let names: &'static [&'static str] = if h.momentum <= 0.0 { &[] } else { &["v"] };
                fused_update(&format!("{h:?}"), names, g, p, st, b, move |g, p, st, b| sgd_single(h, g, p, st, b))
            },
        )
    }
    optimizer_common!();
}

/// SGD's hyper-parameters (what a compiled update freezes).
#[derive(Clone, Copy, Debug)]
struct SgdHyper {
    momentum: f64,
    weight_decay: f64,
    dampening: f64,
    nesterov: bool,
}

/// SGD's update of one parameter.
fn sgd_single(h: SgdHyper, g: &Array, p: &Array, st: &mut ParamState, b: &Base) -> Result<Array> {
    let mut g = g.clone();
    if h.weight_decay != 0.0 {
        g = ops::add(&g, &scale(h.weight_decay, p)?)?;
    }
    let lr = b.lr_as(g.dtype())?;
    if h.momentum <= 0.0 {
        return ops::subtract(p, &ops::multiply(&lr, &g)?);
    }
    let mut v = scale(h.momentum, &get(st, "v"))?;
    v = if h.dampening > 0.0 { ops::add(&v, &scale(1.0 - h.dampening, &g)?)? } else { ops::add(&v, &g)? };
    let update = if h.nesterov { ops::add(&g, &scale(h.momentum, &v)?)? } else { v.clone() };
    st.insert("v".into(), v);
    ops::subtract(p, &ops::multiply(&lr, &update)?)
}

/// RMSprop: divides by a running RMS of the gradients.
#[derive(Clone)]
pub struct RmsProp {
    base: Base,
    /// Smoothing constant α.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl RmsProp {
    /// RMSprop with MLX's defaults (α = 0.99, ε = 1e-8).
    pub fn new(lr: impl Into<LearningRate>) -> Result<RmsProp> {
        RmsProp::with(lr, 0.99, 1e-8)
    }
    /// RMSprop with every option.
    pub fn with(lr: impl Into<LearningRate>, alpha: f64, eps: f64) -> Result<RmsProp> {
        if alpha < 0.0 {
            return Err(Error::invalid(
                "RMSprop",
                format!("RMSprop alpha should be >=0, {alpha} was provided instead"),
            ));
        }
        if eps <= 0.0 {
            return Err(Error::invalid("RMSprop", format!("RMSprop epsilon should be >0, {eps} was provided instead")));
        }
        Ok(RmsProp { base: Base::new(lr)?, alpha, eps })
    }
}

impl Optimizer for RmsProp {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let (alpha, eps) = (self.alpha, self.eps);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["v"]),
            |g, p, st, b| {
                let lr = b.lr_as(g.dtype())?;
                let v = ema(alpha, &get(st, "v"), &ops::square(g)?)?;
                st.insert("v".into(), v.clone());
                ops::subtract(p, &ops::divide(&ops::multiply(&lr, g)?, &ops::add(&ops::sqrt(&v)?, eps)?)?)
            },
        )
    }
    optimizer_common!();
}

/// Adagrad: divides by the root of the summed squared gradients.
#[derive(Clone)]
pub struct Adagrad {
    base: Base,
    /// Added to the denominator.
    pub eps: f64,
}

impl Adagrad {
    /// Adagrad with ε = 1e-8.
    pub fn new(lr: impl Into<LearningRate>) -> Result<Adagrad> {
        Adagrad::with(lr, 1e-8)
    }
    /// Adagrad with a given ε (> 0).
    pub fn with(lr: impl Into<LearningRate>, eps: f64) -> Result<Adagrad> {
        if eps <= 0.0 {
            return Err(Error::invalid("Adagrad", format!("Adagrad epsilon should be >0, {eps} was provided instead")));
        }
        Ok(Adagrad { base: Base::new(lr)?, eps })
    }
}

impl Optimizer for Adagrad {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let eps = self.eps;
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["v"]),
            |g, p, st, b| {
                let lr = b.lr_as(g.dtype())?;
                let v = ops::add(&get(st, "v"), &ops::square(g)?)?;
                st.insert("v".into(), v.clone());
                ops::subtract(p, &ops::divide(&ops::multiply(&lr, g)?, &ops::add(&ops::sqrt(&v)?, eps)?)?)
            },
        )
    }
    optimizer_common!();
}

/// AdaDelta: scales by running averages of squared updates and gradients.
#[derive(Clone)]
pub struct AdaDelta {
    base: Base,
    /// Decay ρ of the running averages.
    pub rho: f64,
    /// Added inside the square roots.
    pub eps: f64,
}

impl AdaDelta {
    /// AdaDelta with MLX's defaults (ρ = 0.9, ε = 1e-6).
    pub fn new(lr: impl Into<LearningRate>) -> Result<AdaDelta> {
        AdaDelta::with(lr, 0.9, 1e-6)
    }
    /// AdaDelta with every option.
    pub fn with(lr: impl Into<LearningRate>, rho: f64, eps: f64) -> Result<AdaDelta> {
        if rho < 0.0 {
            return Err(Error::invalid("AdaDelta", format!("AdaDelta rho should be >=0, {rho} was provided instead")));
        }
        if eps <= 0.0 {
            return Err(Error::invalid(
                "AdaDelta",
                format!("AdaDelta epsilon should be >0, {eps} was provided instead"),
            ));
        }
        Ok(AdaDelta { base: Base::new(lr)?, rho, eps })
    }
}

impl Optimizer for AdaDelta {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let (rho, eps) = (self.rho, self.eps);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["u", "v"]),
            |g, p, st, b| {
                let lr = b.lr_as(g.dtype())?;
                let (v, u) = (get(st, "v"), get(st, "u"));
                let v = ema(rho, &v, &ops::square(g)?)?;
                let d = ops::multiply(
                    &ops::divide(&ops::sqrt(&ops::add(&u, eps)?)?, &ops::sqrt(&ops::add(&v, eps)?)?)?,
                    g,
                )?;
                let u = ema(rho, &u, &ops::square(&d)?)?;
                st.insert("v".into(), v);
                st.insert("u".into(), u);
                ops::subtract(p, &ops::multiply(&lr, &d)?)
            },
        )
    }
    optimizer_common!();
}

/// Adam's moment update and step; shared by [`Adam`] and [`AdamW`].
fn adam_single(
    g: &Array,
    p: &Array,
    st: &mut ParamState,
    b: &Base,
    betas: (f64, f64),
    eps: f64,
    bias_correction: bool,
) -> Result<Array> {
    let lr = b.lr_as(g.dtype())?;
    let (b1, b2) = betas;
    let m = ema(b1, &get(st, "m"), g)?;
    let v = ema(b2, &get(st, "v"), &ops::square(g)?)?;
    st.insert("m".into(), m.clone());
    st.insert("v".into(), v.clone());
    if bias_correction {
        let c1 = ops::astype(&ops::divide(&lr, &ops::subtract(1, &ops::power(b1, &b.step)?)?)?, g.dtype())?;
        let c2 = ops::astype(&ops::rsqrt(&ops::subtract(1, &ops::power(b2, &b.step)?)?)?, g.dtype())?;
        let num = ops::multiply(&c1, &m)?;
        let den = ops::add(&ops::multiply(&ops::sqrt(&v)?, &c2)?, eps)?;
        ops::subtract(p, &ops::divide(&num, &den)?)
    } else {
        ops::subtract(p, &ops::divide(&ops::multiply(&lr, &m)?, &ops::add(&ops::sqrt(&v)?, eps)?)?)
    }
}

/// Adam's (or AdamW's, with `decay`) update of one parameter. Outside any
/// transform it runs as one compiled, fused function of `(g, p, m, v, lr,
/// step)` (see [`fused_update`]); under a transform (a traced [`crate::TrainStep`],
/// `grad` of an update) it records the ops directly.
#[allow(clippy::too_many_arguments)]
fn adam_update(
    g: &Array,
    p: &Array,
    st: &mut ParamState,
    b: &Base,
    betas: (f64, f64),
    eps: f64,
    bias_correction: bool,
    decay: Option<f64>,
) -> Result<Array> {
    let single = move |g: &Array, p: &Array, st: &mut ParamState, b: &Base| -> Result<Array> {
        match decay {
            Some(wd) => {
                let lr = b.lr_as(g.dtype())?;
                let decayed = ops::multiply(p, &ops::subtract(1, &ops::multiply(&lr, wd)?)?)?;
                adam_single(g, &decayed, st, b, betas, eps, bias_correction)
            }
            None => adam_single(g, p, st, b, betas, eps, bias_correction),
        }
    };
    let key = format!("adam {:?} {eps:e} {bias_correction} {decay:?}", betas);
    fused_update(&key, &["m", "v"], g, p, st, b, single)
}

/// A compiled per-parameter update, cached per thread by a description of
/// the optimizer's hyper-parameters (they are frozen into the trace).
type FusedFn = std::rc::Rc<kiln_core::transforms::Compiled>;

thread_local! {
    static FUSED: std::cell::RefCell<std::collections::HashMap<String, FusedFn>> = Default::default();
}

/// Runs `single(g, p, st, b)` — an elementwise update of one parameter and
/// its state arrays `names` — as a shapeless compiled function of `(g, p,
/// state..., lr, step)`, so its chain of elementwise ops runs as a few fused
/// kernels instead of one pass over memory per op. Results are identical
/// (compile replays the same primitives; fusion is bit-exact). Inside a
/// transform, or with compilation disabled, `single` runs directly.
fn fused_update(
    key: &str,
    names: &'static [&'static str],
    g: &Array,
    p: &Array,
    st: &mut ParamState,
    b: &Base,
    single: impl Fn(&Array, &Array, &mut ParamState, &Base) -> Result<Array> + Clone + 'static,
) -> Result<Array> {
    let state: Vec<Array> = names.iter().map(|n| get(st, n)).collect();
    let traced = [g, p, &b.step, &b.lr].into_iter().chain(&state).any(Array::is_tracer);
    if traced || !kiln_core::transforms::is_compile_enabled() {
        return single(g, p, st, b);
    }
    let f = FUSED.with(|c| {
        c.borrow_mut()
            .entry(key.to_string())
            .or_insert_with(|| {
                let single = single.clone();
                let fun = move |a: &[Array]| -> Result<Vec<Array>> {
                    let (g, p, lr, step) = (&a[0], &a[1], &a[2], &a[3]);
                    let mut st: ParamState = names.iter().map(|n| n.to_string()).zip(a[4..].iter().cloned()).collect();
                    let base = Base {
                        step: step.clone(),
                        lr: lr.clone(),
                        has_lr: true,
                        schedule: None,
                        state: BTreeMap::new(),
                    };
                    let new = single(g, p, &mut st, &base)?;
                    let mut out = vec![new];
                    out.extend(names.iter().map(|n| get(&st, n)));
                    Ok(out)
                };
                let opts = kiln_core::transforms::CompileOptions { shapeless: true, ..Default::default() };
                std::rc::Rc::new(kiln_core::transforms::Compiled::new(fun, opts))
            })
            .clone()
    });
    let mut args = vec![g.clone(), p.clone(), b.lr.clone(), b.step.clone()];
    args.extend(state);
    // A trace the compiler cannot handle (it should not happen for these
    // elementwise updates) falls back to the ops themselves.
    let Ok(out) = f.call(&args) else {
        return single(g, p, st, b);
    };
    let mut out = out.into_iter();
    let new = out.next().ok_or_else(|| Error::runtime("Optimizer", "The fused update returned nothing."))?;
    for (n, a) in names.iter().zip(out) {
        st.insert(n.to_string(), a);
    }
    Ok(new)
}

/// Adam. As in MLX, bias correction is off by default.
#[derive(Clone)]
pub struct Adam {
    base: Base,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Divide the moments by `1 - βᵗ`.
    pub bias_correction: bool,
}

impl Adam {
    /// Adam with MLX's defaults (β = (0.9, 0.999), ε = 1e-8, no bias correction).
    pub fn new(lr: impl Into<LearningRate>) -> Result<Adam> {
        Adam::with(lr, (0.9, 0.999), 1e-8, false)
    }
    /// Adam with every option.
    pub fn with(lr: impl Into<LearningRate>, betas: (f64, f64), eps: f64, bias_correction: bool) -> Result<Adam> {
        Ok(Adam { base: Base::new(lr)?, betas, eps, bias_correction })
    }
}

impl Optimizer for Adam {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let (betas, eps, bc) = (self.betas, self.eps, self.bias_correction);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["m", "v"]),
            |g, p, st, b| adam_update(g, p, st, b, betas, eps, bc, None),
        )
    }
    optimizer_common!();
}

/// AdamW: Adam with decoupled weight decay (`p·(1 - lr·λ)` before the step).
#[derive(Clone)]
pub struct AdamW {
    base: Base,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay λ.
    pub weight_decay: f64,
    /// Divide the moments by `1 - βᵗ`.
    pub bias_correction: bool,
}

impl AdamW {
    /// AdamW with MLX's defaults (β = (0.9, 0.999), ε = 1e-8, λ = 0.01, no bias correction).
    pub fn new(lr: impl Into<LearningRate>) -> Result<AdamW> {
        AdamW::with(lr, (0.9, 0.999), 1e-8, 0.01, false)
    }
    /// AdamW with every option.
    pub fn with(
        lr: impl Into<LearningRate>,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
        bias_correction: bool,
    ) -> Result<AdamW> {
        Ok(AdamW { base: Base::new(lr)?, betas, eps, weight_decay, bias_correction })
    }
}

impl Optimizer for AdamW {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let (betas, eps, wd, bc) = (self.betas, self.eps, self.weight_decay, self.bias_correction);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["m", "v"]),
            |g, p, st, b| adam_update(g, p, st, b, betas, eps, bc, Some(wd)),
        )
    }
    optimizer_common!();
}

/// Adamax: Adam with an infinity-norm second moment.
#[derive(Clone)]
pub struct Adamax {
    base: Base,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
}

impl Adamax {
    /// Adamax with β = (0.9, 0.999), ε = 1e-8.
    pub fn new(lr: impl Into<LearningRate>) -> Result<Adamax> {
        Ok(Adamax { base: Base::new(lr)?, betas: (0.9, 0.999), eps: 1e-8 })
    }
}

impl Optimizer for Adamax {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let ((b1, b2), eps) = (self.betas, self.eps);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["m", "v"]),
            |g, p, st, b| {
                let lr = b.lr_as(g.dtype())?;
                let m = ema(b1, &get(st, "m"), g)?;
                let v = ops::maximum(&scale(b2, &get(st, "v"))?, &ops::abs(g)?)?;
                st.insert("m".into(), m.clone());
                st.insert("v".into(), v.clone());
                ops::subtract(p, &ops::divide(&ops::multiply(&lr, &m)?, &ops::add(&v, eps)?)?)
            },
        )
    }
    optimizer_common!();
}

/// Lion: steps by the sign of an interpolated momentum.
#[derive(Clone)]
pub struct Lion {
    base: Base,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Decoupled weight decay λ.
    pub weight_decay: f64,
}

impl Lion {
    /// Lion with β = (0.9, 0.99) and no weight decay.
    pub fn new(lr: impl Into<LearningRate>) -> Result<Lion> {
        Lion::with(lr, (0.9, 0.99), 0.0)
    }
    /// Lion with every option.
    pub fn with(lr: impl Into<LearningRate>, betas: (f64, f64), weight_decay: f64) -> Result<Lion> {
        Ok(Lion { base: Base::new(lr)?, betas, weight_decay })
    }
}

impl Optimizer for Lion {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let ((b1, b2), wd) = (self.betas, self.weight_decay);
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["m"]),
            |g, p, st, b| {
                let lr = b.lr_as(g.dtype())?;
                let m = get(st, "m");
                let c = ema(b1, &m, g)?;
                st.insert("m".into(), ema(b2, &m, g)?);
                let mut p = p.clone();
                if wd > 0.0 {
                    p = ops::multiply(&ops::subtract(1, &ops::multiply(&lr, wd)?)?, &p)?;
                }
                ops::subtract(&p, &ops::multiply(&lr, &ops::sign(&c)?)?)
            },
        )
    }
    optimizer_common!();
}

/// Adafactor: factored second moments for matrices, optional relative step
/// size and parameter scaling (MLX's defaults).
#[derive(Clone)]
pub struct Adafactor {
    base: Base,
    has_lr: bool,
    /// `(ε₁, ε₂)`: added to squared gradients, and the floor of the parameter scale.
    pub eps: (f64, f64),
    /// Updates are scaled down so their RMS is at most this.
    pub clip_threshold: f64,
    /// Exponent of the second-moment decay.
    pub decay_rate: f64,
    /// First-moment decay; `None` keeps no first moment.
    pub beta_1: Option<f64>,
    /// Weight decay.
    pub weight_decay: f64,
    /// Scale the step by the parameter's RMS.
    pub scale_parameter: bool,
    /// Use `min(0.01, 1/√step)` instead of the learning rate.
    pub relative_step: bool,
    /// With `relative_step`, warm up as `1e-6·step`.
    pub warmup_init: bool,
}

impl Adafactor {
    /// Adafactor with MLX's defaults (relative step, no learning rate).
    pub fn new() -> Result<Adafactor> {
        let mut base = Base::new(0.0)?;
        base.has_lr = false;
        Ok(Adafactor {
            base,
            has_lr: false,
            eps: (1e-30, 1e-3),
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta_1: None,
            weight_decay: 0.0,
            scale_parameter: true,
            relative_step: true,
            warmup_init: false,
        })
    }
    /// Adafactor with a learning rate (used when `relative_step` is false).
    pub fn with_lr(lr: impl Into<LearningRate>) -> Result<Adafactor> {
        let mut a = Adafactor::new()?;
        a.base = Base::new(lr)?;
        a.has_lr = true;
        Ok(a)
    }
}

fn rms(x: &Array) -> Result<Array> {
    ops::sqrt(&ops::mean(&ops::square(x)?, ops::Axes::All, false)?)
}

impl Optimizer for Adafactor {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let h = self.clone();
        if !h.relative_step && !h.has_lr {
            return Err(Error::invalid("Adafactor", "A learning rate is required when relative_step is false."));
        }
        let beta_1 = h.beta_1;
        self.base.apply(
            gradients,
            parameters,
            |p| {
                let mut st = ParamState::new();
                if p.ndim() >= 2 {
                    let s = p.shape();
                    st.insert("exp_avg_sq_row".into(), ops::zeros(&s[..s.len() - 1], p.dtype())?);
                    let mut col = s[..s.len() - 2].to_vec();
                    col.push(s[s.len() - 1]);
                    st.insert("exp_avg_sq_col".into(), ops::zeros(&col, p.dtype())?);
                } else {
                    st.insert("exp_avg_sq".into(), ops::zeros_like(p)?);
                }
                if beta_1.is_some() {
                    st.insert("exp_avg".into(), ops::zeros_like(p)?);
                }
                Ok(st)
            },
            |g, p, st, b| {
                let step = &b.step;
                let p_rms = rms(p)?;
                let rel = if h.relative_step {
                    let min_step: Operand =
                        if h.warmup_init { ops::multiply(1e-6, step)?.into() } else { 0.01f64.into() };
                    ops::minimum(min_step, &ops::rsqrt(step)?)?
                } else {
                    b.lr.clone()
                };
                let rel = ops::astype(&rel, p_rms.dtype())?;
                let lr = if h.scale_parameter {
                    ops::multiply(&ops::maximum(h.eps.1, &p_rms)?, &rel)?
                } else {
                    ops::multiply(1.0, &rel)?
                };
                let beta_2 = ops::subtract(1.0, &ops::astype(&ops::power(step, h.decay_rate)?, p_rms.dtype())?)?;
                let one_minus = ops::subtract(1, &beta_2)?;
                let mut update = ops::add(&ops::square(g)?, h.eps.0)?;
                if g.ndim() >= 2 {
                    let row = ops::add(
                        &ops::multiply(&beta_2, &get(st, "exp_avg_sq_row"))?,
                        &ops::multiply(&one_minus, &ops::mean(&update, -1, false)?)?,
                    )?;
                    let col = ops::add(
                        &ops::multiply(&beta_2, &get(st, "exp_avg_sq_col"))?,
                        &ops::multiply(&one_minus, &ops::mean(&update, -2, false)?)?,
                    )?;
                    st.insert("exp_avg_sq_row".into(), row.clone());
                    st.insert("exp_avg_sq_col".into(), col.clone());
                    let r = ops::rsqrt(&ops::divide(&row, &ops::mean(&row, -1, true)?)?)?;
                    let c = ops::rsqrt(&col)?;
                    update = ops::multiply(&ops::expand_dims(&r, -1)?, &ops::expand_dims(&c, -2)?)?;
                    update = ops::multiply(&update, g)?;
                } else {
                    let e = ops::add(
                        &ops::multiply(&beta_2, &get(st, "exp_avg_sq"))?,
                        &ops::multiply(&one_minus, &update)?,
                    )?;
                    st.insert("exp_avg_sq".into(), e.clone());
                    update = ops::multiply(&ops::rsqrt(&e)?, g)?;
                }
                update = ops::divide(&update, &ops::maximum(1.0, &ops::divide(&rms(&update)?, h.clip_threshold)?)?)?;
                update = ops::multiply(&lr, &update)?;
                if let Some(b1) = beta_1 {
                    let e = ema(b1, &get(st, "exp_avg"), &update)?;
                    st.insert("exp_avg".into(), e.clone());
                    update = e;
                }
                let mut p = p.clone();
                if h.weight_decay != 0.0 {
                    p = ops::add(&p, &ops::multiply(&p, &ops::multiply(-h.weight_decay, &lr)?)?)?;
                }
                ops::subtract(&p, &update)
            },
        )
    }
    optimizer_common!();
}

/// Muon: momentum whose update for matrices is orthogonalised by five
/// Newton–Schulz iterations.
#[derive(Clone)]
pub struct Muon {
    base: Base,
    /// Momentum.
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Newton–Schulz iterations.
    pub ns_steps: usize,
}

impl Muon {
    /// Muon with MLX's defaults (momentum 0.95, weight decay 0.01, Nesterov, 5 steps).
    pub fn new(lr: impl Into<LearningRate>) -> Result<Muon> {
        Ok(Muon { base: Base::new(lr)?, momentum: 0.95, weight_decay: 0.01, nesterov: true, ns_steps: 5 })
    }
}

fn newton_schulz5(x: &Array, steps: usize) -> Result<Array> {
    let (a, b, c) = (3.4445, -4.775, 2.0315);
    let transpose = x.shape()[0] > x.shape()[1];
    let mut x = if transpose { ops::transpose(x)? } else { x.clone() };
    let n = kiln_core::linalg::norm(&x, None, None, true)?;
    x = ops::divide(&x, &ops::add(&n, 1e-7)?)?;
    for _ in 0..steps {
        let am = ops::matmul(&x, &ops::transpose(&x)?)?;
        let bm = ops::addmm(&scale(b, &am)?, &am, &am, c, 1.0)?;
        x = ops::addmm(&scale(a, &x)?, &bm, &x, 1.0, 1.0)?;
    }
    if transpose {
        x = ops::transpose(&x)?;
    }
    Ok(x)
}

impl Optimizer for Muon {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let h = self.clone();
        self.base.apply(
            gradients,
            parameters,
            |p| zeros_state(p, &["v"]),
            |g, p, st, b| {
                let mut g = g.clone();
                if h.weight_decay != 0.0 {
                    g = ops::add(&g, &scale(h.weight_decay, p)?)?;
                }
                let v = ema(h.momentum, &get(st, "v"), &g)?;
                st.insert("v".into(), v.clone());
                let mut update = if h.nesterov {
                    ops::add(&ops::multiply(&g, 1.0 - h.momentum)?, &ops::multiply(&v, h.momentum)?)?
                } else {
                    v
                };
                let mut lr = b.lr_as(g.dtype())?;
                if update.ndim() >= 2 {
                    let shape = update.shape().to_vec();
                    let flat = ops::reshape_to(&update, &[shape[0], shape[1..].iter().product()])?;
                    update = ops::reshape_to(&newton_schulz5(&flat, h.ns_steps)?, &shape)?;
                    let (r, c) = (shape[shape.len() - 2] as f64, shape[shape.len() - 1] as f64);
                    lr = ops::multiply(&lr, (r / c).max(1.0).sqrt())?;
                }
                ops::subtract(p, &ops::multiply(&lr, &update)?)
            },
        )
    }
    optimizer_common!();
}

/// A predicate choosing parameters for one optimizer of a [`MultiOptimizer`]: `(key, gradient)`.
pub type Filter = Box<dyn Fn(&str, &Array) -> bool + Send + Sync>;

/// Several optimizers, each for the parameters its filter accepts (the last
/// takes the rest), as MLX's `MultiOptimizer`.
pub struct MultiOptimizer {
    optimizers: Vec<Box<dyn Optimizer + Send>>,
    filters: Vec<Filter>,
}

impl MultiOptimizer {
    /// `filters` has one predicate fewer than `optimizers`.
    pub fn new(optimizers: Vec<Box<dyn Optimizer + Send>>, filters: Vec<Filter>) -> Result<MultiOptimizer> {
        if optimizers.is_empty() || filters.len() + 1 != optimizers.len() {
            return Err(Error::invalid(
                "MultiOptimizer",
                format!("Given {} filters but {} needed.", filters.len(), optimizers.len().saturating_sub(1)),
            ));
        }
        Ok(MultiOptimizer { optimizers, filters })
    }
}

impl Optimizer for MultiOptimizer {
    fn apply_gradients(&mut self, gradients: &Tree, parameters: &Tree) -> Result<Tree> {
        let mut parts: Vec<Vec<(String, Array)>> = vec![Vec::new(); self.optimizers.len()];
        for (k, g) in tree_flatten(gradients) {
            let i = self.filters.iter().position(|f| f(&k, &g)).unwrap_or(self.optimizers.len() - 1);
            parts[i].push((k, g));
        }
        let mut out = Vec::new();
        for (o, part) in self.optimizers.iter_mut().zip(parts) {
            if part.is_empty() {
                continue;
            }
            out.extend(tree_flatten(&o.apply_gradients(&tree_unflatten(part)?, parameters)?));
        }
        tree_unflatten(out)
    }
    fn state(&self) -> Result<Tree> {
        let mut items = Vec::new();
        for (i, o) in self.optimizers.iter().enumerate() {
            for (k, a) in tree_flatten(&o.state()?) {
                items.push((format!("states.{i}.{k}"), a));
            }
        }
        tree_unflatten(items)
    }
    fn set_state(&mut self, state: &Tree) -> Result<()> {
        let Some(Tree::List(states)) = state.get("states") else {
            return Err(Error::invalid("MultiOptimizer.set_state", "Invalid state provided"));
        };
        if states.len() != self.optimizers.len() {
            return Err(Error::invalid("MultiOptimizer.set_state", "Invalid state provided"));
        }
        for (o, s) in self.optimizers.iter_mut().zip(states) {
            o.set_state(s)?;
        }
        Ok(())
    }
    fn learning_rate(&self) -> Array {
        self.optimizers[0].learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        for o in &mut self.optimizers {
            o.set_learning_rate(lr);
        }
    }
    fn step(&self) -> Array {
        self.optimizers[0].step()
    }
}
