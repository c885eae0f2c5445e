//! The S3 server of the tests (SeaweedFS, started by scripts/test.sh through scripts/s3.sh) and
//! private servers for tests that stop and restart one.

use std::process::Command;
use std::sync::Arc;

use bertflow::connector::storage::{block_on, Location, StorageOptions};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::root;

pub const ACCESS_KEY: &str = "bertflow";
pub const SECRET_KEY: &str = "bertflow-secret";
pub const BUCKET: &str = "bertflow";

/// Endpoint of the shared server (`BERTFLOW_TEST_S3`, default the scripts/s3.sh default port).
pub fn endpoint() -> String {
    std::env::var("BERTFLOW_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:39000".into())
}

/// The environment a worker needs to reach `endpoint` with the test credentials.
pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// Storage options with the test credentials (for the tests' own client).
pub fn options(endpoint: &str) -> StorageOptions {
    [
        ("endpoint", endpoint),
        ("region", "us-east-1"),
        ("access_key_id", ACCESS_KEY),
        ("secret_access_key", SECRET_KEY),
        ("max_retries", "2"),
        ("retry_timeout", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A prefix no other test (or earlier run) uses: `s3://bertflow/<name>-<pid>-<nanos>`.
pub fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("s3://{BUCKET}/{name}-{}-{nanos}", std::process::id())
}

fn object(url: &str, endpoint: &str) -> (Arc<dyn ObjectStore>, ObjectPath) {
    match Location::parse(url, &options(endpoint)).unwrap() {
        Location::Object(o) => (o.store, o.key),
        Location::Local(_) => panic!("{url} is not an object URL"),
    }
}

pub fn put(url: &str, endpoint: &str, bytes: Vec<u8>) {
    let (s, k) = object(url, endpoint);
    block_on(s.put(&k, PutPayload::from(bytes))).unwrap();
}

pub fn get(url: &str, endpoint: &str) -> Vec<u8> {
    let (s, k) = object(url, endpoint);
    block_on(async { s.get(&k).await?.bytes().await })
        .unwrap_or_else(|e| panic!("get {url}: {e}"))
        .to_vec()
}

/// Every object under a prefix (recursively), as full URLs in key order.
pub fn list(prefix_url: &str, endpoint: &str) -> Vec<String> {
    let (s, k) = object(prefix_url, endpoint);
    let mut v: Vec<String> = block_on(async {
        let mut out = Vec::new();
        let mut st = s.list(Some(&k));
        while let Some(m) = st.next().await {
            out.push(m.unwrap().location.to_string());
        }
        out
    })
    .into_iter()
    .map(|key| format!("s3://{BUCKET}/{key}"))
    .collect();
    v.sort();
    v
}

/// Multipart uploads started and neither completed nor aborted, under a key prefix.
pub fn pending_uploads(endpoint: &str, key_prefix: &str) -> usize {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{ACCESS_KEY}:{SECRET_KEY}"),
            // Query in canonical (sorted) order with `=`, as the signature is computed.
            &format!(
                "{endpoint}/{BUCKET}?prefix={}&uploads=",
                key_prefix.replace('/', "%2F")
            ),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "ListMultipartUploads failed");
    String::from_utf8_lossy(&out.stdout)
        .matches("<Upload>")
        .count()
}

/// A separate server for tests that stop and restart it; removed on drop.
pub struct Server {
    pub name: String,
    pub port: u16,
}

/// A base port whose S3, master, volume, filer and admin ports (and their gRPC ports, +10000)
/// are free.
pub fn free_base_port() -> u16 {
    use std::net::TcpListener;
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = 20000 + base % 20000;
        let free = (0..5).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range for a test S3 server");
}

impl Server {
    pub fn start(name: &str) -> Server {
        let s = Server {
            name: name.into(),
            port: free_base_port(),
        };
        s.run("reset");
        s.run("start");
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn run(&self, cmd: &str) {
        let st = Command::new("bash")
            .arg(root().join("scripts/s3.sh"))
            .arg(cmd)
            .args(["--name", &self.name, "--port", &self.port.to_string()])
            .status()
            .expect("scripts/s3.sh");
        assert!(
            st.success(),
            "scripts/s3.sh {cmd} --name {} failed",
            self.name
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/s3.sh"))
            .args(["reset", "--name", &self.name])
            .status();
    }
}
