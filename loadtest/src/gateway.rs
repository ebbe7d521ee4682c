//! The gateway under test — one this tool starts (`courier serve` on a free port
//! with a temporary data dir, so its memory can be read from /proc) or a running one
//! (`--server`) — and how to connect to it: over WebSocket or QUIC, spread over
//! several source addresses.

use courier::callbacks::Priority;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use courier::client::mimc::MimcClient;
use courier::client::{
    fetch_token_with, http_client, Client, ClientTrust, ConnectOptions, Event, TokenData,
};

use crate::conn::Conn;

use crate::{Callbacks, LoadArgs, Target, Transport};

/// A gateway under test and how to reach it.
pub struct Gateway {
    pub http: String,
    pub ws: String,
    pub quic: Option<String>,
    pub fingerprint: Option<[u8; 32]>,
    pub app_id: u64,
    pub app_key: String,
    pub app_secret: String,
    /// Where connections go (the WebSocket or the QUIC URL; node 0's).
    pub url: String,
    /// Every node's such URL (connections go to them in turn).
    urls: Vec<String>,
    /// Every node's HTTP and QUIC URLs.
    nodes: Vec<(String, Option<String>)>,
    pub transport: Transport,
    /// One set of options per source address, used in turn.
    options: Vec<ConnectOptions>,
    next: AtomicUsize,
    http_client: reqwest::Client,
    /// Callbacks the in-process receiver got (`--callbacks receiver`).
    pub callbacks: Option<Arc<AtomicU64>>,
    /// The started nodes.
    children: Vec<Child>,
    _dir: Option<TempDir>,
}

/// A temp dir removed on drop (no extra crate needed for this one use).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Each node's URL for `transport`.
fn urls_for(
    nodes: &[(String, Option<String>)],
    transport: Transport,
) -> anyhow::Result<Vec<String>> {
    nodes
        .iter()
        .map(|(http, quic)| match transport {
            Transport::Ws => Ok(format!("{}/ws", http.replacen("http", "ws", 1))),
            Transport::Mimc => Ok(format!("{}/mimc", http.replacen("http", "ws", 1))),
            Transport::Quic => quic
                .clone()
                .context("the gateway has no QUIC listener (give --quic-url)"),
        })
        .collect()
}

/// What `courier serve` printed about itself.
struct Printed {
    http: String,
    quic: Option<String>,
    fingerprint: Option<[u8; 32]>,
}

impl Gateway {
    /// Starts a gateway (or describes the running one given with `--server`) and
    /// prepares connections over `load.transport`.
    pub fn start(t: &Target, load: &LoadArgs) -> anyhow::Result<Gateway> {
        let (mut printed, app, children, dir, callbacks) = match &t.server {
            Some(server) => {
                let fingerprint = t
                    .cert_fingerprint
                    .as_deref()
                    .map(courier::tls::parse_fingerprint)
                    .transpose()?;
                let printed = Printed {
                    http: server.trim_end_matches('/').to_owned(),
                    quic: t.quic_url.clone(),
                    fingerprint,
                };
                let app = (
                    t.app_id.context("--app-id")?,
                    t.app_key.clone().context("--app-key")?,
                    t.app_secret.clone().context("--app-secret")?,
                );
                (vec![printed], app, Vec::new(), None, None)
            }
            None => {
                let (printed, app, children, dir, callbacks) = spawn(t)?;
                (printed, app, children, Some(dir), callbacks)
            }
        };
        let nodes: Vec<(String, Option<String>)> = printed
            .iter()
            .map(|p| (p.http.clone(), p.quic.clone()))
            .collect();
        let urls = urls_for(&nodes, load.transport)?;
        let printed = printed.swap_remove(0);
        let ws = format!("{}/ws", printed.http.replacen("http", "ws", 1));
        let url = urls[0].clone();
        let trust = match printed.fingerprint {
            Some(fp) => ClientTrust::Pinned(fp),
            None => ClientTrust::WebPki,
        };
        let mut options = Vec::new();
        for ip in source_ips(&url, load.source_ips, load.source_offset) {
            let mut o = ConnectOptions::new(&trust)?;
            if let Some(ip) = ip {
                o = o.local_ip(ip);
            }
            if load.transport == Transport::Quic {
                o = o.share_quic_endpoint()?;
            }
            options.push(o);
        }
        Ok(Gateway {
            http_client: http_client(&trust)?,
            http: printed.http,
            ws,
            quic: printed.quic,
            fingerprint: printed.fingerprint,
            app_id: app.0,
            app_key: app.1,
            app_secret: app.2,
            url,
            urls,
            nodes,
            transport: load.transport,
            options,
            next: AtomicUsize::new(0),
            callbacks,
            children,
            _dir: dir,
        })
    }

