//! Room capability tokens: what a connection must present to be admitted.
//!
//! A token is an operator-signed statement "the bearer may enter room R as host/guest until T".
//! Wire form (TLS presentation language):
//!
//! ```text
//! struct {
//!     uint8 version = 1;
//!     opaque room_id<1..64>;  // uint8 length prefix
//!     Role role;               // uint8: 1 host, 2 guest
//!     uint64 expires_at;       // Unix seconds
//!     opaque token_id[16];
//! } TokenBody;
//! struct { TokenBody body; opaque tag[32]; } CapabilityToken;
//! tag = HMAC-SHA256(operator_secret, "blindcall capability token v1" || TokenBody)
//! ```
//!
//! Text form: `bct1.` followed by lowercase hex of `CapabilityToken`. Verification checks the MAC
//! (constant time, over the received body bytes) before parsing anything else, then expiry, then
//! the room. Sans-IO: the caller passes the current time and the token id.

use std::fmt;

use blindcall_proto::{RefusedReason, Role};
use ring::hmac;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Text prefix of a version-1 token.
pub const TEXT_PREFIX: &str = "bct1.";
/// Token body version.
pub const TOKEN_VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Longest room id a token may carry.
pub const MAX_ROOM_ID_LEN: usize = 64;
/// Shortest operator secret accepted.
pub const MIN_SECRET_LEN: usize = 32;
const MAC_LABEL: &[u8] = b"blindcall capability token v1";

/// The operator's token-signing secret. Zeroized on drop, never printed, not `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenSecret(Vec<u8>);

impl TokenSecret {
    /// Wrap secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(bytes: Vec<u8>) -> Result<Self, TokenError> {
        if bytes.len() < MIN_SECRET_LEN {
            let len = bytes.len();
            let mut b = bytes;
            b.zeroize();
            return Err(TokenError::SecretTooShort { len });
        }
        Ok(Self(bytes))
    }

    /// Parse a hex-encoded secret (as stored in a config file).
    pub fn from_hex(text: &str) -> Result<Self, TokenError> {
        let bytes = hex::decode(text.trim()).map_err(|_| TokenError::SecretNotHex)?;
        Self::new(bytes)
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The room it admits to.
    pub room_id: Vec<u8>,
    /// Host or guest.
    pub role: Role,
    /// Last valid second (Unix time): the token is expired when `now >= expires_at`.
    pub expires_at: u64,
    /// Identifies this token (for bans and rejoins); chosen at random by the minter.
    pub token_id: [u8; 16],
}

/// Errors minting a token or loading a secret (operator mistakes, not peer input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("token secret of {len} bytes is shorter than {MIN_SECRET_LEN}")]
    SecretTooShort {
        /// Its length.
        len: usize,
    },
    /// The secret text is not hex.
    #[error("token secret is not hex")]
    SecretNotHex,
    /// The room id is empty or longer than [`MAX_ROOM_ID_LEN`].
    #[error("room id must be 1..={MAX_ROOM_ID_LEN} bytes")]
    BadRoomId,
    /// The role is not host or guest.
    #[error("unknown role {0:?}")]
    UnknownRole(Role),
}

/// Why a presented token does not admit the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// The token text or structure does not parse.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not verify under the operator's secret.
    #[error("bad token signature")]
    BadSignature,
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// The token is for another room.
    #[error("token is for another room")]
    WrongRoom,
}

impl From<TokenRefusal> for RefusedReason {
    fn from(r: TokenRefusal) -> Self {
        match r {
            TokenRefusal::Missing => RefusedReason::MISSING_TOKEN,
            TokenRefusal::Malformed => RefusedReason::MALFORMED_TOKEN,
            TokenRefusal::BadSignature => RefusedReason::BAD_SIGNATURE,
            TokenRefusal::Expired => RefusedReason::EXPIRED,
            TokenRefusal::WrongRoom => RefusedReason::WRONG_ROOM,
        }
    }
}

