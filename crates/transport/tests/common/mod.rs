//! Shared harness: a relay forwarder and N clients on loopback, signaling pumped in-process.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use blindcall_transport::{
    ClientConfig, ClientEvent, ClientTransport, ConnectionState, MediaNetwork, ParticipantId,
    ParticipantOptions, SessionDescription, Sfu, SfuConfig, SfuEvent, TappedPacket,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, mpsc};

pub mod raw;

/// The runtime the tests run on (two workers, like the CI machine's two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Generous bound for anything awaited on loopback.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Relay-side notifications the harness passes to the test.
#[derive(Debug)]
pub enum RelayNote {
    Negotiated(ParticipantId, usize),
    Connected(ParticipantId),
    Published(ParticipantId),
}

pub struct Room {
    /// Re-offers the relay has sent (renegotiations after the first offer).
    pub reoffers: Arc<AtomicUsize>,
    pub legs: HashMap<ParticipantId, usize>,
    pub connected: Vec<ParticipantId>,
    pub sfu: Sfu,
    pub clients: Arc<Mutex<HashMap<ParticipantId, ClientTransport>>>,
    pub notes: mpsc::UnboundedReceiver<RelayNote>,
    pub tap: Option<mpsc::Receiver<TappedPacket>>,
    /// Where the clients' media sockets live.
    pub client_network: MediaNetwork,
    /// Every first offer the relay made (SDP text), in joining order.
    pub offers: Mutex<Vec<String>>,
    /// Re-offers to participants that are not [`ClientTransport`]s (raw test peers): the
    /// test answers them itself.
    pub raw_offers: mpsc::UnboundedReceiver<(ParticipantId, SessionDescription)>,
}

impl Room {
    /// A forwarder whose re-offers are answered by the clients in `clients`.
    pub fn new(tap_capacity: Option<usize>, leg_queue: usize) -> Room {
        Self::with_network(
            tap_capacity,
            leg_queue,
            MediaNetwork::default(),
            MediaNetwork::default(),
        )
    }

