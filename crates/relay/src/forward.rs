//! The media forwarder attached to the control server: members' media-signaling messages
//! ([`MediaSignalPayload`], carried in `MediaSignal`) become WebRTC negotiation with one
//! [`Sfu`] per room, and the forwarder's offers go back to the members the same way. It handles
//! SDP and RTP headers only; payloads stay SFrame ciphertext it cannot open.
//!
//! [`start_with_media`] starts a relay with the forwarder attached and its counters exported on
//! `/metrics` (what `blindcall-relay` and `blindcall relay` run); [`attach`] is the lower-level
//! piece for callers that assemble their own [`ServerConfig`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use blindcall_proto::{MediaSignalPayload, VideoFilter};
use blindcall_transport::{
    CountersSnapshot, DropReason, MediaNetwork, ParticipantId, ParticipantOptions, SdpKind,
    SessionDescription, Sfu, SfuConfig, SfuEvent, TappedPacket, VideoSubscription,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::ds::{ConnId, RoomId};
use crate::metrics::MetricsSource;
use crate::server::{
    ForwarderCommand, ForwarderEvent, MediaHook, RelayHandle, ServerConfig, ServerError,
};

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Packets queued per subscriber leg.
    pub leg_queue: usize,
    /// Longest a copy may wait in its leg's queue before it and the rest of its frame are
    /// dropped (`late`).
    pub leg_max_delay: std::time::Duration,
    /// Receives a copy of every RTP packet the forwarder receives (SRTP removed); for tests and
    /// audits.
    pub tap: Option<mpsc::Sender<TappedPacket>>,
    /// Where participants' PeerConnections bind, and the address they advertise.
    pub network: MediaNetwork,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            leg_queue: 4_096,
            leg_max_delay: std::time::Duration::from_millis(500),
            tap: None,
            network: MediaNetwork::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Rooms with at least one participant, and their forwarders.
    live: HashMap<RoomId, Sfu>,
    /// Counters of rooms whose forwarder was closed (the room emptied).
    retired: CountersSnapshot,
}

/// A handle on the running forwarder: its counters. It is also the [`MetricsSource`] that
/// exports them (see [`start_with_media`]).
#[derive(Debug, Clone)]
pub struct ForwarderHandle {
    shared: Arc<Mutex<Shared>>,
    /// Connections with media (a PeerConnection at the forwarder), once each join or removal
    /// has completed.
    participants: Arc<watch::Sender<usize>>,
}

impl Default for ForwarderHandle {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            participants: Arc::new(watch::Sender::new(0)),
        }
    }
}

fn add(t: &mut CountersSnapshot, c: &CountersSnapshot) {
    *t += c;
}

impl ForwarderHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forwarding counters summed over every room so far (closed rooms included).
    pub fn counters(&self) -> CountersSnapshot {
        let s = self.lock();
        let mut t = s.retired;
        for sfu in s.live.values() {
            add(&mut t, &sfu.counters());
        }
        t
    }

    /// Rooms that currently have a forwarder (at least one participant with media).
    pub fn rooms(&self) -> usize {
        self.lock().live.len()
    }

    /// Connections with media now; the receiver sees each change once the forwarder has
    /// finished the join or removal (e.g. a removed member's legs are gone).
    pub fn participants(&self) -> watch::Receiver<usize> {
        self.participants.subscribe()
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

/// Registers the forwarder's metrics (names get the registry's `blindcall_relay` prefix).
fn register_counters(r: &mut Registry, c: &CountersSnapshot, rooms: usize, participants: usize) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(rooms).unwrap_or(i64::MAX));
    r.register("media_rooms", "Rooms with a running media forwarder", g);
    let p: Gauge = Gauge::default();
    p.set(i64::try_from(participants).unwrap_or(i64::MAX));
    r.register(
        "media_participants",
        "Connections with a PeerConnection at the media forwarder",
        p,
    );
    r.register(
        "media_packets_in",
        "RTP packets received from publishers (after SRTP removal)",
        counter(c.packets_in),
    );
    r.register(
        "media_bytes_in",
        "RTP payload bytes received from publishers",
        counter(c.bytes_in),
    );
    r.register(
        "media_packets_out",
        "RTP packets written to subscriber legs",
        counter(c.packets_out),
    );
    r.register(
        "media_bytes_out",
        "RTP payload bytes written to subscriber legs",
        counter(c.bytes_out),
    );
    let dropped = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for reason in DropReason::ALL {
        dropped
            .get_or_create(&vec![("reason", reason.label())])
            .inc_by(c.dropped(reason));
    }
    r.register(
        "media_packets_dropped",
        "RTP packets (or one subscriber's copy) not forwarded, by reason",
        dropped,
    );
    r.register(
        "media_copies_unsubscribed",
        "Packet copies not sent because the subscriber's video subscription left the publisher out",
        counter(c.unsubscribed),
    );
    r.register(
        "media_keyframe_requests",
        "Keyframe requests (PLI/FIR) forwarded to publishers",
        counter(c.keyframe_requests),
    );
    r.register(
        "media_packets_missing_upstream",
        "Publisher packets that never reached the relay (sequence-number gaps)",
        counter(c.missing_upstream),
    );
}

