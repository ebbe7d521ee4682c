//! Test harness: start a server in a temp dir, get tokens, connect clients, and wait
//! for events (with a generous safety timeout so a bug fails instead of hanging).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier::client::{fetch_token, Client, ClientError, ClientTrust, ConnectOptions, Event};
use courier::config::Config;
use courier::pb;
use courier::server::{self, RunningServer};
use courier::store::App;

/// Upper bound on any single wait; reaching it means the test failed.
pub const WAIT: Duration = Duration::from_secs(20);

/// The transport a test's clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Quic,
}

/// Runs each `async fn name(t: Transport)` as two tests, `name::ws` and
/// `name::quic`: one definition, both transports.
macro_rules! both_transports {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn ws() {
                super::$name(crate::common::Transport::Ws).await
            }
            #[tokio::test]
            async fn quic() {
                super::$name(crate::common::Transport::Quic).await
            }
        }
    )+};
}
pub(crate) use both_transports;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub app: App,
    pub config: Config,
    /// What `connect`, `open` and `url` use.
    pub transport: Transport,
    _dir: Option<tempfile::TempDir>,
}

/// With `COURIER_TEST_STORE=postgres` (and `COURIER_TEST_POSTGRES_URL`), every
/// test server runs on PostgreSQL, each in a fresh schema of that database:
/// `scripts/test` runs the suite once that way.
async fn suite_postgres_url() -> Option<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if std::env::var("COURIER_TEST_STORE").ok().as_deref() != Some("postgres") {
        return None;
    }
    let base = std::env::var("COURIER_TEST_POSTGRES_URL")
        .expect("COURIER_TEST_STORE=postgres needs COURIER_TEST_POSTGRES_URL");
    let name = format!(
        "suite_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect to COURIER_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create a schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-csearch_path%3D{name}"))
}

/// The admin token of test servers.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn test_config(data_dir: PathBuf) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        admin_token: ADMIN_TOKEN.into(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::on_with(Transport::Ws, tweak).await
    }

    /// A server whose test clients connect over `transport`.
    pub async fn on(transport: Transport) -> TestServer {
        TestServer::on_with(transport, |_| {}).await
    }

    pub async fn on_with(transport: Transport, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path().to_path_buf());
        if let Some(url) = suite_postgres_url().await {
            config.store_kind = "postgres".into();
            config.postgres_url = url;
        }
        tweak(&mut config);
        let server = server::start(config.clone()).await.unwrap();
        let app = server
            .created_app
            .clone()
            .expect("fresh data dir creates an app");
        TestServer {
            server: Some(server),
            app,
            config,
            transport,
            _dir: Some(dir),
        }
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn http(&self) -> String {
        self.running().http_url()
    }

    pub fn ws(&self) -> String {
        self.running().ws_url()
    }

    /// Where the test's clients connect: the WebSocket or the QUIC URL.
    pub fn url(&self) -> String {
        match self.transport {
            Transport::Ws => self.ws(),
            Transport::Quic => self.running().quic_url().expect("QUIC is on"),
        }
    }

    /// Connection options trusting exactly this server's certificate.
    pub fn options(&self) -> ConnectOptions {
        let trust = match self.running().cert_fingerprint {
            Some(fp) => ClientTrust::Pinned(fp),
            None => ClientTrust::WebPki,
        };
        ConnectOptions::new(&trust).unwrap()
    }

    /// Opens a connection on the test's transport without logging in.
    pub async fn open(&self) -> Client {
        Client::open_with(&self.url(), &self.options())
            .await
            .unwrap()
    }

    /// Connects and logs in with `token`, returning the refusal if there is one.
    pub async fn try_connect(&self, token: &str, resource: &str) -> Result<Client, ClientError> {
        Client::connect_with(&self.url(), &self.options(), token, resource).await
    }

    /// Shuts down gracefully and starts again on the same data dir (new port).
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let server = server::start(self.config.clone()).await.unwrap();
        assert!(server.created_app.is_none(), "restart keeps the apps");
        self.server = Some(server);
    }

    pub async fn token(&self, account: &str) -> String {
        fetch_token(
            &self.http(),
            self.app.app_id,
            &self.app.app_key,
            &self.app.app_secret,
            account,
        )
        .await
        .unwrap()
        .token
    }

    /// Connects and logs in; the backlog has not been read yet.
    pub async fn connect(&self, account: &str, resource: &str) -> Client {
        let token = self.token(account).await;
        self.try_connect(&token, resource).await.unwrap()
    }

    /// Connects, logs in and reads the backlog up to SyncDone.
    pub async fn connect_synced(
        &self,
        account: &str,
        resource: &str,
    ) -> (Client, Vec<pb::Deliver>) {
        let mut client = self.connect(account, resource).await;
        let backlog = read_backlog(&mut client).await;
        (client, backlog)
    }
}

/// The next event, failing the test if none comes within [`WAIT`].
pub async fn next(client: &mut Client) -> Option<Event> {
    tokio::time::timeout(WAIT, client.next_event())
        .await
        .expect("timed out waiting for an event")
        .expect("client error")
}

/// Reads events until `pick` returns Some; other events are skipped.
pub async fn wait_for<T>(client: &mut Client, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    loop {
        match next(client).await {
            Some(event) => {
                if let Some(v) = pick(event) {
                    return v;
                }
            }
            None => panic!("connection closed while waiting"),
        }
    }
}

