//! The `blindcall-relay` binary: development certificate, admission, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use blindcall_proto::{Body, Refused, RefusedReason, Role};
use common::SECRET;
use common::tls::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

// covers: OPS-DEV-1, OPS-SHUT-1, OPS-MEDIA-2
#[test]
fn the_binary_serves_tls_and_stops_on_sigterm() {
    let cert_path =
        std::env::temp_dir().join(format!("blindcall-bin-cert-{}.pem", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindcall-relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dev-self-signed",
            "--log",
            "warn",
        ])
        .arg("--dev-cert-out")
        .arg(&cert_path)
        .env("BLINDCALL_TOKEN_SECRET", hex::encode(SECRET))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let line = |what: &str| {
        rx.recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("timed out waiting for the binary to print {what}"))
    };
    let fp = line("the fingerprint");
    let fp = fp
        .strip_prefix("development certificate SHA-256: ")
        .unwrap_or_else(|| panic!("{fp}"))
        .to_string();
    assert!(line("the PEM path").contains("PEM written to"));
    let addr = line("the listen address");
    let addr: std::net::SocketAddr = addr.strip_prefix("listening on ").unwrap().parse().unwrap();
    // The operators' binary runs the media forwarder by default.
    assert_eq!(
        line("the media forwarder"),
        "media forwarder attached on 127.0.0.1"
    );
    // The written PEM is the certificate the relay serves, and its fingerprint is the printed one.
    let cert = CertificateDer::from_pem_file(&cert_path).unwrap();
    std::fs::remove_file(&cert_path).unwrap();
    assert_eq!(blindcall_relay::server::tls::fingerprint(&cert), fp);
    run(async {
        let mut c = TlsClient::connect(addr, &cert).await;
        let room = b"room-bin";
        assert!(matches!(
            c.hello(room, &token(room, Role::HOST, 1), "h").await,
            Body::HelloAck(_)
        ));
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let (bodies, ending) = c.closed("goodbye after SIGTERM").await;
        assert_eq!(
            bodies,
            vec![Body::Refused(Refused {
                reason: RefusedReason::SHUTTING_DOWN
            })]
        );
        assert_eq!(ending, Ending::Clean);
    });
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary to exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
