//! The relay side: one PeerConnection per participant, forwarding every publisher's RTP to
//! every other participant. Reads RTP headers only; the payload is moved, never parsed.
//!
//! Signaling model: the relay is always the offerer. A participant's connection is offered
//! with two receive-only sections (its own audio and video) plus one send-only section per
//! other participant and kind, labelled `a=msid:bcp-<id> bcp-<id>-<kind>`. When someone joins
//! or leaves, the relay adds or removes those sections on every other connection and
//! re-offers ([`SfuEvent::Offer`]); at most one offer is outstanding per connection.
//!
//! Streams are pinned: a publisher's packets are forwarded only under the one SSRC per kind
//! its answers first announced ([`crate::announce`]); anything else arriving on its
//! connection is dropped and counted ([`DropReason::UnannouncedSsrc`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock, Weak};
use std::time::{Duration, Instant};

use blindcall_media::MediaKind;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{Mutex, mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::announce::{Announced, SharedPins, announced};
use crate::counters::{Counters, CountersSnapshot, DropReason, LossTracker};
use crate::error::TransportError;
use crate::feedback::{is_keyframe_request, pli};
use crate::ids::{ParticipantId, from_codec_kind, kind_label, stream_id, to_codec_kind, track_id};
use crate::negotiation::{Negotiation, NegotiationStep};
use crate::peer::{
    ConnectionState, MediaNetwork, PcEvent, Peer, SdpKind, SessionDescription, codec,
};
use crate::rewrite::{ExtensionMap, LegRewriter};
use crate::subscription::{FrameBoundary, GateAction, LateFilter, LegGate, VideoSubscription};

/// Relay forwarding settings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Packets queued per subscriber leg before copies are dropped (`QueueFull`).
    pub leg_queue: usize,
    /// Longest a copy may wait in its leg's queue; a later one is dropped with the rest of its
    /// frame (`Late`), so an overloaded subscriber loses frames instead of falling behind.
    pub leg_max_delay: Duration,
    /// Optional tap receiving a copy of every RTP packet the relay receives from a publisher,
    /// after SRTP removal (for the plaintext check in tests and the demo).
    pub tap: Option<mpsc::Sender<TappedPacket>>,
    /// The local address of every participant's PeerConnection, and the address advertised.
    pub network: MediaNetwork,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            leg_queue: 1_024,
            leg_max_delay: Duration::from_millis(500),
            tap: None,
            network: MediaNetwork::default(),
        }
    }
}

/// Per-participant options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantOptions {
    /// Whether the participant publishes audio and video. A receive-only participant gets no
    /// receive sections on its own connection and no legs on anyone else's, so its joining and
    /// leaving renegotiates nobody else.
    pub publish: bool,
}

impl Default for ParticipantOptions {
    fn default() -> Self {
        Self { publish: true }
    }
}

/// A copy of an RTP packet as the relay holds it (SRTP removed).
#[derive(Debug, Clone)]
pub struct TappedPacket {
    /// Who published it.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The packet, header and payload, as received.
    pub packet: rtp::Packet,
}

/// What the relay's forwarder reports to its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum SfuEvent {
    /// Send this offer to the participant; feed the answer to [`Sfu::handle_answer`].
    Offer {
        /// Recipient.
        to: ParticipantId,
        /// The offer, candidates included.
        offer: SessionDescription,
    },
    /// A renegotiation could not be started.
    OfferFailed {
        /// Whose connection.
        participant: ParticipantId,
        /// Why.
        error: TransportError,
    },
    /// A participant's connection changed state.
    ConnectionState {
        /// Whose connection.
        participant: ParticipantId,
        /// The new state.
        state: ConnectionState,
    },
    /// An answer was applied; `active_legs` streams now flow to the participant.
    Negotiated {
        /// Whose connection.
        participant: ParticipantId,
        /// Subscriber legs forwarding to this participant.
        active_legs: usize,
    },
    /// A participant's stream started arriving at the relay.
    Published {
        /// Who.
        participant: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
    },
}

struct Forwarded {
    packet: rtp::Packet,
    inbound: Arc<ExtensionMap>,
    /// First packet after the leg was paused by its subscriber's video subscription.
    resumed: bool,
    /// Whether the packet starts a frame.
    starts_frame: bool,
    /// When it was queued.
    queued_at: Instant,
}

