//! Rule coverage: every primitive Kiln defines is enumerated here, must
//! declare a vjp, jvp and vmap rule or a documented reason for lacking one,
//! and every declared rule is checked — vjp/jvp against central finite
//! differences in f64, vmap against a loop over the batch.

mod common;

use common::{check_grad_eps, check_vmap, Rng};
use kiln_core::ops;
use kiln_core::primitive::{Rule, ALL_PRIMITIVES};
use kiln_core::{Array, Axes, Dtype, Result};
use std::collections::{BTreeMap, BTreeSet};

type F = fn(&[Array]) -> Result<Array>;

/// A function that records the primitive, and the inputs to check it at.
pub(crate) struct Sample {
    pub(crate) f: F,
    /// (shape, low, high) of each f64 input.
    pub(crate) inputs: Vec<(Vec<usize>, f64, f64)>,
}

fn s(f: F, inputs: &[(&[usize], f64, f64)]) -> Sample {
    Sample { f, inputs: inputs.iter().map(|(sh, lo, hi)| (sh.to_vec(), *lo, *hi)).collect() }
}

const X: &[usize] = &[2, 3];

pub(crate) fn samples() -> BTreeMap<&'static str, Sample> {
    let mut m: BTreeMap<&'static str, Sample> = BTreeMap::new();
    let any = (X, -2.0, 2.0);
    let pos = (X, 0.5, 2.0);
    let unit = (X, -0.9, 0.9);
    // Unary
    m.insert("Abs", s(|a| ops::abs(&a[0]), &[any]));
    m.insert("Negative", s(|a| ops::negative(&a[0]), &[any]));
    m.insert("Sign", s(|a| ops::sign(&a[0]), &[any]));
    m.insert("Floor", s(|a| ops::floor(&a[0]), &[any]));
    m.insert("Ceil", s(|a| ops::ceil(&a[0]), &[any]));
    m.insert("Trunc", s(|a| ops::trunc(&a[0]), &[any]));
    m.insert("Round", s(|a| ops::round(&a[0], 0), &[any]));
    m.insert("Sqrt", s(|a| ops::sqrt(&a[0]), &[pos]));
    m.insert("Rsqrt", s(|a| ops::rsqrt(&a[0]), &[pos]));
    m.insert("Square", s(|a| ops::square(&a[0]), &[any]));
    m.insert("Reciprocal", s(|a| ops::reciprocal(&a[0]), &[pos]));
    m.insert("Exp", s(|a| ops::exp(&a[0]), &[any]));
    m.insert("Expm1", s(|a| ops::expm1(&a[0]), &[any]));
    m.insert("Log", s(|a| ops::log(&a[0]), &[pos]));
    m.insert("Log2", s(|a| ops::log2(&a[0]), &[pos]));
    m.insert("Log10", s(|a| ops::log10(&a[0]), &[pos]));
    m.insert("Log1p", s(|a| ops::log1p(&a[0]), &[pos]));
    m.insert("Sin", s(|a| ops::sin(&a[0]), &[any]));
    m.insert("Cos", s(|a| ops::cos(&a[0]), &[any]));
    m.insert("Tan", s(|a| ops::tan(&a[0]), &[unit]));
    m.insert("ArcSin", s(|a| ops::arcsin(&a[0]), &[unit]));
    m.insert("ArcCos", s(|a| ops::arccos(&a[0]), &[unit]));
    m.insert("ArcTan", s(|a| ops::arctan(&a[0]), &[any]));
    m.insert("Sinh", s(|a| ops::sinh(&a[0]), &[any]));
    m.insert("Cosh", s(|a| ops::cosh(&a[0]), &[any]));
    m.insert("Tanh", s(|a| ops::tanh(&a[0]), &[any]));
    m.insert("ArcSinh", s(|a| ops::arcsinh(&a[0]), &[any]));
    m.insert("ArcCosh", s(|a| ops::arccosh(&a[0]), &[(X, 1.5, 3.0)]));
    m.insert("ArcTanh", s(|a| ops::arctanh(&a[0]), &[unit]));
    m.insert("Erf", s(|a| ops::erf(&a[0]), &[any]));
    m.insert("ErfInv", s(|a| ops::erfinv(&a[0]), &[unit]));
    m.insert("Sigmoid", s(|a| ops::sigmoid(&a[0]), &[any]));
    m.insert("Conjugate", s(|a| ops::conjugate(&a[0]), &[any]));
    m.insert("Real", s(|a| ops::real(&a[0]), &[any]));
    m.insert("Imag", s(|a| ops::imag(&a[0]), &[any]));
    m.insert("IsNaN", s(|a| ops::isnan(&a[0]), &[any]));
    m.insert("IsInf", s(|a| ops::isinf(&a[0]), &[any]));
    m.insert("IsPosInf", s(|a| ops::isposinf(&a[0]), &[any]));
    m.insert("IsNegInf", s(|a| ops::isneginf(&a[0]), &[any]));
    m.insert("IsFinite", s(|a| ops::isfinite(&a[0]), &[any]));
    m.insert("LogicalNot", s(|a| ops::logical_not(&a[0]), &[any]));
    m.insert("BitwiseInvert", s(|a| ops::bitwise_invert(&ops::astype(&a[0], Dtype::I32)?), &[any]));
    m.insert("NanToNum", s(|a| ops::nan_to_num(&a[0], 0.0, None, None), &[any]));
    // Binary (second operand broadcasts)
    let b = (&[3usize][..], -2.0, 2.0);
    let bpos = (&[3usize][..], 0.5, 2.0);
    m.insert("Add", s(|a| ops::add(&a[0], &a[1]), &[any, b]));
    m.insert("Subtract", s(|a| ops::subtract(&a[0], &a[1]), &[any, b]));
    m.insert("Multiply", s(|a| ops::multiply(&a[0], &a[1]), &[any, b]));
    m.insert("Divide", s(|a| ops::divide(&a[0], &a[1]), &[any, bpos]));
    m.insert("FloorDivide", s(|a| ops::floor_divide(&a[0], &a[1]), &[any, bpos]));
    m.insert("Remainder", s(|a| ops::remainder(&a[0], &a[1]), &[any, bpos]));
    m.insert("DivMod", s(|a| Ok(ops::divmod(&a[0], &a[1])?.1), &[any, bpos]));
    m.insert("Power", s(|a| ops::power(&a[0], &a[1]), &[pos, b]));
    m.insert("Maximum", s(|a| ops::maximum(&a[0], &a[1]), &[any, b]));
    m.insert("Minimum", s(|a| ops::minimum(&a[0], &a[1]), &[any, b]));
    m.insert("LogAddExp", s(|a| ops::logaddexp(&a[0], &a[1]), &[any, b]));
    m.insert("ArcTan2", s(|a| ops::arctan2(&a[0], &a[1]), &[any, bpos]));
    m.insert("Equal", s(|a| ops::equal(&a[0], &a[1]), &[any, b]));
    m.insert("NotEqual", s(|a| ops::not_equal(&a[0], &a[1]), &[any, b]));
    m.insert("Greater", s(|a| ops::greater(&a[0], &a[1]), &[any, b]));
    m.insert("GreaterEqual", s(|a| ops::greater_equal(&a[0], &a[1]), &[any, b]));
    m.insert("Less", s(|a| ops::less(&a[0], &a[1]), &[any, b]));
    m.insert("LessEqual", s(|a| ops::less_equal(&a[0], &a[1]), &[any, b]));
    m.insert("EqualNaN", s(|a| ops::array_equal(&a[0], &a[1], true), &[any, any]));
    m.insert("LogicalAnd", s(|a| ops::logical_and(&a[0], &a[1]), &[any, b]));
    m.insert("LogicalOr", s(|a| ops::logical_or(&a[0], &a[1]), &[any, b]));
    m.insert(
        "BitwiseAnd",
        s(|a| ops::bitwise_and(&ops::astype(&a[0], Dtype::I32)?, &ops::astype(&a[1], Dtype::I32)?), &[any, b]),
    );
    m.insert(
        "BitwiseOr",
        s(|a| ops::bitwise_or(&ops::astype(&a[0], Dtype::I32)?, &ops::astype(&a[1], Dtype::I32)?), &[any, b]),
    );
    m.insert(
        "BitwiseXor",
        s(|a| ops::bitwise_xor(&ops::astype(&a[0], Dtype::I32)?, &ops::astype(&a[1], Dtype::I32)?), &[any, b]),
    );
    m.insert(
        "LeftShift",
        s(
            |a| ops::left_shift(&ops::astype(&a[0], Dtype::I32)?, &ops::astype(&ops::abs(&a[1])?, Dtype::I32)?),
            &[any, b],
        ),
    );
    m.insert(
        "RightShift",
        s(
            |a| ops::right_shift(&ops::astype(&a[0], Dtype::I32)?, &ops::astype(&ops::abs(&a[1])?, Dtype::I32)?),
            &[any, b],
        ),
    );
    m.insert("Select", s(|a| ops::where_(&ops::greater(&a[0], 0.0)?, &a[0], &a[1]), &[any, b]));
    // Creation and conversion
    m.insert("Full", s(|a| ops::add(&a[0], &ops::full(&[2, 3], 1.5, Dtype::F64)?), &[any]));
    m.insert("Arange", s(|a| ops::multiply(&a[0], &ops::arange(0.0, 3.0, 1.0, Dtype::F64)?), &[any]));
    m.insert("AsType", s(|a| ops::astype(&ops::astype(&a[0], Dtype::F32)?, Dtype::F64), &[any]));
    m.insert("TriMask", s(|a| ops::tril(&a[0], 0), &[any]));
    m.insert("View", s(|a| ops::view(&a[0], Dtype::I64), &[any]));
    // Shape and layout
    m.insert("Reshape", s(|a| ops::reshape(&a[0], &[3, 2]), &[any]));
    m.insert("Broadcast", s(|a| ops::broadcast_to(&a[0], &[4, 2, 3]), &[any]));
    m.insert("Transpose", s(|a| ops::transpose(&a[0]), &[any]));
    m.insert("Diagonal", s(|a| ops::diagonal(&a[0], 0, 0, 1), &[(&[3, 3], -2.0, 2.0)]));
    m.insert("AsStrided", s(|a| ops::as_strided(&a[0], &[2, 2], &[1, 1], 1), &[any]));
    m.insert("Contiguous", s(|a| Ok(ops::contiguous(&ops::transpose(&a[0])?, false)), &[any]));
    m.insert("Slice", s(|a| ops::slice(&a[0], &[1, 2], &[2, 0], &[1, -1]), &[any]));
    m.insert(
        "SliceUpdate",
        s(|a| ops::slice_update(&a[0], &a[1], &[0, 0], &[1, 3], &[1, 1]), &[any, (&[1, 3], -2.0, 2.0)]),
    );
    m.insert(
        "Concatenate",
        s(|a| ops::concatenate(&[a[0].clone(), a[1].clone()], Some(0)), &[any, (&[1, 3], -2.0, 2.0)]),
    );
    // Reductions, scans, sorting
    m.insert("Sum", s(|a| ops::sum(&a[0], 1, false), &[any]));
    m.insert("Prod", s(|a| ops::prod(&a[0], 0, true), &[any]));
    m.insert("Max", s(|a| ops::max(&a[0], 1, false), &[any]));
    m.insert("Min", s(|a| ops::min(&a[0], Axes::All, false), &[any]));
    m.insert("All", s(|a| ops::all(&a[0], 1, false), &[any]));
    m.insert("Any", s(|a| ops::any(&a[0], 0, false), &[any]));
    m.insert("ArgMax", s(|a| ops::argmax(&a[0], Some(1), false), &[any]));
    m.insert("ArgMin", s(|a| ops::argmin(&a[0], Some(0), true), &[any]));
    m.insert("Softmax", s(|a| ops::softmax(&a[0], -1, false), &[any]));
    m.insert("LogSumExp", s(|a| ops::logsumexp(&a[0], 1, false), &[any]));
    m.insert("Sort", s(|a| ops::median(&a[0], 1, false), &[(&[2, 4], -2.0, 2.0)]));
    m.insert("TakeLast", s(|a| ops::median(&a[0], 1, true), &[any]));
    m.insert("CumSum", s(|a| ops::cumsum(&a[0], Some(1), false, true), &[any]));
    m.insert("CumProd", s(|a| ops::cumprod(&a[0], Some(1), true, true), &[any]));
    m.insert("CumMax", s(|a| ops::cummax(&a[0], Some(1), false, true), &[any]));
    m.insert("CumMin", s(|a| ops::cummin(&a[0], Some(0), false, true), &[any]));
    m.insert("CumLogaddexp", s(|a| ops::logcumsumexp(&a[0], Some(1), false, true), &[any]));
    // Transform helpers
    m.insert("Copy", s(|a| Ok(kiln_core::stop_gradient(&a[0])), &[any]));
    m.insert("StopGradient", s(|a| Ok(kiln_core::stop_gradient(&a[0])), &[any]));
    // Convolution
    m.insert(
        "Convolution",
        s(
            |a| ops::conv_general(&a[0], &a[1], &[2], &[1], &[0], &[1], &[2], 1, true),
            &[(&[1, 4, 2], -2.0, 2.0), (&[3, 2, 2], -2.0, 2.0)],
        ),
    );
    // matmul family
    m.insert("Matmul", s(|a| ops::matmul(&a[0], &a[1]), &[(&[2, 3], -2.0, 2.0), (&[3, 2], -2.0, 2.0)]));
    m.insert(
        "GatherMM",
        s(
            |a| {
                let idx = Array::from_slice(&[2u32, 0], &[2])?;
                ops::gather_mm(&a[0], &a[1], Some(&idx), None, false)
            },
            &[(&[3, 2, 3], -2.0, 2.0), (&[3, 2], -2.0, 2.0)],
        ),
    );
    // File loading (io)
    m.insert(
        "Load",
        s(
            |a| {
                let npy = kiln_core::io::to_npy_bytes(&ops::full(&[2, 3], 0.5, Dtype::F64)?)?;
                ops::add(&a[0], &kiln_core::io::load_npy_bytes(npy)?)
            },
            &[any],
        ),
    );
    // Indexing: gather and scatter (index arrays are built inside: integer, not differentiated)
    {
        fn ix(v: &[i32]) -> Array {
            Array::from_slice(v, &[v.len()]).unwrap()
        }
        let upd = (&[2usize, 1, 3][..], -2.0, 2.0);
        m.insert("Gather", s(|a| ops::take(&a[0], &ix(&[1, 0, -1]), Some(0)), &[any]));
        m.insert("Scatter", s(|a| ops::scatter(&a[0], &[ix(&[1, 0])], &a[1], &[0]), &[any, upd]));
        m.insert("ScatterAdd", s(|a| ops::scatter_add(&a[0], &[ix(&[1, 1])], &a[1], &[0]), &[any, upd]));
        m.insert("ScatterProd", s(|a| ops::scatter_prod(&a[0], &[ix(&[1, 1])], &a[1], &[0]), &[any, upd]));
        m.insert("ScatterMax", s(|a| ops::scatter_max(&a[0], &[ix(&[0, 1])], &a[1], &[0]), &[any, upd]));
        m.insert("ScatterMin", s(|a| ops::scatter_min(&a[0], &[ix(&[1, 0])], &a[1], &[0]), &[any, upd]));
    }
    // linalg (inputs made well conditioned inside each sample)
    {
        use kiln_core::linalg;
        fn mm(a: &Array, b: &Array) -> Result<Array> {
            ops::sum(&ops::multiply(&ops::expand_dims(a, -1)?, &ops::expand_dims(b, -3)?)?, -2, false)
        }
        fn shift(a: &Array, d: f64) -> Result<Array> {
            let n = a.shape()[a.ndim() - 1] as i64;
            ops::add(a, &ops::multiply(&ops::eye(n, None, 0, a.dtype())?, d)?)
        }
        fn spd(a: &Array) -> Result<Array> {
            shift(&mm(a, &ops::swapaxes(a, -1, -2)?)?, 3.0)
        }
        let sq: (&[usize], f64, f64) = (&[3, 3], -1.0, 1.0);
        let tall: (&[usize], f64, f64) = (&[4, 3], -1.0, 1.0);
        let rhs: (&[usize], f64, f64) = (&[3, 2], -1.0, 1.0);
        m.insert("Inverse", s(|a| linalg::inv(&shift(&a[0], 3.0)?), &[sq]));
        m.insert("TriInverse", s(|a| linalg::tri_inv(&shift(&a[0], 3.0)?, false), &[sq]));
        m.insert("Cholesky", s(|a| linalg::cholesky(&spd(&a[0])?, false), &[sq]));
        m.insert(
            "QRF",
            s(
                |a| {
                    let (q, r) = linalg::qr(&a[0])?;
                    ops::concatenate(&[ops::reshape(&q, &[-1])?, ops::reshape(&r, &[-1])?], Some(0))
                },
                &[tall],
            ),
        );
        m.insert("SVD", s(|a| Ok(linalg::svd(&a[0], false)?.remove(0)), &[tall]));
        m.insert("LUF", s(|a| Ok(linalg::lu_factor(&a[0])?.0), &[sq]));
        m.insert("Solve", s(|a| linalg::solve(&shift(&a[0], 3.0)?, &a[1]), &[sq, rhs]));
        m.insert("SolveTriangular", s(|a| linalg::solve_triangular(&shift(&a[0], 3.0)?, &a[1], true), &[sq, rhs]));
        m.insert("Eigh", s(|a| linalg::eigvalsh(&a[0], "L"), &[sq]));
        m.insert("Eig", s(|a| ops::real(&linalg::eigvals(&a[0])?), &[sq]));
        m.insert("Det", s(|a| linalg::det(&a[0]), &[sq]));
        m.insert("SlogDet", s(|a| Ok(linalg::slogdet(&shift(&a[0], 3.0)?)?.1), &[sq]));
    }
    // FFT: every transform kind in one chain (rfft, fft, ifft, irfft). The
    // transforms compute in float32, so the inputs are tiny: the f64 finite
    // differences then stay far above float32 rounding (the chain is linear).
    m.insert(
        "FFT",
        s(
            |a| {
                use kiln_core::fft::{self, Norm};
                let y = fft::rfft(&a[0], None, -1, Norm::Backward)?;
                let y = fft::fft(&y, None, 0, Norm::Ortho)?;
                let y = fft::ifft(&y, Some(5), -1, Norm::Backward)?;
                ops::astype(&fft::irfft(&y, Some(6), -1, Norm::Forward)?, Dtype::F64)
            },
            &[(&[2, 6], -1e-5, 1e-5)],
        ),
    );
    // Sorting, selection and random bits
    m.insert("Sort", s(|a| ops::sort(&a[0], Some(1)), &[any]));
    m.insert("ArgSort", s(|a| ops::astype(&ops::argsort(&a[0], Some(1))?, Dtype::F64), &[any]));
    m.insert("Partition", s(|a| ops::partition(&a[0], 1, Some(1)), &[any]));
    m.insert("ArgPartition", s(|a| ops::astype(&ops::argpartition(&a[0], 1, Some(0))?, Dtype::F64), &[any]));
    m.insert(
        "PermuteAlong",
        s(|a| kiln_core::random::permutation_of(&a[0], 1, Some(&kiln_core::random::key(3))), &[any]),
    );
    m.insert(
        "RandomBits",
        s(
            |a| {
                let k = ops::astype(&ops::multiply(&a[0], 1e6)?, Dtype::U32)?;
                ops::astype(&kiln_core::random::bits(&[2, 3], 4, Some(&k))?, Dtype::F64)
            },
            &[(&[2], 0.5, 2.0)],
        ),
    );
    // Kernel fusion: a fused elementwise chain with a broadcast input.
    m.insert(
        "Fused",
        s(
            |a| {
                let y = ops::multiply(&ops::tanh(&ops::add(&a[0], &a[1])?)?, &ops::exp(&a[0])?)?;
                Ok(ops::fused::fuse_graph(&[y]).remove(0))
            },
            &[any, b],
        ),
    );
    // Binary search (sequence sorted inside, so vmap batches a sorted one).
    m.insert(
        "SearchSorted",
        s(
            |a| {
                let sorted = ops::sort(&ops::reshape(&a[0], &[-1])?, Some(-1))?;
                ops::astype(&ops::searchsorted(&sorted, &a[1], "left")?, Dtype::F64)
            },
            &[any, any],
        ),
    );
    // Custom functions (transforms/custom.rs): an exact user vjp; jvp and vmap
    // fall back to transforming the wrapped function.
    m.insert(
        "CustomTransforms",
        s(
            |a| {
                let f = kiln_core::custom_function(|x: &[Array]| Ok(vec![ops::multiply(&ops::sin(&x[0])?, &x[1])?]))
                    .with_vjp(|x: &[Array], ct: &[Array], _: &[Array]| {
                        let g0 = ops::multiply(&ops::multiply(&ct[0], &ops::cos(&x[0])?)?, &x[1])?;
                        let g1 = ops::sum(&ops::multiply(&ct[0], &ops::sin(&x[0])?)?, 0, false)?;
                        Ok(vec![g0, g1])
                    });
                Ok(f.call(a)?.remove(0))
            },
            &[any, b],
        ),
    );
    // mx.fast (ops/fast.rs): fused norms, their backward primitives (sampled
    // as grad-of-norm, so their own rules are grad of grad), rope, attention.
    {
        use kiln_core::ops::fast;
        let w = (&[3usize][..], 0.5, 1.5);
        m.insert("RMSNorm", s(|a| fast::rms_norm(&a[0], Some(&a[1]), 1e-3), &[any, w]));
        m.insert("LayerNorm", s(|a| fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-3), &[any, w, b]));
        m.insert(
            "RMSNormVJP",
            s(
                |a| {
                    let f = |x: &[Array]| Ok(vec![fast::rms_norm(&x[0], Some(&x[1]), 1e-3)?]);
                    let g = kiln_core::vjp(f, &a[..2], &a[2..])?.1;
                    ops::concatenate(&[ops::reshape(&g[0], &[-1])?, g[1].clone()], Some(0))
                },
                &[any, w, any],
            ),
        );
        m.insert(
            "LayerNormVJP",
            s(
                |a| {
                    let f = |x: &[Array]| Ok(vec![fast::layer_norm(&x[0], Some(&x[1]), Some(&x[2]), 1e-3)?]);
                    let g = kiln_core::vjp(f, &a[..3], &a[3..])?.1;
                    ops::concatenate(&[ops::reshape(&g[0], &[-1])?, g[1].clone(), g[2].clone()], Some(0))
                },
                &[any, w, b, any],
            ),
        );
        m.insert("RoPE", s(|a| fast::rope(&a[0], 4, false, Some(10000.0), 1.0, 1, None), &[(&[2, 2, 4], -2.0, 2.0)]));
        let q = (&[1usize, 2, 3, 4][..], -1.0, 1.0);
        let kv = (&[1usize, 1, 3, 4][..], -1.0, 1.0);
        m.insert(
            "ScaledDotProductAttention",
            s(
                |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.5, fast::AttentionMask::Causal),
                &[q, kv, kv],
            ),
        );
        m.insert(
            "ScaledDotProductAttentionVJP",
            s(
                |a| {
                    let f = |x: &[Array]| {
                        Ok(vec![fast::scaled_dot_product_attention(
                            &x[0],
                            &x[1],
                            &x[2],
                            0.5,
                            fast::AttentionMask::Causal,
                        )?])
                    };
                    let g = kiln_core::vjp(f, &a[..3], &a[3..])?.1;
                    let flat: Vec<Array> = g.iter().map(|x| ops::reshape(x, &[-1])).collect::<Result<_>>()?;
                    ops::concatenate(&flat, Some(0))
                },
                &[q, kv, kv, q],
            ),
        );
    }
    // Quantization (ops/quantized.rs): fixed packed weights, differentiable
    // x / scales / biases.
    fn qw(shape: &[usize], spec: ops::QuantSpec) -> Result<(Array, Array, Option<Array>)> {
        let n: usize = shape.iter().product();
        let w = Array::from_vec((0..n).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect(), shape)?;
        ops::quantize(&w, spec)
    }
    m.insert(
        "Quantize",
        s(
            |a| Ok(ops::quantize(&ops::astype(&a[0], Dtype::F32)?, ops::QuantSpec::affine(32, 4))?.0),
            &[(&[2, 64], -1.0, 1.0)],
        ),
    );
    m.insert(
        "Dequantize",
        s(
            |a| {
                let spec = ops::QuantSpec::affine(32, 4);
                let (q, _, _) = qw(&[3, 64], spec)?;
                ops::dequantize(&q, &a[0], Some(&a[1]), spec)
            },
            &[(&[3, 2], 0.1, 1.0), (&[3, 2], -1.0, 1.0)],
        ),
    );
    m.insert(
        "QuantizedMatmul",
        s(
            |a| {
                let spec = ops::QuantSpec::affine(32, 4);
                let (q, _, _) = qw(&[5, 64], spec)?;
                ops::quantized_matmul(&a[0], &q, &a[1], Some(&a[2]), true, spec)
            },
            &[(&[2, 64], -1.0, 1.0), (&[5, 2], 0.1, 1.0), (&[5, 2], -1.0, 1.0)],
        ),
    );
    m.insert(
        "GatherQMM",
        s(
            |a| {
                let spec = ops::QuantSpec::affine(32, 4);
                let (q, sc, b) = qw(&[3, 4, 64], spec)?;
                let ri = Array::from_slice(&[2u32, 0], &[2])?;
                ops::gather_qmm(&a[0], &q, &sc, b.as_ref(), None, Some(&ri), true, spec)
            },
            &[(&[2, 2, 64], -1.0, 1.0)],
        ),
    );
    m
}

