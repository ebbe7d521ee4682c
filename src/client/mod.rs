//! Rust client library: fetch a token over HTTP, connect over WebSocket (`ws://`,
//! `wss://`) or QUIC (`quic://`), log in, send, receive and acknowledge. The CLI, the
//! tests and the load generator use it. `conn` dials the transports; this module
//! speaks the protocol over either.
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

mod conn;
pub mod mimc;

use std::collections::VecDeque;

use bytes::Bytes;
use prost::Message as _;

use crate::pb::{self, frame::Kind};
use crate::protocol::{codec, PROTOCOL_VERSION};
pub use crate::tls::ClientTrust;
pub use crate::wire::rest::TokenData;
pub use conn::ConnectOptions;
use conn::{FrameReader, FrameWriter};

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("api answered code {code}: {message}")]
    Api { code: i64, message: String },
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("quic: {0}")]
    Quic(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad url {0:?}: expected ws://, wss:// or quic://")]
    BadUrl(String),
    #[error("undecodable frame from server: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("login refused ({code}): {desc}")]
    LoginRefused { code: u32, desc: String },
    #[error("MIMC BIND refused: {error_type} / {reason}: {desc}")]
    BindRefused {
        error_type: String,
        reason: String,
        desc: String,
    },
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

/// Asks `POST {http_base}/api/account/token` for an account's token (HTTPS trusts
/// the web PKI roots; see [`fetch_token_with`]).
pub async fn fetch_token(
    http_base: &str,
    app_id: u64,
    app_key: &str,
    app_secret: &str,
    account: &str,
) -> Result<TokenData, ClientError> {
    let http = reqwest::Client::new();
    fetch_token_with(&http, http_base, app_id, app_key, app_secret, account).await
}

/// An HTTP client trusting `trust` for `https://` (a pinned or private certificate).
pub fn http_client(trust: &ClientTrust) -> Result<reqwest::Client, ClientError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(trust.client_config(&[b"http/1.1"])?)
        .build()?)
}

/// [`fetch_token`] with a given HTTP client (see [`http_client`]).
pub async fn fetch_token_with(
    http: &reqwest::Client,
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
    let env: Envelope = http.post(url).json(&body).send().await?.json().await?;
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
    out: FrameWriter,
}

/// Receiving half of a connection.
pub struct ClientReader {
    input: FrameReader,
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
    /// Opens a connection (`ws://`, `wss://` or `quic://`) without logging in,
    /// trusting the web PKI roots for TLS.
    pub async fn open(url: &str) -> Result<Client, ClientError> {
        Client::open_with(url, &ConnectOptions::new(&ClientTrust::WebPki)?).await
    }

    /// Opens a connection with explicit options (trust, source address, shared
    /// QUIC endpoint).
    pub async fn open_with(url: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        let (out, input) = conn::dial(url, options).await?;
        Ok(Client {
            writer: ClientWriter { out },
            reader: ClientReader {
                input,
                pending: VecDeque::new(),
            },
            login: None,
        })
    }

    /// Opens a connection and logs in as the token's account on `resource`.
    pub async fn connect(url: &str, token: &str, resource: &str) -> Result<Client, ClientError> {
        let mut client = Client::open(url).await?;
        client.login(token, resource).await?;
        Ok(client)
    }

    /// [`Client::connect`] with explicit options.
    pub async fn connect_with(
        url: &str,
        options: &ConnectOptions,
        token: &str,
        resource: &str,
    ) -> Result<Client, ClientError> {
        let mut client = Client::open_with(url, options).await?;
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
        self.out.feed(codec::encode(kind)).await
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.out.flush().await
    }

    /// Sends arbitrary bytes as one frame: one binary WebSocket message, or one
    /// length-prefixed frame on QUIC (for testing bad input).
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.out.feed(bytes).await?;
        self.out.flush().await
    }

    /// Writes bytes as they are: on QUIC straight onto the stream with no length
    /// prefix of their own (to test framing), on WebSocket as one binary message.
    pub async fn send_unframed(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.out.write_unframed(bytes).await
    }

    /// Sends a text WebSocket message (which the server refuses); an error on QUIC.
    pub async fn send_ws_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.out.send_ws_text(text).await
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

    /// Closes the connection (WebSocket close; QUIC: finishes the stream and closes).
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.out.close().await
    }
}

impl ClientReader {
    /// The next event; `None` once the server closed the connection.
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let Some(bytes) = self.input.next_frame().await? else {
                return Ok(None);
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
