//! The call parameters: set by the call's creator, carried in the group context, read by every
//! member and by the relay.

use crate::rules::{AddRule, RemoveRule, Rules};

/// Group-context extension type carrying [`CallParams`] (private-use range of RFC 9420 §17.3).
pub const CALL_PARAMS_EXTENSION_TYPE: u16 = 0xF0BC;
/// Version of the [`CallParams`] encoding.
pub const CALL_PARAMS_VERSION: u16 = 2;

/// Longest host signature key accepted in the parameters (P-256 uncompressed keys are 65 bytes).
const MAX_HOST_KEY_LEN: usize = 255;
/// Most hosts a call may list.
const MAX_HOSTS: usize = 64;

/// Whether members must sign their media (see `spec/media-auth.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MediaSignatures {
    /// Members that advertise signed media must sign; frames of members that do not (e.g.
    /// other MLS implementations) play, shown as unauthenticated (default).
    #[default]
    Optional,
    /// Every member must sign; unsigned frames are treated as impersonation.
    Required,
}

impl MediaSignatures {
    fn code(self) -> u8 {
        match self {
            Self::Optional => 1,
            Self::Required => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Optional),
            2 => Some(Self::Required),
            _ => None,
        }
    }
}

/// Why call parameters could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("call parameters malformed ({field})")]
pub struct ParamsError {
    /// The offending field.
    pub field: &'static str,
}

/// The call parameters as carried in the group context (extension 0xF0BC).
///
/// Structural checks only: the SFrame suite id and the KID bit widths are validated by the
/// group layer, which knows the suites and the KID layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallParams {
    /// SFrame cipher suite id (RFC 9605 §8.1).
    pub sframe_suite: u16,
    /// Largest number of members at once.
    pub max_members: u32,
    /// S: sender-index bits of the KID.
    pub sender_bits: u8,
    /// E: epoch bits of the KID.
    pub epoch_bits: u8,
    /// Context bits of the KID (streams per sender).
    pub context_bits: u8,
    /// Who may add members.
    pub add_rule: AddRule,
    /// Who may remove other members.
    pub remove_rule: RemoveRule,
    /// Signature public keys of the hosts (the creator first).
    pub hosts: Vec<Vec<u8>>,
    /// Whether every member must sign its media.
    pub media_signatures: MediaSignatures,
    /// Commitment to the call's invite secret, when joiners must prove an invite: hosts
    /// refuse requests without a valid proof (and refuse all if they lack the invite).
    pub invite: Option<[u8; INVITE_COMMITMENT_LEN]>,
}

/// Length of an invite commitment.
pub const INVITE_COMMITMENT_LEN: usize = 32;

impl CallParams {
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

