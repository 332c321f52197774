//! Discrete Fourier transforms: MLX's `mx.fft` namespace (`kiln_core::fft`).
//!
//! One primitive, [`Fft`], computes an unnormalised complex, real-to-complex
//! or complex-to-real transform over a list of axes and multiplies by a
//! scale; the public functions resize the input (zero-padding or cropping to
//! the requested sizes), pick the dtype (MLX: every transform computes in
//! complex64/float32, whatever the input dtype; integers and bools are cast)
//! and the `norm` scale. `fftshift`, `fftfreq`, `stft` and `istft` are
//! compositions of ordinary ops, so every transform composes with them.
//!
//! `stft`/`istft` follow MLX 0.32.4: the output of `stft` is complex with
//! shape `(..., n_freq, n_frames)` (as `torch.stft(return_complex=True)`), a
//! window shorter than `n_fft` is centred in `n_fft` with zeros, `center` pads
//! `n_fft / 2` samples on both sides (`reflect`, `constant` or `edge`), and
//! `istft` overlap-adds the windowed inverse transforms and divides by the
//! overlap-added squared window, clamped below at `1e-8` (samples no window
//! covers come out as zero rather than NaN).

use crate::array::{Array, Data};
use crate::backend::{Backend, FftKind};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::{
    add, astype, concatenate, divide, maximum, moveaxis, multiply, ones, pad, real, reshape_to, roll, slice, swapaxes,
    zeros, PadMode,
};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::normalize_axis;

/// Normalisation of a transform (NumPy's and MLX's `norm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Norm {
    /// No scaling forward, `1/n` on the inverse (the default).
    #[default]
    Backward,
    /// `1/sqrt(n)` both ways.
    Ortho,
    /// `1/n` forward, no scaling on the inverse.
    Forward,
}

impl Norm {
    /// Parses `"backward"`, `"ortho"` or `"forward"`.
    pub fn from_name(op: &str, name: &str) -> Result<Norm> {
        match name {
            "backward" => Ok(Norm::Backward),
            "ortho" => Ok(Norm::Ortho),
            "forward" => Ok(Norm::Forward),
            _ => Err(Error::invalid(op, "Invalid norm. Expected one of {'backward', 'ortho', 'forward'}.")),
        }
    }

    /// The factor a transform of `n` points gets (`inverse`: the inverse direction).
    fn scale(self, n: usize, inverse: bool) -> f64 {
        let n = n as f64;
        match (self, inverse) {
            (Norm::Ortho, _) => 1.0 / n.sqrt(),
            (Norm::Backward, true) | (Norm::Forward, false) => 1.0 / n,
            _ => 1.0,
        }
    }
}

/// The FFT primitive: an unnormalised transform of `kind` over `axes` (in
/// order; the last is the real axis of a real transform, whose real length
/// is `n_real`), multiplied by `scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fft {
    /// Transformed axes.
    pub axes: Vec<usize>,
    /// Which transform.
    pub kind: FftKind,
    /// Real length along the last axis (real transforms; 0 otherwise).
    pub n_real: usize,
    /// Factor applied to the result.
    pub scale: f32,
}

impl Fft {
    fn apply(&self, x: &Array) -> Result<Array> {
        let (shape, dtype) = fft_out(x.shape(), &self.axes, self.kind, self.n_real);
        let x = astype(x, if self.kind == FftKind::Rfft { Dtype::F32 } else { Dtype::C64 })?;
        Ok(Array::from_op(shape, dtype, self.clone(), vec![x]))
    }
    fn with_kind(&self, kind: FftKind) -> Fft {
        Fft { kind, ..self.clone() }
    }
    /// A weight per bin along the real axis, shaped to broadcast against an
    /// array of rank `ndim`: `edge` at bin 0 (and at the Nyquist bin of an even
    /// length), `mid` elsewhere.
    fn bin_weights(&self, ndim: usize, edge: f32, mid: f32) -> Result<Array> {
        let m = self.n_real / 2 + 1;
        let w: Vec<f32> = (0..m).map(|k| if k == 0 || 2 * k == self.n_real { edge } else { mid }).collect();
        let mut shape = vec![1; ndim];
        shape[*self.axes.last().expect("an FFT has axes")] = m;
        Array::from_vec(w, &shape)
    }
}

