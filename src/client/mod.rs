//! Rust client library: fetch a token over HTTP, connect over WebSocket, log in,
//! send, receive and acknowledge. The CLI, the tests and the load generator use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), courier::client::ClientError> {
//! use courier::client::{fetch_token, Client, Event};
//! let t = fetch_token("http://127.0.0.1:8080", 1, "key", "secret", "alice").await?;
//! let mut c = Client::connect("ws://127.0.0.1:8080/ws", &t.token, "phone").await?;
//! c.send_text("p-1", "bob", "Hello B").await?;
//! while let Some(event) = c.next_event().await? {
//!     if let Event::ServerAck(ack) = event { println!("stored as {}", ack.sequence); break; }
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::pb::{self, frame::Kind};
use crate::protocol::{codec, PROTOCOL_VERSION, WS_SUBPROTOCOL};
pub use crate::wire::rest::TokenData;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("api answered code {code}: {message}")]
    Api { code: i64, message: String },
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("undecodable frame from server: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("login refused ({code}): {desc}")]
    LoginRefused { code: u32, desc: String },
    #[error("connection closed")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    LoginResult(pb::LoginResult),
    ServerAck(pb::ServerAck),
    /// One message (batches are split into their messages).
    Deliver(pb::Deliver),
    SyncDone(u64),
    PullNotice(pb::PullNotice),
    PullResult(pb::PullResult),
    Pong(pb::Pong),
    Kick(pb::Kick),
    Error(pb::Error),
}

/// Asks `POST {http_base}/api/account/token` for an account's token.
pub async fn fetch_token(
    http_base: &str,
    app_id: u64,
    app_key: &str,
    app_secret: &str,
    account: &str,
) -> Result<TokenData, ClientError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        code: i64,
        message: String,
        data: Option<TokenData>,
    }
    let url = format!("{}/api/account/token", http_base.trim_end_matches('/'));
    let body = serde_json::json!({
        "appId": app_id, "appKey": app_key, "appSecret": app_secret, "appAccount": account,
    });
    let env: Envelope = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    match (env.code, env.data) {
        (200, Some(data)) => Ok(data),
        (code, _) => Err(ClientError::Api {
            code,
            message: env.message,
        }),
    }
}

/// Sending half of a connection.
pub struct ClientWriter {
    sink: SplitSink<Ws, Message>,
}

/// Receiving half of a connection.
pub struct ClientReader {
    stream: SplitStream<Ws>,
    pending: VecDeque<Event>,
}

/// A connection to the gateway.
pub struct Client {
    pub writer: ClientWriter,
    pub reader: ClientReader,
    /// The server's answer to Login, once logged in.
    pub login: Option<pb::LoginResult>,
}

impl Client {
    /// Opens a WebSocket connection without logging in.
    pub async fn open(ws_url: &str) -> Result<Client, ClientError> {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(WS_SUBPROTOCOL),
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        let (sink, stream) = ws.split();
        Ok(Client {
            writer: ClientWriter { sink },
            reader: ClientReader {
                stream,
                pending: VecDeque::new(),
            },
            login: None,
        })
    }

    /// Opens a connection and logs in as the token's account on `resource`.
    pub async fn connect(ws_url: &str, token: &str, resource: &str) -> Result<Client, ClientError> {
        let mut client = Client::open(ws_url).await?;
        client.login(token, resource).await?;
        Ok(client)
    }

