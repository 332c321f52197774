//! Spatial up- (and down-)sampling of channels-last arrays, as MLX's
//! `nn.Upsample`, `nn.upsample_nearest`, `nn.upsample_linear` and
//! `nn.upsample_cubic`.
//!
//! Inputs are `(N, …spatial…, C)` with one or more spatial axes; each
//! spatial size `n` becomes `⌊scale·n⌋`. The sampling positions and weights
//! are computed on the host in float32 exactly as MLX computes them, and the
//! interpolation is one gather and weighted sum per spatial axis (MLX's
//! multi-axis formulas are products of per-axis weights, so this is the same
//! sum taken axis by axis); gradients flow to the input through the gathers.
//! Linear and cubic results are floating point (float32 for integer inputs,
//! as MLX's float32 weights promote them); nearest keeps the dtype.

use crate::module::ModuleField;
use crate::Forward;
use kiln_core::ops;
use kiln_core::{Array, Error, Result};

/// The interpolation of [`Upsample`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpsampleMode {
    /// Nearest neighbour (MLX's default).
    #[default]
    Nearest,
    /// Linear along each axis (bilinear, trilinear, …).
    Linear,
    /// Cubic along each axis (Keys kernel, `a = -0.75`; `-0.5` with antialiasing).
    Cubic,
}

impl ModuleField for UpsampleMode {}

/// Validates `x` and the scales; returns the spatial sizes.
fn check(op: &str, x: &Array, scale_factor: &[f64]) -> Result<Vec<usize>> {
    if x.ndim() < 3 {
        return Err(Error::invalid(
            op,
            format!(
                "The input should have at least 1 spatial dimension which means it should be at least 3D but \
                 {}D was provided (shape {:?}).",
                x.ndim(),
                x.shape()
            ),
        ));
    }
    let dims = x.ndim() - 2;
    if scale_factor.len() != dims {
        return Err(Error::invalid(
            op,
            format!(
                "One scale per spatial dimension is required but scale_factor={scale_factor:?} and the input {:?} \
                 has {dims} spatial dimensions.",
                x.shape()
            ),
        ));
    }
    let sizes = x.shape()[1..x.ndim() - 1].to_vec();
    for (&n, &s) in sizes.iter().zip(scale_factor) {
        if !(s.is_finite() && s > 0.0) || (n > 0 && out_size(n, s) == 0) {
            return Err(Error::invalid(
                op,
                format!("The scale factors {scale_factor:?} must be positive and give a non-empty output for the input {:?}.", x.shape()),
            ));
        }
    }
    Ok(sizes)
}

/// `int(scale · n)` as Python computes it.
fn out_size(n: usize, scale: f64) -> usize {
    (scale * n as f64) as usize
}

/// One tap of the per-axis interpolation: source indices and weights, one per output position.
struct Tap {
    idx: Vec<u32>,
    w: Vec<f32>,
}

/// Gathers along spatial axis `i` (array axis `i + 1`) and sums the taps.
fn interpolate_axis(x: &Array, i: usize, taps: &[Tap]) -> Result<Array> {
    let m = taps[0].idx.len();
    // Weights shaped (M, 1, …, 1) to broadcast against (N, …, M, …, C).
    let trailing = x.ndim() - 2 - i;
    let mut wshape = vec![m];
    wshape.extend(std::iter::repeat_n(1, trailing));
    let mut out: Option<Array> = None;
    for t in taps {
        let idx = Array::from_slice(&t.idx, &[m])?;
        let w = Array::from_slice(&t.w, &wshape)?;
        let sample = ops::multiply(&ops::take(x, &idx, Some(i as i32 + 1))?, &w)?;
        out = Some(match out {
            Some(o) => ops::add(&o, &sample)?,
            None => sample,
        });
    }
    Ok(out.expect("at least one tap"))
}

/// MLX's sampling positions in the input for `m` outputs, in float32.
fn scaled_positions(n: usize, scale: f64, align_corners: bool) -> Vec<f32> {
    let m = out_size(n, scale);
    if align_corners {
        let step = ((n as f64 - 1.0) / (m.saturating_sub(1).max(1)) as f64) as f32;
        (0..m).map(|j| j as f32 * step).collect()
    } else {
        let step = 1.0 / scale;
        let start = ((m as f64 - 1.0) * step - n as f64 + 1.0) / 2.0;
        let (step, start) = (step as f32, start as f32);
        (0..m).map(|j| j as f32 * step - start).collect()
    }
}

