//! Joining: `Hello` → `HelloAck` → (host of an empty room) create the group and `CreateGroup`
//! → `GroupCreated`, or (anyone else) `PublishKeyPackage` → `KeyPackageAccepted` →
//! `JoinRequest` → `RoomStateUpdate` (in the waiting room) → `Welcome`. Each step has to be
//! answered within `step_timeout`. Every phase owns what the next one is made from (the
//! KeyPackage's private keys, or the freshly created group), so no step can be skipped.

use std::time::Instant;

use blindcall_group::{CallGroup, Client, MlsSuite, RelaySender};
use blindcall_proto::{
    Body, CreateGroup, Hello, HelloAck, PublishKeyPackage, Redirect, RefusedReason, Role, VLBytes,
    WelcomeMessage,
};
use openmls::prelude::{BasicCredential, Credential};
use tls_codec::Deserialize as _;

use super::timer::{Timer, after};
use super::{CallCore, Output, RelayRef};
use crate::error::{CallWarning, GroupFailure, JoinError, ProtocolError};
use crate::event::{EndReason, Event};
use crate::observer::MembershipChange;

/// Where the participant stands.
pub(super) enum Phase {
    /// `Hello` sent, waiting for `HelloAck`.
    Hello(Box<Client>),
    /// Host of an empty room: the group exists, waiting for `GroupCreated`.
    Creating(Box<CallGroup>),
    /// `PublishKeyPackage` sent, waiting for `KeyPackageAccepted`.
    Publishing(Box<Client>),
    /// `JoinRequest` sent, waiting for the room state.
    Requesting(Box<Client>),
    /// In the waiting room, holding the KeyPackage's private keys until a `Welcome`.
    Waiting(Box<Client>),
    /// A member.
    Member(Box<CallGroup>),
    /// Over (or joining failed).
    Ended,
}

impl Phase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Creating(_) => "creating",
            Self::Publishing(_) => "publishing",
            Self::Requesting(_) => "requesting",
            Self::Waiting(_) => "waiting",
            Self::Member(_) => "member",
            Self::Ended => "ended",
        }
    }
}

/// Joining's own state.
#[derive(Debug, Default)]
pub(super) struct Join {
    /// What the current step waits for.
    step: &'static str,
    /// Messages that may precede admission (room state, waiting room, pongs), handled once
    /// admitted.
    backlog: Vec<Body>,
    /// The `Hello` (said again on every new connection when resuming).
    pub(super) hello: Option<Hello>,
    /// The room of the token.
    pub(super) room: Vec<u8>,
    /// A connection to another relay of the list was asked for ([`Output::Connect`]) before
    /// any relay answered the `Hello`.
    connecting: bool,
    /// The role the relay admitted this participant with (`HelloAck.role`).
    pub(super) role: Option<Role>,
}

impl Join {
    /// Whether the relay admitted this participant as a host (only a host's connection may
    /// refuse joiners or lock the room at the relay).
    pub(super) fn is_relay_host(&self) -> bool {
        self.role == Some(Role::HOST)
    }
}

impl Join {
    /// What the current step waits for.
    pub(super) fn step(&self) -> &'static str {
        self.step
    }
}

/// The relay's external-sender identity for `suite`'s signature scheme, from its HelloAck.
fn relay_sender(ack: &HelloAck, suite: MlsSuite) -> Result<RelaySender, ProtocolError> {
    let scheme = suite.ciphersuite().signature_algorithm() as u16;
    let entry = ack
        .external_senders
        .iter()
        .find(|s| s.signature_scheme == scheme)
        .ok_or(ProtocolError::RelayCredential)?;
    let cred = Credential::tls_deserialize_exact(entry.credential.as_slice())
        .map_err(|_| ProtocolError::RelayCredential)?;
    let basic = BasicCredential::try_from(cred).map_err(|_| ProtocolError::RelayCredential)?;
    Ok(RelaySender {
        signature_key: entry.signature_key.as_slice().to_vec(),
        identity: basic.identity().to_vec(),
    })
}

