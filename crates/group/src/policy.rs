//! Admission policy enforced by every member's client, never by the relay.

use std::fmt;

use openmls::prelude::{Proposal, Sender};

use crate::identity::Roster;

/// Who may add members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddRule {
    /// Only hosts may propose or commit an Add (default).
    #[default]
    HostsOnly,
    /// Any member may add.
    AnyMember,
}

impl AddRule {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::HostsOnly => 1,
            Self::AnyMember => 2,
        }
    }
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::HostsOnly),
            2 => Some(Self::AnyMember),
            _ => None,
        }
    }
}

/// Who may remove other members (anyone may remove themself; the relay may propose removals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RemoveRule {
    /// Only hosts may remove others (default).
    #[default]
    HostsOnly,
    /// Any member may remove others.
    AnyMember,
}

impl RemoveRule {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::HostsOnly => 1,
            Self::AnyMember => 2,
        }
    }
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::HostsOnly),
            2 => Some(Self::AnyMember),
            _ => None,
        }
    }
}

/// Who sent a proposal or commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A member, by leaf index and display identity.
    Member {
        /// Leaf index.
        leaf: u32,
        /// Display identity.
        identity: String,
    },
    /// An MLS external sender (the relay), by its index in the ExternalSenders extension.
    ExternalSender {
        /// Index in the ExternalSenders extension.
        index: u32,
    },
    /// A non-member asking to join (external join proposal or external commit).
    NewMember,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Member { leaf, identity } => write!(f, "member {identity:?} (leaf {leaf})"),
            Self::ExternalSender { index } => write!(f, "external sender #{index} (relay)"),
            Self::NewMember => f.write_str("a non-member"),
        }
    }
}

/// The kind of an MLS proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProposalKind {
    /// Add.
    Add,
    /// Update.
    Update,
    /// Remove.
    Remove,
    /// PreSharedKey.
    PreSharedKey,
    /// ReInit.
    ReInit,
    /// ExternalInit.
    ExternalInit,
    /// GroupContextExtensions.
    GroupContextExtensions,
    /// SelfRemove.
    SelfRemove,
    /// Any other (custom or draft) proposal.
    Other,
}

impl ProposalKind {
    pub(crate) fn of(p: &Proposal) -> Self {
        match p {
            Proposal::Add(_) => Self::Add,
            Proposal::Update(_) => Self::Update,
            Proposal::Remove(_) => Self::Remove,
            Proposal::PreSharedKey(_) => Self::PreSharedKey,
            Proposal::ReInit(_) => Self::ReInit,
            Proposal::ExternalInit(_) => Self::ExternalInit,
            Proposal::GroupContextExtensions(_) => Self::GroupContextExtensions,
            Proposal::SelfRemove => Self::SelfRemove,
            #[allow(unreachable_patterns)]
            _ => Self::Other,
        }
    }
}

/// A proposal or commit the call's policy does not allow. The commit is not merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// Someone without the right to add tried to add `added`.
    #[error("{proposer} may not add {added:?}")]
    AddNotAllowed {
        /// Who proposed the Add.
        proposer: Actor,
        /// Display identity of the would-be member.
        added: String,
    },
    /// Someone without the right to remove tried to remove `removed`.
    #[error("{proposer} may not remove {removed}")]
    RemoveNotAllowed {
        /// Who proposed the Remove.
        proposer: Actor,
        /// Who would have been removed.
        removed: Actor,
    },
    /// A proposal kind the call never accepts (from anyone).
    #[error("{proposer} sent a {kind:?} proposal, which this call does not accept")]
    ProposalNotAccepted {
        /// Who proposed it.
        proposer: Actor,
        /// The proposal kind.
        kind: ProposalKind,
    },
    /// A commit from someone who is not a member (external commit).
    #[error("commit from {committer}, only members may commit")]
    CommitByNonMember {
        /// The committer.
        committer: Actor,
    },
    /// The commit would make the call larger than its maximum size.
    #[error("call would have {would_have} members, maximum is {max}")]
    CallFull {
        /// Configured maximum.
        max: u32,
        /// Member count after the commit.
        would_have: usize,
    },
    /// A credential is not a basic credential with a valid display identity.
    #[error("invalid credential: {reason}")]
    InvalidCredential {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Maps an MLS sender to an [`Actor`] using the roster of the epoch it was sent in.
pub(crate) fn actor_of(sender: &Sender, roster: &Roster) -> Actor {
    match sender {
        Sender::Member(leaf) => {
            let leaf = leaf.u32();
            let identity = roster
                .get(leaf)
                .map(|m| m.identity.to_string())
                .unwrap_or_default();
            Actor::Member { leaf, identity }
        }
        Sender::External(idx) => Actor::ExternalSender {
            index: external_index(idx),
        },
        Sender::NewMemberProposal | Sender::NewMemberCommit => Actor::NewMember,
    }
}

/// The numeric index of an external sender (openmls keeps the accessor crate-private; the
/// TLS encoding is the 4-byte big-endian index).
pub(crate) fn external_index(idx: &openmls::prelude::SenderExtensionIndex) -> u32 {
    use openmls::prelude::tls_codec::Serialize as _;
    match idx.tls_serialize_detached() {
        Ok(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        _ => u32::MAX,
    }
}

/// Checks one proposal, sent by `sender` in the epoch of `roster`, against the call's rules.
pub(crate) fn check_proposal(
    add_rule: AddRule,
    remove_rule: RemoveRule,
    roster: &Roster,
    sender: &Sender,
    proposal: &Proposal,
) -> Result<(), PolicyViolation> {
    let proposer = actor_of(sender, roster);
    let member_is_host = |s: &Sender| match s {
        Sender::Member(l) => roster.get(l.u32()).is_some_and(|m| m.host),
        _ => false,
    };
    match proposal {
        Proposal::Add(add) => {
            let added =
                crate::identity::display_identity(add.key_package().leaf_node().credential())
                    .unwrap_or_else(|_| String::from("<invalid credential>"));
            let allowed = match (sender, add_rule) {
                (Sender::Member(_), AddRule::AnyMember) => true,
                (Sender::Member(_), AddRule::HostsOnly) => member_is_host(sender),
                _ => false,
            };
            if allowed {
                Ok(())
            } else {
                Err(PolicyViolation::AddNotAllowed { proposer, added })
            }
        }
        Proposal::Remove(remove) => {
            let target = remove.removed().u32();
            let allowed = match sender {
                Sender::External(_) => true,
                Sender::Member(l) if l.u32() == target => true,
                Sender::Member(_) => remove_rule == RemoveRule::AnyMember || member_is_host(sender),
                Sender::NewMemberProposal | Sender::NewMemberCommit => false,
            };
            if allowed {
                Ok(())
            } else {
                let removed = Actor::Member {
                    leaf: target,
                    identity: roster
                        .get(target)
                        .map(|m| m.identity.to_string())
                        .unwrap_or_default(),
                };
                Err(PolicyViolation::RemoveNotAllowed { proposer, removed })
            }
        }
        Proposal::Update(_) if matches!(sender, Sender::Member(_)) => Ok(()),
        other => Err(PolicyViolation::ProposalNotAccepted {
            proposer,
            kind: ProposalKind::of(other),
        }),
    }
}
