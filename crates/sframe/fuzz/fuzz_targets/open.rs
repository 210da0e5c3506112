//! `Receiver::open_in_place` on arbitrary bytes with fixed keys for every suite: never panics,
//! and never accepts a frame it did not see sealed (forgery needs the key). The first input
//! byte picks the metadata length.
#![no_main]

use std::sync::Mutex;

use blindcall_sframe::{BaseKey, CipherSuite, Kid, Receiver, ReceiverConfig};
use libfuzzer_sys::fuzz_target;

static RX: Mutex<Option<Receiver>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&md_len, rest)) = data.split_first() else {
        return;
    };
    let md_len = usize::from(md_len % 32).min(rest.len());
    let (metadata, frame) = rest.split_at(md_len);
    let mut guard = RX.lock().unwrap_or_else(|e| e.into_inner());
    let rx = guard.get_or_insert_with(|| {
        let mut rx = Receiver::new(ReceiverConfig::default());
        let key = BaseKey::new(&[0x42; 16]);
        // KIDs 0..8 (inline form) and 0x123 map to the eight suites.
        for (i, suite) in CipherSuite::ALL.into_iter().enumerate() {
            rx.add_key(suite, Kid(i as u64), &key).expect("valid key");
        }
        rx.add_key(CipherSuite::AES_128_GCM_SHA256_128, Kid(0x123), &key)
            .expect("valid key");
        rx
    });
    let mut buf = frame.to_vec();
    if let Ok(opened) = rx.open_in_place(metadata, &mut buf) {
        // Only reachable with a tag guessed right; with 4-byte tags that is 2^-32 per try.
        assert!(opened.plaintext.len() <= frame.len());
    }
});