/// Nearest-neighbour resampling of `x (N, …spatial…, C)` by one scale per
/// spatial axis (MLX's `upsample_nearest`). Integer scales repeat every
/// element; other scales pick `round((j + ½)·n/m − ½)` when enlarging and
/// `⌊j·n/m⌋` when shrinking, as MLX.
pub fn upsample_nearest(x: &Array, scale_factor: &[f64]) -> Result<Array> {
    let sizes = check("upsample_nearest", x, scale_factor)?;
    if scale_factor.iter().all(|s| s.fract() == 0.0) {
        // Repeat: (N, n1, 1, n2, 1, …, C) → broadcast → merge.
        let mut shape = vec![x.shape()[0]];
        let mut big = vec![x.shape()[0]];
        let mut out = vec![x.shape()[0]];
        for (&n, &s) in sizes.iter().zip(scale_factor) {
            shape.extend([n, 1]);
            big.extend([n, s as usize]);
            out.push(n * s as usize);
        }
        let c = x.shape()[x.ndim() - 1];
        shape.push(c);
        big.push(c);
        out.push(c);
        let y = ops::broadcast_to(&ops::reshape_to(x, &shape)?, &big)?;
        return ops::reshape_to(&y, &out);
    }
    let mut y = x.clone();
    for (i, (&n, &s)) in sizes.iter().zip(scale_factor).enumerate() {
        let m = out_size(n, s);
        let ratio = (n as f64 / m as f64) as f32;
        let idx: Vec<u32> = (0..m)
            .map(|j| {
                let j = j as f32;
                let p = if m > n { ((j + 0.5) * ratio - 0.5).round_ties_even() } else { j * ratio };
                p.max(0.0) as u32
            })
            .collect();
        y = ops::take(&y, &Array::from_slice(&idx, &[m])?, Some(i as i32 + 1))?;
    }
    Ok(y)
}

fn linear_taps(n: usize, scale: f64, align_corners: bool) -> [Tap; 2] {
    let hi = n.saturating_sub(1) as f32;
    let pos: Vec<f32> = scaled_positions(n, scale, align_corners).into_iter().map(|p| p.clamp(0.0, hi)).collect();
    let left = Tap {
        idx: pos.iter().map(|p| p.floor() as u32).collect(),
        w: pos.iter().map(|p| 1.0 - (p - p.floor())).collect(),
    };
    let right =
        Tap { idx: pos.iter().map(|p| p.ceil() as u32).collect(), w: pos.iter().map(|p| p - p.floor()).collect() };
    [left, right]
}

fn cubic_taps(n: usize, scale: f64, align_corners: bool) -> [Tap; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| (((x - 5.0) * x + 8.0) * x - 4.0) * A;
    let hi = n.saturating_sub(1) as f32;
    let pos = scaled_positions(n, scale, align_corners);
    let tap = |grid: &dyn Fn(f32) -> f32, kernel: &dyn Fn(f32) -> f32| Tap {
        idx: pos.iter().map(|&p| grid(p).clamp(0.0, hi) as u32).collect(),
        w: pos.iter().map(|&p| kernel((p - grid(p)).abs())).collect(),
    };
    [
        tap(&|p: f32| p.floor(), &near),
        tap(&|p: f32| (p + 1.0).floor(), &near),
        tap(&|p: f32| p.floor() - 1.0, &far),
        tap(&|p: f32| (p + 1.0).floor() + 1.0, &far),
    ]
}

/// MLX's antialiased taps: the kernel widened by `1/scale` when shrinking,
/// out-of-range taps dropped and the weights renormalised.
fn antialias_taps(n: usize, scale: f64, kernel: fn(f32) -> f32, radius: f64) -> Vec<Tap> {
    let pos = scaled_positions(n, scale, false);
    let inv_scale = if scale < 1.0 { 1.0 / scale } else { 1.0 };
    let num_taps = (radius * inv_scale).ceil() as i64 + 1;
    let inv = inv_scale as f32;
    let hi = n.saturating_sub(1) as f32;
    let mut idx = Vec::new();
    let mut ws = Vec::new();
    for k in -num_taps + 1..num_taps {
        let i: Vec<f32> = pos.iter().map(|p| p.floor() + k as f32).collect();
        let w: Vec<f32> = pos
            .iter()
            .zip(&i)
            .map(|(&p, &i)| if i >= 0.0 && i < n as f32 { kernel((p - i).abs() / inv) } else { 0.0 })
            .collect();
        idx.push(i);
        ws.push(w);
    }
    let mut sum = vec![0.0f32; pos.len()];
    for w in &ws {
        for (s, &v) in sum.iter_mut().zip(w) {
            *s += v;
        }
    }
    for s in &mut sum {
        if *s <= 0.0 {
            *s = 1.0;
        }
    }
    idx.into_iter()
        .zip(ws)
        .map(|(i, w)| Tap {
            idx: i.iter().map(|&v| v.clamp(0.0, hi) as u32).collect(),
            w: w.iter().zip(&sum).map(|(&w, &s)| w / s).collect(),
        })
        .collect()
}

