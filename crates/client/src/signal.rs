//! The media-signaling payloads carried in `MediaSignal` control messages between a member
//! and the relay's media forwarder. The control protocol treats them as opaque bytes.
//!
//! ```text
//! struct { uint8 tag; opaque rest[..]; } MediaSignalPayload;
//! tag 1 Join:   rest = uint8 publish (0 or 1)      member -> forwarder
//! tag 2 Offer:  rest = SDP (UTF-8, candidates in)  forwarder -> member
//! tag 3 Answer: rest = SDP (UTF-8)                 member -> forwarder
//! ```

use blindcall_transport::{SdpKind, SessionDescription};

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
}

/// A payload that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed media-signal payload")]
pub struct BadSignal;

impl MediaSignalPayload {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Join { publish } => vec![1, u8::from(*publish)],
            Self::Offer(sdp) => [&[2u8][..], sdp.as_bytes()].concat(),
            Self::Answer(sdp) => [&[3u8][..], sdp.as_bytes()].concat(),
        }
    }

    /// Decodes a payload; anything malformed is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadSignal> {
        let text = |rest: &[u8]| {
            std::str::from_utf8(rest)
                .map(str::to_owned)
                .map_err(|_| BadSignal)
        };
        match bytes {
            [1, 0] => Ok(Self::Join { publish: false }),
            [1, 1] => Ok(Self::Join { publish: true }),
            [2, rest @ ..] if !rest.is_empty() => Ok(Self::Offer(text(rest)?)),
            [3, rest @ ..] if !rest.is_empty() => Ok(Self::Answer(text(rest)?)),
            _ => Err(BadSignal),
        }
    }

    /// The session description an offer or answer carries.
    pub fn into_description(self) -> Option<SessionDescription> {
        match self {
            Self::Offer(sdp) => Some(SessionDescription {
                kind: SdpKind::Offer,
                sdp,
            }),
            Self::Answer(sdp) => Some(SessionDescription {
                kind: SdpKind::Answer,
                sdp,
            }),
            Self::Join { .. } => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: SDK-MEDIA-1
    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        for p in [
            MediaSignalPayload::Join { publish: true },
            MediaSignalPayload::Join { publish: false },
            MediaSignalPayload::Offer("v=0\r\n".into()),
            MediaSignalPayload::Answer("v=0\r\n".into()),
        ] {
            assert_eq!(MediaSignalPayload::decode(&p.encode()).unwrap(), p);
        }
        for bad in [&[][..], &[0], &[1], &[1, 2], &[2], &[3, 0xff], &[9, 1]] {
            assert_eq!(MediaSignalPayload::decode(bad), Err(BadSignal), "{bad:?}");
        }
    }
}
