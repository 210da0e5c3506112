//! What the SDK tests against the embedded relay share: their runtime, the room's invite,
//! and waiting for an event.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use blindcall_client::{Event, Events, Invite};

/// A two-thread runtime (the machine CI runs on has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The room's invite (every participant of these tests holds it, as if shared out of band).
pub fn room_invite() -> Invite {
    static INVITE: std::sync::OnceLock<Invite> = std::sync::OnceLock::new();
    INVITE
        .get_or_init(|| Invite::new(b"room".to_vec(), None, None).unwrap())
        .clone()
}

/// The next event matching `pred` within `wait`; panics naming `what` when the stream ends
/// or the time runs out.
pub async fn next_event(
    events: &mut Events,
    wait: Duration,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let fut = async {
        loop {
            match events.next().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for {what}"))
}
