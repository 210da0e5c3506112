//! A raw webrtc-rs publisher that does what a malicious client can: announce what it likes in
//! its SDP answers (munging them) and send RTP under any SSRC its own tracks carry.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use blindcall_media::MediaKind;
use blindcall_transport::{
    AUDIO_MIME, AUDIO_PT, ParticipantId, SdpKind, SessionDescription, VIDEO_MIME, VIDEO_PT,
};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{Mutex, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use super::{Room, within};

fn codec(kind: MediaKind) -> RTCRtpCodec {
    match kind {
        MediaKind::Audio => RTCRtpCodec {
            mime_type: AUDIO_MIME.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        MediaKind::Video => RTCRtpCodec {
            mime_type: VIDEO_MIME.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn codec_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

struct Handler {
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .connected
            .send(state == RTCPeerConnectionState::Connected);
    }
}

struct Track {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
}

/// One publishing PeerConnection with one audio and one video track (one SSRC each).
///
/// webrtc-rs cannot send two SSRCs on one non-simulcast sender (it truncates a track's
/// encodings to the first), so the SSRCs the relay must refuse are made to reach it by
/// munging the answers instead: see [`add_decoy_ssrc`] and [`replace_ssrc`].
pub struct RawPublisher {
    pc: Arc<dyn PeerConnection>,
    gathered: Mutex<watch::Receiver<bool>>,
    connected: watch::Receiver<bool>,
    ssrcs: HashMap<MediaKind, u32>,
    track_ids: HashMap<MediaKind, String>,
    tracks: Mutex<HashMap<MediaKind, Track>>,
}

impl RawPublisher {
    pub async fn new(audio: u32, video: u32) -> RawPublisher {
        let mut media_engine = MediaEngine::default();
        for (kind, pt) in [(MediaKind::Audio, AUDIO_PT), (MediaKind::Video, VIDEO_PT)] {
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: codec(kind),
                        payload_type: pt,
                    },
                    codec_kind(kind),
                )
                .unwrap();
        }
        let (gathered_tx, gathered) = watch::channel(false);
        let (connected_tx, connected) = watch::channel(false);
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            connected: connected_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("raw peer connection");
        RawPublisher {
            pc: Arc::new(pc),
            gathered: Mutex::new(gathered),
            connected,
            ssrcs: HashMap::from([(MediaKind::Audio, audio), (MediaKind::Video, video)]),
            track_ids: HashMap::from([
                (MediaKind::Audio, "raw-audio".to_owned()),
                (MediaKind::Video, "raw-video".to_owned()),
            ]),
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// The track id a kind's `a=msid` names in this peer's answers.
    pub fn track_id(&self, kind: MediaKind) -> &str {
        &self.track_ids[&kind]
    }

    /// Applies `offer`, attaches the tracks (first time), answers, and returns the answer as
    /// `munge` rewrites it (the local description keeps the real one).
    pub async fn answer(
        &self,
        offer: SessionDescription,
        munge: impl Fn(String) -> String,
    ) -> SessionDescription {
        assert_eq!(offer.kind, SdpKind::Offer);
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer.sdp).unwrap())
            .await
            .unwrap();
        let mut tracks = self.tracks.lock().await;
        for kind in [MediaKind::Audio, MediaKind::Video] {
            if tracks.contains_key(&kind) {
                continue;
            }
            let encodings = vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(self.ssrcs[&kind]),
                    ..Default::default()
                },
                codec: codec(kind),
                ..Default::default()
            }];
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "raw-stream".to_owned(),
                self.track_ids[&kind].clone(),
                format!("raw-{kind:?}"),
                codec_kind(kind),
                encodings,
            )));
            let sender = self
                .pc
                .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            tracks.insert(kind, Track { track, sender });
        }
        drop(tracks);
        let answer = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(answer).await.unwrap();
        let mut gathered = self.gathered.lock().await;
        within("raw peer ICE gathering", gathered.wait_for(|g| *g))
            .await
            .unwrap();
        let local = self.pc.local_description().await.unwrap();
        SessionDescription {
            kind: SdpKind::Answer,
            sdp: munge(local.sdp),
        }
    }

    /// Joins the room as publisher `id`, answering the first offer through `munge`.
    pub async fn join(&self, room: &Room, id: ParticipantId, munge: impl Fn(String) -> String) {
        let offer = room.sfu.add_participant(id).await.expect("relay offer");
        self.answer_until_settled(room, id, offer, &munge).await;
    }

    /// Answers `offer` (and any follow-up the relay sends back) through `munge`.
    pub async fn answer_until_settled(
        &self,
        room: &Room,
        id: ParticipantId,
        offer: SessionDescription,
        munge: &impl Fn(String) -> String,
    ) {
        let mut offer = Some(offer);
        while let Some(o) = offer.take() {
            let answer = self.answer(o, munge).await;
            offer = room
                .sfu
                .handle_answer(id, answer)
                .await
                .expect("relay applies the raw answer");
        }
    }

    pub async fn wait_connected(&self) {
        let mut c = self.connected.clone();
        within("raw peer Connected", c.wait_for(|c| *c))
            .await
            .unwrap();
    }

    /// Sends one RTP packet of `kind` (under the kind's SSRC).
    pub async fn send(&self, kind: MediaKind, seq: u16, payload: &[u8]) {
        let ssrc = self.ssrcs[&kind];
        let tracks = self.tracks.lock().await;
        let t = &tracks[&kind];
        let pt = t
            .sender
            .get_parameters()
            .await
            .unwrap()
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .expect("negotiated payload type");
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        t.track.write_rtp(packet).await.expect("raw write_rtp");
    }
}

/// Announces `decoy` as well, right before `real`: every `a=ssrc:<real> ...` line gets a copy
/// for `decoy` in front of it.
pub fn add_decoy_ssrc(sdp: &str, real: u32, decoy: u32) -> String {
    let attr = format!("a=ssrc:{real} ");
    let mut out = String::with_capacity(sdp.len() * 2);
    for line in sdp.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(&attr) {
            out.push_str(&format!("a=ssrc:{decoy} {rest}"));
        }
        out.push_str(line);
    }
    out
}

/// Announces `to` wherever the SDP announces `from`.
pub fn replace_ssrc(sdp: &str, from: u32, to: u32) -> String {
    sdp.replace(&format!("a=ssrc:{from} "), &format!("a=ssrc:{to} "))
}
