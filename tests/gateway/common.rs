//! Test harness: start a server in a temp dir, get tokens, connect clients, and wait
//! for events (with a generous safety timeout so a bug fails instead of hanging).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier::client::{Client, ClientError, ClientTrust, ConnectOptions, Event};
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
    /// Node 0 (the only node, unless this is a cluster).
    pub server: Option<RunningServer>,
    /// The other nodes of a cluster (node ids 1, 2, …).
    pub peers: Vec<RunningServer>,
    /// Every connection and call goes to node 0 ([`TestServer::pin`]).
    pinned: std::sync::atomic::AtomicBool,
    pub app: App,
    pub config: Config,
    /// What `connect`, `open` and `url` use.
    pub transport: Transport,
    _dir: Option<tempfile::TempDir>,
}

/// With `COURIER_TEST_STORE=postgres` (and `COURIER_TEST_POSTGRES_URL`), every
/// test server runs on PostgreSQL, each in a fresh schema of that database; with
/// `COURIER_TEST_STORE=cluster` (and `COURIER_TEST_NATS_URL`), every test server is
/// a cluster of [`SUITE_CLUSTER_NODES`] nodes on such a schema, and each connection
/// and call goes to a random node. `scripts/test` runs the suite both ways.
fn suite_store() -> Option<String> {
    let store = std::env::var("COURIER_TEST_STORE").ok()?;
    assert!(
        ["postgres", "cluster"].contains(&store.as_str()),
        "COURIER_TEST_STORE is postgres or cluster"
    );
    Some(store)
}

/// Nodes of each test server when the suite runs on a cluster.
pub const SUITE_CLUSTER_NODES: usize = 3;

/// Points `config` at a fresh schema of the suite's PostgreSQL (and, for a cluster,
/// at its NATS, with the schema's name as the subject prefix).
async fn suite_config(config: &mut Config, store: &str) {
    let name = fresh_schema_name();
    config.store_kind = "postgres".into();
    config.postgres_url = schema_url(&name).await;
    if store == "cluster" {
        config.nats_url = std::env::var("COURIER_TEST_NATS_URL")
            .expect("COURIER_TEST_STORE=cluster needs COURIER_TEST_NATS_URL");
        config.cluster_subject_prefix = name;
        // The suite asserts that an acked message is not sent again at the next
        // login, which the overlap window gives up for late commits of other nodes
        // (devices deduplicate); tests/gateway/cluster.rs runs with the window.
        config.cluster_overlap_ms = 0;
        // Three nodes per test server, two test servers at a time, on one database.
        config.postgres_pool_size = 4;
    }
}

