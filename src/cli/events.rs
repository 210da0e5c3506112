//! How `blindcall join` reports a call: sentences and tables for people (`--events human`),
//! or one JSON object per line for programs (`--events jsonl`), each with an `event` field.

use std::time::Duration;

use blindcall_client::{
    CallStats, EndReason, Event, ImpersonationReason, InviteCheck, JoinRefusal, KeyframeCause,
    Member, Trust,
};
use serde_json::{Value, json};

use super::join::shown;

/// The output format of `blindcall join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventsFormat {
    /// Sentences and tables.
    Human,
    /// One JSON object per line (`event` names the kind).
    Jsonl,
}

/// A member in one line: name, leaf, key fingerprint, trust, role.
pub(crate) fn describe(m: &Member) -> String {
    let trust = match m.trust {
        Trust::Changed => {
            "CHANGED KEY: not the key this name had before; verify before trusting".to_string()
        }
        t => t.label().to_string(),
    };
    format!(
        "{} (leaf {}, key {}, {trust}{}{})",
        shown(&m.identity),
        m.leaf,
        m.fingerprint(),
        if m.host { ", host" } else { "" },
        if m.signs_media {
            ""
        } else {
            ", media not signed"
        }
    )
}

fn member_json(m: &Member) -> Value {
    json!({
        "identity": &*m.identity,
        "leaf": m.leaf,
        "host": m.host,
        "key": m.fingerprint(),
        "trust": m.trust.label(),
        "signs_media": m.signs_media,
    })
}

fn members_json(ms: &[Member]) -> Value {
    Value::Array(ms.iter().map(member_json).collect())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why the call ended, as a short machine word (`refused:IDLE_TIMEOUT`, ...).
fn end_word(r: &EndReason) -> String {
    match r {
        EndReason::Left => "left".into(),
        EndReason::Removed => "removed".into(),
        EndReason::Denied => "denied".into(),
        EndReason::Refused(r) => format!("refused:{r}"),
        EndReason::ConnectionLost => "connection_lost".into(),
        EndReason::ProtocolError(_) => "protocol_error".into(),
        EndReason::Diverged { .. } => "diverged".into(),
        EndReason::ResumeRefused(r) => format!("resume_refused:{r}"),
        _ => "other".into(),
    }
}

/// Why the call ended, as a sentence.
pub(crate) fn end_sentence(r: &EndReason) -> String {
    match r {
        EndReason::Left => "you left the call".into(),
        EndReason::Removed => "you were removed from the call".into(),
        EndReason::Denied => "the host did not let you in".into(),
        EndReason::Refused(r) => format!("the relay refused the connection ({r})"),
        EndReason::ConnectionLost => {
            "the connection to the relay was lost and could not be resumed".into()
        }
        EndReason::ProtocolError(e) => format!("the relay broke the protocol: {e}"),
        EndReason::Diverged { epoch, reason } => format!(
            "the others moved on from epoch {epoch} with a commit this client cannot process ({reason})"
        ),
        EndReason::ResumeRefused(r) => {
            format!("the relay refused to let you back in ({r}); join again to ask the host")
        }
        _ => "the call ended".into(),
    }
}

fn impersonation_word(r: ImpersonationReason) -> &'static str {
    match r {
        ImpersonationReason::HashMismatch => "forged",
        ImpersonationReason::NoSignature => "no_signature",
        ImpersonationReason::WrongParticipant => "wrong_participant",
        ImpersonationReason::ForeignKidOnStream => "foreign_key",
    }
}

fn refusal_sentence(r: JoinRefusal) -> &'static str {
    match r {
        JoinRefusal::MissingProof => "it did not prove the call's invite",
        JoinRefusal::InvalidProof => "its invite proof is not valid (made up or copied)",
        JoinRefusal::InviteNotHeld => "this device does not hold the call's invite",
        JoinRefusal::InvalidKeyPackage => "its key package is not valid for this call",
        JoinRefusal::AlreadyInCall => "someone with its identity key is already in the call",
        _ => "refused",
    }
}

