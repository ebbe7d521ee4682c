//! The `courier` binary: `serve` runs the gateway (HTTP, WebSocket, QUIC); `app` manages apps in a data dir;
//! `token`, `send` and `listen` are small clients for people and scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Parser, Subcommand};
use courier::admin::remote::{AdminCall, AdminTarget};
use courier::admin::{AppPatch, SettingsPatch};
use courier::client::{fetch_token_with, Client, ClientTrust, ConnectOptions, Event};
use courier::config::ServeArgs;
use courier::pb::{self, frame::Kind};

#[derive(Parser)]
#[command(
    name = "courier",
    version,
    about = "Courier realtime messaging gateway"
)]
struct Cli {
    /// Log lines as `text` (default) or `json` (one JSON object per line, for log
    /// collectors). The level is set with RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "COURIER_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (HTTP API, WebSocket, QUIC) on the embedded store.
    Serve(Box<ServeArgs>),
    /// Manage apps (tenants) and their settings: through a running gateway's admin
    /// API (--server, --admin-token) or on a stopped gateway's data dir.
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Print an account's token (as POST /api/account/token answers it).
    Token {
        #[command(flatten)]
        conn: ClientArgs,
        /// The account (appAccount).
        #[arg(long)]
        account: String,
    },
    /// Send one message and print the server's ack as JSON.
    Send {
        #[command(flatten)]
        conn: ClientArgs,
        /// Sending account.
        #[arg(long)]
        from: String,
        /// Receiving account.
        #[arg(long)]
        to: String,
        /// The sender's resource (device name).
        #[arg(long, default_value = "cli")]
        resource: String,
        /// Packet id (default: random); resend with the same id to test dedup.
        #[arg(long)]
        packet_id: Option<String>,
        /// Business type tag carried with the message.
        #[arg(long, default_value = "")]
        biz_type: String,
        /// Deliver to online devices only; never stored.
        #[arg(long)]
        online_only: bool,
        /// Do not store the message (isStore=false).
        #[arg(long)]
        no_store: bool,
        /// Message text.
        message: String,
    },
    /// Print deliveries to an account as JSON lines (backlog first, then live).
    Listen {
        #[command(flatten)]
        conn: ClientArgs,
        /// The account to listen as.
        #[arg(long)]
        account: String,
        /// The resource (device name) to log in as.
        #[arg(long, default_value = "cli-listen")]
        resource: String,
        /// Exit after this many deliveries.
        #[arg(long)]
        count: Option<u64>,
        /// Exit once the login backlog has been printed.
        #[arg(long)]
        backlog_only: bool,
        /// Do not acknowledge deliveries (they will be delivered again next login).
        #[arg(long)]
        no_ack: bool,
    },
}

/// Where `courier app` works: a running gateway's admin API, or a data dir.
#[derive(clap::Args, Clone)]
struct AdminArgs {
    /// A running gateway's base URL: the command goes through its admin API
    /// (with --admin-token). Without it, the command works on --data-dir, which
    /// must not be in use by a running gateway.
    #[arg(long, env = "COURIER_ADMIN_URL")]
    server: Option<String>,
    /// The gateway's admin_token.
    #[arg(long, env = "COURIER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[arg(long, env = "COURIER_DATA_DIR", default_value = "courier-data")]
    data_dir: PathBuf,
    /// Work on this PostgreSQL store instead of --data-dir (gateways may be
    /// running on it).
    #[arg(long, env = "COURIER_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Print the admin API's JSON.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    fn target(&self) -> anyhow::Result<AdminTarget> {
        Ok(match &self.server {
            Some(url) => AdminTarget::Server {
                url: url.clone(),
                token: self
                    .admin_token
                    .clone()
                    .context("--server needs --admin-token (or COURIER_ADMIN_TOKEN)")?,
            },
            None => match &self.postgres_url {
                Some(url) => AdminTarget::Postgres(url.clone()),
                None => AdminTarget::DataDir(self.data_dir.clone()),
            },
        })
    }
}