struct LegTx {
    subscriber: ParticipantId,
    tx: mpsc::Sender<Forwarded>,
    /// Video legs only: whether the subscriber wants this publisher's video.
    gate: Option<Arc<LegGate>>,
}

struct Leg {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    offered_in: Option<u64>,
    active: bool,
}

struct ParticipantState {
    negotiation: Negotiation,
    /// Outgoing legs, keyed by (publisher, kind).
    legs: HashMap<(ParticipantId, MediaKind), Leg>,
}

struct Participant {
    id: ParticipantId,
    publishes: bool,
    pc: Arc<dyn PeerConnection>,
    /// The receive-only transceivers offered for the participant's own streams.
    own: Vec<(MediaKind, Arc<dyn RtpTransceiver>)>,
    /// The SSRC each of its streams is pinned to.
    pins: Arc<SharedPins>,
    gathered: Mutex<watch::Receiver<bool>>,
    state: Mutex<ParticipantState>,
}

type Routes = HashMap<(ParticipantId, MediaKind), Vec<LegTx>>;

/// Each publisher stream's remote track, with its publisher's pins.
type Publishers = HashMap<(ParticipantId, MediaKind), (Arc<dyn TrackRemote>, Arc<SharedPins>)>;

struct Inner {
    config: SfuConfig,
    counters: Counters,
    events: mpsc::UnboundedSender<SfuEvent>,
    participants: Mutex<HashMap<ParticipantId, Arc<Participant>>>,
    routes: RwLock<Routes>,
    publishers: StdMutex<Publishers>,
    /// Each subscriber's video subscription (absent: every publisher).
    video: StdMutex<HashMap<ParticipantId, VideoSubscription>>,
    next_ssrc: AtomicU32,
}

/// One room's media forwarder.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu").finish_non_exhaustive()
    }
}

