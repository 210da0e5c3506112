//! The relay's MLS external-sender keys in cluster mode (spec/cluster.md, CL-NODE-3): one key
//! file shared by every node, refused at start when missing or corrupt, never shown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use blindcall_relay::config::{ConfigError, RelayConfig, TlsSection};
use blindcall_relay::keyfile::{
    KeyFileDefect, load_relay_identities, new_key_file_text, parse_relay_identities,
    write_new_key_file,
};
use openmls::prelude::SignatureScheme;
use openmls_basic_credential::SignatureKeyPair;
use tls_codec::Serialize as _;

const SECRET_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fn temp_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("blindcall-keys-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn public_keys(ids: &blindcall_relay::RelayIdentities) -> Vec<(SignatureScheme, Vec<u8>)> {
    ids.iter()
        .map(|i| (i.signature_scheme(), i.signature_public_key().to_vec()))
        .collect()
}

fn pair_line(label: &str, pair: &SignatureKeyPair) -> String {
    format!(
        "{label} {}",
        hex::encode(pair.tls_serialize_detached().unwrap())
    )
}

// covers: CL-NODE-3
#[test]
fn every_node_loading_one_key_file_signs_with_the_same_external_sender_keys() {
    let path = temp_path("shared.keys");
    write_new_key_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is the owner's only");
    }
    // Two nodes load it: the same keys, one per ciphersuite's scheme.
    let a = load_relay_identities(&path).unwrap();
    let b = load_relay_identities(&path).unwrap();
    assert_eq!(public_keys(&a), public_keys(&b));
    let schemes: Vec<_> = public_keys(&a).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        schemes,
        vec![
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_SECP256R1_SHA256
        ]
    );
    // An existing file is never overwritten; a fresh file holds fresh keys.
    let again = write_new_key_file(&path).unwrap_err();
    assert!(matches!(again.defect, KeyFileDefect::Io(_)), "{again}");
    assert_eq!(
        public_keys(&load_relay_identities(&path).unwrap()),
        public_keys(&a)
    );
    let other = parse_relay_identities(&new_key_file_text().unwrap()).unwrap();
    assert_ne!(public_keys(&other), public_keys(&a));

    // Cluster mode takes the file's keys; a single relay still generates its own.
    let cluster = format!(
        "listen = \"127.0.0.1:0\"\n[cluster]\nnats = \"nats://127.0.0.1:1\"\nnode_id = \"n1\"\n\
         external_sender_key_file = \"{}\"\n",
        path.display()
    );
    let mut cfg = RelayConfig::from_toml(&cluster).unwrap();
    cfg.tls = TlsSection {
        dev_self_signed: true,
        ..TlsSection::default()
    };
    let env = |_: &str| Some(SECRET_HEX.to_string());
    let resolved = cfg.resolve(&env).unwrap();
    assert_eq!(
        public_keys(&resolved.server.ds.relay_identities),
        public_keys(&a)
    );
    cfg.cluster = None;
    let single = cfg.resolve(&env).unwrap();
    assert_ne!(
        public_keys(&single.server.ds.relay_identities),
        public_keys(&a)
    );
    std::fs::remove_file(&path).unwrap();
}

