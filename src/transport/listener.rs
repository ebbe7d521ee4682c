//! The HTTP listener: accepts TCP connections under a connection limit and serves
//! each one as HTTP/1.1 (with WebSocket upgrades) with read timeouts.
//!
//! What it bounds (see `docs/security.md`):
//! - open connections: at most `max_connections`, HTTP, WebSocket and QUIC together.
//!   The slot is held by the socket itself, so an upgraded WebSocket keeps it until it
//!   closes. One more is answered `503` in the JSON envelope and closed (over TLS it
//!   is closed without an answer: a 503 would need a handshake first);
//! - with `[tls]`, the TLS handshake must finish within `tls_handshake_timeout_secs`;
//! - request headers must arrive within `http_header_timeout_secs`; hyper starts that
//!   clock whenever a connection waits for a request, so it is also the idle limit of
//!   a kept-alive connection;
//! - at most `http_max_headers` header fields and `http_max_header_bytes` of request
//!   head (hyper answers more with a bare `431`; a malformed request gets a bare `400`);
//! - small reads (the WebSocket layer's) read up to 4 KiB from the socket at once
//!   and keep the rest for the next ones (`read_ahead`): at most 4 KiB per
//!   connection, held only while it is being read;
//! - a write to a peer that does not read fails after `write_timeout_secs` without
//!   progress, which closes the connection (pipelined requests whose answers are never
//!   read cannot hold a slot).
//!
//! Bodies are bounded by the handlers (`api::read_body`), which read them only
//! after checking credentials from headers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::read_ahead::ReadAhead;
use crate::config::Config;
use crate::logging::LogLimiter;

/// The body of the answer to a connection over the limit.
const REFUSAL_BODY: &str =
    "{\"code\":503,\"message\":\"too many connections; try again later\",\"data\":null}";

/// The whole answer to a connection over the limit.
fn refusal() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    )
    .into_bytes()
}

/// Refused connections being answered at once; more are closed without an answer.
const REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection is given to take its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// A socket holding one connection slot until it is dropped, whose writes fail
/// after `write_timeout` without progress.
struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    write_timeout: Duration,
    /// The write deadline, allocated at the first blocked write and re-armed (a
    /// cheap reset to a later time) at the start of each later blocked period.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A write is blocked now (the deadline is running).
    blocked: bool,
    /// Bytes read ahead of a small read (`read_ahead`).
    ahead: ReadAhead,
}

impl Counted {
    /// Passes a write's result through; a write still blocked after the timeout
    /// becomes an error.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.blocked = false;
            return polled;
        }
        let timeout = self.write_timeout;
        if !self.blocked {
            self.blocked = true;
            if let Some(deadline) = self.deadline.as_mut() {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timeout);
            }
        }
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                crate::log_limited!(
                    info,
                    "connection closed: peer not reading within write_timeout_secs"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer did not read within write_timeout_secs",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.ahead.poll_read(&mut this.tcp, cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.bounded(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.bounded(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Open connections, for `/healthz` and tests.
#[derive(Debug)]
pub struct ConnectionSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Self {
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Takes a slot for a new connection, `None` at the limit.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// The limit (`max_connections`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits until `n` slots are free at once (they are taken only for that instant).
    pub async fn until_free(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(n).await;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given: a handshake must finish
/// within `tls_handshake_timeout_secs`) until `stop` fires, then lets open HTTP requests finish
/// (up to `grace`). Upgraded WebSockets are not waited for here: they stop on the
/// same token and are tracked by the server.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    config: &Config,
    slots: &ConnectionSlots,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    let handshake_timeout = Duration::from_secs(config.tls_handshake_timeout_secs);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.http_header_timeout_secs))
        .max_headers(config.http_max_headers)
        .max_buf_size(config.http_max_header_bytes)
        .keep_alive(true);
    let open = TaskTracker::new();
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    static ACCEPT_FAILED: LogLimiter = LogLimiter::new();
    static FULL: LogLimiter = LogLimiter::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                if let Some(skipped) = ACCEPT_FAILED.allow() {
                    tracing::warn!(error = %e, skipped, "accept failed; backing off");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(slot) = slots.try_acquire() else {
            if let Some(skipped) = FULL.allow() {
                tracing::warn!(
                    %peer,
                    max_connections = slots.max,
                    skipped,
                    "connection refused: max_connections reached"
                );
            }
            if tls.is_some() {
                // A 503 would need a TLS handshake first: during a flood, closing
                // costs less. The client sees its connection closed.
                drop(tcp);
            } else {
                refuse(tcp, &refusals);
            }
            continue;
        };
        let counted = Counted {
            tcp,
            _slot: slot,
            write_timeout: Duration::from_secs(config.write_timeout_secs),
            deadline: None,
            blocked: false,
            ahead: ReadAhead::default(),
        };
        let service = TowerToHyperService::new(app.clone());
        let (http, stop) = (http.clone(), stop.clone());
        match &tls {
            None => {
                open.spawn(serve_connection(http, counted, service, stop, peer));
            }
            Some(acceptor) => {
                let accepting = acceptor.accept(counted);
                open.spawn(async move {
                    match tokio::time::timeout(handshake_timeout, accepting).await {
                        Ok(Ok(tls)) => serve_connection(http, tls, service, stop, peer).await,
                        Ok(Err(e)) => {
                            crate::log_limited!(info, %peer, error = %e, "tls handshake failed (plaintext to the TLS port?)");
                        }
                        Err(_) => {
                            crate::log_limited!(info, %peer, "tls handshake not finished within tls_handshake_timeout_secs");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    open.close();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    if tokio::time::timeout(grace, open.wait()).await.is_err() {
        tracing::warn!("shutdown: HTTP requests still open after the grace period");
    }
}

/// Serves HTTP/1.1 (with upgrades) on one accepted connection until it ends, or
/// finishes its request in progress once `stop` fires.
async fn serve_connection<I>(
    http: hyper::server::conn::http1::Builder,
    io: I,
    service: TowerToHyperService<axum::Router>,
    stop: CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stop.cancelled() => {
            // Finish the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match ended {
        Err(e) if e.is_timeout() => {
            crate::log_limited!(info, %peer, "http connection closed: headers not received within http_header_timeout_secs");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "http connection ended with an error"),
        Ok(()) => {}
    }
}

/// Answers a connection over the limit with a 503 and closes it. At most
/// [`REFUSALS_IN_FLIGHT`] are answered at once, each for at most [`REFUSAL_LINGER`];
/// beyond that the socket is closed at once, so refusing costs bounded resources.
fn refuse(tcp: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut tcp = tcp;
        let answer = async {
            tcp.write_all(&refusal()).await?;
            tcp.shutdown().await?;
            // Read what the client sent, so closing sends FIN rather than RST and
            // the client reads the answer.
            let mut sink = [0u8; 1024];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
    });
}

/// Raises the soft open-files limit to the hard limit, logs both, and warns when
/// `max_connections` does not fit in it.
pub fn raise_open_files_limit(max_connections: usize) {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => {
            let raised = if soft < hard {
                rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).map(|_| hard)
            } else {
                Ok(soft)
            };
            let now = match raised {
                Ok(now) => {
                    tracing::info!(soft_was = soft, soft = now, hard, "open files limit");
                    now
                }
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise open files limit");
                    soft
                }
            };
            // The store, listeners and logs need some descriptors of their own.
            if (max_connections as u64).saturating_add(100) > now {
                tracing::warn!(
                    max_connections,
                    open_files_limit = now,
                    "max_connections does not fit in the open files limit; accept will fail before the limit is reached"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}