impl Sfu {
    /// A forwarder for one room and its event stream (offers for renegotiation, states).
    pub fn new(config: SfuConfig) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            config,
            counters: Counters::default(),
            events,
            participants: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            publishers: StdMutex::new(HashMap::new()),
            video: StdMutex::new(HashMap::new()),
            next_ssrc: AtomicU32::new(0x5F00_0001),
        });
        (Self { inner }, rx)
    }

    /// The room's forwarding counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }

    /// Number of subscriber legs currently forwarding (negotiated and answered).
    pub fn active_legs(&self) -> usize {
        self.inner
            .routes
            .read()
            .map(|r| r.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Admits `id` as a publisher: creates its PeerConnection and returns the first offer to
    /// send it. Every other participant gets a re-offer ([`SfuEvent::Offer`]) carrying `id`'s
    /// tracks.
    pub async fn add_participant(
        &self,
        id: ParticipantId,
    ) -> Result<SessionDescription, TransportError> {
        self.add_participant_with(id, ParticipantOptions::default())
            .await
    }

    /// [`Sfu::add_participant`] with options (e.g. receive-only).
    pub async fn add_participant_with(
        &self,
        id: ParticipantId,
        options: ParticipantOptions,
    ) -> Result<SessionDescription, TransportError> {
        let inner = &self.inner;
        let mut participants = inner.participants.lock().await;
        if participants.contains_key(&id) {
            return Err(TransportError::DuplicateParticipant(id));
        }
        let peer = Peer::build(inner.config.network).await?;
        let own_kinds: &[MediaKind] = if options.publish {
            &[MediaKind::Audio, MediaKind::Video]
        } else {
            &[]
        };
        let mut own = Vec::new();
        for &kind in own_kinds {
            let transceiver = peer
                .pc
                .add_transceiver_from_kind(
                    to_codec_kind(kind),
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await?;
            own.push((kind, transceiver));
        }
        let gathered = peer.gathered();
        let Peer { pc, events, .. } = peer;
        let pins = Arc::new(SharedPins::new());
        let part = Arc::new(Participant {
            id,
            publishes: options.publish,
            pc,
            own,
            pins: Arc::clone(&pins),
            gathered: Mutex::new(gathered),
            state: Mutex::new(ParticipantState {
                negotiation: Negotiation::new(),
                legs: HashMap::new(),
            }),
        });
        tokio::spawn(run_pc_events(Arc::downgrade(inner), id, pins, events));

        let others: Vec<Arc<Participant>> = participants.values().cloned().collect();
        {
            let mut state = part.state.lock().await;
            for other in others.iter().filter(|o| o.publishes) {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let leg = inner.new_leg(&part.pc, other.id, kind).await?;
                    state.legs.insert((other.id, kind), leg);
                }
            }
        }
        participants.insert(id, Arc::clone(&part));
        drop(participants);

        for other in others.iter().filter(|_| options.publish) {
            {
                let mut state = other.state.lock().await;
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let leg = inner.new_leg(&other.pc, id, kind).await?;
                    state.legs.insert((id, kind), leg);
                }
            }
            inner.renegotiate(other).await;
        }

        let mut state = part.state.lock().await;
        match state.negotiation.request() {
            NegotiationStep::Offer(generation) => {
                inner.make_offer(&part, &mut state, generation).await
            }
            NegotiationStep::Wait => Err(TransportError::UnexpectedAnswer),
        }
    }

    /// Applies `id`'s answer. Legs it accepted start forwarding. A stream of `id`'s not yet
    /// pinned is pinned to the one SSRC the answer announces for it, if it announces exactly
    /// one ([`crate::announce::SsrcPins::with_answer`]). If changes queued up while the offer
    /// was outstanding, returns the follow-up offer to send right away.
    pub async fn handle_answer(
        &self,
        id: ParticipantId,
        answer: SessionDescription,
    ) -> Result<Option<SessionDescription>, TransportError> {
        if answer.kind != SdpKind::Answer {
            return Err(TransportError::WrongSdpType { expected: "answer" });
        }
        let inner = &self.inner;
        let part = inner
            .participants
            .lock()
            .await
            .get(&id)
            .cloned()
            .ok_or(TransportError::UnknownParticipant(id))?;
        let mut state = part.state.lock().await;
        if state.negotiation.awaiting().is_none() {
            return Err(TransportError::UnexpectedAnswer);
        }
        let answer = answer.into_rtc()?;
        // Pin before the answer takes effect, so no packet of a newly announced stream can
        // arrive before its pin; undone if the answer is refused.
        let before = part.pins.load();
        let parsed = answer.unmarshal()?;
        let mut announcements = [Announced::Nothing; 2];
        for (kind, transceiver) in &part.own {
            if let Some(mid) = transceiver.mid().await? {
                announcements[usize::from(*kind == MediaKind::Video)] = announced(&parsed, &mid);
            }
        }
        let [audio, video] = announcements;
        part.pins.store(before.with_answer(audio, video));
        if let Err(e) = part.pc.set_remote_description(answer).await {
            part.pins.store(before);
            return Err(e.into());
        }
        let (answered, next) = state.negotiation.handle_answer()?;
        let mut activated = Vec::new();
        for (&(publisher, kind), leg) in state.legs.iter_mut() {
            if leg.active || leg.offered_in.is_none_or(|g| g > answered) {
                continue;
            }
            let params = leg.sender.get_parameters().await?;
            let Some(pt) = params.rtp_parameters.codecs.first().map(|c| c.payload_type) else {
                continue;
            };
            let outbound = ExtensionMap::new(
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .map(|e| (e.id, e.uri.as_str())),
            );
            leg.active = true;
            let (tx, rx) = mpsc::channel(inner.config.leg_queue.max(1));
            tokio::spawn(run_leg_writer(
                Arc::downgrade(inner),
                Arc::clone(&leg.track),
                LegRewriter::new(leg.ssrc, pt, outbound),
                inner.config.leg_max_delay,
                rx,
            ));
            tokio::spawn(run_leg_feedback(
                Arc::downgrade(inner),
                Arc::clone(&leg.track),
                publisher,
                kind,
            ));
            activated.push(((publisher, kind), tx));
        }
        if let Ok(mut routes) = inner.routes.write() {
            // The subscription is read under the routes lock, which `set_video_subscription`
            // also holds while it records a new one: a leg activated meanwhile cannot miss it.
            for ((publisher, kind), tx) in activated {
                let gate = (kind == MediaKind::Video)
                    .then(|| Arc::new(LegGate::new(inner.wants_video(id, publisher))));
                routes.entry((publisher, kind)).or_default().push(LegTx {
                    subscriber: id,
                    tx,
                    gate,
                });
            }
        }
        let active_legs = state.legs.values().filter(|l| l.active).count();
        let _ = inner.events.send(SfuEvent::Negotiated {
            participant: id,
            active_legs,
        });
        match next {
            NegotiationStep::Offer(generation) => {
                Ok(Some(inner.make_offer(&part, &mut state, generation).await?))
            }
            NegotiationStep::Wait => Ok(None),
        }
    }

    /// Removes `id`: closes its connection, stops its legs and re-offers everyone else
    /// without `id`'s tracks.
    pub async fn remove_participant(&self, id: ParticipantId) -> Result<(), TransportError> {
        let inner = &self.inner;
        let (part, others) = {
            let mut participants = inner.participants.lock().await;
            let part = participants
                .remove(&id)
                .ok_or(TransportError::UnknownParticipant(id))?;
            let others: Vec<_> = participants.values().cloned().collect();
            (part, others)
        };
        if let Ok(mut routes) = inner.routes.write() {
            routes.retain(|(publisher, _), legs| {
                legs.retain(|l| l.subscriber != id);
                *publisher != id
            });
        }
        if let Ok(mut publishers) = inner.publishers.lock() {
            publishers.retain(|(publisher, _), _| *publisher != id);
        }
        if let Ok(mut video) = inner.video.lock() {
            video.remove(&id);
        }
        let closed = part.pc.close().await;
        for other in others.iter().filter(|_| part.publishes) {
            {
                let mut state = other.state.lock().await;
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    if let Some(leg) = state.legs.remove(&(id, kind)) {
                        other.pc.remove_track(&leg.sender).await?;
                    }
                }
            }
            inner.renegotiate(other).await;
        }
        closed?;
        Ok(())
    }

    /// Sets whose video `subscriber` receives (audio always flows from everyone); replaces
    /// the previous subscription. Each leg starts or stops at the publisher's next frame
    /// boundary, so no partial frame reaches the subscriber, and its sequence numbers stay
    /// continuous. Publishers whose video is newly wanted are asked for a keyframe.
    pub async fn set_video_subscription(
        &self,
        subscriber: ParticipantId,
        subscription: VideoSubscription,
    ) -> Result<(), TransportError> {
        let inner = &self.inner;
        if !inner.participants.lock().await.contains_key(&subscriber) {
            return Err(TransportError::UnknownParticipant(subscriber));
        }
        let mut started = Vec::new();
        if let Ok(routes) = inner.routes.read() {
            if let Ok(mut video) = inner.video.lock() {
                video.insert(subscriber, subscription.clone());
            }
            for (&(publisher, kind), legs) in routes.iter() {
                if kind != MediaKind::Video {
                    continue;
                }
                let wanted = subscription.wants(publisher);
                for gate in legs
                    .iter()
                    .filter(|l| l.subscriber == subscriber)
                    .filter_map(|l| l.gate.as_ref())
                {
                    if gate.set_wanted(wanted) && wanted {
                        started.push(publisher);
                    }
                }
            }
        }
        for publisher in started {
            inner
                .request_keyframe_upstream(publisher, MediaKind::Video)
                .await;
        }
        Ok(())
    }

    /// The SSRC `id`'s `kind` stream is pinned to: the only one its packets are forwarded
    /// under. `None` until an answer announced exactly one (or for an unknown participant).
    pub async fn pinned_ssrc(&self, id: ParticipantId, kind: MediaKind) -> Option<u32> {
        let part = self.inner.participants.lock().await.get(&id).cloned()?;
        part.pins.get(kind)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let parts: Vec<_> = self
            .inner
            .participants
            .lock()
            .await
            .drain()
            .map(|(_, p)| p)
            .collect();
        if let Ok(mut routes) = self.inner.routes.write() {
            routes.clear();
        }
        for p in parts {
            let _ = p.pc.close().await;
        }
    }
}