fn name_of(m: Option<&Member>) -> String {
    m.map_or_else(|| "a former member".into(), |m| shown(&m.identity))
}

/// The event as sentences (`None`: not worth a line, e.g. the per-second health).
pub(crate) fn human(e: &Event) -> Option<String> {
    Some(match e {
        Event::Admitted { role } => format!("admitted by the relay as {role}"),
        Event::Waiting => "waiting for a host to let you in".into(),
        Event::Joined { epoch, members } => {
            let mut s = format!("joined the call at epoch {epoch}; members:");
            for m in members {
                s.push_str("\n  ");
                s.push_str(&describe(m));
            }
            s
        }
        Event::MediaConnected => "media connected".into(),
        Event::JoinRequested {
            request,
            joiner,
            invite,
        } => {
            let proof = match invite {
                InviteCheck::Valid => "proved the invite",
                _ => "no invite in this call",
            };
            format!("join request {request}: {} ({proof})", describe(joiner))
        }
        Event::JoinRefused {
            request,
            identity,
            reason,
        } => format!(
            "turned away join request {request} ({}): {}",
            identity.as_deref().map_or_else(|| "?".into(), shown),
            refusal_sentence(*reason)
        ),
        Event::MembersJoined { epoch, members } => members
            .iter()
            .map(|m| format!("epoch {epoch}: {} joined", describe(m)))
            .collect::<Vec<_>>()
            .join("\n"),
        Event::MembersLeft { epoch, members } => members
            .iter()
            .map(|m| format!("epoch {epoch}: {} left", describe(m)))
            .collect::<Vec<_>>()
            .join("\n"),
        Event::EpochChanged { epoch, code } => {
            format!("epoch {epoch}: security code {code} (the same on every screen)")
        }
        Event::EpochConsistent { epoch } => {
            format!("epoch {epoch}: every member confirmed the same keys")
        }
        Event::SendEpochActivated { .. } | Event::KeyframeRequested { .. } => return None,
        Event::DecryptHealth(_) => return None,
        Event::RoomLocked { locked } => {
            if *locked {
                "the room is locked: nobody new can ask to join".into()
            } else {
                "the room is unlocked".into()
            }
        }
        Event::Warning(w) => format!("warning: {w}"),
        Event::CallEnded { reason } => format!("call ended: {}", end_sentence(reason)),
        Event::GroupSplit { epoch, member } => format!(
            "ALERT: the relay split the call at epoch {epoch}: {} holds other keys",
            describe(member)
        ),
        Event::EpochUnconfirmed { epoch, members } => format!(
            "epoch {epoch} not confirmed in time by {}",
            members
                .iter()
                .map(|m| shown(&m.identity))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::Impersonation {
            claimed,
            participant,
            kind,
            reason,
            detected_after,
        } => format!(
            "ALERT: {kind:?} on relay participant {participant} claimed to be {} but was not ({}, after {} ms)",
            name_of(claimed.as_ref()),
            impersonation_word(*reason),
            ms(*detected_after)
        ),
        Event::SenderUnauthenticated { member, .. } => format!(
            "{} does not sign its media: its frames are from some member, not necessarily it",
            name_of(member.as_ref())
        ),
        Event::StreamUnblocked {
            member,
            participant,
            kind,
        } => format!(
            "{kind:?} of {} on relay participant {participant} is authenticated again (its signatures were only late)",
            name_of(member.as_ref())
        ),
        Event::OwnRemovalProposed { epoch } => {
            format!("the relay asked to remove you from the call (epoch {epoch})")
        }
        Event::Diverged { epoch, reason } => {
            format!("the call moved on from epoch {epoch} without this client: {reason}")
        }
        Event::Reconnecting { attempt, relay } => {
            // Relay 0 is also the only one: its lines read as with a single relay.
            let to = match relay {
                0 => String::new(),
                r => format!(" (to relay #{r} of --relay)"),
            };
            if *attempt == 1 {
                format!("lost the connection to the relay; reconnecting{to}")
            } else {
                format!("reconnecting (attempt {attempt}){to}")
            }
        }
        Event::Redirected { relay } => format!(
            "the relay cluster serves this room on node {}; connecting there (same certificate checks)",
            shown(relay)
        ),
        Event::Reconnected { away } => format!(
            "back in the call after {:.1} s away (same seat, no approval needed)",
            away.as_secs_f64()
        ),
        Event::ResumeRefused { reason } => {
            format!("the relay refused to let you back in: {reason}")
        }
        _ => return None,
    })
}

/// The event as one JSON object with an `event` field (`None`: not reported, e.g. the
/// per-second health, which the `stats` line carries).
pub(crate) fn json(e: &Event) -> Option<Value> {
    Some(match e {
        Event::Admitted { role } => json!({"event": "admitted", "role": role.to_string()}),
        Event::Waiting => json!({"event": "waiting"}),
        Event::Joined { epoch, members } => {
            json!({"event": "joined", "epoch": epoch, "members": members_json(members)})
        }
        Event::MediaConnected => json!({"event": "media_connected"}),
        Event::JoinRequested {
            request,
            joiner,
            invite,
        } => json!({
            "event": "join_requested",
            "request": request,
            "joiner": member_json(joiner),
            "invite": matches!(invite, InviteCheck::Valid),
        }),
        Event::JoinRefused {
            request,
            identity,
            reason,
        } => json!({
            "event": "join_refused",
            "request": request,
            "identity": identity,
            "reason": format!("{reason:?}"),
        }),
        Event::MembersJoined { epoch, members } => json!({
            "event": "members", "epoch": epoch, "joined": members_json(members), "left": [],
        }),
        Event::MembersLeft { epoch, members } => json!({
            "event": "members", "epoch": epoch, "joined": [], "left": members_json(members),
        }),
        Event::EpochChanged { epoch, code } => {
            json!({"event": "epoch", "epoch": epoch, "code": code.to_string()})
        }
        Event::EpochConsistent { epoch } => json!({"event": "epoch_consistent", "epoch": epoch}),
        Event::SendEpochActivated { epoch } => json!({"event": "send_epoch", "epoch": epoch}),
        Event::KeyframeRequested { cause } => json!({
            "event": "keyframe_requested",
            "cause": match cause {
                KeyframeCause::SendEpochSwitched { .. } => "send_epoch_switched",
                _ => "receiver",
            },
        }),
        Event::DecryptHealth(_) => return None,
        Event::RoomLocked { locked } => json!({"event": "room_locked", "locked": locked}),
        Event::Warning(w) => json!({"event": "warning", "message": w.to_string()}),
        Event::CallEnded { reason } => json!({"event": "ended", "reason": end_word(reason)}),
        Event::GroupSplit { epoch, member } => {
            json!({"event": "group_split", "epoch": epoch, "member": member_json(member)})
        }
        Event::EpochUnconfirmed { epoch, members } => json!({
            "event": "epoch_unconfirmed", "epoch": epoch, "members": members_json(members),
        }),
        Event::Impersonation {
            claimed,
            participant,
            kind,
            reason,
            detected_after,
        } => json!({
            "event": "impersonation",
            "claimed": claimed.as_ref().map(member_json),
            "participant": participant,
            "kind": format!("{kind:?}").to_lowercase(),
            "reason": impersonation_word(*reason),
            "detected_after_ms": ms(*detected_after),
        }),
        Event::SenderUnauthenticated {
            epoch,
            leaf,
            member,
        } => json!({
            "event": "sender_unauthenticated",
            "epoch": epoch,
            "leaf": leaf,
            "member": member.as_ref().map(member_json),
        }),
        Event::StreamUnblocked {
            member,
            participant,
            kind,
        } => json!({
            "event": "stream_unblocked",
            "member": member.as_ref().map(member_json),
            "participant": participant,
            "kind": format!("{kind:?}").to_lowercase(),
        }),
        Event::OwnRemovalProposed { epoch } => {
            json!({"event": "own_removal_proposed", "epoch": epoch})
        }
        Event::Diverged { epoch, reason } => {
            json!({"event": "diverged", "epoch": epoch, "reason": reason.to_string()})
        }
        Event::Reconnecting { attempt, relay } => {
            json!({"event": "reconnecting", "attempt": attempt, "relay": relay})
        }
        Event::Redirected { relay } => json!({"event": "redirected", "relay": relay}),
        Event::Reconnected { away } => json!({"event": "reconnected", "away_ms": ms(*away)}),
        Event::ResumeRefused { reason } => {
            json!({"event": "resume_refused", "reason": reason.to_string()})
        }
        _ => return None,
    })
}

/// The `stats` line: epoch, code, members, and frames opened and dropped per sender.
pub(crate) fn stats_json(s: &CallStats) -> Value {
    let senders: Vec<Value> = s
        .senders
        .iter()
        .map(|h| {
            json!({
                "identity": h.identity.as_deref(),
                "participant": h.participant,
                "opened": h.opened,
                "dropped": h.dropped_unexpected(),
                "verified": h.auth.verified,
                "impersonated": h.impersonated(),
            })
        })
        .collect();
    json!({
        "event": "stats",
        "epoch": s.epoch,
        "code": s.code,
        "members": s.members,
        "frames_sent": s.frames_sent,
        "frames_opened": s.frames_opened,
        "dropped": s.dropped.values().sum::<u64>(),
        "senders": senders,
        "reconnects": s.reconnects,
        "time_away_ms": ms(s.time_away),
        "frames_dropped_away": s.frames_dropped_away,
        "relay": s.relay,
        // The current connection's address: the redirect's when a node redirected there.
        "relay_addr": s
            .relay_redirect
            .clone()
            .or_else(|| s.relay_addr.map(|a| a.to_string())),
    })
}

/// The status as a short table: one line for the call, one per sender.
pub(crate) fn stats_table(s: &CallStats) -> Option<String> {
    let epoch = s.epoch?;
    let mut out = format!(
        "epoch {epoch} · code {} · {} members · sent {} frames, opened {}, dropped {}",
        s.code.as_deref().unwrap_or("-"),
        s.members,
        s.frames_sent,
        s.frames_opened,
        s.dropped.values().sum::<u64>()
    );
    if s.reconnects > 0 {
        out.push_str(&format!(
            " · reconnected {}× ({:.1} s away, {} frames not sent)",
            s.reconnects,
            s.time_away.as_secs_f64(),
            s.frames_dropped_away
        ));
    }
    if let Some(addr) = &s.relay_redirect {
        out.push_str(&format!(" · relay {} (redirected)", shown(addr)));
    } else if let Some(addr) = s.relay_addr.filter(|_| s.relay > 0 || s.reconnects > 0) {
        out.push_str(&format!(" · relay #{} {addr}", s.relay));
    }
    if !s.senders.is_empty() {
        out.push_str(&format!(
            "\n  {:<20} {:>8} {:>8} {:>9} {:>13}",
            "sender", "opened", "dropped", "verified", "impersonated"
        ));
        for h in &s.senders {
            let name = h
                .identity
                .as_deref()
                .map_or_else(|| format!("participant {}", h.participant), shown);
            out.push_str(&format!(
                "\n  {:<20} {:>8} {:>8} {:>9} {:>13}",
                name,
                h.opened,
                h.dropped_unexpected(),
                h.auth.verified,
                h.impersonated()
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use blindcall_client::ResumeRefusedReason;
    use std::sync::Arc;

    fn member(name: &str) -> Member {
        Member {
            identity: Arc::from(name),
            leaf: 2,
            host: false,
            identity_key: Arc::from(&[7u8; 32][..]),
            trust: Trust::New,
            signs_media: true,
        }
    }

    // covers: SDK-CLI-2
    #[test]
    fn each_reported_event_is_one_json_line_with_its_kind() {
        let events = [
            (
                Event::Reconnecting {
                    attempt: 2,
                    relay: 1,
                },
                "reconnecting",
            ),
            (
                Event::Reconnected {
                    away: Duration::from_millis(5_250),
                },
                "reconnected",
            ),
            (
                Event::ResumeRefused {
                    reason: ResumeRefusedReason::REMOVED,
                },
                "resume_refused",
            ),
            (
                Event::MembersLeft {
                    epoch: 4,
                    members: vec![member("eve\n{\"event\":\"x\"}")],
                },
                "members",
            ),
            (
                Event::CallEnded {
                    reason: EndReason::ResumeRefused(ResumeRefusedReason::TOO_FAR_BEHIND),
                },
                "ended",
            ),
        ];
        for (e, kind) in events {
            let line = json(&e).unwrap().to_string();
            assert!(!line.contains('\n'), "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["event"], kind, "{line}");
        }
        let v = json(&Event::Reconnected {
            away: Duration::from_millis(5_250),
        })
        .unwrap();
        assert_eq!(v["away_ms"], 5_250);
        let v = json(&Event::CallEnded {
            reason: EndReason::ResumeRefused(ResumeRefusedReason::REMOVED),
        })
        .unwrap();
        assert_eq!(v["reason"], "resume_refused:REMOVED");
        assert!(json(&Event::DecryptHealth(Vec::new())).is_none());
    }

    // covers: SDK-CLI-2
    // covers: SDK-RELAYS-5
    #[test]
    fn json_lines_name_the_relay() {
        let line = json(&Event::Reconnecting {
            attempt: 3,
            relay: 2,
        })
        .unwrap();
        assert_eq!(line["relay"], 2);
        assert_eq!(line["attempt"], 3);
        let stats = CallStats {
            relay: 1,
            relay_addr: Some("10.0.0.2:4433".parse().unwrap()),
            ..CallStats::default()
        };
        let line = stats_json(&stats);
        assert_eq!(line["relay"], 1);
        assert_eq!(line["relay_addr"], "10.0.0.2:4433");
        assert!(stats_json(&CallStats::default())["relay_addr"].is_null());
    }

    // covers: SDK-REDIR-6
    #[test]
    fn a_redirect_is_one_line_and_stats_name_the_redirected_address() {
        let e = Event::Redirected {
            relay: "node-b.example:4433".into(),
        };
        let line = json(&e).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"event": "redirected", "relay": "node-b.example:4433"})
        );
        let sentence = human(&e).unwrap();
        assert!(sentence.contains("node-b.example:4433"), "{sentence}");
        assert!(!sentence.contains('\n'));
        let stats = CallStats {
            relay: 0,
            relay_addr: Some("10.0.0.1:4433".parse().unwrap()),
            relay_redirect: Some("node-b.example:4433".into()),
            epoch: Some(2),
            ..CallStats::default()
        };
        assert_eq!(stats_json(&stats)["relay_addr"], "node-b.example:4433");
        let table = stats_table(&stats).unwrap();
        assert!(
            table.contains("relay node-b.example:4433 (redirected)"),
            "{table}"
        );
    }

    #[test]
    fn human_lines_are_sentences_not_debug_dumps() {
        let line = human(&Event::MembersLeft {
            epoch: 4,
            members: vec![member("bob")],
        })
        .unwrap();
        assert!(line.starts_with("epoch 4: bob (leaf 2, key "), "{line}");
        assert!(line.ends_with("left"), "{line}");
        let line = human(&Event::CallEnded {
            reason: EndReason::ConnectionLost,
        })
        .unwrap();
        assert!(!line.contains("ConnectionLost"), "{line}");
        assert!(human(&Event::DecryptHealth(Vec::new())).is_none());
    }
}
