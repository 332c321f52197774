//! Optimizers for Kiln (placeholder crate: filled by a later issue).
