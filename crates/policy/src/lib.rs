//! blindcall-policy: the rules every member of a call and the relay apply to the call's MLS
//! group, in one place so both decide alike.
//!
//! Members enforce these rules before merging any commit; the relay applies the same rules
//! before sequencing one. A commit the relay sequences but members refuse would wedge the room,
//! so the relay must never sequence a commit that an honest member would refuse. This crate
//! names no key type: it reads public group state only (credentials, signature public keys,
//! the call parameters in the group context).

#![forbid(unsafe_code)]

pub mod params;
pub mod resume;
pub mod roster;
pub mod rules;

pub use params::{
    CALL_PARAMS_EXTENSION_TYPE, CALL_PARAMS_VERSION, CallParams, INVITE_COMMITMENT_LEN,
    MediaSignatures, ParamsError,
};
pub use resume::{RESUME_CHALLENGE_LEN, RESUME_LABEL, resume_sign_content};
pub use roster::{
    MAX_IDENTITY_LEN, Roster, RosterMember, SIGNS_MEDIA_CAPABILITY, check_identity_chars,
    display_identity,
};
pub use rules::{
    Actor, AddRule, PolicyViolation, ProposalKind, RemoveRule, Rules, actor_of, check_commit,
    check_proposal, external_index,
};
