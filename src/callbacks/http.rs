//! The callback HTTP client: keep-alive HTTP/1.1 connections to receivers
//! (hyper's connection API over TCP, or rustls for https), each driven by the
//! attempt that holds it — no connection task and no hand-off between threads per
//! request — and a pool of idle connections per receiver origin.
//!
//! Redirects are never followed (a 3xx is an answer like any other), no proxy is
//! used, and with `callback_refuse_private` a name that resolves only to
//! non-public addresses is refused (`target::is_public`). A request on a pooled
//! connection that the receiver had closed meanwhile is sent again once on a new
//! connection (it was not answered; the receiver dedups by delivery id anyway).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::target;

/// How long a connection may sit idle in the pool (receivers close theirs too:
/// one closed meanwhile is noticed before use, or retried once).
const IDLE_FOR: Duration = Duration::from_secs(30);

/// How long each address but the last of a name may take to connect.
const CONNECT_PER_ADDRESS: Duration = Duration::from_secs(1);
/// Most idle connections kept, all origins together.
const MAX_IDLE_TOTAL: usize = 4096;

/// Where a connection goes: scheme, host and port of the callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Driver = Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>;

/// One HTTP/1.1 connection: the request handle and the connection's state
/// machine, polled by whoever sends on it.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection is over (dropping it fails what was queued).
    driver: Option<Pin<Box<Driver>>>,
}

impl Conn {
    /// Whether the connection still looks usable (the receiver has not closed it).
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        // Polling reads a pending close; the next exchange polls it again.
        let pending = match self.driver.as_mut() {
            Some(driver) => driver.as_mut().poll(&mut cx).is_pending(),
            None => false,
        };
        pending && !self.sender.is_closed()
    }
}

/// Why an exchange failed, and whether the request may have reached the receiver.
struct Failed {
    text: String,
    /// No answer was read: on a pooled connection, worth one more try.
    unanswered: bool,
}

/// The client shared by all attempts.
pub(super) struct Client {
    tls: tokio_rustls::TlsConnector,
    refuse_private: bool,
    max_idle_per_origin: usize,
    user_agent: HeaderValue,
    idle: parking_lot::Mutex<HashMap<Origin, Vec<(Conn, Instant)>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("callbacks::http::Client")
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(super) fn new(
        refuse_private: bool,
        max_idle_per_origin: usize,
    ) -> Result<Self, crate::tls::TlsError> {
        let config = crate::tls::ClientTrust::WebPki.client_config(&[b"http/1.1"])?;
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            refuse_private,
            max_idle_per_origin: max_idle_per_origin.max(1),
            user_agent: HeaderValue::from_static(concat!("courier/", env!("CARGO_PKG_VERSION"))),
            idle: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// POSTs `body` with `headers` to `url` (checked by `target::check`) and
    /// returns the answer's status; at most `max_response` bytes of the answer are
    /// read. The caller bounds the time.
    pub(super) async fn post(
        &self,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        max_response: usize,
    ) -> Result<StatusCode, String> {
        let origin = origin(url)?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = match url.port() {
            Some(port) => format!("{}:{port}", origin.host),
            None => origin.host.clone(),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| "bad host".to_owned())?;
        let mut pooled = self.checkout(&origin);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect(&origin).await?,
            };
            let mut request = Request::post(path.as_str())
                .header(hyper::header::HOST, host.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, self.user_agent.clone())
                .body(Full::new(body.clone()))
                .map_err(|e| format!("bad request: {e}"))?;
            for (name, value) in headers {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            match exchange(&mut conn, request, max_response).await {
                Ok((status, reusable)) => {
                    if reusable {
                        self.checkin(origin, conn);
                    }
                    return Ok(status);
                }
                Err(f) if reused && f.unanswered => continue,
                Err(f) => return Err(f.text),
            }
        }
    }