impl Inner {
    fn wants_video(&self, subscriber: ParticipantId, publisher: ParticipantId) -> bool {
        self.video
            .lock()
            .ok()
            .and_then(|v| v.get(&subscriber).map(|s| s.wants(publisher)))
            .unwrap_or(true)
    }

    /// Sends a PLI for `publisher`'s stream of `kind` (its pinned SSRC) upstream; counts it
    /// when sent.
    async fn request_keyframe_upstream(&self, publisher: ParticipantId, kind: MediaKind) {
        let upstream = self
            .publishers
            .lock()
            .ok()
            .and_then(|p| p.get(&(publisher, kind)).cloned());
        let Some((upstream, pins)) = upstream else {
            return;
        };
        let Some(ssrc) = pins.get(kind) else {
            return;
        };
        if upstream.write_rtcp(pli(ssrc)).await.is_ok() {
            self.counters.record_keyframe_request();
        }
    }

    async fn new_leg(
        &self,
        pc: &Arc<dyn PeerConnection>,
        publisher: ParticipantId,
        kind: MediaKind,
    ) -> Result<Leg, TransportError> {
        let ssrc = self.next_ssrc.fetch_add(1, Ordering::Relaxed);
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id(publisher),
            track_id(publisher, kind),
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
        let transceiver = pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await?;
        let sender = transceiver.sender().await?.ok_or(TransportError::Closed)?;
        Ok(Leg {
            track,
            sender,
            ssrc,
            offered_in: None,
            active: false,
        })
    }

