//! The end-of-call report of the scripted scenario: what everyone sent, received, opened and
//! dropped; epochs and security codes; rekey latency; relay counters; and the relay-plaintext
//! check over everything the relay held after transport decryption.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use blindcall_client::{CallStats, MediaKind};
use blindcall_transport::CountersSnapshot;
use serde::Serialize;

use crate::recorder::{CallLogData, MembershipChange, SentFrame, kind_slot};

/// A participant's part in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Created the call and approved the others.
    Host,
    /// Joined and stayed.
    Member,
    /// Joined, then left on its own.
    Left,
    /// Joined, then the host removed it.
    Removed,
    /// Joined late.
    Late,
    /// Stayed, but its network dropped for a few seconds: it reconnected and resumed its
    /// membership by itself.
    Dropped,
}

/// Per-participant results.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    /// Name.
    pub name: String,
    /// Part in the script.
    pub fate: Fate,
    /// Frames sealed and sent (audio, video).
    pub sent_audio: u64,
    /// Video frames sent.
    pub sent_video: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Frames received complete or dropped (opened + every drop).
    pub frames_received: u64,
    /// Frames opened.
    pub opened: u64,
    /// Frames dropped, by cause.
    pub dropped: BTreeMap<String, u64>,
    /// Epochs this participant entered.
    pub epochs_seen: Vec<u64>,
    /// Frames sent while it was a member, after its media to that sender was up, not opened
    /// (must be 0).
    pub missing: u64,
    /// Frames sealed in its epochs before its subscription to that sender carried media
    /// (the relay had not yet negotiated the leg): not a key problem, reported.
    pub before_media: u64,
    /// Frames still in flight when it or their sender left or was removed (never delivered):
    /// sealed after the last frame of that stream it opened.
    pub in_flight_at_departure: u64,
    /// Frames lost in transport: packets missing at this receiver, so the depacketizer gave
    /// the frame up (`Incomplete`); at most the receiver's count of such frames.
    pub lost_in_transport: u64,
    /// Video frames of senders it chose not to watch (its video selection left them out):
    /// the relay did not send them; not missing.
    pub unselected_video: u64,
    /// The first missing frames (sender/kind/seq/epoch), for diagnosis.
    pub missing_frames: Vec<String>,
    /// Media events its transport dropped (the call task fell behind).
    pub transport_events_dropped: u64,
    /// Frames it opened that were sealed outside its membership (must be 0).
    pub opened_outside_membership: u64,
    /// Warnings the call reported.
    pub warnings: Vec<String>,
    /// Sender authentication of the frames it received.
    pub auth: AuthReport,
    /// Times it reconnected and resumed its membership.
    pub reconnects: u64,
    /// Time away from the call (connection lost → resumed), milliseconds.
    pub time_away_ms: f64,
    /// Frames it published while away: dropped before sealing, never sent.
    pub not_sent_while_away: u64,
    /// Frames sent to it, or by it, while it or their sender was away (network dropped →
    /// media flowing again): lost with the network, not missing.
    pub lost_while_away: u64,
    /// Frames refused at this receiver as unsigned because it or their sender was away: the
    /// manifests vouching for them were lost with the control connection (a provisional
    /// block, lifted by the next manifest after the resume).
    pub unverified_while_away: u64,
}

/// Sender authentication at one receiver: how the frames it received were vouched for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthReport {
    /// Frames a signed manifest of their sender verified (on arrival or afterwards).
    pub verified: u64,
    /// Frames delivered before their manifest arrived (play, then verify).
    pub delivered_pending: u64,
    /// Frames delivered from senders that do not sign their media.
    pub unauthenticated: u64,
    /// Frames taken for impersonation (refused, or flagged after delivery).
    pub impersonated: u64,
    /// Of which with evidence: a manifest of the claimed sender contradicted them (another
    /// hash, another participant's stream) or their stream was pinned to another member.
    /// Never happens in an honest call, however loaded.
    pub contradicted: u64,
    /// Impersonation detection latency, median (ms; `None` without detections).
    pub detection_p50_ms: Option<f64>,
    /// Impersonation detection latency, 99th percentile (ms).
    pub detection_p99_ms: Option<f64>,
    /// Signature wait (frame opened → its manifest), median (ms).
    pub signature_wait_p50_ms: Option<f64>,
    /// Signature wait, 99th percentile (ms).
    pub signature_wait_p99_ms: Option<f64>,
    /// Messages of other members it refused (bad signature, stale epoch, ...).
    pub peer_messages_refused: u64,
    /// Per sender stream (its identity, or the relay's participant id) whose frames were
    /// taken for impersonation: the counters by reason, for diagnosis.
    pub flagged: BTreeMap<String, String>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