/// A schema name no other test server of this run uses.
pub fn fresh_schema_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "suite_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A URL of the suite's PostgreSQL whose tables live in the new schema `name`.
async fn schema_url(name: &str) -> String {
    let base = std::env::var("COURIER_TEST_POSTGRES_URL")
        .expect("COURIER_TEST_STORE needs COURIER_TEST_POSTGRES_URL");
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect to COURIER_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create a schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{name}")
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
        let store = suite_store();
        if let Some(store) = &store {
            suite_config(&mut config, store).await;
        }
        tweak(&mut config);
        if config.store_kind != "postgres" {
            // The test wants the embedded store: one node.
            config.nats_url.clear();
        }
        let nodes = match config.nats_url.is_empty() {
            true => 1,
            false => SUITE_CLUSTER_NODES,
        };
        TestServer::nodes(config, nodes, transport, dir).await
    }

    /// Starts `nodes` nodes of `config` (node ids 0, 1, …; a cluster when it has a
    /// `nats_url`), one after the other: the first creates the app.
    pub async fn nodes(
        config: Config,
        nodes: usize,
        transport: Transport,
        dir: tempfile::TempDir,
    ) -> TestServer {
        let server = server::start(config.clone()).await.unwrap();
        let app = server
            .created_app
            .clone()
            .expect("fresh data dir creates an app");
        let mut s = TestServer {
            server: Some(server),
            peers: Vec::new(),
            pinned: std::sync::atomic::AtomicBool::new(false),
            app,
            config,
            transport,
            _dir: Some(dir),
        };
        s.start_peers(nodes).await;
        s
    }

    /// Starts nodes 1.. of a cluster of `nodes`, sharing node 0's clock.
    async fn start_peers(&mut self, nodes: usize) {
        let clock = self.running().state.clock.clone();
        for id in 1..nodes {
            let server = server::start_with_clock(self.peer_config(id), clock.clone())
                .await
                .unwrap();
            self.peers.push(server);
        }
    }

    /// From now on every connection and call of this test goes to node 0: for
    /// tests of what each node keeps for itself (rate quotas, devices per user,
    /// connection slots).
    pub fn pin(&self) {
        self.pinned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Node `id`'s configuration: node 0's, with its own id. The data dir (which
    /// holds only the certificate, the store being PostgreSQL) is shared, so every
    /// node presents the same certificate.
    fn peer_config(&self, id: usize) -> Config {
        let mut config = self.config.clone();
        config.node_id = id as u8;
        config
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// Node `i` (0: [`TestServer::server`]).
    pub fn node(&self, i: usize) -> &RunningServer {
        match i {
            0 => self.running(),
            i => &self.peers[i - 1],
        }
    }

    /// A random node of a cluster; the server otherwise.
    fn pick(&self) -> &RunningServer {
        if self.pinned.load(std::sync::atomic::Ordering::Relaxed) {
            return self.running();
        }
        match self.peers.len() {
            0 => self.running(),
            n => self.node(rand::random_range(0..=n)),
        }
    }

    pub fn http(&self) -> String {
        self.pick().http_url()
    }

    pub fn ws(&self) -> String {
        self.pick().ws_url()
    }

    /// Where the test's clients connect: the WebSocket or the QUIC URL (of a random
    /// node of a cluster).
    pub fn url(&self) -> String {
        self.url_of(self.pick())
    }

    fn url_of(&self, node: &RunningServer) -> String {
        match self.transport {
            Transport::Ws => node.ws_url(),
            Transport::Quic => node.quic_url().expect("QUIC is on"),
        }
    }

    /// Connection options trusting exactly this server's certificate (the nodes of
    /// a cluster share it).
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

    /// Connects to node `i` and logs in.
    pub async fn connect_at(&self, i: usize, account: &str, resource: &str) -> Client {
        let token = self.token(account).await;
        Client::connect_with(
            &self.url_of(self.node(i)),
            &self.options(),
            &token,
            resource,
        )
        .await
        .unwrap()
    }

    /// Connects to node `i`, logs in and reads the backlog up to SyncDone.
    pub async fn connect_synced_at(
        &self,
        i: usize,
        account: &str,
        resource: &str,
    ) -> (Client, Vec<pb::Deliver>) {
        let mut client = self.connect_at(i, account, resource).await;
        let backlog = read_backlog(&mut client).await;
        (client, backlog)
    }

    /// Shuts down gracefully and starts again on the same data dir (new port);
    /// every node of a cluster.
    pub async fn restart(&mut self) {
        let peers = std::mem::take(&mut self.peers);
        let nodes = 1 + peers.len();
        for peer in peers {
            peer.shutdown().await.unwrap();
        }
        self.server.take().unwrap().shutdown().await.unwrap();
        let server = server::start(self.config.clone()).await.unwrap();
        assert!(server.created_app.is_none(), "restart keeps the apps");
        self.server = Some(server);
        self.start_peers(nodes).await;
    }

    pub async fn token(&self, account: &str) -> String {
        self.token_data(account).await.token
    }

    /// The whole token answer for `account` (a node of a cluster at random), over
    /// HTTPS too: the client trusts this server's certificate.
    pub async fn token_data(&self, account: &str) -> courier::client::TokenData {
        let trust = match self.running().cert_fingerprint {
            Some(fp) => ClientTrust::Pinned(fp),
            None => ClientTrust::WebPki,
        };
        let http = courier::client::http_client(&trust).unwrap();
        courier::client::fetch_token_with(
            &http,
            &self.http(),
            self.app.app_id,
            &self.app.app_key,
            &self.app.app_secret,
            account,
        )
        .await
        .unwrap()
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

impl Drop for TestServer {
    /// Stops what a dropped server leaves running beside the test's runtime (the
    /// callback dispatcher's thread and its store connections).
    fn drop(&mut self) {
        for node in self.server.iter().chain(&self.peers) {
            node.state.shutdown.cancel();
        }
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
        self.call_on(&self.http(), method, path, auth, body).await
    }

    /// Calls the REST API of node `i`.
    pub async fn call_at(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        auth: &Auth,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let base = self.node(i).http_url();
        self.call_on(&base, method, path, auth, body).await
    }

    async fn call_on(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        auth: &Auth,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
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
            .env(
                "RUST_LOG",
                std::env::var("COURIER_TEST_BINARY_LOG").unwrap_or("warn".into()),
            )
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