    async fn make_offer(
        &self,
        part: &Participant,
        state: &mut ParticipantState,
        generation: u64,
    ) -> Result<SessionDescription, TransportError> {
        let result = async {
            let offer = part.pc.create_offer(None).await?;
            let mut gathered = part.gathered.lock().await;
            crate::peer::set_local_and_export(&part.pc, &mut gathered, offer, self.config.network)
                .await
        }
        .await;
        match result {
            Ok(offer) => {
                for leg in state.legs.values_mut() {
                    leg.offered_in.get_or_insert(generation);
                }
                Ok(offer)
            }
            Err(e) => {
                state.negotiation.abandon(generation);
                Err(e)
            }
        }
    }

    async fn renegotiate(&self, part: &Participant) {
        let mut state = part.state.lock().await;
        if let NegotiationStep::Offer(generation) = state.negotiation.request() {
            let event = match self.make_offer(part, &mut state, generation).await {
                Ok(offer) => SfuEvent::Offer { to: part.id, offer },
                Err(error) => SfuEvent::OfferFailed {
                    participant: part.id,
                    error,
                },
            };
            let _ = self.events.send(event);
        }
    }

    fn forward(
        &self,
        publisher: ParticipantId,
        kind: MediaKind,
        packet: rtp::Packet,
        starts_frame: bool,
        inbound: &Arc<ExtensionMap>,
    ) {
        self.counters.record_in(packet.payload.len());
        if let Ok(routes) = self.routes.read() {
            self.route(&routes, publisher, kind, &packet, starts_frame, inbound);
        } else {
            self.counters.record_routed(0, 0);
        }
        self.tap(publisher, kind, packet);
    }

    /// Counts and drops a packet under an SSRC its publisher did not announce for `kind`.
    fn refuse_unannounced(&self, publisher: ParticipantId, kind: MediaKind, packet: rtp::Packet) {
        self.counters.record_in(packet.payload.len());
        self.counters.record_drop(DropReason::UnannouncedSsrc);
        self.tap(publisher, kind, packet);
    }

    /// Offers a received packet to the tap. Call last, so a tap reader sees every counter of
    /// this packet already updated.
    fn tap(&self, publisher: ParticipantId, kind: MediaKind, packet: rtp::Packet) {
        if let Some(tap) = &self.config.tap {
            let copy = TappedPacket {
                publisher,
                kind,
                packet,
            };
            self.counters.record_tap(tap.try_send(copy).is_ok());
        }
    }

    fn route(
        &self,
        routes: &Routes,
        publisher: ParticipantId,
        kind: MediaKind,
        packet: &rtp::Packet,
        starts_frame: bool,
        inbound: &Arc<ExtensionMap>,
    ) {
        let legs = routes
            .get(&(publisher, kind))
            .map_or(&[][..], Vec::as_slice);
        let mut skipped = 0;
        let now = Instant::now();
        for leg in legs {
            let action = leg
                .gate
                .as_ref()
                .map_or(GateAction::Forward { resumed: false }, |g| {
                    g.admit(starts_frame)
                });
            let GateAction::Forward { resumed } = action else {
                skipped += 1;
                continue;
            };
            let item = Forwarded {
                packet: packet.clone(),
                inbound: Arc::clone(inbound),
                resumed,
                starts_frame,
                queued_at: now,
            };
            match leg.tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.record_drop(DropReason::QueueFull)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.counters.record_drop(DropReason::LegClosed)
                }
            }
        }
        self.counters.record_routed(legs.len() - skipped, skipped);
    }
}

