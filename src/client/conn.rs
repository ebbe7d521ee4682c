//! Dialing the gateway over each transport, and the two halves of a connection as
//! frames: a WebSocket (`ws://`, `wss://`; one binary message per frame) or a QUIC
//! connection (`quic://`; one bidirectional stream of length-prefixed frames).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ClientError;
use crate::protocol::framing::{self, FrameDecoder};
use crate::protocol::WS_SUBPROTOCOL;
use crate::tls::{ClientTrust, QUIC_ALPN};

/// Largest frame the client accepts from the server.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Keep-alive packets on an idle QUIC connection (below the server's idle timeout).
const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The client's QUIC idle timeout (the smaller of both ends' applies); the server's
/// default is the same.
const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one QUIC handshake attempt may take before the next address is tried.
const QUIC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing waits for the server to acknowledge what was written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A byte stream a WebSocket can run on (TCP, or TLS over TCP).
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// How to connect: which server certificates to trust (`wss://`, `quic://`), which
/// local address to connect from, and optionally one QUIC endpoint (UDP socket)
/// shared by every connection made with these options.
#[derive(Clone)]
pub struct ConnectOptions {
    tls: Arc<rustls::ClientConfig>,
    quic: quinn::ClientConfig,
    local_ip: Option<IpAddr>,
    endpoint: Option<quinn::Endpoint>,
}

impl ConnectOptions {
    /// Options trusting `trust`, connecting from any local address.
    pub fn new(trust: &ClientTrust) -> Result<ConnectOptions, ClientError> {
        let tls = Arc::new(trust.client_config(&[b"http/1.1"])?);
        let crypto = QuicClientConfig::try_from(trust.client_config(&[QUIC_ALPN])?)
            .map_err(|e| ClientError::Quic(e.to_string()))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(QUIC_KEEP_ALIVE))
            .max_idle_timeout(quinn::IdleTimeout::try_from(QUIC_IDLE_TIMEOUT).ok());
        quic.transport_config(Arc::new(transport));
        Ok(ConnectOptions {
            tls,
            quic,
            local_ip: None,
            endpoint: None,
        })
    }

    /// Connects from this local address (e.g. one of 127.0.0.0/8, to spread many
    /// connections over several source addresses).
    pub fn local_ip(mut self, ip: IpAddr) -> ConnectOptions {
        self.local_ip = Some(ip);
        self
    }

    /// Makes every QUIC connection of these options share one UDP socket (bound to
    /// the local address, if set), instead of one socket per connection.
    pub fn share_quic_endpoint(mut self) -> Result<ConnectOptions, ClientError> {
        let ip = self.local_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.endpoint = Some(quinn::Endpoint::client(SocketAddr::new(ip, 0))?);
        Ok(self)
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("local_ip", &self.local_ip)
            .field("shared_endpoint", &self.endpoint.is_some())
            .finish_non_exhaustive()
    }
}

/// Connects to `url` and returns the connection's two halves.
pub(super) async fn dial(
    url: &str,
    options: &ConnectOptions,
) -> Result<(FrameWriter, FrameReader), ClientError> {
    let bad_url = || ClientError::BadUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad_url)?;
    match scheme {
        "ws" | "wss" => dial_ws(url, scheme == "wss", Some(WS_SUBPROTOCOL), options).await,
        "quic" => {
            let authority = rest.split('/').next().unwrap_or(rest);
            let uri: Uri = format!("https://{authority}")
                .parse()
                .map_err(|_| bad_url())?;
            let host = uri.host().ok_or_else(bad_url)?;
            let port = uri.port_u16().ok_or_else(bad_url)?;
            dial_quic(host.trim_matches(['[', ']']), port, options).await
        }
        _ => Err(bad_url()),
    }
}

/// Connects a WebSocket without a subprotocol (`ws://…/mimc`, `wss://…`), as the
/// MIMC web SDK does.
pub(super) async fn dial_plain_ws(
    url: &str,
    options: &ConnectOptions,
) -> Result<(FrameWriter, FrameReader), ClientError> {
    match url.split_once("://") {
        Some((scheme @ ("ws" | "wss"), _)) => dial_ws(url, scheme == "wss", None, options).await,
        _ => Err(ClientError::BadUrl(url.to_owned())),
    }
}

async fn dial_ws(
    url: &str,
    tls: bool,
    subprotocol: Option<&'static str>,
    options: &ConnectOptions,
) -> Result<(FrameWriter, FrameReader), ClientError> {
    let mut request = url.into_client_request()?;
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(subprotocol),
        );
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if tls { 443 } else { 80 });
    let tcp = connect_tcp(&host, port, options.local_ip).await?;
    let io: Box<dyn Io> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        let connector = tokio_rustls::TlsConnector::from(options.tls.clone());
        Box::new(connector.connect(name, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config)).await?;
    let (sink, stream) = ws.split();
    Ok((FrameWriter::Ws(sink), FrameReader::Ws(stream)))
}

async fn connect_tcp(
    host: &str,
    port: u16,
    local_ip: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
        .into())
}

