//! Convolution and pooling layers (channels-last, weights `(out, k…, in)`,
//! as MLX's `nn.Conv*`, `nn.ConvTranspose*`, `nn.MaxPool*`, `nn.AvgPool*`).

use crate::module::Param;
use crate::{init, Forward};
use kiln_core::ops::{self, PadMode};
use kiln_core::{Array, Dtype, Error, Result};

fn check_groups(op: &str, in_channels: usize, groups: usize) -> Result<()> {
    if groups == 0 || !in_channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!(
                "The number of input channels ({in_channels}) must be divisible by the number of groups ({groups})"
            ),
        ));
    }
    Ok(())
}

/// MLX's convolution initialisation: weight `(out, kernel…, in)` uniform in
/// `±1/√(in·∏kernel)`, bias zeros.
fn conv_params(
    out_channels: usize,
    kernel_size: &[usize],
    in_channels: usize,
    bias: bool,
) -> Result<(Param, Option<Param>)> {
    let fan_in = in_channels * kernel_size.iter().product::<usize>();
    let scale = (1.0 / fan_in.max(1) as f64).sqrt();
    let mut shape = vec![out_channels];
    shape.extend(kernel_size);
    shape.push(in_channels);
    let weight = Param::new(init::uniform(&shape, -scale, scale, Dtype::F32)?);
    let bias = if bias { Some(Param::new(ops::zeros(&[out_channels], Dtype::F32)?)) } else { None };
    Ok((weight, bias))
}

fn add_bias(y: Array, bias: &Option<Param>) -> Result<Array> {
    match bias {
        Some(b) => ops::add(&y, b),
        None => Ok(y),
    }
}

/// An N-d convolution (N = 1, 2, 3): [`Conv1d`], [`Conv2d`], [`Conv3d`].
#[derive(Clone, Debug, crate::Module)]
pub struct Conv<const N: usize> {
    /// `(out_channels, kernel…, in_channels / groups)`.
    pub weight: Param,
    /// `(out_channels,)`, initialised to zeros.
    pub bias: Option<Param>,
    #[module(skip)]
    stride: [usize; N],
    #[module(skip)]
    padding: [usize; N],
    #[module(skip)]
    dilation: [usize; N],
    #[module(skip)]
    groups: usize,
}

/// 1-d convolution over `(N, L, C)`.
pub type Conv1d = Conv<1>;
/// 2-d convolution over `(N, H, W, C)`.
pub type Conv2d = Conv<2>;
/// 3-d convolution over `(N, D, H, W, C)`.
pub type Conv3d = Conv<3>;

impl<const N: usize> Conv<N> {
    /// A layer initialised as MLX: weight uniform in `±1/√(fan_in)`, bias zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; N],
        stride: [usize; N],
        padding: [usize; N],
        dilation: [usize; N],
        groups: usize,
        bias: bool,
    ) -> Result<Conv<N>> {
        check_groups("Conv", in_channels, groups)?;
        let (weight, bias) = conv_params(out_channels, &kernel_size, in_channels / groups, bias)?;
        Ok(Conv { weight, bias, stride, padding, dilation, groups })
    }
    /// Kernel `k`, stride 1, no padding, no dilation, one group, with bias.
    pub fn simple(in_channels: usize, out_channels: usize, kernel_size: usize) -> Result<Conv<N>> {
        Conv::new(in_channels, out_channels, [kernel_size; N], [1; N], [0; N], [1; N], 1, true)
    }
    /// Sets the padding.
    pub fn with_padding(mut self, padding: [usize; N]) -> Conv<N> {
        self.padding = padding;
        self
    }
    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; N]) -> Conv<N> {
        self.stride = stride;
        self
    }
}

impl<const N: usize> Forward for Conv<N> {
    fn forward(&self, x: &Array) -> Result<Array> {
        let pad: Vec<i64> = self.padding.iter().map(|&p| p as i64).collect();
        let y =
            ops::conv_general(x, &self.weight, &self.stride, &pad, &pad, &self.dilation, &[1; N], self.groups, false)?;
        add_bias(y, &self.bias)
    }
}

/// An N-d transposed convolution: [`ConvTranspose1d`], [`ConvTranspose2d`], [`ConvTranspose3d`].
#[derive(Clone, Debug, crate::Module)]
pub struct ConvTranspose<const N: usize> {
    /// `(out_channels, kernel…, in_channels)`.
    pub weight: Param,
    /// `(out_channels,)`, initialised to zeros.
    pub bias: Option<Param>,
    #[module(skip)]
    stride: [usize; N],
    #[module(skip)]
    padding: [usize; N],
    #[module(skip)]
    dilation: [usize; N],
    #[module(skip)]
    output_padding: [usize; N],
}

