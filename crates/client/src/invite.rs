//! Invites: a secret the host's client makes and shares out of band (its part of the link
//! after `#` never reaches the relay), with which a joiner proves its KeyPackage was made by
//! someone the host invited. The relay cannot forge the proof, so it cannot get anyone added.

use std::fmt;

use ring::{hkdf, hmac, rand::SecureRandom as _};
use zeroize::{Zeroize, Zeroizing};

/// Scheme and path every invite link starts with.
pub const LINK_PREFIX: &str = "blindcall:invite?";
/// Length of the invite secret.
pub const SECRET_LEN: usize = 32;
/// Length of a join proof.
pub const PROOF_LEN: usize = 32;

const SALT: &[u8] = b"blindcall invite v1";
const PROOF_KEY_INFO: &[u8] = b"blindcall invite proof v1";
const PROOF_LABEL: &[u8] = b"blindcall join proof v1";
const COMMITMENT_LABEL: &[u8] = b"blindcall invite commitment v1";

/// Why an invite link could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not a `blindcall:invite?` link.
    #[error("not a blindcall invite link")]
    NotAnInvite,
    /// A version this build does not read.
    #[error("invite link version {0:?} is not supported")]
    Version(String),
    /// A required part is missing or malformed.
    #[error("invite link: {0}")]
    Malformed(&'static str),
    /// The system's random source failed.
    #[error("no randomness for a new invite")]
    Random,
}

/// The invite secret. Zeroized on drop; never printed by `Debug`.
#[derive(Clone)]
pub struct InviteSecret(Zeroizing<[u8; SECRET_LEN]>);

impl fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteSecret(..)")
    }
}

impl InviteSecret {
    /// A fresh secret from the system's random source.
    pub fn generate() -> Result<Self, InviteError> {
        let mut b = Zeroizing::new([0u8; SECRET_LEN]);
        ring::rand::SystemRandom::new()
            .fill(&mut b[..])
            .map_err(|_| InviteError::Random)?;
        Ok(Self(b))
    }

    fn proof_key(&self) -> hmac::Key {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                PROOF_LEN
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&self.0[..]);
        let mut key = Zeroizing::new([0u8; PROOF_LEN]);
        // ok: HKDF-SHA256 expands to 32 bytes without error (32 <= 255 * 32).
        if let Ok(okm) = prk.expand(&[PROOF_KEY_INFO], Len) {
            let _ = okm.fill(&mut key[..]);
        }
        hmac::Key::new(hmac::HMAC_SHA256, &key[..])
    }
}

/// An invite to one room: where, with which capability, and the secret.
#[derive(Clone, Debug)]
pub struct Invite {
    /// The room id (as in the capability token).
    pub room: Vec<u8>,
    /// The relay's address, if the link carries it.
    pub relay: Option<String>,
    /// A capability token for joiners, if the link carries one.
    pub token: Option<String>,
    secret: InviteSecret,
}

impl Invite {
    /// A new invite to `room` with a fresh secret.
    pub fn new(
        room: Vec<u8>,
        relay: Option<String>,
        token: Option<String>,
    ) -> Result<Self, InviteError> {
        Ok(Self {
            room,
            relay,
            token,
            secret: InviteSecret::generate()?,
        })
    }

    /// The link to share out of band:
    /// `blindcall:invite?v=1&room=<hex>[&relay=<host:port>][&token=<token>]#<hex secret>`.
    /// Everything after `#` is the secret: send the link only over a channel you trust.
    pub fn to_link(&self) -> Zeroizing<String> {
        let mut s = format!("{LINK_PREFIX}v=1&room={}", hex::encode(&self.room));
        if let Some(r) = &self.relay {
            s.push_str("&relay=");
            s.push_str(r);
        }
        if let Some(t) = &self.token {
            s.push_str("&token=");
            s.push_str(t);
        }
        s.push('#');
        let mut secret = hex::encode(&self.secret.0[..]);
        s.push_str(&secret);
        secret.zeroize();
        Zeroizing::new(s)
    }

    /// Reads a link made by [`Invite::to_link`].
    pub fn parse(link: &str) -> Result<Self, InviteError> {
        let rest = link
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or(InviteError::NotAnInvite)?;
        let (query, fragment) = rest
            .split_once('#')
            .ok_or(InviteError::Malformed("no secret after '#'"))?;
        let (mut version, mut room, mut relay, mut token) = (None, None, None, None);
        for pair in query.split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or(InviteError::Malformed("parameter without '='"))?;
            let slot = match k {
                "v" => &mut version,
                "room" => &mut room,
                "relay" => &mut relay,
                "token" => &mut token,
                _ => continue,
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(InviteError::Malformed("repeated parameter"));
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some(v) => return Err(InviteError::Version(v.to_string())),
            None => return Err(InviteError::Malformed("no version")),
        }
        let room = room
            .and_then(|r| hex::decode(r).ok())
            .filter(|r| !r.is_empty())
            .ok_or(InviteError::Malformed("room is missing or not hex"))?;
        let mut bytes = Zeroizing::new(
            hex::decode(fragment).map_err(|_| InviteError::Malformed("secret is not hex"))?,
        );
        let secret: [u8; SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| InviteError::Malformed("secret is not 32 bytes"))?;
        bytes.zeroize();
        Ok(Self {
            room,
            relay: relay.filter(|r| !r.is_empty()),
            token: token.filter(|t| !t.is_empty()),
            secret: InviteSecret(Zeroizing::new(secret)),
        })
    }