    /// [`Room::new`] with the relay's and the clients' media addresses.
    pub fn with_network(
        tap_capacity: Option<usize>,
        leg_queue: usize,
        relay_network: MediaNetwork,
        client_network: MediaNetwork,
    ) -> Room {
        let (tap_tx, tap) = match tap_capacity {
            Some(cap) => {
                let (tx, rx) = mpsc::channel(cap);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (sfu, mut events) = Sfu::new(SfuConfig {
            leg_queue,
            tap: tap_tx,
            network: relay_network,
            ..SfuConfig::default()
        });
        let clients: Arc<Mutex<HashMap<ParticipantId, ClientTransport>>> = Arc::default();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let reoffers = Arc::new(AtomicUsize::new(0));
        let pump_reoffers = Arc::clone(&reoffers);
        let pump_sfu = sfu.clone();
        let pump_clients = Arc::clone(&clients);
        let (raw_tx, raw_offers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    SfuEvent::Offer { to, offer } => {
                        pump_reoffers.fetch_add(1, Ordering::SeqCst);
                        let client = pump_clients.lock().await.get(&to).cloned();
                        let Some(client) = client else {
                            let _ = raw_tx.send((to, offer));
                            continue;
                        };
                        let sfu = pump_sfu.clone();
                        tokio::spawn(async move {
                            let mut offer = Some(offer);
                            while let Some(o) = offer.take() {
                                let answer = client.handle_offer(o).await.expect("client answers");
                                offer = sfu.handle_answer(to, answer).await.expect("relay applies");
                            }
                        });
                    }
                    SfuEvent::Negotiated {
                        participant,
                        active_legs,
                    } => {
                        let _ = notes_tx.send(RelayNote::Negotiated(participant, active_legs));
                    }
                    SfuEvent::ConnectionState {
                        participant,
                        state: ConnectionState::Connected,
                    } => {
                        let _ = notes_tx.send(RelayNote::Connected(participant));
                    }
                    SfuEvent::Published { participant, .. } => {
                        let _ = notes_tx.send(RelayNote::Published(participant));
                    }
                    SfuEvent::OfferFailed { participant, error } => {
                        panic!("offer to {participant} failed: {error}")
                    }
                    _ => {}
                }
            }
        });
        Room {
            reoffers,
            legs: HashMap::new(),
            connected: Vec::new(),
            sfu,
            clients,
            notes,
            tap,
            client_network,
            offers: Mutex::new(Vec::new()),
            raw_offers,
        }
    }

    /// Joins `id`: relay offer → client answer → relay (and any follow-up offer).
    pub async fn join(&self, id: ParticipantId) -> mpsc::Receiver<ClientEvent> {
        self.join_with(id, true).await
    }

    /// Joins `id`, publishing or receive-only.
    pub async fn join_with(&self, id: ParticipantId, publish: bool) -> mpsc::Receiver<ClientEvent> {
        let (client, events) = ClientTransport::new(ClientConfig {
            publish,
            network: self.client_network,
            ..ClientConfig::default()
        })
        .await
        .expect("client transport");
        self.clients.lock().await.insert(id, client.clone());
        let offer = self
            .sfu
            .add_participant_with(id, ParticipantOptions { publish })
            .await
            .expect("relay offer");
        self.offers.lock().await.push(offer.sdp.clone());
        let mut offer = Some(offer);
        while let Some(o) = offer.take() {
            let answer = client.handle_offer(o).await.expect("client answer");
            offer = self
                .sfu
                .handle_answer(id, answer)
                .await
                .expect("relay applies answer");
        }
        events
    }

    pub async fn client(&self, id: ParticipantId) -> ClientTransport {
        self.clients
            .lock()
            .await
            .get(&id)
            .cloned()
            .expect("known client")
    }

    fn note(&mut self, note: RelayNote) {
        match note {
            RelayNote::Negotiated(p, n) => {
                self.legs.insert(p, n);
            }
            RelayNote::Connected(p) => self.connected.push(p),
            RelayNote::Published(_) => {}
        }
    }

    /// Waits until every participant's connection at the relay is up and each has
    /// `legs_each` active subscriber legs.
    pub async fn wait_ready(&mut self, ids: &[ParticipantId], legs_each: usize) {
        let want: Vec<_> = ids.iter().map(|id| (*id, legs_each)).collect();
        self.wait_legs(&want).await;
        self.wait_connected(ids).await;
    }

    /// Waits until every listed participant's connection at the relay is up.
    pub async fn wait_connected(&mut self, ids: &[ParticipantId]) {
        within("relay connections Connected", async {
            while !ids.iter().all(|id| self.connected.contains(id)) {
                let note = self.notes.recv().await.expect("relay notes");
                self.note(note);
            }
        })
        .await;
    }

    /// Waits until each listed participant has the given number of active legs.
    pub async fn wait_legs(&mut self, want: &[(ParticipantId, usize)]) {
        within(&format!("subscriber legs negotiated: {want:?}"), async {
            while !want.iter().all(|(id, n)| self.legs.get(id) == Some(n)) {
                let note = self.notes.recv().await.expect("relay notes");
                self.note(note);
            }
        })
        .await;
    }
}

/// Waits for a client's connection to reach Connected, keeping other events in `backlog`.
pub async fn wait_client_connected(
    events: &mut mpsc::Receiver<ClientEvent>,
    backlog: &mut Vec<ClientEvent>,
) {
    within("client connection Connected", async {
        loop {
            match events.recv().await.expect("client events") {
                ClientEvent::ConnectionState(ConnectionState::Connected) => return,
                other => backlog.push(other),
            }
        }
    })
    .await;
}

/// Every 16-byte window of `needle` that occurs in any of `haystack`'s payloads.
pub fn leaked_windows(needles: &[Vec<u8>], haystack: &[Vec<u8>]) -> usize {
    let mut windows = std::collections::HashSet::new();
    for h in haystack {
        for w in h.windows(16) {
            windows.insert(<[u8; 16]>::try_from(w).unwrap());
        }
    }
    needles
        .iter()
        .map(|n| n.windows(16).filter(|w| windows.contains(*w)).count())
        .sum()
}

// ---- sealed media helpers ----

