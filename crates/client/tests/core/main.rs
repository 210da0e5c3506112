//! Deterministic tests of [`blindcall_client::CallCore`]: bare cores driven with a manual
//! clock and a scripted relay (no sockets, no tasks, no sleeps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admission;
mod auth;
mod commits;
mod harness;
mod join;
mod link;
mod media;
mod peer;
mod raw;
mod redirect;
mod relays;
