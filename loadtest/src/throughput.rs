//! Throughput scenarios: `p2p` (sender→receiver pairs) and `fanout` (one topic,
//! every member online), with end-to-end latency from a timestamp in each payload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use courier::client::Event;
use courier::pb::{self, frame::Kind};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::conn::Conn;
use crate::report::{self, Report};
use crate::Gateway;

fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

pub async fn p2p(
    gw: &Gateway,
    pairs: usize,
    secs: u64,
    window: usize,
    rate: u64,
    payload_len: usize,
) -> anyhow::Result<Report> {
    let run = crate::run_id();
    let rss_before = gw.rss_kib();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let deliveries = Deliveries::new();
    let refused = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let bar = report::counter(2 * pairs as u64, "connecting");
    for i in 0..pairs {
        let rx = gw.connect_any(&format!("rx-{run}-{i}"), "load").await?;
        receivers.push(rx);
        senders.push(gw.connect_any(&format!("tx-{run}-{i}"), "load").await?);
        bar.inc(2);
    }
    bar.finish_and_clear();
    let rss_connected = gw.rss_kib();

    let rx_tasks: Vec<_> = receivers
        .into_iter()
        .map(|rx| tokio::spawn(receive(rx, epoch, deliveries.clone())))
        .collect();

    let per_sender_rate = if rate == 0 {
        0.0
    } else {
        rate as f64 / pairs as f64
    };
    let mut tx_tasks = Vec::new();
    for (i, tx) in senders.into_iter().enumerate() {
        let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
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
                        // A refused send (e.g. over the frame rate) gets no ack.
                        Event::Error(e) if !e.packet_id.is_empty() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            reader_permits.add_permits(1);
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
                let payload = stamped_payload(epoch, payload_len);
                n += 1;
                if writer
                    .send_p2p(format!("{i}-{}", n - 1), &to, payload)
                    .await
                    .is_err()
                {
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

    let callbacks_before = gw.callbacks.as_ref().map(|c| c.load(Ordering::Relaxed));
    let cpu_before = gw.cpu_us();
    let (acked_in_window, elapsed) = report::timed(secs, &acked, "acked").await;
    // Server CPU per message acked in the window (callbacks sent meanwhile included).
    let cpu_us_per_msg = match (cpu_before, gw.cpu_us()) {
        (Some(a), Some(b)) if acked_in_window > 0 => {
            Some(((b - a) as f64 / acked_in_window as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let callbacks_in_window = gw
        .callbacks
        .as_ref()
        .map(|c| c.load(Ordering::Relaxed) - callbacks_before.unwrap_or(0));
    stop.store(true, Ordering::Relaxed);
    let rss_peak = gw.rss_kib();
    let mut sent = 0;
    for t in tx_tasks {
        sent += t.await?;
    }
    // Every acked message goes to exactly one receiver.
    deliveries
        .expected
        .store(acked.load(Ordering::Relaxed), Ordering::Relaxed);
    let hist = merge_histograms(rx_tasks).await?;
    let throughput = acked_in_window as f64 / elapsed;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let rate_text = if rate == 0 {
        "max".to_string()
    } else {
        rate.to_string()
    };
    let delivered = deliveries.seen.load(Ordering::Relaxed);
    let acked = acked.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    // Callbacks: how many arrived while the load ran, and how long the rest took.
    let (callbacks_per_sec, drain_ms) = match (&gw.callbacks, callbacks_in_window) {
        (Some(count), Some(in_window)) => {
            let started = Instant::now();
            while count.load(Ordering::Relaxed) < acked && started.elapsed() < CALLBACK_DRAIN {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let drained = count.load(Ordering::Relaxed) >= acked;
            let ms = drained.then(|| started.elapsed().as_millis() as u64);
            (Some((in_window as f64 / elapsed).round()), ms)
        }
        _ => (None, None),
    };
    let mut figures = vec![
        ("acked msgs/s", report::thousands(throughput.round() as u64)),
        (
            "sent / acked / delivered",
            format!("{sent} / {acked} / {delivered}"),
        ),
        ("refused (429)", refused.to_string()),
        ("latency p50", format!("{:.2} ms", ms(0.5))),
        ("latency p99", format!("{:.2} ms", ms(0.99))),
        ("latency p99.9", format!("{:.2} ms", ms(0.999))),
        (
            "latency max",
            format!("{:.2} ms", hist.max() as f64 / 1000.0),
        ),
        ("server RSS before", report::kib(rss_before)),
        ("server RSS connected", report::kib(rss_connected)),
        ("server RSS end", report::kib(rss_peak)),
    ];
    if let Some(cpu) = cpu_us_per_msg {
        figures.push(("server CPU per acked msg", format!("{cpu:.2} µs")));
    }
    if let Some(rate) = callbacks_per_sec {
        figures.push(("callbacks/s during the run", report::thousands(rate as u64)));
        figures.push((
            "callbacks all in after the run",
            drain_ms.map_or("not within 60 s".into(), |ms| format!("{ms} ms")),
        ));
    }
    Ok(Report::figures(
        format!(
            "p2p over {}: {pairs} pairs, window {window}, rate {rate_text}, payload {payload_len} B, {secs} s",
            gw.transport.name()
        ),
        figures,
        serde_json::json!({
            "mode": "p2p", "transport": gw.transport.name(), "pairs": pairs, "window": window,
            "rate": rate, "payload": payload_len, "secs": secs,
            "acked_per_sec": throughput.round(), "sent": sent, "acked": acked,
            "delivered": delivered, "refused": refused,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "max_ms": hist.max() as f64 / 1000.0,
            "rss_kib_before": rss_before, "rss_kib_connected": rss_connected,
            "rss_kib_end": rss_peak,
            "callbacks_per_sec": callbacks_per_sec, "callbacks_drain_ms": drain_ms,
            "server_cpu_us_per_msg": cpu_us_per_msg,
        }),
    ))
}

/// Longest wait for the callbacks of a run to arrive after it.
const CALLBACK_DRAIN: Duration = Duration::from_secs(60);

/// Payload carrying the sender's clock reading, padded to `len`.
fn stamped_payload(epoch: Instant, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    buf.put_u64_le(micros_since(epoch));
    buf.resize(len, b'x');
    buf.freeze()
}

/// Deliveries counted over all receivers, and how many to wait for (known once
/// the senders stopped).
#[derive(Debug)]
struct Deliveries {
    seen: AtomicU64,
    expected: AtomicU64,
}

impl Deliveries {
    fn new() -> Arc<Self> {
        Arc::new(Deliveries {
            seen: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
        })
    }

    fn all_seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed) >= self.expected.load(Ordering::Relaxed)
    }
}

/// How long a receiver waits with nothing arriving before it gives up.
const QUIET: Duration = Duration::from_secs(5);

/// Receives deliveries until every expected one has arrived (over all receivers)
/// or nothing came for [`QUIET`]; returns the latency histogram.
async fn receive(mut rx: Conn, epoch: Instant, deliveries: Arc<Deliveries>) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut since_ack = 0;
    let mut last_seen = Instant::now();
    loop {
        let ev = match tokio::time::timeout(Duration::from_millis(100), rx.next_event()).await {
            Ok(Ok(Some(ev))) => ev,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                eprintln!("receiver failed: {e}");
                break;
            }
            Err(_) if deliveries.all_seen() || last_seen.elapsed() > QUIET => break,
            Err(_) => continue,
        };
        if let Event::Deliver(d) = ev {
            last_seen = Instant::now();
            let sent = u64::from_le_bytes(d.payload[..8].try_into().unwrap_or([0; 8]));
            let _ = hist.record(micros_since(epoch).saturating_sub(sent).max(1));
            deliveries.seen.fetch_add(1, Ordering::Relaxed);
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

pub async fn fanout(
    gw: &Gateway,
    members: usize,
    senders: usize,
    rate: u64,
    secs: u64,
    payload_len: usize,
) -> anyhow::Result<Report> {
    let run = crate::run_id();
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
    let deliveries = Deliveries::new();
    let mut rx_tasks = Vec::with_capacity(members);
    let bar = report::counter(members as u64, "connecting");
    for name in &names {
        let client = gw.connect(name, "load").await?;
        rx_tasks.push(tokio::spawn(receive(
            Conn::Courier(Box::new(client)),
            epoch,
            deliveries.clone(),
        )));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rss_connected = gw.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tx_tasks = Vec::new();
    for i in 0..senders {
        let mut tx = gw.connect(&names[i % members], "sender").await?;
        let stop = stop.clone();
        let per_sender = rate as f64 / senders as f64;
        tx_tasks.push(tokio::spawn(async move {
            let is_ack = |e: &Event| matches!(e, Event::ServerAck(a) if a.code == 200);
            let start = Instant::now();
            let (mut n, mut acked) = (0u64, 0u64);
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
                // Count acks without waiting.
                while let Some(Ok(Some(e))) = futures_now(tx.next_event()) {
                    acked += u64::from(is_ack(&e));
                }
            }
            // The last acks, then a clean close (so nothing written is lost).
            let last = async {
                while acked < n {
                    match tx.next_event().await {
                        Ok(Some(e)) => acked += u64::from(is_ack(&e)),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), last).await;
            let _ = tx.writer.close().await;
            (n, acked)
        }));
    }
    let (in_window, elapsed) = report::timed(secs, &deliveries.seen, "deliveries").await;
    stop.store(true, Ordering::Relaxed);
    let rss_end = gw.rss_kib();
    let (mut sent, mut acked) = (0, 0);
    for t in tx_tasks {
        let (n, a) = t.await?;
        sent += n;
        acked += a;
    }
    // Every acked topic message goes to every member.
    deliveries
        .expected
        .store(acked * members as u64, Ordering::Relaxed);
    let hist = merge_histograms(rx_tasks).await?;
    let per_sec = in_window as f64 / elapsed;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let delivered = deliveries.seen.load(Ordering::Relaxed);
    Ok(Report::figures(
        format!(
            "fanout over {}: {members} members, {senders} senders, {rate} msgs/s, payload {payload_len} B, {secs} s",
            gw.transport.name()
        ),
        vec![
            ("deliveries/s", report::thousands(per_sec.round() as u64)),
            ("sent / acked", format!("{sent} / {acked}")),
            ("delivered / expected", format!("{delivered} / {}", acked * members as u64)),
            ("latency p50", format!("{:.2} ms", ms(0.5))),
            ("latency p99", format!("{:.2} ms", ms(0.99))),
            ("latency p99.9", format!("{:.2} ms", ms(0.999))),
            ("latency max", format!("{:.2} ms", hist.max() as f64 / 1000.0)),
            ("server RSS connected", report::kib(rss_connected)),
            ("server RSS end", report::kib(rss_end)),
        ],
        serde_json::json!({
            "mode": "fanout", "transport": gw.transport.name(), "members": members,
            "senders": senders, "rate": rate, "secs": secs,
            "deliveries_per_sec": per_sec.round(), "sent": sent, "acked": acked,
            "delivered": delivered,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "rss_kib_connected": rss_connected, "rss_kib_end": rss_end,
        }),
    ))
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

/// p2p rounds alternating the gateway's transport and `other` (both on the HTTP
/// listener: `ws` and `mimc`), so a drifting machine affects both alike; reports
/// each round, the medians and their ratio.
pub async fn compare(
    gw: &mut Gateway,
    other: crate::Transport,
    rounds: usize,
    pairs: usize,
    secs: u64,
    window: usize,
    payload_len: usize,
) -> anyhow::Result<Report> {
    let base = gw.transport;
    let mut runs: Vec<(crate::Transport, Vec<serde_json::Value>)> =
        vec![(base, Vec::new()), (other, Vec::new())];
    for _ in 0..rounds {
        for (transport, results) in runs.iter_mut() {
            gw.set_transport(*transport)?;
            let report = p2p(gw, pairs, secs, window, 0, payload_len).await?;
            results.push(report.json);
        }
    }
    gw.set_transport(base)?;
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let field = |results: &[serde_json::Value], key: &str| -> Vec<f64> {
        results.iter().filter_map(|r| r[key].as_f64()).collect()
    };
    let mut rows = Vec::new();
    let mut json = serde_json::Map::new();
    let mut medians = Vec::new();
    for (transport, results) in &runs {
        let mut rates = field(results, "acked_per_sec");
        let each = rates
            .iter()
            .map(|r| report::thousands(r.round() as u64))
            .collect::<Vec<_>>()
            .join(" / ");
        let rate = median(&mut rates);
        let p99 = median(&mut field(results, "p99_ms"));
        let cpu = median(&mut field(results, "server_cpu_us_per_msg"));
        let lost: f64 = results
            .iter()
            .map(|r| r["acked"].as_f64().unwrap_or(0.0) - r["delivered"].as_f64().unwrap_or(0.0))
            .sum();
        medians.push(rate);
        rows.push(vec![
            transport.name().to_owned(),
            each,
            report::thousands(rate.round() as u64),
            format!("{p99:.1} ms"),
            format!("{cpu:.2} µs"),
            format!("{lost}"),
        ]);
        json.insert(
            transport.name().to_owned(),
            serde_json::json!({
                "acked_per_sec": rates, "median_acked_per_sec": rate,
                "median_p99_ms": p99, "median_server_cpu_us_per_msg": cpu,
                "acked_not_delivered": lost, "runs": results,
            }),
        );
    }
    let ratio = medians[1] / medians[0].max(1.0);
    json.insert("ratio".into(), serde_json::json!(ratio));
    Ok(Report {
        title: format!(
            "p2p {} vs {}: {pairs} pairs, window {window}, payload {payload_len} B, {rounds} × {secs} s each, alternating; {} / {} = {ratio:.2}",
            base.name(),
            other.name(),
            other.name(),
            base.name()
        ),
        columns: [
            "transport",
            "acked msgs/s per round",
            "median",
            "p99 (median)",
            "server CPU/msg",
            "acked, not delivered",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows,
        json: serde_json::Value::Object(json),
    })
}
