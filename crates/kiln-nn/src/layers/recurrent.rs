//! Recurrent layers, as MLX's `nn.RNN`, `nn.GRU` and `nn.LSTM`.
//!
//! Inputs are `(N, L, D)` or `(L, D)` (MLX's code also accepts more leading
//! batch axes, and so do these layers); the sequence axis is the second to
//! last. Parameters carry MLX's names and layouts (`Wxh`, `Whh`, `bias`;
//! `Wx`, `Wh`, `b`, `bhn`; `Wx`, `Wh`, `bias`), so MLX checkpoints load by
//! name. The input projection of every step is one matrix product over the
//! whole sequence; the recurrence is unrolled into the graph, so gradients
//! flow through every step.
#![allow(non_snake_case)]

use crate::module::{ModuleField, Param};
use crate::{init, Forward};
use kiln_core::ops::{self, SplitSpec};
use kiln_core::{Array, Dtype, Error, Result};

/// The nonlinearity of an [`RNN`] (MLX's `nonlinearity` callable).
#[derive(Clone, Copy, Debug, Default)]
pub enum RnnNonlinearity {
    /// `tanh` (MLX's default).
    #[default]
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// Any elementwise function.
    Custom(fn(&Array) -> Result<Array>),
}

impl ModuleField for RnnNonlinearity {}

impl RnnNonlinearity {
    fn apply(self, x: &Array) -> Result<Array> {
        match self {
            RnnNonlinearity::Tanh => ops::tanh(x),
            RnnNonlinearity::Relu => crate::relu(x),
            RnnNonlinearity::Custom(f) => f(x),
        }
    }
}

/// Uniform in `±1/√hidden_size`, as MLX initialises every recurrent parameter.
fn uniform(shape: &[usize], hidden_size: usize) -> Result<Param> {
    let scale = 1.0 / (hidden_size.max(1) as f64).sqrt();
    Ok(Param::new(init::uniform(shape, -scale, scale, Dtype::F32)?))
}

/// Checks `x (…, L, D)` against the input size and returns `L`.
fn check_input(op: &str, x: &Array, input_size: usize) -> Result<usize> {
    if x.ndim() < 2 {
        return Err(Error::invalid(op, format!("The input must be (N, L, D) or (L, D), got shape {:?}.", x.shape())));
    }
    let (l, d) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    if d != input_size {
        return Err(Error::invalid(
            op,
            format!("The input has {d} features (shape {:?}) but the layer expects {input_size}.", x.shape()),
        ));
    }
    if l == 0 {
        return Err(Error::invalid(op, format!("The input sequence is empty (shape {:?}).", x.shape())));
    }
    Ok(l)
}

/// Checks a hidden or cell state `(…, H)`.
fn check_state(op: &str, what: &str, s: Option<&Array>, hidden_size: usize) -> Result<()> {
    if let Some(s) = s {
        if s.ndim() == 0 || s.shape()[s.ndim() - 1] != hidden_size {
            return Err(Error::invalid(
                op,
                format!("The {what} state must be (N, {hidden_size}) or ({hidden_size},), got shape {:?}.", s.shape()),
            ));
        }
    }
    Ok(())
}

/// `x Wᵀ + b` over the last axis.
fn project(x: &Array, w: &Array, b: Option<&Param>) -> Result<Array> {
    let wt = ops::transpose(w)?;
    match b {
        Some(b) => ops::addmm(b, x, &wt, 1.0, 1.0),
        None => ops::matmul(x, &wt),
    }
}

/// The `L` steps of `(…, L, F)` as `(…, F)` arrays.
fn steps(x: &Array, l: usize) -> Result<Vec<Array>> {
    ops::split(x, SplitSpec::Sections(l as i64), -2)?.iter().map(|s| s.squeeze_axes(&[-2])).collect()
}

/// `x[..., start:stop]`.
fn features(x: &Array, start: usize, stop: usize) -> Result<Array> {
    let n = x.ndim();
    let mut starts = vec![0i64; n];
    let mut stops: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    starts[n - 1] = start as i64;
    stops[n - 1] = stop as i64;
    ops::slice(x, &starts, &stops, &vec![1; n])
}

/// An Elman recurrent layer (MLX's `nn.RNN`):
/// `h_{t+1} = σ(W_xh x_t + W_hh h_t + b)` with `σ` = tanh by default.
/// Returns the hidden state of every step, `(N, L, H)` or `(L, H)`.
#[derive(Clone, Debug, crate::Module)]
pub struct RNN {
    /// `(hidden_size, input_size)`.
    pub Wxh: Param,
    /// `(hidden_size, hidden_size)`.
    pub Whh: Param,
    /// `(hidden_size,)`, if the layer has a bias.
    pub bias: Option<Param>,
    /// The nonlinearity `σ`.
    pub nonlinearity: RnnNonlinearity,
}

