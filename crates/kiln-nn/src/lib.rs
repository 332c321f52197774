//! Neural-network layers for Kiln (placeholder crate: filled by a later issue).