impl MetricsSource for ForwarderHandle {
    fn register(&self, registry: &mut Registry) {
        register_counters(
            registry,
            &self.counters(),
            self.rooms(),
            *self.participants.borrow(),
        );
    }
}

/// Creates the hook to put in [`ServerConfig::media`] and starts the forwarder task (it ends
/// when the relay drops the hook). Call it inside a tokio runtime.
pub fn attach(config: ForwarderConfig) -> (MediaHook, ForwarderHandle) {
    let (events_tx, events_rx) = mpsc::channel(4_096);
    let (cmd_tx, cmd_rx) = mpsc::channel(4_096);
    let handle = ForwarderHandle::default();
    tokio::spawn(run(config, events_rx, cmd_tx, handle.clone()));
    (
        MediaHook {
            events: events_tx,
            commands: cmd_rx,
        },
        handle,
    )
}

/// Starts the relay ([`crate::start`]) with the media forwarder attached and its counters on
/// `/metrics`. Call it inside a tokio runtime.
pub async fn start_with_media(
    mut server: ServerConfig,
    config: ForwarderConfig,
) -> Result<(RelayHandle, ForwarderHandle), ServerError> {
    let (hook, forwarder) = attach(config);
    server.media = Some(hook);
    server.metrics_sources.push(Arc::new(forwarder.clone()));
    let handle = crate::server::start(server).await?;
    Ok((handle, forwarder))
}

fn command(conn: u64, payload: MediaSignalPayload) -> ForwarderCommand {
    ForwarderCommand {
        conn: ConnId(conn),
        payload: payload.encode(),
    }
}

/// Which connection signals for each participant now (a resumed member's participant keeps
/// its id on a new connection, DS-RES-12).
type Routes = Arc<Mutex<HashMap<ParticipantId, ConnId>>>;

fn route(routes: &Routes, participant: ParticipantId) -> Option<ConnId> {
    routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&participant)
        .copied()
}