    /// Drops idle connections older than [`IDLE_FOR`] or closed by the receiver.
    pub(super) fn sweep(&self) {
        let mut idle = self.idle.lock();
        idle.retain(|_, conns| {
            conns.retain_mut(|(conn, since)| since.elapsed() < IDLE_FOR && conn.alive());
            !conns.is_empty()
        });
    }

    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let conns = idle.get_mut(origin)?;
        while let Some((mut conn, since)) = conns.pop() {
            if since.elapsed() < IDLE_FOR && conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, origin: Origin, conn: Conn) {
        let mut idle = self.idle.lock();
        let total: usize = idle.values().map(Vec::len).sum();
        let conns = idle.entry(origin).or_default();
        if conns.len() < self.max_idle_per_origin && total < MAX_IDLE_TOTAL {
            conns.push((conn, Instant::now()));
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, String> {
        let cannot = |e: &dyn std::fmt::Display| format!("cannot connect: {e}");
        let addrs = self.resolve(origin).await?;
        let mut tcp = None;
        let mut last = String::from("no address");
        let count = addrs.len();
        for (i, addr) in addrs.into_iter().enumerate() {
            // Every address but the last gets a short while (an unreachable IPv6
            // one must not use up the attempt); the last has the attempt's time.
            let connect = TcpStream::connect(addr);
            let result = if i + 1 < count {
                match tokio::time::timeout(CONNECT_PER_ADDRESS, connect).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            } else {
                connect.await
            };
            match result {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| cannot(&last))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if origin.https {
            // An IPv6 literal comes in brackets from the URL; the name has none.
            let bare = origin.host.trim_start_matches('[').trim_end_matches(']');
            let name =
                rustls::pki_types::ServerName::try_from(bare.to_owned()).map_err(|e| cannot(&e))?;
            Box::new(self.tls.connect(name, tcp).await.map_err(|e| cannot(&e))?)
        } else {
            Box::new(tcp)
        };
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| cannot(&e))?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
        })
    }

    /// The addresses of `origin`: with `refuse_private`, only public ones (a
    /// literal address was checked with the URL).
    async fn resolve(&self, origin: &Origin) -> Result<Vec<SocketAddr>, String> {
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, origin.port))
            .await
            .map_err(|e| format!("cannot connect: {host}: {e}"))?
            .filter(|a| !self.refuse_private || target::is_public(a.ip()))
            .collect();
        if found.is_empty() {
            return Err(format!(
                "cannot connect: {host} has no public address (callback_refuse_private is on)"
            ));
        }
        Ok(found)
    }
}

fn origin(url: &Url) -> Result<Origin, String> {
    let host = url.host_str().ok_or("callback URL has no host")?.to_owned();
    let https = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    Ok(Origin { https, host, port })
}

/// Sends `request` on `conn` and reads the answer (up to `max` bytes), driving the
/// connection meanwhile. `Ok((status, reusable))`.
async fn exchange(
    conn: &mut Conn,
    request: Request<Full<Bytes>>,
    max: usize,
) -> Result<(StatusCode, bool), Failed> {
    let Conn { sender, driver } = conn;
    let work = async {
        // Only a request the connection gave up on before an answer is worth
        // sending again (it closed: stale, or the receiver read it and hung up).
        let unanswered = |e: hyper::Error| Failed {
            unanswered: e.is_canceled() || e.is_incomplete_message() || e.is_closed(),
            text: describe(&e),
        };
        sender.ready().await.map_err(unanswered)?;
        let response = sender.send_request(request).await.map_err(unanswered)?;
        let status = response.status();
        let mut body = response.into_body();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failed {
                text: format!("bad answer: {}", describe(&e)),
                unanswered: false,
            })?;
            if let Some(data) = frame.data_ref() {
                read += data.len();
                if read > max {
                    // The rest is not read: the connection cannot be reused.
                    return Ok((status, false));
                }
            }
        }
        Ok((status, true))
    };
    tokio::pin!(work);
    // The request and the connection, polled together in this task.
    let first = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        match driver.as_mut() {
            Some(d) => match d.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            // Over already: the request was failed when it was dropped.
            None => Poll::Ready(None),
        }
    })
    .await;
    match first {
        Some(result) => result,
        None => {
            // The connection is over. Dropping it fails a request it never wrote;
            // an answer it delivered before is still read.
            *driver = None;
            match work.await {
                Ok((status, _)) => Ok((status, false)),
                Err(f) => Err(f),
            }
        }
    }
}

