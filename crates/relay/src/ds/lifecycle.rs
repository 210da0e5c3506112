//! Media-signaling pass-through, shutdown and occupancy: what the shell needs beyond the MLS
//! delivery service proper.

use blindcall_proto::VLBytes;
use blindcall_proto::{Body, ControlMessage, ErrorCode, MediaSignal, Refused, RefusedReason};

use super::state::Seat;
use super::{CloseReason, ConnId, Ds, DsCounters, Event, MediaSignalError, Output};
use crate::time::Timestamp;

/// How many rooms and connections the DS holds right now (for gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Rooms with at least one admitted connection.
    pub rooms: usize,
    /// Open connections, admitted or not.
    pub connections: usize,
    /// Connections admitted to a room.
    pub admitted: usize,
    /// Connections that are members of their room's group.
    pub members: usize,
    /// Connections in a waiting room.
    pub waiting: usize,
    /// Store mode with homes: rooms served here as their home (loaded, not being settled).
    pub homes: usize,
}

impl Ds {
    /// Counts of rooms, connections, members and waiting joiners.
    pub fn occupancy(&self) -> Occupancy {
        let mut o = Occupancy {
            rooms: self.rooms.len(),
            connections: self.conns.len(),
            homes: if self.cfg.homes.is_some() {
                self.rooms.values().filter(|r| r.pending.is_none()).count()
            } else {
                0
            },
            ..Occupancy::default()
        };
        for c in self.conns.values() {
            if let Some(a) = c.admission() {
                o.admitted += 1;
                match a.seat {
                    Seat::Member { .. } => o.members += 1,
                    Seat::Waiting { .. } => o.waiting += 1,
                    Seat::Lobby => {}
                }
            }
        }
        o
    }

    /// Queue a media-signaling message from the relay's forwarder to a member's connection.
    ///
    /// Only members of their room's group may be signaled; nothing is queued on error.
    pub fn send_media_signal(
        &mut self,
        conn: ConnId,
        payload: Vec<u8>,
    ) -> Result<(), MediaSignalError> {
        let Some(c) = self.conns.get(&conn) else {
            return Err(MediaSignalError::UnknownConnection);
        };
        if !matches!(c.admission().map(|a| a.seat), Some(Seat::Member { .. })) {
            return Err(MediaSignalError::NotMember);
        }
        let len = payload.len();
        let msg = ControlMessage::new(Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(payload),
        }));
        let bytes = msg
            .to_frame(self.cfg.max_frame_len)
            .map_err(|_| MediaSignalError::TooLarge { len })?;
        self.counters.media_signals_out += 1;
        self.out.push_back(Output::Send { conn, bytes });
        Ok(())
    }

    /// Refuse every connection with `SHUTTING_DOWN` and drop all room state.
    ///
    /// Unlike a departure, this proposes no removals: the whole relay goes away. Every later
    /// connection is refused the same way.
    pub fn handle_shutdown(&mut self, now: Timestamp) {
        self.advance(now);
        self.shutting_down = true;
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.conns.remove(&id);
            self.refuse_unregistered(id, RefusedReason::SHUTTING_DOWN);
        }
        let mut rooms: Vec<_> = self.rooms.drain().map(|(k, _)| k).collect();
        rooms.sort();
        for room in rooms {
            self.event(Event::RoomClosed { room });
        }
        self.timers.clear();
        self.grace_timers.clear();
        self.token_conns.clear();
    }

    /// Whether [`Ds::handle_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Refuse a connection the DS holds no state for (any more): message, count, close.
    pub(super) fn refuse_unregistered(&mut self, id: ConnId, reason: RefusedReason) {
        DsCounters::bump(&mut self.counters.refused, reason);
        self.send(id, Body::Refused(Refused { reason }));
        self.event(Event::Refused { conn: id, reason });
        self.out.push_back(Output::Close {
            conn: id,
            reason: CloseReason::Refused(reason),
        });
    }

    pub(super) fn on_media_signal(&mut self, id: ConnId, m: MediaSignal) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let Seat::Member { leaf } = adm.seat else {
            self.error(id, ErrorCode::NOT_MEMBER);
            return;
        };
        let room = adm.room.clone();
        let participant = adm.participant;
        self.counters.media_signals_in += 1;
        self.out.push_back(Output::MediaSignal {
            conn: id,
            room,
            leaf,
            participant,
            payload: m.payload.as_slice().to_vec(),
        });
    }
}
