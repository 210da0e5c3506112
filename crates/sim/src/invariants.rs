//! The invariants, checked as things happen, after every step, and at quiescence.
//!
//! | invariant | what is checked | from |
//! |---|---|---|
//! | [`Invariant::EpochAgreement`] | every connected member at the relay's epoch shows the same security code (a digest of the epoch authenticator); no two members ever entered one epoch with different codes | each step; every epoch entered |
//! | [`Invariant::KeysAfterRemoval`] | no member holds receive keys for the epoch that removed it or a later one | each step |
//! | [`Invariant::KeysBeforeJoin`] | no member holds receive keys for an epoch before the one it joined in | each step |
//! | [`Invariant::AddPolicy`] | only joiners a host's application approved ever become members (the call's add rule: hosts only) | every join any member or the relay reports |
//! | [`Invariant::OneCommitPerEpoch`] | the relay sequences epochs one after another, each once, and broadcasts one commit per epoch | the relay's outputs |
//! | [`Invariant::NonceReuse`] | no (epoch, KID, CTR) is sealed twice | every frame on the wire |
//! | [`Invariant::FrameOrigin`] | every frame opened was sealed by the member its key names, in that epoch, while both were members, and arrives intact | every frame opened; again at the end |
//! | [`Invariant::RemovedSender`] | no frame of a member is opened by a receiver that has already merged its removal | every frame opened |
//! | [`Invariant::Replay`] | no receiver opens one frame twice | every frame opened |
//! | [`Invariant::Convergence`] | at quiescence every running participant is a connected member at the relay's epoch, the rosters equal the connected members, old receive keys are gone, and the relay holds no waiting joiner | quiescence |
//! | [`Invariant::Quiescence`] | the call quiesces: nothing is in flight once the scenario is over and the timeouts have passed; no timer fires forever at one instant | the run loop |
//! | [`Invariant::NoPanic`] | no core panics | every step |
//! | [`Invariant::RemovalCause`] | a member leaves the group only if a host removed it or its connection ended (before the commit was sequenced) | every removal the relay sequences and any member merges |
//! | [`Invariant::FalseAlarm`] | with an honest relay and honest members nobody reports a split call, an impersonation, an unauthenticated sender, or the relay proposing its own removal | every event |
//! | [`Invariant::Resume`] | a member whose connection was lost and whose resume the relay accepted is back on its own leaf and media participant id, at the epoch the relay named, with that epoch's code; it sealed nothing while away, published no KeyPackage, was not seated as a new member, and is not removed afterwards for the loss | every reconnection; every removal |
//! | [`Invariant::ResumeRefusal`] | a resume is refused only as `REMOVED` (or `NO_GROUP`: the call is over), and only after the relay let the member go (its grace ran out, or the relay closed its connection) or a host removed it | every refusal |
//! | [`Invariant::UnexpectedEnd`] | a participant's call ends only for a reason the scenario can cause (it left, was removed, denied, disconnected, left waiting, locked out, or found no call) | every end |

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use blindcall_client::{
    CallCore, EndReason, Event, ImpersonationReason, JoinError, MediaKind, ProtocolError,
    RefusedReason,
};
use blindcall_group::SecurityCode;
use blindcall_media::{Descriptor, RtpPacket};
use blindcall_proto::Body;
use blindcall_relay::{ConnId, Event as RelayEvent};
use blindcall_sframe::Header;

use crate::clock::SimTime;
use crate::member::{FrameTag, Member, Observed};

