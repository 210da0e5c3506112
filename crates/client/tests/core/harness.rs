//! A room without sockets: bare [`CallCore`]s, a scripted relay that sequences commits the way
//! the delivery service does (first commit of an epoch wins, the committer gets
//! `CommitAccepted`, everyone else `CommitBroadcast`, the joiner its `Welcome`, a late commit
//! `CommitRejected` with the winner) and passes members' messages on (`PeerBroadcast` →
//! `PeerMessage`, a member's own `Propose` → `ProposalBroadcast`, no relay proposal for a
//! leaf whose leave is queued), per-peer inboxes the test may reorder or hold back, a
//! stand-in media transport, and a manual clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blindcall_client::observer::{CallObserver, FrameOpened, FrameSent};
use blindcall_client::{
    CallCore, CallStats, Command, ControlEnd, Event, IncomingFrame, JoinError, JoinOptions,
    MediaInput, MediaKind, MediaMode, Output, RelayRef, TransportOp, TrustAnchor,
};
use blindcall_media::RtpPacket;
use blindcall_proto::{
    Body, CommitAccepted, CommitBroadcast, CommitRejectReason, CommitRejected, GroupCreated,
    HelloAck, KeyPackageAccepted, PeerMessage, ProposalBroadcast, Redirect, RelayProposal,
    RelaySender, RemoveParticipant, ResumeAccepted, ResumeRefused, ResumeRefusedReason, Role,
    RoomState, VLBytes, WaitingEntry, WaitingEntryRemoved, WelcomeMessage,
};
use blindcall_transport::{ConnectionState, ParticipantId};
use openmls::prelude::{
    BasicCredential, Credential, ExternalProposal, GroupEpoch, GroupId, KeyPackage, LeafNodeIndex,
    MlsMessageBodyIn, MlsMessageIn, ProtocolVersion, Sender, SenderExtensionIndex, SignatureScheme,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use tls_codec::{Deserialize as _, Serialize as _};

/// A syntactically valid capability token for room "room" (the scripted relay does not check it).
pub fn token() -> String {
    let mut body = vec![1u8, 4, b'r', b'o', b'o', b'm', 2];
    body.extend_from_slice(&[0u8; 8 + 16 + 32]);
    format!("bct1.{}", hex::encode(body))
}

/// Options with media off (control-plane tests).
pub fn options() -> JoinOptions {
    let mut o = JoinOptions::new(TrustAnchor::Fingerprint("00".repeat(32)));
    o.media = MediaMode::Off;
    // The scripted tests move the clock in jumps; reconnection is tested on its own
    // (link.rs), where time moves in steps.
    o.reconnect.enabled = false;
    o
}

/// Options with application media.
pub fn media_options() -> JoinOptions {
    let mut o = options();
    o.media = MediaMode::App;
    o
}

/// What an observer saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (kind, epoch, counter, plaintext) of every frame sealed.
    pub sent: Vec<(MediaKind, u64, u64, Vec<u8>)>,
    /// (sender, kind, epoch, plaintext) of every frame opened.
    pub opened: Vec<(String, MediaKind, u64, Vec<u8>)>,
}

/// An observer recording frames (tests only: it copies plaintexts).
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Seen>);

impl CallObserver for Recorder {
    fn frame_sent(&self, f: &FrameSent<'_>) {
        let mut s = self.0.lock().unwrap();
        s.sent
            .push((f.kind, f.epoch, f.counter, f.plaintext.to_vec()));
    }

    fn frame_opened(&self, f: &FrameOpened<'_>) {
        let mut s = self.0.lock().unwrap();
        s.opened
            .push((f.sender.to_string(), f.kind, f.epoch, f.plaintext.to_vec()));
    }
}