use blindcall_media::{
    Depacketizer, DepacketizerConfig, MediaKind, Packetizer, PacketizerConfig, RtpPacket,
    SyntheticSource, source::verify,
};
use blindcall_sframe::{BaseKey, CipherSuite, Kid, Receiver, ReceiverConfig, Sender};
use std::time::Instant;

pub const SUITE: CipherSuite = CipherSuite::AES_128_GCM_SHA256_128;

pub fn kid(sender: usize, kind: MediaKind) -> Kid {
    Kid((sender as u64) * 2 + u64::from(kind == MediaKind::Video))
}

pub fn key(k: Kid) -> BaseKey {
    // A shared test key per stream (MLS supplies real ones); distinct per KID.
    BaseKey::new(&[k.0 as u8 + 1; 16])
}

/// What a client's receive task reports.
#[derive(Debug)]
pub enum Report {
    Frame {
        at: usize,
        from: ParticipantId,
        kind: MediaKind,
        seq: u64,
    },
    Keyframe(usize),
    Bad(String),
}

/// Depacketizes and opens everything a client receives.
pub async fn receive(
    at: usize,
    n: usize,
    mut events: mpsc::Receiver<ClientEvent>,
    backlog: Vec<ClientEvent>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut receiver = Receiver::new(ReceiverConfig::default());
    for s in 0..n {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            receiver
                .add_key(SUITE, kid(s, kind), &key(kid(s, kind)))
                .unwrap();
        }
    }
    let mut depack: HashMap<(ParticipantId, MediaKind), Depacketizer> = HashMap::new();
    let mut handle = |event: ClientEvent| match event {
        ClientEvent::Media { from, kind, packet } => {
            let d = depack
                .entry((from, kind))
                .or_insert_with(|| Depacketizer::new(DepacketizerConfig::default()));
            if let Err(e) = d.handle_packet(
                Instant::now(),
                packet.sequence_number,
                packet.timestamp,
                &packet.payload,
            ) {
                let _ = reports.send(Report::Bad(format!("depacketize: {e}")));
            }
            while let Some(frame) = d.poll_frame() {
                let report = match receiver.open(&[], &frame.data) {
                    Ok((_, plain)) => match verify(&plain) {
                        Ok(info) if info.kind == kind && u64::from(info.sender_id) == from.0 => {
                            Report::Frame {
                                at,
                                from,
                                kind,
                                seq: info.seq,
                            }
                        }
                        Ok(info) => Report::Bad(format!("frame mislabelled: {info:?}")),
                        Err(e) => Report::Bad(format!("integrity: {e:?}")),
                    },
                    Err(e) => Report::Bad(format!("open: {e:?}")),
                };
                let _ = reports.send(report);
            }
        }
        ClientEvent::KeyframeRequested {
            kind: MediaKind::Video,
        } => {
            let _ = reports.send(Report::Keyframe(at));
        }
        _ => {}
    };
    for e in backlog {
        handle(e);
    }
    while let Some(e) = events.recv().await {
        handle(e);
    }
}

/// One published stream: synthetic source → SFrame sender → packetizer.
pub struct Publisher {
    pub index: usize,
    pub kind: MediaKind,
    source: SyntheticSource,
    sender: Sender,
    packetizer: Packetizer,
}

impl Publisher {
    /// Stream `kind` of the participant at `index` whose id is `sender_id`.
    pub fn new(index: usize, sender_id: u64, kind: MediaKind) -> Self {
        Self {
            index,
            kind,
            source: SyntheticSource::new(kind, sender_id as u32, 7 + index as u64),
            sender: Sender::new(SUITE, kid(index, kind), &key(kid(index, kind))).unwrap(),
            packetizer: Packetizer::new(PacketizerConfig::default()),
        }
    }

    /// Seals and packetizes the next frame; returns (plaintext, packets).
    pub fn next(&mut self) -> (Vec<u8>, Vec<RtpPacket>) {
        let frame = self.source.next_frame();
        let sealed = self.sender.seal(&[], &frame.data).unwrap();
        let mut packets = Vec::new();
        self.packetizer
            .packetize(frame.rtp_timestamp, &sealed, &mut packets)
            .unwrap();
        (frame.data, packets)
    }
}