impl AuthReport {
    fn of(s: &CallStats) -> Self {
        Self {
            verified: s.senders.iter().map(|h| h.auth.verified).sum(),
            delivered_pending: s.senders.iter().map(|h| h.delivered_pending).sum(),
            unauthenticated: s.senders.iter().map(|h| h.delivered_unauthenticated).sum(),
            impersonated: s.senders.iter().map(|h| h.impersonated()).sum(),
            contradicted: s
                .senders
                .iter()
                .map(|h| h.auth.forged + h.auth.wrong_participant + h.auth.foreign)
                .sum(),
            detection_p50_ms: ms(s.detection_latency.p50),
            detection_p99_ms: ms(s.detection_latency.p99),
            signature_wait_p50_ms: ms(s.signature_wait.p50),
            signature_wait_p99_ms: ms(s.signature_wait.p99),
            peer_messages_refused: s.peer_messages_refused.values().sum(),
            flagged: s
                .senders
                .iter()
                .filter(|h| h.impersonated() > 0)
                .map(|h| {
                    let who = h
                        .identity
                        .as_deref()
                        .map_or_else(|| format!("participant {}", h.participant), str::to_string);
                    let c = &h.auth;
                    let what = format!(
                        "forged={} no_signature={} wrong_participant={} foreign={} blocked={}",
                        c.forged, c.no_signature, c.wrong_participant, c.foreign, c.blocked
                    );
                    (who, what)
                })
                .collect(),
        }
    }
}

/// One epoch's security codes.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// Epoch.
    pub epoch: u64,
    /// Who entered it.
    pub members: Vec<String>,
    /// The code (the first seen).
    pub code: String,
    /// Whether every member showed the same code.
    pub codes_match: bool,
}

/// Rekey latency: commit sent → every member on the new epoch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub samples: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
}

/// What the relay forwarded.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RelayReport {
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Packets forwarded to subscribers.
    pub packets_out: u64,
    /// Payload bytes forwarded.
    pub bytes_out: u64,
    /// Packets dropped (no subscriber, queue full, leg closed, write failed).
    pub dropped: u64,
    /// Of which: a publisher's packet had no subscriber leg yet (e.g. alone in the call).
    pub dropped_no_subscriber: u64,
    /// Of which: a subscriber leg's queue was full.
    pub dropped_queue_full: u64,
    /// Of which: waited past the leg's delay bound (the machine could not keep up).
    pub dropped_late: u64,
    /// Of which: the leg was being torn down or its write failed (subscriber gone or not yet
    /// connected).
    pub dropped_leg_closed_or_write_failed: u64,
    /// Packet copies not sent because the subscriber's video selection left the publisher out.
    pub unsubscribed: u64,
    /// Keyframe requests forwarded upstream.
    pub keyframe_requests: u64,
    /// Packets copied to the plaintext-check tap / missed by it.
    pub tapped: u64,
    /// Packets the tap missed (the check would be incomplete).
    pub tap_dropped: u64,
}

/// The relay-plaintext check.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PlaintextCheck {
    /// Plaintext frames searched for.
    pub frames: usize,
    /// Plaintext bytes.
    pub plaintext_bytes: usize,
    /// RTP payloads the relay received (SRTP removed).
    pub rtp_payloads: usize,
    /// Control frames the relay read or wrote (TLS removed), from the relay's control tap.
    pub control_messages: usize,
    /// 16-byte plaintext windows found in them.
    pub leaks: usize,
}

/// The kill of the room's home node, as the scenario saw it (`blindcall demo --cluster`).
#[derive(Debug, Clone)]
pub struct FailoverRecord {
    /// The killed node.
    pub node: String,
    /// The node the host resumed on.
    pub to: Option<String>,
    /// The nodes' lease.
    pub lease: Duration,
    /// The kill.
    pub killed_at: Instant,
    /// Every member resumed and media flowing again between everyone.
    pub back_at: Instant,
    /// The members at the kill.
    pub members: BTreeSet<String>,
    /// The epoch before the kill.
    pub epoch_before: u64,
    /// The epoch once media flowed again.
    pub epoch_after: u64,
}

/// The failover in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// The killed node.
    pub node: String,
    /// The node that took the room (where the host resumed).
    pub to: Option<String>,
    /// The nodes' lease, milliseconds.
    pub lease_ms: f64,
    /// Kill → every member resumed and media flowing again both ways between everyone,
    /// milliseconds.
    pub media_back_ms: f64,
    /// Members at the kill.
    pub members: usize,
    /// The epoch before and after (a failover changes no key).
    pub epoch_before: u64,
    /// See `epoch_before`.
    pub epoch_after: u64,
}

/// Frames sent this long before a node was killed may still have been in flight through it
/// (sealed, not yet forwarded): lost with it, shown apart like frames lost while away.
pub const IN_FLIGHT: Duration = Duration::from_millis(500);

/// Target of the failover check: media opening again at every member within this of the kill.
pub const FAILOVER_TARGET: Duration = Duration::from_secs(10);

