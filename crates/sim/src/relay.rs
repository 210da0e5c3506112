//! The relay side: the real delivery service ([`Ds`]) and a stand-in for the relay's media
//! forwarder. The forwarder is signaled exactly as the real one is (a member's `Join` through
//! the DS, the forwarder's offer back through [`Ds::send_media_signal`], the member's answer),
//! keeps one leg per member connection, routes each member's packets to every other connected
//! leg, and drops a leg at once when the DS closes its connection.

use std::collections::BTreeMap;
use std::time::Duration;

use blindcall_proto::Role;
use blindcall_relay::token::{self, TokenClaims, TokenSecret};
use blindcall_relay::{ChallengeSeed, ConnId, Ds, DsConfig, RelayIdentities, RelayIdentity};
use openmls::prelude::{BasicCredential, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;

use crate::clock::START_UNIX_MS;

/// The room every simulated participant joins.
pub const ROOM: &[u8] = b"sim-room";

/// How long a joiner may wait for a host's answer in the simulation.
pub const WAITING_ROOM_TIMEOUT: Duration = Duration::from_secs(20);

/// The relay's idle timeout, as `relay.toml` sets it by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the relay could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The relay's signature key could not be generated.
    RelayKey,
    /// A capability token could not be minted.
    Token,
    /// The call's invite could not be made.
    Invite,
    /// A participant's identity key could not be made.
    IdentityKey,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RelayKey => f.write_str("the relay's signature key could not be generated"),
            Self::Token => f.write_str("a capability token could not be minted"),
            Self::Invite => f.write_str("the call's invite could not be made"),
            Self::IdentityKey => f.write_str("a participant's identity key could not be made"),
        }
    }
}

impl std::error::Error for SetupError {}

/// One member's media leg at the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// The participant.
    pub p: usize,
    /// Its connection number.
    pub generation: u32,
    /// The forwarder's id of its streams (the connection it joined on; kept across resumes).
    pub participant: ConnId,
    /// It publishes.
    pub publish: bool,
    /// It answered the forwarder's offer.
    pub answered: bool,
    /// Packets flow.
    pub connected: bool,
}

/// The relay: the DS and the forwarder's legs.
pub struct Relay {
    /// The delivery service.
    pub ds: Ds,
    /// The forwarder's legs, by member connection.
    pub legs: BTreeMap<ConnId, Leg>,
    secret: TokenSecret,
}

impl Relay {
    /// A relay with a fresh identity and the simulation's timeouts; its resume challenges
    /// come from `seed`.
    pub fn new(seed: u64) -> Result<Self, SetupError> {
        let signer =
            SignatureKeyPair::new(SignatureScheme::ED25519).map_err(|_| SetupError::RelayKey)?;
        let identities = RelayIdentities::new([RelayIdentity::new(
            signer,
            BasicCredential::new(b"relay".to_vec()).into(),
        )]);
        let secret = TokenSecret::new([0x5a; 32].to_vec()).map_err(|_| SetupError::Token)?;
        let same = TokenSecret::new([0x5a; 32].to_vec()).map_err(|_| SetupError::Token)?;
        let mut challenge = [0x3c; 32];
        challenge[..8].copy_from_slice(&seed.to_be_bytes());
        let mut cfg = DsConfig::new(same, identities, ChallengeSeed::new(challenge));
        cfg.waiting_room_timeout = WAITING_ROOM_TIMEOUT;
        cfg.idle_timeout = Some(IDLE_TIMEOUT);
        Ok(Self {
            ds: Ds::new(cfg),
            legs: BTreeMap::new(),
            secret,
        })
    }

    /// A capability token for participant `p` (its own token id) with `role`.
    pub fn token(&self, p: usize, role: Role) -> Result<String, SetupError> {
        let mut token_id = [0u8; 16];
        token_id[..8].copy_from_slice(&(p as u64 + 1).to_be_bytes());
        token::mint(
            &self.secret,
            &TokenClaims {
                room_id: ROOM.to_vec(),
                role,
                expires_at: START_UNIX_MS / 1000 + 86_400,
                token_id,
            },
        )
        .map_err(|_| SetupError::Token)
    }
}