    /// The joiner's proof for its KeyPackage (`MLSMessage` bytes as published):
    /// `HMAC-SHA256(HKDF-SHA256(salt "blindcall invite v1", secret, info "blindcall invite
    /// proof v1"), "blindcall join proof v1" || uint16 len(room) || room || key_package)`.
    pub fn proof(&self, key_package: &[u8]) -> [u8; PROOF_LEN] {
        let mut ctx = hmac::Context::with_key(&self.secret.proof_key());
        ctx.update(PROOF_LABEL);
        ctx.update(
            &u16::try_from(self.room.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        ctx.update(&self.room);
        ctx.update(key_package);
        let mut out = [0u8; PROOF_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// The commitment to this invite a call's parameters carry (so every host can tell whether
    /// the invite it holds is the call's):
    /// `HMAC-SHA256(K, "blindcall invite commitment v1" || uint16 len(room) || room)`, `K` as
    /// for proofs. It reveals nothing about the secret.
    pub fn commitment(&self) -> [u8; PROOF_LEN] {
        let mut ctx = hmac::Context::with_key(&self.secret.proof_key());
        ctx.update(COMMITMENT_LABEL);
        ctx.update(
            &u16::try_from(self.room.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        ctx.update(&self.room);
        let mut out = [0u8; PROOF_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `proof` is this invite's proof for `key_package` (constant-time).
    pub fn verify(&self, key_package: &[u8], proof: &[u8]) -> bool {
        let mut msg =
            Vec::with_capacity(PROOF_LABEL.len() + 2 + self.room.len() + key_package.len());
        msg.extend_from_slice(PROOF_LABEL);
        msg.extend_from_slice(
            &u16::try_from(self.room.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        msg.extend_from_slice(&self.room);
        msg.extend_from_slice(key_package);
        hmac::verify(&self.secret.proof_key(), &msg, proof).is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: ID-INV-1
    #[test]
    fn links_round_trip_and_proofs_bind_secret_room_and_key_package() {
        let invite = Invite::new(
            b"standup".to_vec(),
            Some("127.0.0.1:4433".into()),
            Some("bct1.00ff".into()),
        )
        .unwrap();
        let link = invite.to_link();
        assert!(link.starts_with(
            "blindcall:invite?v=1&room=7374616e647570&relay=127.0.0.1:4433&token=bct1.00ff#"
        ));
        let (before, secret) = link.split_once('#').unwrap();
        assert_eq!(secret.len(), 64);
        assert!(
            !before.contains(secret),
            "the secret is only in the fragment"
        );
        let back = Invite::parse(&link).unwrap();
        assert_eq!(back.room, b"standup");
        assert_eq!(back.relay.as_deref(), Some("127.0.0.1:4433"));
        assert_eq!(back.token.as_deref(), Some("bct1.00ff"));
        let kp = b"key package bytes";
        let proof = back.proof(kp);
        assert!(invite.verify(kp, &proof));
        assert!(!invite.verify(b"another key package", &proof));
        assert!(!invite.verify(kp, &proof[..31]));
        // Another invite's secret (the relay guessing) does not verify.
        let other = Invite::new(b"standup".to_vec(), None, None).unwrap();
        assert!(!invite.verify(kp, &other.proof(kp)));
        // The same secret for another room does not verify either.
        let mut moved = back.clone();
        moved.room = b"other".to_vec();
        assert!(!invite.verify(kp, &moved.proof(kp)));
        assert_eq!(format!("{:?}", invite.secret), "InviteSecret(..)");
        // The commitment is the invite's, not the proof of anything.
        assert_eq!(invite.commitment(), back.commitment());
        assert_ne!(invite.commitment(), other.commitment());
        assert!(!invite.verify(b"", &invite.commitment()));
    }

    // covers: ID-INV-1
    #[test]
    fn malformed_links_are_typed_errors() {
        let ok = Invite::new(b"r".to_vec(), None, None).unwrap().to_link();
        let secret = ok.split_once('#').unwrap().1.to_string();
        for (link, want) in [
            ("https://example.org", InviteError::NotAnInvite),
            (
                "blindcall:invite?v=1&room=72",
                InviteError::Malformed("no secret after '#'"),
            ),
            (
                &*format!("blindcall:invite?v=2&room=72#{secret}"),
                InviteError::Version("2".into()),
            ),
            (
                &*format!("blindcall:invite?room=72#{secret}"),
                InviteError::Malformed("no version"),
            ),
            (
                &*format!("blindcall:invite?v=1&room=zz#{secret}"),
                InviteError::Malformed("room is missing or not hex"),
            ),
            (
                "blindcall:invite?v=1&room=72#abcd",
                InviteError::Malformed("secret is not 32 bytes"),
            ),
            (
                &*format!("blindcall:invite?v=1&v=1&room=72#{secret}"),
                InviteError::Malformed("repeated parameter"),
            ),
        ] {
            assert_eq!(Invite::parse(link).unwrap_err(), want, "{link}");
        }
    }
}
