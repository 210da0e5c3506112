//! Admission policy enforced by every member's client (and, with the same rules, by the relay
//! before it sequences a commit): see the `blindcall-policy` crate.

pub use blindcall_policy::{
    Actor, AddRule, PolicyViolation, ProposalKind, RemoveRule, Rules, actor_of, check_commit,
    check_proposal,
};
