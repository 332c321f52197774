//! Kiln model zoo (placeholder crate: filled by a later issue).
