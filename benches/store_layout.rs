//! Storage layout study for issue 9 (history needs a per-conversation access path;
//! the throughput target needs less write amplification). Raw SQLite, the store's
//! own settings (2 KiB pages, WAL, `synchronous=FULL`), one transaction + fsync per
//! batch of 1,000 p2p messages on a database already holding 200,000 messages.
//!
//! Layouts compared side by side:
//! - `current`: `messages` (rowid = sequence) with a UNIQUE index on
//!   (from_uuid, packet_id TEXT), and two `timeline (uuid, seq)` rows per message;
//! - `current_conv`: the same plus `conversation (lo, hi, seq)`, the index history by
//!   conversation needs;
//! - `compact_conv`: dedup in its own WITHOUT ROWID table keyed by
//!   (from_uuid, 64-bit hash of packet_id) instead of a text index on `messages`,
//!   plus the two timeline rows and the conversation index;
//! - `log_conv`: one append-ordered log (`messages`) whose only secondary structures
//!   are the conversation index (lo, hi, seq) and the recipient's timeline row (the
//!   sender's devices read the conversation index instead), with the compact dedup;
//! - `log_conv_text`: the same with the text dedup index of `current`;
//! - `conversations` (the layout chosen, `src/store/sqlite/schema.rs` migration 4):
//!   the log with the text dedup index, the conversation index as an expression
//!   index on `messages`, an (app_id) index for retention, and no timeline rows:
//!   each side's conversation row in `contacts` is upserted once per conversation
//!   per batch (a user's backlog reads its conversations with news).
//!
//! `cargo bench --bench store_layout -- --warm-up-time 1 --measurement-time 5`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::{params, Connection};

/// Messages in the database before measuring (`cargo test` runs each bench once as
/// a check: a small prefill keeps that quick).
fn prefill() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        10_000
    }
}
const BATCH: u64 = 1_000;

#[derive(Clone, Copy, Debug)]
enum Layout {
    Current,
    CurrentConv,
    CompactConv,
    LogConv,
    LogConvText,
    Conversations,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Current => "current",
            Layout::CurrentConv => "current_conv",
            Layout::CompactConv => "compact_conv",
            Layout::LogConv => "log_conv",
            Layout::LogConvText => "log_conv_text",
            Layout::Conversations => "conversations",
        }
    }

    fn schema(self) -> &'static str {
        let messages = "CREATE TABLE messages (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
            app_id INTEGER NOT NULL, from_uuid INTEGER NOT NULL, from_account TEXT NOT NULL, \
            from_resource TEXT NOT NULL, packet_id TEXT NOT NULL, to_uuid INTEGER NOT NULL, \
            to_account TEXT NOT NULL, to_resource TEXT NOT NULL, biz_type TEXT NOT NULL, \
            payload BLOB NOT NULL);";
        match self {
            Layout::Current => Box::leak(
                format!(
                    "{messages} CREATE UNIQUE INDEX dedup ON messages (from_uuid, packet_id);
                     CREATE TABLE timeline (uuid INTEGER, seq INTEGER, PRIMARY KEY (uuid, seq)) WITHOUT ROWID;"
                )
                .into_boxed_str(),
            ),
            Layout::CurrentConv | Layout::LogConvText => Box::leak(
                format!(
                    "{messages} CREATE UNIQUE INDEX dedup ON messages (from_uuid, packet_id);
                     CREATE TABLE timeline (uuid INTEGER, seq INTEGER, PRIMARY KEY (uuid, seq)) WITHOUT ROWID;
                     CREATE TABLE conversation (lo INTEGER, hi INTEGER, seq INTEGER, PRIMARY KEY (lo, hi, seq)) WITHOUT ROWID;"
                )
                .into_boxed_str(),
            ),
            Layout::Conversations => Box::leak(
                format!(
                    "{messages} CREATE UNIQUE INDEX dedup ON messages (from_uuid, packet_id);
                     CREATE INDEX conversation ON messages (min(from_uuid, to_uuid), max(from_uuid, to_uuid));
                     CREATE INDEX by_app ON messages (app_id);
                     CREATE TABLE contacts (owner INTEGER, peer INTEGER, last_seq INTEGER, PRIMARY KEY (owner, peer)) WITHOUT ROWID;"
                )
                .into_boxed_str(),
            ),
            Layout::CompactConv | Layout::LogConv => Box::leak(
                format!(
                    "{messages}
                     CREATE TABLE dedup (from_uuid INTEGER, pid INTEGER, seq INTEGER NOT NULL, PRIMARY KEY (from_uuid, pid)) WITHOUT ROWID;
                     CREATE TABLE timeline (uuid INTEGER, seq INTEGER, PRIMARY KEY (uuid, seq)) WITHOUT ROWID;
                     CREATE TABLE conversation (lo INTEGER, hi INTEGER, seq INTEGER, PRIMARY KEY (lo, hi, seq)) WITHOUT ROWID;"
                )
                .into_boxed_str(),
            ),
        }
    }
}

