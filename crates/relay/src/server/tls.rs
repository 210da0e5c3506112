//! TLS 1.3 server configuration: PEM loading, development self-signed certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

pub use blindcall_proto::{ALPN, cert_fingerprint as fingerprint};

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no certificate, or a certificate does not parse.
    #[error("{path}: no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file holds no private key.
    #[error("{path}: no PEM private key")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate/key pair (e.g. key does not match, unsupported type).
    #[error("certificate or key refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the self-signed certificate's PEM failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A self-signed development certificate and its key.
pub struct DevCert {
    der: CertificateDer<'static>,
    pem: String,
    /// PKCS#8 private key, zeroized on drop (rustls keeps its own copy in the server config).
    key_der: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DevCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCert")
            .field("sha256", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl DevCert {
    /// The certificate, DER-encoded (what a client adds to its trust roots).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM-encoded.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// SHA-256 of the DER certificate, as colon-separated upper-case hex (what clients pin).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }

    /// Write the certificate's PEM (not the key) to `path`.
    pub fn write_pem(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, self.pem.as_bytes()).map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub(crate) fn rustls_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::Pkcs8(self.key_der.to_vec().into()),
        )
    }
}

/// Generate a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses).
pub fn generate_dev_cert(names: &[String]) -> Result<DevCert, TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok(DevCert {
        der: ck.cert.der().clone(),
        pem: ck.cert.pem(),
        key_der: zeroize::Zeroizing::new(ck.signing_key.serialize_der()),
    })
}

/// Load a PEM certificate chain and private key.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert.to_path_buf(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoPrivateKey {
        path: key.to_path_buf(),
    })?;
    Ok((certs, key_der))
}

/// A TLS 1.3-only server configuration (ring provider, ALPN `blindcall/1`, no client auth).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS 1.3-only client configuration trusting exactly `root` (for tests and tools that
/// connect to a relay with a development certificate).
pub fn client_config_trusting(
    root: &CertificateDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: OPS-DEV-1
    #[test]
    fn dev_cert_pem_round_trips_and_fingerprint_is_sha256_of_der() {
        let dev = generate_dev_cert(&["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let path = std::env::temp_dir().join(format!(
            "blindcall-dev-cert-{}-{:?}.pem",
            std::process::id(),
            std::thread::current().id()
        ));
        dev.write_pem(&path).unwrap();
        let pem = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(&der, dev.der());
        let fp = dev.fingerprint();
        let digest = ring::digest::digest(&ring::digest::SHA256, dev.der());
        let want: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(fp, want.join(":"));
        assert_eq!(fp.len(), 32 * 3 - 1);
        // The key is not in the PEM written for clients, and the DevCert prints no key.
        assert!(!String::from_utf8(pem).unwrap().contains("PRIVATE KEY"));
        assert!(!format!("{dev:?}").contains("PRIVATE"));
        // A fresh certificate per start.
        let other = generate_dev_cert(&["localhost".to_string()]).unwrap();
        assert_ne!(other.fingerprint(), fp);
        // The pair is usable by rustls.
        let (certs, key) = dev.rustls_parts();
        server_config(certs, key).unwrap();
    }

    // covers: OPS-CFG-1
    #[test]
    fn pem_files_load_or_fail_with_the_path() {
        let dir = std::env::temp_dir();
        let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id());
        let cert = dir.join(format!("blindcall-cert-{tag}.pem"));
        let key = dir.join(format!("blindcall-key-{tag}.pem"));
        let ck = rcgen::generate_simple_self_signed(vec!["relay.example".to_string()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let (certs, k) = load_pem(&cert, &key).unwrap();
        assert_eq!(certs.len(), 1);
        server_config(certs, k).unwrap();
        // Swapped files: no certificate in the key file.
        assert!(matches!(
            load_pem(&key, &cert),
            Err(TlsError::NoCertificate { path }) if path == key
        ));
        std::fs::write(&key, b"not pem").unwrap();
        assert!(matches!(
            load_pem(&cert, &key),
            Err(TlsError::NoPrivateKey { path }) if path == key
        ));
        std::fs::remove_file(&cert).unwrap();
        std::fs::remove_file(&key).unwrap();
    }
}
