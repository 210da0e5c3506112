//! A simulated room: one `Ds`, real openmls clients, a manual clock, no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod tls;

use std::collections::HashMap;
use std::time::Duration;

use blindcall_policy::{
    AddRule, CALL_PARAMS_EXTENSION_TYPE, CallParams, MediaSignatures, RemoveRule,
};
use blindcall_proto::{
    Body, Commit, ControlMessage, CreateGroup, FrameDecoder, GroupCreated, Hello, HelloAck,
    PublishKeyPackage, Resume, Role, VLBytes, WelcomeMessage,
};
use blindcall_relay::token::{self, TokenClaims, TokenSecret};
use blindcall_relay::*;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::Deserialize as _;

pub const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
pub const SECRET: [u8; 32] = [0x42; 32];
pub const T0: u64 = 1_800_000_000;

pub fn relay_identity(scheme: SignatureScheme) -> RelayIdentity {
    let signer = SignatureKeyPair::new(scheme).unwrap();
    RelayIdentity::new(signer, BasicCredential::new(b"relay".to_vec()).into())
}

/// The relay's identities for ciphersuites 1 (Ed25519) and 2 (ECDSA P-256).
pub fn relay_identities() -> RelayIdentities {
    RelayIdentities::new([
        relay_identity(SignatureScheme::ED25519),
        relay_identity(SignatureScheme::ECDSA_SECP256R1_SHA256),
    ])
}

/// The DS configuration of the tests: fixed challenge seed, no resume grace (a lost member's
/// removal is proposed at once, as the departure tests expect; resume tests set a grace).
pub fn config() -> DsConfig {
    let mut c = DsConfig::new(
        TokenSecret::new(SECRET.to_vec()).unwrap(),
        relay_identities(),
        ChallengeSeed::new([0x5e; 32]),
    );
    c.hello_timeout = Duration::from_secs(10);
    c.waiting_room_timeout = Duration::from_secs(60);
    c.resume_grace = Duration::ZERO;
    c
}

pub fn mint(room: &[u8], role: Role, expires_at: u64, id: u8) -> Vec<u8> {
    mint_with(&SECRET, room, role, expires_at, id)
}

pub fn mint_with(secret: &[u8], room: &[u8], role: Role, expires_at: u64, id: u8) -> Vec<u8> {
    token::mint(
        &TokenSecret::new(secret.to_vec()).unwrap(),
        &TokenClaims {
            room_id: room.to_vec(),
            role,
            expires_at,
            token_id: [id; 16],
        },
    )
    .unwrap()
    .into_bytes()
}

/// The DS plus what each connection received.
pub struct Net {
    pub ds: Ds,
    pub now: Timestamp,
    pub inbox: HashMap<ConnId, Vec<Body>>,
    decoders: HashMap<ConnId, FrameDecoder>,
    pub closed: HashMap<ConnId, CloseReason>,
    pub events: Vec<Event>,
    /// Media signals the DS passed to the (absent) forwarder: (conn, room, leaf, payload).
    pub media: Vec<(ConnId, RoomId, u32, Vec<u8>)>,
    /// The media participant id the DS named with each connection's last media signal.
    pub participants: HashMap<ConnId, ConnId>,
    /// Store mode: claims the DS asked for and the test has not answered yet (when `store`
    /// is `None`).
    pub claims: Vec<ClaimRequest>,
    /// Store mode: the store that answers every claim at once (as the shell would).
    pub store: Option<store::MemoryStore>,
    /// Store mode: reads of missing winners the DS asked for (answered at once from `store`
    /// when there is one).
    pub fetches: Vec<FetchRequest>,
    /// Store mode without `store`: where room geneses are written and read (answered at once:
    /// only commit claims wait for the test).
    pub geneses: store::MemoryStore,
    /// Store mode: the bans the DS asked the shell to write (CL-BAN-1).
    pub bans: Vec<BanRequest>,
    /// Store mode: the lock changes the DS asked the shell to write (CL-LOCK-1).
    pub locks: Vec<LockRequest>,
    /// Store mode: the waiting-joiner writes the DS asked the shell for (CL-WAIT-1).
    pub waiting_writes: Vec<WaitingWrite>,
    /// Store mode with homes: home claims the DS asked for (answered at once from `store`, or
    /// `geneses` without one, unless `manual_homes`).
    pub home_claims: Vec<HomeClaimRequest>,
    /// Leave home claims in `home_claims` for the test to answer.
    pub manual_homes: bool,
    next: u64,
}

