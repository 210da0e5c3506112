//! The media-signaling payloads carried inside [`MediaSignal`](crate::MediaSignal) messages
//! between a member and the relay's media forwarder. The control protocol itself treats them as
//! opaque bytes; this is the format both ends of the media path agree on (spec:
//! `control-protocol.md`, CP-MEDIA-2 to CP-MEDIA-4).
//!
//! ```text
//! struct { uint8 tag; opaque rest[..]; } MediaSignalPayload;   // rest runs to the end
//! tag 1 Join:   rest = uint8 publish (0 or 1)      member -> forwarder
//! tag 2 Offer:  rest = SDP (UTF-8, non-empty)      forwarder -> member
//! tag 3 Answer: rest = SDP (UTF-8, non-empty)      member -> forwarder
//! tag 4 Video:  rest = uint8 mode; uint64 ids[..]  member -> forwarder
//!               mode 0 = video from every publisher (ids empty),
//!               mode 1 = video only from the listed publishers (at most 1,024 ids, big-endian)
//! ```

use thiserror::Error;

/// Tag of [`MediaSignalPayload::Join`].
pub const MEDIA_SIGNAL_JOIN: u8 = 1;
/// Tag of [`MediaSignalPayload::Offer`].
pub const MEDIA_SIGNAL_OFFER: u8 = 2;
/// Tag of [`MediaSignalPayload::Answer`].
pub const MEDIA_SIGNAL_ANSWER: u8 = 3;
/// Tag of [`MediaSignalPayload::Video`].
pub const MEDIA_SIGNAL_VIDEO: u8 = 4;
/// Most publishers one [`VideoFilter::Only`] may list.
pub const MAX_VIDEO_FILTER_IDS: usize = 1_024;

/// Whose video a member wants forwarded to it (audio is always forwarded from everyone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoFilter {
    /// Every publisher's video (the default).
    #[default]
    All,
    /// Only these publishers' video, by the forwarder's participant id (the number in the
    /// `bcp-<id>` stream ids of the forwarder's offers). Unknown ids are ignored.
    Only(Vec<u64>),
}

/// One media-signaling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSignalPayload {
    /// A member asks the forwarder for a PeerConnection (the forwarder answers with an offer).
    Join {
        /// Whether the member publishes audio and video.
        publish: bool,
    },
    /// The forwarder's SDP offer.
    Offer(String),
    /// The member's SDP answer.
    Answer(String),
    /// The member's video subscription; replaces the previous one.
    Video(VideoFilter),
}

/// Why bytes are not a [`MediaSignalPayload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MediaSignalDecodeError {
    /// No bytes at all.
    #[error("empty media-signal payload")]
    Empty,
    /// The tag is not 1, 2 or 3.
    #[error("unknown media-signal tag {0}")]
    UnknownTag(u8),
    /// A `Join` whose body is not exactly one byte 0 or 1.
    #[error("malformed Join body")]
    BadJoin,
    /// An `Offer` or `Answer` without SDP.
    #[error("empty SDP")]
    EmptySdp,
    /// An `Offer` or `Answer` whose SDP is not UTF-8.
    #[error("SDP is not UTF-8")]
    SdpNotUtf8,
    /// A `Video` body with an unknown mode, ids with mode 0, a length that is not a whole
    /// number of ids, or more than [`MAX_VIDEO_FILTER_IDS`] ids.
    #[error("malformed Video body")]
    BadVideo,
}

