//! # kiln-core
//!
//! The core of Kiln, an array framework in the design of Apple's MLX: lazy
//! arrays over a dynamic graph, MLX's dtypes and promotion rules, composable
//! function transforms (`grad`, `vjp`, `jvp`, `vmap`), and a multi-threaded
//! SIMD CPU backend behind a backend trait.
//!
//! ```
//! use kiln_core::{ops, Array};
//! let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
//! let y = ops::exp(&(&x * 0.5)).unwrap(); // recorded, not computed
//! let s = ops::sum(&y, -1, false).unwrap();
//! assert!((s.item::<f32>().unwrap() - 8.8487).abs() < 1e-3); // reading evaluates
//! ```
#![warn(missing_docs)]

pub mod array;
pub mod backend;
pub mod device;
mod display;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod export;
pub mod io;
pub mod memory;
pub mod ops;
pub mod primitive;
pub mod profile;
pub mod shape;
pub mod stream;
pub mod transforms;

pub use array::{Array, Data};
pub use device::{default_device, default_stream, new_stream, set_default_device, Device, DeviceType, Stream};
pub use dtype::{bf16, c64, f16, promote_types, result_type, Dtype, Element, Scalar};
pub use error::{Error, ErrorKind, Result};
pub use eval::async_eval;
pub use eval::eval;
pub use export::{export_to_dot, write_dot};
pub use memory::{
    clear_cache, get_active_memory, get_cache_memory, get_memory_limit, get_peak_memory, reset_peak_memory,
    set_cache_limit, set_memory_limit,
};
pub use ops::fft;
pub use ops::linalg;
pub use ops::random;
pub use ops::{Axes, Operand};
pub use stream::{synchronize, synchronize_all};
pub use transforms::{checkpoint, custom_function, CustomFunction};
pub use transforms::{compile, compile_shapeless, compile_with_state, disable_compile, enable_compile};
pub use transforms::{
    grad, jvp, stop_gradient, tree_flatten, tree_map, tree_unflatten, value_and_grad, value_and_grad_tree, vjp, vmap,
    Tree,
};
