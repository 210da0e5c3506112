//! The waiting room as a member sees it (spec/admission.md, spec/identity.md).
//!
//! The relay lists joiners one entry at a time; everything a host decides on comes from the
//! entry's KeyPackage, checked here (credential name, identity key, trust), never from the
//! name the relay relays. When the call has an invite, a request must carry a proof only the
//! invite's holders can make, over exactly that KeyPackage: without a valid one it is refused
//! here, reported, and the relay is asked to turn the joiner away — it is never offered for
//! approval, neither to a click nor to `auto_approve`. Each announced request gets its own id
//! bound to its KeyPackage: approving adds exactly what was shown.

use std::collections::BTreeMap;

use blindcall_group::{AddRule, inspect_key_package};
use blindcall_proto::{Body, RemoveParticipant, WaitingEntry};

use super::CallCore;
use super::commits::Intent;
use super::join::Phase;
use crate::error::CallError;
use crate::event::{Event, InviteCheck, JoinRefusal, Member};

/// A join request as announced: the relay's connection and the exact KeyPackage shown.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) conn: u64,
    pub(super) key_package: Vec<u8>,
}

/// The relay's waiting-room entries and the requests announced for them.
#[derive(Debug, Default)]
pub(super) struct WaitingRoom {
    /// The relay's entries by connection.
    entries: BTreeMap<u64, WaitingEntry>,
    /// Announced requests by request id.
    requests: BTreeMap<u64, Request>,
    /// Connection → the request id announced for its current entry.
    by_conn: BTreeMap<u64, u64>,
    next_request: u64,
}

impl WaitingRoom {
    /// The request `id`, if still waiting.
    pub(super) fn request(&self, id: u64) -> Option<&Request> {
        self.requests.get(&id)
    }

    fn forget_conn(&mut self, conn: u64) {
        if let Some(id) = self.by_conn.remove(&conn) {
            self.requests.remove(&id);
        }
    }
}

/// What checking a waiting entry decided.
enum Verdict {
    Offer {
        joiner: Member,
        invite: InviteCheck,
    },
    Refuse {
        identity: Option<String>,
        reason: JoinRefusal,
    },
}

impl CallCore {
    /// A joiner entered the relay's waiting room (or its entry changed).
    pub(super) fn on_waiting_added(&mut self, entry: WaitingEntry) {
        let conn = entry.conn_id;
        if self.waiting.entries.get(&conn) == Some(&entry) {
            return;
        }
        // A changed entry under a known connection is a new request: the old one is void.
        self.waiting.forget_conn(conn);
        self.waiting.entries.insert(conn, entry);
        self.announce_waiting();
    }

    /// A joiner left the relay's waiting room (admitted, denied, gone or timed out).
    pub(super) fn on_waiting_removed(&mut self, conn: u64) {
        self.waiting.entries.remove(&conn);
        self.waiting.forget_conn(conn);
    }

    /// Whether this member may add (hosts by default), so is asked about joiners.
    fn may_add(&self) -> bool {
        match &self.phase {
            Phase::Member(g) => g.is_host() || g.params().add_rule == AddRule::AnyMember,
            _ => false,
        }
    }

    /// Checks, then announces (or approves, or refuses) every entry not handled yet.
    pub(super) fn announce_waiting(&mut self) {
        if !self.may_add() {
            return;
        }
        let fresh: Vec<WaitingEntry> = self
            .waiting
            .entries
            .values()
            .filter(|e| !self.waiting.by_conn.contains_key(&e.conn_id))
            .cloned()
            .collect();
        for entry in fresh {
            let request = self.waiting.next_request;
            self.waiting.next_request += 1;
            self.waiting.by_conn.insert(entry.conn_id, request);
            match self.check_entry(&entry) {
                Verdict::Refuse { identity, reason } => {
                    // Only a host's connection may turn a joiner away at the relay; anyone
                    // else just does not add it (SDK-COMMIT-5).
                    if self.join.is_relay_host() {
                        self.send(Body::RemoveParticipant(RemoveParticipant {
                            conn_id: entry.conn_id,
                        }));
                    }
                    self.emit(Event::JoinRefused {
                        request,
                        identity,
                        reason,
                    });
                }
                Verdict::Offer { joiner, invite } => {
                    self.waiting.requests.insert(
                        request,
                        Request {
                            conn: entry.conn_id,
                            key_package: entry.key_package.as_slice().to_vec(),
                        },
                    );
                    if self.opts.auto_approve && invite == InviteCheck::Valid {
                        self.commits.queue(Intent::Approve(request));
                    }
                    self.emit(Event::JoinRequested {
                        request,
                        joiner,
                        invite,
                    });
                }
            }
        }
    }

    /// Decides on an entry from its KeyPackage and proof alone.
    fn check_entry(&self, entry: &WaitingEntry) -> Verdict {
        let Phase::Member(g) = &self.phase else {
            return Verdict::Refuse {
                identity: None,
                reason: JoinRefusal::InvalidKeyPackage,
            };
        };
        let kp = entry.key_package.as_slice();
        let info = match inspect_key_package(kp, self.opts.mls_suite) {
            Ok(info) => info,
            Err(_) => {
                return Verdict::Refuse {
                    identity: None,
                    reason: JoinRefusal::InvalidKeyPackage,
                };
            }
        };
        let refuse = |reason| Verdict::Refuse {
            identity: Some(info.identity.clone()),
            reason,
        };
        if g.roster().by_key(&info.signature_key).is_some() {
            return refuse(JoinRefusal::AlreadyInCall);
        }
        let invite = match g.params().invite {
            None => InviteCheck::NotRequired,
            Some(commitment) => {
                let held = self
                    .opts
                    .invite
                    .as_ref()
                    .filter(|i| i.commitment() == commitment);
                let Some(held) = held else {
                    return refuse(JoinRefusal::InviteNotHeld);
                };
                match &entry.join_proof {
                    None => return refuse(JoinRefusal::MissingProof),
                    Some(p) if !held.verify(kp, p.as_slice()) => {
                        return refuse(JoinRefusal::InvalidProof);
                    }
                    Some(_) => InviteCheck::Valid,
                }
            }
        };
        let trust = self.trust.assess(&info.identity, &info.signature_key);
        let joiner = Member {
            identity: info.identity.as_str().into(),
            leaf: 0,
            host: g.params().is_host(&info.signature_key),
            identity_key: info.signature_key.as_slice().into(),
            trust,
            signs_media: info.signs_media,
        };
        Verdict::Offer { joiner, invite }
    }

    /// `Command::Approve`.
    pub(super) fn approve(&mut self, request: u64) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Member(_)) {
            return Err(CallError::NotMember);
        }
        if !self.waiting.requests.contains_key(&request) {
            return Err(CallError::UnknownRequest(request));
        }
        self.commits.queue(Intent::Approve(request));
        Ok(())
    }

    /// `Command::Deny`: only a host's connection may refuse a joiner at the relay
    /// (SDK-COMMIT-5).
    pub(super) fn deny(&mut self, request: u64) -> Result<(), CallError> {
        if !self.waiting.requests.contains_key(&request) {
            return Err(CallError::UnknownRequest(request));
        }
        if !self.join.is_relay_host() {
            return Err(CallError::NotHost);
        }
        let Some(r) = self.waiting.requests.remove(&request) else {
            return Err(CallError::UnknownRequest(request));
        };
        self.waiting.by_conn.remove(&r.conn);
        self.waiting.entries.remove(&r.conn);
        self.send(Body::RemoveParticipant(RemoveParticipant {
            conn_id: r.conn,
        }));
        Ok(())
    }
}
