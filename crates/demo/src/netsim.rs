//! A network path that can fail: a TCP relay between a client and the relay's control port
//! whose owner can cut it (connections reset at once) or black-hole it (bytes stop flowing in
//! both directions and new connections hang, as when a Wi-Fi network drops), then restore
//! it. For reconnection tests and the demo's dropped participant; loopback only.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The state of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Bytes flow.
    Up,
    /// Nothing flows; connections stay open, new ones are accepted but carry nothing.
    Blackhole,
}

/// A controllable TCP path to `target`.
#[derive(Debug, Clone)]
pub struct FaultyPath {
    addr: SocketAddr,
    state: Arc<watch::Sender<PathState>>,
}

impl FaultyPath {
    /// Listens on a free loopback port and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(PathState::Up);
        let state = Arc::new(tx);
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = st.subscribe();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, rx).await;
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// The address clients connect to instead of the relay's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the path's state.
    pub fn set(&self, state: PathState) {
        self.state.send_replace(state);
    }
}

/// Copies both ways while the path is up; while it is black-holed, holds the bytes back (they
/// are dropped: a dead network loses them) and keeps the sockets open.
async fn relay(client: TcpStream, server: TcpStream, state: watch::Receiver<PathState>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let a = tokio::spawn(pump(cr, sw, state.clone()));
    let b = tokio::spawn(pump(sr, cw, state));
    let _ = tokio::join!(a, b);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<PathState>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *state.borrow() == PathState::Blackhole {
            // Lost in the dead network. The stream is now broken for good (TLS records are
            // missing), as a TCP connection across a long outage is: the client must notice
            // and reconnect.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
