//! The client side: one PeerConnection to the relay. Publishes one audio and one video track
//! and receives every other participant's tracks. The relay offers; the client answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use blindcall_media::{MediaKind, RtpPacket};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use tokio::sync::{Mutex, mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use crate::error::TransportError;
use crate::feedback::{is_keyframe_request, pli};
use crate::ids::{ParticipantId, from_codec_kind, kind_label, parse_stream_id, to_codec_kind};
use crate::peer::{
    ConnectionState, MediaNetwork, PcEvent, Peer, SdpKind, SessionDescription, codec,
};

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Capacity of the event channel; events that do not fit are dropped and counted.
    pub event_capacity: usize,
    /// SSRC of the published audio stream.
    pub audio_ssrc: u32,
    /// SSRC of the published video stream.
    pub video_ssrc: u32,
    /// Whether to publish audio and video (must match the relay's participant options).
    pub publish: bool,
    /// The local address media uses.
    pub network: MediaNetwork,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            event_capacity: 8_192,
            audio_ssrc: 0x0A0D_1000,
            video_ssrc: 0x0B1D_2000,
            publish: true,
            network: MediaNetwork::default(),
        }
    }
}

/// What the client transport reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An RTP packet of another participant's stream (payload = descriptor + SFrame bytes).
    Media {
        /// Whose stream.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
        /// The packet as the media layer needs it.
        packet: RtpPacket,
    },
    /// A participant's stream started arriving.
    TrackStarted {
        /// Whose stream.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// A participant's stream ended.
    TrackEnded {
        /// Whose stream.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// Someone asked for a keyframe of this client's published stream.
    KeyframeRequested {
        /// The stream (video in practice).
        kind: MediaKind,
    },
    /// The PeerConnection changed state.
    ConnectionState(ConnectionState),
}

/// Client-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Packets handed to the transport by [`ClientTransport::send`].
    pub packets_sent: u64,
    /// Media packets delivered as events.
    pub packets_received: u64,
    /// Events dropped because the event channel was full.
    pub events_dropped: u64,
    /// Remote tracks ignored because their stream id named no participant.
    pub unknown_tracks: u64,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    unknown: AtomicU64,
}

struct Published {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    pt: Option<u8>,
}

struct Inner {
    pc: Arc<dyn PeerConnection>,
    gathered: Mutex<watch::Receiver<bool>>,
    config: ClientConfig,
    published: Mutex<HashMap<MediaKind, Published>>,
    remote: StdMutex<HashMap<(ParticipantId, MediaKind), Arc<dyn TrackRemote>>>,
    events: mpsc::Sender<ClientEvent>,
    stats: Stats,
}

impl Inner {
    fn emit(&self, event: ClientEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One participant's PeerConnection to the relay.
#[derive(Clone)]
pub struct ClientTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClientTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport").finish_non_exhaustive()
    }
}

impl ClientTransport {
    /// Creates the PeerConnection (loopback host candidates, no STUN) and its event stream.
    /// Nothing flows until [`ClientTransport::handle_offer`] answers the relay's first offer.
    pub async fn new(
        config: ClientConfig,
    ) -> Result<(Self, mpsc::Receiver<ClientEvent>), TransportError> {
        let peer = Peer::build(config.network).await?;
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let gathered = peer.gathered();
        let Peer { pc, events, .. } = peer;
        let inner = Arc::new(Inner {
            pc,
            gathered: Mutex::new(gathered),
            config,
            published: Mutex::new(HashMap::new()),
            remote: StdMutex::new(HashMap::new()),
            events: events_tx,
            stats: Stats::default(),
        });
        tokio::spawn(run_pc_events(Arc::downgrade(&inner), events));
        Ok((Self { inner }, events_rx))
    }