fn fft_out(shape: &[usize], axes: &[usize], kind: FftKind, n_real: usize) -> (Vec<usize>, Dtype) {
    let mut out = shape.to_vec();
    let last = *axes.last().expect("an FFT has axes");
    match kind {
        FftKind::Rfft => out[last] = n_real / 2 + 1,
        FftKind::Irfft => out[last] = n_real,
        _ => {}
    }
    (out, if kind == FftKind::Irfft { Dtype::F32 } else { Dtype::C64 })
}

impl Primitive for Fft {
    fn name(&self) -> &'static str {
        "FFT"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.fft(&inputs[0], &self.axes, self.kind, self.n_real, self.scale, &outputs[0])?])
    }
    fn vjp(
        &self,
        _primals: &[Array],
        cotangents: &[Array],
        _argnums: &[usize],
        _outputs: &[Array],
    ) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        Ok(vec![match self.kind {
            // The adjoint of the DFT matrix is the unnormalised inverse (and vice versa).
            FftKind::Forward => self.with_kind(FftKind::Inverse).apply(g)?,
            FftKind::Inverse => self.with_kind(FftKind::Forward).apply(g)?,
            // Re(F^H P^T g) for the kept half-spectrum: the inner bins count once, not twice.
            FftKind::Rfft => {
                let w = self.bin_weights(g.ndim(), 1.0, 0.5)?;
                self.with_kind(FftKind::Irfft).apply(&multiply(g, &w)?)?
            }
            // The inner bins appear twice in the Hermitian completion.
            FftKind::Irfft => {
                let w = self.bin_weights(g.ndim(), 1.0, 2.0)?;
                multiply(&self.with_kind(FftKind::Rfft).apply(g)?, &w)?
            }
        }])
    }
    fn jvp(&self, _primals: &[Array], tangents: &[Array], _argnums: &[usize]) -> Result<Vec<Array>> {
        // Linear (over the reals) in its input.
        Ok(vec![self.apply(&tangents[0])?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(b) = axes[0] else {
            return Ok((vec![self.apply(&inputs[0])?], vec![None]));
        };
        let x = moveaxis(&inputs[0], b as i32, 0)?;
        let prim = Fft { axes: self.axes.iter().map(|a| a + 1).collect(), ..self.clone() };
        Ok((vec![prim.apply(&x)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// Crops or zero-pads `a` along `axis` to `n` elements.
fn resize_axis(a: &Array, axis: usize, n: usize) -> Result<Array> {
    let have = a.shape()[axis];
    if have == n {
        return Ok(a.clone());
    }
    if have > n {
        let nd = a.ndim();
        let mut stops: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
        stops[axis] = n as i64;
        return slice(a, &vec![0; nd], &stops, &vec![1; nd]);
    }
    let mut widths = vec![(0i64, 0i64); a.ndim()];
    widths[axis].1 = (n - have) as i64;
    pad(a, &widths, PadMode::Constant, 0)
}

/// The shared body of every transform: resolves `s` and `axes` as MLX does,
/// casts, resizes and records the primitive.
fn fftn_impl(op: &str, a: &Array, s: Option<&[i64]>, axes: Option<&[i32]>, norm: Norm, kind: FftKind) -> Result<Array> {
    let axes: Vec<usize> = match axes {
        None => {
            if s.is_some() {
                return Err(Error::invalid(op, "`axes` should not be `None` if `s` is not `None`."));
            }
            (0..a.ndim()).collect()
        }
        Some(ax) => {
            let mut v = Vec::with_capacity(ax.len());
            for &x in ax {
                let n = normalize_axis(op, x, a.ndim())?;
                if v.contains(&n) {
                    return Err(Error::invalid(op, format!("Duplicated axis received {ax:?}.")));
                }
                v.push(n);
            }
            v
        }
    };
    let real_out = kind == FftKind::Irfft;
    let sizes: Vec<i64> = match s {
        Some(s) => {
            if s.len() != axes.len() {
                return Err(Error::invalid(op, "Shape and axes have different sizes."));
            }
            s.to_vec()
        }
        None => axes
            .iter()
            .enumerate()
            .map(|(i, &ax)| {
                let d = a.shape()[ax] as i64;
                if real_out && i + 1 == axes.len() {
                    2 * (d - 1)
                } else {
                    d
                }
            })
            .collect(),
    };
    if sizes.iter().any(|&n| n <= 0) {
        return Err(Error::invalid(op, format!("Invalid FFT output size requested {sizes:?}.")));
    }
    if axes.is_empty() {
        return Ok(a.clone());
    }
    let n_last = *sizes.last().expect("non-empty") as usize;
    let inverse = matches!(kind, FftKind::Inverse | FftKind::Irfft);
    let total: usize = sizes.iter().map(|&n| n as usize).product();
    let scale = norm.scale(total, inverse) as f32;
    let mut x = astype(a, if kind == FftKind::Rfft { Dtype::F32 } else { Dtype::C64 })?;
    for (i, &ax) in axes.iter().enumerate() {
        let n = sizes[i] as usize;
        let n_in = if real_out && i + 1 == axes.len() { n / 2 + 1 } else { n };
        x = resize_axis(&x, ax, n_in)?;
    }
    let n_real = if matches!(kind, FftKind::Rfft | FftKind::Irfft) { n_last } else { 0 };
    Fft { axes, kind, n_real, scale }.apply(&x)
}

fn one_axis(n: Option<i64>, axis: i32) -> (Option<Vec<i64>>, [i32; 1]) {
    (n.map(|n| vec![n]), [axis])
}

macro_rules! one_d {
    ($(#[$m:meta])* $name:ident, $kind:expr) => {
        $(#[$m])*
        pub fn $name(a: &Array, n: Option<i64>, axis: i32, norm: Norm) -> Result<Array> {
            let (s, ax) = one_axis(n, axis);
            fftn_impl(stringify!($name), a, s.as_deref(), Some(&ax), norm, $kind)
        }
    };
}

macro_rules! two_d {
    ($(#[$m:meta])* $name:ident, $kind:expr) => {
        $(#[$m])*
        pub fn $name(a: &Array, s: Option<&[i64]>, axes: Option<&[i32]>, norm: Norm) -> Result<Array> {
            fftn_impl(stringify!($name), a, s, Some(axes.unwrap_or(&[-2, -1])), norm, $kind)
        }
    };
}

macro_rules! n_d {
    ($(#[$m:meta])* $name:ident, $kind:expr) => {
        $(#[$m])*
        pub fn $name(a: &Array, s: Option<&[i64]>, axes: Option<&[i32]>, norm: Norm) -> Result<Array> {
            fftn_impl(stringify!($name), a, s, axes, norm, $kind)
        }
    };
}

one_d!(
    /// One-dimensional DFT along `axis`; `n` crops or zero-pads the axis first.
    /// Output complex64 (any input dtype is cast).
    fft,
    FftKind::Forward
);
one_d!(
    /// One-dimensional inverse DFT along `axis` (see [`fft`]).
    ifft,
    FftKind::Inverse
);
one_d!(
    /// DFT of a real signal along `axis`: the `n / 2 + 1` non-negative
    /// frequencies. A complex input is cast to real (its imaginary part is dropped).
    rfft,
    FftKind::Rfft
);
one_d!(
    /// Inverse of [`rfft`]: `n` real samples (default `2 * (m - 1)` for `m`
    /// input bins) from `n / 2 + 1` bins; output float32.
    irfft,
    FftKind::Irfft
);
two_d!(
    /// Two-dimensional DFT over `axes` (default the last two), with sizes `s`.
    fft2,
    FftKind::Forward
);
two_d!(
    /// Two-dimensional inverse DFT (see [`fft2`]).
    ifft2,
    FftKind::Inverse
);
two_d!(
    /// Two-dimensional real DFT; the last of `axes` is the real axis.
    rfft2,
    FftKind::Rfft
);
two_d!(
    /// Inverse of [`rfft2`].
    irfft2,
    FftKind::Irfft
);
n_d!(
    /// n-dimensional DFT over `axes` (default: all, or an error when only `s` is given), with sizes `s`.
    fftn,
    FftKind::Forward
);
n_d!(
    /// n-dimensional inverse DFT (see [`fftn`]).
    ifftn,
    FftKind::Inverse
);
n_d!(
    /// n-dimensional real DFT; the last of `axes` is the real axis and keeps `s[-1] / 2 + 1` bins.
    rfftn,
    FftKind::Rfft
);
n_d!(
    /// Inverse of [`rfftn`]: the last axis has `s[-1]` real samples (default `2 * (m - 1)`).
    irfftn,
    FftKind::Irfft
);

fn shift(op: &str, a: &Array, axes: Option<&[i32]>, inverse: bool) -> Result<Array> {
    let axes: Vec<i32> = match axes {
        Some(ax) => ax.to_vec(),
        None => (0..a.ndim() as i32).collect(),
    };
    let mut shifts = Vec::with_capacity(axes.len());
    for &ax in &axes {
        let n = a.shape()[normalize_axis(op, ax, a.ndim())?] as i64;
        shifts.push(if inverse { -(n / 2) } else { n / 2 });
    }
    if axes.is_empty() {
        return Ok(a.clone());
    }
    roll(a, &shifts, Some(&axes))
}

/// Moves the zero-frequency term to the centre along `axes` (default all).
/// A repeated axis is shifted again, as in MLX.
pub fn fftshift(a: &Array, axes: Option<&[i32]>) -> Result<Array> {
    shift("fftshift", a, axes, false)
}

/// Inverse of [`fftshift`].
pub fn ifftshift(a: &Array, axes: Option<&[i32]>) -> Result<Array> {
    shift("ifftshift", a, axes, true)
}

fn freq_check(op: &str, n: i64, d: f64) -> Result<()> {
    if n <= 0 {
        return Err(Error::invalid(op, "`n` must be greater than 0."));
    }
    if d == 0.0 {
        return Err(Error::invalid(op, "`d` must be non-zero."));
    }
    Ok(())
}

/// Sample frequencies of an `n`-point DFT with sample spacing `d` (float32):
/// `[0, 1, ..., (n-1)/2, -(n/2), ..., -1] / (d n)`.
pub fn fftfreq(n: i64, d: f64) -> Result<Array> {
    freq_check("fftfreq", n, d)?;
    let v: Vec<f32> =
        (0..n).map(|i| (if i < (n + 1) / 2 { i } else { i - n }) as f32 / (d * n as f64) as f32).collect();
    Array::from_vec(v, &[n as usize])
}

/// Sample frequencies of [`rfft`]: `[0, 1, ..., n/2] / (d n)` (float32).
pub fn rfftfreq(n: i64, d: f64) -> Result<Array> {
    freq_check("rfftfreq", n, d)?;
    let v: Vec<f32> = (0..n / 2 + 1).map(|i| i as f32 / (d * n as f64) as f32).collect();
    Array::from_vec(v, &[(n / 2 + 1) as usize])
}

/// Options of [`stft`] (MLX's keyword arguments and defaults).
#[derive(Clone, Debug)]
pub struct StftOptions {
    /// Transform size (default 2048).
    pub n_fft: usize,
    /// Samples between frames (default `n_fft / 4`).
    pub hop_length: Option<usize>,
    /// Length of the default rectangular window (default `n_fft`).
    pub win_length: Option<usize>,
    /// A 1-d window, centred in `n_fft` with zeros (default rectangular).
    pub window: Option<Array>,
    /// Pad `n_fft / 2` samples on both ends so frames are centred (default true).
    pub center: bool,
    /// Padding used when `center`: `"reflect"` (default), `"constant"` or `"edge"`.
    pub pad_mode: String,
    /// Normalisation of each frame's transform.
    pub norm: Norm,
    /// Keep only non-negative frequencies (default: true for real input, false for complex).
    pub onesided: Option<bool>,
}

impl Default for StftOptions {
    fn default() -> Self {
        StftOptions {
            n_fft: 2048,
            hop_length: None,
            win_length: None,
            window: None,
            center: true,
            pad_mode: "reflect".into(),
            norm: Norm::Backward,
            onesided: None,
        }
    }
}

/// Options of [`istft`] (MLX's keyword arguments and defaults).
#[derive(Clone, Debug)]
pub struct IstftOptions {
    /// Transform size (default `2 * (n_freq - 1)` when onesided, else `n_freq`).
    pub n_fft: Option<usize>,
    /// Samples between frames (default `n_fft / 4`).
    pub hop_length: Option<usize>,
    /// Length of the default rectangular window (default `n_fft`).
    pub win_length: Option<usize>,
    /// The analysis window (default rectangular).
    pub window: Option<Array>,
    /// Whether the STFT was centred (default true).
    pub center: bool,
    /// Normalisation used by the STFT.
    pub norm: Norm,
    /// Whether the STFT holds only non-negative frequencies (default true).
    pub onesided: Option<bool>,
    /// Crop or zero-pad the signal to this length.
    pub length: Option<usize>,
}

impl Default for IstftOptions {
    fn default() -> Self {
        IstftOptions {
            n_fft: None,
            hop_length: None,
            win_length: None,
            window: None,
            center: true,
            norm: Norm::Backward,
            onesided: None,
            length: None,
        }
    }
}

/// The window of `n_fft` points: `window` (or a rectangle of `win_length`) centred with zeros.
fn full_window(op: &str, n_fft: usize, win_length: Option<usize>, window: Option<&Array>) -> Result<Array> {
    let w = match window {
        Some(w) => {
            if w.ndim() != 1 {
                return Err(Error::invalid(op, "window must be a one-dimensional array."));
            }
            astype(w, Dtype::F32)?
        }
        None => ones(&[win_length.unwrap_or(n_fft)], Dtype::F32)?,
    };
    let wl = w.shape()[0];
    if wl > n_fft || win_length.is_some_and(|l| l > n_fft) {
        return Err(Error::invalid(op, "window length must not exceed n_fft."));
    }
    let lo = (n_fft - wl) / 2;
    pad(&w, &[(lo as i64, (n_fft - wl - lo) as i64)], PadMode::Constant, 0)
}

/// Slices `[start, stop)` of the last axis.
fn slice_last(a: &Array, start: usize, stop: usize) -> Result<Array> {
    let nd = a.ndim();
    let mut starts = vec![0i64; nd];
    let mut stops: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    starts[nd - 1] = start as i64;
    stops[nd - 1] = stop as i64;
    slice(a, &starts, &stops, &vec![1; nd])
}

/// `(..., L)` → `(..., frames, n_fft)` with frame `f` = samples `f*hop .. f*hop + n_fft`.
fn frame(x: &Array, n_fft: usize, hop: usize, frames: usize) -> Result<Array> {
    let k = n_fft.div_ceil(hop);
    let need = (frames + k - 1) * hop;
    let x = resize_axis(x, x.ndim() - 1, need)?;
    let mut lead = x.shape()[..x.ndim() - 1].to_vec();
    lead.extend([frames, hop]);
    let chunks =
        (0..k).map(|j| reshape_to(&slice_last(&x, j * hop, (j + frames) * hop)?, &lead)).collect::<Result<Vec<_>>>()?;
    let f = concatenate(&chunks, Some(-1))?;
    slice_last(&f, 0, n_fft)
}

/// `(..., frames, n_fft)` → `(..., n_fft + hop * (frames - 1))`: the overlap-add of the frames.
fn overlap_add(f: &Array, hop: usize) -> Result<Array> {
    let nd = f.ndim();
    let (frames, n_fft) = (f.shape()[nd - 2], f.shape()[nd - 1]);
    let k = n_fft.div_ceil(hop);
    let f = resize_axis(f, nd - 1, k * hop)?;
    let mut out: Option<Array> = None;
    for j in 0..k {
        let chunk = slice_last(&f, j * hop, (j + 1) * hop)?;
        let mut widths = vec![(0i64, 0i64); nd];
        widths[nd - 2] = (j as i64, (k - 1 - j) as i64);
        let c = pad(&chunk, &widths, PadMode::Constant, 0)?;
        out = Some(match out {
            None => c,
            Some(o) => add(&o, &c)?,
        });
    }
    let out = out.expect("k >= 1");
    let mut shape = out.shape()[..nd - 2].to_vec();
    shape.push((frames + k - 1) * hop);
    let flat = reshape_to(&out, &shape)?;
    slice_last(&flat, 0, n_fft + hop * (frames - 1))
}

/// Short-time Fourier transform of the last axis of `x` (MLX 0.32.4's
/// `mx.fft.stft`): complex64 of shape `(..., n_freq, n_frames)`; see the
/// module notes for the conventions.
pub fn stft(x: &Array, opts: &StftOptions) -> Result<Array> {
    let op = "stft";
    if x.ndim() == 0 {
        return Err(Error::invalid(op, "Input must have at least one dimension."));
    }
    let n_fft = opts.n_fft;
    if n_fft == 0 {
        return Err(Error::invalid(op, "n_fft must be positive."));
    }
    let hop = opts.hop_length.unwrap_or(n_fft / 4);
    if hop == 0 {
        return Err(Error::invalid(op, "hop_length must be positive."));
    }
    let window = full_window(op, n_fft, opts.win_length, opts.window.as_ref())?;
    let complex = x.dtype().is_complex();
    let onesided = opts.onesided.unwrap_or(!complex);
    let mut x = astype(x, if complex { Dtype::C64 } else { Dtype::F32 })?;
    if opts.center {
        let mode = PadMode::from_name(&opts.pad_mode)?;
        if mode == PadMode::Symmetric {
            return Err(Error::invalid("pad", "Invalid padding mode (symmetric) passed to pad"));
        }
        let mut widths = vec![(0i64, 0i64); x.ndim()];
        widths[x.ndim() - 1] = ((n_fft / 2) as i64, (n_fft / 2) as i64);
        x = pad(&x, &widths, mode, 0)?;
    }
    let len = x.shape()[x.ndim() - 1];
    if len < n_fft {
        return Err(Error::invalid(op, "Input is too short for the given n_fft."));
    }
    let frames = 1 + (len - n_fft) / hop;
    let f = multiply(&frame(&x, n_fft, hop, frames)?, &window)?;
    let spec = if onesided { rfft(&f, None, -1, opts.norm)? } else { fft(&f, None, -1, opts.norm)? };
    swapaxes(&spec, -1, -2)
}

/// Inverse of [`stft`] (MLX 0.32.4's `mx.fft.istft`): overlap-adds the
/// windowed inverse transforms of the frames of `s` (`(..., n_freq, n_frames)`)
/// and divides by the overlap-added squared window; float32.
pub fn istft(s: &Array, opts: &IstftOptions) -> Result<Array> {
    let op = "istft";
    if s.ndim() < 2 {
        return Err(Error::invalid(op, "Input must have at least two dimensions (freq, frames)."));
    }
    let nd = s.ndim();
    let n_freq = s.shape()[nd - 2];
    let onesided = opts.onesided.unwrap_or(true);
    let n_fft = opts.n_fft.unwrap_or(if onesided { 2 * n_freq.saturating_sub(1) } else { n_freq });
    if n_fft == 0 {
        return Err(Error::invalid(op, "n_fft must be positive."));
    }
    let hop = opts.hop_length.unwrap_or(n_fft / 4);
    if hop == 0 {
        return Err(Error::invalid(op, "hop_length must be positive."));
    }
    let window = full_window(op, n_fft, opts.win_length, opts.window.as_ref())?;
    let frames_t = swapaxes(&astype(s, Dtype::C64)?, -1, -2)?;
    let n_frames = frames_t.shape()[nd - 2];
    let pad_lo = if opts.center { n_fft / 2 } else { 0 };
    let natural = (n_fft + hop * n_frames.saturating_sub(1)).saturating_sub(2 * pad_lo);
    let length = opts.length.unwrap_or(natural);
    if n_frames == 0 {
        let mut shape = s.shape()[..nd - 2].to_vec();
        shape.push(length);
        return zeros(&shape, Dtype::F32);
    }
    let frames = if onesided {
        irfft(&frames_t, Some(n_fft as i64), -1, opts.norm)?
    } else {
        real(&ifft(&frames_t, Some(n_fft as i64), -1, opts.norm)?)?
    };
    let y = overlap_add(&multiply(&frames, &window)?, hop)?;
    let w2 = multiply(&window, &window)?;
    let env = overlap_add(&crate::ops::broadcast_to(&w2, &[n_frames, n_fft])?, hop)?;
    let y = divide(&y, &maximum(&env, 1e-8f32)?)?;
    let total = y.shape()[y.ndim() - 1];
    let stop = (pad_lo + length).min(total);
    let y = slice_last(&y, pad_lo.min(stop), stop)?;
    let have = y.shape()[y.ndim() - 1];
    resize_axis(&y, y.ndim() - 1, have.max(length))
}