/// Process CPU over the media part of a benchmark run (relay and all participants together).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuReport {
    /// Participants.
    pub participants: usize,
    /// Wall time of the measured media part, seconds.
    pub media_seconds: f64,
    /// CPU time (user + system) of the whole process in it, seconds.
    pub cpu_seconds: f64,
    /// CPU milliseconds per participant per second of call (relay share included).
    pub cpu_ms_per_participant_second: f64,
}

/// One named pass/fail check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Numbers behind it.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Per participant.
    pub participants: Vec<ParticipantReport>,
    /// Per epoch.
    pub epochs: Vec<EpochReport>,
    /// Rekey latency.
    pub rekey_latency: Latency,
    /// Media latency: frame sealed → the same frame opened by a receiver (every opened frame).
    pub frame_latency: Latency,
    /// Process CPU (benchmark script only).
    pub cpu: Option<CpuReport>,
    /// Relay counters.
    pub relay: RelayReport,
    /// Plaintext check.
    pub plaintext: PlaintextCheck,
    /// The home node's kill (`--cluster`).
    pub failover: Option<FailoverReport>,
    /// Every check.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
}

/// What [`analyze`] reads.
pub struct Inputs<'a> {
    /// The shared recorder.
    pub log: &'a CallLogData,
    /// Parts in the script.
    pub fates: &'a BTreeMap<String, Fate>,
    /// Final counters per participant.
    pub stats: &'a BTreeMap<String, CallStats>,
    /// Warnings per participant.
    pub warnings: &'a BTreeMap<String, Vec<String>>,
    /// Relay forwarding counters.
    pub forwarded: CountersSnapshot,
    /// RTP payloads the relay received.
    pub payloads: &'a [Vec<u8>],
    /// Control frames as the relay read and wrote them (its control tap, TLS removed).
    pub control: &'a [Vec<u8>],
    /// Run time.
    pub duration: Duration,
    /// Process CPU over the media part, when measured.
    pub cpu: Option<CpuReport>,
    /// Per participant whose network dropped: from the drop to its media flowing again
    /// both ways.
    pub away: &'a BTreeMap<String, Vec<(Instant, Instant)>>,
    /// The home node's kill (`--cluster`): every member was away from it until `back_at`.
    pub failover: Option<&'a FailoverRecord>,
    /// Participants did not sign their media.
    pub unsigned_media: bool,
}

/// Whether every receiver in `active` opened the last frame every other member of `active`
/// sent (the media path has drained). Video from senders a receiver did not select is not
/// awaited.
pub fn drained(log: &CallLogData, active: &BTreeSet<String>) -> bool {
    let last: Vec<(&str, u8, u64)> = log
        .last_sent()
        .filter(|(s, _, _)| active.contains(*s))
        .collect();
    active.iter().all(|r| {
        last.iter().all(|&(s, k, seq)| {
            s == r.as_str()
                || (k == 1 && log.video_excluded(r, s))
                || log.last_opened(r, s, k).is_some_and(|g| g >= seq)
        })
    })
}

/// Whether every receiver in `active` opened audio and video from every other member of
/// `active` (every subscription carries media; video only from senders it selected).
pub fn all_subscribed(log: &CallLogData, active: &BTreeSet<String>) -> bool {
    active.iter().all(|r| {
        active.iter().all(|s| {
            s == r
                || (log.last_opened(r, s, 0).is_some()
                    && (log.last_opened(r, s, 1).is_some() || log.video_excluded(r, s)))
        })
    })
}