impl RNN {
    /// A layer initialised as MLX (uniform in `±1/√hidden_size`), with tanh.
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<RNN> {
        let Wxh = uniform(&[hidden_size, input_size], hidden_size)?;
        let Whh = uniform(&[hidden_size, hidden_size], hidden_size)?;
        let bias = if bias { Some(uniform(&[hidden_size], hidden_size)?) } else { None };
        Ok(RNN { Wxh, Whh, bias, nonlinearity: RnnNonlinearity::Tanh })
    }
    /// The same layer with another nonlinearity.
    pub fn with_nonlinearity(mut self, nonlinearity: RnnNonlinearity) -> RNN {
        self.nonlinearity = nonlinearity;
        self
    }
    /// `H`.
    pub fn hidden_size(&self) -> usize {
        self.Whh.shape()[0]
    }
    /// Runs the layer over `x (N, L, D)` or `(L, D)` from an optional initial
    /// hidden state `(N, H)` or `(H,)` (none: the first step has no recurrent
    /// term, as zeros would give).
    pub fn apply(&self, x: &Array, hidden: Option<&Array>) -> Result<Array> {
        let op = "RNN";
        let h_size = self.hidden_size();
        let l = check_input(op, x, self.Wxh.shape()[1])?;
        check_state(op, "hidden", hidden, h_size)?;
        let xs = steps(&project(x, &self.Wxh, self.bias.as_ref())?, l)?;
        let whh_t = ops::transpose(&self.Whh)?;
        let mut hidden = hidden.cloned();
        let mut all = Vec::with_capacity(l);
        for xt in &xs {
            let pre = match &hidden {
                Some(h) => ops::addmm(xt, h, &whh_t, 1.0, 1.0)?,
                None => xt.clone(),
            };
            let h = self.nonlinearity.apply(&pre)?;
            all.push(h.clone());
            hidden = Some(h);
        }
        ops::stack(&all, -2)
    }
}

impl Forward for RNN {
    /// [`RNN::apply`] without an initial hidden state.
    fn forward(&self, x: &Array) -> Result<Array> {
        self.apply(x, None)
    }
}

/// A gated recurrent unit layer (MLX's `nn.GRU`):
///
/// ```text
/// r = σ(W_xr x + W_hr h + b_r)
/// z = σ(W_xz x + W_hz h + b_z)
/// n = tanh(W_xn x + b_n + r ⊙ (W_hn h + b_hn))
/// h' = (1 - z) ⊙ n + z ⊙ h
/// ```
///
/// with the gate weights stacked in `r, z, n` order. Returns the hidden state
/// of every step, `(N, L, H)` or `(L, H)`.
#[derive(Clone, Debug, crate::Module)]
pub struct GRU {
    /// `(3·hidden_size, input_size)`.
    pub Wx: Param,
    /// `(3·hidden_size, hidden_size)`.
    pub Wh: Param,
    /// `(3·hidden_size,)`, if the layer has biases.
    pub b: Option<Param>,
    /// `(hidden_size,)`: the bias of the hidden projection of `n`.
    pub bhn: Option<Param>,
}

impl GRU {
    /// A layer initialised as MLX (uniform in `±1/√hidden_size`).
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<GRU> {
        let Wx = uniform(&[3 * hidden_size, input_size], hidden_size)?;
        let Wh = uniform(&[3 * hidden_size, hidden_size], hidden_size)?;
        let (b, bhn) = if bias {
            (Some(uniform(&[3 * hidden_size], hidden_size)?), Some(uniform(&[hidden_size], hidden_size)?))
        } else {
            (None, None)
        };
        Ok(GRU { Wx, Wh, b, bhn })
    }
    /// `H`.
    pub fn hidden_size(&self) -> usize {
        self.Wh.shape()[1]
    }
    /// Runs the layer over `x (N, L, D)` or `(L, D)` from an optional initial
    /// hidden state `(N, H)` or `(H,)`.
    pub fn apply(&self, x: &Array, hidden: Option<&Array>) -> Result<Array> {
        let op = "GRU";
        let h_size = self.hidden_size();
        let l = check_input(op, x, self.Wx.shape()[1])?;
        check_state(op, "hidden", hidden, h_size)?;
        let xp = project(x, &self.Wx, self.b.as_ref())?;
        let x_rz = steps(&features(&xp, 0, 2 * h_size)?, l)?;
        let x_n = steps(&features(&xp, 2 * h_size, 3 * h_size)?, l)?;
        let wh_t = ops::transpose(&self.Wh)?;
        let mut hidden = hidden.cloned();
        let mut all = Vec::with_capacity(l);
        for (rz, n) in x_rz.iter().zip(&x_n) {
            let (rz, h_proj_n) = match &hidden {
                Some(h) => {
                    let h_proj = ops::matmul(h, &wh_t)?;
                    let mut h_n = features(&h_proj, 2 * h_size, 3 * h_size)?;
                    if let Some(bhn) = &self.bhn {
                        h_n = ops::add(&h_n, bhn)?;
                    }
                    (ops::add(rz, &features(&h_proj, 0, 2 * h_size)?)?, Some(h_n))
                }
                None => (rz.clone(), None),
            };
            let rz = ops::sigmoid(&rz)?;
            let (r, z) = (features(&rz, 0, h_size)?, features(&rz, h_size, 2 * h_size)?);
            let n = match (&h_proj_n, &self.bhn) {
                (Some(h_n), _) => ops::add(n, &ops::multiply(&r, h_n)?)?,
                (None, Some(bhn)) => ops::add(n, &ops::multiply(&r, bhn)?)?,
                (None, None) => n.clone(),
            };
            let n = ops::tanh(&n)?;
            let keep = ops::subtract(1.0f32, &z)?;
            let h = match &hidden {
                Some(h) => ops::add(&ops::multiply(&keep, &n)?, &ops::multiply(&z, h)?)?,
                None => ops::multiply(&keep, &n)?,
            };
            all.push(h.clone());
            hidden = Some(h);
        }
        ops::stack(&all, -2)
    }
}

