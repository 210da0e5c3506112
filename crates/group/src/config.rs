//! Call-wide parameters (agreed by every member through the group context) and local settings.

use std::time::Duration;

use blindcall_sframe::CipherSuite as SframeSuite;
use openmls::prelude::Ciphersuite;

pub use blindcall_policy::{CALL_PARAMS_EXTENSION_TYPE, CALL_PARAMS_VERSION, MediaSignatures};

use crate::error::InvalidMessage;
use crate::kid::{KidError, KidLayout};
use crate::policy::{AddRule, RemoveRule, Rules};

/// MLS ciphersuite of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MlsSuite {
    /// `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (1), the default.
    #[default]
    X25519Aes128Ed25519,
    /// `MLS_128_DHKEMP256_AES128GCM_SHA256_P256` (2).
    P256Aes128,
}

impl MlsSuite {
    /// The openmls ciphersuite.
    pub fn ciphersuite(self) -> Ciphersuite {
        match self {
            Self::X25519Aes128Ed25519 => Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
            Self::P256Aes128 => Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        }
    }

    /// The IANA id (1 or 2).
    pub fn id(self) -> u16 {
        match self {
            Self::X25519Aes128Ed25519 => 1,
            Self::P256Aes128 => 2,
        }
    }

    /// The suite with IANA id `id`, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            1 => Some(Self::X25519Aes128Ed25519),
            2 => Some(Self::P256Aes128),
            _ => None,
        }
    }
}

/// The relay's identity as an MLS external sender (may only propose removals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySender {
    /// The relay's signature public key (same scheme as the MLS suite).
    pub signature_key: Vec<u8>,
    /// Identity bytes of the relay's basic credential.
    pub identity: Vec<u8>,
}

/// Settings chosen by the call's creator; every member reads them from the group context.
#[derive(Clone, Debug)]
pub struct CallConfig {
    /// MLS ciphersuite (default 1).
    pub mls_suite: MlsSuite,
    /// SFrame cipher suite (default `AES_128_GCM_SHA256_128`).
    pub sframe_suite: SframeSuite,
    /// Largest number of members at once; fixes S (default 1024, so S = 10).
    pub max_members: u32,
    /// E, epoch bits in the KID (default 4).
    pub epoch_bits: u8,
    /// Context bits in the KID: streams per sender (default 2, four streams).
    pub context_bits: u8,
    /// Who may add members (default: hosts only).
    pub add_rule: AddRule,
    /// Who may remove other members (default: hosts only; self-removal and the relay always may).
    pub remove_rule: RemoveRule,
    /// Signature public keys of further hosts; the creator is always a host.
    pub extra_hosts: Vec<Vec<u8>>,
    /// The relay as MLS external sender, if any.
    pub relay: Option<RelaySender>,
    /// Whether every member must sign its media (default: members that can, must).
    pub media_signatures: MediaSignatures,
    /// Commitment to the call's invite secret: joiners must prove the invite, and hosts refuse
    /// requests without a valid proof (spec/identity.md). `None`: no invite.
    pub invite: Option<[u8; blindcall_policy::INVITE_COMMITMENT_LEN]>,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            mls_suite: MlsSuite::default(),
            sframe_suite: SframeSuite::AES_128_GCM_SHA256_128,
            max_members: 1024,
            epoch_bits: 4,
            context_bits: 2,
            add_rule: AddRule::HostsOnly,
            remove_rule: RemoveRule::HostsOnly,
            extra_hosts: Vec::new(),
            relay: None,
            media_signatures: MediaSignatures::Optional,
            invite: None,
        }
    }
}