/// One participant: its core, everything it produced, and its inbox from the relay.
pub struct Peer {
    pub name: String,
    pub conn: u64,
    pub core: CallCore,
    /// Control messages it sent, not yet read by the relay.
    pub outbox: VecDeque<Body>,
    /// Messages from the relay, not yet delivered to it.
    pub inbox: VecDeque<Body>,
    pub events: Vec<Event>,
    pub frames: Vec<IncomingFrame>,
    pub packets: Vec<(MediaKind, RtpPacket)>,
    pub transport_ops: Vec<TransportOp>,
    pub stats: Option<CallStats>,
    pub admitted: bool,
    pub join_failed: Option<JoinError>,
    pub ended: bool,
    /// Became a member (what it sent before its call ended still reaches the relay).
    pub joined: bool,
    pub key_package: Option<Vec<u8>>,
    /// The invite proof it published with its KeyPackage.
    pub join_proof: Option<Vec<u8>>,
    pub recorder: Arc<Recorder>,
    /// Join requests it was asked about: (request id, the joiner's name), never drained.
    pub requests: Vec<(u64, String)>,
    /// How often it asked its shell to save the trust store.
    pub trust_saves: usize,
    /// The relay participant id of its media: its first connection's id (kept by resumes).
    pub participant: u64,
    /// Whether its control connection is up (the relay reads what it sends only then).
    pub connected: bool,
    /// Lost its connection and has not resumed: the relay sends it nothing.
    pub away: bool,
    /// How often it asked for a new control connection ([`Output::Connect`]).
    pub connects: usize,
    /// How often it dropped its control connection itself ([`Output::DropControl`]).
    pub drops: usize,
    /// The listed relays it asked to connect to, in order ([`Output::Connect`]'s index).
    pub dialed: Vec<usize>,
    /// Every connection it asked for, in order (listed relays and redirect addresses).
    pub targets: Vec<RelayRef>,
}

