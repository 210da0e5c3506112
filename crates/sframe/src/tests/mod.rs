//! Crate-internal tests against the RFC 9605 vectors in `../shared/vectors`
//! (read in place, never copied; see the README there).

mod vectors;
