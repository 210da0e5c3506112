//! The relay's logs: tokens appear only by id, never as text; no secret material.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use common::tls::*;
use common::{SECRET, mint, mint_with};

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// covers: OPS-LOG-1
#[test]
fn logs_name_tokens_by_id_only() {
    run(logs_name_tokens_by_id_only_body());
}

async fn logs_name_tokens_by_id_only_body() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // The only test in this binary: a global subscriber sees every relay task's logs.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let relay = start_relay(|_| {}).await;
    let room = b"room-log";
    let host_token = mint(room, Role::HOST, now_secs() + 600, 0x5a);
    let mut host = relay.client().await;
    assert!(matches!(
        host.hello(room, &host_token, "host").await,
        Body::HelloAck(_)
    ));
    let forged = mint_with(&[7; 32], room, Role::GUEST, now_secs() + 600, 0x6b);
    expect_refused(&relay, room, &forged, RefusedReason::BAD_SIGNATURE).await;
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("admitted"), "{text}");
    assert!(
        text.contains(&hex::encode([0x5a; 16])),
        "token id logged: {text}"
    );
    assert!(text.contains("BAD_SIGNATURE"), "{text}");
    for secret in [
        String::from_utf8(host_token.clone()).unwrap(),
        String::from_utf8(forged.clone()).unwrap(),
        hex::encode(&host_token[5..]),
        hex::encode(SECRET),
    ] {
        assert!(!text.contains(&secret), "secret material in logs");
    }
    assert!(!text.contains("bct1."), "token text in logs");
}
