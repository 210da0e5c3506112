//! Watching a call from the inside: frames sealed and opened, epochs entered, commits sent and
//! membership changes, each with the instant the call handled it.
//!
//! An application passes a [`CallObserver`] in [`crate::JoinOptions::observer`]; the call
//! invokes it synchronously on its own task, right where the thing happens, with borrowed data
//! (plaintexts are slices of the call's buffers, never copies). Without an observer the cost
//! is one branch per frame; with one it is one virtual call per frame and no allocation. The
//! observer must be quick and must not block: the call's task waits for it. Uses: analytics,
//! quality meters, recording, and the demo's end-to-end checks (`blindcall-demo`).

use std::sync::Arc;
use std::time::Instant;

use blindcall_group::SecurityCode;
use blindcall_media::MediaKind;

use crate::event::SenderAuth;

/// A frame this participant sealed and handed to the transport.
#[derive(Debug, Clone, Copy)]
pub struct FrameSent<'a> {
    /// Audio or video.
    pub kind: MediaKind,
    /// The MLS epoch whose key sealed it.
    pub epoch: u64,
    /// Its SFrame counter.
    pub counter: u64,
    /// The plaintext as the application published it.
    pub plaintext: &'a [u8],
    /// When it was sealed.
    pub at: Instant,
}

/// A frame this participant opened (it authenticated under `sender`'s SFrame key; `auth` says
/// whether a signed manifest of `sender` vouched for it).
#[derive(Debug, Clone, Copy)]
pub struct FrameOpened<'a> {
    /// The relay's id of the media stream it arrived on.
    pub participant: u64,
    /// The sender's identity, as its key authenticates it.
    pub sender: &'a Arc<str>,
    /// Audio or video (from the SFrame stream context).
    pub kind: MediaKind,
    /// The epoch whose key opened it.
    pub epoch: u64,
    /// Its SFrame counter.
    pub counter: u64,
    /// The decrypted frame.
    pub plaintext: &'a [u8],
    /// When it was opened.
    pub at: Instant,
    /// How far its sender is proven (as delivered to the application).
    pub auth: SenderAuth,
}

/// This participant entered an epoch (joined, or merged a commit).
#[derive(Debug, Clone, Copy)]
pub struct EpochEntered<'a> {
    /// The epoch.
    pub epoch: u64,
    /// Its security code.
    pub code: &'a SecurityCode,
    /// When.
    pub at: Instant,
}

/// What an own commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommitPurpose {
    /// Adds an approved joiner.
    Add,
    /// Removes a member.
    Remove,
    /// Commits the relay's removal proposals.
    Proposals,
    /// The path update after joining.
    PathUpdate,
}

impl CommitPurpose {
    /// A short lower-case name (`add`, `remove`, `proposals`, `update`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Proposals => "proposals",
            Self::PathUpdate => "update",
        }
    }
}

/// An own commit sent to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSent {
    /// The epoch it was made in.
    pub from_epoch: u64,
    /// What it does.
    pub purpose: CommitPurpose,
    /// When it was sent.
    pub at: Instant,
}

/// Kinds of [`MembershipChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Joined the group (created it or processed a Welcome).
    Joined,
    /// The media transport is connected.
    MediaReady,
    /// Left on its own.
    Left,
    /// Was removed by a commit.
    Removed,
}

/// This participant's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipChanged {
    /// What happened.
    pub change: MembershipChange,
    /// The epoch it happened in (for `Joined`, the first epoch held).
    pub epoch: u64,
    /// When.
    pub at: Instant,
}

/// Receives what happens inside one participant's call; every method defaults to nothing.
/// Called on the call's task: keep it quick and never block.
pub trait CallObserver: Send + Sync {
    /// A frame was sealed and queued for the transport.
    fn frame_sent(&self, frame: &FrameSent<'_>) {
        let _ = frame;
    }

    /// A frame authenticated and was opened.
    fn frame_opened(&self, frame: &FrameOpened<'_>) {
        let _ = frame;
    }

    /// An epoch was entered.
    fn epoch_entered(&self, epoch: &EpochEntered<'_>) {
        let _ = epoch;
    }

    /// An own commit was sent to the relay.
    fn commit_sent(&self, commit: &CommitSent) {
        let _ = commit;
    }

    /// The membership changed.
    fn membership_changed(&self, change: &MembershipChanged) {
        let _ = change;
    }
}

impl std::fmt::Debug for dyn CallObserver + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallObserver")
    }
}
