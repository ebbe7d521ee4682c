//! The `courier` binary: `serve` runs the gateway (HTTP, WebSocket, QUIC); `app` manages apps in a data dir;
//! `token`, `send` and `listen` are small clients for people and scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Parser, Subcommand};
use courier::client::{fetch_token_with, Client, ClientTrust, ConnectOptions, Event};
use courier::config::ServeArgs;
use courier::pb::{self, frame::Kind};
use courier::store::sqlite::{SqliteOptions, SqliteStore};
use courier::store::{App, AppStore};

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
    /// Manage apps (tenants) in a data dir.
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

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app and print its appId/appKey/appSecret.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, env = "COURIER_DATA_DIR", default_value = "courier-data")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's settings (takes effect at once, also on a running server).
    Set {
        #[arg(long)]
        app_id: u64,
        /// Members a topic of this app may have; 0 = the server's default.
        #[arg(long)]
        topic_member_limit: Option<u32>,
        /// Lifetime of accounts created from now on, seconds (temporary accounts,
        /// 临时帐号); 0 = accounts never expire.
        #[arg(long)]
        user_ttl_secs: Option<u64>,
        /// How long this app's messages stay in history, seconds; 0 = the server's
        /// `history_retention_secs`.
        #[arg(long)]
        history_retention_secs: Option<u64>,
        #[arg(long, env = "COURIER_DATA_DIR", default_value = "courier-data")]
        data_dir: PathBuf,
    },
    /// List apps with their credentials.
    List {
        #[arg(long, env = "COURIER_DATA_DIR", default_value = "courier-data")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    let print = |app: &App, json: bool| {
        if json {
            println!("{}", serde_json::to_string(app).unwrap_or_default());
        } else {
            println!(
                "{}  appId={}  appKey={}  appSecret={}",
                app.name, app.app_id, app.app_key, app.app_secret
            );
        }
    };
    match command {
        AppCommand::Create {
            name,
            data_dir,
            json,
        } => {
            let store = SqliteStore::open(&data_dir, SqliteOptions::default())?;
            let app = store.create_app(&name).await?;
            store.close();
            print(&app, json);
        }
        AppCommand::Set {
            app_id,
            topic_member_limit,
            user_ttl_secs,
            history_retention_secs,
            data_dir,
        } => {
            if topic_member_limit.is_none()
                && user_ttl_secs.is_none()
                && history_retention_secs.is_none()
            {
                bail!(
                    "nothing to set: give --topic-member-limit, --user-ttl-secs or --history-retention-secs"
                );
            }
            let store = SqliteStore::open(&data_dir, SqliteOptions::default())?;
            if store.app(app_id).await?.is_none() {
                store.close();
                bail!("no app {app_id} in {}", data_dir.display());
            }
            let mut settings = store.app_settings(app_id).await?;
            if let Some(limit) = topic_member_limit {
                settings.topic_member_limit = (limit > 0).then_some(limit);
            }
            if let Some(secs) = user_ttl_secs {
                settings.user_ttl_secs = secs;
            }
            if let Some(secs) = history_retention_secs {
                settings.history_retention_secs = (secs > 0).then_some(secs);
            }
            store.set_app_settings(app_id, settings.clone()).await?;
            store.close();
            let or_default = |v: Option<String>| v.unwrap_or_else(|| "server default".into());
            println!(
                "app {app_id}: topic member limit {}, account lifetime {}, history retention {}",
                or_default(settings.topic_member_limit.map(|n| n.to_string())),
                match settings.user_ttl_secs {
                    0 => "forever".to_owned(),
                    secs => format!("{secs} s"),
                },
                or_default(settings.history_retention_secs.map(|s| format!("{s} s"))),
            );
        }
        AppCommand::List { data_dir, json } => {
            let store = SqliteStore::open(&data_dir, SqliteOptions::default())?;
            for app in store.list_apps().await? {
                print(&app, json);
            }
            store.close();
        }
    }
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
