//! The control tap: an optional observer of every control frame the relay reads or writes,
//! after TLS removal — exactly what the delivery service reads and writes. For audits and
//! end-to-end checks ("the relay saw no plaintext"); off unless configured.

use std::sync::{Arc, Mutex};

use crate::ds::ConnId;

/// Which way a tapped control frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TapDirection {
    /// Read from a client.
    FromClient,
    /// Written to a client.
    ToClient,
}

/// Observes control frames after TLS removal ([`crate::ServerConfig::control_tap`]).
///
/// Called on the driver task for every frame, so it must return quickly and never block.
pub trait ControlTap: Send + Sync {
    /// One whole frame on `conn`, its `u32` length prefix included. Bytes from a client whose
    /// stream no longer frames (an oversized length) are passed as they arrive.
    fn frame(&self, conn: ConnId, direction: TapDirection, bytes: &[u8]);
}

/// One frame a [`ControlRecorder`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TappedFrame {
    /// The connection.
    pub conn: ConnId,
    /// Read or written.
    pub direction: TapDirection,
    /// The frame, length prefix included.
    pub bytes: Vec<u8>,
}

/// A [`ControlTap`] that keeps every frame in memory (clone it: clones share the record).
#[derive(Debug, Clone, Default)]
pub struct ControlRecorder {
    frames: Arc<Mutex<Vec<TappedFrame>>>,
}

impl ControlRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every frame recorded so far, in the order the relay read or wrote them.
    pub fn frames(&self) -> Vec<TappedFrame> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ControlTap for ControlRecorder {
    fn frame(&self, conn: ConnId, direction: TapDirection, bytes: &[u8]) {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TappedFrame {
                conn,
                direction,
                bytes: bytes.to_vec(),
            });
    }
}