/// Whether `who` and every other member of `active` opened a frame of each other sealed
/// at or after `since` (media flows both ways again).
pub fn flowing_since(
    log: &CallLogData,
    who: &str,
    active: &BTreeSet<String>,
    since: Instant,
) -> bool {
    let mut heard: BTreeSet<(&str, &str)> = BTreeSet::new();
    for o in log.opened.iter().filter(|o| o.at >= since) {
        if &*o.receiver == who || &*o.sender == who {
            heard.insert((&o.receiver, &o.sender));
        }
    }
    active
        .iter()
        .filter(|o| o.as_str() != who)
        .all(|o| heard.contains(&(who, o.as_str())) && heard.contains(&(o.as_str(), who)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Counts 16-byte windows of any needle that occur in any haystack item.
pub fn plaintext_leaks(needles: &[&[u8]], haystack: &[&[u8]]) -> usize {
    // Index every needle's 8-byte grams at offsets 0, 8, 16, ...: any 16-byte window of a
    // needle fully contains one of them, so scanning every haystack offset finds every
    // candidate; candidates are then extended to confirm a 16-byte common run.
    let mut index: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in needles.iter().enumerate() {
        let mut off = 0;
        while off + 8 <= n.len() {
            let mut g = [0u8; 8];
            g.copy_from_slice(&n[off..off + 8]);
            index
                .entry(u64::from_le_bytes(g))
                .or_default()
                .push((i, off));
            off += 8;
        }
    }
    let mut leaks = 0;
    for h in haystack {
        if h.len() < 16 {
            continue;
        }
        for j in 0..=h.len() - 8 {
            let mut g = [0u8; 8];
            g.copy_from_slice(&h[j..j + 8]);
            let Some(hits) = index.get(&u64::from_le_bytes(g)) else {
                continue;
            };
            for &(ni, off) in hits {
                let Some(n) = needles.get(ni) else { continue };
                // Extend the 8-byte match both ways.
                let mut back = 0;
                while back < off && back < j && n[off - back - 1] == h[j - back - 1] {
                    back += 1;
                }
                let mut fwd = 8;
                while off + fwd < n.len() && j + fwd < h.len() && n[off + fwd] == h[j + fwd] {
                    fwd += 1;
                }
                if back + fwd >= 16 {
                    if std::env::var_os("BLINDCALL_DEBUG_LEAKS").is_some() {
                        eprintln!(
                            "leak: needle {ni} len {} at {}, haystack len {} at {}: {}",
                            n.len(),
                            off - back,
                            h.len(),
                            j - back,
                            hex::encode(&n[off - back..off + fwd])
                        );
                    }
                    leaks += 1;
                }
            }
        }
    }
    leaks
}

struct Membership {
    joined_at: Option<Instant>,
    ended_at: Option<Instant>,
    epochs: BTreeSet<u64>,
}

/// Builds the report from everything recorded.
pub fn analyze(inp: Inputs<'_>) -> Report {
    let log = inp.log;
    let mut members: BTreeMap<&str, Membership> = BTreeMap::new();
    for name in inp.fates.keys() {
        members.insert(
            name,
            Membership {
                joined_at: None,
                ended_at: None,
                epochs: BTreeSet::new(),
            },
        );
    }
    for m in &log.membership {
        let Some(e) = members.get_mut(&*m.identity) else {
            continue;
        };
        match m.change {
            MembershipChange::Joined => e.joined_at = Some(m.at),
            MembershipChange::Left | MembershipChange::Removed => e.ended_at = Some(m.at),
            _ => {}
        }
    }
    for r in &log.epochs {
        if let Some(e) = members.get_mut(&*r.identity) {
            e.epochs.insert(r.epoch);
        }
    }
    // Frames per (sender, kind), sorted by seq.
    let mut sent: BTreeMap<(&str, u8), Vec<&SentFrame>> = BTreeMap::new();
    for f in &log.sent {
        sent.entry((&f.sender, kind_slot(f.kind)))
            .or_default()
            .push(f);
    }
    for v in sent.values_mut() {
        v.sort_by_key(|f| f.seq);
    }
    let mut opened: HashMap<(&str, &str, u8), BTreeSet<u64>> = HashMap::new();
    for o in &log.opened {
        opened
            .entry((&o.receiver, &o.sender, kind_slot(o.kind)))
            .or_default()
            .insert(o.seq);
    }
    let mut participants = Vec::new();
    for (name, fate) in inp.fates {
        let Some(m) = members.get(name.as_str()) else {
            continue;
        };
        let (mut missing, mut before_media, mut in_flight, mut outside) = (0, 0, 0, 0);
        let mut unselected = 0;
        // Frames a departed sender sealed in time but that arrived after this receiver merged
        // its removal are refused by design (`SenderRemoved`): in flight at departure, not lost.
        let mut refused_after_removal = inp
            .stats
            .get(name)
            .and_then(|s| {
                s.dropped
                    .iter()
                    .find(|(c, _)| c.to_string() == "SenderRemoved")
                    .map(|(_, n)| *n)
            })
            .unwrap_or(0);
        let mut incomplete = inp
            .stats
            .get(name)
            .and_then(|s| {
                s.dropped
                    .iter()
                    .find(|(c, _)| c.to_string() == "Incomplete")
                    .map(|(_, n)| *n)
            })
            .unwrap_or(0);
        let mut lost = 0;
        let mut lost_away = 0;
        let mut missing_frames = Vec::new();
        for ((sender, k), frames) in &sent {
            if *sender == name.as_str() {
                continue;
            }
            let sender_departed = members.get(sender).is_some_and(|s| s.ended_at.is_some());
            let got = opened.get(&(name.as_str(), sender, *k));
            let in_membership = |f: &SentFrame| {
                m.epochs.contains(&f.epoch)
                    && m.joined_at.is_some_and(|j| f.at >= j)
                    && m.ended_at.is_none_or(|e| f.at < e)
            };
            if let Some(got) = got {
                for f in frames.iter().filter(|f| got.contains(&f.seq)) {
                    if !m.epochs.contains(&f.epoch) || m.ended_at.is_some_and(|e| f.at > e) {
                        outside += 1;
                    }
                }
            }
            let first = got.and_then(|g| g.first().copied());
            let last = got.and_then(|g| g.last().copied());
            let excluded = *k == 1 && log.video_excluded(name, sender);
            let away = |f: &SentFrame| {
                // Frames in flight through the node when it was killed are lost with it.
                let failing_over = inp.failover.is_some_and(|o| {
                    f.at >= o.killed_at.checked_sub(IN_FLIGHT).unwrap_or(o.killed_at)
                        && f.at <= o.back_at
                });
                failing_over
                    || [name.as_str(), *sender].iter().any(|who| {
                        inp.away
                            .get(*who)
                            .is_some_and(|w| w.iter().any(|(a, b)| f.at >= *a && f.at <= *b))
                    })
            };
            for f in frames.iter().filter(|f| in_membership(f)) {
                if got.is_some_and(|g| g.contains(&f.seq)) {
                    continue;
                }
                if excluded {
                    unselected += 1;
                    continue;
                }
                if away(f) {
                    lost_away += 1;
                    continue;
                }
                match (first, last) {
                    (Some(a), _) if f.seq < a => before_media += 1,
                    (None, _) => before_media += 1,
                    (_, Some(z)) if f.seq > z && (m.ended_at.is_some() || sender_departed) => {
                        in_flight += 1
                    }
                    _ if sender_departed && refused_after_removal > 0 => {
                        refused_after_removal -= 1;
                        in_flight += 1;
                    }
                    _ if incomplete > 0 => {
                        incomplete -= 1;
                        lost += 1;
                    }
                    _ => {
                        missing += 1;
                        if missing_frames.len() < 20 {
                            missing_frames.push(format!(
                                "{sender}/{}/seq {}/epoch {}",
                                if *k == 0 { "audio" } else { "video" },
                                f.seq,
                                f.epoch
                            ));
                        }
                    }
                }
            }
        }
        let stats = inp.stats.get(name).cloned().unwrap_or_default();
        // Refused as unsigned on a stream of a sender that was away, or by a receiver that
        // was: their manifests went down with the control connection.
        let unverified_away: u64 = stats
            .senders
            .iter()
            .filter(|h| {
                inp.away.contains_key(name.as_str())
                    || inp.failover.is_some()
                    || h.identity
                        .as_deref()
                        .is_some_and(|i| inp.away.contains_key(i))
            })
            .flat_map(|h| h.dropped.iter())
            .filter(|(c, _)| c.to_string() == "Impersonated")
            .map(|(_, n)| *n)
            .sum();
        let mut dropped: BTreeMap<String, u64> = stats
            .dropped
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        // Frames the SDK opened whose synthetic content then failed the recorder's check.
        let integrity = log
            .integrity_failures
            .get(name.as_str())
            .copied()
            .unwrap_or(0);
        if integrity > 0 {
            dropped.insert("Integrity".into(), integrity);
        }
        let opened_frames = stats.frames_opened.saturating_sub(integrity);
        let drops: u64 = dropped.values().sum();
        let (sa, sv) = log
            .sent
            .iter()
            .filter(|f| &*f.sender == name.as_str())
            .fold((0, 0), |(a, v), f| match f.kind {
                MediaKind::Audio => (a + 1, v),
                MediaKind::Video => (a, v + 1),
            });
        participants.push(ParticipantReport {
            name: name.clone(),
            fate: *fate,
            sent_audio: sa,
            sent_video: sv,
            packets_received: stats.packets_received,
            frames_received: opened_frames + drops,
            opened: opened_frames,
            dropped,
            epochs_seen: m.epochs.iter().copied().collect(),
            missing,
            before_media,
            in_flight_at_departure: in_flight,
            lost_in_transport: lost,
            unselected_video: unselected,
            missing_frames,
            transport_events_dropped: stats.transport_events_dropped,
            opened_outside_membership: outside,
            warnings: inp.warnings.get(name).cloned().unwrap_or_default(),
            auth: AuthReport::of(&stats),
            reconnects: stats.reconnects,
            time_away_ms: stats.time_away.as_secs_f64() * 1e3,
            not_sent_while_away: stats.frames_dropped_away,
            lost_while_away: lost_away,
            unverified_while_away: unverified_away,
        });
    }

    // Epochs and codes.
    let mut by_epoch: BTreeMap<u64, Vec<(&str, &str, Instant)>> = BTreeMap::new();
    for r in &log.epochs {
        by_epoch
            .entry(r.epoch)
            .or_default()
            .push((&r.identity, &r.code, r.at));
    }
    let epochs: Vec<EpochReport> = by_epoch
        .iter()
        .map(|(e, v)| EpochReport {
            epoch: *e,
            members: v.iter().map(|(n, _, _)| n.to_string()).collect(),
            code: v.first().map(|(_, c, _)| c.to_string()).unwrap_or_default(),
            codes_match: v.windows(2).all(|w| w[0].1 == w[1].1),
        })
        .collect();

    // Rekey latency: earliest commit sent from epoch e → last member entering e + 1.
    let mut lat: Vec<f64> = Vec::new();
    for (e, v) in &by_epoch {
        let Some(from) = e.checked_sub(1) else {
            continue;
        };
        let sent_at = log
            .commits
            .iter()
            .filter(|c| c.from_epoch == from)
            .map(|c| c.sent_at)
            .min();
        let done = v.iter().map(|(_, _, at)| *at).max();
        if let (Some(s), Some(d)) = (sent_at, done)
            && d >= s
        {
            lat.push(d.duration_since(s).as_secs_f64() * 1e3);
        }
    }
    lat.sort_by(f64::total_cmp);
    let rekey_latency = Latency {
        samples: lat.len(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
    };

    // Frame latency: seal → open, over every opened frame.
    let sealed: HashMap<(&str, u8, u64), Instant> = log
        .sent
        .iter()
        .map(|f| ((&*f.sender, kind_slot(f.kind), f.seq), f.at))
        .collect();
    let mut fl: Vec<f64> = log
        .opened
        .iter()
        .filter_map(|o| {
            let at = sealed.get(&(&*o.sender, kind_slot(o.kind), o.seq))?;
            Some(o.at.checked_duration_since(*at)?.as_secs_f64() * 1e3)
        })
        .collect();
    fl.sort_by(f64::total_cmp);
    let frame_latency = Latency {
        samples: fl.len(),
        p50_ms: percentile(&fl, 0.5),
        p99_ms: percentile(&fl, 0.99),
        max_ms: fl.last().copied().unwrap_or(0.0),
    };

    let fw = inp.forwarded;
    let relay = RelayReport {
        packets_in: fw.packets_in,
        bytes_in: fw.bytes_in,
        packets_out: fw.packets_out,
        bytes_out: fw.bytes_out,
        dropped: fw.dropped_no_subscriber
            + fw.dropped_queue_full
            + fw.dropped_leg_closed
            + fw.dropped_write_failed
            + fw.dropped_late,
        dropped_late: fw.dropped_late,
        dropped_no_subscriber: fw.dropped_no_subscriber,
        dropped_queue_full: fw.dropped_queue_full,
        dropped_leg_closed_or_write_failed: fw.dropped_leg_closed + fw.dropped_write_failed,
        unsubscribed: fw.unsubscribed,
        keyframe_requests: fw.keyframe_requests,
        tapped: fw.tapped,
        tap_dropped: fw.tap_dropped,
    };

    let needles: Vec<&[u8]> = log
        .sent
        .iter()
        .filter_map(|f| f.plaintext.as_deref())
        .collect();
    let mut haystack: Vec<&[u8]> = inp.payloads.iter().map(Vec::as_slice).collect();
    haystack.extend(inp.control.iter().map(Vec::as_slice));
    let plaintext = PlaintextCheck {
        frames: needles.len(),
        plaintext_bytes: needles.iter().map(|n| n.len()).sum(),
        rtp_payloads: inp.payloads.len(),
        control_messages: inp.control.len(),
        leaks: plaintext_leaks(&needles, &haystack),
    };

    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            passed,
            detail,
        })
    };
    let missing: u64 = participants.iter().map(|p| p.missing).sum();
    let lost: u64 = participants.iter().map(|p| p.lost_in_transport).sum();
    let lost_away: u64 = participants.iter().map(|p| p.lost_while_away).sum();
    check(
        "every member opened every frame sent while it was a member",
        missing == 0,
        format!(
            "{missing} frames missing (after media was up, before departure; \
             {lost} more lost in transport, incomplete at the receiver; \
             {lost_away} lost with a dropped network)"
        ),
    );
    for (who, windows) in inp.away {
        let p = participants.iter().find(|p| &p.name == who);
        let reconnects = p.map_or(0, |p| p.reconnects);
        let failed_over = inp
            .failover
            .is_some_and(|o| o.members.contains(who.as_str()));
        check(
            &format!("{who} came back by itself after its network dropped"),
            reconnects == windows.len() as u64 + u64::from(failed_over)
                && p.is_some_and(|p| p.fate == Fate::Dropped && p.opened > 0),
            format!(
                "{} drop(s), {reconnects} resume(s), {:.1} s away, {} frames not sent while away",
                windows.len(),
                p.map_or(0.0, |p| p.time_away_ms / 1e3),
                p.map_or(0, |p| p.not_sent_while_away)
            ),
        );
    }
    let outside: u64 = participants
        .iter()
        .map(|p| p.opened_outside_membership)
        .sum();
    check(
        "nobody opened a frame sealed outside its membership",
        outside == 0,
        format!("{outside} frames"),
    );
    // Expected drops: frames of epochs before a member joined, frames lost in transport, and
    // frames a removed member sealed before it learned of its removal (refused by design).
    let expected = ["BeforeJoin", "Incomplete", "SenderRemoved"];
    let integrity: u64 = participants
        .iter()
        .map(|p| {
            p.dropped
                .iter()
                .filter(|(c, _)| !expected.contains(&c.as_str()))
                .map(|(_, n)| n)
                .sum::<u64>()
                .saturating_sub(p.unverified_while_away)
        })
        .sum();
    let unverified_away: u64 = participants.iter().map(|p| p.unverified_while_away).sum();
    let after_removal: u64 = participants
        .iter()
        .filter_map(|p| p.dropped.get("SenderRemoved"))
        .sum();
    check(
        "no frame failed to authenticate or verify",
        integrity == 0,
        format!(
            "{integrity} frames dropped for key, tag, replay or integrity reasons \
             ({after_removal} frames of removed members refused after their removal; \
             {unverified_away} refused as unsigned while their sender or receiver was away, \
             its manifests lost with its connection)"
        ),
    );
    let mismatched: Vec<u64> = epochs
        .iter()
        .filter(|e| !e.codes_match)
        .map(|e| e.epoch)
        .collect();
    check(
        "security codes match in every epoch",
        mismatched.is_empty(),
        format!("{} epochs, mismatched: {mismatched:?}", epochs.len()),
    );
    let searched = !needles.is_empty();
    let mut check_plaintext = |name: &str, passed: bool, detail: String| {
        if searched {
            check(name, passed, detail)
        }
    };
    check_plaintext(
        "relay saw no plaintext (RTP payloads after SRTP, control after TLS)",
        plaintext.leaks == 0
            && plaintext.frames > 0
            && plaintext.rtp_payloads > 0
            && plaintext.control_messages > 0,
        format!(
            "{} frames ({} bytes) searched in {} RTP payloads and {} control messages: {} leaks",
            plaintext.frames,
            plaintext.plaintext_bytes,
            plaintext.rtp_payloads,
            plaintext.control_messages,
            plaintext.leaks
        ),
    );
    check_plaintext(
        "relay tap complete",
        relay.tap_dropped == 0 && relay.tapped == relay.packets_in,
        format!("tapped {} of {} packets", relay.tapped, relay.packets_in),
    );
    // A frame whose manifest is later than the signature bound (1 s) is reported as an
    // impersonation too (NoSignature): that happens to honest senders when the machine cannot
    // keep up (the control path stalls), so it is shown, not failed. A contradiction by the
    // claimed sender's own manifests never happens honestly.
    let impersonated: u64 = participants.iter().map(|p| p.auth.impersonated).sum();
    let contradicted: u64 = participants.iter().map(|p| p.auth.contradicted).sum();
    let verified: u64 = participants.iter().map(|p| p.auth.verified).sum();
    if inp.unsigned_media {
        let unauthenticated: u64 = participants.iter().map(|p| p.auth.unauthenticated).sum();
        check(
            "unsigned media (--unsigned-media) played as unauthenticated, never flagged",
            verified == 0 && impersonated == 0 && unauthenticated > 0,
            format!(
                "{unauthenticated} frames shown as unauthenticated, {verified} verified, \
                 {impersonated} flagged"
            ),
        );
    } else {
        check(
            "signed manifests verified the media and contradicted no frame",
            contradicted == 0 && verified > 0,
            format!(
                "{verified} frames verified; {contradicted} contradicted by their claimed sender's \
             manifests; {} flagged only because the manifest came later than the bound",
                impersonated - contradicted.min(impersonated)
            ),
        );
    }
    let opened_any = participants.iter().all(|p| p.opened > 0);
    check(
        "every participant opened media",
        opened_any,
        participants
            .iter()
            .map(|p| format!("{}={}", p.name, p.opened))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let failover = inp.failover.map(|o| FailoverReport {
        node: o.node.clone(),
        to: o.to.clone(),
        lease_ms: o.lease.as_secs_f64() * 1e3,
        media_back_ms: o
            .back_at
            .saturating_duration_since(o.killed_at)
            .as_secs_f64()
            * 1e3,
        members: o.members.len(),
        epoch_before: o.epoch_before,
        epoch_after: o.epoch_after,
    });
    if let (Some(f), Some(o)) = (&failover, inp.failover) {
        let back = o.back_at.saturating_duration_since(o.killed_at);
        let resumed = participants
            .iter()
            .filter(|p| o.members.contains(&p.name))
            .all(|p| p.reconnects >= 1);
        check(
            "the home node's kill: every member resumed on another node, media back within 10 s, \
             same epoch",
            back <= FAILOVER_TARGET && f.epoch_before == f.epoch_after && resumed,
            format!(
                "{} killed, room taken by {}; media flowing again between all {} members {:.1} s \
                 after the kill (lease {:.1} s); epoch {} → {}",
                f.node,
                f.to.as_deref().unwrap_or("?"),
                f.members,
                f.media_back_ms / 1e3,
                f.lease_ms / 1e3,
                f.epoch_before,
                f.epoch_after
            ),
        );
    }
    let passed = checks.iter().all(|c| c.passed);
    Report {
        failover,
        seconds: inp.duration.as_secs_f64(),
        participants,
        epochs,
        rekey_latency,
        frame_latency,
        cpu: inp.cpu,
        relay,
        plaintext,
        checks,
        passed,
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "blindcall demo report ({:.1} s)", r.seconds);
    let _ = writeln!(
        s,
        "{:<8} {:<8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>5} {:>6} {:>6} {:>6}  {:<14} dropped",
        "name",
        "fate",
        "sentA",
        "sentV",
        "rx pkts",
        "rx frms",
        "opened",
        "missing",
        "lost",
        "pre",
        "inflt",
        "unsel",
        "epochs"
    );
    for p in &r.participants {
        let epochs = match (p.epochs_seen.first(), p.epochs_seen.last()) {
            (Some(a), Some(b)) => format!("{a}..{b} ({})", p.epochs_seen.len()),
            _ => "-".into(),
        };
        let dropped = if p.dropped.is_empty() {
            "-".to_string()
        } else {
            p.dropped
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            s,
            "{:<8} {:<8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>5} {:>6} {:>6} {:>6}  {:<14} {}",
            p.name,
            format!("{:?}", p.fate).to_lowercase(),
            p.sent_audio,
            p.sent_video,
            p.packets_received,
            p.frames_received,
            p.opened,
            p.missing,
            p.lost_in_transport,
            p.before_media,
            p.in_flight_at_departure,
            p.unselected_video,
            epochs,
            dropped
        );
    }
    for p in r.participants.iter().filter(|p| p.reconnects > 0) {
        let _ = writeln!(
            s,
            "  {} reconnected {}×: {:.1} s away, {} of its frames not sent while away, {} frames \
             lost to or from it, {} refused as unsigned at it",
            p.name,
            p.reconnects,
            p.time_away_ms / 1e3,
            p.not_sent_while_away,
            p.lost_while_away,
            p.unverified_while_away
        );
    }
    if let Some(f) = &r.failover {
        let _ = writeln!(
            s,
            "failover: {} killed (lease {:.1} s); {} took the room; media flowing again between \
             all {} members {:.1} s after the kill; epoch {} → {}",
            f.node,
            f.lease_ms / 1e3,
            f.to.as_deref().unwrap_or("?"),
            f.members,
            f.media_back_ms / 1e3,
            f.epoch_before,
            f.epoch_after
        );
    }
    for p in r
        .participants
        .iter()
        .filter(|p| !p.missing_frames.is_empty())
    {
        let _ = writeln!(s, "  {} missed: {}", p.name, p.missing_frames.join(", "));
    }
    let _ = writeln!(s, "epochs:");
    for e in &r.epochs {
        let _ = writeln!(
            s,
            "  {:>3}  {}  {}  [{}]",
            e.epoch,
            e.code,
            if e.codes_match { "match" } else { "MISMATCH" },
            e.members.join(",")
        );
    }
    let _ = writeln!(
        s,
        "sender authentication (per receiver: verified / delivered pending / unauthenticated / impersonated (of which contradicted); detection p50/p99; signature wait p50/p99):"
    );
    let q = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} ms"));
    for p in &r.participants {
        let a = &p.auth;
        let _ = writeln!(
            s,
            "  {:<8} {} / {} / {} / {} ({}); detection {} / {}; signature wait {} / {}",
            p.name,
            a.verified,
            a.delivered_pending,
            a.unauthenticated,
            a.impersonated,
            a.contradicted,
            q(a.detection_p50_ms),
            q(a.detection_p99_ms),
            q(a.signature_wait_p50_ms),
            q(a.signature_wait_p99_ms)
        );
        for (who, what) in &a.flagged {
            let _ = writeln!(s, "    flagged as {who}: {what}");
        }
    }
    let l = &r.rekey_latency;
    let _ = writeln!(
        s,
        "rekey latency (commit sent -> all members on the new epoch): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} commits",
        l.p50_ms, l.p99_ms, l.max_ms, l.samples
    );
    let l = &r.frame_latency;
    let _ = writeln!(
        s,
        "frame latency (sealed -> opened by a receiver): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} frames",
        l.p50_ms, l.p99_ms, l.max_ms, l.samples
    );
    if let Some(c) = &r.cpu {
        let _ = writeln!(
            s,
            "cpu: {:.2} s over {:.1} s of media with {} participants = {:.1} ms per participant-second (relay included)",
            c.cpu_seconds, c.media_seconds, c.participants, c.cpu_ms_per_participant_second
        );
    }
    let f = &r.relay;
    let _ = writeln!(
        s,
        "relay: {} packets / {} bytes in, {} packets / {} bytes forwarded, {} dropped (no subscriber {}, queue full {}, late {}, leg closed or not connected {}), {} copies not sent (video not selected), {} keyframe requests",
        f.packets_in,
        f.bytes_in,
        f.packets_out,
        f.bytes_out,
        f.dropped,
        f.dropped_no_subscriber,
        f.dropped_queue_full,
        f.dropped_late,
        f.dropped_leg_closed_or_write_failed,
        f.unsubscribed,
        f.keyframe_requests
    );
    let _ = writeln!(s, "checks:");
    for c in &r.checks {
        let _ = writeln!(
            s,
            "  [{}] {} — {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let _ = writeln!(s, "result: {}", if r.passed { "PASS" } else { "FAIL" });
    s
}