impl Net {
    pub fn new() -> Self {
        Self::with(config())
    }

    pub fn with(cfg: DsConfig) -> Self {
        Self {
            ds: Ds::new(cfg),
            now: Timestamp::from_unix_secs(T0),
            inbox: HashMap::new(),
            decoders: HashMap::new(),
            closed: HashMap::new(),
            events: Vec::new(),
            media: Vec::new(),
            participants: HashMap::new(),
            claims: Vec::new(),
            store: None,
            fetches: Vec::new(),
            geneses: store::MemoryStore::default(),
            bans: Vec::new(),
            locks: Vec::new(),
            waiting_writes: Vec::new(),
            home_claims: Vec::new(),
            manual_homes: false,
            next: 1,
        }
    }

    /// A DS in store mode whose claims `store` answers at once, as the shell would.
    pub fn shared(store: store::MemoryStore) -> Self {
        let mut cfg = config();
        cfg.store_mode = StoreMode::Shared;
        let mut net = Self::with(cfg);
        net.store = Some(store);
        net
    }

    /// A DS in store mode whose claims wait in `claims` for the test to answer.
    pub fn shared_manual() -> Self {
        let mut cfg = config();
        cfg.store_mode = StoreMode::Shared;
        Self::with(cfg)
    }

    /// Answer a claim the DS asked for, then drain.
    pub fn answer(&mut self, ticket: ClaimTicket, answer: ClaimAnswer) {
        self.ds.handle_claim(self.now, ticket, answer);
        self.drain();
    }

    /// A winner the store sequenced, as the shell's watch hands it over; then drain.
    pub fn winner(&mut self, record: store::CommitRecord) {
        self.ds.handle_winner(self.now, record);
        self.drain();
    }

    /// The one claim waiting for an answer.
    pub fn take_claim(&mut self) -> ClaimRequest {
        assert_eq!(
            self.claims.len(),
            1,
            "expected one claim: {:?}",
            self.claims
        );
        self.claims.pop().unwrap()
    }

    pub fn open(&mut self) -> ConnId {
        let id = ConnId(self.next);
        self.next += 1;
        self.decoders.insert(id, FrameDecoder::new(u32::MAX));
        self.ds.handle_input(self.now, Input::Opened(id));
        self.drain();
        id
    }

    pub fn raw(&mut self, id: ConnId, bytes: &[u8]) {
        self.ds.handle_input(self.now, Input::Received(id, bytes));
        self.drain();
    }

    pub fn send(&mut self, id: ConnId, body: Body) {
        let frame = ControlMessage::new(body).to_frame(u32::MAX).unwrap();
        self.raw(id, &frame);
    }

    /// The connection is lost (no goodbye): a member's leaf gets the resume grace.
    pub fn close(&mut self, id: ConnId) {
        self.ds.handle_input(self.now, Input::Closed(id));
        self.drain();
    }

