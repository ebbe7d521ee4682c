//! Session scenarios: `backlog` (logins with stored messages waiting) and
//! `connections` (idle logged-in sessions and the server memory they cost).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::client::{Client, Event};
use courier::pb::{self, frame::Kind};
use hdrhistogram::Histogram;

use crate::conn::Conn;
use crate::report::{self, Report};
use crate::{Gateway, LoadArgs};

pub async fn backlog(
    gw: &Gateway,
    users: usize,
    per_user: usize,
    payload: usize,
) -> anyhow::Result<Report> {
    let run = crate::run_id();
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
    let seeded_secs = seeding.elapsed().as_secs_f64();
    // Tokens first, so the measured part is login + backlog only.
    let mut tokens = Vec::with_capacity(users);
    for name in &names {
        tokens.push(gw.token(name).await?);
    }
    let start = Instant::now();
    let gw_ref = &gw;
    let logins = tokens.into_iter().map(|token| async move {
        let mut c = gw_ref.login(&token, "phone").await?;
        let got = read_everything(&mut c).await?;
        Ok::<_, anyhow::Error>((got, start.elapsed()))
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut delivered = 0;
    for result in futures_util::future::join_all(logins).await {
        let (got, took) = result?;
        delivered += got;
        let _ = hist.record(took.as_micros() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let rss = gw.rss_kib();
    Ok(Report::figures(
        format!(
            "backlog over {}: {users} users with {per_user} stored messages each log in at once",
            gw.transport.name()
        ),
        vec![
            ("seeded", format!("{acked} messages in {seeded_secs:.1} s")),
            ("delivered / stored", format!("{delivered} / {total}")),
            ("all users done in", format!("{:.1} ms", elapsed * 1000.0)),
            (
                "backlog msgs/s",
                report::thousands((delivered as f64 / elapsed).round() as u64),
            ),
            ("login → all messages p50", format!("{:.1} ms", ms(0.5))),
            ("login → all messages p99", format!("{:.1} ms", ms(0.99))),
            (
                "login → all messages max",
                format!("{:.1} ms", hist.max() as f64 / 1000.0),
            ),
            ("server RSS", report::kib(rss)),
        ],
        serde_json::json!({
            "mode": "backlog", "transport": gw.transport.name(), "users": users,
            "per_user": per_user, "delivered": delivered, "stored": total,
            "elapsed_ms": elapsed * 1000.0, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
            "max_ms": hist.max() as f64 / 1000.0, "rss_kib": rss,
        }),
    ))
}

/// Reads a login's backlog up to SyncDone, then pages with Pull through whatever
/// the PullNotice says was left out; returns how many messages arrived.
async fn read_everything(c: &mut Client) -> anyhow::Result<u64> {
    let mut got = 0u64;
    let mut notice = None;
    loop {
        match c.next_event().await? {
            Some(Event::Deliver(_)) => got += 1,
            Some(Event::PullNotice(n)) => notice = Some(n),
            Some(Event::SyncDone(_)) => break,
            Some(_) => {}
            None => anyhow::bail!("closed during backlog"),
        }
    }
    let Some(notice) = notice else {
        return Ok(got);
    };
    let mut after = notice.after_sequence;
    loop {
        c.writer.pull(after, notice.before_sequence, 0).await?;
        let page = loop {
            match c.next_event().await? {
                Some(Event::PullResult(page)) => break page,
                Some(Event::Error(e)) => anyhow::bail!("pull refused: {e:?}"),
                Some(_) => {}
                None => anyhow::bail!("closed during pull"),
            }
        };
        got += page.messages.len() as u64;
        match page.messages.last() {
            Some(last) if page.has_more => after = last.sequence,
            _ => return Ok(got),
        }
    }
}
/// Connects `count` idle sessions, from this process or from `processes` helper
/// processes, and reports the server memory they cost.
pub async fn connections(
    gw: &Gateway,
    load: &LoadArgs,
    count: usize,
    processes: usize,
) -> anyhow::Result<Report> {
    let before = gw.rss_kib();
    let started = Instant::now();
    let held = if processes == 1 {
        let clients = connect_idle(gw, count, &crate::run_id()).await?;
        Held::Here(clients)
    } else {
        Held::Elsewhere(spawn_holders(gw, load, count, processes)?)
    };
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server finish what the last logins started (cursor writes, etc.).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gw.rss_kib();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 / count as f64),
        _ => None,
    };
    drop(held);
    Ok(Report::figures(
        format!(
            "connections over {}: {count} idle logged-in sessions from {processes} process(es)",
            gw.transport.name()
        ),
        vec![
            ("connected in", format!("{connect_secs:.1} s")),
            ("server RSS before", report::kib(before)),
            ("server RSS after", report::kib(after)),
            (
                "server RSS per session",
                per_conn.map_or_else(|| "n/a".into(), |k| format!("{k:.1} KiB")),
            ),
        ],
        serde_json::json!({
            "mode": "connections", "transport": gw.transport.name(), "count": count,
            "processes": processes, "rss_kib_before": before, "rss_kib_after": after,
            "kib_per_session": per_conn, "connect_secs": connect_secs,
        }),
    ))
}

/// Sessions held open until dropped.
enum Held {
    /// Closed when dropped.
    Here(#[allow(dead_code)] Vec<Conn>),
    Elsewhere(Vec<std::process::Child>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Elsewhere(children) = self {
            for child in children.iter_mut() {
                // Closing stdin tells the holder to exit.
                drop(child.stdin.take());
            }
            for child in children.iter_mut() {
                let _ = child.wait();
            }
        }
    }
}

async fn connect_idle(gw: &Gateway, count: usize, run: &str) -> anyhow::Result<Vec<Conn>> {
    let bar = report::counter(count as u64, "connecting");
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(gw.connect_any(&format!("idle-{run}-{i}"), "load").await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(clients)
}

/// Starts `processes` copies of this binary, each holding its share of `count`
/// sessions from its own source addresses, and waits until all are connected.
fn spawn_holders(
    gw: &Gateway,
    load: &LoadArgs,
    count: usize,
    processes: usize,
) -> anyhow::Result<Vec<std::process::Child>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(processes);
    for p in 0..processes {
        let share = count / processes + usize::from(p < count % processes);
        let child = Command::new(&exe)
            .args(gw.target_flags())
            .args(["--transport", gw.transport.name()])
            .args(["--source-ips", &load.source_ips.to_string()])
            .args(["--source-offset", &(p * load.source_ips).to_string()])
            .args(["connections", "--hold", "--count", &share.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    for child in &mut children {
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("ready") {
            anyhow::bail!("a holder process failed before connecting its share");
        }
    }
    Ok(children)
}

/// Helper process of `connections --processes`: connects, says `ready N`, and
/// holds the sessions until stdin closes.
pub async fn hold(gw: &Gateway, count: usize) -> anyhow::Result<()> {
    let run = crate::run_id();
    let clients = connect_idle(gw, count, &run).await?;
    println!("ready {}", clients.len());
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    drop(clients);
    Ok(())
}