/// Deliveries up to SyncDone.
pub async fn read_backlog(client: &mut Client) -> Vec<pb::Deliver> {
    let mut out = Vec::new();
    loop {
        match next(client).await {
            Some(Event::Deliver(d)) => out.push(d),
            Some(Event::SyncDone(_)) => return out,
            Some(_) => {}
            None => panic!("closed during backlog"),
        }
    }
}

pub async fn next_deliver(client: &mut Client) -> pb::Deliver {
    wait_for(client, |e| match e {
        Event::Deliver(d) => Some(d),
        _ => None,
    })
    .await
}

pub async fn next_ack(client: &mut Client) -> pb::ServerAck {
    wait_for(client, |e| match e {
        Event::ServerAck(a) => Some(a),
        _ => None,
    })
    .await
}

pub async fn next_error(client: &mut Client) -> pb::Error {
    wait_for(client, |e| match e {
        Event::Error(err) => Some(err),
        _ => None,
    })
    .await
}

/// Reads until the server closes; returns the Kick if one came.
pub async fn until_closed(client: &mut Client) -> Option<pb::Kick> {
    let mut kick = None;
    loop {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .expect("timed out waiting for close")
        {
            Ok(Some(Event::Kick(k))) => kick = Some(k),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return kick,
        }
    }
}

/// Sends a text message and returns its ack.
pub async fn send_acked(
    client: &mut Client,
    packet_id: &str,
    to: &str,
    text: &str,
) -> pb::ServerAck {
    client.send_text(packet_id, to, text).await.unwrap();
    let ack = next_ack(client).await;
    assert_eq!(ack.packet_id, packet_id);
    assert_eq!(ack.code, 200, "ack: {ack:?}");
    ack
}

/// Sends a text message to a topic and returns its ack (which must be 200).
pub async fn topic_send_acked(
    client: &mut Client,
    packet_id: &str,
    topic_id: u64,
    text: &str,
) -> pb::ServerAck {
    client
        .send_frame(pb::frame::Kind::Send(pb::Send {
            packet_id: packet_id.into(),
            topic_id,
            payload: bytes::Bytes::copy_from_slice(text.as_bytes()),
            ..Default::default()
        }))
        .await
        .unwrap();
    let ack = next_ack(client).await;
    assert_eq!(ack.code, 200, "ack: {ack:?}");
    ack
}

/// The sequences of some deliveries, in order.
pub fn sequences(deliveries: &[pb::Deliver]) -> Vec<u64> {
    deliveries.iter().map(|d| d.sequence).collect()
}

/// The packet ids of some deliveries, in order.
pub fn packet_ids(deliveries: &[pb::Deliver]) -> Vec<&str> {
    deliveries.iter().map(|d| d.packet_id.as_str()).collect()
}

pub fn text(d: &pb::Deliver) -> String {
    String::from_utf8(d.payload.to_vec()).unwrap()
}

/// How a REST call authenticates (the manual's two modes).
#[derive(Clone)]
pub enum Auth {
    /// `token` header.
    Token(String),
    /// `appId` + `appKey` + `appSecret` + `appAccount` headers (the topic calls take
    /// the app from the path and ignore `appId`).
    App(String),
    /// Both: the token must win.
    Both {
        token: String,
        account: String,
    },
    None,
}

impl TestServer {
    /// Calls the admin API with the test admin token; returns the HTTP status and
    /// the JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{}", self.http(), path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, json)
    }

    /// Calls the REST API; returns the HTTP status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &Auth,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{}", self.http(), path))
            .header("Content-Type", "application/json");
        let app_headers = |req: reqwest::RequestBuilder, account: &str| {
            req.header("appId", self.app.app_id.to_string())
                .header("appKey", &self.app.app_key)
                .header("appSecret", &self.app.app_secret)
                .header("appAccount", account)
        };
        req = match auth {
            Auth::Token(t) => req.header("token", t),
            Auth::App(account) => app_headers(req, account),
            Auth::Both { token, account } => app_headers(req.header("token", token), account),
            Auth::None => req,
        };
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, json)
    }
}

/// The real `courier` binary on a free port, for tests that measure the server
/// process itself (RSS) or kill it.
pub struct Binary {
    child: Child,
    pub http: String,
}

impl Binary {
    /// Starts `courier serve` with `args` on a free port and waits for its
    /// "listening" line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start courier");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let http = loop {
            let line = lines.next().expect("courier exited early").unwrap();
            if let Some(url) = line.strip_prefix("courier listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Binary { child, http }
    }

    pub fn ws(&self) -> String {
        format!("{}/ws", self.http.replacen("http://", "ws://", 1))
    }

    /// `host:port` of the listener.
    pub fn addr(&self) -> String {
        self.http.trim_start_matches("http://").to_owned()
    }

    /// The server process's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes on a new connection and reads until the server closes it (or
/// [`WAIT`] passes, which fails the test). Returns what the server sent.
pub async fn raw_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 8192];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("server did not close the connection");
    out
}

/// Status code and JSON body of a raw HTTP/1.1 answer.
pub fn parse_http(answer: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A Content-Length must match the body (a client would cut or wait otherwise).
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    if let Some(length) = length {
        assert_eq!(
            length,
            body.len(),
            "Content-Length disagrees with the body: {text:?}"
        );
    }
    let json = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null);
    (status, json)
}
