//! What a run shows: progress bars on stderr while it runs (hidden when stderr is
//! not a terminal), then one result as an aligned table or as JSON (`--json`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// e.g. "p2p over ws".
    pub title: String,
    /// Column names; a report of single figures uses `metric`, `value`.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The same figures, machine-readable.
    pub json: serde_json::Value,
}

impl Report {
    /// A two-column report of named figures.
    pub fn figures(title: String, figures: Vec<(&str, String)>, json: serde_json::Value) -> Report {
        Report {
            title,
            columns: vec!["metric".into(), "value".into()],
            rows: figures
                .into_iter()
                .map(|(k, v)| vec![k.to_owned(), v])
                .collect(),
            json,
        }
    }

    /// The table, columns padded to their widest cell.
    pub fn table(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.columns));
        out.push_str(&format!(
            "{}\n",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        ));
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// A bar counting `len` steps (connections made, messages seeded…).
pub fn counter(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs `secs` seconds, showing how fast `counter` grows each second; returns its
/// value at the end and the seconds elapsed.
pub async fn timed(secs: u64, counter: &AtomicU64, what: &str) -> (u64, f64) {
    let bar = ProgressBar::new(secs);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("running");
    let started = Instant::now();
    let mut last = 0;
    for s in 1..=secs {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let now = counter.load(Ordering::Relaxed);
        bar.set_message(format!("{} {what}/s", now - last));
        bar.set_position(s);
        last = now;
    }
    bar.finish_and_clear();
    (
        counter.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{} KiB", thousands(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let r = Report::figures(
            "t".into(),
            vec![("a", "1".into()), ("longer", "22".into())],
            serde_json::Value::Null,
        );
        assert_eq!(
            r.table(),
            "t\nmetric  value\n------  -----\na       1\nlonger  22\n"
        );
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
