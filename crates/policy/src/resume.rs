//! The content a member signs to resume its membership (control-protocol.md, CP-RES-2): one
//! definition for the member who signs it and the relay that checks it.

use openmls::prelude::tls_codec::{self, Serialize as _, VLBytes};

/// Length of the relay's per-connection challenge (the control protocol's
/// `HelloAck.challenge`).
pub const RESUME_CHALLENGE_LEN: usize = 32;

/// The resume proof's label; MLS `SignWithLabel` prefixes it with `"MLS 1.0 "`.
pub const RESUME_LABEL: &str = "blindcall resume v1";

/// The bytes a member signs with its leaf's MLS signature key for a control-protocol `Resume`:
/// the TLS encoding of MLS's `SignContent` (RFC 9420 §5.1.2).
///
/// ```text
/// struct {
///     opaque label<V> = "MLS 1.0 blindcall resume v1";
///     opaque content<V> = challenge[32] || opaque group_id<V> || opaque room<V>
///                         || uint32 leaf || uint64 epoch;
/// } SignContent;
/// ```
///
/// `challenge` is the connection's `HelloAck.challenge`,
/// `group_id` the MLS group id, `room` the room id of the Hello, `leaf` and `epoch` as in the
/// `Resume`. The signature is `Signature.Sign(leaf signature private key, SignContent)`, so a
/// signer that signs raw bytes (openmls' `Signer::sign`) signs exactly these bytes.
pub fn resume_sign_content(
    challenge: &[u8; RESUME_CHALLENGE_LEN],
    group_id: &[u8],
    room: &[u8],
    leaf: u32,
    epoch: u64,
) -> Result<Vec<u8>, tls_codec::Error> {
    let mut content = Vec::with_capacity(RESUME_CHALLENGE_LEN + group_id.len() + room.len() + 24);
    content.extend_from_slice(challenge);
    VLBytes::new(group_id.to_vec()).tls_serialize(&mut content)?;
    VLBytes::new(room.to_vec()).tls_serialize(&mut content)?;
    leaf.tls_serialize(&mut content)?;
    epoch.tls_serialize(&mut content)?;
    let label = format!("MLS 1.0 {RESUME_LABEL}");
    let mut out = Vec::with_capacity(label.len() + content.len() + 8);
    VLBytes::new(label.into_bytes()).tls_serialize(&mut out)?;
    VLBytes::new(content).tls_serialize(&mut out)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: CP-RES-2
    #[test]
    fn the_signed_content_is_exactly_the_documented_encoding() {
        let got = resume_sign_content(&[0xaa; 32], b"gid", b"room", 7, 0x0102).unwrap();
        let label = b"MLS 1.0 blindcall resume v1";
        let mut content = vec![0xaa; 32];
        content.extend_from_slice(&[3, b'g', b'i', b'd', 4, b'r', b'o', b'o', b'm']);
        content.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut want = vec![u8::try_from(label.len()).unwrap()];
        want.extend_from_slice(label);
        want.push(u8::try_from(content.len()).unwrap());
        want.extend_from_slice(&content);
        assert_eq!(got, want);
        // Each field is bound: changing any one changes the content.
        let base = got;
        for other in [
            resume_sign_content(&[0xab; 32], b"gid", b"room", 7, 0x0102),
            resume_sign_content(&[0xaa; 32], b"gie", b"room", 7, 0x0102),
            resume_sign_content(&[0xaa; 32], b"gid", b"roon", 7, 0x0102),
            resume_sign_content(&[0xaa; 32], b"gid", b"room", 8, 0x0102),
            resume_sign_content(&[0xaa; 32], b"gid", b"room", 7, 0x0103),
            // Length prefixes keep field boundaries: "gid"+"room" ≠ "gidr"+"oom".
            resume_sign_content(&[0xaa; 32], b"gidr", b"oom", 7, 0x0102),
        ] {
            assert_ne!(other.unwrap(), base);
        }
    }
}