/// Settings of `courier app create` and `courier app set`; 0 (or "" for the URL)
/// puts a setting back to the server's default.
#[derive(clap::Args, Clone, Default)]
struct SettingsArgs {
    /// Where message callbacks are POSTed (http:// or https://); "" = none.
    #[arg(long)]
    callback_url: Option<String>,
    /// Lifetime of accounts created from now on, seconds (临时帐号); 0 = forever.
    #[arg(long)]
    user_ttl_secs: Option<u64>,
    /// Largest message payload, bytes (at most the server's max_payload_bytes).
    #[arg(long)]
    max_payload_bytes: Option<u32>,
    /// Members a topic of this app may have.
    #[arg(long)]
    topic_member_limit: Option<u32>,
    /// Offline delivery window at login, seconds.
    #[arg(long)]
    offline_ttl_secs: Option<u64>,
    /// Messages pending at login that are all sent.
    #[arg(long)]
    backlog_limit: Option<u32>,
    /// How long messages stay in history, seconds.
    #[arg(long)]
    history_retention_secs: Option<u64>,
    /// Recent-contacts window, seconds.
    #[arg(long)]
    contacts_window_secs: Option<u64>,
    /// Messages per second one user may send.
    #[arg(long)]
    send_rate_per_user: Option<u32>,
}

