//! # Kiln
//!
//! An array framework for machine learning in Rust, in the design of Apple's
//! MLX: lazy arrays, composable function transforms and a NumPy-like API,
//! fast on ordinary CPUs. This crate re-exports the pieces: [`kiln_core`] for
//! arrays, ops and transforms.
//!
//! ```
//! use kiln::{ops, Array};
//! let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let b = ops::sum(&(&a * &a), 1, false).unwrap();
//! assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 25.0]);
//! ```

pub use kiln_core::*;

// The README's quickstart runs as a doctest, so it cannot go stale.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
