//! The call's MLS group: membership, admission policy, epochs to SFrame keys.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use blindcall_sframe::{BaseKey, Sender as FrameSender};
use openmls::prelude::{
    BasicCredential, Extension, Extensions, ExternalSender, KeyPackage, LeafNodeIndex, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, ProtocolMessage, ProtocolVersion,
    Sender, StagedCommit, StagedWelcome, UnknownExtension,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls_traits::OpenMlsProvider as _;

use crate::code::SecurityCode;
use crate::commit::{CommitKind, NextEpoch, PendingCommit};
use crate::config::MediaSignatures;
use crate::config::{CALL_PARAMS_EXTENSION_TYPE, CallConfig, CallParams, MemberConfig};
use crate::confirm::Confirmations;
use crate::error::{ApiMisuse, Error, InvalidMessage, MlsFailure};
use crate::event::{Event, RetireReason};
use crate::identity::{Client, Roster, RosterMember, capabilities, display_identity};
use crate::keyring::{EXPORTER_LABEL, KeyRing};
use crate::media_auth::{
    EPOCH_BINDING_LEN, ManifestSigner, MediaVerifier, SignerConfig, VerifierConfig,
};
use crate::policy::{
    self, AddRule, PolicyViolation, RemoveRule, actor_of, check_commit, check_proposal,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathUpdate {
    NotNeeded,
    Scheduled(Instant),
    Emitted,
}

/// One member's view of a call: its MLS group, the call's SFrame key ring, own senders, and a
/// queue of events. Sans-IO: bytes and time in; bytes, events and timers out.
///
/// Method groups: create/join; own operations returning a [`PendingCommit`]
/// (`add_members`, `remove_members`, `self_update`, `commit_pending_proposals`) and `leave`;
/// input `handle_message`; timers `poll_timeout`/`handle_timeout`; output `poll_event`;
/// media `sender`/`activate_send_epoch`/`open`.
pub struct CallGroup {
    client: Client,
    group: MlsGroup,
    params: CallParams,
    config: MemberConfig,
    keyring: KeyRing,
    roster: Arc<Roster>,
    senders: BTreeMap<u64, FrameSender>,
    send_epoch: u64,
    pending: Option<u64>,
    next_pending_id: u64,
    path_update: PathUpdate,
    /// When own senders switch to the current epoch (the send barrier), if pending.
    switch_at: Option<Instant>,
    leaving: bool,
    active: bool,
    events: VecDeque<Event>,
    /// Epoch confirmations of the members (split detection).
    confirm: Confirmations,
    /// Messages for every other member (sent through the relay's `PeerBroadcast`).
    outbox: VecDeque<Vec<u8>>,
    /// This member's signed confirmation of the current epoch (re-sent on demand).
    own_confirmation: Option<Vec<u8>>,
    /// Records own sealed frames and makes the signed media manifests.
    media_signer: ManifestSigner,
    /// Checks others' frames against their signed manifests; pins streams.
    verifier: MediaVerifier,
    /// Per held epoch: the manifest signature binding (an exporter value of that epoch).
    manifest_bindings: BTreeMap<u64, [u8; EPOCH_BINDING_LEN]>,
    now: Instant,
    /// Set on benchmark duplicates: they share keys with the original and must never seal.
    media_disabled: bool,
}

impl std::fmt::Debug for CallGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGroup")
            .field("identity", &self.client.identity)
            .field("epoch", &self.epoch())
            .field("members", &self.roster.len())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

fn params_from(
    ext: &Extensions<openmls::prelude::GroupContext>,
) -> Result<CallParams, InvalidMessage> {
    let raw = ext
        .unknown(CALL_PARAMS_EXTENSION_TYPE)
        .ok_or(InvalidMessage::CallParams {
            field: "extension_missing",
        })?;
    CallParams::decode(&raw.0)
}

fn serialize(msg: &MlsMessageOut) -> Result<Vec<u8>, Error> {
    msg.tls_serialize_detached()
        .map_err(|_| MlsFailure::Encode.into())
}

fn parse(bytes: &[u8]) -> Result<MlsMessageIn, Error> {
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| InvalidMessage::Malformed.into())
}

impl CallGroup {
    /// Creates a call with `client` as its first member and host, at epoch 0.
    pub fn create(
        client: Client,
        call: &CallConfig,
        config: MemberConfig,
        now: Instant,
    ) -> Result<Self, Error> {
        config.validate()?;
        if call.mls_suite != client.suite {
            return Err(ApiMisuse::InvalidConfig.into());
        }
        let params = CallParams::from_config(call, client.signature_key())?;
        let mut exts = vec![Extension::Unknown(
            CALL_PARAMS_EXTENSION_TYPE,
            UnknownExtension(params.encode()?),
        )];
        if let Some(relay) = &call.relay {
            exts.push(Extension::ExternalSenders(vec![ExternalSender::new(
                relay.signature_key.clone().into(),
                BasicCredential::new(relay.identity.clone()).into(),
            )]));
        }
        let extensions = Extensions::from_vec(exts).map_err(|_| ApiMisuse::InvalidConfig)?;
        let create_config = MlsGroupCreateConfig::builder()
            .ciphersuite(client.suite.ciphersuite())
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .capabilities(capabilities(client.signs_media))
            .with_group_context_extensions(extensions)
            .build();
        let group = MlsGroup::new(
            &client.provider,
            &client.signer,
            &create_config,
            client.credential.clone(),
        )
        .map_err(|e| MlsFailure::NewGroup(Box::new(e)))?;
        let nk = params.sframe_suite.nk();
        let secret = group
            .export_secret(client.provider.crypto(), EXPORTER_LABEL, &[], nk)
            .map_err(|_| MlsFailure::Export)?;
        Self::assemble(
            client,
            group,
            params,
            config,
            BaseKey::from_vec(secret),
            now,
            PathUpdate::NotNeeded,
        )
    }

    /// Joins a call from a TLS-serialized Welcome `MLSMessage` (with the ratchet tree
    /// extension). Only the joining epoch's keys are ever held.
    pub fn join(
        client: Client,
        welcome: &[u8],
        config: MemberConfig,
        now: Instant,
    ) -> Result<Self, Error> {
        config.validate()?;
        let MlsMessageBodyIn::Welcome(welcome) = parse(welcome)?.extract() else {
            return Err(InvalidMessage::UnexpectedKind {
                expected: "Welcome",
            }
            .into());
        };
        let join_config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build();
        let staged = StagedWelcome::new_from_welcome(&client.provider, &join_config, welcome, None)
            .map_err(|e| InvalidMessage::Welcome(Box::new(e)))?;
        let params = params_from(staged.group_context().extensions())?;
        if staged.group_context().ciphersuite() != client.suite.ciphersuite() {
            return Err(InvalidMessage::UnexpectedKind {
                expected: "Welcome of the client's ciphersuite",
            }
            .into());
        }
        // The Welcome is signed by the member whose commit added us: under the call's add rule
        // only a host may have done that (GRP-POL-9). Other members refuse such a commit; a
        // joiner sees only the Welcome, so it checks its signer itself.
        if params.add_rule == AddRule::HostsOnly {
            let leaf = staged.welcome_sender_index().u32();
            let welcomer = staged
                .welcome_sender()
                .map_err(|_| InvalidMessage::UnexpectedKind {
                    expected: "Welcome signed by a member",
                })?;
            if !params.is_host(welcomer.signature_key().as_slice()) {
                return Err(PolicyViolation::AddNotAllowed {
                    proposer: policy::Actor::Member {
                        leaf,
                        identity: display_identity(welcomer.credential())
                            .unwrap_or_else(|_| String::from("<invalid>")),
                    },
                    added: client.identity.to_string(),
                }
                .into());
            }
        }
        if staged.members().count() > params.max_members as usize {
            return Err(PolicyViolation::CallFull {
                max: params.max_members,
                would_have: staged.members().count(),
            }
            .into());
        }
        let nk = params.sframe_suite.nk();
        let secret = staged
            .export_secret(client.provider.crypto(), EXPORTER_LABEL, &[], nk)
            .map_err(|_| MlsFailure::Export)?;
        let group = staged
            .into_group(&client.provider)
            .map_err(|e| InvalidMessage::Welcome(Box::new(e)))?;
        let path = match config.path_update_after_join {
            Some(d) => PathUpdate::Scheduled(now.checked_add(d).unwrap_or(now)),
            None => PathUpdate::NotNeeded,
        };
        Self::assemble(
            client,
            group,
            params,
            config,
            BaseKey::from_vec(secret),
            now,
            path,
        )
    }

    fn assemble(
        client: Client,
        group: MlsGroup,
        params: CallParams,
        config: MemberConfig,
        secret: BaseKey,
        now: Instant,
        path_update: PathUpdate,
    ) -> Result<Self, Error> {
        // The own leaf must be addressable in the KID layout.
        params.layout.encode(0, group.own_leaf_index().u32(), 0)?;
        let roster = Arc::new(Roster::from_public_group(group.public_group(), |k| {
            params.is_host(k)
        }));
        let mut keyring = KeyRing::new(params.sframe_suite, params.layout, config.replay_window);
        let epoch = group.epoch().as_u64();
        let _ = keyring.install(epoch, secret, Arc::clone(&roster), now, config.retention);
        let code = SecurityCode::from_epoch_authenticator(
            group.epoch_authenticator().as_slice(),
            config.security_code_groups,
        );
        let mut events = VecDeque::new();
        events.push_back(Event::EpochChanged { epoch, code });
        let confirm = Confirmations::new(config.confirm_timeout);
        let media_signer = ManifestSigner::new(
            group.own_leaf_index().u32(),
            0,
            SignerConfig {
                interval: config.manifest_interval,
                ..SignerConfig::default()
            },
        );
        let verifier = MediaVerifier::new(
            params.layout,
            VerifierConfig {
                verify_bound: config.signature_bound,
                require_signed: params.media_signatures == MediaSignatures::Required,
                ..VerifierConfig::default()
            },
        );
        let mut call = Self {
            client,
            group,
            params,
            config,
            keyring,
            roster,
            senders: BTreeMap::new(),
            send_epoch: epoch,
            pending: None,
            next_pending_id: 1,
            path_update,
            switch_at: None,
            leaving: false,
            active: true,
            events,
            confirm,
            outbox: VecDeque::new(),
            own_confirmation: None,
            media_signer,
            verifier,
            manifest_bindings: BTreeMap::new(),
            now,
            media_disabled: false,
        };
        call.enter_media_epoch();
        call.enter_confirmations(now);
        Ok(call)
    }

    fn clock(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    // ----- accessors -----

    /// Current MLS epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// The epoch own senders use.
    pub fn send_epoch(&self) -> u64 {
        self.send_epoch
    }

    /// Epochs whose receive keys are held, oldest first.
    pub fn receive_epochs(&self) -> Vec<u64> {
        self.keyring.epochs().collect()
    }

    /// Number of SFrame receive keys currently installed.
    pub fn receive_key_count(&self) -> usize {
        self.keyring.receive_key_count()
    }

    /// The current security code.
    pub fn security_code(&self) -> SecurityCode {
        SecurityCode::from_epoch_authenticator(
            self.group.epoch_authenticator().as_slice(),
            self.config.security_code_groups,
        )
    }

    /// Members of the current epoch.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Own leaf index.
    pub fn own_leaf(&self) -> u32 {
        self.group.own_leaf_index().u32()
    }

    /// Own display identity.
    pub fn identity(&self) -> &str {
        self.client.identity()
    }

    /// Own identity (signature) key.
    pub fn own_signature_key(&self) -> &[u8] {
        self.client.signature_key()
    }

    /// Whether this member holds the host role.
    pub fn is_host(&self) -> bool {
        self.params.is_host(self.client.signature_key())
    }

    /// The call parameters agreed in the group context.
    pub fn params(&self) -> &CallParams {
        &self.params
    }

    /// Whether this member is still in the call.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether an own commit awaits confirm/discard.
    pub fn has_pending_commit(&self) -> bool {
        self.pending.is_some()
    }

    /// The MLS group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// A signed GroupInfo `MLSMessage` with the ratchet tree, for the relay to follow the group.
    pub fn group_info(&self) -> Result<Vec<u8>, Error> {
        let gi = self
            .group
            .export_group_info(self.client.provider.crypto(), &self.client.signer, true)
            .map_err(|_| MlsFailure::Unreachable("export_group_info"))?;
        serialize(&gi)
    }

    /// Next queued event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- own operations -----

    fn ensure_can_commit(&self) -> Result<(), Error> {
        if !self.active {
            return Err(ApiMisuse::NotAMember.into());
        }
        if self.leaving {
            return Err(ApiMisuse::Leaving.into());
        }
        if self.pending.is_some() {
            return Err(ApiMisuse::PendingCommitOutstanding {
                epoch: self.epoch(),
            }
            .into());
        }
        Ok(())
    }

    fn own_is_host(&self) -> bool {
        self.roster.get(self.own_leaf()).is_some_and(|m| m.host)
    }

    /// Adds the members of TLS-serialized KeyPackage `MLSMessage`s (host role needed by default).
    pub fn add_members(&mut self, key_packages: &[&[u8]]) -> Result<PendingCommit, Error> {
        self.ensure_can_commit()?;
        if key_packages.is_empty() {
            return Err(ApiMisuse::EmptyInput.into());
        }
        let mut kps = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let MlsMessageBodyIn::KeyPackage(kp_in) = parse(bytes)?.extract() else {
                return Err(InvalidMessage::UnexpectedKind {
                    expected: "KeyPackage",
                }
                .into());
            };
            let kp: KeyPackage = kp_in
                .validate(self.client.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|_| InvalidMessage::KeyPackage)?;
            if kp.ciphersuite() != self.client.suite.ciphersuite() {
                return Err(InvalidMessage::KeyPackageSuite {
                    expected: self.client.suite.id(),
                    got: u16::from(kp.ciphersuite()),
                }
                .into());
            }
            let added = display_identity(kp.leaf_node().credential())?;
            let key = kp.leaf_node().signature_key().as_slice();
            let leaving = |leaf: u32| {
                self.group.pending_proposals().any(|qp| {
                    matches!(qp.proposal(), openmls::prelude::Proposal::Remove(r) if r.removed().u32() == leaf)
                })
            };
            let in_call = self
                .roster
                .members()
                .iter()
                .any(|m| m.signature_key == key && !leaving(m.leaf));
            if in_call
                || kps
                    .iter()
                    .any(|k: &KeyPackage| k.leaf_node().signature_key().as_slice() == key)
            {
                return Err(PolicyViolation::DuplicateIdentityKey { identity: added }.into());
            }
            if self.params.add_rule == AddRule::HostsOnly && !self.own_is_host() {
                let proposer = policy::Actor::Member {
                    leaf: self.own_leaf(),
                    identity: self.identity().to_string(),
                };
                return Err(PolicyViolation::AddNotAllowed { proposer, added }.into());
            }
            kps.push(kp);
        }
        let would_have = self.roster.len() + kps.len();
        if would_have > self.params.max_members as usize {
            return Err(PolicyViolation::CallFull {
                max: self.params.max_members,
                would_have,
            }
            .into());
        }
        self.build_commit(CommitKind::Add, kps, Vec::new(), true)
    }

    /// Removes the members at `leaves` (host role needed by default).
    pub fn remove_members(&mut self, leaves: &[u32]) -> Result<PendingCommit, Error> {
        self.ensure_can_commit()?;
        if leaves.is_empty() {
            return Err(ApiMisuse::EmptyInput.into());
        }
        for &leaf in leaves {
            let Some(target) = self.roster.get(leaf) else {
                return Err(ApiMisuse::UnknownMember { leaf }.into());
            };
            let own = self.own_leaf();
            let allowed = leaf == own
                || self.params.remove_rule == RemoveRule::AnyMember
                || self.own_is_host();
            if !allowed {
                return Err(PolicyViolation::RemoveNotAllowed {
                    proposer: policy::Actor::Member {
                        leaf: own,
                        identity: self.identity().to_string(),
                    },
                    removed: policy::Actor::Member {
                        leaf,
                        identity: target.identity.to_string(),
                    },
                }
                .into());
            }
        }
        let removed = leaves.iter().map(|l| LeafNodeIndex::new(*l)).collect();
        self.build_commit(CommitKind::Remove, Vec::new(), removed, true)
    }

    /// Refreshes the own leaf and its path (key rotation; also the path update after joining).
    pub fn self_update(&mut self) -> Result<PendingCommit, Error> {
        self.ensure_can_commit()?;
        self.build_commit(CommitKind::SelfUpdate, Vec::new(), Vec::new(), true)
    }

    /// Commits the queued proposals of others (e.g. a relay's removal or a member's leave).
    pub fn commit_pending_proposals(&mut self) -> Result<PendingCommit, Error> {
        self.ensure_can_commit()?;
        self.build_commit(CommitKind::PendingProposals, Vec::new(), Vec::new(), true)
    }

    /// Asks to leave: returns a self-Remove proposal `MLSMessage` another member must commit.
    /// After this, this member makes no commits; it is out once that commit arrives.
    pub fn leave(&mut self) -> Result<Vec<u8>, Error> {
        self.ensure_can_commit()?;
        let msg = self
            .group
            .leave_group(&self.client.provider, &self.client.signer)
            .map_err(|e| MlsFailure::Leave(Box::new(e)))?;
        self.leaving = true;
        serialize(&msg)
    }

    fn build_commit(
        &mut self,
        kind: CommitKind,
        adds: Vec<KeyPackage>,
        removes: Vec<LeafNodeIndex>,
        force_path: bool,
    ) -> Result<PendingCommit, Error> {
        let from_epoch = self.epoch();
        let roster = Arc::clone(&self.roster);
        let rules = self.params.rules();
        let provider = &self.client.provider;
        let bundle = self
            .group
            .commit_builder()
            .consume_proposal_store(true)
            .force_self_update(force_path)
            .propose_adds(adds)
            .propose_removals(removes)
            .load_psks(provider.storage())
            .map_err(|e| MlsFailure::CreateCommit(Box::new(e)))?
            .build(
                provider.rand(),
                provider.crypto(),
                &self.client.signer,
                |qp| check_proposal(&rules, &roster, qp.sender(), qp.proposal()).is_ok(),
            )
            .map_err(|e| MlsFailure::CreateCommit(Box::new(e)))?
            .stage_commit(provider)
            .map_err(|e| MlsFailure::StageCommit(Box::new(e)))?;
        let next = {
            let staged = self
                .group
                .pending_commit()
                .ok_or(MlsFailure::Unreachable("staged commit missing"))?;
            self.next_epoch_of(staged)?
        };
        let (commit, welcome, group_info) = bundle.into_messages();
        let id = self.next_pending_id;
        self.next_pending_id += 1;
        self.pending = Some(id);
        Ok(PendingCommit {
            id,
            group_id: self.group_id().to_vec(),
            from_epoch,
            kind,
            commit: serialize(&commit)?,
            welcome: welcome.as_ref().map(serialize).transpose()?,
            group_info: group_info.as_ref().map(serialize).transpose()?,
            next,
        })
    }

    fn next_epoch_of(&self, staged: &StagedCommit) -> Result<NextEpoch, Error> {
        let secret = staged
            .export_secret(
                self.client.provider.crypto(),
                EXPORTER_LABEL,
                &[],
                self.params.sframe_suite.nk(),
            )
            .map_err(|_| MlsFailure::Export)?;
        let authenticator = staged
            .epoch_authenticator()
            .ok_or(MlsFailure::Unreachable(
                "no epoch authenticator for a member",
            ))?
            .as_slice()
            .to_vec();
        Ok(NextEpoch {
            epoch: staged.epoch().as_u64(),
            secret: BaseKey::from_vec(secret),
            authenticator,
        })
    }

    fn check_pending(&self, pc: &PendingCommit) -> Result<(), Error> {
        if self.pending != Some(pc.id)
            || pc.group_id != self.group_id()
            || pc.from_epoch != self.epoch()
        {
            return Err(ApiMisuse::ForeignPendingCommit.into());
        }
        Ok(())
    }

    pub(crate) fn confirm_pending(&mut self, pc: PendingCommit, now: Instant) -> Result<(), Error> {
        self.check_pending(&pc)?;
        let now = self.clock(now);
        self.group
            .merge_pending_commit(&self.client.provider)
            .map_err(|e| MlsFailure::MergePending(Box::new(e)))?;
        self.pending = None;
        self.path_update = PathUpdate::NotNeeded;
        self.enter_epoch(pc.next, now);
        Ok(())
    }

    pub(crate) fn discard_pending(&mut self, pc: PendingCommit) -> Result<(), Error> {
        self.check_pending(&pc)?;
        // `pc.next.secret` zeroizes when `pc` drops at the end of this call.
        self.abandon_pending_commit()
    }

    /// Drops the pending commit when its [`PendingCommit`] handle was lost (e.g. consumed by a
    /// `confirm` on the wrong call). Same effect as `discard`.
    pub fn abandon_pending_commit(&mut self) -> Result<(), Error> {
        if self.pending.is_none() {
            return Ok(());
        }
        self.group
            .clear_pending_commit(self.client.provider.storage())
            .map_err(|_| MlsFailure::Storage)?;
        self.pending = None;
        if self.path_update == PathUpdate::Emitted {
            self.path_update = PathUpdate::Scheduled(self.now);
        }
        Ok(())
    }

    fn enter_epoch(&mut self, next: NextEpoch, now: Instant) {
        let old = Arc::clone(&self.roster);
        let roster = Arc::new(Roster::from_public_group(self.group.public_group(), |k| {
            self.params.is_host(k)
        }));
        let same = |a: &RosterMember, b: &RosterMember| {
            a.leaf == b.leaf && a.signature_key == b.signature_key
        };
        let left: Vec<RosterMember> = old
            .members()
            .iter()
            .filter(|m| !roster.get(m.leaf).is_some_and(|n| same(m, n)))
            .cloned()
            .collect();
        let joined: Vec<RosterMember> = roster
            .members()
            .iter()
            .filter(|n| !old.get(n.leaf).is_some_and(|m| same(m, n)))
            .cloned()
            .collect();
        self.roster = Arc::clone(&roster);
        let epoch = next.epoch;
        let retired = self
            .keyring
            .install(epoch, next.secret, roster, now, self.config.retention);
        let code = SecurityCode::from_epoch_authenticator(
            &next.authenticator,
            self.config.security_code_groups,
        );
        self.events.push_back(Event::EpochChanged { epoch, code });
        let removal = !left.is_empty();
        if removal {
            // Whoever was removed knows the older epochs' keys: refuse its frames under them
            // now, and keep those keys only as long as frames in flight need.
            let retention = self.config.removal_retention.min(self.config.retention);
            self.keyring.revoke_removed(now, retention);
            self.events.push_back(Event::MembersLeft {
                epoch,
                members: left,
            });
        }
        if !joined.is_empty() {
            self.events.push_back(Event::MembersJoined {
                epoch,
                members: joined,
            });
        }
        self.retire(retired);
        self.enter_media_epoch();
        self.enter_confirmations(now);
        if removal || self.config.activation_delay.is_zero() {
            // Nothing more may be sealed under keys a removed member holds.
            self.switch_at = None;
            self.switch_send_epoch(false);
        } else if self.active {
            self.switch_at = Some(now.checked_add(self.config.activation_delay).unwrap_or(now));
        }
    }

    fn retire(&mut self, retired: Vec<(u64, RetireReason)>) {
        let mut send_gone = false;
        for (epoch, reason) in retired {
            send_gone |= epoch == self.send_epoch;
            self.retire_media_epoch(epoch);
            self.events
                .push_back(Event::EpochKeysRetired { epoch, reason });
        }
        if send_gone && self.active {
            self.switch_send_epoch(true);
        }
    }

    fn switch_send_epoch(&mut self, forced: bool) {
        if let Some(current) = self.keyring.current_epoch()
            && (current != self.send_epoch || forced)
        {
            self.send_epoch = current;
            self.senders.clear();
            // Everything sealed under the old send epoch goes out in its own manifests.
            self.media_signer.flush(self.now);
            self.events.push_back(Event::SendEpochActivated {
                epoch: current,
                forced,
            });
        }
    }

    /// Switches own senders to the current epoch now, ahead of the send barrier
    /// (`MemberConfig::activation_delay`); returns the send epoch. New senders start at
    /// counter 0 under new keys.
    pub fn activate_send_epoch(&mut self) -> u64 {
        self.switch_at = None;
        if self.active && self.keyring.current_epoch() != Some(self.send_epoch) {
            self.switch_send_epoch(false);
        }
        self.send_epoch
    }

    // ----- input -----

    /// Processes a TLS-serialized handshake `MLSMessage` (PublicMessage commit or proposal)
    /// sequenced by the DS. On any error nothing is merged or queued.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let now = self.clock(now);
        if !self.active {
            return Err(ApiMisuse::NotAMember.into());
        }
        let msg: ProtocolMessage = parse(bytes)?.try_into_protocol_message().map_err(|_| {
            InvalidMessage::UnexpectedKind {
                expected: "PublicMessage handshake",
            }
        })?;
        if !msg.is_handshake_message() {
            return Err(InvalidMessage::ApplicationMessage.into());
        }
        let processed = self
            .group
            .process_message(&self.client.provider, msg)
            .map_err(|e| InvalidMessage::Rejected(Box::new(e)))?;
        let sender = processed.sender().clone();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                self.handle_commit(now, &sender, *staged)
            }
            ProcessedMessageContent::OwnPendingCommit => Ok(()),
            ProcessedMessageContent::ProposalMessage(qp) => {
                if matches!(sender, Sender::Member(l) if l == self.group.own_leaf_index()) {
                    return Ok(());
                }
                check_proposal(&self.params.rules(), &self.roster, &sender, qp.proposal())?;
                let kind = policy::ProposalKind::of(qp.proposal());
                let removed = match qp.proposal() {
                    openmls::prelude::Proposal::Remove(r) => Some(r.removed().u32()),
                    _ => None,
                };
                self.group
                    .store_pending_proposal(self.client.provider.storage(), *qp)
                    .map_err(|_| MlsFailure::Storage)?;
                self.events.push_back(Event::ProposalQueued {
                    proposer: actor_of(&sender, &self.roster),
                    kind,
                    removed,
                });
                Ok(())
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(qp) => {
                check_proposal(&self.params.rules(), &self.roster, &sender, qp.proposal())?;
                Err(MlsFailure::Unreachable("external join proposal passed policy").into())
            }
            ProcessedMessageContent::ApplicationMessage(_)
            | ProcessedMessageContent::OwnPrivateMessage => {
                Err(InvalidMessage::ApplicationMessage.into())
            }
            #[allow(unreachable_patterns)]
            _ => Err(InvalidMessage::UnexpectedKind {
                expected: "commit or proposal",
            }
            .into()),
        }
    }

    fn handle_commit(
        &mut self,
        now: Instant,
        sender: &Sender,
        staged: StagedCommit,
    ) -> Result<(), Error> {
        if self.pending.is_some() {
            return Err(ApiMisuse::PendingCommitOutstanding {
                epoch: self.epoch(),
            }
            .into());
        }
        check_commit(&self.params.rules(), &self.roster, sender, &staged)?;
        if staged.self_removed() {
            let epoch = staged.epoch().as_u64();
            self.group
                .merge_staged_commit(&self.client.provider, staged)
                .map_err(|e| MlsFailure::Merge(Box::new(e)))?;
            self.drop_everything(epoch);
            return Ok(());
        }
        let next = self.next_epoch_of(&staged)?;
        self.group
            .merge_staged_commit(&self.client.provider, staged)
            .map_err(|e| MlsFailure::Merge(Box::new(e)))?;
        self.enter_epoch(next, now);
        Ok(())
    }

    fn drop_everything(&mut self, epoch: u64) {
        self.active = false;
        self.senders.clear();
        self.manifest_bindings.clear();
        self.outbox.clear();
        for e in self.keyring.clear() {
            self.events.push_back(Event::EpochKeysRetired {
                epoch: e,
                reason: RetireReason::NoLongerMember,
            });
        }
        self.path_update = PathUpdate::NotNeeded;
        self.events.push_back(Event::RemovedFromCall { epoch });
    }

    // ----- timers -----

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let path = match self.path_update {
            PathUpdate::Scheduled(t) if self.active => Some(t),
            _ => None,
        };
        let confirm = self.active.then(|| self.confirm.poll_timeout()).flatten();
        let manifests = self
            .active
            .then(|| self.media_signer.poll_timeout())
            .flatten();
        [
            self.keyring.next_expiry(),
            path,
            self.switch_at,
            confirm,
            manifests,
            self.verifier.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expires old epochs' receive keys and raises due timers. `now` older than the last seen
    /// time is treated as the last seen time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.switch_at.is_some_and(|t| t <= now) {
            self.switch_at = None;
            if self.active {
                self.switch_send_epoch(false);
            }
        }
        if self.active {
            self.flush_manifests(now);
        }
        self.verifier.handle_timeout(now);
        self.drain_auth_events();
        if self.active {
            let members = self.confirm.handle_timeout(now);
            if !members.is_empty() {
                let epoch = self.confirm.epoch();
                self.events
                    .push_back(Event::EpochUnconfirmed { epoch, members });
            }
        }
        let gone = self.keyring.expire(now);
        self.retire(
            gone.into_iter()
                .map(|e| (e, RetireReason::Expired))
                .collect(),
        );
        if let PathUpdate::Scheduled(t) = self.path_update
            && t <= now
            && self.active
            && !self.leaving
        {
            self.path_update = PathUpdate::Emitted;
            self.events.push_back(Event::PathUpdateDue);
        }
    }

    // ----- media -----

    #[cfg(test)]
    pub(crate) fn exporter_now(&self, len: usize) -> Vec<u8> {
        self.group
            .export_secret(self.client.provider.crypto(), EXPORTER_LABEL, &[], len)
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn keyring_secret(&self, epoch: u64) -> Option<Vec<u8>> {
        self.keyring.secret(epoch).map(<[u8]>::to_vec)
    }
}

#[cfg(feature = "bench-internals")]
mod bench;
mod media;
mod peer;
mod resume;
pub use media::Sealed;
pub use peer::{PEER_CONFIRMATION, PEER_MANIFEST};
pub use resume::{RESUME_CHALLENGE_LEN, RESUME_LABEL, ResumeProof, resume_sign_content};
#[cfg(test)]
mod tests;