    /// Encodes the parameters (see `spec/group.md`, `CallParams`). Hosts beyond 64 and keys
    /// longer than 255 bytes cannot be encoded and are refused.
    pub fn encode(&self) -> Result<Vec<u8>, ParamsError> {
        if self.hosts.len() > MAX_HOSTS {
            return Err(ParamsError { field: "hosts" });
        }
        let mut out =
            Vec::with_capacity(17 + self.hosts.iter().map(|h| h.len() + 2).sum::<usize>());
        out.extend_from_slice(&CALL_PARAMS_VERSION.to_be_bytes());
        out.extend_from_slice(&self.sframe_suite.to_be_bytes());
        out.extend_from_slice(&self.max_members.to_be_bytes());
        out.push(self.sender_bits);
        out.push(self.epoch_bits);
        out.push(self.context_bits);
        out.push(self.add_rule.code());
        out.push(self.remove_rule.code());
        out.push(self.media_signatures.code());
        match &self.invite {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.extend_from_slice(c);
            }
        }
        // ok: at most MAX_HOSTS (64) hosts, checked above.
        out.extend_from_slice(&(self.hosts.len() as u16).to_be_bytes());
        for h in &self.hosts {
            if h.is_empty() || h.len() > MAX_HOST_KEY_LEN {
                return Err(ParamsError { field: "host_key" });
            }
            // ok: 1..=255 bytes, checked above.
            out.extend_from_slice(&(h.len() as u16).to_be_bytes());
            out.extend_from_slice(h);
        }
        Ok(out)
    }

    /// Decodes parameters; every malformed input is a typed error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, ParamsError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.u16()? != CALL_PARAMS_VERSION {
            return Err(ParamsError { field: "version" });
        }
        let sframe_suite = r.u16()?;
        let max_members = r.u32()?;
        if max_members == 0 {
            return Err(ParamsError {
                field: "max_members",
            });
        }
        let (sender_bits, epoch_bits, context_bits) = (r.u8()?, r.u8()?, r.u8()?);
        let add_rule = AddRule::from_code(r.u8()?).ok_or(ParamsError { field: "add_rule" })?;
        let remove_rule = RemoveRule::from_code(r.u8()?).ok_or(ParamsError {
            field: "remove_rule",
        })?;
        let media_signatures = MediaSignatures::from_code(r.u8()?).ok_or(ParamsError {
            field: "media_signatures",
        })?;
        let invite = match r.u8()? {
            0 => None,
            1 => {
                let mut c = [0u8; INVITE_COMMITMENT_LEN];
                c.copy_from_slice(r.take(INVITE_COMMITMENT_LEN)?);
                Some(c)
            }
            _ => return Err(ParamsError { field: "invite" }),
        };
        let count = usize::from(r.u16()?);
        if count == 0 || count > MAX_HOSTS {
            return Err(ParamsError { field: "hosts" });
        }
        let mut hosts = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            if len == 0 || len > MAX_HOST_KEY_LEN {
                return Err(ParamsError { field: "host_key" });
            }
            hosts.push(r.take(len)?.to_vec());
        }
        if r.pos != bytes.len() {
            return Err(ParamsError {
                field: "trailing_bytes",
            });
        }
        Ok(Self {
            sframe_suite,
            max_members,
            sender_bits,
            epoch_bits,
            context_bits,
            add_rule,
            remove_rule,
            hosts,
            media_signatures,
            invite,
        })
    }

    /// The parameters in a group context's extensions, if present and well formed.
    pub fn from_group_context(
        extensions: &openmls::prelude::Extensions<openmls::prelude::GroupContext>,
    ) -> Result<Self, ParamsError> {
        let raw = extensions
            .unknown(CALL_PARAMS_EXTENSION_TYPE)
            .ok_or(ParamsError {
                field: "extension_missing",
            })?;
        Self::decode(&raw.0)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParamsError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ParamsError { field: "length" })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(ParamsError { field: "truncated" })?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ParamsError> {
        let b = self.take(1)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, ParamsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ParamsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> CallParams {
        CallParams {
            sframe_suite: 4,
            max_members: 1024,
            sender_bits: 10,
            epoch_bits: 4,
            context_bits: 2,
            add_rule: AddRule::HostsOnly,
            remove_rule: RemoveRule::HostsOnly,
            hosts: vec![vec![1; 32], vec![9; 65]],
            media_signatures: MediaSignatures::Optional,
            invite: None,
        }
    }

    // covers: GRP-POL-1
    #[test]
    fn params_round_trip_and_every_malformation_is_typed() {
        let p = sample();
        let bytes = p.encode().unwrap();
        assert_eq!(CallParams::decode(&bytes).unwrap(), p);
        assert!(p.is_host(&[1; 32]) && p.is_host(&[9; 65]) && !p.is_host(&[2; 32]));
        for cut in 0..bytes.len() {
            assert!(
                CallParams::decode(&bytes[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            CallParams::decode(&extra),
            Err(ParamsError {
                field: "trailing_bytes"
            })
        );
        let mut v1 = bytes.clone();
        v1[1] = 1;
        assert_eq!(
            CallParams::decode(&v1),
            Err(ParamsError { field: "version" })
        );
        let mut bad_rule = bytes.clone();
        bad_rule[11] = 9;
        assert!(CallParams::decode(&bad_rule).is_err());
        let mut bad_sig = bytes.clone();
        bad_sig[13] = 0;
        assert_eq!(
            CallParams::decode(&bad_sig),
            Err(ParamsError {
                field: "media_signatures"
            })
        );
        let mut bad_invite = bytes.clone();
        bad_invite[14] = 2;
        assert_eq!(
            CallParams::decode(&bad_invite),
            Err(ParamsError { field: "invite" })
        );
        let mut no_hosts = bytes;
        no_hosts[15..17].copy_from_slice(&0u16.to_be_bytes());
        assert!(CallParams::decode(&no_hosts).is_err());
        // With an invite commitment.
        let with_invite = CallParams {
            invite: Some([7; INVITE_COMMITMENT_LEN]),
            ..sample()
        };
        let bytes = with_invite.encode().unwrap();
        assert_eq!(CallParams::decode(&bytes).unwrap(), with_invite);
        for cut in 0..bytes.len() {
            assert!(CallParams::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn unencodable_parameters_are_refused() {
        let mut p = sample();
        p.hosts = vec![vec![1; 300]];
        assert!(p.encode().is_err());
        p.hosts = vec![vec![1; 32]; 65];
        assert!(p.encode().is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = CallParams::decode(&bytes);
        }
    }
}