/// 1-d transposed convolution.
pub type ConvTranspose1d = ConvTranspose<1>;
/// 2-d transposed convolution.
pub type ConvTranspose2d = ConvTranspose<2>;
/// 3-d transposed convolution.
pub type ConvTranspose3d = ConvTranspose<3>;

impl<const N: usize> ConvTranspose<N> {
    /// A layer initialised as MLX: weight uniform in `±1/√(in·k)`, bias zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; N],
        stride: [usize; N],
        padding: [usize; N],
        dilation: [usize; N],
        output_padding: [usize; N],
        bias: bool,
    ) -> Result<ConvTranspose<N>> {
        let (weight, bias) = conv_params(out_channels, &kernel_size, in_channels, bias)?;
        Ok(ConvTranspose { weight, bias, stride, padding, dilation, output_padding })
    }
}

impl<const N: usize> Forward for ConvTranspose<N> {
    fn forward(&self, x: &Array) -> Result<Array> {
        let w = &self.weight;
        let y = match N {
            1 => ops::conv_transpose1d(
                x,
                w,
                self.stride[0],
                self.padding[0],
                self.dilation[0],
                self.output_padding[0],
                1,
            )?,
            2 => ops::conv_transpose2d(
                x,
                w,
                [self.stride[0], self.stride[1]],
                [self.padding[0], self.padding[1]],
                [self.dilation[0], self.dilation[1]],
                [self.output_padding[0], self.output_padding[1]],
                1,
            )?,
            _ => ops::conv_transpose3d(
                x,
                w,
                [self.stride[0], self.stride[1], self.stride[2]],
                [self.padding[0], self.padding[1], self.padding[2]],
                [self.dilation[0], self.dilation[1], self.dilation[2]],
                [self.output_padding[0], self.output_padding[1], self.output_padding[2]],
                1,
            )?,
        };
        add_bias(y, &self.bias)
    }
}

/// Which reduction a pooling layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum (padding with -inf).
    Max,
    /// Mean (padding with zeros, which count in the mean, as MLX).
    Avg,
}

impl crate::ModuleField for PoolKind {}

/// N-d pooling over channels-last input: [`MaxPool1d`] … [`AvgPool3d`].
#[derive(Clone, Copy, Debug, crate::Module)]
pub struct Pool<const N: usize> {
    #[module(skip)]
    kind: PoolKind,
    #[module(skip)]
    kernel: [usize; N],
    #[module(skip)]
    stride: [usize; N],
    #[module(skip)]
    padding: [usize; N],
}

/// A pooling layer of the given kind (build with [`Pool::new`]).
pub type MaxPool1d = Pool<1>;
/// 2-d pooling.
pub type MaxPool2d = Pool<2>;
/// 3-d pooling.
pub type MaxPool3d = Pool<3>;
/// 1-d pooling (use `PoolKind::Avg`).
pub type AvgPool1d = Pool<1>;
/// 2-d pooling (use `PoolKind::Avg`).
pub type AvgPool2d = Pool<2>;
/// 3-d pooling (use `PoolKind::Avg`).
pub type AvgPool3d = Pool<3>;

impl<const N: usize> Pool<N> {
    /// Pooling with `kernel`, `stride` (MLX defaults to the kernel) and zero-or-more `padding`.
    /// As MLX, the padding may exceed half the kernel (a window wholly in the
    /// padding gives -inf for max pooling, 0 for average pooling).
    pub fn new(kind: PoolKind, kernel: [usize; N], stride: Option<[usize; N]>, padding: [usize; N]) -> Result<Pool<N>> {
        let stride = stride.unwrap_or(kernel);
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(Error::invalid(
                "Pool",
                format!("kernel_size {kernel:?} and stride {stride:?} must be positive."),
            ));
        }
        Ok(Pool { kind, kernel, stride, padding })
    }
    /// Max pooling with stride = kernel and no padding.
    pub fn max(kernel: [usize; N]) -> Pool<N> {
        Pool { kind: PoolKind::Max, kernel, stride: kernel, padding: [0; N] }
    }
    /// Average pooling with stride = kernel and no padding.
    pub fn avg(kernel: [usize; N]) -> Pool<N> {
        Pool { kind: PoolKind::Avg, kernel, stride: kernel, padding: [0; N] }
    }
}