    /// The peer says goodbye (TLS close_notify): a member has left.
    pub fn goodbye(&mut self, id: ConnId) {
        self.ds.handle_input(self.now, Input::Goodbye(id));
        self.drain();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        if self.ds.poll_timeout().is_some_and(|t| t <= self.now) {
            self.ds.handle_timeout(self.now);
        }
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.ds.poll_output(self.now) {
            match o {
                Output::Send { conn, bytes } => {
                    assert!(
                        !self.closed.contains_key(&conn),
                        "sent to a closed connection"
                    );
                    let d = self.decoders.get_mut(&conn).unwrap();
                    let mut input = &bytes[..];
                    let frame = d.decode(&mut input).unwrap().unwrap();
                    assert!(input.is_empty(), "one output is one frame");
                    let msg = ControlMessage::decode(&frame).unwrap();
                    self.inbox.entry(conn).or_default().push(msg.body);
                }
                Output::Close { conn, reason } => {
                    self.closed.insert(conn, reason);
                }
                Output::MediaSignal {
                    conn,
                    room,
                    leaf,
                    participant,
                    payload,
                } => {
                    self.participants.insert(conn, participant);
                    self.media.push((conn, room, leaf, payload));
                }
                Output::Claim(req) => match &self.store {
                    Some(store) => {
                        let answer = answer_claim(store, &req);
                        self.ds.handle_claim(self.now, req.ticket, answer);
                    }
                    None => self.claims.push(req),
                },
                Output::Fetch(req) => {
                    self.fetches.push(req.clone());
                    if let Some(store) = &self.store {
                        match store.sequenced_commit(&req.room, req.epoch) {
                            Some(record) => self.ds.handle_winner(self.now, record),
                            None => self.ds.handle_fetch_absent(self.now, &req.room, req.epoch),
                        }
                    }
                }
                Output::Genesis(req) => {
                    let store = self.store.as_ref().unwrap_or(&self.geneses);
                    let answer = match store.create_genesis(&req.record) {
                        Ok(store::Genesis::Created) => GenesisAnswer::Created,
                        Ok(store::Genesis::Exists { holder }) => GenesisAnswer::Exists { holder },
                        Err(e) => GenesisAnswer::Failed(e),
                    };
                    self.ds.handle_genesis(self.now, req.ticket, answer);
                }
                Output::LoadGenesis(room) => {
                    let store = self.store.as_ref().unwrap_or(&self.geneses);
                    let genesis = store.genesis(&room);
                    self.ds.handle_genesis_loaded(self.now, &room, genesis);
                }
                Output::Ban(req) => self.bans.push(req),
                Output::Lock(req) => self.locks.push(req),
                Output::Waiting(w) => self.waiting_writes.push(w),
                Output::ClaimHome(req) => {
                    self.home_claims.push(req.clone());
                    if !self.manual_homes {
                        let store = self.store.as_ref().unwrap_or(&self.geneses);
                        let answer = match store.claim_home(&req.record) {
                            Ok(store::HomeClaim::Won) => HomeClaimAnswer::Won,
                            Ok(store::HomeClaim::Lost { holder }) => {
                                HomeClaimAnswer::Lost { holder }
                            }
                            Err(e) => HomeClaimAnswer::Failed(e),
                        };
                        self.ds.handle_home_claim(self.now, req.ticket, answer);
                    }
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    pub fn take(&mut self, id: ConnId) -> Vec<Body> {
        self.inbox.remove(&id).unwrap_or_default()
    }

    pub fn last(&mut self, id: ConnId) -> Body {
        self.take(id).pop().expect("a message")
    }

    /// Open and say Hello; returns the connection and what came back.
    pub fn hello(&mut self, room: &[u8], token: &[u8], name: &str) -> (ConnId, Body) {
        let id = self.open();
        self.send(
            id,
            Body::Hello(Hello {
                room_id: VLBytes::new(room.to_vec()),
                token: VLBytes::new(token.to_vec()),
                display_name: VLBytes::new(name.as_bytes().to_vec()),
            }),
        );
        let b = self.last(id);
        (id, b)
    }
}

/// What the relay's shell does with a claim (`RoomStore::answer_claim`), on the memory store.
pub fn answer_claim(store: &store::MemoryStore, req: &ClaimRequest) -> ClaimAnswer {
    if req.read_first
        && let Some(winner) = store.sequenced_commit(req.record.room(), req.record.epoch())
    {
        return ClaimAnswer::Lost { winner };
    }
    match store.sequence_commit(&req.record) {
        Ok(store::Sequenced::Won) => ClaimAnswer::Won,
        Ok(store::Sequenced::Lost { winner }) => ClaimAnswer::Lost { winner },
        Err(e) => ClaimAnswer::Failed(e),
    }
}

/// Leaf capabilities of a blindcall member: it reads the call parameters.
pub fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![ExtensionType::Unknown(CALL_PARAMS_EXTENSION_TYPE)])
        .build()
}

/// Default call parameters with `hosts` (hosts add and remove).
pub fn call_params(hosts: Vec<Vec<u8>>) -> CallParams {
    CallParams {
        sframe_suite: 1,
        max_members: 64,
        sender_bits: 6,
        epoch_bits: 4,
        context_bits: 2,
        add_rule: AddRule::HostsOnly,
        remove_rule: RemoveRule::HostsOnly,
        hosts,
        media_signatures: MediaSignatures::Optional,
        invite: None,
    }
}

/// Group-context extensions: the relay as external sender and, if given, the call parameters.
pub fn group_extensions(relay: &AckRelay, params: Option<&CallParams>) -> Extensions<GroupContext> {
    let mut exts = vec![Extension::ExternalSenders(vec![ExternalSender::new(
        SignaturePublicKey::from(relay.key.clone()),
        relay.credential.clone(),
    )])];
    if let Some(p) = params {
        exts.push(Extension::Unknown(
            CALL_PARAMS_EXTENSION_TYPE,
            UnknownExtension(p.encode().unwrap()),
        ));
    }
    Extensions::from_vec(exts).unwrap()
}

/// A real MLS client on the control channel.
pub struct Client {
    pub name: String,
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub cwk: CredentialWithKey,
    pub group: Option<MlsGroup>,
    pub conn: ConnId,
    pub ack: Option<HelloAck>,
}

pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

pub fn out_bytes(m: impl Into<MlsMessageOut>) -> Vec<u8> {
    m.into().to_bytes().unwrap()
}

impl Client {
    pub fn connect(net: &mut Net, room: &[u8], role: Role, token_id: u8, name: &str) -> Self {
        let token = mint(room, role, T0 + 3600, token_id);
        let (conn, body) = net.hello(room, &token, name);
        let Body::HelloAck(ack) = body else {
            panic!("{name} not admitted: {body:?}")
        };
        Self::new(name, conn, ack)
    }

    /// A client with fresh MLS credentials, admitted as `conn` with `ack`.
    pub fn new(name: &str, conn: ConnId, ack: HelloAck) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            name: name.to_string(),
            provider,
            signer,
            cwk,
            group: None,
            conn,
            ack: Some(ack),
        }
    }

