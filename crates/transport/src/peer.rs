//! PeerConnection setup shared by the relay and the client: host candidates on one
//! configured address (loopback by default), optionally advertised as a public address behind
//! a 1:1 NAT, no STUN, the SFrame payload "codecs", and the interceptor chain.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use blindcall_media::MediaKind;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSdpType,
    RTCSessionDescription,
};

use crate::error::TransportError;
use crate::feedback::{KeyframeRequestInterceptor, SLOT};

/// MIME type of the SFrame audio payload (opaque to the relay).
pub const AUDIO_MIME: &str = "audio/sframe";
/// MIME type of the SFrame video payload (opaque to the relay).
pub const VIDEO_MIME: &str = "video/sframe";
/// Payload type the relay offers for audio (a leg may negotiate another).
pub const AUDIO_PT: u8 = 110;
/// Payload type the relay offers for video (a leg may negotiate another).
pub const VIDEO_PT: u8 = 111;

/// Where a PeerConnection's UDP socket lives and which address it tells the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaNetwork {
    /// Local address to bind (an ephemeral port on it). `127.0.0.1` by default: a relay or
    /// client reachable from other machines binds one of its interface addresses. A wildcard
    /// (`0.0.0.0`) offers every non-loopback interface.
    pub bind: IpAddr,
    /// The public address to advertise instead of the bound one, for a relay behind a 1:1
    /// NAT (e.g. a cloud instance's public address); `None` advertises the bound address.
    pub advertise: Option<IpAddr>,
}

impl Default for MediaNetwork {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
        }
    }
}

/// How long to wait for ICE gathering (host candidates on loopback take milliseconds).
pub(crate) const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// An SDP offer (always from the relay).
    Offer,
    /// An SDP answer (always from the client).
    Answer,
}

/// A session description to carry over the control channel, with all ICE candidates
/// included (no trickle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Offer or answer.
    pub kind: SdpKind,
    /// The SDP text.
    pub sdp: String,
}

impl SessionDescription {
    pub(crate) fn into_rtc(self) -> Result<RTCSessionDescription, TransportError> {
        Ok(match self.kind {
            SdpKind::Offer => RTCSessionDescription::offer(self.sdp)?,
            SdpKind::Answer => RTCSessionDescription::answer(self.sdp)?,
        })
    }

    pub(crate) fn from_rtc(desc: RTCSessionDescription) -> Result<Self, TransportError> {
        let kind = match desc.sdp_type {
            RTCSdpType::Offer => SdpKind::Offer,
            RTCSdpType::Answer => SdpKind::Answer,
            _ => {
                return Err(TransportError::WrongSdpType {
                    expected: "offer or answer",
                });
            }
        };
        Ok(Self {
            kind,
            sdp: desc.sdp,
        })
    }
}

/// The state of a PeerConnection, as reported to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not connected yet.
    New,
    /// ICE/DTLS in progress.
    Connecting,
    /// Media can flow.
    Connected,
    /// Connectivity lost; may recover.
    Disconnected,
    /// Connectivity failed for good.
    Failed,
    /// Closed.
    Closed,
}

impl ConnectionState {
    fn from_rtc(s: RTCPeerConnectionState) -> Self {
        match s {
            RTCPeerConnectionState::Connecting => Self::Connecting,
            RTCPeerConnectionState::Connected => Self::Connected,
            RTCPeerConnectionState::Disconnected => Self::Disconnected,
            RTCPeerConnectionState::Failed => Self::Failed,
            RTCPeerConnectionState::Closed => Self::Closed,
            _ => Self::New,
        }
    }
}

/// The codec registration for a kind.
pub(crate) fn codec(kind: MediaKind) -> RTCRtpCodec {
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
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: "pli".to_owned(),
                },
                RTCPFeedback {
                    typ: "ccm".to_owned(),
                    parameter: "fir".to_owned(),
                },
            ],
        },
    }
}

/// Events a PeerConnection reports to its owner.
pub(crate) enum PcEvent {
    Track(Arc<dyn TrackRemote>),
    State(ConnectionState),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
    gathered: watch::Sender<bool>,
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
            .events
            .send(PcEvent::State(ConnectionState::from_rtc(state)));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::Track(track));
    }
}

