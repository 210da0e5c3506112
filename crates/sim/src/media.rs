//! Media in the world: the application publishing tagged frames, packets over lossy hops to
//! the forwarder and from it to every other connected leg, streams starting, and keyframe
//! requests travelling back to the sender.

use std::time::Duration;

use blindcall_client::{CallError, MediaInput, MediaKind};
use blindcall_media::RtpPacket;
use blindcall_relay::ConnId;
use blindcall_transport::ParticipantId;

use crate::member::{FrameTag, frame_bytes};
use crate::world::{Ev, World};

/// Audio frames are published this often.
const AUDIO_INTERVAL: Duration = Duration::from_millis(100);
/// Video frames are published this often.
const VIDEO_INTERVAL: Duration = Duration::from_millis(250);
/// Every this many video frames one is a keyframe anyway.
const KEYFRAME_EVERY: u64 = 20;

impl World {
    fn latency(&self, p: usize) -> Duration {
        let now = self.now();
        self.members[p]
            .link
            .as_ref()
            .map_or(Duration::ZERO, |l| l.profile(now).latency)
    }

    /// The application starts publishing (its media just connected).
    pub(crate) fn start_publishing(&mut self, p: usize) {
        let m = &mut self.members[p];
        if m.app.publishing || m.plan.media != crate::scenario::MediaPlan::Publish {
            return;
        }
        m.app.publishing = true;
        m.app.keyframe_due = true;
        let now = self.now();
        self.push(
            now.plus_millis(1),
            Ev::Publish {
                p,
                kind: MediaKind::Audio,
            },
        );
        self.push(
            now.plus_millis(2),
            Ev::Publish {
                p,
                kind: MediaKind::Video,
            },
        );
    }

    /// The application publishes its next frame of `kind`.
    pub(crate) fn publish(&mut self, p: usize, kind: MediaKind) {
        let now = self.now();
        let m = &mut self.members[p];
        // While its call reconnects the application goes on producing frames (the call
        // refuses them: nothing is sealed while away).
        let flowing = m.media.connected || m.resume.away;
        if !m.is_running() || !flowing || now >= self.publish_until {
            m.app.publishing = false;
            return;
        }
        let seq = m.app.next_seq;
        m.app.next_seq += 1;
        let len = match kind {
            MediaKind::Audio => m.rng.range(20, 160),
            MediaKind::Video => m.rng.range(300, 3_000),
        };
        let frame = frame_bytes(
            FrameTag {
                from: p as u32,
                seq,
            },
            usize::try_from(len).unwrap_or(100),
        );
        let keyframe = (kind == MediaKind::Video)
            .then(|| m.app.keyframe_due || seq.is_multiple_of(KEYFRAME_EVERY));
        let at = self.clock.instant();
        if let Some(core) = m.core.as_mut() {
            let mut result = core.publish(at, kind, &frame, keyframe);
            if result == Err(CallError::KeyframeRequired) {
                result = core.publish(at, kind, &frame, Some(true));
            }
            match result {
                Ok(()) if keyframe.is_some() => m.app.keyframe_due = false,
                Ok(()) => {}
                Err(e) => {
                    let key = format!("publish {e:?}");
                    *self.stats.warnings.entry(key).or_insert(0) += 1;
                }
            }
        }
        self.drain_member(p);
        let every = match kind {
            MediaKind::Audio => AUDIO_INTERVAL,
            MediaKind::Video => VIDEO_INTERVAL,
        };
        if self.members[p].is_running() {
            self.push(now.plus(every), Ev::Publish { p, kind });
        } else {
            self.members[p].app.publishing = false;
        }
    }

    /// A packet leaves participant `p` for the forwarder.
    pub(crate) fn uplink(&mut self, p: usize, kind: MediaKind, packet: RtpPacket) {
        let now = self.now();
        let latency = self.latency(p);
        let m = &mut self.members[p];
        let Some(link) = m.link.as_ref() else {
            return;
        };
        if !m.media.connected || link.partitioned(now) {
            return;
        }
        let generation = link.generation;
        let hops = self.faults.hop(now, latency, &mut m.rng);
        for at in hops {
            self.push(
                at,
                Ev::AtForwarder {
                    from: p,
                    generation,
                    kind,
                    packet: packet.clone(),
                },
            );
        }
    }

    /// A packet reaches the forwarder: it goes to every other connected leg.
    pub(crate) fn at_forwarder(
        &mut self,
        from: usize,
        generation: u32,
        kind: MediaKind,
        packet: RtpPacket,
    ) {
        let Some(conn) = self.members[from]
            .link
            .as_ref()
            .filter(|l| l.generation == generation)
            .map(|l| l.conn)
        else {
            return;
        };
        let Some(participant) = self
            .relay
            .legs
            .get(&conn)
            .filter(|l| l.connected && l.publish)
            .map(|l| l.participant)
        else {
            return;
        };
        self.stats.packets_forwarded += 1;
        let now = self.now();
        let targets: Vec<(usize, u32)> = self
            .relay
            .legs
            .iter()
            .filter(|(c, l)| **c != conn && l.connected)
            .map(|(_, l)| (l.p, l.generation))
            .collect();
        for (to, to_generation) in targets {
            let partitioned = self.members[to]
                .link
                .as_ref()
                .is_none_or(|l| l.partitioned(now));
            if partitioned {
                continue;
            }
            let latency = self.latency(to);
            for at in self.faults.hop(now, latency, &mut self.rng) {
                self.push(
                    at,
                    Ev::AtClient {
                        to,
                        generation: to_generation,
                        from: participant.0,
                        kind,
                        packet: packet.clone(),
                    },
                );
            }
        }
    }

    /// A packet of relay participant `from` reaches participant `to`.
    pub(crate) fn at_client(
        &mut self,
        to: usize,
        generation: u32,
        from: u64,
        kind: MediaKind,
        packet: RtpPacket,
    ) {
        let now = self.clock.instant();
        let m = &mut self.members[to];
        let current = m.link.as_ref().is_some_and(|l| l.generation == generation);
        if !current || !m.media.connected {
            return;
        }
        let Some(core) = m.core.as_mut() else {
            return;
        };
        let from_id = ParticipantId(from);
        if m.started.insert((from, kind == MediaKind::Video)) {
            core.handle_media(
                now,
                MediaInput::TrackStarted {
                    from: from_id,
                    kind,
                },
            );
        }
        core.handle_media(
            now,
            MediaInput::Packet {
                from: from_id,
                kind,
                packet,
            },
        );
        self.drain_member(to);
    }

    /// Participant `p` asks for a keyframe of relay participant `from`'s video.
    pub(crate) fn route_keyframe_request(&mut self, p: usize, from: u64) {
        let Some((to, generation)) = self
            .relay
            .legs
            .values()
            .find(|l| l.participant == ConnId(from))
            .map(|l| (l.p, l.generation))
        else {
            return;
        };
        let at = self.now().plus(self.latency(p)).plus(self.latency(to));
        self.push(at, Ev::KeyframeRequest { to, generation });
    }

    /// A keyframe request reaches participant `to`.
    pub(crate) fn keyframe_request(&mut self, to: usize, generation: u32) {
        let now = self.clock.instant();
        let m = &mut self.members[to];
        if m.link.as_ref().is_none_or(|l| l.generation != generation) || !m.media.connected {
            return;
        }
        if let Some(core) = m.core.as_mut() {
            core.handle_media(
                now,
                MediaInput::KeyframeRequested {
                    kind: MediaKind::Video,
                },
            );
        }
        self.drain_member(to);
    }
}