impl CallCore {
    /// Creates the participant's credentials and queues the `Hello`.
    pub(super) fn start_join(
        &mut self,
        now: Instant,
        identity: &str,
        token: &str,
    ) -> Result<(), JoinError> {
        let room = crate::tls::room_from_token(token)?;
        if self.opts.invite.as_ref().is_some_and(|i| i.room != room) {
            return Err(crate::error::OptionsError::InviteRoom.into());
        }
        let client = match &self.opts.identity_key {
            Some(key) if key.suite() == self.opts.mls_suite => {
                Client::with_identity(identity, key)?
            }
            Some(_) => return Err(crate::error::OptionsError::IdentitySuite.into()),
            None => Client::new(identity, self.opts.mls_suite)?,
        };
        let client = if self.opts.sign_media {
            client
        } else {
            client.without_media_signatures()
        };
        self.link_stats.seed(client.signature_key());
        let hello = Hello {
            room_id: VLBytes::new(room.clone()),
            token: VLBytes::new(token.trim().as_bytes().to_vec()),
            display_name: VLBytes::new(identity.as_bytes().to_vec()),
        };
        self.join.hello = Some(hello.clone());
        self.join.room = room;
        self.send(Body::Hello(hello));
        self.phase = Phase::Hello(Box::new(client));
        self.next_step(now, "HelloAck");
        Ok(())
    }

    /// No relay answered the `Hello` yet, and the connection could not be opened, broke or
    /// stayed silent: ask for one to the next relay of the list (`drop`: dropping this one
    /// first). False when every relay was tried (joining fails as with one relay). After a
    /// `HelloAck` the relay has admitted this participant, and a loss before membership fails
    /// the join; a `Refused` is the cluster's answer, the same on every node (except
    /// `STORE_UNAVAILABLE`, transient: SDK-REDIR-4).
    pub(super) fn join_next_relay(&mut self, now: Instant, drop: bool) -> bool {
        if !matches!(self.phase, Phase::Hello(_)) {
            return false;
        }
        let Some(relay) = self.relays.next_untried() else {
            return false;
        };
        // What was queued for the dead connection (the Hello) is void: the next one hears
        // it again.
        self.out.retain(|o| !matches!(o, Output::Control(_)));
        if drop {
            self.out.push_back(Output::DropControl);
        }
        self.out.push_back(Output::Connect {
            relay: RelayRef::Listed(relay),
        });
        self.join.connecting = true;
        self.next_step(now, "a connection to the next relay");
        true
    }

    /// The node answered the `Hello` with a `Redirect`: connect to the named node and say
    /// `Hello` there (SDK-REDIR-1); not a failed attempt, unless it is one redirect too many
    /// in a row (SDK-REDIR-3), then the next relay of the list is tried.
    fn join_redirected(&mut self, now: Instant, r: &Redirect) {
        let followed = match r.address() {
            Some(address) => {
                let address = address.to_owned();
                self.relays.follow(&address).then_some(address)
            }
            None => None,
        };
        let Some(address) = followed else {
            if !self.join_next_relay(now, true) {
                self.fail_join(JoinError::TooManyRedirects);
            }
            return;
        };
        self.out.retain(|o| !matches!(o, Output::Control(_)));
        self.out.push_back(Output::DropControl);
        self.emit(Event::Redirected {
            relay: address.clone(),
        });
        self.out.push_back(Output::Connect {
            relay: RelayRef::Redirected(address),
        });
        self.join.connecting = true;
        self.next_step(now, "a connection to the redirected relay");
    }

    /// A connection asked for while joining is up: say `Hello` on it.
    pub(super) fn join_connected(&mut self, now: Instant) {
        if !std::mem::take(&mut self.join.connecting) || !matches!(self.phase, Phase::Hello(_)) {
            return;
        }
        if let Some(hello) = self.join.hello.clone() {
            self.send(Body::Hello(hello));
        }
        self.next_step(now, "HelloAck");
    }

    fn next_step(&mut self, now: Instant, what: &'static str) {
        self.join.step = what;
        self.timers
            .set(Timer::JoinStep, after(now, self.opts.step_timeout));
    }