/// A hyper error with its causes, in a few words.
fn describe(e: &hyper::Error) -> String {
    let mut text = format!("request failed: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    crate::names::truncate(&text, 300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request head and body (Content-Length) from `s`.
    async fn read_request(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Some(text);
                }
            }
        }
    }

    /// A receiver that answers `answer` to each request and closes each
    /// connection after `per_conn` requests; it reports every request head.
    async fn receiver(
        answer: &'static str,
        per_conn: usize,
    ) -> (Url, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/cb?x=1", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn_no = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                conn_no += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    for _ in 0..per_conn {
                        let Some(head) = read_request(&mut s).await else {
                            return;
                        };
                        let _ = tx.send(format!("conn {conn_no}: {head}"));
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    // Closed without saying so (no `Connection: close`).
                });
            }
        });
        (url, rx)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn keeps_the_connection_and_sends_the_headers() {
        let (url, mut seen) = receiver(OK, 10).await;
        let client = Client::new(false, 4).unwrap();
        let headers = [(
            HeaderName::from_static("x-courier-delivery"),
            HeaderValue::from(7u64),
        )];
        for _ in 0..3 {
            let status = client
                .post(&url, &headers, Bytes::from_static(b"{}"), 1024)
                .await;
            assert_eq!(status, Ok(StatusCode::OK));
        }
        for _ in 0..3 {
            let head = seen.recv().await.unwrap();
            assert!(
                head.starts_with("conn 1: POST /cb?x=1 HTTP/1.1\r\n"),
                "{head}"
            );
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("x-courier-delivery: 7\r\n"), "{head}");
            assert!(
                lower.contains("content-type: application/json\r\n"),
                "{head}"
            );
            assert!(
                lower.contains(&format!("host: {}\r\n", url.authority())),
                "{head}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_the_receiver_closed_is_replaced_without_failing() {
        let (url, mut seen) = receiver(OK, 1).await;
        let client = Client::new(false, 4).unwrap();
        for _ in 0..3 {
            let status = client
                .post(&url, &[], Bytes::from_static(b"{}"), 1024)
                .await;
            assert_eq!(status, Ok(StatusCode::OK));
        }
        for n in 1..=3 {
            assert!(seen
                .recv()
                .await
                .unwrap()
                .starts_with(&format!("conn {n}: ")));
        }
    }

    #[tokio::test]
    async fn redirects_are_answers_and_long_answers_are_cut() {
        let (url, _seen) = receiver(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
            10,
        )
        .await;
        let client = Client::new(false, 4).unwrap();
        let status = client
            .post(&url, &[], Bytes::from_static(b"{}"), 1024)
            .await;
        assert_eq!(status, Ok(StatusCode::FOUND));

        const LONG: &str = concat!(
            "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        let (url, mut seen) = receiver(LONG, 10).await;
        for _ in 0..2 {
            // Only the first 10 bytes of the answer are wanted: the rest is not read.
            let status = client.post(&url, &[], Bytes::from_static(b"{}"), 10).await;
            assert_eq!(status, Ok(StatusCode::OK));
        }
        // Two requests: the second could not reuse the first's unread connection.
        assert!(seen.recv().await.unwrap().starts_with("conn 1: "));
        assert!(seen.recv().await.unwrap().starts_with("conn 2: "));
    }

    #[tokio::test]
    async fn a_receiver_that_hangs_up_at_once_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let client = Client::new(false, 4).unwrap();
        let post = client.post(&url, &[], Bytes::from_static(b"{}"), 10);
        // No timeout of its own: it must end because the connection did.
        let result = tokio::time::timeout(Duration::from_secs(10), post).await;
        assert!(matches!(result, Ok(Err(_))), "{result:?}");
    }

    #[tokio::test]
    async fn private_names_are_refused_when_asked() {
        let client = Client::new(true, 4).unwrap();
        let url = Url::parse("http://localhost:9/cb").unwrap();
        let err = client.post(&url, &[], Bytes::new(), 10).await.unwrap_err();
        assert!(err.contains("no public address"), "{err}");
    }
}