impl SettingsArgs {
    fn patch(&self) -> Option<SettingsPatch> {
        fn or_default<T: PartialEq + Default + Copy>(v: Option<T>) -> Option<Option<T>> {
            v.map(|n| (n != T::default()).then_some(n))
        }
        let p = SettingsPatch {
            callback_url: self
                .callback_url
                .clone()
                .map(|u| (!u.is_empty()).then_some(u)),
            user_ttl_secs: self.user_ttl_secs.map(Some),
            max_payload_bytes: or_default(self.max_payload_bytes),
            topic_member_limit: or_default(self.topic_member_limit),
            offline_ttl_secs: self.offline_ttl_secs.map(Some),
            backlog_limit: or_default(self.backlog_limit),
            history_retention_secs: or_default(self.history_retention_secs),
            contacts_window_secs: or_default(self.contacts_window_secs),
            send_rate_per_user: or_default(self.send_rate_per_user),
        };
        let empty = serde_json::to_value(&p).is_ok_and(|v| v == serde_json::json!({}));
        (!empty).then_some(p)
    }
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app and print its appId/appKey/appSecret.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// List apps with their credentials and settings.
    List {
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Show one app.
    Get {
        #[arg(long)]
        app_id: u64,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Change an app's name or settings (at once on a running gateway).
    Set {
        #[arg(long)]
        app_id: u64,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Give an app a new appSecret (tokens issued before keep working until they expire).
    RotateSecret {
        #[arg(long)]
        app_id: u64,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Delete an app: its tokens, sessions, accounts, topics and messages go.
    Delete {
        #[arg(long)]
        app_id: u64,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Show an app's pending and failed message callbacks (--failed lists them).
    Callbacks {
        #[arg(long)]
        app_id: u64,
        /// List the failed callbacks (sequence, type, attempts, last error).
        #[arg(long)]
        failed: bool,
        /// With --failed: list those with a sequence above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Send failed callbacks again (all, or those given with --sequence).
    Replay {
        #[arg(long)]
        app_id: u64,
        #[arg(long = "sequence")]
        sequences: Vec<u64>,
        #[command(flatten)]
        target: AdminArgs,
    },
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Gateway base URL.
    #[arg(long, env = "COURIER_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long, env = "COURIER_APP_ID")]
    app_id: u64,
    #[arg(long, env = "COURIER_APP_KEY")]
    app_key: String,
    #[arg(long, env = "COURIER_APP_SECRET")]
    app_secret: String,
    /// Where to connect for messages: `ws://…/ws`, `wss://…/ws` or `quic://host:port`
    /// (default: the WebSocket of --server).
    #[arg(long, env = "COURIER_URL")]
    url: Option<String>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (as
    /// `courier serve` prints it), for quic://, wss:// and https://.
    #[arg(long, env = "COURIER_CERT_FINGERPRINT", conflicts_with = "ca_file")]
    cert_fingerprint: Option<String>,
    /// Trust server certificates issued by the CA(s) in this PEM file.
    #[arg(long, env = "COURIER_CA_FILE")]
    ca_file: Option<PathBuf>,
}

impl ClientArgs {
    fn trust(&self) -> anyhow::Result<ClientTrust> {
        Ok(match (&self.cert_fingerprint, &self.ca_file) {
            (Some(fp), _) => ClientTrust::Pinned(courier::tls::parse_fingerprint(fp)?),
            (None, Some(path)) => ClientTrust::CaFile(path.clone()),
            (None, None) => ClientTrust::WebPki,
        })
    }

    fn url(&self) -> String {
        self.url.clone().unwrap_or_else(|| self.ws_url())
    }

    fn ws_url(&self) -> String {
        let base = self.server.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!("{ws}/ws")
    }

    async fn token(&self, account: &str) -> anyhow::Result<courier::client::TokenData> {
        let http = courier::client::http_client(&self.trust()?)?;
        fetch_token_with(
            &http,
            &self.server,
            self.app_id,
            &self.app_key,
            &self.app_secret,
            account,
        )
        .await
        .with_context(|| format!("token request to {} failed", self.server))
    }

    async fn connect(&self, account: &str, resource: &str) -> anyhow::Result<Client> {
        let token = self.token(account).await?;
        let options = ConnectOptions::new(&self.trust()?)?;
        let url = self.url();
        Client::connect_with(&url, &options, &token.token, resource)
            .await
            .map_err(|e| {
                let hint = if e.to_string().contains("UnknownIssuer") {
                    " (the server's certificate is not from a public CA: pass the SHA-256 \
                     fingerprint `courier serve` printed with --cert-fingerprint, or its CA \
                     with --ca-file)"
                } else {
                    ""
                };
                anyhow::Error::new(e).context(format!("connecting to {url} failed{hint}"))
            })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::App { command } => app(command).await,
        Command::Token { conn, account } => {
            let t = conn.token(&account).await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
            Ok(())
        }
        Command::Send {
            conn,
            from,
            to,
            resource,
            packet_id,
            biz_type,
            online_only,
            no_store,
            message,
        } => {
            let mut client = conn.connect(&from, &resource).await?;
            let packet_id =
                packet_id.unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
            client
                .send_frame(Kind::Send(pb::Send {
                    packet_id: packet_id.clone(),
                    to_account: to,
                    payload: message.into_bytes().into(),
                    biz_type,
                    is_store: no_store.then_some(false),
                    online_only,
                    ..Default::default()
                }))
                .await?;
            loop {
                match client.next_event().await? {
                    Some(Event::ServerAck(ack)) if ack.packet_id == packet_id => {
                        println!(
                            "{}",
                            serde_json::json!({
                                "packetId": ack.packet_id, "sequence": ack.sequence,
                                "timestamp": ack.timestamp, "code": ack.code, "desc": ack.desc,
                                "delivered": ack.delivered,
                            })
                        );
                        let _ = client.writer.logout().await;
                        return Ok(());
                    }
                    Some(Event::Error(e)) => bail!("server error {}: {}", e.code, e.desc),
                    Some(Event::Kick(k)) => bail!("kicked ({}): {}", k.code, k.reason),
                    Some(_) => continue,
                    None => bail!("connection closed before the ack"),
                }
            }
        }
        Command::Listen {
            conn,
            account,
            resource,
            count,
            backlog_only,
            no_ack,
        } => listen(conn, &account, &resource, count, backlog_only, no_ack).await,
    }
}

async fn listen(
    conn: ClientArgs,
    account: &str,
    resource: &str,
    count: Option<u64>,
    backlog_only: bool,
    no_ack: bool,
) -> anyhow::Result<()> {
    let mut client = conn.connect(account, resource).await?;
    let mut seen = 0u64;
    // Keep the connection alive through the server's idle timeout.
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    keepalive.tick().await;
    let mut nonce = 0;
    loop {
        let event = tokio::select! {
            event = client.next_event() => event?,
            _ = keepalive.tick() => {
                nonce += 1;
                client.writer.ping(nonce).await?;
                continue;
            }
        };
        let Some(event) = event else {
            bail!("connection closed by the server");
        };
        match event {
            Event::Deliver(d) => {
                let text = String::from_utf8(d.payload.to_vec()).ok();
                println!(
                    "{}",
                    serde_json::json!({
                        "sequence": d.sequence, "timestamp": d.timestamp, "packetId": d.packet_id,
                        "fromAccount": d.from_account, "fromResource": d.from_resource,
                        "toAccount": d.to_account, "topicId": d.topic_id, "bizType": d.biz_type,
                        "text": text,
                        "payload": base64::engine::general_purpose::STANDARD.encode(&d.payload),
                    })
                );
                if !no_ack && !d.transient {
                    client.ack(d.sequence).await?;
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            Event::SyncDone(n) => {
                eprintln!("backlog done ({n} messages); listening");
                if backlog_only {
                    break;
                }
            }
            Event::PullNotice(n) => eprintln!(
                "more stored messages between sequences {} and {}: page them with Pull",
                n.after_sequence, n.before_sequence
            ),
            Event::Kick(k) => bail!("kicked ({}): {}", k.code, k.reason),
            Event::Error(e) => eprintln!("server error {}: {}", e.code, e.desc),
            _ => {}
        }
    }
    // Let the ack reach the server before closing.
    let _ = client.writer.logout().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.next_event()).await;
    Ok(())
}

async fn app(command: AppCommand) -> anyhow::Result<()> {
    let (call, target) = match command {
        AppCommand::Create {
            name,
            settings,
            target,
        } => {
            let patch = AppPatch {
                name: Some(name),
                settings: settings.patch(),
            };
            (AdminCall::Create(patch), target)
        }
        AppCommand::List { target } => (AdminCall::List, target),
        AppCommand::Get { app_id, target } => (AdminCall::Get(app_id), target),
        AppCommand::Set {
            app_id,
            name,
            settings,
            target,
        } => {
            let patch = AppPatch {
                name,
                settings: settings.patch(),
            };
            if patch.name.is_none() && patch.settings.is_none() {
                bail!("nothing to set: give --name or a setting (see --help)");
            }
            (AdminCall::Update(app_id, patch), target)
        }
        AppCommand::RotateSecret { app_id, target } => (AdminCall::RotateSecret(app_id), target),
        AppCommand::Delete { app_id, target } => (AdminCall::Delete(app_id), target),
        AppCommand::Callbacks {
            app_id,
            failed,
            after,
            limit,
            target,
        } => {
            let call = if failed {
                AdminCall::Failed {
                    app_id,
                    after,
                    limit,
                }
            } else {
                AdminCall::CallbackCounts(app_id)
            };
            (call, target)
        }
        AppCommand::Replay {
            app_id,
            sequences,
            target,
        } => {
            let sequences = (!sequences.is_empty()).then_some(sequences);
            (AdminCall::Replay { app_id, sequences }, target)
        }
    };
    let data = target.target()?.call(call).await?;
    print!("{}", courier::admin::remote::render(&data, target.json));
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let server = courier::server::start(config.clone()).await?;
    println!("courier listening on {}", server.http_url());
    println!("  token API: {}/api/account/token", server.http_url());
    println!("  WebSocket: {}  (subprotocol courier.v1)", server.ws_url());
    if let Some(quic) = server.quic_url() {
        println!("  QUIC:      {quic}  (ALPN courier/1)");
    }
    if config.mimc {
        let mimc = server.ws_url().replace("/ws", "/mimc");
        println!("  MIMC web:  {mimc}  (the MIMC web SDK; docs/mimc-compat.md)");
    }
    if let Some(fp) = &server.cert_fingerprint {
        let fp = courier::tls::fingerprint_text(fp);
        if server.cert_self_signed {
            println!("  certificate SHA-256 (self-signed, kept in the data dir; clients pin it with --cert-fingerprint):");
        } else {
            println!("  certificate SHA-256:");
        }
        println!("    {fp}");
    }
    println!("  data dir:  {}", config.data_dir.display());
    if config.store_kind == "postgres" {
        // Not the URL: it may hold a password.
        println!("  store:     PostgreSQL (postgres_url); the data dir keeps only the certificate");
    }
    if !config.nats_url.is_empty() {
        println!(
            "  cluster:   node {} via NATS {} (subjects {}.*)",
            config.node_id,
            courier::cluster::redacted_url(&config.nats_url),
            config.cluster_subject_prefix
        );
    }
    if config.admin_token.is_empty() {
        println!(
            "  admin API: off (start with COURIER_ADMIN_TOKEN=… to manage apps and callbacks)"
        );
    } else {
        println!(
            "  admin API: {}/admin/apps  (Authorization: Bearer <admin_token>)",
            server.http_url()
        );
    }
    println!("  API description: {}/openapi.json", server.http_url());
    if config.demo {
        let tokens = if courier::api::demo::tokens_allowed(&config) {
            "open it in two browsers and chat"
        } else {
            "its token endpoint is off here (demo_tokens; docs/demo.md)"
        };
        println!("  web demo:  {}/demo/  ({tokens})", server.http_url());
    }
    match &server.created_app {
        Some(app) => {
            println!("created the default app (`courier app list` shows it again):");
            println!("  appId:     {}", app.app_id);
            println!("  appKey:    {}", app.app_key);
            println!("  appSecret: {}", app.app_secret);
            let flags = format!(
                "--server {} --app-id {} --app-key {} --app-secret '{}'",
                server.http_url(),
                app.app_id,
                app.app_key,
                app.app_secret
            );
            println!("try it, in two more terminals:");
            println!("  cargo run --release -- listen {flags} --account bob");
            println!("  cargo run --release -- send {flags} --from alice --to bob 'Hello B'");
        }
        None => println!(
            "apps: `courier app list --data-dir {}`",
            config.data_dir.display()
        ),
    }
    let state = server.state.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        state.shutdown.cancel();
    });
    Ok(server.wait().await?)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// jemalloc instead of glibc malloc (see BENCHMARKS.md, issue 9: allocation was a
/// quarter of the server's CPU on the p2p path).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