async fn run_pc_events(
    inner: Weak<Inner>,
    id: ParticipantId,
    pins: Arc<SharedPins>,
    mut events: mpsc::UnboundedReceiver<PcEvent>,
) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            PcEvent::State(state) => {
                let _ = inner.events.send(SfuEvent::ConnectionState {
                    participant: id,
                    state,
                });
            }
            PcEvent::Track(track) => {
                let Some(kind) = from_codec_kind(track.kind().await) else {
                    continue;
                };
                let inbound = Arc::new(inbound_extensions(&inner, id, &track).await);
                if let Ok(mut publishers) = inner.publishers.lock() {
                    publishers.insert((id, kind), (Arc::clone(&track), Arc::clone(&pins)));
                }
                let _ = inner.events.send(SfuEvent::Published {
                    participant: id,
                    kind,
                });
                tokio::spawn(run_publisher(
                    Arc::downgrade(&inner),
                    id,
                    kind,
                    track,
                    Arc::clone(&pins),
                    inbound,
                ));
            }
        }
    }
}

/// The header-extension map the publisher's connection negotiated for `track`.
async fn inbound_extensions(
    inner: &Inner,
    id: ParticipantId,
    track: &Arc<dyn TrackRemote>,
) -> ExtensionMap {
    let Some(part) = inner.participants.lock().await.get(&id).cloned() else {
        return ExtensionMap::default();
    };
    let wanted = track.track_id().await;
    for receiver in part.pc.get_receivers().await {
        if receiver.track().track_id().await == wanted
            && let Ok(params) = receiver.get_parameters().await
        {
            return ExtensionMap::new(
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .map(|e| (e.id, e.uri.as_str())),
            );
        }
    }
    ExtensionMap::default()
}

/// Forwards one remote track's packets as `id`'s `kind` stream. The track's kind is the one
/// webrtc-rs gave it; its packets may carry any SSRC some answer declared (see
/// [`crate::announce`]), so each is checked against the stream's pin first.
async fn run_publisher(
    inner: Weak<Inner>,
    id: ParticipantId,
    kind: MediaKind,
    track: Arc<dyn TrackRemote>,
    pins: Arc<SharedPins>,
    inbound: Arc<ExtensionMap>,
) {
    let mut loss = LossTracker::new();
    let mut frames = FrameBoundary::default();
    while let Some(event) = track.poll().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                if pins.get(kind) != Some(packet.header.ssrc) {
                    inner.refuse_unannounced(id, kind, packet);
                    continue;
                }
                inner
                    .counters
                    .record_missing_upstream(loss.observe(packet.header.sequence_number));
                let starts_frame = frames.observe(packet.header.marker);
                inner.forward(id, kind, packet, starts_frame, &inbound)
            }
            TrackRemoteEvent::OnEnded => return,
            _ => {}
        }
    }
}

async fn run_leg_writer(
    inner: Weak<Inner>,
    track: Arc<TrackLocalStaticRTP>,
    mut rewriter: LegRewriter,
    max_delay: Duration,
    mut rx: mpsc::Receiver<Forwarded>,
) {
    let mut late = LateFilter::default();
    while let Some(Forwarded {
        mut packet,
        inbound,
        resumed,
        starts_frame,
        queued_at,
    }) = rx.recv().await
    {
        if !late.admit(queued_at.elapsed() > max_delay, starts_frame) {
            let Some(inner) = inner.upgrade() else { return };
            inner.counters.record_drop(DropReason::Late);
            continue;
        }
        if resumed {
            rewriter.splice(packet.header.sequence_number);
        }
        let outcome = rewriter.rewrite(&mut packet.header, &inbound);
        let len = packet.payload.len();
        let result = track.write_rtp(packet).await;
        let Some(inner) = inner.upgrade() else { return };
        inner
            .counters
            .record_extensions_stripped(outcome.extensions_stripped);
        match result {
            Ok(()) => inner.counters.record_out(len),
            Err(_) => inner.counters.record_drop(DropReason::WriteFailed),
        }
    }
}

async fn run_leg_feedback(
    inner: Weak<Inner>,
    track: Arc<TrackLocalStaticRTP>,
    publisher: ParticipantId,
    kind: MediaKind,
) {
    while let Some(event) = track.poll().await {
        let Some(inner) = inner.upgrade() else { return };
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            inner.request_keyframe_upstream(publisher, kind).await;
        }
    }
}
