//! Unit tests of `CallGroup` internals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::MlsSuite;

// covers: KS-EXP-1, KS-TR-1
#[test]
fn epoch_secret_is_the_exporter_output_and_is_derived_before_merge() {
    let now = Instant::now();
    let call = CallConfig::default();
    let alice = Client::new("alice", MlsSuite::default()).unwrap();
    let mut a = CallGroup::create(alice, &call, MemberConfig::default(), now).unwrap();
    let nk = call.sframe_suite.nk();
    assert_eq!(nk, 16);
    let e0 = a.epoch();
    assert_eq!(a.keyring_secret(e0).unwrap(), a.exporter_now(nk));
    let pc = a.self_update().unwrap();
    let predicted = pc.next.secret.expose_secret().to_vec();
    let predicted_code = SecurityCode::from_epoch_authenticator(&pc.next.authenticator, 6);
    assert_ne!(
        predicted,
        a.exporter_now(nk),
        "next-epoch key must differ from the current one"
    );
    pc.confirm(&mut a, now).unwrap();
    assert_eq!(a.exporter_now(nk), predicted);
    assert_eq!(a.keyring_secret(e0 + 1).unwrap(), predicted);
    assert_eq!(a.security_code(), predicted_code);
    // Old epoch still held (retention), with its own, different secret.
    assert_ne!(a.keyring_secret(e0).unwrap(), predicted);
}