    pub fn group(&mut self) -> &mut MlsGroup {
        self.group.as_mut().unwrap()
    }

    pub fn epoch(&self) -> u64 {
        self.group.as_ref().unwrap().epoch().as_u64()
    }

    pub fn authenticator(&self) -> Vec<u8> {
        self.group
            .as_ref()
            .unwrap()
            .epoch_authenticator()
            .as_slice()
            .to_vec()
    }

    /// Create a group listing the relay (from HelloAck) as external sender, with call
    /// parameters naming this client the only host.
    pub fn create_group(&mut self, relay: &AckRelay) {
        let params = call_params(vec![self.signer.public().to_vec()]);
        self.create_group_with(group_extensions(relay, Some(&params)));
    }

    pub fn create_group_with(&mut self, extensions: Extensions<GroupContext>) {
        let cfg = MlsGroupCreateConfig::builder()
            .ciphersuite(CS)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .capabilities(capabilities())
            .with_group_context_extensions(extensions)
            .build();
        self.group =
            Some(MlsGroup::new(&self.provider, &self.signer, &cfg, self.cwk.clone()).unwrap());
    }

    pub fn group_info(&self) -> Vec<u8> {
        out_bytes(
            self.group
                .as_ref()
                .unwrap()
                .export_group_info(self.provider.crypto(), &self.signer, true)
                .unwrap(),
        )
    }

