//! The sender side: collects the hash of every sealed SFrame frame and cuts them into
//! manifests, every `interval` and whenever the epoch or the participant id changes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use blindcall_sframe::{Counter, Kid};

use super::wire::{BODY_HEADER_LEN, ENTRY_HEADER_LEN, MAX_BODY_LEN, ManifestBody, ManifestEntry};
use super::{FRAME_HASH_LEN, FrameHash, frame_hash};

/// Finished manifests kept for the caller; older ones are dropped (and counted) beyond this.
const MAX_READY: usize = 64;

/// Sender settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerConfig {
    /// Longest time a recorded frame waits before its manifest is due (default 250 ms).
    pub interval: Duration,
    /// Largest manifest body in bytes (default and upper limit [`MAX_BODY_LEN`]).
    pub max_body_len: usize,
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            max_body_len: MAX_BODY_LEN,
        }
    }
}

/// Sender counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignerCounters {
    /// Frames recorded.
    pub frames: u64,
    /// Manifests handed out by `poll_manifest`.
    pub manifests: u64,
    /// Manifests cut early because the size cap was reached.
    pub splits: u64,
    /// Finished manifests dropped because the caller did not poll them in time.
    pub dropped: u64,
}

struct Building {
    body: ManifestBody,
    len: usize,
    due: Instant,
}

/// One member's manifest builder (sans-IO). Call [`ManifestSigner::record`] after each sealed
/// frame; when [`ManifestSigner::poll_timeout`] passes, drain
/// [`ManifestSigner::poll_manifest`], sign each body and broadcast it.
#[derive(Debug)]
pub struct ManifestSigner {
    leaf: u32,
    participant: u64,
    config: SignerConfig,
    current: Option<Building>,
    ready: VecDeque<ManifestBody>,
    now: Option<Instant>,
    counters: SignerCounters,
}

impl std::fmt::Debug for Building {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Building")
            .field("epoch", &self.body.epoch)
            .field("frames", &self.body.frame_count())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ManifestSigner {
    /// A signer for the member at `leaf`, whose relay participant id is `participant`.
    /// `config.max_body_len` is clamped to what one frame needs and to [`MAX_BODY_LEN`].
    pub fn new(leaf: u32, participant: u64, mut config: SignerConfig) -> Self {
        config.max_body_len = config.max_body_len.clamp(
            BODY_HEADER_LEN + ENTRY_HEADER_LEN + FRAME_HASH_LEN,
            MAX_BODY_LEN,
        );
        Self {
            leaf,
            participant,
            config,
            current: None,
            ready: VecDeque::new(),
            now: None,
            counters: SignerCounters::default(),
        }
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        now
    }

    /// The member's leaf index.
    pub fn leaf(&self) -> u32 {
        self.leaf
    }

    /// The relay participant id put in manifests.
    pub fn participant(&self) -> u64 {
        self.participant
    }

    /// Changes the relay participant id; frames recorded so far go out under the old one.
    pub fn set_participant(&mut self, now: Instant, participant: u64) {
        if participant != self.participant {
            self.flush(now);
            self.participant = participant;
        }
    }

    /// Records a sealed frame (`sframe` = header, ciphertext and tag, as sent) of `kid` with
    /// counter `ctr`, sealed with the keys of `epoch`.
    pub fn record(&mut self, now: Instant, epoch: u64, kid: Kid, ctr: Counter, sframe: &[u8]) {
        self.record_hash(now, epoch, kid, ctr, frame_hash(sframe));
    }

    /// [`ManifestSigner::record`] for a caller that already hashed the frame with
    /// [`frame_hash`].
    pub fn record_hash(
        &mut self,
        now: Instant,
        epoch: u64,
        kid: Kid,
        ctr: Counter,
        hash: FrameHash,
    ) {
        let now = self.clamp(now);
        self.counters.frames += 1;
        if self.current.as_ref().is_some_and(|b| b.body.epoch != epoch) {
            self.finish();
        }
        let mut split = false;
        if let Some(b) = &self.current {
            match placement(&b.body, kid, ctr) {
                Placement::Append(_) if b.len + FRAME_HASH_LEN > self.config.max_body_len => {
                    split = true;
                }
                Placement::NewEntry
                    if b.len + ENTRY_HEADER_LEN + FRAME_HASH_LEN > self.config.max_body_len =>
                {
                    split = true;
                }
                Placement::Overlap => split = true,
                Placement::Append(_) | Placement::NewEntry => {}
            }
        }
        if split {
            self.counters.splits += 1;
            self.finish();
        }
        let b = self.current.get_or_insert_with(|| Building {
            body: ManifestBody {
                epoch,
                leaf: self.leaf,
                participant: self.participant,
                entries: Vec::new(),
            },
            len: BODY_HEADER_LEN,
            due: now.checked_add(self.config.interval).unwrap_or(now),
        });
        match placement(&b.body, kid, ctr) {
            Placement::Append(i) => {
                if let Some(e) = b.body.entries.get_mut(i) {
                    e.hashes.push(hash);
                    b.len += FRAME_HASH_LEN;
                }
            }
            // An overlap cannot remain in a fresh body; treat it as a new entry.
            Placement::NewEntry | Placement::Overlap => {
                b.body.entries.push(ManifestEntry {
                    kid,
                    first_ctr: ctr,
                    hashes: vec![hash],
                });
                b.len += ENTRY_HEADER_LEN + FRAME_HASH_LEN;
            }
        }
    }

    /// Finishes the manifest being built now (e.g. before leaving the call).
    pub fn flush(&mut self, now: Instant) {
        self.clamp(now);
        self.finish();
    }

    fn finish(&mut self) {
        let Some(b) = self.current.take() else {
            return;
        };
        if b.body.entries.is_empty() {
            return;
        }
        if self.ready.len() >= MAX_READY {
            self.ready.pop_front();
            self.counters.dropped += 1;
        }
        self.ready.push_back(b.body);
    }

    /// The next manifest body to sign and send, if one is finished or due at `now`.
    pub fn poll_manifest(&mut self, now: Instant) -> Option<ManifestBody> {
        let now = self.clamp(now);
        if self.ready.is_empty() && self.current.as_ref().is_some_and(|b| b.due <= now) {
            self.finish();
        }
        let out = self.ready.pop_front();
        if out.is_some() {
            self.counters.manifests += 1;
        }
        out
    }

    /// When [`ManifestSigner::poll_manifest`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ready.is_empty() {
            self.current.as_ref().map(|b| b.due)
        } else {
            self.now
        }
    }

    /// Frames recorded but not yet handed out in a manifest.
    pub fn unsent_frames(&self) -> usize {
        self.ready
            .iter()
            .chain(self.current.as_ref().map(|b| &b.body))
            .map(ManifestBody::frame_count)
            .sum()
    }

    /// Counters.
    pub fn counters(&self) -> SignerCounters {
        self.counters
    }
}