impl Forward for GRU {
    /// [`GRU::apply`] without an initial hidden state.
    fn forward(&self, x: &Array) -> Result<Array> {
        self.apply(x, None)
    }
}

/// A long short-term memory layer (MLX's `nn.LSTM`):
///
/// ```text
/// i = σ(W_xi x + W_hi h + b_i)    f = σ(W_xf x + W_hf h + b_f)
/// g = tanh(W_xg x + W_hg h + b_g) o = σ(W_xo x + W_ho h + b_o)
/// c' = f ⊙ c + i ⊙ g              h' = o ⊙ tanh(c')
/// ```
///
/// with the gate weights stacked in `i, f, g, o` order. [`LSTM::apply`]
/// returns the hidden and the cell state of every step, each `(N, L, H)` or
/// `(L, H)`.
#[derive(Clone, Debug, crate::Module)]
pub struct LSTM {
    /// `(4·hidden_size, input_size)`.
    pub Wx: Param,
    /// `(4·hidden_size, hidden_size)`.
    pub Wh: Param,
    /// `(4·hidden_size,)`, if the layer has a bias.
    pub bias: Option<Param>,
}

impl LSTM {
    /// A layer initialised as MLX (uniform in `±1/√hidden_size`).
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<LSTM> {
        let Wx = uniform(&[4 * hidden_size, input_size], hidden_size)?;
        let Wh = uniform(&[4 * hidden_size, hidden_size], hidden_size)?;
        let bias = if bias { Some(uniform(&[4 * hidden_size], hidden_size)?) } else { None };
        Ok(LSTM { Wx, Wh, bias })
    }
    /// `H`.
    pub fn hidden_size(&self) -> usize {
        self.Wh.shape()[1]
    }
    /// Runs the layer over `x (N, L, D)` or `(L, D)` from optional initial
    /// hidden and cell states `(N, H)` or `(H,)`; returns `(hidden states,
    /// cell states)` of every step.
    pub fn apply(&self, x: &Array, hidden: Option<&Array>, cell: Option<&Array>) -> Result<(Array, Array)> {
        let op = "LSTM";
        let h_size = self.hidden_size();
        let l = check_input(op, x, self.Wx.shape()[1])?;
        check_state(op, "hidden", hidden, h_size)?;
        check_state(op, "cell", cell, h_size)?;
        let xs = steps(&project(x, &self.Wx, self.bias.as_ref())?, l)?;
        let wh_t = ops::transpose(&self.Wh)?;
        let (mut hidden, mut cell) = (hidden.cloned(), cell.cloned());
        let (mut all_h, mut all_c) = (Vec::with_capacity(l), Vec::with_capacity(l));
        for xt in &xs {
            let ifgo = match &hidden {
                Some(h) => ops::addmm(xt, h, &wh_t, 1.0, 1.0)?,
                None => xt.clone(),
            };
            let gate = |k: usize| features(&ifgo, k * h_size, (k + 1) * h_size);
            let i = ops::sigmoid(&gate(0)?)?;
            let f = ops::sigmoid(&gate(1)?)?;
            let g = ops::tanh(&gate(2)?)?;
            let o = ops::sigmoid(&gate(3)?)?;
            let c = match &cell {
                Some(c) => ops::add(&ops::multiply(&f, c)?, &ops::multiply(&i, &g)?)?,
                None => ops::multiply(&i, &g)?,
            };
            let h = ops::multiply(&o, &ops::tanh(&c)?)?;
            all_h.push(h.clone());
            all_c.push(c.clone());
            hidden = Some(h);
            cell = Some(c);
        }
        Ok((ops::stack(&all_h, -2)?, ops::stack(&all_c, -2)?))
    }
}