/// Which invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// Members at one epoch hold one epoch authenticator.
    EpochAgreement,
    /// No keys for the removal epoch or later.
    KeysAfterRemoval,
    /// No keys for epochs before joining.
    KeysBeforeJoin,
    /// Only adds the call's policy allows take effect.
    AddPolicy,
    /// The relay sequences one commit per epoch.
    OneCommitPerEpoch,
    /// No (KID, CTR) reuse within an epoch.
    NonceReuse,
    /// Frames opened come from who their key names, while both were members.
    FrameOrigin,
    /// Frames of a removed member are refused once its removal is merged.
    RemovedSender,
    /// No frame is opened twice.
    Replay,
    /// Everyone connected ends on the relay's epoch with the same group.
    Convergence,
    /// The call quiesces.
    Quiescence,
    /// No panic.
    NoPanic,
    /// A call ended for a reason nothing in the scenario causes.
    UnexpectedEnd,
    /// A member was removed though no host removed it and its connection was up.
    RemovalCause,
    /// An honest member raised an alarm meant for a misbehaving relay or member.
    FalseAlarm,
    /// A member that came back is not the member it was, or came back the wrong way.
    Resume,
    /// A resume was refused though the relay had kept the member's leaf.
    ResumeRefusal,
}

impl Invariant {
    /// Its name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::EpochAgreement => "epoch-agreement",
            Self::KeysAfterRemoval => "keys-after-removal",
            Self::KeysBeforeJoin => "keys-before-join",
            Self::AddPolicy => "add-policy",
            Self::OneCommitPerEpoch => "one-commit-per-epoch",
            Self::NonceReuse => "nonce-reuse",
            Self::FrameOrigin => "frame-origin",
            Self::RemovedSender => "removed-sender",
            Self::Replay => "replay",
            Self::Convergence => "convergence",
            Self::Quiescence => "quiescence",
            Self::NoPanic => "no-panic",
            Self::UnexpectedEnd => "unexpected-end",
            Self::RemovalCause => "removal-cause",
            Self::FalseAlarm => "false-alarm",
            Self::Resume => "resume",
            Self::ResumeRefusal => "resume-refusal",
        }
    }
}

/// A broken invariant: which, where and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// The step it was detected in (0-based).
    pub step: u64,
    /// The virtual time.
    pub at: SimTime,
    /// What was seen.
    pub detail: String,
}

/// Refusals the scenario causes: a joiner left waiting, a locked room, a host's removal.
fn expected_refusal(r: RefusedReason) -> bool {
    [
        RefusedReason::WAITING_ROOM_TIMEOUT,
        RefusedReason::ROOM_LOCKED,
        RefusedReason::REMOVED_BY_HOST,
        RefusedReason::REMOVED_FROM_GROUP,
    ]
    .contains(&r)
}

/// Whether an event is an alarm no honest relay and honest members ever cause: a split call,
/// an impersonation with evidence (a `NoSignature` flag is provisional, MA-DET-5: manifests
/// can be late or, from a member whose connection is lost, never come), a member that does
/// not sign, or the relay proposing a connected member's own removal.
pub fn is_false_alarm(e: &Event) -> bool {
    match e {
        Event::Impersonation { reason, .. } => *reason != ImpersonationReason::NoSignature,
        Event::GroupSplit { .. }
        | Event::SenderUnauthenticated { .. }
        | Event::OwnRemovalProposed { .. } => true,
        _ => false,
    }
}

/// Whether the scenario can end a call this way: the application left, a commit removed it,
/// the host denied it, the network cut it, or an expected refusal.
pub fn end_expected(reason: &EndReason) -> bool {
    match reason {
        EndReason::Left | EndReason::Removed | EndReason::Denied | EndReason::ConnectionLost => {
            true
        }
        EndReason::Refused(r) => expected_refusal(*r),
        _ => false,
    }
}

/// Whether the scenario can make joining fail this way: an expected refusal, no call to join
/// (its creator left or never came), or the network cut the connection.
pub fn join_failure_expected(e: &JoinError) -> bool {
    match e {
        JoinError::Refused(r) => expected_refusal(*r),
        JoinError::Protocol(ProtocolError::RelayError(code)) => {
            *code == blindcall_proto::ErrorCode::NO_GROUP
        }
        JoinError::Protocol(ProtocolError::Closed) => true,
        _ => false,
    }
}

/// One frame sealed, as the sender's observer and the wire saw it.
#[derive(Debug, Clone, Copy)]
struct SentFrame {
    sender: usize,
    kind: MediaKind,
    epoch: u64,
    counter: u64,
}

