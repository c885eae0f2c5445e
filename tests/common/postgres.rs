//! Postgres helpers for the vector-store tests: they talk to the real server that
//! `scripts/postgres.sh` starts (`BERTFLOW_TEST_POSTGRES`, default the script's default URL).

use std::process::Command;

use super::root;

pub fn url() -> String {
    std::env::var("BERTFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/bertflow".into())
}

/// A synchronous connection for checks.
pub struct Db {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Db {
    pub fn connect(url: &str) -> Db {
        Db::try_connect(url).unwrap_or_else(|| {
            panic!("no Postgres at {url}: start one with `scripts/postgres.sh start`")
        })
    }

    pub fn try_connect(url: &str) -> Option<Db> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .ok()?;
        rt.spawn(async move {
            let _ = conn.await;
        });
        Some(Db { rt, client })
    }

    pub fn execute(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0].get(0)
    }

    /// The count, or -1 when the query fails (e.g. the table does not exist yet).
    pub fn try_count(&self, sql: &str) -> i64 {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .ok()
            .map(|r| r[0].get(0))
            .unwrap_or(-1)
    }
}

/// A separate server for tests that stop and restart it.
pub struct Server {
    pub name: String,
    pub port: u16,
}

impl Server {
    pub fn start(name: &str, port: u16) -> Server {
        let s = Server {
            name: name.into(),
            port,
        };
        s.run("reset");
        s.run("start");
        s
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/bertflow", self.port)
    }

    pub fn run(&self, cmd: &str) {
        let st = Command::new("bash")
            .arg(root().join("scripts/postgres.sh"))
            .arg(cmd)
            .args(["--name", &self.name, "--port", &self.port.to_string()])
            .status()
            .expect("scripts/postgres.sh");
        assert!(
            st.success(),
            "scripts/postgres.sh {cmd} --name {} failed",
            self.name
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/postgres.sh"))
            .args(["reset", "--name", &self.name])
            .status();
    }
}

/// A table name no other test (or earlier run) uses.
pub fn table(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}