    pub fn key_package(&self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .build(CS, &self.provider, &self.signer, self.cwk.clone())
            .unwrap();
        out_bytes(bundle.key_package().clone())
    }

    /// Add members by KeyPackage message bytes; returns the Commit message to send.
    pub fn add(&mut self, kps: &[Vec<u8>]) -> Commit {
        let kps: Vec<KeyPackage> = kps
            .iter()
            .map(|b| {
                let MlsMessageBodyIn::KeyPackage(k) =
                    MlsMessageIn::tls_deserialize_exact(b).unwrap().extract()
                else {
                    panic!("not a key package")
                };
                k.validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        let epoch = self.epoch();
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, welcome, gi) = self
            .group
            .as_mut()
            .unwrap()
            .add_members(provider, signer, &kps)
            .unwrap();
        Commit {
            epoch,
            commit: VLBytes::new(out_bytes(commit)),
            welcome: Some(VLBytes::new(out_bytes(welcome))),
            group_info: Some(VLBytes::new(out_bytes(gi.unwrap()))),
        }
    }

    pub fn self_update(&mut self) -> Commit {
        let epoch = self.epoch();
        let (provider, signer) = (&self.provider, &self.signer);
        let bundle = self
            .group
            .as_mut()
            .unwrap()
            .self_update(provider, signer, LeafNodeParameters::default())
            .unwrap();
        let welcome = bundle.to_welcome_msg();
        let (commit, _, gi) = bundle.into_contents();
        Commit {
            epoch,
            commit: VLBytes::new(out_bytes(commit)),
            welcome: welcome.map(|w| VLBytes::new(out_bytes(w))),
            group_info: gi.map(|g| VLBytes::new(out_bytes(g))),
        }
    }

    pub fn commit_pending(&mut self) -> Commit {
        let epoch = self.epoch();
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, welcome, gi) = self
            .group
            .as_mut()
            .unwrap()
            .commit_to_pending_proposals(provider, signer)
            .unwrap();
        Commit {
            epoch,
            commit: VLBytes::new(out_bytes(commit)),
            welcome: welcome.map(|w| VLBytes::new(out_bytes(w))),
            group_info: gi.map(|g| VLBytes::new(out_bytes(g))),
        }
    }

    pub fn merge_pending(&mut self) {
        let provider = &self.provider;
        self.group
            .as_mut()
            .unwrap()
            .merge_pending_commit(provider)
            .unwrap();
    }

    pub fn clear_pending(&mut self) {
        let storage = self.provider.storage();
        self.group
            .as_mut()
            .unwrap()
            .clear_pending_commit(storage)
            .unwrap();
    }

    /// Apply an incoming MLS handshake (commit or proposal).
    pub fn process(&mut self, bytes: &[u8]) {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).unwrap();
        let pm = msg.try_into_protocol_message().unwrap();
        let provider = &self.provider;
        let group = self.group.as_mut().unwrap();
        let processed = group.process_message(provider, pm).unwrap();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group.merge_staged_commit(provider, *staged).unwrap();
            }
            ProcessedMessageContent::ProposalMessage(p) => {
                group
                    .store_pending_proposal(provider.storage(), *p)
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn join_from_welcome(&mut self, w: &WelcomeMessage) {
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(w.welcome.as_slice())
                .unwrap()
                .extract()
        else {
            panic!("not a welcome")
        };
        let tree = RatchetTreeIn::tls_deserialize_exact(w.ratchet_tree.as_slice()).unwrap();
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, Some(tree))
                .unwrap();
        self.group = Some(staged.into_group(&self.provider).unwrap());
    }

    /// Process everything the relay sent this client, in order. Returns the bodies.
    pub fn pump(&mut self, net: &mut Net) -> Vec<Body> {
        let bodies = net.take(self.conn);
        self.apply(&bodies);
        bodies
    }

    /// Process handshakes and Welcomes among `bodies`, in order.
    pub fn apply(&mut self, bodies: &[Body]) {
        for b in bodies {
            match b {
                Body::CommitBroadcast(c) => self.process(c.commit.as_slice()),
                Body::RelayProposal(p) => self.process(p.proposal.as_slice()),
                Body::Welcome(w) => self.join_from_welcome(w),
                _ => {}
            }
        }
    }
}