// covers: CL-NODE-3
#[test]
fn cluster_mode_refuses_a_missing_or_corrupt_key_file_naming_the_defect_not_the_key() {
    let resolve = |section: &str| {
        let mut cfg = RelayConfig::from_toml(&format!(
            "listen = \"127.0.0.1:0\"\n[cluster]\nnats = \"nats://127.0.0.1:1\"\n\
             node_id = \"n1\"\n{section}"
        ))
        .unwrap();
        cfg.tls = TlsSection {
            dev_self_signed: true,
            ..TlsSection::default()
        };
        cfg.resolve(&|_| Some(SECRET_HEX.to_string()))
    };
    // No key file configured.
    assert!(matches!(resolve(""), Err(ConfigError::NoExternalSenderKey)));
    // A file that is not there.
    let absent = temp_path("absent.keys");
    let e = resolve(&format!(
        "external_sender_key_file = \"{}\"",
        absent.display()
    ))
    .unwrap_err();
    let ConfigError::ExternalSenderKey(e) = e else {
        panic!("expected a key file error, got {e}");
    };
    assert!(matches!(e.defect, KeyFileDefect::Io(_)));
    assert!(e.to_string().contains(&absent.display().to_string()), "{e}");

    // Corrupt contents, each refused by its defect.
    let ed = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let p256 = SignatureKeyPair::new(SignatureScheme::ECDSA_SECP256R1_SHA256).unwrap();
    let other_ed = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let good_ed = pair_line("ed25519", &ed);
    let good_p256 = pair_line("p256", &p256);
    let mismatched = SignatureKeyPair::from_raw(
        SignatureScheme::ED25519,
        ed_private(&other_ed),
        ed.to_public_vec(),
    );
    let cases: Vec<(String, KeyFileDefect)> = vec![
        (format!("{good_ed}\n"), KeyFileDefect::Missing("p256")),
        (format!("{good_p256}\n"), KeyFileDefect::Missing("ed25519")),
        (
            format!("{good_ed}\n{good_ed}\n"),
            KeyFileDefect::Duplicate(2),
        ),
        (
            format!("{good_ed}\nrsa 00\n"),
            KeyFileDefect::UnknownScheme(2),
        ),
        (format!("{good_ed}\np256\n"), KeyFileDefect::BadLine(2)),
        (format!("{good_ed}\np256 zz\n"), KeyFileDefect::BadKey(2)),
        (
            format!("{good_ed}\np256 {}\n", &good_ed["ed25519 ".len()..]),
            KeyFileDefect::BadKey(2),
        ),
        (
            format!("{good_ed}\n{good_p256}00\n"),
            KeyFileDefect::BadKey(2),
        ),
        (
            format!("{}\n{good_p256}\n", pair_line("ed25519", &mismatched)),
            KeyFileDefect::Mismatch(1),
        ),
    ];
    for (i, (text, defect)) in cases.into_iter().enumerate() {
        let path = temp_path(&format!("corrupt-{i}.keys"));
        std::fs::write(&path, &text).unwrap();
        let e = resolve(&format!(
            "external_sender_key_file = \"{}\"",
            path.display()
        ))
        .unwrap_err();
        let ConfigError::ExternalSenderKey(e) = e else {
            panic!("case {i}: expected a key file error, got {e}");
        };
        assert_eq!(e.defect, defect, "case {i}");
        // The message names the file and the defect, never the key material.
        let shown = format!("{e} {e:?}");
        for line in text.lines() {
            if let Some((_, key)) = line.split_once(' ') {
                assert!(
                    key.len() < 8 || !shown.contains(key),
                    "case {i} shows a key: {shown}"
                );
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
    // Comments and blank lines are fine.
    let ok = format!("# keys\n\n{good_p256}\n  {good_ed}  \n");
    assert!(parse_relay_identities(&ok).is_ok());
}

/// The private key of an Ed25519 pair, read back from its serialization (the type does not
/// expose it): the TLS encoding is `private<V> public<V> scheme(u16)`.
fn ed_private(pair: &SignatureKeyPair) -> Vec<u8> {
    let bytes = pair.tls_serialize_detached().unwrap();
    // One length byte (32 < 64) then the 32 private bytes.
    assert_eq!(bytes[0], 32);
    bytes[1..33].to_vec()
}

// covers: CL-NODE-3
#[test]
fn the_binary_writes_a_key_file_and_refuses_cluster_mode_without_one() {
    let path = temp_path("binary.keys");
    let out = Command::new(env!("CARGO_BIN_EXE_blindcall-relay"))
        .arg("--new-external-sender-key")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, key) = line.split_once(' ').unwrap();
        assert!(!stdout.contains(key), "the key was printed");
    }
    assert!(load_relay_identities(&path).is_ok());

    // Cluster mode without the file: one line naming the setting, before NATS is tried.
    let out = Command::new(env!("CARGO_BIN_EXE_blindcall-relay"))
        .args(["--listen", "127.0.0.1:0", "--dev-self-signed", "--no-media"])
        .arg("--dev-cert-out")
        .arg(temp_path("binary-cert.pem"))
        .args(["--cluster", "nats://127.0.0.1:1", "--node-id", "n1"])
        .env("BLINDCALL_TOKEN_SECRET", SECRET_HEX)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("external_sender_key_file is required"),
        "{stderr}"
    );
    // --external-sender-key means nothing without a cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_blindcall-relay"))
        .args(["--listen", "127.0.0.1:0", "--dev-self-signed", "--no-media"])
        .arg("--external-sender-key")
        .arg(&path)
        .env("BLINDCALL_TOKEN_SECRET", SECRET_HEX)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--external-sender-key needs --cluster")
    );
    std::fs::remove_file(&path).unwrap();
}
