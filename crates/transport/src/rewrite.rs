//! Per-leg RTP header rewriting (sans-IO): SSRC, payload type, header-extension ids and
//! sequence/timestamp continuity. The payload is never read.

use rtc::rtp::header::{Extension, Header};

/// A negotiated header-extension map: (id, URI) pairs of one leg.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionMap {
    entries: Vec<(u8, String)>,
}

impl ExtensionMap {
    /// A map from (id, URI) pairs; ids outside 1..=255 are ignored.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (u16, &'a str)>) -> Self {
        let entries = pairs
            .into_iter()
            .filter_map(|(id, uri)| {
                let id = u8::try_from(id).ok().filter(|id| *id != 0)?;
                Some((id, uri.to_owned()))
            })
            .collect();
        Self { entries }
    }

    /// The id negotiated for `uri`.
    pub fn id_of(&self, uri: &str) -> Option<u8> {
        self.entries
            .iter()
            .find(|(_, u)| u == uri)
            .map(|(id, _)| *id)
    }

    /// The URI negotiated for `id`.
    pub fn uri_of(&self, id: u8) -> Option<&str> {
        self.entries
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, u)| u.as_str())
    }
}

/// What one rewrite did besides the fixed fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteOutcome {
    /// Header extensions removed because the subscriber leg did not negotiate their URI.
    pub extensions_stripped: usize,
}

/// Rewrites the headers of one publisher stream for one subscriber leg.
///
/// The first source is passed through with its own sequence numbers and timestamps. When the
/// source changes (another publisher SSRC is mapped onto this leg), the leg's sequence numbers
/// and timestamps continue from the last packet sent, so the subscriber sees one stream.
#[derive(Debug, Clone)]
pub struct LegRewriter {
    out_ssrc: u32,
    out_pt: u8,
    outbound: ExtensionMap,
    remap: Vec<(u8, u8)>,
    remap_for: Option<ExtensionMap>,
    source: Option<u32>,
    seq_delta: u16,
    ts_delta: u32,
    last_out: Option<(u16, u32)>,
}

impl LegRewriter {
    /// A rewriter for a leg that negotiated `out_ssrc`, `out_pt` and `outbound` extensions.
    pub fn new(out_ssrc: u32, out_pt: u8, outbound: ExtensionMap) -> Self {
        Self {
            out_ssrc,
            out_pt,
            outbound,
            remap: Vec::new(),
            remap_for: None,
            source: None,
            seq_delta: 0,
            ts_delta: 0,
            last_out: None,
        }
    }

    /// The SSRC this leg sends with.
    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// The next packet resumes the leg after a pause: its sequence number becomes the last
    /// one sent plus one, and later packets keep their relative numbering, so the subscriber
    /// sees no gap for the packets it was not sent (timestamps pass through: they carry the
    /// time that really elapsed).
    pub fn splice(&mut self, next_sequence_number: u16) {
        if let Some((last_seq, _)) = self.last_out {
            self.seq_delta = last_seq.wrapping_add(1).wrapping_sub(next_sequence_number);
        }
    }

    /// Rewrites `header` (received with the publisher's `inbound` extension map) in place.
    pub fn rewrite(&mut self, header: &mut Header, inbound: &ExtensionMap) -> RewriteOutcome {
        if self.remap_for.as_ref() != Some(inbound) {
            self.remap = inbound
                .entries
                .iter()
                .filter_map(|(id, uri)| Some((*id, self.outbound.id_of(uri)?)))
                .collect();
            self.remap_for = Some(inbound.clone());
        }
        if self.source != Some(header.ssrc) {
            if let Some((last_seq, last_ts)) = self.last_out {
                self.seq_delta = last_seq
                    .wrapping_add(1)
                    .wrapping_sub(header.sequence_number);
                self.ts_delta = last_ts.wrapping_add(1).wrapping_sub(header.timestamp);
            }
            self.source = Some(header.ssrc);
        }
        header.ssrc = self.out_ssrc;
        header.payload_type = self.out_pt;
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_delta);
        header.timestamp = header.timestamp.wrapping_add(self.ts_delta);
        let newer = self.last_out.is_none_or(|(seq, _)| {
            let ahead = header.sequence_number.wrapping_sub(seq);
            ahead != 0 && ahead < 0x8000
        });
        if newer {
            self.last_out = Some((header.sequence_number, header.timestamp));
        }

