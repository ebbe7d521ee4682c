//! The servers black-box tests need besides the gateway, started by the project's
//! scripts on 127.0.0.1 in temp dirs (`scripts/postgres`, `scripts/nats`), or the
//! ones `scripts/test` started for the whole run (`COURIER_TEST_POSTGRES_URL`,
//! `COURIER_TEST_NATS_URL`). Each is stopped when its fixture is dropped.

use std::path::PathBuf;
use std::process::Command;

fn script_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `scripts/<name> <what> <dir>`; returns its output line.
fn run_script(name: &str, what: &str, dir: &std::path::Path) -> String {
    let out = Command::new(script_path(name))
        .arg(what)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/{name} {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A private PostgreSQL, stopped when dropped.
pub struct Postgres {
    pub url: String,
    dir: Option<tempfile::TempDir>,
}

impl Postgres {
    /// The suite's server (`COURIER_TEST_POSTGRES_URL`), or a private one.
    pub fn start() -> Postgres {
        match std::env::var("COURIER_TEST_POSTGRES_URL") {
            Ok(url) => Postgres { url, dir: None },
            Err(_) => Postgres::private(),
        }
    }

    /// A private server this test may stop and start (never the shared URL).
    pub fn private() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("courier-pg-")
            .tempdir()
            .unwrap();
        let mut pg = Postgres {
            url: String::new(),
            dir: Some(dir),
        };
        pg.url = pg.run("start");
        pg
    }

    /// `scripts/postgres <what>` on this private server.
    pub fn run(&self, what: &str) -> String {
        let dir = self.dir.as_ref().expect("a private server");
        run_script("postgres", what, dir.path())
    }

    /// A URL whose tables live in a fresh schema `name`.
    pub async fn fresh(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .unwrap();
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{name}", self.url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script_path("postgres"))
                .arg("stop")
                .arg(dir.path())
                .output();
        }
    }
}

/// A NATS server, stopped when dropped.
pub struct Nats {
    pub url: String,
    dir: Option<tempfile::TempDir>,
}

impl Nats {
    /// The suite's server (`COURIER_TEST_NATS_URL`), or a private one.
    pub fn start() -> Nats {
        match std::env::var("COURIER_TEST_NATS_URL") {
            Ok(url) => Nats { url, dir: None },
            Err(_) => Nats::private(),
        }
    }

    /// A private server this test may stop and start again (on the same port).
    pub fn private() -> Nats {
        let dir = tempfile::Builder::new()
            .prefix("courier-nats-")
            .tempdir()
            .unwrap();
        let url = run_script("nats", "start", dir.path());
        Nats {
            url,
            dir: Some(dir),
        }
    }

    pub fn stop(&self) {
        run_script(
            "nats",
            "stop",
            self.dir.as_ref().expect("a private server").path(),
        );
    }

    /// Starts it again after [`Nats::stop`], on the same port.
    pub fn restart(&self) {
        let url = run_script(
            "nats",
            "start",
            self.dir.as_ref().expect("a private server").path(),
        );
        assert_eq!(url, self.url, "NATS came back on another port");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script_path("nats"))
                .arg("stop")
                .arg(dir.path())
                .output();
        }
    }
}
