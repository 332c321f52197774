//! The primitive interface: what every graph node's operation provides.
//!
//! A primitive's shape/dtype rule lives in the public op that builds it; the
//! primitive itself carries its kernel dispatch (through the [`Backend`] of the
//! stream's device) and its vjp, jvp and vmap rules, all in one file.

use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use std::any::Any;

/// Shape and dtype of one output a primitive must produce.
#[derive(Clone, Copy, Debug)]
pub struct OutSpec<'a> {
    /// Output shape.
    pub shape: &'a [usize],
    /// Output dtype.
    pub dtype: Dtype,
}

/// Whether a primitive implements a transform rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The rule is implemented.
    Yes,
    /// The rule is deliberately absent; the string says why (e.g. argmax has no gradient).
    No(&'static str),
}

/// Which transform rules a primitive implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Reverse mode.
    pub vjp: Rule,
    /// Forward mode.
    pub jvp: Rule,
    /// Batching.
    pub vmap: Rule,
}

impl Rules {
    /// All three rules implemented.
    pub const ALL: Rules = Rules { vjp: Rule::Yes, jvp: Rule::Yes, vmap: Rule::Yes };
}

/// An operation recorded in the graph.
pub trait Primitive: Send + Sync + 'static {
    /// The primitive's name, used in errors and graph dumps.
    fn name(&self) -> &'static str;

    /// Computes the outputs from evaluated inputs. Each returned [`Data`] must
    /// match the corresponding [`OutSpec`]; views may share an input's buffer.
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>>;

    /// Which transform rules this primitive implements.
    fn rules(&self) -> Rules {
        Rules::ALL
    }

    /// Reverse mode: cotangents of the inputs listed in `argnums`, given the
    /// cotangents of every output and the forward outputs themselves.
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let _ = (primals, cotangents, argnums, outputs);
        Err(self.missing("vjp"))
    }

    /// Forward mode: tangents of every output, given tangents of the inputs in
    /// `argnums` (`tangents[i]` belongs to `primals[argnums[i]]`).
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let _ = (primals, tangents, argnums);
        Err(self.missing("jvp"))
    }

    /// Batching: applies the op to inputs that carry a batch axis (`axes[i]`,
    /// `None` when input `i` is not batched). Returns the outputs and the
    /// batch axis of each.
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let _ = (inputs, axes);
        Err(self.missing("vmap"))
    }

    /// Whether `other` is the same op with the same parameters (used to merge
    /// common subexpressions).
    fn is_equivalent(&self, other: &dyn Primitive) -> bool {
        let _ = other;
        false
    }

    /// Access to the concrete type, for `is_equivalent` and transforms.
    fn as_any(&self) -> &dyn Any;

    /// The error a missing rule raises.
    fn missing(&self, rule: &str) -> Error {
        let why = match rule {
            "vjp" => self.rules().vjp,
            "jvp" => self.rules().jvp,
            _ => self.rules().vmap,
        };
        match why {
            Rule::No(reason) => Error::unsupported(self.name(), format!("{rule} is not defined: {reason}")),
            Rule::Yes => Error::unsupported(self.name(), format!("{rule} is not implemented.")),
        }
    }

    /// Output shapes for `inputs` whose shapes may differ from the ones the
    /// node was recorded with; needed by shapeless compile, which replays a
    /// traced graph on new sizes. Ops whose parameters fix a shape (reshape
    /// to a given shape, `broadcast_to`, slices) keep this default error.
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let _ = inputs;
        Err(Error::unsupported(
            self.name(),
            "cannot infer its output shapes from new input shapes (needed by shapeless compile).",
        ))
    }
}

/// Implements `as_any` and an `is_equivalent` that compares parameters with `PartialEq`.
#[macro_export]
#[doc(hidden)]
macro_rules! prim_common {
    () => {
        fn as_any(&self) -> &dyn ::std::any::Any {
            self
        }
        fn is_equivalent(&self, other: &dyn $crate::primitive::Primitive) -> bool {
            other.as_any().downcast_ref::<Self>().is_some_and(|o| o == self)
        }
    };
}

/// The name of every primitive Kiln defines.
///
/// Debug builds check each recorded primitive against this list, and the
/// rule-coverage test (`tests/rules.rs`) enumerates it: a new primitive must
/// be listed here and given a sample there, so its rules are checked.
#[rustfmt::skip]
pub const ALL_PRIMITIVES: &[&str] = &[
    // elementwise unary
    "Abs", "Negative", "Sign", "Floor", "Ceil", "Round", "Trunc", "Sqrt", "Rsqrt", "Square", "Reciprocal", "Exp", "Expm1", "Log",
    "Log2", "Log10", "Log1p", "Sin", "Cos", "Tan", "ArcSin", "ArcCos", "ArcTan", "Sinh", "Cosh", "Tanh", "ArcSinh",
    "ArcCosh", "ArcTanh", "Erf", "ErfInv", "Sigmoid", "Conjugate", "Real", "Imag", "IsNaN", "IsInf", "IsPosInf",
    "IsNegInf", "IsFinite", "LogicalNot", "BitwiseInvert", "NanToNum",
    // elementwise binary and ternary
    "Add", "Subtract", "Multiply", "Divide", "FloorDivide", "Remainder", "Power", "Maximum", "Minimum", "LogAddExp",
    "ArcTan2", "Equal", "EqualNaN", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd",
    "LogicalOr", "DivMod", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "LeftShift", "RightShift", "Select",
    // creation and conversion
    "Full", "Arange", "AsType", "TriMask", "View",
    // shape and layout
    "Reshape", "Broadcast", "Transpose", "Diagonal", "AsStrided", "Contiguous", "Slice", "SliceUpdate", "Concatenate",
    // reductions, scans and sorting
    "Sum", "Prod", "Max", "Min", "All", "Any", "ArgMax", "ArgMin", "Softmax", "LogSumExp", "Sort", "TakeLast",
    "CumSum", "CumProd", "CumMax", "CumMin", "CumLogaddexp",
    // transforms
    "Copy", "StopGradient",
    // convolution
    "Convolution",
    // matmul family
    // custom functions and checkpointing (transforms/custom.rs)
    "CustomTransforms",
    // binary search (indexing)
    "SearchSorted",
    "Matmul", "GatherMM",
    // file loading (io)
    "Load",
    // indexing: gather and scatter
    "Gather", "Scatter", "ScatterAdd", "ScatterProd", "ScatterMax", "ScatterMin",
    // linalg
    "Inverse", "TriInverse", "Cholesky", "QRF", "SVD", "LUF", "Solve", "SolveTriangular", "Eigh", "Eig", "Det",
    "SlogDet",
    // fft
    "FFT",
    // sorting, selection and random bits
    "ArgSort", "Partition", "ArgPartition", "PermuteAlong", "RandomBits",
    // kernel fusion (compile)
    "Fused",
    // mx.fast (ops/fast.rs)
    "RMSNorm", "RMSNormVJP", "LayerNorm", "LayerNormVJP", "RoPE", "ScaledDotProductAttention", "ScaledDotProductAttentionVJP",
    // quantization (ops/quantized.rs)
    "Quantize", "Dequantize", "QuantizedMatmul", "GatherQMM",
];