impl Peer {
    /// Drains the core's outputs; the stand-in transport opens at once and answers offers.
    pub fn pump(&mut self, now: Instant) {
        while let Some(o) = self.core.poll_output(now) {
            match o {
                Output::Control(b) => self.outbox.push_back(b),
                Output::Event(e) => {
                    if let Event::JoinRequested {
                        request, joiner, ..
                    } = &e
                    {
                        self.requests.push((*request, joiner.identity.to_string()));
                    }
                    self.joined |= matches!(e, Event::Joined { .. });
                    self.events.push(e);
                }
                Output::TrustChanged => self.trust_saves += 1,
                Output::Frame(f) => self.frames.push(f),
                Output::Transmit { kind, packet } => self.packets.push((kind, packet)),
                Output::Transport(op) => {
                    let answer = match &op {
                        TransportOp::Open { .. } => Some(MediaInput::Opened),
                        TransportOp::ApplyOffer(_) => Some(MediaInput::Answer("v=0 answer".into())),
                        _ => None,
                    };
                    self.transport_ops.push(op);
                    if let Some(a) = answer {
                        self.core.handle_media(now, a);
                    }
                }
                Output::Stats(s) => self.stats = Some(*s),
                Output::Admitted => self.admitted = true,
                Output::JoinFailed(e) => self.join_failed = Some(e),
                Output::End => self.ended = true,
                Output::Connect { relay } => {
                    self.connects += 1;
                    if let RelayRef::Listed(i) = relay {
                        self.dialed.push(i);
                    }
                    self.targets.push(relay);
                }
                Output::DropControl => self.drops += 1,
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    /// Delivers every message in the inbox.
    pub fn deliver(&mut self, now: Instant) {
        while let Some(b) = self.inbox.pop_front() {
            self.core.handle_control(now, b);
            self.pump(now);
        }
    }

    /// Runs a command and drains.
    pub fn command(&mut self, now: Instant, c: Command) -> Result<(), blindcall_client::CallError> {
        let r = self.core.handle_command(now, c);
        self.pump(now);
        r
    }

    /// Feeds a media input and drains.
    pub fn media(&mut self, now: Instant, input: MediaInput) {
        self.core.handle_media(now, input);
        self.pump(now);
    }

    /// Runs timers due at `now` and drains.
    pub fn tick(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Takes the events seen so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The last epoch it reported.
    pub fn epoch(&self) -> Option<u64> {
        self.core.stats().epoch
    }

    /// Its security code now.
    pub fn code(&self) -> Option<String> {
        self.core.stats().code
    }

    /// Publishes one frame.
    pub fn publish(
        &mut self,
        now: Instant,
        kind: MediaKind,
        frame: &[u8],
        keyframe: Option<bool>,
    ) -> Result<(), blindcall_client::CallError> {
        let r = self.core.publish(now, kind, frame, keyframe);
        self.pump(now);
        r
    }
}

/// The relay's external-sender identity (Ed25519, as for ciphersuite 1).
struct RelayId {
    signer: SignatureKeyPair,
    credential: Vec<u8>,
}

/// The scripted relay and its participants.
pub struct Room {
    pub now: Instant,
    pub peers: Vec<Peer>,
    relay: RelayId,
    crypto: RustCrypto,
    group_id: Option<GroupId>,
    /// The room's epoch as sequenced.
    pub epoch: u64,
    /// The winning commit of each epoch (index = epoch it was made in).
    winners: Vec<Vec<u8>>,
    /// Connections in the waiting room, in arrival order.
    waiting: Vec<u64>,
    /// Waiting entries the members were told about.
    announced: Vec<u64>,
    next_conn: u64,
    /// Every message the relay read, with the sender's name.
    pub relayed: Vec<(String, Body)>,
    /// Leaves whose own leave is queued, with the epoch.
    leaves_queued: Vec<(u64, u32)>,
    /// Refuse every `Resume` with this reason.
    pub resume_refusal: Option<ResumeRefusedReason>,
    /// The next `Hello`s (of anyone) are answered with these (a cluster node's `Redirect` or
    /// `Refused`) instead of a `HelloAck`; the node then closes the connection.
    pub hello_answers: VecDeque<Body>,
}

impl Default for Room {
    fn default() -> Self {
        Self::new()
    }
}

impl Room {
    pub fn new() -> Self {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let credential: Credential = BasicCredential::new(b"relay".to_vec()).into();
        Self {
            now: Instant::now(),
            peers: Vec::new(),
            relay: RelayId {
                signer,
                credential: credential.tls_serialize_detached().unwrap(),
            },
            crypto: RustCrypto::default(),
            group_id: None,
            epoch: 0,
            winners: Vec::new(),
            waiting: Vec::new(),
            announced: Vec::new(),
            next_conn: 1,
            relayed: Vec::new(),
            leaves_queued: Vec::new(),
            resume_refusal: None,
            hello_answers: VecDeque::new(),
        }
    }

    /// The winning commit the relay sequenced in `epoch`.
    pub fn winner(&self, epoch: u64) -> Option<&[u8]> {
        let e = usize::try_from(epoch).ok()?;
        self.winners.get(e).map(Vec::as_slice)
    }

    /// Moves the clock.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// A new participant's core (its Hello is in its outbox).
    pub fn add_peer(&mut self, name: &str, options: JoinOptions) -> usize {
        let recorder = Arc::new(Recorder::default());
        let mut options = options;
        if options.observer.is_none() {
            options.observer = Some(recorder.clone());
        }
        let core = CallCore::new(self.now, name, &token(), options).unwrap();
        let conn = self.next_conn;
        self.next_conn += 1;
        let mut p = Peer {
            name: name.into(),
            conn,
            core,
            outbox: VecDeque::new(),
            inbox: VecDeque::new(),
            events: Vec::new(),
            frames: Vec::new(),
            packets: Vec::new(),
            transport_ops: Vec::new(),
            stats: None,
            admitted: false,
            join_failed: None,
            ended: false,
            joined: false,
            key_package: None,
            join_proof: None,
            recorder,
            requests: Vec::new(),
            trust_saves: 0,
            participant: conn,
            connected: true,
            away: false,
            connects: 0,
            drops: 0,
            dialed: Vec::new(),
            targets: Vec::new(),
        };
        p.pump(self.now);
        self.peers.push(p);
        self.peers.len() - 1
    }

    /// The peer named `name`.
    pub fn peer(&mut self, name: &str) -> &mut Peer {
        self.peers
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no peer {name}"))
    }

    fn index_of_conn(&self, conn: u64) -> Option<usize> {
        self.peers.iter().position(|p| p.conn == conn)
    }

    fn is_member(&self, i: usize) -> bool {
        let p = &self.peers[i];
        p.admitted
            && !p.ended
            && !p.away
            && !self.waiting.contains(&p.conn)
            && p.core.stats().epoch.is_some()
    }

    fn external_sender(&self) -> RelaySender {
        RelaySender {
            signature_scheme: SignatureScheme::ED25519 as u16,
            signature_key: VLBytes::new(self.relay.signer.public().to_vec()),
            credential: VLBytes::new(self.relay.credential.clone()),
        }
    }

    fn send_to_members(&mut self, except: Option<usize>, body: &Body) {
        for i in 0..self.peers.len() {
            if Some(i) != except && self.is_member(i) {
                self.peers[i].inbox.push_back(body.clone());
            }
        }
    }

    /// Tells the members about every change of the waiting room, one entry at a time (as the
    /// relay does).
    fn waiting_update(&mut self) {
        let gone: Vec<u64> = self
            .announced
            .iter()
            .filter(|c| !self.waiting.contains(c))
            .copied()
            .collect();
        for conn_id in gone {
            self.send_to_members(
                None,
                &Body::WaitingEntryRemoved(WaitingEntryRemoved { conn_id }),
            );
        }
        let entries: Vec<WaitingEntry> = self
            .waiting
            .iter()
            .filter(|c| !self.announced.contains(c))
            .filter_map(|c| {
                let p = &self.peers[self.index_of_conn(*c)?];
                Some(WaitingEntry {
                    conn_id: p.conn,
                    display_name: VLBytes::new(p.name.as_bytes().to_vec()),
                    key_package: VLBytes::new(p.key_package.clone()?),
                    join_proof: p.join_proof.clone().map(VLBytes::new),
                })
            })
            .collect();
        for entry in entries {
            self.send_to_members(None, &Body::WaitingEntryAdded(entry));
        }
        self.announced = self.waiting.clone();
    }

    fn kp_ref(&self, kp: &[u8]) -> Option<Vec<u8>> {
        let m = MlsMessageIn::tls_deserialize_exact(kp).ok()?;
        let MlsMessageBodyIn::KeyPackage(k) = m.extract() else {
            return None;
        };
        let k: KeyPackage = k.validate(&self.crypto, ProtocolVersion::Mls10).ok()?;
        Some(k.hash_ref(&self.crypto).ok()?.as_slice().to_vec())
    }

    /// The waiting connection the Welcome is for.
    fn welcome_target(&self, welcome: &[u8]) -> Option<u64> {
        let m = MlsMessageIn::tls_deserialize_exact(welcome).ok()?;
        let MlsMessageBodyIn::Welcome(w) = m.extract() else {
            return None;
        };
        let refs: Vec<Vec<u8>> = w
            .secrets()
            .iter()
            .map(|s| s.new_member().as_slice().to_vec())
            .collect();
        self.waiting.iter().copied().find(|c| {
            self.index_of_conn(*c)
                .and_then(|i| self.peers[i].key_package.as_deref())
                .and_then(|kp| self.kp_ref(kp))
                .is_some_and(|r| refs.contains(&r))
        })
    }

    /// The relay reads one message of peer `i` and answers it.
    pub fn relay_one(&mut self, i: usize) -> Option<Body> {
        let body = self.peers[i].outbox.pop_front()?;
        assert!(
            self.peers[i].connected,
            "{} sent {body:?} with no control connection",
            self.peers[i].name
        );
        let conn = self.peers[i].conn;
        match &body {
            Body::Hello(_) if !self.hello_answers.is_empty() => {
                let answer = self.hello_answers.pop_front().unwrap();
                let p = &mut self.peers[i];
                p.inbox.push_back(answer);
                // The node closes the connection after its answer.
                p.connected = false;
            }
            Body::Hello(_) => {
                let host = self.group_id.is_none() && i == 0;
                let ack = HelloAck {
                    conn_id: conn,
                    role: if host { Role::HOST } else { Role::GUEST },
                    room: RoomState {
                        epoch: self.group_id.as_ref().map(|_| self.epoch),
                        locked: 0,
                        members: 0,
                        waiting: 0,
                    },
                    external_senders: vec![self.external_sender()],
                    challenge: challenge_of(conn),
                };
                self.peers[i].inbox.push_back(Body::HelloAck(ack));
            }
            Body::CreateGroup(c) => {
                let m = MlsMessageIn::tls_deserialize_exact(c.group_info.as_slice()).unwrap();
                let MlsMessageBodyIn::GroupInfo(gi) = m.extract() else {
                    panic!("CreateGroup without a GroupInfo");
                };
                self.group_id = Some(gi.group_id().clone());
                self.peers[i]
                    .inbox
                    .push_back(Body::GroupCreated(GroupCreated { epoch: 0 }));
            }
            Body::PublishKeyPackage(p) => {
                self.peers[i].key_package = Some(p.key_package.as_slice().to_vec());
                self.peers[i].join_proof = p.join_proof.as_ref().map(|j| j.as_slice().to_vec());
                self.peers[i]
                    .inbox
                    .push_back(Body::KeyPackageAccepted(KeyPackageAccepted {
                        key_package_ref: VLBytes::new(Vec::new()),
                    }));
            }
            Body::Ping(p) => {
                self.peers[i]
                    .inbox
                    .push_back(Body::Pong(blindcall_proto::Pong { nonce: p.nonce }));
            }
            Body::JoinRequest => {
                self.peers[i]
                    .inbox
                    .push_back(Body::RoomStateUpdate(RoomState {
                        epoch: Some(self.epoch),
                        locked: 0,
                        members: 0,
                        waiting: 0,
                    }));
                self.waiting.push(conn);
                self.waiting_update();
            }
            Body::Commit(c) if c.epoch == self.epoch => {
                self.winners.push(c.commit.as_slice().to_vec());
                self.epoch += 1;
                let joiner = c
                    .welcome
                    .as_ref()
                    .and_then(|w| self.welcome_target(w.as_slice()));
                self.peers[i]
                    .inbox
                    .push_back(Body::CommitAccepted(CommitAccepted { epoch: self.epoch }));
                let broadcast = Body::CommitBroadcast(CommitBroadcast {
                    epoch: c.epoch,
                    commit: c.commit.clone(),
                });
                self.send_to_members(Some(i), &broadcast);
                if let (Some(j), Some(w)) = (joiner, &c.welcome) {
                    let k = self.index_of_conn(j).unwrap();
                    self.peers[k].inbox.push_back(Body::Welcome(WelcomeMessage {
                        welcome: w.clone(),
                        ratchet_tree: VLBytes::new(Vec::new()),
                    }));
                    self.waiting.retain(|c| *c != j);
                    self.waiting_update();
                }
            }
            Body::Commit(c) => {
                let winner = usize::try_from(c.epoch)
                    .ok()
                    .and_then(|e| self.winners.get(e))
                    .map(|w| VLBytes::new(w.clone()));
                self.peers[i]
                    .inbox
                    .push_back(Body::CommitRejected(CommitRejected {
                        epoch: c.epoch,
                        reason: CommitRejectReason::EPOCH_TAKEN,
                        winner,
                    }));
            }
            Body::PeerBroadcast(b) if self.peers[i].joined => {
                let m = Body::PeerMessage(PeerMessage {
                    from_conn: conn,
                    from_leaf: 0,
                    payload: b.payload.clone(),
                });
                self.send_to_members(Some(i), &m);
            }
            Body::Propose(p) if p.epoch == self.epoch && self.peers[i].joined => {
                if let Some(leaf) = proposer_leaf(p.proposal.as_slice()) {
                    self.leaves_queued.push((p.epoch, leaf));
                }
                let b = Body::ProposalBroadcast(ProposalBroadcast {
                    epoch: p.epoch,
                    proposal: p.proposal.clone(),
                });
                self.send_to_members(Some(i), &b);
            }
            Body::Resume(r) => {
                if let Some(reason) = self.resume_refusal {
                    self.peers[i]
                        .inbox
                        .push_back(Body::ResumeRefused(ResumeRefused { reason }));
                } else {
                    // What it missed, then the verdict (as the relay does, DS-RES-5).
                    for e in r.epoch..self.epoch {
                        let commit = self.winners[usize::try_from(e).unwrap()].clone();
                        self.peers[i]
                            .inbox
                            .push_back(Body::CommitBroadcast(CommitBroadcast {
                                epoch: e,
                                commit: VLBytes::new(commit),
                            }));
                    }
                    let participant = self.peers[i].conn;
                    self.peers[i]
                        .inbox
                        .push_back(Body::ResumeAccepted(ResumeAccepted {
                            epoch: self.epoch,
                            participant,
                        }));
                    self.peers[i].away = false;
                }
            }
            Body::RemoveParticipant(RemoveParticipant { conn_id }) => {
                if let Some(k) = self.index_of_conn(*conn_id) {
                    self.peers[k]
                        .inbox
                        .push_back(Body::Refused(blindcall_proto::Refused {
                            reason: blindcall_proto::RefusedReason::REMOVED_BY_HOST,
                        }));
                }
                self.waiting.retain(|c| c != conn_id);
                self.waiting_update();
            }
            _ => {}
        }
        self.relayed
            .push((self.peers[i].name.clone(), body.clone()));
        Some(body)
    }

    /// The relay reads everything peer `i` sent.
    pub fn relay_all(&mut self, i: usize) {
        while self.relay_one(i).is_some() {}
    }

    /// Delivers and answers everything until nothing is in flight.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.peers.len() {
                if !self.peers[i].outbox.is_empty() {
                    self.relay_all(i);
                    moved = true;
                }
                if !self.peers[i].inbox.is_empty() {
                    let now = self.now;
                    self.peers[i].deliver(now);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs every peer's due timers, then the room.
    pub fn tick(&mut self) {
        let now = self.now;
        for p in &mut self.peers {
            p.tick(now);
        }
        self.run();
    }

    /// A participant that creates the call (the first peer).
    pub fn host(&mut self, name: &str, options: JoinOptions) -> usize {
        let i = self.add_peer(name, options);
        self.run();
        assert!(self.peers[i].admitted, "{name} was not admitted");
        i
    }

    /// A participant that reaches the waiting room.
    /// The command by which `by` removes the member named `name` (by its leaf and key).
    pub fn remove_command(&self, by: usize, name: &str) -> blindcall_client::Command {
        let m = self.peers[by]
            .core
            .members()
            .into_iter()
            .find(|m| &*m.identity == name)
            .unwrap_or_else(|| panic!("{} sees no member {name}", self.peers[by].name));
        blindcall_client::Command::Remove {
            leaf: m.leaf,
            identity_key: m.identity_key.to_vec(),
        }
    }

    /// The id under which `host` was asked about the joiner on relay connection `conn`.
    pub fn request_for(&self, host: usize, conn: u64) -> u64 {
        let name = &self
            .peers
            .iter()
            .find(|p| p.conn == conn)
            .expect("a peer on that connection")
            .name;
        self.peers[host]
            .requests
            .iter()
            .rev()
            .find(|(_, n)| n == name)
            .map(|(r, _)| *r)
            .unwrap_or_else(|| panic!("{} was not asked about {name}", self.peers[host].name))
    }

    pub fn guest(&mut self, name: &str, options: JoinOptions) -> usize {
        let i = self.add_peer(name, options);
        self.run();
        assert!(self.peers[i].admitted, "{name} is not in the waiting room");
        i
    }

    /// The relay's signed proposal to remove `leaf`, sent to every member (none while the
    /// leaf's own leave is queued for the epoch, as the relay does).
    pub fn propose_remove(&mut self, leaf: u32) {
        if self.leaves_queued.contains(&(self.epoch, leaf)) {
            return;
        }
        let body = self.relay_proposal(leaf);
        self.send_to_members(None, &body);
    }

    /// The relay's signed proposal to remove `leaf` in the current epoch.
    pub fn relay_proposal(&self, leaf: u32) -> Body {
        let group_id = self.group_id.clone().expect("a group exists");
        let out = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
            LeafNodeIndex::new(leaf),
            group_id,
            GroupEpoch::from(self.epoch),
            &self.relay.signer,
            SenderExtensionIndex::new(0),
        )
        .unwrap();
        Body::RelayProposal(RelayProposal {
            epoch: self.epoch,
            removed_leaf: leaf,
            proposal: VLBytes::new(out.to_bytes().unwrap()),
        })
    }

    /// Peer `i`'s control connection breaks: what was in flight either way is lost.
    pub fn cut(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.peers[i];
        p.outbox.clear();
        p.inbox.clear();
        p.connected = false;
        p.away = true;
        p.core.handle_control_end(now, ControlEnd::Closed);
        p.pump(now);
    }

    /// The node serving peer `i` (a seated member) hands the room over: it sends `Redirect`
    /// to `address` and closes the connection.
    pub fn redirect_member(&mut self, i: usize, address: &str) {
        let now = self.now;
        let p = &mut self.peers[i];
        p.inbox.clear();
        p.inbox.push_back(redirect_to(address));
        p.deliver(now);
        p.connected = false;
        p.away = true;
        p.outbox.clear();
    }

    /// Peer `i`'s shell opened the control connection it asked for (a new relay connection).
    pub fn connect(&mut self, i: usize) {
        let now = self.now;
        let conn = self.next_conn;
        self.next_conn += 1;
        let p = &mut self.peers[i];
        assert!(p.connects > 0, "{} never asked to connect", p.name);
        p.conn = conn;
        p.connected = true;
        p.core.handle_control_connected(now);
        p.pump(now);
    }

    /// Peer `i`'s shell could not open the control connection it asked for.
    pub fn connect_fails(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.peers[i];
        p.core.handle_control_end(now, ControlEnd::Closed);
        p.pump(now);
    }

    /// Peer `i` has not joined yet and its connection to the relay it tried could not be
    /// opened (or broke before the relay answered): nothing it sent arrived.
    pub fn join_connection_fails(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.peers[i];
        p.outbox.clear();
        p.inbox.clear();
        p.connected = false;
        p.core.handle_control_end(now, ControlEnd::Closed);
        p.pump(now);
    }

    /// Peer `i`, not yet joined, opened the connection it asked for: its media will be
    /// known by this connection's id.
    pub fn join_connects(&mut self, i: usize) {
        self.connect(i);
        let p = &mut self.peers[i];
        p.participant = p.conn;
    }

    /// Connects peer `i`'s media (the stand-in transport reports the connection up).
    pub fn connect_media(&mut self, i: usize) {
        let now = self.now;
        self.peers[i].media(now, MediaInput::Connection(ConnectionState::Connected));
    }

    /// Hands every packet peer `from` sent to peer `to`.
    pub fn forward_media(&mut self, from: usize, to: usize) {
        let now = self.now;
        let sender = ParticipantId(self.peers[from].participant);
        let packets = std::mem::take(&mut self.peers[from].packets);
        for (kind, packet) in packets {
            self.peers[to].media(
                now,
                MediaInput::Packet {
                    from: sender,
                    kind,
                    packet,
                },
            );
        }
    }
}

/// The leaf that signed a member's proposal.
fn proposer_leaf(proposal: &[u8]) -> Option<u32> {
    let m = MlsMessageIn::tls_deserialize_exact(proposal).ok()?;
    let MlsMessageBodyIn::PublicMessage(pm) = m.extract() else {
        return None;
    };
    match pm.sender() {
        Sender::Member(leaf) => Some(leaf.u32()),
        _ => None,
    }
}

/// The challenge the scripted relay puts in connection `conn`'s `HelloAck`.
pub fn redirect_to(address: &str) -> Body {
    Body::Redirect(Redirect {
        relay: VLBytes::new(address.as_bytes().to_vec()),
    })
}

pub fn challenge_of(conn: u64) -> [u8; 32] {
    let mut c = [0u8; 32];
    c[..8].copy_from_slice(&conn.to_be_bytes());
    c
}

/// Whether `events` has an event matching `pred`.
pub fn has(events: &[Event], pred: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(pred)
}

/// Three relay addresses (only their count and order matter to the core).
pub fn three() -> Vec<std::net::SocketAddr> {
    ["10.0.0.1:4433", "10.0.0.2:4433", "10.0.0.3:4433"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect()
}

/// `o` with these relays and reconnecting on (the default policy).
pub fn with_relays(mut o: JoinOptions, relays: Vec<std::net::SocketAddr>) -> JoinOptions {
    o.relays = relays;
    o.reconnect = blindcall_client::ReconnectPolicy::default();
    o
}
