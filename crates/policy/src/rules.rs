//! Who may add, remove and update, and what a commit may change.

use std::collections::BTreeSet;
use std::fmt;

use openmls::prelude::{LeafNode, Proposal, Sender, StagedCommit};

use crate::roster::{Roster, display_identity};

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

/// The membership rules of a call (from its [`crate::CallParams`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Who may add.
    pub add_rule: AddRule,
    /// Who may remove others.
    pub remove_rule: RemoveRule,
    /// Largest number of members.
    pub max_members: u32,
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
    /// The kind of `p`.
    pub fn of(p: &Proposal) -> Self {
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

/// A proposal or commit the call's policy does not allow. The commit is not merged (members)
/// or not sequenced (relay).
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
    /// An Update proposal or a commit's path would change a leaf's identity (credential or
    /// signature key). A member's identity is fixed for as long as it is in the call.
    #[error("leaf {leaf} ({identity:?}) may not change its identity (to {new_identity:?})")]
    IdentityChanged {
        /// The leaf.
        leaf: u32,
        /// Its identity in the roster.
        identity: String,
        /// The identity the change would have given it.
        new_identity: String,
    },
    /// Two members of the resulting epoch would share one identity (signature) key.
    #[error("{identity:?} is already in the call with the same identity key")]
    DuplicateIdentityKey {
        /// Display identity of the added member.
        identity: String,
    },
}

/// Maps an MLS sender to an [`Actor`] using the roster of the epoch it was sent in.
pub fn actor_of(sender: &Sender, roster: &Roster) -> Actor {
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
pub fn external_index(idx: &openmls::prelude::SenderExtensionIndex) -> u32 {
    use openmls::prelude::tls_codec::Serialize as _;
    match idx.tls_serialize_detached() {
        Ok(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        _ => u32::MAX,
    }
}

/// Checks one proposal, sent by `sender` in the epoch of `roster`, against the call's rules.
pub fn check_proposal(
    rules: &Rules,
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
            let added = display_identity(add.key_package().leaf_node().credential())
                .unwrap_or_else(|_| String::from("<invalid credential>"));
            let allowed = match (sender, rules.add_rule) {
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
                Sender::Member(_) => {
                    rules.remove_rule == RemoveRule::AnyMember || member_is_host(sender)
                }
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
        Proposal::Update(update) => match sender {
            Sender::Member(l) => check_same_identity(roster, l.u32(), update.leaf_node()),
            _ => Err(PolicyViolation::ProposalNotAccepted {
                proposer,
                kind: ProposalKind::Update,
            }),
        },
        other => Err(PolicyViolation::ProposalNotAccepted {
            proposer,
            kind: ProposalKind::of(other),
        }),
    }
}

/// A leaf node replacing `leaf` must carry the same credential and signature key.
fn check_same_identity(roster: &Roster, leaf: u32, new: &LeafNode) -> Result<(), PolicyViolation> {
    let Some(old) = roster.get(leaf) else {
        // Not a member of this epoch: openmls refuses such a sender before policy runs.
        return Err(PolicyViolation::CommitByNonMember {
            committer: Actor::Member {
                leaf,
                identity: String::new(),
            },
        });
    };
    let new_identity = display_identity(new.credential())?;
    if *old.identity != *new_identity || old.signature_key != new.signature_key().as_slice() {
        return Err(PolicyViolation::IdentityChanged {
            leaf,
            identity: old.identity.to_string(),
            new_identity,
        });
    }
    Ok(())
}

/// Checks a staged commit by `committer`, made in the epoch of `roster`, against the call's
/// rules: only members commit; every proposal (inline or by reference) passes
/// [`check_proposal`]; the committer's path keeps its identity; every new credential is valid;
/// no two members of the next epoch share an identity key; the call stays within its size.
pub fn check_commit(
    rules: &Rules,
    roster: &Roster,
    committer: &Sender,
    staged: &StagedCommit,
) -> Result<(), PolicyViolation> {
    let Sender::Member(committer_leaf) = committer else {
        return Err(PolicyViolation::CommitByNonMember {
            committer: actor_of(committer, roster),
        });
    };
    for qp in staged.queued_proposals() {
        check_proposal(rules, roster, qp.sender(), qp.proposal())?;
    }
    if let Some(path_leaf) = staged.update_path_leaf_node() {
        check_same_identity(roster, committer_leaf.u32(), path_leaf)?;
    }
    for credential in staged.credentials_to_verify() {
        display_identity(credential)?;
    }
    let removed: BTreeSet<u32> = staged
        .remove_proposals()
        .map(|r| r.remove_proposal().removed().u32())
        .collect();
    let mut keys: BTreeSet<Vec<u8>> = roster
        .members()
        .iter()
        .filter(|m| !removed.contains(&m.leaf))
        .map(|m| m.signature_key.clone())
        .collect();
    let remaining = keys.len();
    let mut added = 0usize;
    for add in staged.add_proposals() {
        let leaf = add.add_proposal().key_package().leaf_node();
        if !keys.insert(leaf.signature_key().as_slice().to_vec()) {
            return Err(PolicyViolation::DuplicateIdentityKey {
                identity: display_identity(leaf.credential())?,
            });
        }
        added += 1;
    }
    let would_have = remaining + added;
    if would_have > rules.max_members as usize {
        return Err(PolicyViolation::CallFull {
            max: rules.max_members,
            would_have,
        });
    }
    Ok(())
}