/// Local settings of one member; they need not agree across members.
#[derive(Clone, Copy, Debug)]
pub struct MemberConfig {
    /// How long old-epoch receive keys stay after a transition (default 10 s).
    pub retention: Duration,
    /// Delay after joining from a Welcome before the path-update commit is due (default 0 s,
    /// i.e. at the first `handle_timeout`); `None` disables it.
    pub path_update_after_join: Option<Duration>,
    /// Number of 5-digit groups in the security code (5..=6, default 6; fewer are refused).
    pub security_code_groups: u8,
    /// SFrame replay window per KID.
    pub replay_window: u64,
    /// Send-side switch barrier: after a commit that removes nobody, own senders keep the old
    /// epoch this long before switching to the new keys (default 200 ms; every receiver
    /// installs the new keys at once when it merges, so this covers the relay's fan-out of
    /// the commit). After a commit that removes anyone, senders switch at once.
    pub activation_delay: Duration,
    /// How long older epochs' receive keys stay after a commit that removed someone (default
    /// 2 s, capped by `retention`): long enough for frames in flight, short enough that the
    /// removed member's knowledge of the old keys is useless soon.
    pub removal_retention: Duration,
    /// How long after entering an epoch every member that confirms epochs must have confirmed
    /// it before the group reports `EpochUnconfirmed` (default 5 s).
    pub confirm_timeout: Duration,
    /// How often own signed media manifests are sent (default 250 ms).
    pub manifest_interval: Duration,
    /// A frame of a member that signs its media not covered by a signed manifest within this
    /// time is an impersonation (default 1 s).
    pub signature_bound: Duration,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(10),
            path_update_after_join: Some(Duration::ZERO),
            security_code_groups: crate::code::DEFAULT_GROUPS,
            replay_window: 128,
            activation_delay: Duration::from_millis(200),
            removal_retention: Duration::from_secs(2),
            confirm_timeout: Duration::from_secs(5),
            manifest_interval: Duration::from_millis(250),
            signature_bound: Duration::from_secs(1),
        }
    }
}

impl MemberConfig {
    /// Checks the settings: the security code has at least [`crate::code::MIN_GROUPS`]
    /// groups (a shorter code could be brute-forced by a relay in the middle).
    pub fn validate(&self) -> Result<(), crate::error::ApiMisuse> {
        if !(crate::code::MIN_GROUPS..=crate::code::MAX_GROUPS).contains(&self.security_code_groups)
        {
            return Err(crate::error::ApiMisuse::InvalidConfig);
        }
        Ok(())
    }
}

/// The call parameters every member agrees on, carried in the group context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallParams {
    /// SFrame suite.
    pub sframe_suite: SframeSuite,
    /// KID layout.
    pub layout: KidLayout,
    /// Largest number of members.
    pub max_members: u32,
    /// Who may add.
    pub add_rule: AddRule,
    /// Who may remove others.
    pub remove_rule: RemoveRule,
    /// Signature public keys of the hosts.
    pub hosts: Vec<Vec<u8>>,
    /// Whether every member must sign its media.
    pub media_signatures: MediaSignatures,
    /// Commitment to the call's invite secret, if joiners must prove one.
    pub invite: Option<[u8; blindcall_policy::INVITE_COMMITMENT_LEN]>,
}

impl CallParams {
    /// Builds the parameters of a new call created by the holder of `creator_key`.
    pub fn from_config(config: &CallConfig, creator_key: &[u8]) -> Result<Self, KidError> {
        let layout = KidLayout::new(
            KidLayout::sender_bits_for(config.max_members),
            config.epoch_bits,
            config.context_bits,
        )?;
        let mut hosts = vec![creator_key.to_vec()];
        for h in &config.extra_hosts {
            if !hosts.contains(h) {
                hosts.push(h.clone());
            }
        }
        Ok(Self {
            sframe_suite: config.sframe_suite,
            layout,
            max_members: config.max_members.max(1),
            add_rule: config.add_rule,
            remove_rule: config.remove_rule,
            hosts,
            media_signatures: config.media_signatures,
            invite: config.invite,
        })
    }