    /// Server resident memory in KiB, all nodes together (only for servers this
    /// tool started).
    pub fn rss_kib(&self) -> Option<u64> {
        let each = self.children.iter().map(|c| rss_kib_of(c.id()));
        each.sum::<Option<u64>>()
            .filter(|_| !self.children.is_empty())
    }

    /// CPU time the server processes have used (user + system), in microseconds
    /// (only for servers this tool started).
    pub fn cpu_us(&self) -> Option<u64> {
        let each = self.children.iter().map(|c| cpu_us_of(c.id()));
        each.sum::<Option<u64>>()
            .filter(|_| !self.children.is_empty())
    }

    /// Connects over another transport from now on: `ws` and `mimc` (both on the
    /// HTTP listener) may be switched between on one gateway.
    pub fn set_transport(&mut self, transport: Transport) -> anyhow::Result<()> {
        if (self.transport == Transport::Quic) != (transport == Transport::Quic) {
            bail!("only ws and mimc can be switched between on one gateway");
        }
        self.urls = urls_for(&self.nodes, transport)?;
        self.url = self.urls[0].clone();
        self.transport = transport;
        Ok(())
    }

    /// Logs in as `account` over the gateway's transport (Courier or MIMC) and
    /// skips the login backlog (of a Courier connection; the scenarios' accounts
    /// are fresh, so a MIMC login has none).
    pub async fn connect_any(&self, account: &str, resource: &str) -> anyhow::Result<Conn> {
        if self.transport != Transport::Mimc {
            return Ok(Conn::Courier(Box::new(
                self.connect(account, resource).await?,
            )));
        }
        let token = self.token_data(account).await?;
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let (url, options) = (
            &self.urls[k % self.urls.len()],
            &self.options[k % self.options.len()],
        );
        let mut client = MimcClient::open_with(url, options, &token, resource).await?;
        let challenge = client.conn().await?;
        client.bind(&challenge).await?;
        Ok(Conn::Mimc(Box::new(client), Default::default()))
    }

    /// A token for `account`.
    pub async fn token(&self, account: &str) -> anyhow::Result<String> {
        Ok(self.token_data(account).await?.token)
    }

    /// The whole token answer for `account` (a MIMC client needs all of it).
    pub async fn token_data(&self, account: &str) -> anyhow::Result<TokenData> {
        Ok(fetch_token_with(
            &self.http_client,
            &self.http,
            self.app_id,
            &self.app_key,
            &self.app_secret,
            account,
        )
        .await?)
    }

    /// Logs in with `token`, from the next source address in turn, to the next
    /// node in turn.
    pub async fn login(&self, token: &str, resource: &str) -> anyhow::Result<Client> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let (url, options) = (
            &self.urls[k % self.urls.len()],
            &self.options[k % self.options.len()],
        );
        Ok(Client::connect_with(url, options, token, resource).await?)
    }

    /// Logs in as `account` and skips the login backlog.
    pub async fn connect(&self, account: &str, resource: &str) -> anyhow::Result<Client> {
        let token = self.token(account).await?;
        let mut client = self.login(&token, resource).await?;
        loop {
            match client.next_event().await? {
                Some(Event::SyncDone(_)) => return Ok(client),
                Some(_) => {}
                None => bail!("closed during login"),
            }
        }
    }

    /// The flags that point another loadtest process at this gateway.
    pub fn target_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--server".to_owned(),
            self.http.clone(),
            "--app-id".into(),
            self.app_id.to_string(),
            "--app-key".into(),
            self.app_key.clone(),
            "--app-secret".into(),
            self.app_secret.clone(),
        ];
        if let Some(quic) = &self.quic {
            flags.extend(["--quic-url".to_owned(), quic.clone()]);
        }
        if let Some(fp) = &self.fingerprint {
            flags.extend([
                "--cert-fingerprint".to_owned(),
                courier::tls::fingerprint_text(fp),
            ]);
        }
        flags
    }
}

/// `count` source addresses in 127.0.0.0/8 (127.0.0.1+offset, …) when the gateway
/// is on loopback; otherwise the system's choice.
fn source_ips(url: &str, count: usize, offset: usize) -> Vec<Option<IpAddr>> {
    let loopback = url.contains("://127.") || url.contains("://localhost");
    if !loopback || count == 0 {
        return vec![None];
    }
    (0..count)
        .map(|k| {
            let n = (offset + k) % (250 * 250);
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                (n / 250) as u8,
                (n % 250 + 1) as u8,
            )))
        })
        .collect()
}

/// The receiver's scheduling: normal priority, or what `LOADTEST_RECEIVER_NICE`
/// says (`idle` for SCHED_IDLE, or a niceness 0–19).
fn receiver_priority() -> Priority {
    match std::env::var("LOADTEST_RECEIVER_NICE").ok().as_deref() {
        Some("idle") => Priority::Idle,
        Some(nice) => Priority::Nice(nice.parse().unwrap_or(0)),
        None => Priority::Nice(0),
    }
}

