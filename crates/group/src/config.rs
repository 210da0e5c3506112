//! Call-wide parameters (agreed by every member through the group context) and local settings.

use std::time::Duration;

use blindcall_sframe::CipherSuite as SframeSuite;
use openmls::prelude::Ciphersuite;

use crate::error::InvalidMessage;
use crate::kid::{KidError, KidLayout};
use crate::policy::{AddRule, RemoveRule};

/// Group-context extension type carrying [`CallParams`] (private-use range of RFC 9420 §17.3).
pub const CALL_PARAMS_EXTENSION_TYPE: u16 = 0xF0BC;
/// Version of the [`CallParams`] encoding.
pub const CALL_PARAMS_VERSION: u16 = 1;

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
    /// Number of 5-digit groups in the security code (1..=6, default 6).
    pub security_code_groups: u8,
    /// SFrame replay window per KID.
    pub replay_window: u64,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(10),
            path_update_after_join: Some(Duration::ZERO),
            security_code_groups: crate::code::DEFAULT_GROUPS,
            replay_window: 128,
        }
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
        })
    }

    /// Whether `signature_key` belongs to a host.
    pub fn is_host(&self, signature_key: &[u8]) -> bool {
        self.hosts.iter().any(|h| h.as_slice() == signature_key)
    }

    /// Encodes the parameters (see spec/group.md, `CallParams`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.hosts.iter().map(|h| h.len() + 2).sum::<usize>());
        out.extend_from_slice(&CALL_PARAMS_VERSION.to_be_bytes());
        out.extend_from_slice(&self.sframe_suite.id().to_be_bytes());
        out.extend_from_slice(&self.max_members.to_be_bytes());
        out.push(self.layout.sender_bits());
        out.push(self.layout.epoch_bits());
        out.push(self.layout.context_bits());
        out.push(self.add_rule.code());
        out.push(self.remove_rule.code());
        // Host count and key lengths are bounded by construction (keys are < 256 bytes).
        out.extend_from_slice(
            &u16::try_from(self.hosts.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for h in self.hosts.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&u16::try_from(h.len()).unwrap_or(0).to_be_bytes());
            if h.len() <= usize::from(u16::MAX) {
                out.extend_from_slice(h);
            }
        }
        out
    }

    /// Decodes parameters; every malformed or out-of-range input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidMessage> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u16()?;
        if version != CALL_PARAMS_VERSION {
            return Err(InvalidMessage::CallParams { field: "version" });
        }
        let suite = SframeSuite::from_id(r.u16()?).map_err(|_| InvalidMessage::CallParams {
            field: "sframe_suite",
        })?;
        let max_members = r.u32()?;
        let (s, e, c) = (r.u8()?, r.u8()?, r.u8()?);
        let layout = KidLayout::new(s, e, c).map_err(|_| InvalidMessage::CallParams {
            field: "kid_layout",
        })?;
        if max_members == 0 || KidLayout::sender_bits_for(max_members) > s {
            return Err(InvalidMessage::CallParams {
                field: "max_members",
            });
        }
        let add_rule =
            AddRule::from_code(r.u8()?).ok_or(InvalidMessage::CallParams { field: "add_rule" })?;
        let remove_rule = RemoveRule::from_code(r.u8()?).ok_or(InvalidMessage::CallParams {
            field: "remove_rule",
        })?;
        let count = r.u16()?;
        let mut hosts = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let len = r.u16()?;
            hosts.push(r.take(usize::from(len))?.to_vec());
        }
        if r.pos != bytes.len() {
            return Err(InvalidMessage::CallParams {
                field: "trailing_bytes",
            });
        }
        Ok(Self {
            sframe_suite: suite,
            layout,
            max_members,
            add_rule,
            remove_rule,
            hosts,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InvalidMessage> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(InvalidMessage::CallParams { field: "length" })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(InvalidMessage::CallParams { field: "truncated" })?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, InvalidMessage> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, InvalidMessage> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, InvalidMessage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
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
        let bytes = p.encode();
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
        bad_version[1] = 2;
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
