//! Store errors: the store could not be reached, did not answer, or holds an entry the relay
//! refuses.

use std::time::Duration;

use thiserror::Error;

use super::{CorruptEntry, EncodeError};

/// What the relay was doing with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// Connecting to the server.
    Connect,
    /// Opening or creating the bucket.
    OpenBucket,
    /// Claiming an epoch (create-only write).
    Claim,
    /// Reading an entry.
    Read,
    /// Watching the commit keys (following the rooms' winners, CL-FOLLOW-1).
    Watch,
}

impl std::fmt::Display for StoreOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::OpenBucket => "open bucket",
            Self::Claim => "claim epoch",
            Self::Read => "read",
            Self::Watch => "watch commits",
        })
    }
}

/// Why a store operation failed. Every variant means the operation sequenced nothing — the
/// relay fails closed (CL-FAIL-1) — except that after [`StoreError::Timeout`] on a
/// [`StoreOp::Claim`] the claim may still land: the key, read later, decides.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No connection to the store (refused, lost, or not re-established yet).
    #[error("store unreachable ({op})")]
    Unreachable {
        /// What was attempted.
        op: StoreOp,
    },
    /// The store did not answer in time.
    #[error("store did not answer within {after:?} ({op})")]
    Timeout {
        /// What was attempted.
        op: StoreOp,
        /// The time allowed.
        after: Duration,
    },
    /// The store answered with an error, or the configuration does not fit it (a bad URL,
    /// credentials or TLS at connect).
    #[error("store refused the operation ({op})")]
    Backend {
        /// What was attempted.
        op: StoreOp,
        /// The client library's error.
        #[source]
        source: async_nats::Error,
    },
    /// An entry under one of the relay's keys is not a valid record for that key.
    #[error("corrupt store entry {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: CorruptEntry,
    },
    /// The record could not be encoded (caller fault: a room id no token carries).
    #[error("record cannot be stored: {0}")]
    Encode(#[from] EncodeError),
}