/// An HTTP receiver answering every POST with 200 at once, counting them, on
/// threads of its own. It stands for the app's back end on another machine; here
/// it shares the CPU with the gateway and the load (at normal priority unless
/// `LOADTEST_RECEIVER_NICE` says otherwise), which makes the figures pessimistic.
fn callback_receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/callback", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    std::thread::Builder::new()
        .name("callback-receiver".into())
        .spawn(move || {
            let priority = receiver_priority();
            courier::callbacks::lower_priority(priority);
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .on_thread_start(move || courier::callbacks::lower_priority(priority))
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().route(
                    "/callback",
                    axum::routing::post(move || {
                        counted.fetch_add(1, Ordering::Relaxed);
                        async { "ok" }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            });
        })?;
    Ok((url, count))
}

/// Resident memory of process `pid`, KiB.
fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time process `pid` has used (user + system), microseconds.
fn cpu_us_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th
    // and stime the 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// The started gateway, its app, and the callback counter.
type Spawned = (
    Vec<Printed>,
    (u64, String, String),
    Vec<Child>,
    TempDir,
    Option<Arc<AtomicU64>>,
);

/// Starts `courier serve` (`--nodes` of them) in a temp dir with one app.
fn spawn(t: &Target) -> anyhow::Result<Spawned> {
    let dir = std::env::temp_dir().join(format!("courier-loadtest-{}", std::process::id()));
    let dir = TempDir(dir);
    let (callback_url, callbacks) = match t.callbacks {
        Callbacks::Off => (None, None),
        Callbacks::Receiver => {
            let (url, count) = callback_receiver()?;
            (Some(url), Some(count))
        }
        Callbacks::Dead => {
            // A port nobody listens on: connections are refused.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            (Some(format!("http://127.0.0.1:{port}/callback")), None)
        }
    };
    let mut create = Command::new(&t.courier_bin);
    create.args(["app", "create", "--name", "loadtest", "--json"]);
    // A gateway on PostgreSQL (`--server-args "--store-kind postgres --postgres-url
    // URL"`): the app is created in that database.
    let server_args: Vec<&str> = t.server_args.split_whitespace().collect();
    if let Some(at) = server_args.iter().position(|a| *a == "--postgres-url") {
        if let Some(url) = server_args.get(at + 1) {
            create.args(["--postgres-url", url]);
        }
    }
    if let Some(url) = &callback_url {
        create.args(["--callback-url", url]);
    }
    let out = create
        .arg("--data-dir")
        .arg(&dir.0)
        .output()
        .with_context(|| {
            format!(
                "running {} (build it with cargo build --release)",
                t.courier_bin.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "app create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let app: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut args: Vec<String> = t.server_args.split_whitespace().map(String::from).collect();
    // A gateway under load may hold up to the open-files limit.
    if !args.iter().any(|a| a.starts_with("--max-connections")) {
        args.extend(["--max-connections".into(), "19900".into()]);
    }
    if t.nodes > 1 && !args.iter().any(|a| a == "--nats-url") {
        bail!(
            "--nodes {} needs --server-args with --nats-url (and a PostgreSQL store)",
            t.nodes
        );
    }
    let app = (
        app["appId"].as_u64().context("appId")?,
        app["appKey"].as_str().context("appKey")?.to_owned(),
        app["appSecret"].as_str().context("appSecret")?.to_owned(),
    );
    let mut printed = Vec::new();
    let mut children = Vec::new();
    for node in 0..t.nodes.max(1) {
        let mut node_args = args.clone();
        if t.nodes > 1 {
            node_args.extend(["--node-id".into(), node.to_string()]);
        }
        let (p, child) = spawn_node(t, &dir, &node_args)?;
        printed.push(p);
        children.push(child);
    }
    Ok((printed, app, children, dir, callbacks))
}

/// Starts one `courier serve` and reads what it printed about itself.
fn spawn_node(t: &Target, dir: &TempDir, args: &[String]) -> anyhow::Result<(Printed, Child)> {
    let mut child = Command::new(&t.courier_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut printed = Printed {
        http: String::new(),
        quic: None,
        fingerprint: None,
    };
    // Up to the "data dir" line, which comes after the URLs and the certificate.
    loop {
        let line = lines.next().context("courier exited")??;
        let line = line.trim();
        if let Some(url) = line.strip_prefix("courier listening on ") {
            printed.http = url.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("QUIC:") {
            printed.quic = rest.split_whitespace().next().map(String::from);
        } else if let Ok(fp) = courier::tls::parse_fingerprint(line) {
            printed.fingerprint = Some(fp);
        } else if line.starts_with("data dir:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok((printed, child))
}
