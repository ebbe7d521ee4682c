//! `loadtest abuse`: the attacks of docs/security.md against a gateway, one phase
//! at a time, while a bystander keeps chatting. For each phase it reports the
//! server's RSS (start, peak, end; only for a server this tool started) and the
//! bystander's send → ack latency, so an operator sees both that memory stays
//! bounded and that honest users are still served.
//!
//! Phases (each `--secs` long, with `--attackers` sockets where that applies):
//! - `baseline`: no attack;
//! - `ping-flood`: WebSockets that send pings without ever reading;
//! - `slowloris`: connections that send half a request's headers and stall;
//! - `stalled-uploads`: 2 MB push bodies announced, 1 MB sent, then stalled;
//! - `oversized-calls`: topic creates naming 20,000 accounts (refused), alternating
//!   with the largest allowed creates (499 new accounts), as fast as answered;
//! - `non-reader`: a device that never reads, flooded with 14 KiB messages.
//!
//! Every loop is bounded by the phase's time and stops by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::client::Event;
use courier::pb::{self, frame::Kind};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{self, Report};
use crate::Gateway;

const PHASES: [&str; 6] = [
    "baseline",
    "ping-flood",
    "slowloris",
    "stalled-uploads",
    "oversized-calls",
    "non-reader",
];

/// One phase's figures.
struct PhaseReport {
    name: &'static str,
    attack_units: u64,
    rss_start: Option<u64>,
    rss_peak: Option<u64>,
    rss_end: Option<u64>,
    acked: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(gw: &Gateway, secs: u64, attackers: usize) -> anyhow::Result<Report> {
    let run = crate::run_id();
    let mut reports = Vec::new();
    let bar = report::counter(PHASES.len() as u64, "phases");
    for name in PHASES {
        bar.set_message(name);
        reports.push(phase(gw, &run, name, secs, attackers).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let columns = [
        "phase",
        "attack",
        "p50 ms",
        "p99 ms",
        "max ms",
        "acked",
        "failed",
        "RSS start",
        "RSS peak",
        "RSS end",
    ];
    let rows = reports
        .iter()
        .map(|r| {
            vec![
                r.name.to_owned(),
                r.attack_units.to_string(),
                format!("{:.2}", r.p50_ms),
                format!("{:.2}", r.p99_ms),
                format!("{:.2}", r.max_ms),
                r.acked.to_string(),
                r.failed.to_string(),
                fmt(r.rss_start),
                fmt(r.rss_peak),
                fmt(r.rss_end),
            ]
        })
        .collect();
    let json_rows: Vec<_> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "phase": r.name, "attack_units": r.attack_units,
                "bystander_p50_ms": r.p50_ms, "bystander_p99_ms": r.p99_ms,
                "bystander_max_ms": r.max_ms, "acked": r.acked, "failed": r.failed,
                "rss_start_kib": r.rss_start, "rss_peak_kib": r.rss_peak,
                "rss_end_kib": r.rss_end,
            })
        })
        .collect();
    Ok(Report {
        title: format!(
            "abuse: {secs} s per phase, {attackers} attackers; bystander send → ack latency, server RSS KiB"
        ),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        json: serde_json::json!({"mode": "abuse", "secs": secs, "attackers": attackers, "phases": json_rows}),
    })
}

fn fmt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

