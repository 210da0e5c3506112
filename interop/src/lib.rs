//! blindcall-interop: cross-implementation tests only (see `tests/` and `README.md`).
//!
//! The checks live in `tests/`: a blindcall call group (openmls) and `mls-rs`, an independent
//! RFC 9420 implementation, share groups both ways, derive the same RFC 9605 §5.2 SFrame keys
//! and security code, open each other's frames, and lock out removed members. This library
//! has no items; `mls-rs` is a dev-dependency so it never reaches a shipped crate.