    /// Applies an offer from the relay and returns the answer to send back. On the first
    /// offer the client attaches its audio and video tracks to the two receive-only sections
    /// the relay offered for them.
    pub async fn handle_offer(
        &self,
        offer: SessionDescription,
    ) -> Result<SessionDescription, TransportError> {
        if offer.kind != SdpKind::Offer {
            return Err(TransportError::WrongSdpType { expected: "offer" });
        }
        let inner = &self.inner;
        inner.pc.set_remote_description(offer.into_rtc()?).await?;
        {
            let mut published = inner.published.lock().await;
            for (kind, ssrc) in [
                (MediaKind::Audio, inner.config.audio_ssrc),
                (MediaKind::Video, inner.config.video_ssrc),
            ] {
                if !inner.config.publish || published.contains_key(&kind) {
                    continue;
                }
                let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    format!("bc-self-{ssrc}"),
                    format!("bc-self-{}", kind_label(kind)),
                    kind_label(kind).to_owned(),
                    to_codec_kind(kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec(kind),
                        ..Default::default()
                    }],
                )));
                let sender = inner
                    .pc
                    .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
                    .await?;
                tokio::spawn(run_feedback(
                    Arc::downgrade(inner),
                    Arc::clone(&track),
                    kind,
                ));
                published.insert(
                    kind,
                    Published {
                        track,
                        sender,
                        ssrc,
                        pt: None,
                    },
                );
            }
        }
        let answer = inner.pc.create_answer(None).await?;
        let mut gathered = inner.gathered.lock().await;
        let local = crate::peer::set_local_and_export(
            &inner.pc,
            &mut gathered,
            answer,
            inner.config.network,
        )
        .await?;
        drop(gathered);
        let mut published = inner.published.lock().await;
        for p in published.values_mut() {
            let params = p.sender.get_parameters().await?;
            p.pt = params.rtp_parameters.codecs.first().map(|c| c.payload_type);
        }
        Ok(local)
    }

    /// Sends one packet of this client's `kind` stream. Awaits when the transport is busy.
    pub async fn send(&self, kind: MediaKind, packet: RtpPacket) -> Result<(), TransportError> {
        let (track, ssrc, pt) = {
            let published = self.inner.published.lock().await;
            let p = published
                .get(&kind)
                .ok_or(TransportError::NotNegotiated(kind))?;
            let pt = p.pt.ok_or(TransportError::NotNegotiated(kind))?;
            (Arc::clone(&p.track), p.ssrc, pt)
        };
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: packet.marker,
                payload_type: pt,
                sequence_number: packet.sequence_number,
                timestamp: packet.timestamp,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(packet.payload),
        };
        track.write_rtp(pkt).await?;
        self.inner.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the relay for a keyframe of `from`'s video (a PLI the relay forwards upstream).
    pub async fn request_keyframe(&self, from: ParticipantId) -> Result<(), TransportError> {
        let kind = MediaKind::Video;
        let track = self
            .inner
            .remote
            .lock()
            .map_err(|_| TransportError::Closed)?
            .get(&(from, kind))
            .cloned()
            .ok_or(TransportError::NoSuchTrack { from, kind })?;
        let ssrc = track
            .ssrcs()
            .await
            .first()
            .copied()
            .ok_or(TransportError::NoSuchTrack { from, kind })?;
        track.write_rtcp(pli(ssrc)).await?;
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            packets_sent: s.sent.load(Ordering::Relaxed),
            packets_received: s.received.load(Ordering::Relaxed),
            events_dropped: s.dropped.load(Ordering::Relaxed),
            unknown_tracks: s.unknown.load(Ordering::Relaxed),
        }
    }

    /// Closes the PeerConnection.
    pub async fn close(&self) -> Result<(), TransportError> {
        self.inner.pc.close().await?;
        Ok(())
    }
}

async fn run_pc_events(
    inner: std::sync::Weak<Inner>,
    mut events: mpsc::UnboundedReceiver<PcEvent>,
) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            PcEvent::State(s) => inner.emit(ClientEvent::ConnectionState(s)),
            PcEvent::Track(track) => {
                let from = parse_stream_id(&track.stream_id().await);
                let kind = from_codec_kind(track.kind().await);
                match (from, kind) {
                    (Some(from), Some(kind)) => {
                        if let Ok(mut remote) = inner.remote.lock() {
                            remote.insert((from, kind), Arc::clone(&track));
                        }
                        inner.emit(ClientEvent::TrackStarted { from, kind });
                        tokio::spawn(run_remote_track(Arc::downgrade(&inner), track, from, kind));
                    }
                    _ => {
                        inner.stats.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn run_remote_track(
    inner: std::sync::Weak<Inner>,
    track: Arc<dyn TrackRemote>,
    from: ParticipantId,
    kind: MediaKind,
) {
    while let Some(event) = track.poll().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                inner.stats.received.fetch_add(1, Ordering::Relaxed);
                inner.emit(ClientEvent::Media {
                    from,
                    kind,
                    packet: RtpPacket {
                        sequence_number: pkt.header.sequence_number,
                        timestamp: pkt.header.timestamp,
                        marker: pkt.header.marker,
                        payload: pkt.payload.to_vec(),
                    },
                });
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    if let Some(inner) = inner.upgrade() {
        if let Ok(mut remote) = inner.remote.lock() {
            remote.remove(&(from, kind));
        }
        inner.emit(ClientEvent::TrackEnded { from, kind });
    }
}

async fn run_feedback(
    inner: std::sync::Weak<Inner>,
    track: Arc<TrackLocalStaticRTP>,
    kind: MediaKind,
) {
    while let Some(event) = track.poll().await {
        let Some(inner) = inner.upgrade() else { return };
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            inner.emit(ClientEvent::KeyframeRequested { kind });
        }
    }
}