    /// Joining failed: the reason, and nothing after it.
    pub(super) fn fail_join(&mut self, error: JoinError) {
        self.phase = Phase::Ended;
        self.timers = Default::default();
        self.out.push_back(Output::JoinFailed(error));
    }

    /// A message before admission.
    pub(super) fn join_control(&mut self, now: Instant, body: Body) {
        let phase = std::mem::replace(&mut self.phase, Phase::Ended);
        match (phase, body) {
            // The node cannot reach its store: transient, a failed attempt (SDK-REDIR-4).
            (phase @ Phase::Hello(_), Body::Refused(r))
                if r.reason == RefusedReason::STORE_UNAVAILABLE =>
            {
                self.phase = phase;
                if !self.join_next_relay(now, true) {
                    self.fail_join(JoinError::Refused(r.reason));
                }
            }
            (phase @ Phase::Hello(_), Body::Redirect(r)) => {
                self.phase = phase;
                self.join_redirected(now, &r);
            }
            (_, Body::Refused(r)) => self.fail_join(JoinError::Refused(r.reason)),
            (_, Body::Error(e)) => self.fail_join(ProtocolError::RelayError(e.code).into()),
            (Phase::Hello(client), Body::HelloAck(ack)) => self.on_hello_ack(now, client, &ack),
            (Phase::Creating(group), Body::GroupCreated(_)) => {
                self.phase = Phase::Member(group);
                self.admitted(now);
                self.on_member(now);
                self.replay_backlog(now);
            }
            (Phase::Publishing(client), Body::KeyPackageAccepted(_)) => {
                self.phase = Phase::Requesting(client);
                self.send(Body::JoinRequest);
                // The relay answers a JoinRequest with the room state, or a refusal.
                self.next_step(now, "RoomStateUpdate");
            }
            (Phase::Requesting(client), Body::RoomStateUpdate(_)) => {
                self.phase = Phase::Waiting(client);
                self.emit(Event::Waiting);
                self.admitted(now);
                self.replay_backlog(now);
            }
            (
                phase,
                b @ (Body::RoomStateUpdate(_)
                | Body::WaitingEntryAdded(_)
                | Body::WaitingEntryRemoved(_)
                | Body::Pong(_)),
            ) => {
                self.phase = phase;
                self.join.backlog.push(b);
            }
            (_, other) => {
                let expected = self.join.step;
                self.fail_join(
                    ProtocolError::Unexpected {
                        got: body_name(&other),
                        expected,
                    }
                    .into(),
                );
            }
        }
    }

    fn on_hello_ack(&mut self, now: Instant, client: Box<Client>, ack: &HelloAck) {
        self.relays.admitted();
        self.emit(Event::Admitted { role: ack.role });
        self.join.role = Some(ack.role);
        let creates = ack.role == Role::HOST && ack.room.epoch.is_none();
        let made = if creates {
            self.create_group(now, *client, ack)
        } else {
            client.key_package().map_err(JoinError::from).map(|kp| {
                // The invite's proof over exactly this KeyPackage: the relay cannot make one.
                let join_proof = self
                    .opts
                    .invite
                    .as_ref()
                    .map(|i| VLBytes::new(i.proof(&kp).to_vec()));
                self.send(Body::PublishKeyPackage(PublishKeyPackage {
                    key_package: VLBytes::new(kp),
                    join_proof,
                }));
                (Phase::Publishing(client), "KeyPackageAccepted")
            })
        };
        match made {
            Ok((phase, step)) => {
                self.phase = phase;
                self.next_step(now, step);
            }
            Err(e) => self.fail_join(e),
        }
    }