    /// Whether `signature_key` belongs to a host.
    pub fn is_host(&self, signature_key: &[u8]) -> bool {
        self.hosts.iter().any(|h| h.as_slice() == signature_key)
    }

    /// The membership rules these parameters set.
    pub fn rules(&self) -> Rules {
        Rules {
            add_rule: self.add_rule,
            remove_rule: self.remove_rule,
            max_members: self.max_members,
        }
    }

    /// The wire form shared with the relay.
    pub fn to_wire(&self) -> blindcall_policy::CallParams {
        blindcall_policy::CallParams {
            sframe_suite: self.sframe_suite.id(),
            max_members: self.max_members,
            sender_bits: self.layout.sender_bits(),
            epoch_bits: self.layout.epoch_bits(),
            context_bits: self.layout.context_bits(),
            add_rule: self.add_rule,
            remove_rule: self.remove_rule,
            hosts: self.hosts.clone(),
            media_signatures: self.media_signatures,
            invite: self.invite,
        }
    }

    /// Validates wire parameters: a known SFrame suite, a valid KID layout wide enough for the
    /// maximum size.
    pub fn from_wire(w: blindcall_policy::CallParams) -> Result<Self, InvalidMessage> {
        let suite =
            SframeSuite::from_id(w.sframe_suite).map_err(|_| InvalidMessage::CallParams {
                field: "sframe_suite",
            })?;
        let layout = KidLayout::new(w.sender_bits, w.epoch_bits, w.context_bits).map_err(|_| {
            InvalidMessage::CallParams {
                field: "kid_layout",
            }
        })?;
        if KidLayout::sender_bits_for(w.max_members) > w.sender_bits {
            return Err(InvalidMessage::CallParams {
                field: "max_members",
            });
        }
        Ok(Self {
            sframe_suite: suite,
            layout,
            max_members: w.max_members,
            add_rule: w.add_rule,
            remove_rule: w.remove_rule,
            hosts: w.hosts,
            media_signatures: w.media_signatures,
            invite: w.invite,
        })
    }

    /// Encodes the parameters (see spec/group.md, `CallParams`).
    pub fn encode(&self) -> Result<Vec<u8>, InvalidMessage> {
        self.to_wire()
            .encode()
            .map_err(|e| InvalidMessage::CallParams { field: e.field })
    }

    /// Decodes parameters; every malformed or out-of-range input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidMessage> {
        let wire = blindcall_policy::CallParams::decode(bytes)
            .map_err(|e| InvalidMessage::CallParams { field: e.field })?;
        Self::from_wire(wire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: GRP-POL-1
    #[test]
    fn params_round_trip_and_reject_malformed() {
        let cfg = CallConfig {
            extra_hosts: vec![vec![9; 32]],
            ..CallConfig::default()
        };
        let p = CallParams::from_config(&cfg, &[1; 32]).unwrap();
        assert_eq!(p.layout.sender_bits(), 10);
        assert!(p.is_host(&[1; 32]) && p.is_host(&[9; 32]) && !p.is_host(&[2; 32]));
        let bytes = p.encode().unwrap();
        assert_eq!(CallParams::decode(&bytes).unwrap(), p);
        for cut in 0..bytes.len() {
            assert!(
                CallParams::decode(&bytes[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(CallParams::decode(&extra).is_err());
        let mut bad_version = bytes.clone();
        bad_version[1] = 1;
        assert!(matches!(
            CallParams::decode(&bad_version),
            Err(InvalidMessage::CallParams { field: "version" })
        ));
        let mut bad_rule = bytes.clone();
        bad_rule[11] = 9;
        assert!(CallParams::decode(&bad_rule).is_err());
        let mut too_many = bytes;
        too_many[4..8].copy_from_slice(&4096u32.to_be_bytes());
        assert!(matches!(
            CallParams::decode(&too_many),
            Err(InvalidMessage::CallParams {
                field: "max_members"
            })
        ));
    }
}