        let mut outcome = RewriteOutcome::default();
        if !header.extensions.is_empty() {
            let before = header.extensions.len();
            let remap = &self.remap;
            let kept: Vec<Extension> = std::mem::take(&mut header.extensions)
                .into_iter()
                .filter_map(|mut ext| {
                    let (_, to) = remap.iter().find(|(from, _)| *from == ext.id)?;
                    ext.id = *to;
                    Some(ext)
                })
                .collect();
            outcome.extensions_stripped = before - kept.len();
            header.extensions = kept;
        }
        if header.extensions.is_empty() {
            header.extension = false;
            header.extensions_padding = 0;
        }
        outcome
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    fn header(ssrc: u32, seq: u16, ts: u32, exts: &[(u8, &'static [u8])]) -> Header {
        Header {
            version: 2,
            payload_type: 96,
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            extension: !exts.is_empty(),
            extension_profile: 0xBEDE,
            extensions: exts
                .iter()
                .map(|(id, p)| Extension {
                    id: *id,
                    payload: Bytes::from_static(p),
                })
                .collect(),
            ..Default::default()
        }
    }

    // covers: MT-FWD-1
    #[test]
    fn rewrites_ssrc_and_payload_type_and_keeps_first_source_numbering() {
        let mut rw = LegRewriter::new(0xAAAA, 120, ExtensionMap::default());
        let inbound = ExtensionMap::default();
        for (seq, ts) in [(65_534u16, 10u32), (65_535, 10), (0, 3_010)] {
            let mut h = header(7, seq, ts, &[]);
            rw.rewrite(&mut h, &inbound);
            assert_eq!((h.ssrc, h.payload_type), (0xAAAA, 120));
            assert_eq!((h.sequence_number, h.timestamp), (seq, ts));
        }
    }

    // covers: MT-FWD-2
    #[test]
    fn remaps_extension_ids_by_uri_and_strips_unnegotiated_ones() {
        let inbound = ExtensionMap::new([(1, LEVEL), (3, MID), (5, TWCC)]);
        let outbound = ExtensionMap::new([(4, LEVEL), (9, MID)]);
        let mut rw = LegRewriter::new(1, 96, outbound);
        let mut h = header(7, 1, 1, &[(1, b"\x80"), (3, b"0"), (5, b"\x00\x01")]);
        let out = rw.rewrite(&mut h, &inbound);
        assert_eq!(out.extensions_stripped, 1);
        let ids: Vec<u8> = h.extensions.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![4, 9]);
        assert_eq!(&h.extensions[0].payload[..], b"\x80");
        assert!(h.extension);

        // Only unnegotiated extensions: the header ends up without an extension block.
        let mut h = header(7, 2, 1, &[(5, b"\x00\x02")]);
        assert_eq!(rw.rewrite(&mut h, &inbound).extensions_stripped, 1);
        assert!(!h.extension && h.extensions.is_empty());
    }

    // covers: MT-FWD-3
    #[test]
    fn source_switch_keeps_leg_sequence_and_timestamp_continuous() {
        let mut rw = LegRewriter::new(42, 96, ExtensionMap::default());
        let inbound = ExtensionMap::default();
        let mut h = header(1, 100, 5_000, &[]);
        rw.rewrite(&mut h, &inbound);
        let mut h = header(1, 101, 8_000, &[]);
        rw.rewrite(&mut h, &inbound);
        assert_eq!((h.sequence_number, h.timestamp), (101, 8_000));
        // A new publisher SSRC with unrelated numbering.
        let mut h = header(2, 60_000, 7, &[]);
        rw.rewrite(&mut h, &inbound);
        assert_eq!((h.ssrc, h.sequence_number, h.timestamp), (42, 102, 8_001));
        let mut h = header(2, 60_001, 3_007, &[]);
        rw.rewrite(&mut h, &inbound);
        assert_eq!((h.sequence_number, h.timestamp), (103, 11_001));
        // Reordered packet of the new source keeps its relative position.
        let mut h = header(2, 59_999, 7, &[]);
        rw.rewrite(&mut h, &inbound);
        assert_eq!(h.sequence_number, 101);
    }

    // covers: MT-SUB-3
    #[test]
    fn a_resumed_leg_continues_its_sequence_numbers_without_a_gap() {
        let mut rw = LegRewriter::new(42, 96, ExtensionMap::default());
        let inbound = ExtensionMap::default();
        for seq in [500u16, 501] {
            let mut h = header(1, seq, 9_000, &[]);
            rw.rewrite(&mut h, &inbound);
            assert_eq!(h.sequence_number, seq);
        }
        // Packets 502..40_000 were not forwarded (leg paused); it resumes at 40_000.
        rw.splice(40_000);
        for (seq, want) in [(40_000u16, 502u16), (40_001, 503), (40_003, 505)] {
            let mut h = header(1, seq, 700_000, &[]);
            rw.rewrite(&mut h, &inbound);
            assert_eq!((h.sequence_number, h.timestamp), (want, 700_000));
        }
        // A splice before anything was sent changes nothing.
        let mut fresh = LegRewriter::new(1, 96, ExtensionMap::default());
        fresh.splice(9);
        let mut h = header(1, 9, 1, &[]);
        fresh.rewrite(&mut h, &inbound);
        assert_eq!(h.sequence_number, 9);
    }

    #[test]
    fn extension_map_ignores_invalid_ids() {
        let m = ExtensionMap::new([(0, LEVEL), (300, MID), (2, TWCC)]);
        assert_eq!(m.id_of(LEVEL), None);
        assert_eq!(m.id_of(MID), None);
        assert_eq!(m.id_of(TWCC), Some(2));
        assert_eq!(m.uri_of(2), Some(TWCC));
    }
}