fn encode_body(c: &TokenClaims) -> Result<Vec<u8>, TokenError> {
    if c.room_id.is_empty() || c.room_id.len() > MAX_ROOM_ID_LEN {
        return Err(TokenError::BadRoomId);
    }
    if c.role != Role::HOST && c.role != Role::GUEST {
        return Err(TokenError::UnknownRole(c.role));
    }
    let mut out = Vec::with_capacity(1 + 1 + c.room_id.len() + 1 + 8 + 16);
    out.push(TOKEN_VERSION);
    // room_id<1..64>: a TLS vector with a uint8 length prefix.
    out.push(u8::try_from(c.room_id.len()).map_err(|_| TokenError::BadRoomId)?);
    out.extend_from_slice(&c.room_id);
    out.push(c.role.0);
    out.extend_from_slice(&c.expires_at.to_be_bytes());
    out.extend_from_slice(&c.token_id);
    Ok(out)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], TokenRefusal> {
    if input.len() < n {
        return Err(TokenRefusal::Malformed);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn decode_body(mut b: &[u8]) -> Result<TokenClaims, TokenRefusal> {
    let r = &mut b;
    if take(r, 1)? != [TOKEN_VERSION] {
        return Err(TokenRefusal::Malformed);
    }
    let len = usize::from(take(r, 1)?[0]);
    if len == 0 || len > MAX_ROOM_ID_LEN {
        return Err(TokenRefusal::Malformed);
    }
    let room_id = take(r, len)?.to_vec();
    let role = Role(take(r, 1)?[0]);
    if role != Role::HOST && role != Role::GUEST {
        return Err(TokenRefusal::Malformed);
    }
    let expires_at = u64::from_be_bytes(
        take(r, 8)?
            .try_into()
            .map_err(|_| TokenRefusal::Malformed)?,
    );
    let token_id: [u8; 16] = take(r, 16)?
        .try_into()
        .map_err(|_| TokenRefusal::Malformed)?;
    if !r.is_empty() {
        return Err(TokenRefusal::Malformed);
    }
    Ok(TokenClaims {
        room_id,
        role,
        expires_at,
        token_id,
    })
}

fn mac_input(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MAC_LABEL.len() + body.len());
    m.extend_from_slice(MAC_LABEL);
    m.extend_from_slice(body);
    m
}

/// Mint a token's text form for `claims`.
pub fn mint(secret: &TokenSecret, claims: &TokenClaims) -> Result<String, TokenError> {
    let mut bytes = encode_body(claims)?;
    let tag = hmac::sign(&secret.key(), &mac_input(&bytes));
    bytes.extend_from_slice(tag.as_ref());
    Ok(format!("{TEXT_PREFIX}{}", hex::encode(bytes)))
}

/// Verify a token's text form for entering `room_id` at Unix second `now`.
///
/// Checks, in order: present, parses (prefix, hex, length), MAC (constant time), expiry, room.
pub fn verify(
    secret: &TokenSecret,
    text: &[u8],
    room_id: &[u8],
    now_unix_secs: u64,
) -> Result<TokenClaims, TokenRefusal> {
    if text.is_empty() {
        return Err(TokenRefusal::Missing);
    }
    let hex_part = text
        .strip_prefix(TEXT_PREFIX.as_bytes())
        .ok_or(TokenRefusal::Malformed)?;
    // Bound the work before decoding: body ≤ 1+1+64+1+8+16, plus the tag.
    if hex_part.len() > 2 * (1 + 1 + MAX_ROOM_ID_LEN + 1 + 8 + 16 + TAG_LEN) {
        return Err(TokenRefusal::Malformed);
    }
    let raw = hex::decode(hex_part).map_err(|_| TokenRefusal::Malformed)?;
    if raw.len() <= TAG_LEN {
        return Err(TokenRefusal::Malformed);
    }
    let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
    hmac::verify(&secret.key(), &mac_input(body), tag).map_err(|_| TokenRefusal::BadSignature)?;
    let claims = decode_body(body)?;
    if now_unix_secs >= claims.expires_at {
        return Err(TokenRefusal::Expired);
    }
    if claims.room_id != room_id {
        return Err(TokenRefusal::WrongRoom);
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(b: u8) -> TokenSecret {
        TokenSecret::new(vec![b; 32]).unwrap()
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            room_id: b"room-1".to_vec(),
            role: Role::GUEST,
            expires_at: 1_000,
            token_id: [7; 16],
        }
    }

    // covers: ADM-TOK-1, ADM-TOK-2
    #[test]
    fn minted_token_verifies_and_text_form_is_stable() {
        let s = secret(1);
        let t = mint(&s, &claims()).unwrap();
        assert!(t.starts_with("bct1."));
        assert!(t[5..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(verify(&s, t.as_bytes(), b"room-1", 999).unwrap(), claims());
        // Deterministic: same claims, same secret, same text.
        assert_eq!(mint(&s, &claims()).unwrap(), t);
    }

    // covers: ADM-TOK-3
    #[test]
    fn each_refusal_is_typed() {
        let s = secret(1);
        let t = mint(&s, &claims()).unwrap();
        assert_eq!(verify(&s, b"", b"room-1", 0), Err(TokenRefusal::Missing));
        assert_eq!(
            verify(&s, b"bct2.00", b"room-1", 0),
            Err(TokenRefusal::Malformed)
        );
        assert_eq!(
            verify(&s, b"bct1.zz", b"room-1", 0),
            Err(TokenRefusal::Malformed)
        );
        assert_eq!(
            verify(&secret(2), t.as_bytes(), b"room-1", 0),
            Err(TokenRefusal::BadSignature)
        );
        assert_eq!(
            verify(&s, t.as_bytes(), b"room-1", 1_000),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            verify(&s, t.as_bytes(), b"room-2", 0),
            Err(TokenRefusal::WrongRoom)
        );
        // Flip one bit anywhere in the body or tag: the MAC fails.
        let raw = hex::decode(&t[5..]).unwrap();
        for i in 0..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 0x01;
            let text = format!("bct1.{}", hex::encode(&r));
            assert_eq!(
                verify(&s, text.as_bytes(), b"room-1", 0),
                Err(TokenRefusal::BadSignature),
                "byte {i}"
            );
        }
    }

    // covers: ADM-TOK-4
    #[test]
    fn secrets_are_checked_and_redacted() {
        assert_eq!(
            TokenSecret::new(vec![0; 31]).unwrap_err(),
            TokenError::SecretTooShort { len: 31 }
        );
        let s = TokenSecret::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{s:?}"), "TokenSecret(<redacted>)");
        assert!(!format!("{s:?}").contains("ab"));
        assert_eq!(
            TokenSecret::from_hex("xyz").unwrap_err(),
            TokenError::SecretNotHex
        );
        let mut c = claims();
        c.room_id = vec![1; 65];
        assert_eq!(mint(&s, &c), Err(TokenError::BadRoomId));
        c.room_id = vec![1];
        c.role = Role(9);
        assert_eq!(mint(&s, &c), Err(TokenError::UnknownRole(Role(9))));
    }

    proptest! {
        // covers: ADM-TOK-1, ADM-TOK-3
        #[test]
        fn garbage_tokens_are_refused_without_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = secret(3);
            let r = verify(&s, &raw, b"room-1", 0);
            prop_assert!(r.is_err());
            let text = format!("bct1.{}", hex::encode(&raw));
            let r = verify(&s, text.as_bytes(), b"room-1", 0);
            prop_assert!(matches!(r, Err(TokenRefusal::Malformed | TokenRefusal::BadSignature)));
        }

        // covers: ADM-TOK-1
        #[test]
        fn any_valid_claims_round_trip(
            room in proptest::collection::vec(any::<u8>(), 1..=64),
            host in any::<bool>(),
            exp in 1u64..,
            id in any::<[u8; 16]>(),
        ) {
            let s = secret(4);
            let c = TokenClaims { room_id: room.clone(), role: if host { Role::HOST } else { Role::GUEST }, expires_at: exp, token_id: id };
            let t = mint(&s, &c).unwrap();
            prop_assert_eq!(verify(&s, t.as_bytes(), &room, exp - 1).unwrap(), c);
        }
    }
}
