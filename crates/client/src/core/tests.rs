//! Deterministic tests of the core.
