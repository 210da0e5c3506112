//! The client's TLS 1.3 configuration and capability-token parsing.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::OptionsError;
use crate::options::TrustAnchor;

pub use blindcall_proto::{ALPN, cert_fingerprint as fingerprint};

fn normalize(fp: &str) -> String {
    fp.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Verifies the server by certificate fingerprint, and its handshake signature.
#[derive(Debug)]
struct PinnedFingerprint {
    want: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedFingerprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = normalize(&fingerprint(end_entity));
        // Fingerprints are public values; a plain comparison leaks nothing secret.
        if got == self.want {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3-only client configuration (ring provider, ALPN `blindcall/1`) for `trust`.
pub fn client_config(trust: &TrustAnchor) -> Result<Arc<rustls::ClientConfig>, OptionsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| OptionsError::TrustAnchor("TLS 1.3 unavailable"))?;
    let roots = |ders: Vec<CertificateDer<'static>>| {
        let mut store = rustls::RootCertStore::empty();
        for d in ders {
            store
                .add(d)
                .map_err(|_| OptionsError::TrustAnchor("certificate not usable as a root"))?;
        }
        if store.is_empty() {
            return Err(OptionsError::TrustAnchor("no certificate"));
        }
        Ok(store)
    };
    let mut cfg = match trust {
        TrustAnchor::CertificateDer(der) => builder
            .with_root_certificates(roots(vec![CertificateDer::from(der.clone())])?)
            .with_no_client_auth(),
        TrustAnchor::Roots(ders) => builder
            .with_root_certificates(roots(
                ders.iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
            )?)
            .with_no_client_auth(),
        TrustAnchor::Pem(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|_| OptionsError::TrustAnchor("PEM does not parse"))?;
            builder
                .with_root_certificates(roots(certs)?)
                .with_no_client_auth()
        }
        TrustAnchor::Fingerprint(fp) => {
            let want = normalize(fp);
            if want.len() != 64 {
                return Err(OptionsError::TrustAnchor(
                    "fingerprint is not a SHA-256 (32 bytes of hex)",
                ));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedFingerprint { want, provider }))
                .with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// The room id a `bct1.` capability token names (the token body is public; only the relay
/// can check its signature).
pub fn room_from_token(token: &str) -> Result<Vec<u8>, OptionsError> {
    let hex_part = token
        .trim()
        .strip_prefix("bct1.")
        .ok_or(OptionsError::MalformedToken)?;
    if hex_part.len() > 1024 {
        return Err(OptionsError::MalformedToken);
    }
    let raw = hex::decode(hex_part).map_err(|_| OptionsError::MalformedToken)?;
    match raw.as_slice() {
        [1, len, rest @ ..] if *len >= 1 && rest.len() > usize::from(*len) => {
            Ok(rest[..usize::from(*len)].to_vec())
        }
        _ => Err(OptionsError::MalformedToken),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: SDK-JOIN-2
    #[test]
    fn room_is_read_from_the_token_body_and_garbage_is_refused() {
        // version 1, room "abc", role 2, expiry, id, tag: only the room prefix matters here.
        let mut body = vec![1u8, 3, b'a', b'b', b'c', 2];
        body.extend_from_slice(&[0u8; 8 + 16 + 32]);
        let token = format!("bct1.{}", hex::encode(&body));
        assert_eq!(room_from_token(&token).unwrap(), b"abc");
        for bad in [
            "",
            "bct1.",
            "bct1.zz",
            "bct2.0103",
            "bct1.0100",
            "bct1.0203616263",
        ] {
            assert_eq!(
                room_from_token(bad),
                Err(OptionsError::MalformedToken),
                "{bad}"
            );
        }
    }

    // covers: SDK-JOIN-3
    #[test]
    fn trust_anchors_are_validated() {
        assert!(client_config(&TrustAnchor::Fingerprint("AB:CD".into())).is_err());
        assert!(client_config(&TrustAnchor::Fingerprint("AB".repeat(32))).is_ok());
        assert!(client_config(&TrustAnchor::Pem("not pem".into())).is_err());
        assert!(client_config(&TrustAnchor::Roots(vec![])).is_err());
        assert_eq!(normalize("ab:cd"), "ABCD");
    }
}
