//! Load generator for Courier.
//!
//! By default it starts its own `courier serve` (the release binary) on a free
//! 127.0.0.1 port with a temporary data dir, so the server's memory can be read from
//! /proc; `--server` targets a running gateway instead. Every run is bounded by
//! `--secs` and stops by itself.
//!
//! - `p2p`: K sender→receiver pairs; durable sends with a window of in-flight
//!   messages, optionally paced to a target rate; reports acked msgs/s, end-to-end
//!   latency percentiles (sender's send time → receiver's delivery) and server RSS.
//! - `connections`: N logged-in idle connections; reports server RSS per connection.
//! - `abuse`: the attacks of docs/security.md, phase by phase, with the server's RSS
//!   and a bystander's send latency during each (see `abuse.rs`).

mod abuse;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use courier::client::{fetch_token, Client, Event};
use courier::pb::{self, frame::Kind};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Courier load generator")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args)]
struct Target {
    /// Gateway to load (default: start one from --courier-bin).
    #[arg(long, global = true)]
    server: Option<String>,
    #[arg(long, global = true, requires = "server")]
    app_id: Option<u64>,
    #[arg(long, global = true, requires = "server")]
    app_key: Option<String>,
    #[arg(long, global = true, requires = "server")]
    app_secret: Option<String>,
    /// The courier binary to start when --server is not given.
    #[arg(long, global = true, default_value = "target/release/courier")]
    courier_bin: PathBuf,
    /// Extra flags for the started server, e.g. "--commit-batch-max 4096".
    #[arg(long, global = true, default_value = "")]
    server_args: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Sender→receiver pairs, durable acknowledged sends.
    P2p {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Unacknowledged sends allowed per sender.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Total target rate in msgs/s (0 = as fast as acks allow).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Payload bytes (at least 8: the send timestamp).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// One topic with every member online; senders post to it at a fixed rate.
    Fanout {
        /// Topic members, each online on one connection.
        #[arg(long, default_value_t = 500)]
        members: usize,
        /// Sending connections (members' second devices).
        #[arg(long, default_value_t = 2)]
        senders: usize,
        /// Total topic messages per second (each is delivered to every member).
        #[arg(long, default_value_t = 600)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Payload bytes (at least 8: the send timestamp).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Login backlog: users with stored messages all log in at once.
    Backlog {
        /// Users that log in.
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// Stored messages waiting for each user.
        #[arg(long, default_value_t = 200)]
        per_user: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Idle logged-in connections; reports server memory per connection.
    Connections {
        #[arg(long, default_value_t = 5000)]
        count: usize,
    },
    /// Attack phases (ping flood, slowloris, stalled uploads, oversized calls, a
    /// non-reading device) with server RSS and a bystander's latency during each.
    Abuse {
        /// Seconds per phase.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Attacking sockets per phase (where it applies).
        #[arg(long, default_value_t = 200)]
        attackers: usize,
        /// Also print the results as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

/// A gateway under test and how to reach it.
struct Gateway {
    http: String,
    ws: String,
    app_id: u64,
    app_key: String,
    app_secret: String,
    child: Option<Child>,
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
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Gateway {
    fn start(t: &Target) -> anyhow::Result<Gateway> {
        if let Some(server) = &t.server {
            let ws = format!(
                "{}/ws",
                server.trim_end_matches('/').replacen("http", "ws", 1)
            );
            return Ok(Gateway {
                http: server.clone(),
                ws,
                app_id: t.app_id.context("--app-id")?,
                app_key: t.app_key.clone().context("--app-key")?,
                app_secret: t.app_secret.clone().context("--app-secret")?,
                child: None,
                _dir: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("courier-loadtest-{}", std::process::id()));
        let dir = TempDir(dir);
        let out = Command::new(&t.courier_bin)
            .args([
                "app",
                "create",
                "--name",
                "loadtest",
                "--json",
                "--data-dir",
            ])
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
        let mut child = Command::new(&t.courier_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir.0)
            .args(t.server_args.split_whitespace())
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let http = loop {
            let line = lines.next().context("courier exited")??;
            if let Some(url) = line.strip_prefix("courier listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Gateway {
            ws: format!("{}/ws", http.replacen("http", "ws", 1)),
            http,
            app_id: app["appId"].as_u64().context("appId")?,
            app_key: app["appKey"].as_str().context("appKey")?.to_owned(),
            app_secret: app["appSecret"].as_str().context("appSecret")?.to_owned(),
            child: Some(child),
            _dir: Some(dir),
        })
    }

    /// Server resident memory in KiB (only for a server this tool started).
    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    async fn connect(&self, account: &str, resource: &str) -> anyhow::Result<Client> {
        let token = fetch_token(
            &self.http,
            self.app_id,
            &self.app_key,
            &self.app_secret,
            account,
        )
        .await?
        .token;
        let mut client = Client::connect(&self.ws, &token, resource).await?;
        // Skip the backlog.
        loop {
            match client.next_event().await? {
                Some(Event::SyncDone(_)) => return Ok(client),
                Some(_) => {}
                None => bail!("closed during login"),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let gw = Gateway::start(&cli.target)?;
        match cli.mode {
            Mode::P2p {
                pairs,
                secs,
                window,
                rate,
                payload,
            } => p2p(&gw, pairs, secs, window, rate, payload.max(8)).await,
            Mode::Fanout {
                members,
                senders,
                rate,
                secs,
                payload,
            } => {
                fanout(
                    &gw,
                    members,
                    senders.max(1),
                    rate.max(1),
                    secs,
                    payload.max(8),
                )
                .await
            }
            Mode::Backlog {
                users,
                per_user,
                payload,
            } => backlog(&gw, users, per_user, payload).await,
            Mode::Connections { count } => connections(&gw, count).await,
            Mode::Abuse {
                secs,
                attackers,
                json,
            } => abuse::run(&gw, secs, attackers, json).await,
        }
    })
}

fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn p2p(
    gw: &Gateway,
    pairs: usize,
    secs: u64,
    window: usize,
    rate: u64,
    payload_len: usize,
) -> anyhow::Result<()> {
    let run = format!("{:x}", std::process::id());
    let rss_before = gw.rss_kib();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..pairs {
        let rx = gw.connect(&format!("rx-{run}-{i}"), "load").await?;
        receivers.push(rx);
        senders.push(gw.connect(&format!("tx-{run}-{i}"), "load").await?);
    }
    let rss_connected = gw.rss_kib();
    eprintln!("{pairs} pairs connected; sending for {secs}s");

    let rx_tasks: Vec<_> = receivers
        .into_iter()
        .map(|rx| tokio::spawn(receive(rx, epoch, delivered.clone())))
        .collect();

    let per_sender_rate = if rate == 0 {
        0.0
    } else {
        rate as f64 / pairs as f64
    };
    let mut tx_tasks = Vec::new();
    for (i, tx) in senders.into_iter().enumerate() {
        let (stop, acked) = (stop.clone(), acked.clone());
        let to = format!("rx-{run}-{i}");
        tx_tasks.push(tokio::spawn(async move {
            let (mut writer, mut reader) = tx.split();
            let permits = Arc::new(Semaphore::new(window));
            let reader_permits = permits.clone();
            let reader_acked = acked.clone();
            let reader_task = tokio::spawn(async move {
                while let Ok(Some(ev)) = reader.next_event().await {
                    match ev {
                        Event::ServerAck(a) if a.code == 200 => {
                            reader_acked.fetch_add(1, Ordering::Relaxed);
                            reader_permits.add_permits(1);
                        }
                        Event::ServerAck(a) => eprintln!("ack error: {a:?}"),
                        Event::Kick(k) => {
                            eprintln!("sender kicked: {k:?}");
                            break;
                        }
                        Event::Error(e) => eprintln!("error: {e:?}"),
                        _ => {}
                    }
                }
            });
            let mut n: u64 = 0;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if per_sender_rate > 0.0 {
                    let due = Duration::from_secs_f64(n as f64 / per_sender_rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                permit.forget();
                let send = Kind::Send(pb::Send {
                    packet_id: format!("{i}-{n}"),
                    to_account: to.clone(),
                    payload: stamped_payload(epoch, payload_len),
                    ..Default::default()
                });
                n += 1;
                if writer.send(send).await.is_err() {
                    break;
                }
            }
            // Let outstanding acks arrive.
            let _ =
                tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(window as u32))
                    .await;
            reader_task.abort();
            n
        }));
    }

    let (acked_in_window, elapsed) = report_each_second(secs, &acked, "acked").await;
    stop.store(true, Ordering::Relaxed);
    let rss_peak = gw.rss_kib();
    let mut sent = 0;
    for t in tx_tasks {
        sent += t.await?;
    }
    let hist = merge_histograms(rx_tasks).await?;
    let throughput = acked_in_window as f64 / elapsed;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "p2p pairs={pairs} window={window} rate={} payload={payload_len}B: acked {:.0} msgs/s; sent {sent}, acked {}, delivered {}; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; server RSS KiB before {} connected {} end {}",
        if rate == 0 { "max".to_string() } else { rate.to_string() },
        throughput,
        acked.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        opt(rss_before),
        opt(rss_connected),
        opt(rss_peak),
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "p2p", "pairs": pairs, "window": window, "rate": rate, "payload": payload_len,
            "acked_per_sec": throughput.round(), "delivered": delivered.load(Ordering::Relaxed),
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "rss_kib_connected": rss_connected, "rss_kib_end": rss_peak,
        })
    );
    Ok(())
}

/// Payload carrying the sender's clock reading, padded to `len`.
fn stamped_payload(epoch: Instant, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    buf.put_u64_le(micros_since(epoch));
    buf.resize(len, b'x');
    buf.freeze()
}

/// Receives deliveries until the connection goes quiet; returns the latency histogram.
async fn receive(mut rx: Client, epoch: Instant, delivered: Arc<AtomicU64>) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut since_ack = 0;
    while let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(5), rx.next_event()).await
    {
        if let Event::Deliver(d) = ev {
            let sent = u64::from_le_bytes(d.payload[..8].try_into().unwrap_or([0; 8]));
            let _ = hist.record(micros_since(epoch).saturating_sub(sent).max(1));
            delivered.fetch_add(1, Ordering::Relaxed);
            since_ack += 1;
            if since_ack >= 64 {
                since_ack = 0;
                if rx.ack(d.sequence).await.is_err() {
                    break;
                }
            }
        }
    }
    hist
}

async fn fanout(
    gw: &Gateway,
    members: usize,
    senders: usize,
    rate: u64,
    secs: u64,
    payload_len: usize,
) -> anyhow::Result<()> {
    let run = format!("{:x}", std::process::id());
    let names: Vec<String> = (0..members).map(|i| format!("m-{run}-{i}")).collect();
    // The topic, created by member 0 with everyone in it.
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/topic/{}", gw.http, gw.app_id))
        .header("appKey", &gw.app_key)
        .header("appSecret", &gw.app_secret)
        .header("appAccount", &names[0])
        .json(&serde_json::json!({"topicName": "fanout", "accounts": names[1..].join(",")}))
        .send()
        .await?
        .json()
        .await?;
    let topic_id = resp["data"]["topicInfo"]["topicId"]
        .as_u64()
        .with_context(|| format!("topic create failed: {resp}"))?;
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut rx_tasks = Vec::with_capacity(members);
    for name in &names {
        let client = gw.connect(name, "load").await?;
        rx_tasks.push(tokio::spawn(receive(client, epoch, delivered.clone())));
    }
    let rss_connected = gw.rss_kib();
    eprintln!("{members} members online in topic {topic_id}; {senders} senders at {rate} msgs/s for {secs}s");

    let stop = Arc::new(AtomicBool::new(false));
    let mut tx_tasks = Vec::new();
    for i in 0..senders {
        let mut tx = gw.connect(&names[i % members], "sender").await?;
        let stop = stop.clone();
        let per_sender = rate as f64 / senders as f64;
        tx_tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = Duration::from_secs_f64(n as f64 / per_sender);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let send = Kind::Send(pb::Send {
                    packet_id: format!("f{i}-{n}"),
                    topic_id,
                    payload: stamped_payload(epoch, payload_len),
                    ..Default::default()
                });
                n += 1;
                if tx.send_frame(send).await.is_err() {
                    break;
                }
                // Drain acks without waiting.
                while let Some(Ok(Some(_))) = futures_now(tx.next_event()) {}
            }
            n
        }));
    }
    let (in_window, elapsed) = report_each_second(secs, &delivered, "deliveries").await;
    stop.store(true, Ordering::Relaxed);
    let rss_end = gw.rss_kib();
    let mut sent = 0;
    for t in tx_tasks {
        sent += t.await?;
    }
    let hist = merge_histograms(rx_tasks).await?;
    let per_sec = in_window as f64 / elapsed;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "fanout members={members} senders={senders} rate={rate} payload={payload_len}B: {per_sec:.0} deliveries/s; sent {sent}, delivered {} (expected {}); latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; server RSS KiB connected {} end {}",
        delivered.load(Ordering::Relaxed),
        sent * members as u64,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        opt(rss_connected),
        opt(rss_end),
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "fanout", "members": members, "senders": senders, "rate": rate,
            "deliveries_per_sec": per_sec.round(), "sent": sent,
            "delivered": delivered.load(Ordering::Relaxed),
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "rss_kib_connected": rss_connected, "rss_kib_end": rss_end,
        })
    );
    Ok(())
}

