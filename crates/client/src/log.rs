//! The recorder for end-to-end checks: what every participant sent, opened and saw (the relay's
//! own view of the control channel is recorded by `blindcall_relay::ControlRecorder`). Off unless the application passes one in
//! [`crate::JoinOptions`]; meant for tests, demos and audits, not for production calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use blindcall_media::MediaKind;

/// A frame a participant sealed and sent.
#[derive(Debug, Clone)]
pub struct SentFrame {
    /// Sender's identity.
    pub sender: Arc<str>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Per-stream sequence number (the synthetic frame's own, or the publish count).
    pub seq: u64,
    /// The MLS epoch whose key sealed it.
    pub epoch: u64,
    /// When it was sealed.
    pub at: Instant,
    /// The plaintext, when the log keeps plaintexts.
    pub plaintext: Option<Vec<u8>>,
}

/// A frame a participant opened.
#[derive(Debug, Clone)]
pub struct OpenedRecord {
    /// Receiver's identity.
    pub receiver: Arc<str>,
    /// Sender's identity, as authenticated by its SFrame key.
    pub sender: Arc<str>,
    /// Audio or video (from the SFrame context).
    pub kind: MediaKind,
    /// Sequence number inside the frame (synthetic frames only; else the SFrame counter).
    pub seq: u64,
    /// Epoch whose key opened it.
    pub epoch: u64,
    /// When it was opened.
    pub at: Instant,
}

/// A participant entered an epoch (merged a commit, or joined).
#[derive(Debug, Clone)]
pub struct EpochRecord {
    /// Who.
    pub identity: Arc<str>,
    /// The epoch.
    pub epoch: u64,
    /// The security code shown for it.
    pub code: String,
    /// When.
    pub at: Instant,
}

/// A commit a participant sent to the relay.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    /// Committer.
    pub identity: Arc<str>,
    /// Epoch the commit was made in.
    pub from_epoch: u64,
    /// What it did (`add`, `remove`, `update`, `proposals`).
    pub kind: &'static str,
    /// When it was sent.
    pub sent_at: Instant,
}

/// A participant's membership changed.
#[derive(Debug, Clone)]
pub struct MembershipRecord {
    /// Who.
    pub identity: Arc<str>,
    /// What happened.
    pub change: MembershipChange,
    /// The epoch it happened in (for `Joined`, the first epoch it holds).
    pub epoch: u64,
    /// When.
    pub at: Instant,
}

/// Kinds of [`MembershipRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// Joined the group (created it or processed a Welcome).
    Joined,
    /// Its media transport is connected and subscribed.
    MediaReady,
    /// Left on its own.
    Left,
    /// Was removed by a commit.
    Removed,
}

/// Everything recorded.
#[derive(Debug, Default)]
pub struct CallLogData {
    /// Frames sent.
    pub sent: Vec<SentFrame>,
    /// Frames opened.
    pub opened: Vec<OpenedRecord>,
    /// Epoch entries.
    pub epochs: Vec<EpochRecord>,
    /// Commits sent.
    pub commits: Vec<CommitRecord>,
    /// Membership changes.
    pub membership: Vec<MembershipRecord>,
}

/// A shared recorder; clone it into every participant's options.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    inner: Arc<Mutex<CallLogData>>,
    keep_plaintext: bool,
    closed: Arc<AtomicBool>,
}

impl CallLog {
    /// A recorder; `keep_plaintext` also keeps every sent plaintext (for the plaintext check).
    pub fn new(keep_plaintext: bool) -> Self {
        Self {
            inner: Arc::default(),
            keep_plaintext,
            closed: Arc::default(),
        }
    }

    /// Stops recording (e.g. when a scripted call's measured part is over).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether sent plaintexts are kept.
    pub fn keeps_plaintext(&self) -> bool {
        self.keep_plaintext
    }

    /// Locks the recorded data (a poisoned lock still yields the data).
    pub fn lock(&self) -> MutexGuard<'_, CallLogData> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn with(&self, f: impl FnOnce(&mut CallLogData)) {
        if !self.closed.load(Ordering::Relaxed) {
            f(&mut self.lock());
        }
    }
}
