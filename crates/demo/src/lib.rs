//! blindcall-demo: everything `blindcall demo` and the end-to-end tests need around the SDK,
//! none of which an application links.
//!
//! - [`embedded`]: a complete relay in-process (the relay crate's control server with its
//!   media forwarder, a development certificate, taps for the plaintext check);
//! - [`synthetic`]: synthetic audio and video published through the SDK's public API, honoring
//!   its keyframe requests;
//! - [`recorder`]: what every participant sent, opened and saw, fed by the SDK's observer hook;
//! - [`scenario`]: the scripted call (join through the waiting room, leave, removal, late join);
//! - [`report`]: the checks over what was recorded; [`live`]: the live table;
//! - [`netsim`]: a control path that can be cut or black-holed (reconnection tests);
//! - [`cluster`], [`nats`]: `blindcall demo --cluster N`: relay nodes on a NATS JetStream room
//!   store, one of which is killed mid-call.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod embedded;
pub mod live;
pub mod nats;
pub mod netsim;
pub mod recorder;
pub mod report;
pub mod scenario;
pub mod synthetic;