async fn pump(
    mut events: mpsc::UnboundedReceiver<SfuEvent>,
    cmds: mpsc::Sender<ForwarderCommand>,
    routes: Routes,
) {
    while let Some(e) = events.recv().await {
        let sent = match e {
            SfuEvent::Offer { to, offer } => match route(&routes, to) {
                Some(conn) => {
                    cmds.send(command(conn.0, MediaSignalPayload::Offer(offer.sdp)))
                        .await
                }
                None => Ok(()),
            },
            SfuEvent::OfferFailed { participant, error } => {
                tracing::warn!(%participant, %error, "forwarder re-offer failed");
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The forwarder task's state: rooms' forwarders and which connection is in which room, under
/// which participant id.
struct Forwarder {
    config: ForwarderConfig,
    cmds: mpsc::Sender<ForwarderCommand>,
    handle: ForwarderHandle,
    conn_room: HashMap<ConnId, (RoomId, ParticipantId)>,
    routes: Routes,
    /// Connections with media per room.
    members: HashMap<RoomId, usize>,
}

impl Forwarder {
    fn sfu(&self, room: &RoomId) -> Option<Sfu> {
        self.handle.lock().live.get(room).cloned()
    }

    fn sfu_or_create(&self, room: &RoomId) -> Sfu {
        let mut shared = self.handle.lock();
        shared
            .live
            .entry(room.clone())
            .or_insert_with(|| {
                let (sfu, ev) = Sfu::new(SfuConfig {
                    leg_queue: self.config.leg_queue,
                    leg_max_delay: self.config.leg_max_delay,
                    tap: self.config.tap.clone(),
                    network: self.config.network,
                });
                tokio::spawn(pump(ev, self.cmds.clone(), self.routes.clone()));
                sfu
            })
            .clone()
    }

    fn participant(&self, conn: ConnId) -> Option<(Sfu, ParticipantId)> {
        let (room, participant) = self.conn_room.get(&conn)?;
        Some((self.sfu(room)?, *participant))
    }

    async fn join(
        &mut self,
        conn: ConnId,
        participant: ParticipantId,
        room: RoomId,
        publish: bool,
    ) {
        if self.conn_room.contains_key(&conn) {
            return;
        }
        // A resumed member's new connection takes its participant over; media still held for
        // the old one (its end not seen yet) goes first.
        let stale: Vec<ConnId> = self
            .conn_room
            .iter()
            .filter(|(_, (_, p))| *p == participant)
            .map(|(c, _)| *c)
            .collect();
        for old in stale {
            self.closed(old).await;
        }
        let sfu = self.sfu_or_create(&room);
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(participant, conn);
        match sfu
            .add_participant_with(participant, ParticipantOptions { publish })
            .await
        {
            Ok(offer) => {
                *self.members.entry(room.clone()).or_default() += 1;
                self.conn_room.insert(conn, (room, participant));
                self.handle.participants.send_replace(self.conn_room.len());
                let _ = self
                    .cmds
                    .send(command(conn.0, MediaSignalPayload::Offer(offer.sdp)))
                    .await;
            }
            Err(e) => {
                tracing::warn!(conn = conn.0, error = %e, "media join failed");
                self.routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&participant);
                self.close_if_empty(&room).await;
            }
        }
    }

    async fn answer(&mut self, conn: ConnId, sdp: String) {
        let Some((sfu, participant)) = self.participant(conn) else {
            return;
        };
        let answer = SessionDescription {
            kind: SdpKind::Answer,
            sdp,
        };
        match sfu.handle_answer(participant, answer).await {
            Ok(Some(next)) => {
                let _ = self
                    .cmds
                    .send(command(conn.0, MediaSignalPayload::Offer(next.sdp)))
                    .await;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(conn = conn.0, error = %e, "answer refused"),
        }
    }

    async fn video(&mut self, conn: ConnId, filter: VideoFilter) {
        let Some((sfu, participant)) = self.participant(conn) else {
            return;
        };
        let subscription = match filter {
            VideoFilter::All => VideoSubscription::All,
            VideoFilter::Only(ids) => {
                VideoSubscription::Only(ids.into_iter().map(ParticipantId).collect())
            }
        };
        if let Err(e) = sfu.set_video_subscription(participant, subscription).await {
            tracing::debug!(conn = conn.0, error = %e, "video subscription refused");
        }
    }

    /// A connection ended (a departure, or a member removed by a commit: the driver reports
    /// it in the step that sequenced the commit). Its legs to and from everyone go first.
    async fn closed(&mut self, conn: ConnId) {
        let Some((room, participant)) = self.conn_room.remove(&conn) else {
            return;
        };
        {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            if routes.get(&participant) == Some(&conn) {
                routes.remove(&participant);
            }
        }
        if let Some(sfu) = self.sfu(&room) {
            let _ = sfu.remove_participant(participant).await;
        }
        self.handle.participants.send_replace(self.conn_room.len());
        if let Some(n) = self.members.get_mut(&room) {
            *n = n.saturating_sub(1);
        }
        self.close_if_empty(&room).await;
    }

    /// Closes a room's forwarder once nobody in it has media; its counters are kept.
    async fn close_if_empty(&mut self, room: &RoomId) {
        if self.members.get(room).is_some_and(|n| *n > 0) {
            return;
        }
        self.members.remove(room);
        let Some(sfu) = self.sfu(room) else { return };
        sfu.close().await;
        let mut shared = self.handle.lock();
        if shared.live.remove(room).is_some() {
            add(&mut shared.retired, &sfu.counters());
        }
    }
}

async fn run(
    config: ForwarderConfig,
    mut events: mpsc::Receiver<ForwarderEvent>,
    cmds: mpsc::Sender<ForwarderCommand>,
    handle: ForwarderHandle,
) {
    let mut f = Forwarder {
        config,
        cmds,
        handle,
        conn_room: HashMap::new(),
        routes: Routes::default(),
        members: HashMap::new(),
    };
    while let Some(e) = events.recv().await {
        match e {
            ForwarderEvent::Signal {
                conn,
                room,
                participant,
                payload,
                ..
            } => match MediaSignalPayload::decode(&payload) {
                Ok(MediaSignalPayload::Join { publish }) => {
                    f.join(conn, ParticipantId(participant.0), room, publish)
                        .await;
                }
                Ok(MediaSignalPayload::Answer(sdp)) => f.answer(conn, sdp).await,
                Ok(MediaSignalPayload::Video(filter)) => f.video(conn, filter).await,
                Ok(MediaSignalPayload::Offer(_)) => {
                    tracing::debug!(conn = conn.0, "members never offer");
                }
                Err(e) => tracing::debug!(conn = conn.0, error = %e, "undecodable media signal"),
            },
            ForwarderEvent::Closed { conn } => f.closed(conn).await,
        }
    }
    let live: Vec<Sfu> = f.handle.lock().live.values().cloned().collect();
    for sfu in live {
        sfu.close().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use crate::server::DsSnapshot;

    // covers: OPS-MET-2
    #[test]
    fn forwarder_counters_are_rendered_on_metrics() {
        let handle = ForwarderHandle::default();
        handle.lock().retired = CountersSnapshot {
            packets_in: 10,
            bytes_in: 1_000,
            routed: 9,
            copies: 18,
            packets_out: 15,
            bytes_out: 1_500,
            dropped_no_subscriber: 1,
            dropped_queue_full: 2,
            dropped_leg_closed: 0,
            dropped_write_failed: 1,
            dropped_late: 6,
            unsubscribed: 5,
            keyframe_requests: 3,
            missing_upstream: 4,
            ..CountersSnapshot::default()
        };
        let sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(handle.clone())];
        let text = render(
            &DsSnapshot::default(),
            &crate::metrics::ShellMetrics::new(),
            &sources,
        )
        .unwrap();
        for line in [
            "blindcall_relay_media_rooms 0",
            "blindcall_relay_media_participants 0",
            "blindcall_relay_media_packets_in_total 10",
            "blindcall_relay_media_bytes_in_total 1000",
            "blindcall_relay_media_packets_out_total 15",
            "blindcall_relay_media_bytes_out_total 1500",
            "blindcall_relay_media_packets_dropped_total{reason=\"no_subscriber\"} 1",
            "blindcall_relay_media_packets_dropped_total{reason=\"queue_full\"} 2",
            "blindcall_relay_media_packets_dropped_total{reason=\"leg_closed\"} 0",
            "blindcall_relay_media_packets_dropped_total{reason=\"write_failed\"} 1",
            "blindcall_relay_media_packets_dropped_total{reason=\"late\"} 6",
            "blindcall_relay_media_copies_unsubscribed_total 5",
            "blindcall_relay_media_keyframe_requests_total 3",
            "blindcall_relay_media_packets_missing_upstream_total 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Counters of closed rooms stay in the totals.
        assert_eq!(handle.counters().packets_in, 10);
    }
}