fn open(dir: &std::path::Path, layout: Layout) -> Connection {
    let conn = Connection::open(dir.join("layout.db")).expect("open");
    conn.execute_batch(
        "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -4096;",
    )
    .expect("pragmas");
    conn.execute_batch(layout.schema()).expect("schema");
    conn
}

fn pid_hash(s: &str) -> i64 {
    // FNV-1a, enough for a study (the store would use a keyed hash).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h as i64
}

/// Appends messages `first..first + n` between `users` users in one transaction.
fn append(conn: &mut Connection, layout: Layout, first: u64, n: u64, users: u64) {
    let tx = conn.transaction().expect("tx");
    {
        let mut msg = tx
            .prepare_cached(
                "INSERT INTO messages (seq, ts, app_id, from_uuid, from_account, from_resource, \
                 packet_id, to_uuid, to_account, to_resource, biz_type, payload) \
                 VALUES (?1, ?2, 1, ?3, ?4, 'phone', ?5, ?6, ?7, '', 'TEXT', ?8)",
            )
            .expect("prepare");
        let mut timeline = match layout {
            Layout::Conversations => None,
            _ => Some(
                tx.prepare_cached("INSERT INTO timeline (uuid, seq) VALUES (?1, ?2)")
                    .expect("prepare"),
            ),
        };
        let mut contacts = match layout {
            Layout::Conversations => Some(
                tx.prepare_cached(
                    "INSERT INTO contacts (owner, peer, last_seq) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (owner, peer) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                )
                .expect("prepare"),
            ),
            _ => None,
        };
        let mut touched: std::collections::HashMap<(u64, u64), u64> = Default::default();
        let mut conv = match layout {
            Layout::Current | Layout::Conversations => None,
            _ => Some(
                tx.prepare_cached("INSERT INTO conversation (lo, hi, seq) VALUES (?1, ?2, ?3)")
                    .expect("prepare"),
            ),
        };
        let mut dedup = match layout {
            Layout::CompactConv | Layout::LogConv => Some(
                tx.prepare_cached("INSERT INTO dedup (from_uuid, pid, seq) VALUES (?1, ?2, ?3)")
                    .expect("prepare"),
            ),
            _ => None,
        };
        let payload = vec![b'x'; 100];
        for seq in first..first + n {
            // Pairs of users talk: a spread like the p2p loadtest's, scaled by `users`.
            let from = seq % users;
            let to = (from + 1) % users;
            let packet = format!("{from}-{seq}");
            msg.execute(params![
                seq as i64,
                1_795_658_432_854i64 + seq as i64,
                from as i64,
                format!("user-{from}"),
                packet,
                to as i64,
                format!("user-{to}"),
                payload
            ])
            .expect("message");
            if let Some(dedup) = dedup.as_mut() {
                dedup
                    .execute(params![from as i64, pid_hash(&packet), seq as i64])
                    .expect("dedup");
            }
            let Some(timeline) = timeline.as_mut() else {
                touched.insert((to, from), seq);
                touched.insert((from, to), seq);
                continue;
            };
            timeline
                .execute(params![to as i64, seq as i64])
                .expect("timeline");
            if !matches!(layout, Layout::LogConv | Layout::LogConvText) {
                timeline
                    .execute(params![from as i64, seq as i64])
                    .expect("timeline");
            }
            if let Some(conv) = conv.as_mut() {
                let (lo, hi) = (from.min(to), from.max(to));
                conv.execute(params![lo as i64, hi as i64, seq as i64])
                    .expect("conversation");
            }
        }
        if let Some(contacts) = contacts.as_mut() {
            for ((owner, peer), seq) in touched {
                contacts
                    .execute(params![owner as i64, peer as i64, seq as i64])
                    .expect("contact");
            }
        }
    }
    tx.commit().expect("commit");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_layout");
    g.throughput(Throughput::Elements(BATCH));
    for users in [100u64, 10_000] {
        for layout in [
            Layout::Current,
            Layout::CurrentConv,
            Layout::CompactConv,
            Layout::LogConv,
            Layout::LogConvText,
            Layout::Conversations,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut conn = open(dir.path(), layout);
            let mut next = 1;
            while next <= prefill() {
                append(&mut conn, layout, next, 10_000, users);
                next += 10_000;
            }
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .expect("checkpoint");
            g.bench_function(format!("{}_users_{users}", layout.name()), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        append(&mut conn, layout, next, BATCH, users);
                        spent += start.elapsed();
                        next += BATCH;
                    }
                    // Keep the WAL from growing without bound between samples.
                    conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);")
                        .expect("checkpoint");
                    spent
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