/// One frame opened, kept for the final check.
#[derive(Debug, Clone, Copy)]
struct OpenedFrame {
    receiver: usize,
    tag: FrameTag,
    epoch: u64,
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Everything the invariants need to remember.
#[derive(Debug, Default)]
pub struct Checker {
    /// The first code seen for each epoch, and who saw it.
    epoch_codes: BTreeMap<u64, (SecurityCode, usize)>,
    /// Identity → the epoch whose commit removed it.
    removed_at: BTreeMap<String, u64>,
    /// Per member: identities whose removal it merged.
    seen_left: BTreeMap<usize, BTreeSet<String>>,
    /// Identities a host's application approved.
    approved: BTreeSet<String>,
    /// Identities that may leave the group for good: a host asked to remove them, their call
    /// ended, the relay closed their connection or let their grace run out.
    may_leave: BTreeSet<String>,
    /// Identities whose connection was lost and who have not resumed since: they may leave
    /// the group too, unless they resume.
    lost: BTreeSet<String>,
    /// Identities whose resume the relay may refuse: it let them go (their grace ran out, it
    /// closed their connection) or a host asked to remove them.
    let_go: BTreeSet<String>,
    /// Leaves in the relay's resume grace, and whose they are.
    graces: BTreeMap<u32, usize>,
    /// Per participant: the epoch the relay's latest `ResumeAccepted` named.
    accepted_epoch: BTreeMap<usize, u64>,
    /// Per participant: the leaf the relay last resumed it on.
    resumed_leaf: BTreeMap<usize, u32>,
    /// Identities the relay seated as new members.
    seated: BTreeSet<String>,
    /// Per participant: its media participant id at the relay (the connection it was seated
    /// on; a resume keeps it).
    media_ids: BTreeMap<usize, ConnId>,
    /// The identity that created the call.
    creator: Option<String>,
    /// The relay's sequenced epochs: new epoch → committer.
    sequenced: BTreeMap<u64, ConnId>,
    /// Digest of the commit broadcast for each epoch it was made in.
    broadcasts: BTreeMap<u64, u64>,
    /// The connection told `CommitAccepted` for each new epoch.
    accepted: BTreeMap<u64, ConnId>,
    /// The latest epoch the relay reached (creation or commit).
    relay_epoch: Option<u64>,
    /// Per sender: frames sealed whose KID is not seen on the wire yet.
    unsent: BTreeMap<usize, std::collections::VecDeque<(u64, u64)>>,
    sent: HashMap<FrameTag, SentFrame>,
    nonces: HashSet<(u64, u64, u64)>,
    opened: HashSet<(usize, FrameTag)>,
    opened_log: Vec<OpenedFrame>,
    violation: Option<Violation>,
    /// The current step and time, stamped on violations.
    step: u64,
    at: SimTime,
}

impl Checker {
    /// A checker with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Takes the first violation.
    pub fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }

    /// Stamps later violations with this step and time.
    pub fn at_step(&mut self, step: u64, at: SimTime) {
        self.step = step;
        self.at = at;
    }