    /// Host of an empty room: the group, with the relay as its external sender.
    fn create_group(
        &mut self,
        now: Instant,
        client: Client,
        ack: &HelloAck,
    ) -> Result<(Phase, &'static str), JoinError> {
        let mut call_config = self.opts.call_config.clone();
        call_config.mls_suite = self.opts.mls_suite;
        call_config.relay = Some(relay_sender(ack, self.opts.mls_suite)?);
        if let Some(invite) = &self.opts.invite {
            call_config.invite = Some(invite.commitment());
        }
        let group = CallGroup::create(client, &call_config, self.opts.member_config, now)?;
        self.send(Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(group.group_info()?),
        }));
        Ok((Phase::Creating(Box::new(group)), "GroupCreated"))
    }

    fn admitted(&mut self, now: Instant) {
        self.timers.stop(Timer::JoinStep);
        self.out.push_back(Output::Admitted);
        self.timers.set(Timer::Stats, now);
    }

    fn replay_backlog(&mut self, now: Instant) {
        for body in std::mem::take(&mut self.join.backlog) {
            if !self.is_ended() {
                self.on_control(now, body);
            }
        }
    }

    /// The Welcome of a member's Add commit: this participant becomes a member.
    pub(super) fn on_welcome(&mut self, now: Instant, w: &WelcomeMessage) {
        let Phase::Waiting(_) = &self.phase else {
            self.warn(CallWarning::UnexpectedMessage("Welcome"));
            return;
        };
        let Phase::Waiting(client) = std::mem::replace(&mut self.phase, Phase::Ended) else {
            return;
        };
        match CallGroup::join(*client, w.welcome.as_slice(), self.opts.member_config, now) {
            Ok(g) => {
                self.phase = Phase::Member(Box::new(g));
                self.on_member(now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "Welcome refused");
                // The KeyPackage's keys went into the failed join: the call is over.
                let reason =
                    EndReason::ProtocolError(ProtocolError::WelcomeRefused(GroupFailure::from(&e)));
                self.finish(now, reason);
            }
        }
    }

    /// Just became a member (created the group or processed a Welcome).
    pub(super) fn on_member(&mut self, now: Instant) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        let epoch = g.epoch();
        let roster: Vec<_> = g.roster().members().to_vec();
        let members = self.members_seen(&roster);
        self.epochs.joined(epoch);
        self.observe_membership(MembershipChange::Joined, epoch, now);
        self.emit(Event::Joined { epoch, members });
        self.drain_group_events(now);
        self.start_keepalive(now);
        self.start_media();
    }
}

/// The message-type name of a body, for errors and warnings.
pub(crate) fn body_name(b: &Body) -> &'static str {
    match b {
        Body::Hello(_) => "Hello",
        Body::HelloAck(_) => "HelloAck",
        Body::Redirect(_) => "Redirect",
        Body::Refused(_) => "Refused",
        Body::CreateGroup(_) => "CreateGroup",
        Body::GroupCreated(_) => "GroupCreated",
        Body::PublishKeyPackage(_) => "PublishKeyPackage",
        Body::KeyPackageAccepted(_) => "KeyPackageAccepted",
        Body::JoinRequest => "JoinRequest",
        Body::WaitingEntryAdded(_) => "WaitingEntryAdded",
        Body::WaitingEntryRemoved(_) => "WaitingEntryRemoved",
        Body::Propose(_) => "Propose",
        Body::ProposalBroadcast(_) => "ProposalBroadcast",
        Body::PeerBroadcast(_) => "PeerBroadcast",
        Body::PeerMessage(_) => "PeerMessage",
        Body::Commit(_) => "Commit",
        Body::CommitAccepted(_) => "CommitAccepted",
        Body::CommitRejected(_) => "CommitRejected",
        Body::CommitBroadcast(_) => "CommitBroadcast",
        Body::Welcome(_) => "Welcome",
        Body::GroupInfoRequest => "GroupInfoRequest",
        Body::GroupInfoResponse(_) => "GroupInfoResponse",
        Body::RelayProposal(_) => "RelayProposal",
        Body::LockRoom => "LockRoom",
        Body::UnlockRoom => "UnlockRoom",
        Body::RemoveParticipant(_) => "RemoveParticipant",
        Body::RoomStateUpdate(_) => "RoomStateUpdate",
        Body::Error(_) => "Error",
        Body::MediaSignal(_) => "MediaSignal",
        Body::Ping(_) => "Ping",
        Body::Pong(_) => "Pong",
        Body::Resume(_) => "Resume",
        Body::ResumeAccepted(_) => "ResumeAccepted",
        Body::ResumeRefused(_) => "ResumeRefused",
    }
}