async fn dial_quic(
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<(FrameWriter, FrameReader), ClientError> {
    // IPv4 first: a name like `localhost` often lists ::1 first while servers listen
    // on 127.0.0.1, and an unanswered QUIC handshake only ends by timeout.
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut last = ClientError::BadUrl(format!("quic://{host}:{port} (no address)"));
    for addr in addrs {
        match dial_quic_addr(host, addr, options).await {
            Ok(halves) => return Ok(halves),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn dial_quic_addr(
    host: &str,
    addr: SocketAddr,
    options: &ConnectOptions,
) -> Result<(FrameWriter, FrameReader), ClientError> {
    let endpoint = match &options.endpoint {
        Some(shared) => shared.clone(),
        None => {
            let any = if addr.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let ip = options
                .local_ip
                .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
                .unwrap_or(any);
            quinn::Endpoint::client(SocketAddr::new(ip, 0))?
        }
    };
    let quic_err = |e: &dyn std::fmt::Display| ClientError::Quic(e.to_string());
    let connecting = endpoint
        .connect_with(options.quic.clone(), addr, host)
        .map_err(|e| quic_err(&e))?;
    let connection = match tokio::time::timeout(QUIC_CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|e| quic_err(&e))?,
        Err(_) => return Err(ClientError::Quic(format!("no answer from {addr}"))),
    };
    let (send, recv) = connection.open_bi().await.map_err(|e| quic_err(&e))?;
    Ok((
        FrameWriter::Quic {
            send,
            connection: connection.clone(),
        },
        FrameReader::Quic {
            recv,
            decoder: FrameDecoder::new(MAX_FRAME_BYTES),
            _connection: connection,
            _endpoint: endpoint,
        },
    ))
}

/// The sending half, as frames.
pub(super) enum FrameWriter {
    Ws(SplitSink<Ws, Message>),
    Quic {
        send: quinn::SendStream,
        connection: quinn::Connection,
    },
}

fn write_err(e: quinn::WriteError) -> ClientError {
    match e {
        quinn::WriteError::ConnectionLost(_) | quinn::WriteError::Stopped(_) => ClientError::Closed,
        other => ClientError::Quic(other.to_string()),
    }
}

impl FrameWriter {
    /// Queues one frame.
    pub(super) async fn feed(&mut self, frame: Bytes) -> Result<(), ClientError> {
        match self {
            FrameWriter::Ws(sink) => Ok(sink.feed(Message::Binary(frame)).await?),
            FrameWriter::Quic { send, .. } => {
                let prefix = Bytes::copy_from_slice(&framing::prefix(&frame));
                send.write_all_chunks(&mut [prefix, frame])
                    .await
                    .map_err(write_err)
            }
        }
    }

    /// Sends what was queued (QUIC sends as soon as it can by itself).
    pub(super) async fn flush(&mut self) -> Result<(), ClientError> {
        match self {
            FrameWriter::Ws(sink) => Ok(sink.flush().await?),
            FrameWriter::Quic { .. } => Ok(()),
        }
    }

    pub(super) async fn write_unframed(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        match self {
            FrameWriter::Ws(sink) => Ok(sink.send(Message::Binary(bytes)).await?),
            FrameWriter::Quic { send, .. } => send.write_chunk(bytes).await.map_err(write_err),
        }
    }

    pub(super) async fn send_ws_text(&mut self, text: &str) -> Result<(), ClientError> {
        match self {
            FrameWriter::Ws(sink) => Ok(sink.send(Message::Text(text.into())).await?),
            FrameWriter::Quic { .. } => Err(ClientError::Protocol(
                "text messages exist only on WebSocket".into(),
            )),
        }
    }

    pub(super) async fn close(&mut self) -> Result<(), ClientError> {
        match self {
            FrameWriter::Ws(sink) => Ok(sink.close().await?),
            FrameWriter::Quic { send, connection } => {
                let _ = send.finish();
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, send.stopped()).await;
                connection.close(quinn::VarInt::from_u32(0), b"");
                Ok(())
            }
        }
    }
}

/// The receiving half, as frames.
pub(super) enum FrameReader {
    Ws(SplitStream<Ws>),
    Quic {
        recv: quinn::RecvStream,
        decoder: FrameDecoder,
        /// Keep the connection and its endpoint open while the reader lives.
        _connection: quinn::Connection,
        _endpoint: quinn::Endpoint,
    },
}

impl FrameReader {
    /// The next frame; `None` once the server closed the connection.
    pub(super) async fn next_frame(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self {
            FrameReader::Ws(stream) => loop {
                let msg = match stream.next().await {
                    None => return Ok(None),
                    Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                        return Ok(None)
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(m)) => m,
                };
                match msg {
                    Message::Binary(b) => return Ok(Some(b)),
                    Message::Close(_) => return Ok(None),
                    _ => continue,
                }
            },
            FrameReader::Quic { recv, decoder, .. } => loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => return Ok(Some(frame)),
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                    Ok(None) => return Ok(None),
                    // The server's normal close (code 0), or our own.
                    Err(quinn::ReadError::ConnectionLost(
                        quinn::ConnectionError::ApplicationClosed(ref close),
                    )) if close.error_code.into_inner() == 0 => return Ok(None),
                    Err(quinn::ReadError::ConnectionLost(
                        quinn::ConnectionError::LocallyClosed,
                    )) => return Ok(None),
                    // An application close before the handshake was confirmed travels
                    // as this transport code, without the application's own code.
                    Err(quinn::ReadError::ConnectionLost(
                        quinn::ConnectionError::ConnectionClosed(ref close),
                    )) if close.error_code == quinn::TransportErrorCode::APPLICATION_ERROR => {
                        return Ok(None)
                    }
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        return Err(ClientError::Quic(format!("connection lost: {e}")))
                    }
                    Err(e) => return Err(ClientError::Quic(e.to_string())),
                }
            },
        }
    }
}