/// A built PeerConnection with its event stream and gathering flag.
pub(crate) struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub events: mpsc::UnboundedReceiver<PcEvent>,
    gathered: watch::Receiver<bool>,
}

impl Peer {
    /// Builds a PeerConnection on an ephemeral UDP port of `net.bind`, without STUN.
    pub(crate) async fn build(net: MediaNetwork) -> Result<Self, TransportError> {
        let mut media_engine = MediaEngine::default();
        for (kind, pt, ck) in [
            (MediaKind::Audio, AUDIO_PT, RtpCodecKind::Audio),
            (MediaKind::Video, VIDEO_PT, RtpCodecKind::Video),
        ] {
            media_engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec(kind),
                    payload_type: pt,
                },
                ck,
            )?;
        }
        let registry = configure_nack(Registry::new(), &mut media_engine);
        let registry = configure_rtcp_reports(registry);
        let registry = registry.with(Slot::from(SLOT), KeyframeRequestInterceptor::default());

        let (events_tx, events) = mpsc::unbounded_channel();
        let (gathered_tx, gathered) = watch::channel(false);
        let handler = Arc::new(Handler {
            events: events_tx,
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_runtime(Arc::new(crate::runtime::BufferedTokio::new()))
            .with_udp_addrs(vec![SocketAddr::new(net.bind, 0)])
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            events,
            gathered,
        })
    }
}

/// Rewrites the address of every ICE candidate on `bound` to `public` (RFC 8839 candidate
/// attribute: `foundation component transport priority address port typ ...`). The webrtc
/// stack in use does not apply a 1:1 NAT mapping itself; connectivity checks sent to the
/// public address reach the bound socket through the NAT.
pub fn advertise_candidates(sdp: &str, bound: IpAddr, public: IpAddr) -> String {
    let bound = bound.to_string();
    let public = public.to_string();
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        let fields: Vec<&str> = body.split(' ').collect();
        if body.starts_with("a=candidate:") && fields.get(4) == Some(&bound.as_str()) {
            let mut fields = fields;
            fields[4] = &public;
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    out
}

/// Applies `desc` locally, waits for gathering and returns the full local description, its
/// candidates advertised as `net.advertise` when set.
pub(crate) async fn set_local_and_export(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
    desc: RTCSessionDescription,
    net: MediaNetwork,
) -> Result<SessionDescription, TransportError> {
    pc.set_local_description(desc).await?;
    tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done))
        .await
        .map_err(|_| TransportError::GatheringTimeout(GATHER_TIMEOUT))?
        .map_err(|_| TransportError::Closed)?;
    let local = pc
        .local_description()
        .await
        .ok_or(TransportError::NoLocalDescription)?;
    let mut desc = SessionDescription::from_rtc(local)?;
    if let Some(public) = net.advertise {
        desc.sdp = advertise_candidates(&desc.sdp, net.bind, public);
    }
    Ok(desc)
}

impl Peer {
    /// Splits off the gathering flag (for [`set_local_and_export`]).
    pub(crate) fn gathered(&self) -> watch::Receiver<bool> {
        self.gathered.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: MT-NET-2
    #[test]
    fn only_candidates_on_the_bound_address_are_rewritten() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.5\r\n\
                   a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 10.0.0.55 5001 typ host\r\n\
                   a=candidate:3 1 udp 1694498815 10.0.0.5 5002 typ srflx raddr 10.0.0.5 rport 9\n";
        let out = advertise_candidates(
            sdp,
            "10.0.0.5"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            "198.51.100.7"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        );
        assert_eq!(
            out,
            "v=0\r\nc=IN IP4 10.0.0.5\r\n\
             a=candidate:1 1 udp 2130706431 198.51.100.7 5000 typ host\r\n\
             a=candidate:2 1 udp 2130706431 10.0.0.55 5001 typ host\r\n\
             a=candidate:3 1 udp 1694498815 198.51.100.7 5002 typ srflx raddr 10.0.0.5 rport 9\n"
        );
    }
}
