//! The waiting room as a member sees it: joiners waiting for admission are announced to the
//! members the call's policy lets add (hosts by default) as join requests, or approved at once
//! with `auto_approve`; approving commits an Add of exactly the KeyPackage the relay listed,
//! denying asks the relay to refuse the joiner (SDK-JOIN-4).

use std::collections::{BTreeMap, BTreeSet};

use blindcall_group::AddRule;
use blindcall_proto::{Body, RemoveParticipant, WaitingEntry};

use super::CallCore;
use super::commits::Intent;
use super::join::Phase;
use crate::error::CallError;
use crate::event::Event;

/// The relay's waiting-room entries and which of them were announced.
#[derive(Debug, Default)]
pub(super) struct WaitingRoom {
    entries: BTreeMap<u64, WaitingEntry>,
    announced: BTreeSet<u64>,
}

impl WaitingRoom {
    /// The entry of waiting-room request `conn`.
    pub(super) fn entry(&self, conn: u64) -> Option<&WaitingEntry> {
        self.entries.get(&conn)
    }
}

impl CallCore {
    /// A joiner entered the relay's waiting room (or its entry changed).
    pub(super) fn on_waiting_added(&mut self, entry: WaitingEntry) {
        let conn = entry.conn_id;
        if self.waiting.entries.get(&conn) != Some(&entry) {
            // A changed entry under a known id is a new request: it is announced again.
            self.waiting.announced.remove(&conn);
        }
        self.waiting.entries.insert(conn, entry);
        self.announce_waiting();
    }

    /// A joiner left the relay's waiting room (admitted, denied, gone or timed out).
    pub(super) fn on_waiting_removed(&mut self, conn: u64) {
        self.waiting.entries.remove(&conn);
        self.waiting.announced.remove(&conn);
    }

    /// Announces (or approves) every entry not announced yet, if this member may add.
    fn announce_waiting(&mut self) {
        let may_add = match &self.phase {
            Phase::Member(g) => g.is_host() || g.params().add_rule == AddRule::AnyMember,
            _ => false,
        };
        if !may_add {
            return;
        }
        let fresh: Vec<(u64, String)> = self
            .waiting
            .entries
            .values()
            .filter(|e| !self.waiting.announced.contains(&e.conn_id))
            .map(|e| {
                let name = String::from_utf8_lossy(e.display_name.as_slice()).into_owned();
                (e.conn_id, name)
            })
            .collect();
        for (request, display_name) in fresh {
            self.waiting.announced.insert(request);
            if self.opts.auto_approve {
                self.commits.queue(Intent::Approve(request));
            } else {
                self.emit(Event::JoinRequested {
                    request,
                    display_name,
                });
            }
        }
    }

    /// `Command::Approve`.
    pub(super) fn approve(&mut self, request: u64) -> Result<(), CallError> {
        if !matches!(self.phase, Phase::Member(_)) {
            return Err(CallError::NotMember);
        }
        if !self.waiting.entries.contains_key(&request) {
            return Err(CallError::UnknownRequest(request));
        }
        self.commits.queue(Intent::Approve(request));
        Ok(())
    }

    /// `Command::Deny`.
    pub(super) fn deny(&mut self, request: u64) -> Result<(), CallError> {
        if self.waiting.entries.remove(&request).is_none() {
            return Err(CallError::UnknownRequest(request));
        }
        self.send(Body::RemoveParticipant(RemoveParticipant {
            conn_id: request,
        }));
        Ok(())
    }
}
