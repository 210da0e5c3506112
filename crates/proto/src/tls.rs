//! What the control channel's TLS layer must agree on between client and relay.

/// The ALPN protocol id of the control channel (spec CP-TLS-2).
pub const ALPN: &[u8] = b"blindcall/1";

/// SHA-256 fingerprint of a DER certificate as `AB:CD:...`: the form the relay prints for its
/// certificate and a client pins.
pub fn cert_fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_colon_separated_upper_hex_sha256() {
        // SHA-256 of the empty string.
        let fp = cert_fingerprint(b"");
        assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14"));
        assert_eq!(fp.len(), 32 * 3 - 1);
    }
}
