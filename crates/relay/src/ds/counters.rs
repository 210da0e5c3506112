//! Counters for metrics: every refusal, error and commit decision, by reason.

use std::collections::BTreeMap;

use blindcall_proto::{CommitRejectReason, ErrorCode, RefusedReason, ResumeRefusedReason};

/// Monotonic counters of a [`Ds`](super::Ds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsCounters {
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections admitted to a room.
    pub admitted: u64,
    /// Refusals (admission and later expulsions), by reason.
    pub refused: BTreeMap<RefusedReason, u64>,
    /// Error messages sent, by code.
    pub errors: BTreeMap<ErrorCode, u64>,
    /// Commits sequenced.
    pub commits_accepted: u64,
    /// Commits refused, by reason.
    pub commits_rejected: BTreeMap<CommitRejectReason, u64>,
    /// Groups bootstrapped.
    pub groups_created: u64,
    /// KeyPackages stored.
    pub key_packages_stored: u64,
    /// Welcomes routed to joiners.
    pub welcomes_routed: u64,
    /// Remove proposals issued as external sender.
    pub remove_proposals: u64,
    /// Internal faults (our bug or a library error), each answered with `ErrorCode::INTERNAL`.
    pub internal_faults: u64,
    /// Inputs for connection ids the DS does not know (after close, or never opened).
    pub unknown_connection_inputs: u64,
    /// Media-signaling messages passed from members to the forwarder.
    pub media_signals_in: u64,
    /// Media-signaling messages queued from the forwarder to members.
    pub media_signals_out: u64,
    /// Members' own proposals (leaves) queued and sent to the other members.
    pub member_proposals: u64,
    /// Connected members removed by a sequenced commit (their connections were closed).
    pub members_removed: u64,
    /// `PeerBroadcast` messages fanned out to the other members.
    pub peer_messages: u64,
    /// `PeerBroadcast` messages dropped because the member's peer-message budget was spent.
    pub peer_messages_rate_limited: u64,
    /// `PeerBroadcast` messages dropped because the payload exceeded the size limit.
    pub peer_messages_too_large: u64,
    /// Resumes accepted (a member took its leaf back on a new connection).
    pub resumes_accepted: u64,
    /// Resumes refused, by reason.
    pub resumes_refused: BTreeMap<ResumeRefusedReason, u64>,
    /// Sequenced commits sent again to resuming members.
    pub commits_replayed: u64,
    /// Lost members whose leaf the relay kept for the resume grace.
    pub graces_started: u64,
    /// Graces that ran out (the relay then proposed the leaf's removal).
    pub graces_expired: u64,
    /// Store mode with homes: heartbeats of other nodes received with a new sequence number.
    pub heartbeats_received: u64,
    /// Store mode with homes: connections sent to their room's home node.
    pub redirects: u64,
    /// Store mode with homes: home terms this node claimed and won.
    pub home_claims_won: u64,
    /// Store mode with homes: home terms this node claimed that another node held.
    pub home_claims_lost: u64,
    /// Store mode with homes: home claims that failed (store unavailable).
    pub home_claims_failed: u64,
    /// Store mode with homes: rooms served here whose home another node took.
    pub homes_lost: u64,
    /// Store mode with homes: rooms handed to another node by a drain.
    pub handoffs_out: u64,
    /// Store mode with homes: rooms loaded from the store on becoming their home.
    pub rooms_loaded: u64,
    /// Store mode: claims that won their epoch (the commit was then merged).
    pub claims_won: u64,
    /// Store mode: claims that lost their epoch to another node's commit.
    pub claims_lost: u64,
    /// Store mode: claims that failed (the committer got `STORE_UNAVAILABLE`).
    pub claims_failed: u64,
    /// Store mode: claim answers for no claim in flight (its room closed meanwhile).
    pub claims_unknown: u64,
    /// Store mode: other nodes' winners merged here.
    pub winners_applied: u64,
    /// Store mode: other nodes' winners that did not validate here (the room is stuck at
    /// their epoch on this node).
    pub winners_refused: u64,
    /// Store mode: rooms being taken over set up from a winner's GroupInfo because its commit
    /// could not be processed here (CL-HOME-9).
    pub rooms_restored: u64,
    /// Cluster: new rooms this node placed on a node homing fewer rooms (CL-HOME-11).
    pub rooms_placed_elsewhere: u64,
    /// Store mode: bans made here and handed to the store (CL-BAN-1).
    pub bans_shared: u64,
    /// Store mode: bans made on another node that reached this one (CL-BAN-1).
    pub bans_learned: u64,
    /// Store mode: lock changes made here and handed to the store (CL-LOCK-1).
    pub lock_changes_shared: u64,
    /// Store mode: lock changes from the store that changed this node's view (CL-LOCK-1).
    pub lock_changes_learned: u64,
    /// Store mode: joiners waiting on other nodes shown to members here (CL-WAIT-1).
    pub waiting_learned: u64,
    /// Store mode: other nodes' waiting entries not shown here (a banned token, a KeyPackage
    /// already waiting or one that fails the checks), CL-WAIT-1.
    pub waiting_refused: u64,
    /// Store mode: followed winners of epochs already merged here (CL-FOLLOW-1).
    pub winners_duplicate: u64,
    /// Store mode: followed winners of rooms this node does not serve (or has no group for).
    pub winners_ignored: u64,
    /// Store mode: followed winners dropped because too many waited after a gap, or because
    /// the room is stuck at a refused winner.
    pub winners_dropped: u64,
    /// Store mode: reads of a missing epoch (`Output::Fetch`) that found nothing or failed.
    pub fetches_failed: u64,
    /// Store mode: rooms whose group was set up here from another node's genesis (CL-GEN-2).
    pub geneses_loaded: u64,
    /// Store mode: stored geneses that failed the bootstrap checks here (CL-GEN-2).
    pub geneses_refused: u64,
}

impl DsCounters {
    /// Refusals with `reason`.
    pub fn refused(&self, reason: RefusedReason) -> u64 {
        self.refused.get(&reason).copied().unwrap_or(0)
    }

    /// Error messages with `code`.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors.get(&code).copied().unwrap_or(0)
    }

    /// Resumes refused with `reason`.
    pub fn resumes_refused(&self, reason: ResumeRefusedReason) -> u64 {
        self.resumes_refused.get(&reason).copied().unwrap_or(0)
    }

    /// Commits refused with `reason`.
    pub fn commits_rejected(&self, reason: CommitRejectReason) -> u64 {
        self.commits_rejected.get(&reason).copied().unwrap_or(0)
    }

    pub(crate) fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, k: K) {
        *map.entry(k).or_insert(0) += 1;
    }
}
