//! Every loadtest scenario, briefly and with small numbers, over both transports,
//! against a real gateway on 127.0.0.1 — so the load generator cannot rot. The
//! gateway runs in this process; `connections --processes` runs the real
//! `loadtest` binary, whose helpers are copies of itself.

use clap::Parser;
use courier::config::Config;
use courier::server::{self, RunningServer};

struct Gateway {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        // Small, so `backlog` pages the rest with Pull.
        backlog_limit: 20,
        backlog_batch: 10,
        ..Config::default()
    };
    let server = server::start(config).await.unwrap();
    Gateway { server, _dir: dir }
}

impl Gateway {
    fn target_args(&self) -> Vec<String> {
        let app = self.server.created_app.clone().unwrap();
        vec![
            "--server".into(),
            self.server.http_url(),
            "--app-id".into(),
            app.app_id.to_string(),
            "--app-key".into(),
            app.app_key,
            "--app-secret".into(),
            app.app_secret,
            "--quic-url".into(),
            self.server.quic_url().unwrap(),
            "--cert-fingerprint".into(),
            courier::tls::fingerprint_text(&self.server.cert_fingerprint.unwrap()),
        ]
    }

    /// Runs `loadtest <target> --transport t <scenario…>` in process.
    async fn run(&self, transport: &str, scenario: &[&str]) -> serde_json::Value {
        let mut args = vec!["loadtest".to_owned()];
        args.extend(self.target_args());
        args.extend(["--transport".into(), transport.into(), "--json".into()]);
        args.extend(scenario.iter().map(|s| s.to_string()));
        let cli = loadtest::Cli::try_parse_from(args).unwrap();
        let report = loadtest::run(cli).await.unwrap().unwrap();
        assert!(!report.table().is_empty());
        report.json
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_both_transports() {
    let gw = gateway().await;
    for t in ["ws", "quic"] {
        let r = gw
            .run(t, &["p2p", "--pairs", "2", "--secs", "1", "--rate", "200"])
            .await;
        assert!(r["acked"].as_u64().unwrap() > 0, "{t}: {r}");
        assert_eq!(
            r["acked"], r["delivered"],
            "{t}: every acked message arrives"
        );

        let r = gw
            .run(
                t,
                &[
                    "fanout",
                    "--members",
                    "4",
                    "--senders",
                    "1",
                    "--rate",
                    "20",
                    "--secs",
                    "1",
                ],
            )
            .await;
        let sent = r["sent"].as_u64().unwrap();
        assert!(sent > 0, "{t}: {r}");
        assert_eq!(r["acked"].as_u64().unwrap(), sent, "{t}: {r}");
        assert_eq!(r["delivered"].as_u64().unwrap(), sent * 4, "{t}: {r}");

        let r = gw
            .run(t, &["backlog", "--users", "2", "--per-user", "35"])
            .await;
        assert_eq!(
            r["delivered"], 70,
            "{t}: all stored messages, paged past the limit: {r}"
        );

        let r = gw.run(t, &["connections", "--count", "10"]).await;
        assert_eq!(r["count"], 10, "{t}: {r}");
    }
    // MIMC web clients: p2p, idle connections, and the side-by-side comparison.
    let r = gw
        .run(
            "mimc",
            &["p2p", "--pairs", "2", "--secs", "1", "--rate", "200"],
        )
        .await;
    assert!(r["acked"].as_u64().unwrap() > 0, "mimc: {r}");
    assert_eq!(
        r["acked"], r["delivered"],
        "mimc: every acked message arrives"
    );
    let r = gw.run("mimc", &["connections", "--count", "10"]).await;
    assert_eq!(r["count"], 10, "mimc: {r}");
    let r = gw
        .run(
            "ws",
            &["compare", "--rounds", "1", "--pairs", "2", "--secs", "1"],
        )
        .await;
    for t in ["ws", "mimc"] {
        assert!(r[t]["median_acked_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r[t]["acked_not_delivered"], 0.0, "{t}: {r}");
    }
    assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    let r = gw
        .run("ws", &["abuse", "--secs", "1", "--attackers", "4"])
        .await;
    assert_eq!(r["phases"].as_array().unwrap().len(), 6, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_can_come_from_several_processes() {
    let gw = gateway().await;
    for t in ["ws", "quic"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(gw.target_args())
            .args(["--transport", t, "--json"])
            .args(["connections", "--count", "12", "--processes", "3"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The parent reports only once every helper said its share was connected.
        assert_eq!(
            (r["count"].as_u64(), r["processes"].as_u64()),
            (Some(12), Some(3))
        );
    }
}