impl Client {
    /// This member's leaf index.
    pub fn leaf(&self) -> u32 {
        self.group.as_ref().unwrap().own_leaf_index().u32()
    }

    /// Open a new connection with a fresh token (id `token_id`) and say Hello: the client's
    /// connection and HelloAck (with its challenge) are now the new ones.
    pub fn reconnect(&mut self, net: &mut Net, room: &[u8], role: Role, token_id: u8) {
        let token = mint(room, role, T0 + 3600, token_id);
        let (conn, body) = net.hello(room, &token, &self.name);
        let Body::HelloAck(ack) = body else {
            panic!("{} not admitted again: {body:?}", self.name)
        };
        self.conn = conn;
        self.ack = Some(ack);
    }

    /// A resume proof for any content: the leaf key's `SignWithLabel` over it.
    pub fn sign_resume(
        &self,
        challenge: &[u8; 32],
        group_id: &[u8],
        room: &[u8],
        leaf: u32,
        epoch: u64,
    ) -> Resume {
        use openmls_traits::signatures::Signer as _;
        let content =
            blindcall_policy::resume_sign_content(challenge, group_id, room, leaf, epoch).unwrap();
        Resume {
            leaf,
            epoch,
            signature: VLBytes::new(self.signer.sign(&content).unwrap()),
            participant: self.ack.as_ref().map_or(0, |a| a.conn_id),
        }
    }

    /// The resume proof for this connection's challenge, own leaf and current epoch.
    pub fn resume(&self, room: &[u8]) -> Resume {
        let challenge = self.ack.as_ref().unwrap().challenge;
        let group = self.group.as_ref().unwrap();
        self.sign_resume(
            &challenge,
            group.group_id().as_slice(),
            room,
            self.leaf(),
            self.epoch(),
        )
    }
}

/// A room with a host member: host connected, group created and bootstrapped at the DS.
pub fn room_with_host(net: &mut Net, room: &[u8], token_id: u8) -> Client {
    let mut host = Client::connect(net, room, Role::HOST, token_id, "host");
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    let gi = host.group_info();
    net.send(
        host.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(gi),
        }),
    );
    assert_eq!(
        net.last(host.conn),
        Body::GroupCreated(GroupCreated { epoch: 0 })
    );
    host
}

/// The relay's external sender for ciphersuite [`CS`] as a client learns it from HelloAck. A
/// `RelayIdentity` is only needed for `external_senders_extension`; build the extension from
/// the ack's bytes instead.
pub fn relay_from_ack(ack: &HelloAck) -> AckRelay {
    relay_from_ack_for(ack, CS)
}

/// [`relay_from_ack`] for the signature scheme of `cs`.
pub fn relay_from_ack_for(ack: &HelloAck, cs: Ciphersuite) -> AckRelay {
    let scheme = cs.signature_algorithm() as u16;
    let entry = ack
        .external_senders
        .iter()
        .find(|s| s.signature_scheme == scheme)
        .expect("the relay lists an external sender for the ciphersuite");
    AckRelay {
        key: entry.signature_key.as_slice().to_vec(),
        credential: Credential::tls_deserialize_exact(entry.credential.as_slice()).unwrap(),
    }
}

/// The relay's external-sender entry as advertised in HelloAck.
pub struct AckRelay {
    pub key: Vec<u8>,
    pub credential: Credential,
}

