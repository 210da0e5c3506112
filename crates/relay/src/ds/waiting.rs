//! KeyPackages and the waiting room: publish, join request, caps, and the per-entry updates
//! members receive.

use blindcall_proto::{
    Body, ErrorCode, KeyPackageAccepted, PublishKeyPackage, RefusedReason, Role, VLBytes,
    WaitingEntry, WaitingEntryRemoved,
};

use super::mls::{self, GroupState};
use super::state::{Conn, Seat};
use super::{ConnId, Ds, Event, KeyPackageError, RoomId};

impl Ds {
    pub(super) fn on_publish(&mut self, id: ConnId, m: PublishKeyPackage) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        if adm.seat != Seat::Lobby {
            self.error(id, ErrorCode::UNEXPECTED_MESSAGE);
            return;
        }
        let room_id = adm.room.clone();
        // A guest admitted to a locked room may only resume a membership, never queue.
        if adm.role != Role::HOST && self.rooms.get(&room_id).is_some_and(|r| r.locked) {
            self.refuse(id, RefusedReason::ROOM_LOCKED);
            return;
        }
        let cs = self
            .rooms
            .get(&room_id)
            .and_then(|r| r.group.as_ref())
            .map(GroupState::ciphersuite);
        let validated = mls::validate_key_package(
            &self.crypto,
            m.key_package.as_slice(),
            self.cfg.max_key_package_len,
            cs,
        );
        let mut kp = match validated {
            Ok(kp) => kp,
            Err(e) => {
                self.error(id, e.into());
                return;
            }
        };
        kp.join_proof = m.join_proof.map(|p| p.as_slice().to_vec());
        let duplicate = self.rooms.get(&room_id).is_some_and(|r| {
            r.conns.iter().any(|c| {
                *c != id
                    && self
                        .admission(*c)
                        .and_then(|a| a.key_package.as_ref())
                        .is_some_and(|k| k.kp_ref == kp.kp_ref)
            })
        });
        if duplicate {
            self.error(id, KeyPackageError::Duplicate.into());
            return;
        }
        let kp_ref = kp.kp_ref.clone();
        if let Some(a) = self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            a.key_package = Some(kp);
        }
        self.counters.key_packages_stored += 1;
        self.send(
            id,
            Body::KeyPackageAccepted(KeyPackageAccepted {
                key_package_ref: VLBytes::new(kp_ref),
            }),
        );
    }

    pub(super) fn on_join_request(&mut self, id: ConnId) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        if adm.seat != Seat::Lobby {
            self.error(id, ErrorCode::UNEXPECTED_MESSAGE);
            return;
        }
        let Some(kp) = adm.key_package.as_ref() else {
            self.error(id, ErrorCode::NO_KEY_PACKAGE);
            return;
        };
        let (room_id, role, token_id) = (adm.room.clone(), adm.role, adm.token_id);
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(group) = room.group.as_ref() else {
            self.error(id, ErrorCode::NO_GROUP);
            return;
        };
        if room.locked && role != Role::HOST {
            self.refuse(id, RefusedReason::ROOM_LOCKED);
            return;
        }
        let same_token = room
            .waiting
            .iter()
            .filter(|w| self.admission(**w).is_some_and(|a| a.token_id == token_id))
            .count();
        if room.waiting.len() >= self.cfg.max_waiting_per_room
            || same_token >= self.cfg.max_waiting_per_token
        {
            self.refuse(id, RefusedReason::WAITING_ROOM_FULL);
            return;
        }
        // Published before the group existed: check it against the group's ciphersuite now.
        let fresh = mls::validate_key_package(
            &self.crypto,
            &kp.bytes,
            self.cfg.max_key_package_len,
            Some(group.ciphersuite()),
        );
        if let Err(e) = fresh {
            self.error(id, e.into());
            return;
        }
        let since = self.now;
        if let Some(a) = self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            a.seat = Seat::Waiting { since };
        }
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.waiting.push(id);
        }
        self.timers
            .insert((since.saturating_add(self.cfg.waiting_room_timeout), id));
        if let Some(state) = self.room_state(&room_id) {
            self.send(id, Body::RoomStateUpdate(state));
        }
        if let Some(entry) = self.waiting_entry(id) {
            for (m, _) in self.members(&room_id) {
                self.send(m, Body::WaitingEntryAdded(entry.clone()));
            }
        }
        self.event(Event::JoinerWaiting {
            room: room_id,
            conn: id,
        });
    }

    /// The waiting-room entry of a waiting connection.
    fn waiting_entry(&self, id: ConnId) -> Option<WaitingEntry> {
        let a = self.admission(id)?;
        let kp = a.key_package.as_ref()?;
        Some(WaitingEntry {
            conn_id: id.0,
            display_name: VLBytes::new(a.display_name.clone()),
            key_package: VLBytes::new(kp.bytes.clone()),
            join_proof: kp.join_proof.clone().map(VLBytes::new),
        })
    }

    /// Tell every member (but those in `skip`) that `joiner` left the waiting room.
    pub(super) fn send_waiting_removed(
        &mut self,
        room_id: &RoomId,
        joiner: ConnId,
        skip: &[ConnId],
    ) {
        for (m, _) in self.members(room_id) {
            if skip.contains(&m) {
                continue;
            }
            self.send(
                m,
                Body::WaitingEntryRemoved(WaitingEntryRemoved { conn_id: joiner.0 }),
            );
        }
    }

    /// Give a new member one entry per joiner waiting now, oldest first.
    pub(super) fn send_waiting_all(&mut self, room_id: &RoomId, member: ConnId) {
        let waiting = self
            .rooms
            .get(room_id)
            .map(|r| r.waiting.clone())
            .unwrap_or_default();
        for w in waiting {
            if let Some(entry) = self.waiting_entry(w) {
                self.send(member, Body::WaitingEntryAdded(entry));
            }
        }
    }
}
