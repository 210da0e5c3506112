//! Credentials and the roster: who is in the call, as the public group state says.

use std::sync::Arc;

use openmls::prelude::{BasicCredential, Credential, CredentialType, ExtensionType, PublicGroup};

/// Largest display identity in bytes.
pub const MAX_IDENTITY_LEN: usize = 255;

/// Leaf capability (extension type) a client advertises when it signs its media
/// (`spec/media-auth.md`). Receivers require signatures from leaves that advertise it.
pub const SIGNS_MEDIA_CAPABILITY: u16 = 0xF0BD;

/// Returns the display identity of a basic credential (UTF-8, 1..=255 bytes, no control or
/// bidirectional formatting characters).
pub fn display_identity(credential: &Credential) -> Result<String, crate::rules::PolicyViolation> {
    use crate::rules::PolicyViolation;
    if credential.credential_type() != CredentialType::Basic {
        return Err(PolicyViolation::InvalidCredential {
            reason: "not a basic credential",
        });
    }
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| {
        PolicyViolation::InvalidCredential {
            reason: "malformed basic credential",
        }
    })?;
    let id = basic.identity();
    if id.is_empty() || id.len() > MAX_IDENTITY_LEN {
        return Err(PolicyViolation::InvalidCredential {
            reason: "identity length not in 1..=255",
        });
    }
    let name = String::from_utf8(id.to_vec()).map_err(|_| PolicyViolation::InvalidCredential {
        reason: "identity is not UTF-8",
    })?;
    check_identity_chars(&name).map_err(|reason| PolicyViolation::InvalidCredential { reason })?;
    Ok(name)
}

/// Whether `c` may appear in a display identity: no control characters (they reach screens
/// and terminals, e.g. escape sequences) and no bidirectional formatting characters (they
/// reorder what is shown, e.g. to make one name look like another).
fn allowed_char(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}'
        )
}

/// Checks the characters of a display identity (see [`display_identity`]).
pub fn check_identity_chars(name: &str) -> Result<(), &'static str> {
    if name.chars().all(allowed_char) {
        Ok(())
    } else {
        Err("identity contains control or bidirectional formatting characters")
    }
}

/// One member of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterMember {
    /// MLS leaf index (the sender index of its SFrame KIDs).
    pub leaf: u32,
    /// Display identity from the basic credential. Not unique: two members may carry the same
    /// name; the leaf and the signature key tell them apart.
    pub identity: Arc<str>,
    /// Signature public key: the member's identity key.
    pub signature_key: Vec<u8>,
    /// Whether this member holds the host role (its key is in the call's host list).
    pub host: bool,
    /// Whether the member's leaf advertises signed media ([`SIGNS_MEDIA_CAPABILITY`]).
    pub signs_media: bool,
}

/// The members of one epoch, ordered by leaf index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    members: Vec<RosterMember>,
}

impl Roster {
    /// The roster of a public group state; `is_host` decides the host role by signature key.
    pub fn from_public_group(group: &PublicGroup, is_host: impl Fn(&[u8]) -> bool) -> Self {
        let mut members: Vec<RosterMember> = group
            .members()
            .map(|m| {
                let identity =
                    display_identity(&m.credential).unwrap_or_else(|_| String::from("<invalid>"));
                let signs_media = group.leaf(m.index).is_some_and(|leaf| {
                    leaf.capabilities()
                        .extensions()
                        .contains(&ExtensionType::Unknown(SIGNS_MEDIA_CAPABILITY))
                });
                RosterMember {
                    leaf: m.index.u32(),
                    identity: Arc::from(identity.as_str()),
                    host: is_host(&m.signature_key),
                    signature_key: m.signature_key,
                    signs_media,
                }
            })
            .collect();
        members.sort_by_key(|m| m.leaf);
        Self { members }
    }

    /// A roster of the given members (sorted by leaf; for tests and tools).
    pub fn from_members(mut members: Vec<RosterMember>) -> Self {
        members.sort_by_key(|m| m.leaf);
        Self { members }
    }

    /// The member at `leaf`, if any.
    pub fn get(&self, leaf: u32) -> Option<&RosterMember> {
        self.members
            .binary_search_by_key(&leaf, |m| m.leaf)
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// The member whose signature (identity) key is `key`, if any.
    pub fn by_key(&self, key: &[u8]) -> Option<&RosterMember> {
        self.members.iter().find(|m| m.signature_key == key)
    }

    /// All members by leaf index.
    pub fn members(&self) -> &[RosterMember] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: GRP-POL-8
    #[test]
    fn identities_with_control_or_bidi_characters_are_refused() {
        let cred = |name: &str| Credential::from(BasicCredential::new(name.as_bytes().to_vec()));
        assert_eq!(display_identity(&cred("alice")).unwrap(), "alice");
        assert_eq!(display_identity(&cred("Zoë 李")).unwrap(), "Zoë 李");
        for bad in [
            "eve\u{1b}[2J",
            "bob\nadmin",
            "a\u{7}",
            "\u{202E}ecila",
            "x\u{2066}y",
            "z\u{0085}",
        ] {
            assert!(
                matches!(
                    display_identity(&cred(bad)),
                    Err(crate::PolicyViolation::InvalidCredential { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