enum Placement {
    /// Extends entry `i` (the frame follows its last counter).
    Append(usize),
    /// Needs an entry of its own.
    NewEntry,
    /// Repeats a counter this body already covers for the KID (a caller bug): cut here.
    Overlap,
}

fn placement(body: &ManifestBody, kid: Kid, ctr: Counter) -> Placement {
    let mut out = Placement::NewEntry;
    for (i, e) in body
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kid == kid)
    {
        if e.hash_for(ctr).is_some() {
            return Placement::Overlap;
        }
        let next = u64::try_from(e.hashes.len())
            .ok()
            .and_then(|n| e.first_ctr.0.checked_add(n));
        if next == Some(ctr.0) {
            out = Placement::Append(i);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    // covers: MA-SEND-1
    #[test]
    fn consecutive_counters_share_an_entry_and_gaps_start_a_new_one() {
        let now = t0();
        let mut s = ManifestSigner::new(3, 77, SignerConfig::default());
        for ctr in [5u64, 6, 7, 9, 10] {
            s.record(now, 1, Kid(0x31), Counter(ctr), &ctr.to_be_bytes());
        }
        s.record(now, 1, Kid(0x71), Counter(0), b"video");
        s.record(now, 1, Kid(0x31), Counter(11), &11u64.to_be_bytes());
        s.flush(now);
        let m = s.poll_manifest(now).unwrap();
        assert_eq!((m.epoch, m.leaf, m.participant), (1, 3, 77));
        let shape: Vec<(u64, u64, usize)> = m
            .entries
            .iter()
            .map(|e| (e.kid.0, e.first_ctr.0, e.hashes.len()))
            .collect();
        assert_eq!(shape, [(0x31, 5, 3), (0x31, 9, 3), (0x71, 0, 1)]);
        assert_eq!(
            m.entries[1].hash_for(Counter(11)),
            Some(&frame_hash(&11u64.to_be_bytes()))
        );
        assert_eq!(m.encoded_len(), m.encode().unwrap().len());
        assert!(s.poll_manifest(now).is_none());
        assert_eq!(s.counters().frames, 7);
    }

    // covers: MA-SEND-2
    #[test]
    fn a_manifest_is_due_one_interval_after_its_first_frame_and_at_once_on_epoch_change() {
        let start = t0();
        let ms = Duration::from_millis;
        let mut s = ManifestSigner::new(1, 9, SignerConfig::default());
        assert_eq!(s.poll_timeout(), None);
        s.record(start, 4, Kid(0x14), Counter(0), b"a");
        s.record(start + ms(100), 4, Kid(0x14), Counter(1), b"b");
        assert_eq!(s.poll_timeout(), Some(start + ms(250)));
        assert!(s.poll_manifest(start + ms(249)).is_none());
        let m = s.poll_manifest(start + ms(250)).unwrap();
        assert_eq!(m.frame_count(), 2);
        assert_eq!(s.poll_timeout(), None);

        // Epoch change: the old epoch's frames are finished at once.
        s.record(start + ms(300), 4, Kid(0x14), Counter(2), b"c");
        s.record(start + ms(310), 5, Kid(0x15), Counter(0), b"d");
        assert_eq!(s.poll_timeout(), Some(start + ms(310)));
        let old = s.poll_manifest(start + ms(310)).unwrap();
        assert_eq!((old.epoch, old.frame_count()), (4, 1));
        assert_eq!(s.poll_timeout(), Some(start + ms(560)));
        assert!(s.poll_manifest(start + ms(311)).is_none());

        // Participant change flushes too, and the next manifest names the new id.
        s.set_participant(start + ms(320), 10);
        let before = s.poll_manifest(start + ms(320)).unwrap();
        assert_eq!((before.epoch, before.participant), (5, 9));
        s.record(start + ms(330), 5, Kid(0x15), Counter(1), b"e");
        s.flush(start + ms(330));
        assert_eq!(s.poll_manifest(start + ms(330)).unwrap().participant, 10);
        assert_eq!(s.unsent_frames(), 0);
        assert_eq!(s.counters().manifests, 4);
    }

    // covers: MA-SEND-3
    #[test]
    fn manifests_are_split_at_the_size_cap_and_never_exceed_it() {
        let now = t0();
        let cap = BODY_HEADER_LEN + ENTRY_HEADER_LEN + 10 * FRAME_HASH_LEN;
        let mut s = ManifestSigner::new(
            0,
            1,
            SignerConfig {
                max_body_len: cap,
                ..SignerConfig::default()
            },
        );
        for ctr in 0..95u64 {
            s.record(now, 2, Kid(0x2), Counter(ctr), &ctr.to_be_bytes());
        }
        s.flush(now);
        let mut next = 0u64;
        let mut manifests = 0;
        while let Some(m) = s.poll_manifest(now) {
            let bytes = m.encode().unwrap();
            assert!(bytes.len() <= cap, "{} > {cap}", bytes.len());
            for e in &m.entries {
                assert_eq!(e.first_ctr.0, next);
                next += e.hashes.len() as u64;
            }
            manifests += 1;
        }
        assert_eq!((next, manifests), (95, 10));
        assert_eq!(s.counters().splits, 9);

        // The default cap keeps every manifest under the wire limit.
        let mut s = ManifestSigner::new(0, 1, SignerConfig::default());
        for ctr in 0..1000u64 {
            s.record(now, 2, Kid(ctr % 3), Counter(ctr / 3), b"x");
        }
        s.flush(now);
        let mut total = 0;
        while let Some(m) = s.poll_manifest(now) {
            assert!(m.encode().unwrap().len() <= MAX_BODY_LEN);
            total += m.frame_count();
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn a_repeated_counter_starts_a_new_manifest_instead_of_an_invalid_one() {
        let now = t0();
        let mut s = ManifestSigner::new(0, 1, SignerConfig::default());
        s.record(now, 2, Kid(0x2), Counter(7), b"one");
        s.record(now, 2, Kid(0x2), Counter(7), b"two");
        s.flush(now);
        let a = s.poll_manifest(now).unwrap();
        let b = s.poll_manifest(now).unwrap();
        assert!(a.encode().is_ok() && b.encode().is_ok());
        assert_eq!(b.entries[0].hashes[0], frame_hash(b"two"));
    }

    // covers: MA-BND-3
    #[test]
    fn unpolled_manifests_are_bounded_and_counted() {
        let start = t0();
        let mut s = ManifestSigner::new(0, 1, SignerConfig::default());
        for i in 0..(MAX_READY as u64 + 10) {
            // Every frame in a new epoch: each finishes the previous manifest.
            s.record(start, i, Kid(i), Counter(0), b"f");
        }
        s.flush(start);
        assert_eq!(s.counters().dropped, 10);
        let mut n = 0;
        while s.poll_manifest(start).is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_READY);
    }
}
