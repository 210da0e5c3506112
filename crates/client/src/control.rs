//! The TLS control channel: one reader task and one writer task around a TLS 1.3 stream.
//! Messages are `blindcall-proto` frames; nothing here interprets them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blindcall_proto::{Body, ControlMessage, DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::error::{JoinError, OptionsError};

/// What the reader task delivers.
#[derive(Debug)]
pub(crate) enum ControlIn {
    /// A decoded message.
    Msg(Body),
    /// A frame that did not decode, or a framing error: the stream is unusable.
    Malformed,
    /// The relay closed the connection (or it broke).
    Closed,
}

/// Both directions of a connected control channel.
pub(crate) struct Control {
    pub(crate) tx: mpsc::UnboundedSender<Body>,
    pub(crate) rx: mpsc::UnboundedReceiver<ControlIn>,
    /// The reader and writer tasks.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// A detached channel keeps its own sender, so reading it waits instead of ending.
    _idle: Option<mpsc::UnboundedSender<ControlIn>>,
}

impl Control {
    /// A channel connected to nothing (before the first connection, or after a drop).
    pub(crate) fn detached() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        let (idle, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx,
            tasks: Vec::new(),
            _idle: Some(idle),
        }
    }

    /// Drops the connection at once, without a TLS goodbye (the relay then keeps the
    /// membership for its grace period).
    pub(crate) fn abort(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        *self = Self::detached();
    }
}

/// Connects over TCP, runs the TLS handshake and starts the reader and writer.
pub(crate) async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
    timeout: Duration,
    bind: Option<std::net::IpAddr>,
) -> Result<Control, JoinError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| OptionsError::ServerName(server_name.to_owned()))?;
    let tcp_connect = async {
        match bind {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
        }
    };
    let tcp = tokio::time::timeout(timeout, tcp_connect)
        .await
        .map_err(|_| JoinError::Timeout {
            what: "TCP connect",
        })?
        .map_err(|source| JoinError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(timeout, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| JoinError::Timeout {
            what: "TLS handshake",
        })?
        .map_err(JoinError::Tls)?;
    let (mut read, mut write) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Body>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = in_tx.send(ControlIn::Closed);
                    return;
                }
                Ok(n) => n,
            };
            let mut input = &buf[..n];
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(frame)) => {
                        let item = match ControlMessage::decode(&frame) {
                            Ok(m) => ControlIn::Msg(m.body),
                            Err(_) => ControlIn::Malformed,
                        };
                        let stop = matches!(item, ControlIn::Malformed);
                        if in_tx.send(item).is_err() || stop {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        let _ = in_tx.send(ControlIn::Malformed);
                        return;
                    }
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(body) = out_rx.recv().await {
            let msg = ControlMessage::new(body);
            let Ok(encoded) = msg.encode() else { continue };
            let Ok(frame) = blindcall_proto::encode_frame(&encoded, DEFAULT_MAX_FRAME_LEN) else {
                continue;
            };
            if write.write_all(&frame).await.is_err() || write.flush().await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    Ok(Control {
        tx: out_tx,
        rx: in_rx,
        tasks: vec![reader, writer],
        _idle: None,
    })
}