impl MediaSignalPayload {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Join { publish } => vec![MEDIA_SIGNAL_JOIN, u8::from(*publish)],
            Self::Offer(sdp) => [&[MEDIA_SIGNAL_OFFER][..], sdp.as_bytes()].concat(),
            Self::Answer(sdp) => [&[MEDIA_SIGNAL_ANSWER][..], sdp.as_bytes()].concat(),
            Self::Video(VideoFilter::All) => vec![MEDIA_SIGNAL_VIDEO, 0],
            Self::Video(VideoFilter::Only(ids)) => {
                let mut out = Vec::with_capacity(2 + 8 * ids.len());
                out.extend_from_slice(&[MEDIA_SIGNAL_VIDEO, 1]);
                for id in ids {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out
            }
        }
    }

    /// Decodes a payload; anything malformed is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, MediaSignalDecodeError> {
        let sdp = |rest: &[u8]| {
            if rest.is_empty() {
                return Err(MediaSignalDecodeError::EmptySdp);
            }
            std::str::from_utf8(rest)
                .map(str::to_owned)
                .map_err(|_| MediaSignalDecodeError::SdpNotUtf8)
        };
        let (&tag, rest) = bytes.split_first().ok_or(MediaSignalDecodeError::Empty)?;
        match (tag, rest) {
            (MEDIA_SIGNAL_JOIN, [0]) => Ok(Self::Join { publish: false }),
            (MEDIA_SIGNAL_JOIN, [1]) => Ok(Self::Join { publish: true }),
            (MEDIA_SIGNAL_JOIN, _) => Err(MediaSignalDecodeError::BadJoin),
            (MEDIA_SIGNAL_OFFER, rest) => Ok(Self::Offer(sdp(rest)?)),
            (MEDIA_SIGNAL_ANSWER, rest) => Ok(Self::Answer(sdp(rest)?)),
            (MEDIA_SIGNAL_VIDEO, [0]) => Ok(Self::Video(VideoFilter::All)),
            (MEDIA_SIGNAL_VIDEO, [1, ids @ ..])
                if ids.len() % 8 == 0 && ids.len() / 8 <= MAX_VIDEO_FILTER_IDS =>
            {
                Ok(Self::Video(VideoFilter::Only(
                    ids.chunks_exact(8)
                        .map(|c| {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(c);
                            u64::from_be_bytes(b)
                        })
                        .collect(),
                )))
            }
            (MEDIA_SIGNAL_VIDEO, _) => Err(MediaSignalDecodeError::BadVideo),
            (other, _) => Err(MediaSignalDecodeError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: CP-MEDIA-2
    #[test]
    fn payloads_have_the_specified_bytes_and_round_trip() {
        let cases = [
            (MediaSignalPayload::Join { publish: true }, vec![1, 1]),
            (MediaSignalPayload::Join { publish: false }, vec![1, 0]),
            (
                MediaSignalPayload::Offer("v=0\r\n".into()),
                b"\x02v=0\r\n".to_vec(),
            ),
            (
                MediaSignalPayload::Answer("v=0\r\n".into()),
                b"\x03v=0\r\n".to_vec(),
            ),
            (MediaSignalPayload::Video(VideoFilter::All), vec![4, 0]),
            (
                MediaSignalPayload::Video(VideoFilter::Only(vec![])),
                vec![4, 1],
            ),
            (
                MediaSignalPayload::Video(VideoFilter::Only(vec![7, 0x0102_0304_0506_0708])),
                vec![4, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
        ];
        for (p, bytes) in cases {
            assert_eq!(p.encode(), bytes);
            assert_eq!(MediaSignalPayload::decode(&bytes).unwrap(), p);
        }
    }

    // covers: CP-MEDIA-4
    #[test]
    fn malformed_payloads_are_refused_with_the_reason() {
        use MediaSignalDecodeError::*;
        for (bad, why) in [
            (&[][..], Empty),
            (&[0], UnknownTag(0)),
            (&[9, 1], UnknownTag(9)),
            (&[1], BadJoin),
            (&[1, 2], BadJoin),
            (&[1, 1, 0], BadJoin),
            (&[2], EmptySdp),
            (&[3], EmptySdp),
            (&[3, 0xff], SdpNotUtf8),
            (&[2, 0xc3], SdpNotUtf8),
            (&[4], BadVideo),
            (&[4, 2], BadVideo),
            (&[4, 0, 0], BadVideo),
            (&[4, 1, 0, 0, 0, 0, 0, 0, 0], BadVideo),
        ] {
            assert_eq!(MediaSignalPayload::decode(bad), Err(why), "{bad:?}");
        }
        let mut too_many = vec![4, 1];
        too_many.resize(2 + 8 * (MAX_VIDEO_FILTER_IDS + 1), 0);
        assert_eq!(MediaSignalPayload::decode(&too_many), Err(BadVideo));
        let mut most = vec![4, 1];
        most.resize(2 + 8 * MAX_VIDEO_FILTER_IDS, 0);
        assert!(MediaSignalPayload::decode(&most).is_ok());
    }
}
