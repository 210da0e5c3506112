//! Store mode: the waiting room shared between nodes (spec/cluster.md, CL-WAIT-1).
//!
//! A joiner waits on the node it is connected to, as on a single relay; in store mode that node
//! also shows it to the other nodes: [`Output::Waiting`] puts it in the store when it starts
//! waiting and deletes it when it stops (added, denied, timed out, gone) — one writer per
//! entry. Every node hands the entries it sees to [`Ds::handle_waiting`] and shows the members
//! connected to it the union, so a member on any node can add a joiner waiting on any node: the
//! Add is validated against these entries, and the joiner's own node welcomes it when it
//! follows the commit (CL-FOLLOW-3).

use blindcall_proto::{Body, VLBytes, WaitingEntry};

use super::mls::{self, StoredKeyPackage};
use super::validate::Joiner;
use super::{ConnId, Ds, Output, RoomId, StoreMode};
use crate::store::{WaitingChange, WaitingRecord};
use crate::time::Timestamp;

/// Entry ids of joiners waiting on other nodes have this bit set, so they never name a
/// connection of this node.
const REMOTE: u64 = 1 << 63;

/// A change the shell must write to the store (the payload of [`Output::Waiting`]): joiner
/// `conn` of this node waits in `room` (`record`) or no longer does (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingWrite {
    /// The room.
    pub room: RoomId,
    /// The joiner's connection here.
    pub conn: ConnId,
    /// The entry, or `None` to delete it.
    pub record: Option<WaitingRecord>,
}

/// A joiner waiting on another node, as this node shows it.
#[derive(Debug, Clone)]
pub(super) struct RemoteJoiner {
    /// Its entry id here (the `conn_id` of its waiting entries).
    pub id: ConnId,
    pub node: String,
    pub conn: u64,
    pub token_id: [u8; 16],
    pub display_name: Vec<u8>,
    pub kp: StoredKeyPackage,
}

/// Whether `id` names a joiner waiting on another node.
pub(super) fn is_remote(id: ConnId) -> bool {
    id.0 & REMOTE != 0
}

impl Ds {
    /// Store mode: local joiner `conn` started (`true`) or stopped waiting in `room`.
    pub(super) fn share_waiting(&mut self, room: &RoomId, conn: ConnId, waiting: bool) {
        if self.cfg.store_mode != StoreMode::Shared {
            return;
        }
        let record = if waiting {
            let Some(a) = self.admission(conn) else {
                return;
            };
            let Some(kp) = a.key_package.as_ref() else {
                return;
            };
            Some(WaitingRecord {
                room: room.clone(),
                token_id: a.token_id,
                display_name: a.display_name.clone(),
                key_package: kp.bytes.clone(),
                join_proof: kp.join_proof.clone(),
            })
        } else {
            None
        };
        self.out.push_back(Output::Waiting(WaitingWrite {
            room: room.clone(),
            conn,
            record,
        }));
    }

    /// The waiting entries of joiners waiting on other nodes in `room`.
    pub(super) fn remote_entries(&self, room: &RoomId) -> Vec<WaitingEntry> {
        self.remote_waiting
            .get(room)
            .map(|v| v.iter().map(remote_entry).collect())
            .unwrap_or_default()
    }

    /// The joiners waiting on other nodes in `room`, by KeyPackageRef.
    pub(super) fn remote_joiners(&self, room: &RoomId) -> Vec<(Vec<u8>, Joiner)> {
        self.remote_waiting
            .get(room)
            .map(|v| {
                v.iter()
                    .map(|r| {
                        (
                            r.kp.kp_ref.clone(),
                            Joiner {
                                conn: r.id,
                                signature_key: r.kp.signature_key.clone(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Joiners waiting on other nodes that a commit added: they wait no more (their own node
    /// deletes their entries once it follows the commit).
    pub(super) fn drop_remote(&mut self, room: &RoomId, ids: &[ConnId]) {
        if let Some(v) = self.remote_waiting.get_mut(room) {
            v.retain(|r| !ids.contains(&r.id));
        }
    }

    /// Store mode: a change of the store's waiting joiners seen by the shell's watch (entries
    /// of this node's own joiners are not handed over). A joiner waiting on another node is
    /// shown to the room's members here as a waiting entry (`WaitingEntryAdded`, with an entry
    /// id of this node's), after its KeyPackage passes the checks of one published here; a
    /// banned token's, a KeyPackage already waiting, or one that fails is not shown (counted
    /// `waiting_refused`). An entry deleted is removed (`WaitingEntryRemoved`). Then drain
    /// [`Ds::poll_output`].
    pub fn handle_waiting(&mut self, now: Timestamp, change: WaitingChange) {
        self.advance(now);
        if self.cfg.homes.is_some() {
            // With homes a room's joiners wait on its home only: another node's entry is one
            // left behind by a node that died or gave the room up (CL-HOME-7).
            self.counters.waiting_refused += 1;
            return;
        }
        let WaitingChange {
            room,
            node,
            conn,
            record,
        } = change;
        let existing = self
            .remote_waiting
            .get(&room)
            .and_then(|v| v.iter().find(|r| r.node == node && r.conn == conn))
            .map(|r| r.id);
        let Some(record) = record else {
            if let Some(id) = existing {
                self.drop_remote(&room, &[id]);
                self.send_waiting_removed(&room, id, &[]);
            }
            return;
        };
        if existing.is_some() {
            return;
        }
        if self.is_banned(&room, &record.token_id) {
            self.counters.waiting_refused += 1;
            return;
        }
        let cs = self
            .rooms
            .get(&room)
            .and_then(|r| r.group.as_ref())
            .map(|g| g.ciphersuite());
        let mut kp = match mls::validate_key_package(
            &self.crypto,
            &record.key_package,
            self.cfg.max_key_package_len,
            cs,
        ) {
            Ok(kp) => kp,
            Err(_) => {
                self.counters.waiting_refused += 1;
                return;
            }
        };
        kp.join_proof = record.join_proof.clone();
        let duplicate = self
            .waiting_joiners(&room)
            .iter()
            .any(|(r, _)| *r == kp.kp_ref);
        if duplicate {
            self.counters.waiting_refused += 1;
            return;
        }
        let id = ConnId(REMOTE | self.next_remote);
        self.next_remote += 1;
        let joiner = RemoteJoiner {
            id,
            node,
            conn,
            token_id: record.token_id,
            display_name: record.display_name,
            kp,
        };
        let entry = remote_entry(&joiner);
        self.remote_waiting
            .entry(room.clone())
            .or_default()
            .push(joiner);
        self.counters.waiting_learned += 1;
        for (m, _) in self.members(&room) {
            self.send(m, Body::WaitingEntryAdded(entry.clone()));
        }
    }

    /// Store mode: joiners of a token banned here wait no more on other nodes' entries.
    pub(super) fn drop_remote_token(&mut self, room: &RoomId, token_id: [u8; 16]) {
        let ids: Vec<ConnId> = self
            .remote_waiting
            .get(room)
            .map(|v| {
                v.iter()
                    .filter(|r| r.token_id == token_id)
                    .map(|r| r.id)
                    .collect()
            })
            .unwrap_or_default();
        self.drop_remote(room, &ids);
        for id in ids {
            self.send_waiting_removed(room, id, &[]);
        }
    }
}

fn remote_entry(r: &RemoteJoiner) -> WaitingEntry {
    WaitingEntry {
        conn_id: r.id.0,
        display_name: VLBytes::new(r.display_name.clone()),
        key_package: VLBytes::new(r.kp.bytes.clone()),
        join_proof: r.kp.join_proof.clone().map(VLBytes::new),
    }
}