fn triangle(x: f32) -> f32 {
    (1.0 - x).max(0.0)
}

fn cubic_half(x: f32) -> f32 {
    const A: f32 = -0.5;
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x <= 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn check_antialias(op: &str, align_corners: bool, antialias: bool) -> Result<()> {
    if antialias && align_corners {
        return Err(Error::invalid(
            op,
            "antialias=True with align_corners=True is not supported. Use align_corners=False for antialiased \
             interpolation.",
        ));
    }
    Ok(())
}

/// Linear resampling of `x (N, …spatial…, C)` by one scale per spatial axis
/// (MLX's `upsample_linear`). `align_corners` maps the corner samples onto
/// each other; `antialias` widens the triangle filter when shrinking (not
/// with `align_corners`).
pub fn upsample_linear(x: &Array, scale_factor: &[f64], align_corners: bool, antialias: bool) -> Result<Array> {
    let op = "upsample_linear";
    check_antialias(op, align_corners, antialias)?;
    let sizes = check(op, x, scale_factor)?;
    let mut y = x.clone();
    for (i, (&n, &s)) in sizes.iter().zip(scale_factor).enumerate() {
        y = if antialias {
            interpolate_axis(&y, i, &antialias_taps(n, s, triangle, 1.0))?
        } else {
            interpolate_axis(&y, i, &linear_taps(n, s, align_corners))?
        };
    }
    Ok(y)
}

/// Cubic resampling of `x (N, …spatial…, C)` by one scale per spatial axis
/// (MLX's `upsample_cubic`: Keys kernel with `a = -0.75`, border samples
/// repeated; with `antialias`, `a = -0.5` and a filter widened when
/// shrinking).
pub fn upsample_cubic(x: &Array, scale_factor: &[f64], align_corners: bool, antialias: bool) -> Result<Array> {
    let op = "upsample_cubic";
    check_antialias(op, align_corners, antialias)?;
    let sizes = check(op, x, scale_factor)?;
    let mut y = x.clone();
    for (i, (&n, &s)) in sizes.iter().zip(scale_factor).enumerate() {
        y = if antialias {
            interpolate_axis(&y, i, &antialias_taps(n, s, cubic_half, 2.0))?
        } else {
            interpolate_axis(&y, i, &cubic_taps(n, s, align_corners))?
        };
    }
    Ok(y)
}

/// Resamples the spatial axes of `(N, …spatial…, C)` input (MLX's
/// `nn.Upsample`); no parameters.
#[derive(Clone, Debug, crate::Module)]
pub struct Upsample {
    /// One scale per spatial axis, or a single scale for all of them.
    pub scale_factor: Vec<f64>,
    /// The interpolation.
    pub mode: UpsampleMode,
    /// Whether linear and cubic modes align the corner samples.
    pub align_corners: bool,
    /// Whether linear and cubic modes filter against aliasing when shrinking.
    pub antialias: bool,
}

impl Upsample {
    /// A layer with `scale_factor` (one value for every spatial axis, or one
    /// per axis). Antialiasing is not available with nearest mode or with
    /// `align_corners`.
    pub fn new(scale_factor: &[f64], mode: UpsampleMode, align_corners: bool, antialias: bool) -> Result<Upsample> {
        if scale_factor.is_empty() {
            return Err(Error::invalid("Upsample", "At least one scale factor is required."));
        }
        if antialias && mode == UpsampleMode::Nearest {
            return Err(Error::invalid("Upsample", "Antialiasing is not supported for nearest neighbor upsampling"));
        }
        check_antialias("Upsample", align_corners, antialias)?;
        Ok(Upsample { scale_factor: scale_factor.to_vec(), mode, align_corners, antialias })
    }
}

impl Forward for Upsample {
    fn forward(&self, x: &Array) -> Result<Array> {
        let dims = x.ndim().saturating_sub(2);
        let scales = if self.scale_factor.len() == 1 && dims > 0 {
            vec![self.scale_factor[0]; dims]
        } else {
            self.scale_factor.clone()
        };
        match self.mode {
            UpsampleMode::Nearest => upsample_nearest(x, &scales),
            UpsampleMode::Linear => upsample_linear(x, &scales, self.align_corners, self.antialias),
            UpsampleMode::Cubic => upsample_cubic(x, &scales, self.align_corners, self.antialias),
        }
    }
}