/// Names of the primitives in the graph behind `a`.
fn primitives_in(a: &Array) -> BTreeMap<&'static str, Option<Rule>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![a.clone()];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x.id()) {
            continue;
        }
        if let Some(p) = x.primitive() {
            out.insert(p.name(), None);
        }
        stack.extend(x.inputs());
    }
    out
}

#[test]
fn every_primitive_has_its_rules_or_a_reason() {
    let samples = samples();
    let mut missing = vec![];
    for name in ALL_PRIMITIVES {
        if !samples.contains_key(name) {
            missing.push(*name);
        }
    }
    assert!(missing.is_empty(), "primitives without a sample in tests/rules.rs: {missing:?}");
    for name in samples.keys() {
        assert!(ALL_PRIMITIVES.contains(name), "{name} is sampled but not listed in ALL_PRIMITIVES");
    }

    let mut rng = Rng::new(42);
    let mut report = vec![];
    for (name, sample) in &samples {
        let inputs: Vec<Array> = sample.inputs.iter().map(|(sh, lo, hi)| rng.array(sh, *lo, *hi)).collect();
        let out = (sample.f)(&inputs).unwrap_or_else(|e| panic!("{name}: sample failed: {e}"));
        // Find the primitive instance in the recorded graph.
        let mut stack = vec![out.clone()];
        let mut prim = None;
        while let Some(x) = stack.pop() {
            if let Some(p) = x.primitive() {
                if p.name() == *name {
                    prim = Some(p);
                    break;
                }
            }
            stack.extend(x.inputs());
        }
        if *name == "Copy" {
            // Copy marks transform inputs; it only appears inside traces.
            let (_, g) =
                kiln_core::vjp(|a: &[Array]| Ok(vec![a[0].clone()]), &inputs[..1], &[inputs[0].clone()]).unwrap();
            assert_eq!(g[0].shape(), inputs[0].shape());
            continue;
        }
        let prim = prim
            .unwrap_or_else(|| panic!("{name}: sample does not record it (found {:?})", primitives_in(&out).keys()));
        let rules = prim.rules();
        for (kind, rule) in [("vjp", rules.vjp), ("jvp", rules.jvp), ("vmap", rules.vmap)] {
            if let Rule::No(reason) = rule {
                assert!(reason.len() > 10, "{name}: {kind} lacks a documented reason");
                report.push(format!("{name}: no {kind}: {reason}"));
            }
        }
        let differentiable = out.dtype().is_floating() && rules.vjp == Rule::Yes && rules.jvp == Rule::Yes;
        if *name == "StopGradient" {
            // Identity in value, zero in derivative by definition.
            let g =
                kiln_core::grad(|a: &[Array]| Ok(vec![ops::sum(&(sample.f)(a)?, Axes::All, false)?]), &[0])(&inputs)
                    .unwrap();
            assert!(g[0].to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0));
        } else if differentiable {
            // A round trip through f32 needs a step far above f32's rounding.
            let eps = if *name == "AsType" { 1e-2 } else { 1e-6 };
            check_grad_eps(name, sample.f, &inputs, eps);
        }
        if rules.vmap == Rule::Yes {
            let batched: Vec<Array> = sample
                .inputs
                .iter()
                .map(|(sh, lo, hi)| {
                    let mut s = vec![3];
                    s.extend(sh);
                    rng.array(&s, *lo, *hi)
                })
                .collect();
            let axes = vec![Some(0); batched.len()];
            check_vmap(name, sample.f, &batched, &axes);
            // Batch axis not in front, one input unbatched.
            if inputs.len() == 2 {
                let mut s = sample.inputs[0].0.clone();
                s.push(3);
                let b0 = rng.array(&s, sample.inputs[0].1, sample.inputs[0].2);
                check_vmap(name, sample.f, &[b0, inputs[1].clone()], &[Some(-1), None]);
            }
        }
    }
    println!("documented missing rules:\n{}", report.join("\n"));
}
