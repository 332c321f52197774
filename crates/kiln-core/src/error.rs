//! The error type shared by every fallible Kiln operation.

use std::fmt;

/// What kind of failure an [`Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad shapes, dtypes or arguments given to an op (MLX's `ValueError`).
    InvalidArgument,
    /// An axis or index outside its valid range (MLX's `IndexError`).
    OutOfRange,
    /// A failure while evaluating the graph (MLX's `RuntimeError`).
    Runtime,
    /// An allocation that failed or would exceed the memory limit.
    OutOfMemory,
    /// A transform rule or kernel that this primitive does not provide.
    Unsupported,
    /// A file that could not be read or written, or whose contents are malformed.
    Io,
}

/// A Kiln error: the op that raised it and a message naming the offending
/// shapes, dtypes or axes. Displays as `[op] message`, like MLX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    op: String,
    msg: String,
}

/// Result alias used across Kiln.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error of `kind` raised by `op`.
    pub fn new(kind: ErrorKind, op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error { kind, op: op.into(), msg: msg.into() }
    }
    /// An invalid-argument error.
    pub fn invalid(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, op, msg)
    }
    /// An out-of-range (axis or index) error.
    pub fn out_of_range(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfRange, op, msg)
    }
    /// A runtime (evaluation) error.
    pub fn runtime(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, op, msg)
    }
    /// An unsupported-feature error (missing transform rule or kernel).
    pub fn unsupported(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, op, msg)
    }
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The name of the op that raised the error.
    pub fn op(&self) -> &str {
        &self.op
    }
    /// The message, without the `[op]` prefix.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.op, self.msg)
    }
}

impl std::error::Error for Error {}

/// Formats a shape as MLX does in messages: `(2,3)`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", parts.join(","))
}