/// Prints how much `counter` grew in each of `secs` seconds; returns its value at
/// the end and the seconds elapsed.
async fn report_each_second(secs: u64, counter: &AtomicU64, what: &str) -> (u64, f64) {
    let started = Instant::now();
    let mut last = 0;
    for s in 1..=secs {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let now = counter.load(Ordering::Relaxed);
        eprintln!("  t={s:>3}s {what}/s {:>9}", now - last);
        last = now;
    }
    (
        counter.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// Waits for the receivers and merges their latency histograms.
async fn merge_histograms(
    tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await?)?;
    }
    Ok(hist)
}

async fn backlog(
    gw: &Gateway,
    users: usize,
    per_user: usize,
    payload: usize,
) -> anyhow::Result<()> {
    let run = format!("{:x}", std::process::id());
    let names: Vec<String> = (0..users).map(|i| format!("b-{run}-{i}")).collect();
    // Seed: 8 senders, each in windows of 200 paced to 8,000 sends/s (under the
    // server's default per-connection frame limit; acks never pile up).
    let total = users * per_user;
    let seeding = Instant::now();
    let body = Bytes::from(vec![b'x'; payload]);
    let mut seeders = Vec::new();
    for s in 0..8 {
        let mut c = gw.connect(&format!("seed-{run}-{s}"), "seed").await?;
        let names = names.clone();
        let body = body.clone();
        seeders.push(tokio::spawn(async move {
            let mine: Vec<usize> = (s..total).step_by(8).collect();
            let mut acked = 0;
            let paced = Instant::now();
            for (w, window) in mine.chunks(200).enumerate() {
                let due = Duration::from_secs_f64(w as f64 * 200.0 / 8000.0);
                if let Some(wait) = due.checked_sub(paced.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                for &i in window {
                    c.writer
                        .feed(Kind::Send(pb::Send {
                            packet_id: format!("s{i}"),
                            to_account: names[i % users].clone(),
                            payload: body.clone(),
                            ..Default::default()
                        }))
                        .await?;
                }
                c.writer.flush().await?;
                let mut n = 0;
                while n < window.len() {
                    match c.next_event().await? {
                        Some(Event::ServerAck(a)) if a.code == 200 => n += 1,
                        Some(Event::ServerAck(a)) => anyhow::bail!("seed send refused: {a:?}"),
                        Some(Event::Kick(k)) => anyhow::bail!("seeder kicked: {k:?}"),
                        Some(Event::Error(e)) => anyhow::bail!("seed send refused: {e:?}"),
                        Some(_) => {}
                        None => anyhow::bail!("seeder closed"),
                    }
                }
                acked += n;
            }
            Ok::<_, anyhow::Error>(acked)
        }));
    }
    let mut acked = 0;
    for t in seeders {
        acked += t.await??;
    }
    eprintln!(
        "seeded {acked} messages in {:.1}s; {users} users log in at once",
        seeding.elapsed().as_secs_f64()
    );
    // Tokens first, so the measured part is login + backlog only.
    let mut tokens = Vec::with_capacity(users);
    for name in &names {
        tokens.push(
            fetch_token(&gw.http, gw.app_id, &gw.app_key, &gw.app_secret, name)
                .await?
                .token,
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(users);
    for token in tokens {
        let ws = gw.ws.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&ws, &token, "phone").await?;
            let mut got = 0u64;
            loop {
                match c.next_event().await? {
                    Some(Event::Deliver(_)) => got += 1,
                    Some(Event::SyncDone(_)) => break,
                    Some(_) => {}
                    None => anyhow::bail!("closed during backlog"),
                }
            }
            Ok::<_, anyhow::Error>((got, start.elapsed()))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut delivered = 0;
    for t in tasks {
        let (got, took) = t.await??;
        delivered += got;
        let _ = hist.record(took.as_micros() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "backlog users={users} per_user={per_user}: {delivered} of {total} delivered in {elapsed:.2}s = {:.0} backlog msgs/s; time to SyncDone ms p50 {:.1} p99 {:.1} max {:.1}; server RSS KiB {}",
        delivered as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0,
        opt(gw.rss_kib()),
    );
    Ok(())
}

/// Polls a future once: its output if ready now.
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

async fn connections(gw: &Gateway, count: usize) -> anyhow::Result<()> {
    let before = gw.rss_kib();
    let mut clients = Vec::with_capacity(count);
    let run = format!("{:x}", std::process::id());
    for i in 0..count {
        clients.push(gw.connect(&format!("idle-{run}-{i}"), "load").await?);
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} connected", i + 1);
        }
    }
    let after = gw.rss_kib();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", (a.saturating_sub(b)) as f64 / count as f64),
        _ => "n/a".into(),
    };
    println!(
        "connections count={count}: server RSS KiB before {} after {} => {per_conn} KiB per logged-in connection",
        opt(before),
        opt(after)
    );
    drop(clients);
    Ok(())
}