impl<const N: usize> Forward for Pool<N> {
    fn forward(&self, x: &Array) -> Result<Array> {
        if x.ndim() != N + 2 {
            return Err(Error::invalid(
                "Pool",
                format!("Expected a {}-d input (N, spatial…, C), got shape {:?}.", N + 2, x.shape()),
            ));
        }
        let x = if self.padding.iter().any(|&p| p > 0) {
            let mut w = vec![(0i64, 0i64)];
            w.extend(self.padding.iter().map(|&p| (p as i64, p as i64)));
            w.push((0, 0));
            let v = if self.kind == PoolKind::Max { f64::NEG_INFINITY } else { 0.0 };
            ops::pad(x, &w, PadMode::Constant, v)?
        } else {
            x.clone()
        };
        let s = x.shape().to_vec();
        let mut out = [0usize; N];
        for d in 0..N {
            if s[d + 1] < self.kernel[d] {
                return Err(Error::invalid(
                    "Pool",
                    format!("The kernel {:?} is larger than the (padded) input {:?}.", self.kernel, &s[1..=N]),
                ));
            }
            out[d] = (s[d + 1] - self.kernel[d]) / self.stride[d] + 1;
        }
        if self.stride == self.kernel {
            // Non-overlapping windows: a crop and a reshape (differentiable, no copy).
            return self.pool_reshaped(&x, out);
        }
        // Overlapping (or gapped) windows: an as_strided view of the windows
        // is the fast forward; as_strided has no vjp, so the gradient comes
        // from the same pooling built of strided slices.
        let this = *self;
        let f = kiln_core::custom_function(move |a: &[Array]| Ok(vec![this.pool_strided(&a[0], out)?])).with_vjp(
            move |primals: &[Array], cotangents: &[Array], _: &[Array]| {
                let sliced = |a: &[Array]| Ok(vec![this.pool_sliced(&a[0], out)?]);
                Ok(kiln_core::vjp(sliced, primals, cotangents)?.1)
            },
        );
        Ok(f.call(&[x])?.remove(0))
    }
}

impl<const N: usize> Pool<N> {
    fn reduce(&self, a: &Array, axes: Vec<i32>) -> Result<Array> {
        match self.kind {
            PoolKind::Max => ops::max(a, axes, false),
            PoolKind::Avg => ops::mean(a, axes, false),
        }
    }

    /// Stride = kernel: crop to whole windows, view as (N, out₀, k₀, out₁, k₁, …, C).
    fn pool_reshaped(&self, x: &Array, out: [usize; N]) -> Result<Array> {
        let s = x.shape();
        let mut stops: Vec<i64> = s.iter().map(|&d| d as i64).collect();
        let mut shape = vec![s[0]];
        for d in 0..N {
            stops[d + 1] = (out[d] * self.kernel[d]) as i64;
            shape.extend([out[d], self.kernel[d]]);
        }
        shape.push(s[N + 1]);
        let cropped = ops::slice(x, &vec![0; N + 2], &stops, &vec![1; N + 2])?;
        self.reduce(&ops::reshape_to(&cropped, &shape)?, (0..N).map(|d| (2 + 2 * d) as i32).collect())
    }

    /// The windows as a strided view (N, out…, k…, C), reduced over k….
    fn pool_strided(&self, x: &Array, out: [usize; N]) -> Result<Array> {
        let x = ops::contiguous(x, false);
        let s = x.shape().to_vec();
        let mut strides = vec![0i64; s.len()];
        let mut acc = 1i64;
        for i in (0..s.len()).rev() {
            strides[i] = acc;
            acc *= s[i] as i64;
        }
        let mut shape = vec![s[0]];
        let mut vstrides = vec![strides[0]];
        for d in 0..N {
            shape.push(out[d]);
            vstrides.push(strides[d + 1] * self.stride[d] as i64);
        }
        for d in 0..N {
            shape.push(self.kernel[d]);
            vstrides.push(strides[d + 1]);
        }
        shape.push(s[N + 1]);
        vstrides.push(strides[N + 1]);
        let windows = ops::as_strided(&x, &shape, &vstrides, 0)?;
        self.reduce(&windows, (0..N).map(|d| (N + 1 + d) as i32).collect())
    }

    /// The same from one strided slice per kernel offset, stacked on a new
    /// leading axis (kernel offsets in row-major order) and reduced over it:
    /// differentiable with ordinary rules (ties in a max share the gradient,
    /// as MLX's).
    fn pool_sliced(&self, x: &Array, out: [usize; N]) -> Result<Array> {
        let s = x.shape();
        let k_total: usize = self.kernel.iter().product();
        let mut slices = Vec::with_capacity(k_total);
        for flat in 0..k_total {
            let mut rem = flat;
            let mut starts = vec![0i64; N + 2];
            let mut stops: Vec<i64> = s.iter().map(|&d| d as i64).collect();
            let mut steps = vec![1i64; N + 2];
            for d in (0..N).rev() {
                let o = rem % self.kernel[d];
                rem /= self.kernel[d];
                starts[d + 1] = o as i64;
                stops[d + 1] = (o + (out[d] - 1) * self.stride[d] + 1) as i64;
                steps[d + 1] = self.stride[d] as i64;
            }
            slices.push(ops::slice(x, &starts, &stops, &steps)?);
        }
        self.reduce(&ops::stack(&slices, 0)?, vec![0])
    }
}
