//! Learning-rate schedules, as MLX's `optimizers.schedulers`: functions of
//! the optimizer's step (a uint64 scalar array) that return the rate, built
//! from ordinary ops so a compiled training step can use them.

use kiln_core::ops;
use kiln_core::{Array, Dtype, Error, Result};
use std::sync::Arc;

/// A schedule: the value of a hyperparameter at a step.
pub type Schedule = Arc<dyn Fn(&Array) -> Result<Array> + Send + Sync>;

/// `init · decay_rate^step`.
pub fn exponential_decay(init: f64, decay_rate: f64) -> Schedule {
    Arc::new(move |step| ops::multiply(init, &ops::power(decay_rate, step)?))
}

/// `init · decay_rate^(step // step_size)`.
pub fn step_decay(init: f64, decay_rate: f64, step_size: u64) -> Result<Schedule> {
    if step_size < 1 {
        return Err(Error::invalid("step_decay", format!("step_size must be greater than 0, but got {step_size}.")));
    }
    Ok(Arc::new(move |step| ops::multiply(init, &ops::power(decay_rate, &ops::floor_divide(step, step_size)?)?)))
}

/// Cosine decay from `init` to `end` over `decay_steps`, then constant.
pub fn cosine_decay(init: f64, decay_steps: u64, end: f64) -> Result<Schedule> {
    if decay_steps < 1 {
        return Err(Error::invalid(
            "cosine_decay",
            format!("decay_steps must be greater than 0, but got {decay_steps}."),
        ));
    }
    Ok(Arc::new(move |step| {
        let s = ops::minimum(step, decay_steps)?;
        let c = ops::cos(&ops::multiply(std::f64::consts::PI / decay_steps as f64, &s)?)?;
        let decay = ops::multiply(0.5, &ops::add(1.0, &c)?)?;
        ops::add(end, &ops::multiply(&decay, init - end)?)
    }))
}

/// Linear from `init` to `end` over `steps`, then constant (a warm-up).
pub fn linear_schedule(init: f64, end: f64, steps: u64) -> Result<Schedule> {
    if steps < 1 {
        return Err(Error::invalid("linear_schedule", format!("steps must be greater than 0, but got {steps}.")));
    }
    Ok(Arc::new(move |step| {
        let s = ops::minimum(step, steps)?;
        ops::add(&ops::multiply(&s, (end - init) / steps as f64)?, init)
    }))
}

/// `schedules[i]` from `boundaries[i-1]` on, each seeing the step relative to
/// its start (MLX's `join_schedules`).
pub fn join_schedules(schedules: Vec<Schedule>, boundaries: &[u64]) -> Result<Schedule> {
    if schedules.is_empty() {
        return Err(Error::invalid("join_schedules", "Must provide at least 1 schedule to join."));
    }
    if schedules.len() != boundaries.len() + 1 {
        return Err(Error::invalid(
            "join_schedules",
            format!("Received {} boundaries but expected {}.", boundaries.len(), schedules.len() - 1),
        ));
    }
    let boundaries = boundaries.to_vec();
    Ok(Arc::new(move |step| {
        let mut out = schedules[0](step)?;
        for (b, s) in boundaries.iter().zip(&schedules[1..]) {
            // Unsigned steps below the boundary would wrap; the `where` discards those values.
            let shifted = ops::subtract(step, *b)?;
            out = ops::where_(&ops::less(step, *b)?, &out, &s(&shifted)?)?;
        }
        Ok(out)
    }))
}

/// A constant schedule (for hyperparameters that are not scheduled).
pub fn constant(value: f64) -> Schedule {
    Arc::new(move |_| Ok(Array::scalar_as(kiln_core::Scalar::Float(value), Dtype::F32)))
}