    /// Records a violation (only the first counts).
    pub fn fail(&mut self, invariant: Invariant, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                step: self.step,
                at: self.at,
                detail,
            });
        }
    }

    /// The relay's epoch as sequenced.
    pub fn relay_epoch(&self) -> Option<u64> {
        self.relay_epoch
    }

    /// Number of commits the relay sequenced.
    pub fn commits_sequenced(&self) -> usize {
        self.sequenced.len()
    }

    /// Frames sealed so far.
    pub fn frames_sent(&self) -> usize {
        self.sent.len()
    }

    /// Frames opened so far.
    pub fn frames_opened(&self) -> usize {
        self.opened_log.len()
    }

    /// A host's application approves `identity`.
    pub fn approved(&mut self, identity: &str) {
        self.approved.insert(identity.to_owned());
    }

    // ----- what members' observers saw -----

    /// One observation of member `p`.
    pub fn observed(&mut self, members: &[Member], p: usize, o: &Observed) {
        match o {
            Observed::Epoch { epoch, code } => match self.epoch_codes.get(epoch) {
                Some((c, who)) if c != code => {
                    let detail = format!(
                        "{} entered epoch {epoch} with code {code}, {} with {c}",
                        members[p].name, members[*who].name
                    );
                    self.fail(Invariant::EpochAgreement, detail);
                }
                Some(_) => {}
                None => {
                    self.epoch_codes.insert(*epoch, (code.clone(), p));
                }
            },
            Observed::Sent {
                kind,
                epoch,
                counter,
                tag,
            } => {
                if members[p].resume.away {
                    let detail = format!(
                        "{} sealed a frame (epoch {epoch}, ctr {counter}) while reconnecting",
                        members[p].name
                    );
                    self.fail(Invariant::Resume, detail);
                }
                if let Some(tag) = tag {
                    self.sent.insert(
                        *tag,
                        SentFrame {
                            sender: p,
                            kind: *kind,
                            epoch: *epoch,
                            counter: *counter,
                        },
                    );
                }
                self.unsent
                    .entry(p)
                    .or_default()
                    .push_back((*epoch, *counter));
            }
            Observed::Opened {
                sender,
                kind,
                epoch,
                counter,
                tag,
                intact,
                ..
            } => self.frame_opened(members, p, sender, *kind, *epoch, *counter, *tag, *intact),
            Observed::Commit { .. } | Observed::Membership { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn frame_opened(
        &mut self,
        members: &[Member],
        p: usize,
        sender: &str,
        kind: MediaKind,
        epoch: u64,
        counter: u64,
        tag: Option<FrameTag>,
        intact: bool,
    ) {
        let me = &members[p].name;
        let Some(tag) = tag else {
            self.fail(
                Invariant::FrameOrigin,
                format!("{me} opened a frame of {sender} (epoch {epoch}) nobody published"),
            );
            return;
        };
        if !intact {
            self.fail(
                Invariant::FrameOrigin,
                format!("{me} opened frame {tag:?} with a plaintext that is not the one sent"),
            );
        }
        let Some(s) = self.sent.get(&tag).copied() else {
            self.fail(
                Invariant::FrameOrigin,
                format!("{me} opened frame {tag:?} that was never sealed"),
            );
            return;
        };
        let sealer = &members[s.sender].name;
        if sealer != sender || s.epoch != epoch || s.counter != counter || s.kind != kind {
            self.fail(
                Invariant::FrameOrigin,
                format!(
                    "{me} opened frame {tag:?} as {sender}'s (epoch {epoch}, ctr {counter}, \
                     {kind:?}); {sealer} sealed it (epoch {}, ctr {}, {:?})",
                    s.epoch, s.counter, s.kind
                ),
            );
        }
        if members[p].joined_epoch.is_some_and(|j| epoch < j) {
            self.fail(
                Invariant::FrameOrigin,
                format!("{me} opened a frame of epoch {epoch}, before it joined"),
            );
        }
        if self
            .seen_left
            .get(&p)
            .is_some_and(|left| left.contains(sender))
        {
            self.fail(
                Invariant::RemovedSender,
                format!(
                    "{me} opened {sender}'s frame {tag:?} (epoch {epoch}) after merging its removal"
                ),
            );
        }
        if !self.opened.insert((p, tag)) {
            self.fail(
                Invariant::Replay,
                format!("{me} opened frame {tag:?} of {sender} twice"),
            );
        }
        self.opened_log.push(OpenedFrame {
            receiver: p,
            tag,
            epoch,
        });
    }

    // ----- what members' applications saw -----

    /// Member `p` learned that `identities` joined (or were members when it joined).
    pub fn members_joined<'a>(
        &mut self,
        members: &[Member],
        p: usize,
        identities: impl IntoIterator<Item = &'a str>,
    ) {
        for id in identities {
            if self.creator.as_deref() == Some(id) || self.approved.contains(id) {
                continue;
            }
            let detail = format!(
                "{} sees {id} in the group, but no host approved it",
                members[p].name
            );
            self.fail(Invariant::AddPolicy, detail);
        }
    }

    /// `identity` may leave the group from now on (its call ended).
    pub fn may_leave(&mut self, identity: &str) {
        self.may_leave.insert(identity.to_owned());
    }

    /// A host's application asked to remove `identity`.
    pub fn host_removes(&mut self, identity: &str) {
        self.may_leave.insert(identity.to_owned());
        self.let_go.insert(identity.to_owned());
    }

    /// The relay closed `identity`'s connection: it proposes its removal, and refuses its
    /// resume.
    pub fn relay_closed(&mut self, identity: &str) {
        self.host_removes(identity);
    }

    /// `identity`'s connection was lost (the network cut it, or its client dropped it): it
    /// may leave the group unless it resumes.
    pub fn connection_lost(&mut self, identity: &str) {
        self.lost.insert(identity.to_owned());
    }

    /// Whether `identity` may leave the group now.
    fn can_leave(&self, identity: &str) -> bool {
        self.may_leave.contains(identity) || self.lost.contains(identity)
    }

    // ----- resumes -----

    /// `identity` sends a KeyPackage; `joined` is the epoch it joined in, if it did.
    pub fn key_package_published(&mut self, identity: &str, joined: Option<u64>) {
        if let Some(epoch) = joined {
            let detail = format!(
                "{identity} published a KeyPackage after it joined in epoch {epoch} (a member \
                 coming back resumes its leaf)"
            );
            self.fail(Invariant::Resume, detail);
        }
    }

    /// The relay accepted participant `p`'s resume at `epoch`.
    pub fn resume_accepted(&mut self, p: usize, epoch: u64) {
        self.accepted_epoch.insert(p, epoch);
    }

    /// Participant `p`'s call is back (`Event::Reconnected`): same leaf, the epoch the relay
    /// named, that epoch's code.
    pub fn back(&mut self, members: &[Member], p: usize) {
        let m = &members[p];
        let Some(g) = m.core.as_ref().and_then(CallCore::call_group) else {
            self.fail(
                Invariant::Resume,
                format!("{} is back but holds no group", m.name),
            );
            return;
        };
        let (leaf, relay_leaf) = (g.own_leaf(), self.resumed_leaf.get(&p).copied());
        if m.resume.leaf != Some(leaf) || relay_leaf != Some(leaf) {
            let detail = format!(
                "{} is back on leaf {leaf}; it had leaf {:?}, the relay resumed leaf {relay_leaf:?}",
                m.name, m.resume.leaf
            );
            self.fail(Invariant::Resume, detail);
        }
        let epoch = g.epoch();
        let accepted = self.accepted_epoch.get(&p).copied();
        if accepted != Some(epoch) {
            let detail = format!(
                "{} is back at epoch {epoch}, the relay's ResumeAccepted named {accepted:?}",
                m.name
            );
            self.fail(Invariant::Resume, detail);
        }
        let code = g.security_code();
        if let Some((c, who)) = self.epoch_codes.get(&epoch)
            && *c != code
        {
            let detail = format!(
                "{} is back at epoch {epoch} with code {code}, {} entered it with {c}",
                m.name, members[*who].name
            );
            self.fail(Invariant::EpochAgreement, detail);
        }
    }

    /// The relay refused participant `p`'s resume.
    pub fn resume_refused(
        &mut self,
        members: &[Member],
        p: usize,
        reason: blindcall_proto::ResumeRefusedReason,
    ) {
        use blindcall_proto::ResumeRefusedReason as R;
        let name = &members[p].name;
        // REMOVED, or NO_GROUP when the rest of the call ended meanwhile and the room with it.
        if ![R::REMOVED, R::NO_GROUP].contains(&reason) || !self.let_go.contains(name) {
            let detail = format!(
                "{name}'s resume was refused ({reason:?}), but the relay kept its leaf \
                 (let go: {})",
                self.let_go.contains(name)
            );
            self.fail(Invariant::ResumeRefusal, detail);
        }
    }

    /// Member `p` merged a commit that removed `identities` in `epoch`.
    pub fn members_left<'a>(
        &mut self,
        p: usize,
        epoch: u64,
        identities: impl IntoIterator<Item = &'a str>,
    ) {
        for id in identities {
            if !self.can_leave(id) {
                let detail = format!(
                    "p{p} merged {id}'s removal in epoch {epoch}, but no host removed {id} and \
                     its connection is up"
                );
                self.fail(Invariant::RemovalCause, detail);
            }
            self.removed_at.entry(id.to_owned()).or_insert(epoch);
            self.seen_left.entry(p).or_default().insert(id.to_owned());
        }
    }

    /// `identity` created the call.
    pub fn created(&mut self, identity: &str) {
        self.creator.get_or_insert_with(|| identity.to_owned());
    }

    /// Participant `p`'s call ended (`what`); `expected` says whether the scenario can cause
    /// that.
    pub fn call_ended(&mut self, members: &[Member], p: usize, what: &str, expected: bool) {
        if !expected {
            let detail = format!("{}'s call ended with {what}", members[p].name);
            self.fail(Invariant::UnexpectedEnd, detail);
        }
    }

    // ----- what the relay did -----

    /// The relay sent `body` to `conn`.
    pub fn relay_sent(&mut self, conn: ConnId, body: &Body) {
        match body {
            Body::CommitBroadcast(b) => {
                let digest = fnv(b.commit.as_slice());
                match self.broadcasts.get(&b.epoch) {
                    Some(d) if *d != digest => {
                        let detail = format!(
                            "two different commits broadcast for epoch {} (the second to {conn:?})",
                            b.epoch
                        );
                        self.fail(Invariant::OneCommitPerEpoch, detail);
                    }
                    Some(_) => {}
                    None => {
                        self.broadcasts.insert(b.epoch, digest);
                    }
                }
            }
            Body::CommitAccepted(a) => {
                if let Some(first) = self.accepted.insert(a.epoch, conn) {
                    let detail = format!(
                        "two commits accepted into epoch {}: {first:?}'s and {conn:?}'s",
                        a.epoch
                    );
                    self.fail(Invariant::OneCommitPerEpoch, detail);
                }
            }
            _ => {}
        }
    }

    /// The relay reported `event`; `participant` names a connection's participant.
    pub fn relay_event(
        &mut self,
        members: &[Member],
        participant: impl Fn(ConnId) -> Option<usize>,
        event: &RelayEvent,
    ) {
        match event {
            RelayEvent::GroupCreated { epoch, .. } => {
                if self.relay_epoch.is_some() {
                    self.fail(
                        Invariant::OneCommitPerEpoch,
                        "the group was created twice".into(),
                    );
                }
                self.relay_epoch = Some(*epoch);
            }
            RelayEvent::CommitAccepted { conn, epoch, .. } => {
                let expected = self.relay_epoch.map(|e| e + 1);
                if Some(*epoch) != expected || self.sequenced.contains_key(epoch) {
                    let detail = format!(
                        "sequenced epoch {epoch} after epoch {:?} (committer {conn:?})",
                        self.relay_epoch
                    );
                    self.fail(Invariant::OneCommitPerEpoch, detail);
                }
                self.sequenced.insert(*epoch, *conn);
                self.relay_epoch = Some(*epoch);
            }
            RelayEvent::MemberRemoved { conn, leaf, .. } => {
                // Sequenced while the member was connected: a host must have asked for it.
                let name = participant(*conn).map(|p| members[p].name.clone());
                let caused = name.as_ref().is_some_and(|n| self.can_leave(n));
                if !caused {
                    let detail = format!(
                        "the relay sequenced the removal of {} (leaf {leaf}, {conn:?}), which is \
                         connected and no host removed",
                        name.as_deref().unwrap_or("an unknown connection")
                    );
                    self.fail(Invariant::RemovalCause, detail);
                }
            }
            RelayEvent::MemberJoined { conn, .. } => {
                let name = participant(*conn).map(|p| members[p].name.clone());
                let allowed = name.as_ref().is_some_and(|n| self.approved.contains(n));
                if !allowed {
                    let detail = format!("the relay seated {conn:?} ({name:?}) no host approved");
                    self.fail(Invariant::AddPolicy, detail);
                }
                if let Some(p) = participant(*conn) {
                    self.media_ids.insert(p, *conn);
                }
                if let Some(n) = name
                    && !self.seated.insert(n.clone())
                {
                    let detail = format!("the relay seated {n} as a new member a second time");
                    self.fail(Invariant::Resume, detail);
                }
            }
            RelayEvent::GraceStarted { conn, leaf, .. } => {
                if let Some(p) = participant(*conn) {
                    self.graces.insert(*leaf, p);
                }
            }
            RelayEvent::GraceExpired { leaf, .. } => {
                if let Some(p) = self.graces.remove(leaf) {
                    let name = members[p].name.clone();
                    self.host_removes(&name);
                }
            }
            RelayEvent::MemberResumed {
                conn,
                leaf,
                participant: media_id,
                ..
            } => {
                self.graces.remove(leaf);
                if let Some(p) = participant(*conn) {
                    self.resumed_leaf.insert(p, *leaf);
                    // Same media participant as before (the creator's first resume names
                    // the connection it created the call on).
                    let known = *self.media_ids.entry(p).or_insert(*media_id);
                    if known != *media_id || participant(*media_id) != Some(p) {
                        let detail = format!(
                            "{} resumed as media participant {media_id:?}, it was {known:?}",
                            members[p].name
                        );
                        self.fail(Invariant::Resume, detail);
                    }
                    // Back on its leaf: from now on only a host or a new loss removes it.
                    let name = &members[p].name;
                    if !self.let_go.contains(name) {
                        self.lost.remove(name);
                    }
                }
            }
            _ => {}
        }
    }

    // ----- the wire -----

    /// Member `p` handed this packet to its transport.
    pub fn transmitted(&mut self, members: &[Member], p: usize, packet: &RtpPacket) {
        let Ok((d, rest)) = Descriptor::split(&packet.payload) else {
            return;
        };
        if !d.start {
            return;
        }
        let Some((epoch, counter)) = self.unsent.get_mut(&p).and_then(|q| q.pop_front()) else {
            self.fail(
                Invariant::NonceReuse,
                format!(
                    "{} sent a frame its observer never saw sealed",
                    members[p].name
                ),
            );
            return;
        };
        let Ok((h, _)) = Header::decode(rest) else {
            self.fail(
                Invariant::NonceReuse,
                format!("{} sent a frame without an SFrame header", members[p].name),
            );
            return;
        };
        if h.ctr.0 != counter {
            self.fail(
                Invariant::NonceReuse,
                format!(
                    "{} sealed counter {counter} but sent counter {}",
                    members[p].name, h.ctr.0
                ),
            );
        }
        if !self.nonces.insert((epoch, h.kid.0, h.ctr.0)) {
            self.fail(
                Invariant::NonceReuse,
                format!(
                    "{} reused (KID {:#x}, CTR {}) in epoch {epoch}",
                    members[p].name, h.kid.0, h.ctr.0
                ),
            );
        }
    }

    // ----- after every step -----

    /// The state invariants, over every member.
    pub fn after_step(&mut self, members: &[Member]) {
        let relay_epoch = self.relay_epoch;
        let mut at_relay: Option<(SecurityCode, usize)> = None;
        for m in members {
            let Some(g) = m.core.as_ref().and_then(CallCore::call_group) else {
                continue;
            };
            let held = g.receive_epochs();
            if let (Some(j), Some(first)) = (m.joined_epoch, held.first())
                && *first < j
            {
                let detail = format!("{} joined in epoch {j} but holds keys of {held:?}", m.name);
                self.fail(Invariant::KeysBeforeJoin, detail);
            }
            if let (Some(r), Some(last)) = (self.removed_at.get(&m.name), held.last())
                && last >= r
            {
                let detail = format!(
                    "{} was removed in epoch {r} but holds keys of {held:?}",
                    m.name
                );
                self.fail(Invariant::KeysAfterRemoval, detail);
            }
            if Some(g.epoch()) != relay_epoch || !m.is_connected_member() {
                continue;
            }
            let code = g.security_code();
            match &at_relay {
                None => at_relay = Some((code, m.index)),
                Some((c, who)) if *c != code => {
                    let detail = format!(
                        "at the relay's epoch {} {} shows {code}, {} shows {c}",
                        g.epoch(),
                        m.name,
                        members[*who].name
                    );
                    self.fail(Invariant::EpochAgreement, detail);
                }
                Some(_) => {}
            }
        }
    }

    // ----- at quiescence -----

    /// The end-state invariants; `relay_epoch` and the relay's occupancy as the relay sees
    /// them now.
    pub fn at_quiescence(
        &mut self,
        members: &[Member],
        relay_epoch: Option<u64>,
        relay_members: usize,
        relay_waiting: usize,
    ) {
        let connected: Vec<&Member> = members.iter().filter(|m| m.is_connected_member()).collect();
        let names: BTreeSet<&str> = connected.iter().map(|m| m.name.as_str()).collect();
        for m in members.iter().filter(|m| m.is_running()) {
            if !m.is_connected_member() {
                let detail = format!("{} is still running but not a connected member", m.name);
                self.fail(Invariant::Convergence, detail);
            }
        }
        let mut code: Option<(SecurityCode, &str)> = None;
        for m in &connected {
            let Some(g) = m.core.as_ref().and_then(CallCore::call_group) else {
                continue;
            };
            if Some(g.epoch()) != relay_epoch {
                let detail = format!(
                    "{} is at epoch {}, the relay at {relay_epoch:?}",
                    m.name,
                    g.epoch()
                );
                self.fail(Invariant::Convergence, detail);
            }
            let c = g.security_code();
            match &code {
                None => code = Some((c, &m.name)),
                Some((other, who)) if *other != c => {
                    let detail = format!("{} shows {c}, {who} shows {other}", m.name);
                    self.fail(Invariant::EpochAgreement, detail);
                }
                Some(_) => {}
            }
            let roster: BTreeSet<&str> =
                g.roster().members().iter().map(|r| &*r.identity).collect();
            if roster != names {
                let detail = format!(
                    "{}'s roster is {roster:?}, the connected members are {names:?}",
                    m.name
                );
                self.fail(Invariant::Convergence, detail);
            }
            let held = g.receive_epochs();
            if held != [g.epoch()] {
                let detail = format!(
                    "{} still holds receive keys of {held:?} at epoch {}",
                    m.name,
                    g.epoch()
                );
                self.fail(Invariant::Convergence, detail);
            }
        }
        if relay_members != connected.len() || relay_waiting != 0 {
            let detail = format!(
                "the relay seats {relay_members} members and {relay_waiting} waiting; \
                 {} members are connected",
                connected.len()
            );
            self.fail(Invariant::Convergence, detail);
        }
        // Frames opened, against what is known now of who was removed when.
        let log = std::mem::take(&mut self.opened_log);
        for f in &log {
            let Some(s) = self.sent.get(&f.tag) else {
                continue;
            };
            let sender = &members[s.sender].name;
            let receiver = &members[f.receiver].name;
            for who in [sender, receiver] {
                if let Some(r) = self.removed_at.get(who.as_str())
                    && f.epoch >= *r
                {
                    let detail = format!(
                        "{receiver} opened {sender}'s frame {:?} of epoch {}, but {who} was \
                         removed in epoch {r}",
                        f.tag, f.epoch
                    );
                    self.fail(Invariant::FrameOrigin, detail);
                }
            }
        }
        self.opened_log = log;
    }
}
