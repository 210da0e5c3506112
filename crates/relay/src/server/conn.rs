//! One connection's reader and writer.

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ShellLimits;
use super::driver::Cmd;
use crate::ds::ConnId;
use crate::metrics::ShellMetrics;

/// What a connection's tasks share.
pub(super) struct Ctx {
    pub id: ConnId,
    pub limits: ShellLimits,
    pub to_driver: mpsc::Sender<Cmd>,
    pub shell: ShellMetrics,
    /// Ends both halves at once (forced close: overflow, shutdown grace expired, writer done).
    pub cancel: CancellationToken,
}

type Stream = TlsStream<TcpStream>;

/// Register the connection with the driver and run its reader and writer until both end.
pub(super) async fn serve(stream: Stream, ctx: Ctx) {
    let (rd, wr) = tokio::io::split(stream);
    let (wtx, wrx) = mpsc::channel(ctx.limits.writer_queue);
    let opened = Cmd::Opened {
        id: ctx.id,
        writer: wtx,
        cancel: ctx.cancel.clone(),
    };
    if ctx.to_driver.send(opened).await.is_err() {
        return;
    }
    tokio::join!(read_loop(rd, &ctx), write_loop(wr, wrx, &ctx));
    debug!(conn = ctx.id.0, "connection ended");
}

async fn read_loop(mut rd: ReadHalf<Stream>, ctx: &Ctx) {
    let mut buf = vec![0u8; ctx.limits.read_chunk];
    // The end of stream is clean only after the peer's TLS close_notify (rustls reports an
    // end of stream without it as `UnexpectedEof`): a deliberate goodbye.
    let mut goodbye = false;
    loop {
        let r = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            r = rd.read(&mut buf) => r,
        };
        let n = match r {
            Ok(0) => {
                goodbye = true;
                break;
            }
            Ok(n) => n,
            Err(e) => {
                debug!(conn = ctx.id.0, error = %e, "read failed");
                break;
            }
        };
        ctx.shell
            .bytes_in
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        let cmd = Cmd::Received {
            id: ctx.id,
            bytes: buf[..n].to_vec(),
            at: Instant::now(),
        };
        let sent = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            s = ctx.to_driver.send(cmd) => s,
        };
        if sent.is_err() {
            break;
        }
    }
    // The driver ignores this when it already closed the connection.
    let _ = ctx
        .to_driver
        .send(Cmd::Closed {
            id: ctx.id,
            goodbye,
        })
        .await;
}

async fn write_loop(mut wr: WriteHalf<Stream>, mut rx: mpsc::Receiver<Vec<u8>>, ctx: &Ctx) {
    loop {
        let first = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            m = rx.recv() => m,
        };
        let Some(first) = first else {
            // The driver closed the queue: everything queued was written; say goodbye.
            let _ = tokio::select! {
                _ = ctx.cancel.cancelled() => Ok(()),
                r = wr.shutdown() => r,
            };
            break;
        };
        // Write what is queued, then flush once.
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            r = write_batch(&mut wr, &batch) => r,
        };
        match written {
            Ok(n) => {
                ctx.shell.bytes_out.inc_by(n);
            }
            Err(e) => {
                debug!(conn = ctx.id.0, error = %e, "write failed");
                break;
            }
        }
    }
    // Writer done (closed, failed or cancelled): end the reader too.
    ctx.cancel.cancel();
}

async fn write_batch(wr: &mut WriteHalf<Stream>, batch: &[Vec<u8>]) -> std::io::Result<u64> {
    let mut n = 0u64;
    for f in batch {
        wr.write_all(f).await?;
        n = n.saturating_add(u64::try_from(f.len()).unwrap_or(u64::MAX));
    }
    wr.flush().await?;
    Ok(n)
}
