//! The relay's media forwarder attached to its control server: media-signaling messages from
//! members become WebRTC negotiation with one [`Sfu`] per room, and the forwarder's offers go
//! back to the members as media-signaling messages. It handles SDP and RTP headers only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use blindcall_relay::{ConnId, ForwarderCommand, ForwarderEvent, MediaHook, RoomId};
use blindcall_transport::{
    CountersSnapshot, ParticipantId, ParticipantOptions, Sfu, SfuConfig, SfuEvent, TappedPacket,
};
use tokio::sync::mpsc;

use crate::signal::MediaSignalPayload;

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Packets queued per subscriber leg.
    pub leg_queue: usize,
    /// Receives a copy of every RTP packet the forwarder receives (SRTP removed).
    pub tap: Option<mpsc::Sender<TappedPacket>>,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            leg_queue: 4_096,
            tap: None,
        }
    }
}

/// A handle on the running forwarder: its counters.
#[derive(Debug, Clone, Default)]
pub struct ForwarderHandle {
    sfus: Arc<Mutex<Vec<Sfu>>>,
}

impl ForwarderHandle {
    /// Forwarding counters summed over every room so far.
    pub fn counters(&self) -> CountersSnapshot {
        let sfus = self.sfus.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = CountersSnapshot::default();
        for s in sfus.iter() {
            let c = s.counters();
            t.packets_in += c.packets_in;
            t.bytes_in += c.bytes_in;
            t.routed += c.routed;
            t.copies += c.copies;
            t.packets_out += c.packets_out;
            t.bytes_out += c.bytes_out;
            t.dropped_no_subscriber += c.dropped_no_subscriber;
            t.dropped_queue_full += c.dropped_queue_full;
            t.dropped_leg_closed += c.dropped_leg_closed;
            t.dropped_write_failed += c.dropped_write_failed;
            t.extensions_stripped += c.extensions_stripped;
            t.keyframe_requests += c.keyframe_requests;
            t.tapped += c.tapped;
            t.tap_dropped += c.tap_dropped;
        }
        t
    }
}

/// Creates the hook to put in the relay's `ServerConfig::media` and starts the forwarder
/// task (it ends when the relay drops the hook).
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

fn command(conn: u64, payload: MediaSignalPayload) -> ForwarderCommand {
    ForwarderCommand {
        conn: ConnId(conn),
        payload: payload.encode(),
    }
}

async fn pump(mut events: mpsc::UnboundedReceiver<SfuEvent>, cmds: mpsc::Sender<ForwarderCommand>) {
    while let Some(e) = events.recv().await {
        let sent = match e {
            SfuEvent::Offer { to, offer } => {
                cmds.send(command(to.0, MediaSignalPayload::Offer(offer.sdp)))
                    .await
            }
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

async fn run(
    config: ForwarderConfig,
    mut events: mpsc::Receiver<ForwarderEvent>,
    cmds: mpsc::Sender<ForwarderCommand>,
    handle: ForwarderHandle,
) {
    let mut rooms: HashMap<RoomId, Sfu> = HashMap::new();
    let mut conn_room: HashMap<ConnId, RoomId> = HashMap::new();
    while let Some(e) = events.recv().await {
        match e {
            ForwarderEvent::Signal {
                conn,
                room,
                payload,
                ..
            } => {
                let pid = ParticipantId(conn.0);
                let Ok(signal) = MediaSignalPayload::decode(&payload) else {
                    tracing::debug!(conn = conn.0, "undecodable media signal");
                    continue;
                };
                match signal {
                    MediaSignalPayload::Join { publish } => {
                        if conn_room.contains_key(&conn) {
                            continue;
                        }
                        let sfu = rooms
                            .entry(room.clone())
                            .or_insert_with(|| {
                                let (sfu, ev) = Sfu::new(SfuConfig {
                                    leg_queue: config.leg_queue,
                                    tap: config.tap.clone(),
                                });
                                tokio::spawn(pump(ev, cmds.clone()));
                                handle
                                    .sfus
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(sfu.clone());
                                sfu
                            })
                            .clone();
                        match sfu
                            .add_participant_with(pid, ParticipantOptions { publish })
                            .await
                        {
                            Ok(offer) => {
                                conn_room.insert(conn, room);
                                let _ = cmds
                                    .send(command(conn.0, MediaSignalPayload::Offer(offer.sdp)))
                                    .await;
                            }
                            Err(e) => {
                                tracing::warn!(conn = conn.0, error = %e, "media join failed")
                            }
                        }
                    }
                    MediaSignalPayload::Answer(sdp) => {
                        let Some(sfu) = conn_room.get(&conn).and_then(|r| rooms.get(r)) else {
                            continue;
                        };
                        let answer = MediaSignalPayload::Answer(sdp).into_description();
                        let Some(answer) = answer else { continue };
                        match sfu.handle_answer(pid, answer).await {
                            Ok(Some(next)) => {
                                let _ = cmds
                                    .send(command(conn.0, MediaSignalPayload::Offer(next.sdp)))
                                    .await;
                            }
                            Ok(None) => {}
                            Err(e) => tracing::debug!(conn = conn.0, error = %e, "answer refused"),
                        }
                    }
                    MediaSignalPayload::Offer(_) => {
                        tracing::debug!(conn = conn.0, "members never offer");
                    }
                }
            }
            ForwarderEvent::Closed { conn } => {
                if let Some(room) = conn_room.remove(&conn)
                    && let Some(sfu) = rooms.get(&room)
                {
                    let _ = sfu.remove_participant(ParticipantId(conn.0)).await;
                }
            }
            _ => {}
        }
    }
    for sfu in rooms.values() {
        sfu.close().await;
    }
}
