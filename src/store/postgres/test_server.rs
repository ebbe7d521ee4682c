//! A private PostgreSQL for tests: `COURIER_TEST_POSTGRES_URL` if set, else one
//! started by `scripts/postgres` in a temp dir (stopped when dropped).

use std::path::PathBuf;
use std::process::Command;

pub(crate) struct TestPostgres {
    pub(crate) url: String,
    dir: Option<tempfile::TempDir>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres")
}

impl TestPostgres {
    pub(crate) fn start() -> TestPostgres {
        if let Ok(url) = std::env::var("COURIER_TEST_POSTGRES_URL") {
            return TestPostgres { url, dir: None };
        }
        let dir = tempfile::Builder::new()
            .prefix("courier-pg-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run scripts/postgres (needs bash)");
        assert!(
            out.status.success(),
            "scripts/postgres start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        TestPostgres {
            url,
            dir: Some(dir),
        }
    }

    /// The URL of a database whose tables live in schema `name` (created here).
    pub(crate) async fn schema_url(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test postgres");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .expect("create schema");
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{name}", self.url)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script()).arg("stop").arg(dir.path()).output();
        }
    }
}