    /// Sends Login and waits for LoginResult.
    pub async fn login(
        &mut self,
        token: &str,
        resource: &str,
    ) -> Result<pb::LoginResult, ClientError> {
        self.writer
            .send(Kind::Login(pb::Login {
                protocol_version: PROTOCOL_VERSION,
                token: token.to_owned(),
                resource: resource.to_owned(),
            }))
            .await?;
        loop {
            match self.reader.next_event().await? {
                Some(Event::LoginResult(r)) if r.code == 200 => {
                    self.login = Some(r.clone());
                    return Ok(r);
                }
                Some(Event::LoginResult(r)) => {
                    return Err(ClientError::LoginRefused {
                        code: r.code,
                        desc: r.desc,
                    })
                }
                Some(Event::Error(e)) => {
                    return Err(ClientError::LoginRefused {
                        code: e.code,
                        desc: e.desc,
                    })
                }
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }

    pub async fn send_frame(&mut self, kind: Kind) -> Result<(), ClientError> {
        self.writer.send(kind).await
    }

    /// Sends a text message to an account.
    pub async fn send_text(
        &mut self,
        packet_id: &str,
        to: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        self.writer.send_text(packet_id, to, text).await
    }

    pub async fn ack(&mut self, sequence: u64) -> Result<(), ClientError> {
        self.writer.ack(sequence).await
    }

    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        self.reader.next_event().await
    }

    pub fn split(self) -> (ClientWriter, ClientReader) {
        (self.writer, self.reader)
    }
}

impl ClientWriter {
    /// Sends one frame.
    pub async fn send(&mut self, kind: Kind) -> Result<(), ClientError> {
        self.send_raw(codec::encode(kind)).await
    }

    /// Queues one frame without flushing (see [`ClientWriter::flush`]).
    pub async fn feed(&mut self, kind: Kind) -> Result<(), ClientError> {
        self.sink.feed(Message::Binary(codec::encode(kind))).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.sink.flush().await?;
        Ok(())
    }

    /// Sends arbitrary bytes as one binary message (for testing bad input).
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.sink.send(Message::Binary(bytes)).await?;
        Ok(())
    }

    /// Sends a text WebSocket message (which the server refuses).
    pub async fn send_ws_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.sink.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub async fn send_text(
        &mut self,
        packet_id: &str,
        to: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        self.send(Kind::Send(pb::Send {
            packet_id: packet_id.to_owned(),
            to_account: to.to_owned(),
            payload: Bytes::copy_from_slice(text.as_bytes()),
            ..Default::default()
        }))
        .await
    }

    pub async fn ack(&mut self, sequence: u64) -> Result<(), ClientError> {
        self.send(Kind::Ack(pb::Ack { sequence })).await
    }

    pub async fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.send(Kind::Ping(pb::Ping { nonce })).await
    }

    pub async fn pull(&mut self, after: u64, before: u64, limit: u32) -> Result<(), ClientError> {
        self.send(Kind::Pull(pb::Pull {
            after_sequence: after,
            before_sequence: before,
            limit,
        }))
        .await
    }

    pub async fn logout(&mut self) -> Result<(), ClientError> {
        self.send(Kind::Logout(pb::Logout {})).await
    }

    /// Closes the WebSocket.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sink.close().await?;
        Ok(())
    }
}

impl ClientReader {
    /// The next event; `None` once the server closed the connection.
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let msg = match self.stream.next().await {
                None => return Ok(None),
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return Ok(None)
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            let bytes = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let frame = pb::Frame::decode(bytes)?;
            match frame.kind {
                Some(Kind::DeliverBatch(b)) => self
                    .pending
                    .extend(b.messages.into_iter().map(Event::Deliver)),
                Some(Kind::Deliver(d)) => self.pending.push_back(Event::Deliver(d)),
                Some(Kind::ServerAck(a)) => self.pending.push_back(Event::ServerAck(a)),
                Some(Kind::LoginResult(r)) => self.pending.push_back(Event::LoginResult(r)),
                Some(Kind::SyncDone(s)) => self.pending.push_back(Event::SyncDone(s.count)),
                Some(Kind::PullNotice(n)) => self.pending.push_back(Event::PullNotice(n)),
                Some(Kind::PullResult(r)) => self.pending.push_back(Event::PullResult(r)),
                Some(Kind::Pong(p)) => self.pending.push_back(Event::Pong(p)),
                Some(Kind::Kick(k)) => self.pending.push_back(Event::Kick(k)),
                Some(Kind::Error(e)) => self.pending.push_back(Event::Error(e)),
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected frame from server: {other:?}"
                    )))
                }
                None => return Err(ClientError::Protocol("empty frame from server".into())),
            }
        }
    }
}

impl std::fmt::Debug for ClientReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientReader").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWriter").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}