/// A guest that connects, publishes a KeyPackage and enters the waiting room.
pub fn waiting_guest(net: &mut Net, room: &[u8], token_id: u8, name: &str) -> Client {
    let g = Client::connect(net, room, Role::GUEST, token_id, name);
    net.send(
        g.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(g.key_package()),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(g.conn), Body::KeyPackageAccepted(_)));
    net.send(g.conn, Body::JoinRequest);
    assert!(matches!(net.last(g.conn), Body::RoomStateUpdate(_)));
    g
}

/// The waiting room as the per-entry updates among `bodies` leave it (starting from empty):
/// (connection id, KeyPackage) of each entry added and not removed since, oldest first.
pub fn waiting_kps(bodies: &[Body]) -> Vec<(u64, Vec<u8>)> {
    let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
    for b in bodies {
        match b {
            Body::WaitingEntryAdded(e) => {
                entries.push((e.conn_id, e.key_package.as_slice().to_vec()));
            }
            Body::WaitingEntryRemoved(r) => entries.retain(|(c, _)| *c != r.conn_id),
            _ => {}
        }
    }
    entries
}

/// Host admits every waiting guest with one Add commit; everyone converges.
pub fn admit_all(
    net: &mut Net,
    host: &mut Client,
    others: &mut [&mut Client],
    joiners: &mut [&mut Client],
) {
    let bodies = host.pump(net);
    let kps: Vec<Vec<u8>> = waiting_kps(&bodies).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kps.len(), joiners.len());
    let commit = host.add(&kps);
    net.send(host.conn, Body::Commit(commit));
    let reply = net.take(host.conn);
    assert!(
        matches!(reply.first(), Some(Body::CommitAccepted(_))),
        "{reply:?}"
    );
    host.merge_pending();
    for o in others.iter_mut() {
        o.pump(net);
    }
    for j in joiners.iter_mut() {
        j.pump(net);
        assert_eq!(j.epoch(), host.epoch());
    }
}

impl Client {
    /// Remove the members at `leaves` by value; returns the Commit message to send.
    pub fn remove(&mut self, leaves: &[u32]) -> Commit {
        let epoch = self.epoch();
        let leaves: Vec<LeafNodeIndex> = leaves.iter().map(|l| LeafNodeIndex::new(*l)).collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, welcome, gi) = self
            .group
            .as_mut()
            .unwrap()
            .remove_members(provider, signer, &leaves)
            .unwrap();
        Commit {
            epoch,
            commit: VLBytes::new(out_bytes(commit)),
            welcome: welcome.map(|w| VLBytes::new(out_bytes(w))),
            group_info: gi.map(|g| VLBytes::new(out_bytes(g))),
        }
    }

    /// An external commit (MLS `new_member_commit`) joining the group `member` is in, built with
    /// the member's current GroupInfo and tree (as a colluding member could hand them over).
    pub fn external_commit(&self, member: &Client) -> (MlsGroup, Commit) {
        let group = member.group.as_ref().unwrap();
        let MlsMessageBodyIn::GroupInfo(vgi) =
            MlsMessageIn::tls_deserialize_exact(member.group_info())
                .unwrap()
                .extract()
        else {
            panic!("not a group info")
        };
        let tree: RatchetTreeIn = group.export_ratchet_tree().into();
        let (new_group, bundle) = MlsGroup::external_commit_builder()
            .with_ratchet_tree(tree)
            .with_config(join_config())
            .build_group(&self.provider, vgi, self.cwk.clone())
            .unwrap()
            .leaf_node_parameters(
                LeafNodeParameters::builder()
                    .with_capabilities(capabilities())
                    .build(),
            )
            .load_psks(self.provider.storage())
            .unwrap()
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .unwrap()
            .finalize(&self.provider)
            .unwrap();
        let gi = bundle.group_info().cloned();
        let commit = Commit {
            epoch: member.epoch(),
            commit: VLBytes::new(out_bytes(bundle.into_commit())),
            welcome: None,
            group_info: gi.map(|g| VLBytes::new(out_bytes(g))),
        };
        (new_group, commit)
    }
}