async fn phase(
    gw: &Gateway,
    run: &str,
    name: &'static str,
    secs: u64,
    attackers: usize,
) -> anyhow::Result<PhaseReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let units = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let addr = gw.http.trim_start_matches("http://").to_owned();
    let rss_start = gw.rss_kib();

    // The attack.
    let mut tasks = Vec::new();
    match name {
        "ping-flood" => {
            for _ in 0..attackers {
                tasks.push(tokio::spawn(ping_flood(
                    addr.clone(),
                    stop.clone(),
                    units.clone(),
                )));
            }
        }
        "slowloris" => {
            for _ in 0..attackers {
                tasks.push(tokio::spawn(slowloris(
                    addr.clone(),
                    stop.clone(),
                    units.clone(),
                )));
            }
        }
        "stalled-uploads" => {
            for _ in 0..attackers {
                tasks.push(tokio::spawn(stalled_upload(
                    addr.clone(),
                    stop.clone(),
                    units.clone(),
                )));
            }
        }
        "oversized-calls" => {
            for i in 0..4 {
                let http = gw.http.clone();
                let auth = (gw.app_id, gw.app_key.clone(), gw.app_secret.clone());
                let who = format!("{run}-big{i}");
                tasks.push(tokio::spawn(oversized_calls(
                    http,
                    auth,
                    who,
                    stop.clone(),
                    units.clone(),
                )));
            }
        }
        "non-reader" => {
            let sink = gw.connect(&format!("{run}-sink"), "phone").await?;
            let mut flooder = gw.connect(&format!("{run}-flooder"), "phone").await?;
            let (stop, units) = (stop.clone(), units.clone());
            let to = format!("{run}-sink");
            tasks.push(tokio::spawn(async move {
                let _sink = sink; // never read
                let payload = Bytes::from(vec![b'x'; 14 * 1024]);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let send = Kind::Send(pb::Send {
                        packet_id: format!("n{i}"),
                        to_account: to.clone(),
                        payload: payload.clone(),
                        ..Default::default()
                    });
                    if flooder.send_frame(send).await.is_err() {
                        break;
                    }
                    // Wait for the ack, so the flooder itself stays within its limits.
                    loop {
                        match tokio::time::timeout(Duration::from_secs(5), flooder.next_event())
                            .await
                        {
                            Ok(Ok(Some(Event::ServerAck(_)))) => break,
                            Ok(Ok(Some(_))) => {}
                            _ => return,
                        }
                    }
                    i += 1;
                    units.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        _ => {}
    }

    // The bystander and the RSS sampler.
    let mut alice = gw.connect(&format!("{run}-{name}-alice"), "phone").await?;
    let bob_name = format!("{run}-{name}-bob");
    let bob = gw.connect(&bob_name, "phone").await?;
    let bob_reader = tokio::spawn(async move {
        let mut bob = bob;
        while let Ok(Some(_)) = bob.next_event().await {}
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut rss_peak = rss_start;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let send = Kind::Send(pb::Send {
            packet_id: format!("b{n}"),
            to_account: bob_name.clone(),
            payload: Bytes::from_static(b"hello, still here?"),
            ..Default::default()
        });
        n += 1;
        let ok = alice.send_frame(send).await.is_ok()
            && loop {
                match tokio::time::timeout(Duration::from_secs(10), alice.next_event()).await {
                    Ok(Ok(Some(Event::ServerAck(a)))) => break a.code == 200,
                    Ok(Ok(Some(_))) => {}
                    _ => break false,
                }
            };
        if ok {
            acked += 1;
            hist.record(started.elapsed().as_micros().max(1) as u64)?;
        } else {
            failed += 1;
            alice = gw.connect(&format!("{run}-{name}-alice"), "phone").await?;
        }
        if let Some(rss) = gw.rss_kib() {
            rss_peak = Some(rss_peak.map_or(rss, |p: u64| p.max(rss)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    bob_reader.abort();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(PhaseReport {
        name,
        attack_units: units.load(Ordering::Relaxed),
        rss_start,
        rss_peak,
        rss_end: gw.rss_kib(),
        acked,
        failed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
    })
}

const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: courier.v1\r\n\r\n";

/// Writes `chunk` until told to stop or the server stops reading (a write blocked
/// for a second) or closes; counts chunks written.
async fn write_until(tcp: &mut TcpStream, chunk: &[u8], stop: &AtomicBool, units: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(1), tcp.write_all(chunk)).await {
            Ok(Ok(())) => {
                units.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A WebSocket that sends pings (1,000 per write) and never reads.
async fn ping_flood(addr: String, stop: Arc<AtomicBool>, units: Arc<AtomicU64>) {
    let mut ping = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][i as usize % 4]));
    let chunk = ping.repeat(1000);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = TcpStream::connect(&addr).await else {
            return;
        };
        if tcp.write_all(WS_HANDSHAKE).await.is_err() {
            return;
        }
        write_until(&mut tcp, &chunk, &stop, &units).await;
    }
}

/// Half a request's headers, then silence; reconnects when closed.
async fn slowloris(addr: String, stop: Arc<AtomicBool>, units: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if tcp
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            continue;
        }
        units.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 1024];
        // Held until the server closes it or the phase ends.
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    }
}

/// A 2 MB push body announced, 1 MB of it sent, then stalled.
async fn stalled_upload(addr: String, stop: Arc<AtomicBool>, units: Arc<AtomicU64>) {
    let head = b"POST /api/push/p2p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n";
    let chunk = vec![b' '; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if tcp.write_all(head).await.is_err() {
            continue;
        }
        units.fetch_add(1, Ordering::Relaxed);
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), tcp.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    }
}

/// Topic creates naming 20,000 accounts (refused), alternating with the largest
/// creates the limits allow (499 new accounts each, as far as the quotas let them).
async fn oversized_calls(
    http: String,
    (app_id, key, secret): (u64, String, String),
    who: String,
    stop: Arc<AtomicBool>,
    units: Arc<AtomicU64>,
) {
    let client = reqwest::Client::new();
    let many: Vec<String> = (0..20_000).map(|i| format!("{who}-m{i}")).collect();
    let huge = serde_json::json!({"topicName": "big", "accounts": many.join(",")}).to_string();
    // The largest create the limits allow: 499 members and the owner.
    let largest =
        serde_json::json!({"topicName": "big", "accounts": many[..499].join(",")}).to_string();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = if i.is_multiple_of(2) {
            huge.clone()
        } else {
            largest.clone()
        };
        i += 1;
        let sent = client
            .post(format!("{http}/api/topic/{app_id}"))
            .header("appKey", &key)
            .header("appSecret", &secret)
            .header("appAccount", format!("{who}-{}", i % 1000))
            .body(body)
            .send()
            .await;
        if sent.is_ok() {
            units.fetch_add(1, Ordering::Relaxed);
        }
    }
}
