//! Object storage: every input and output path of a file connector (Parquet and Arrow IPC
//! inputs and outputs, error files) may be a local path or an
//! `s3://`, `gs://`, `az://` (or `file://`) URL, served by the Apache Arrow `object_store` crate.
//!
//! - [`Location`]: a local path or an object in a store, parsed from a path or URL with the
//!   connector's `storage_options`;
//! - listing a prefix, a directory-like prefix or a glob on a store ([`list_inputs`]);
//! - [`ObjectWriter`]: a `std::io::Write` that uploads by multipart upload (the object appears only
//!   when complete; a failure or [`ObjectWriter::abort`] aborts the upload);
//! - reading goes through parquet's async reader (see `source.rs`), driven on [`runtime`].
//!
//! Credentials come the standard way of each cloud: environment variables (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`), instance metadata / workload identity, and for S3 the shared
//! credentials and config files (`~/.aws/credentials`, `~/.aws/config`, `AWS_PROFILE`).
//! `storage_options` set endpoint, region, path-style access and the like.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

mod clients;
mod writer;

use clients::store_for;
pub use writer::{rename_object, ObjectWriter};

/// Options of an object store client (`storage_options` in the configuration): the keys the
/// `object_store` crate knows for the URL's scheme (`endpoint`, `region`, `allow_http`,
/// `virtual_hosted_style_request`, `access_key_id`, ...), plus `max_retries` and
/// `retry_timeout` (seconds) for failed requests.
pub type StorageOptions = BTreeMap<String, String>;

/// Parts of a multipart upload (the last one may be smaller). S3 needs at least 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at the same time.
pub(super) const PARTS_IN_FLIGHT: usize = 4;

/// The runtime that drives object store requests. Sources and sinks run on their own threads
/// and block on it; part uploads run on it in the background.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bertflow-store")
            .enable_all()
            .build()
            .expect("tokio runtime for object storage")
    })
}

/// Run `f` to completion on the store runtime (from a thread outside any runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// An object in a store.
#[derive(Clone)]
pub struct Object {
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`, for messages and reports.
    pub root: Arc<str>,
    pub key: ObjectPath,
}

impl Object {
    pub fn url(&self) -> String {
        format!("{}/{}", self.root, self.key)
    }
}

/// A local file or an object in a store.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Object(Object),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object(o) => f.write_str(&o.url()),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

/// The scheme of a URL-looking path (`s3://...`), if any.
pub fn scheme(spec: &str) -> Option<&str> {
    let (scheme, rest) = spec.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.');
    (ok && !rest.is_empty()).then_some(scheme)
}

/// Whether a path names an object in a store (not a local file).
pub fn is_remote(spec: &str) -> bool {
    scheme(spec).is_some_and(|s| !s.eq_ignore_ascii_case("file"))
}

impl Location {
    /// A local path, a `file://` URL, or an `s3://` / `s3a://`, `gs://`, `az://` / `abfs[s]://` /
    /// `azure://` URL.
    pub fn parse(spec: &str, options: &StorageOptions) -> Result<Location> {
        let Some(scheme) = scheme(spec) else {
            return Ok(Location::Local(PathBuf::from(spec)));
        };
        let url = url::Url::parse(spec).map_err(|e| {
            Error::config(format!(
                "'{spec}' is not a valid URL ({e}); write s3://bucket/key, gs://bucket/key or az://container/key"
            ))
        })?;
        if scheme.eq_ignore_ascii_case("file") {
            let path = url.to_file_path().map_err(|_| {
                Error::config(format!("'{spec}': a file:// URL needs an absolute path"))
            })?;
            return Ok(Location::Local(path));
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(Error::config(format!(
                "'{spec}' names no bucket; write {scheme}://BUCKET/key"
            )));
        }
        let root = format!("{}://{bucket}", scheme.to_ascii_lowercase());
        let store = store_for(&root, options)?;
        let raw = url.path().trim_start_matches('/');
        let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let key = ObjectPath::parse(decoded.trim_end_matches('/'))
            .map_err(|e| Error::config(format!("'{spec}': not a valid object key ({e})")))?;
        Ok(Location::Object(Object {
            store,
            root: Arc::from(root.as_str()),
            key,
        }))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Object(_))
    }

    /// The location of `name` inside this one (a directory or prefix).
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::Object(o) => Location::Object(Object {
                store: o.store.clone(),
                root: o.root.clone(),
                key: join_key(&o.key, name),
            }),
        }
    }

    /// The last part of the path or key.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Location::Object(o) => o.key.filename().unwrap_or_default().to_string(),
        }
    }

    /// The same directory or prefix, another last part.
    pub fn with_file_name(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.with_file_name(name)),
            Location::Object(o) => {
                let parent: Vec<_> = o.key.parts().collect();
                let parent = &parent[..parent.len().saturating_sub(1)];
                let mut key: ObjectPath = parent.iter().cloned().collect();
                key = join_key(&key, name);
                Location::Object(Object {
                    store: o.store.clone(),
                    root: o.root.clone(),
                    key,
                })
            }
        }
    }

    /// For reports: the path, or the URL.
    pub fn to_path_buf(&self) -> PathBuf {
        match self {
            Location::Local(p) => p.clone(),
            Location::Object(o) => PathBuf::from(o.url()),
        }
    }

    /// Whether a file or object exists here.
    pub fn exists(&self) -> Result<bool> {
        match self {
            Location::Local(p) => Ok(p.exists()),
            Location::Object(o) => match block_on(o.store.head(&o.key)) {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(store_error(&o.url(), "cannot look up", &e)),
            },
        }
    }

    /// Remove a file or object (missing is fine).
    pub fn remove(&self) -> Result<()> {
        match self {
            Location::Local(p) => match std::fs::remove_file(p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::sink(
                    p.display().to_string(),
                    format!("cannot remove: {e}"),
                )),
            },
            Location::Object(o) => match block_on(o.store.delete(&o.key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_error(&o.url(), "cannot delete", &e)),
            },
        }
    }

    /// The names (last parts) of the files or objects directly inside this directory or prefix.
    pub fn list_names(&self) -> Result<Vec<String>> {
        match self {
            Location::Local(p) => {
                let Ok(entries) = std::fs::read_dir(p) else {
                    return Ok(Vec::new());
                };
                Ok(entries
                    .flatten()
                    .filter(|e| e.path().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect())
            }
            Location::Object(o) => {
                let prefix = (!o.key.as_ref().is_empty()).then_some(&o.key);
                let listed = block_on(o.store.list_with_delimiter(prefix))
                    .map_err(|e| store_error(&o.url(), "cannot list", &e))?;
                Ok(listed
                    .objects
                    .iter()
                    .filter_map(|m| m.location.filename().map(str::to_string))
                    .collect())
            }
        }
    }

    /// Check before any work that the store answers and the bucket exists, with these
    /// credentials (lists the prefix this location is in).
    pub fn check_reachable(&self) -> Result<()> {
        let Location::Object(o) = self else {
            return Ok(());
        };
        let parts: Vec<_> = o.key.parts().collect();
        let parent: ObjectPath = parts[..parts.len().saturating_sub(1)]
            .iter()
            .cloned()
            .collect();
        let prefix = (!parent.as_ref().is_empty()).then_some(&parent);
        block_on(o.store.list_with_delimiter(prefix))
            .map(|_| ())
            .map_err(|e| store_error(&o.url(), "cannot reach", &e))
    }
}

fn join_key(base: &ObjectPath, name: &str) -> ObjectPath {
    let mut parts: Vec<object_store::path::PathPart<'static>> = base
        .parts()
        .map(|p| p.as_ref().to_string().into())
        .collect();
    for seg in name.split('/').filter(|s| !s.is_empty()) {
        parts.push(object_store::path::PathPart::from(seg.to_string()));
    }
    parts.into_iter().collect()
}

/// Explain a store failure: what was tried on which URL, the store's answer, and what to check.
pub fn store_error(url: &str, what: &str, e: &object_store::Error) -> Error {
    let text = e.to_string();
    let hint = if text.contains("NoSuchBucket")
        || text.contains("bucket does not exist")
        || text.contains("ContainerNotFound")
    {
        "the bucket does not exist: create it or fix the URL"
    } else if text.contains("SignatureDoesNotMatch")
        || text.contains("InvalidAccessKeyId")
        || text.contains("AccessDenied")
        || text.contains("403")
        || text.contains("401")
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    {
        "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) and the permissions on this bucket"
    } else if text.contains("error sending request")
        || text.contains("connect")
        || text.contains("timed out")
    {
        "the store did not answer: check storage_options.endpoint (or AWS_ENDPOINT_URL) and the network"
    } else {
        "check the URL, the credentials and storage_options"
    };
    Error::store(url, format!("{what}: {text}; {hint}"))
}

// ------------------------------------------------------------------------------------ listing

/// One input: where it is and, for objects, its size.
pub struct Listed {
    pub location: Location,
    pub size: Option<u64>,
}

/// Expand an object URL that names an object, a prefix ("directory": every `*.parquet` object
/// directly under it) or a glob (`s3://b/data/2026-*/*.parquet`) into objects in key order.
pub fn list_objects(spec: &str, options: &StorageOptions) -> Result<Vec<Listed>> {
    let Location::Object(base) = Location::parse(spec, options)? else {
        unreachable!("list_objects is called for store URLs");
    };
    let key = base.key.as_ref().to_string();
    let url = base.url();
    let listed = |meta: object_store::ObjectMeta| Listed {
        size: Some(meta.size),
        location: Location::Object(Object {
            store: base.store.clone(),
            root: base.root.clone(),
            key: meta.location,
        }),
    };
    let mut out: Vec<Listed> = Vec::new();
    if let Some(first) = key.find(['*', '?', '[']) {
        let pattern = glob::Pattern::new(&key)
            .map_err(|e| Error::source(&url, format!("invalid glob pattern: {e}")))?;
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let prefix = key[..first].rfind('/').map(|i| ObjectPath::from(&key[..i]));
        let mut stream = base.store.list(prefix.as_ref());
        let found: Vec<object_store::ObjectMeta> = block_on(async {
            let mut v = Vec::new();
            while let Some(m) = stream.next().await {
                v.push(m?);
            }
            Ok::<_, object_store::Error>(v)
        })
        .map_err(|e| store_error(&url, "cannot list", &e))?;
        for m in found {
            if pattern.matches_with(m.location.as_ref(), opts) {
                out.push(listed(m));
            }
        }
        if out.is_empty() {
            return Err(Error::source(&url, "glob matches no objects"));
        }
    } else {
        match block_on(base.store.head(&base.key)) {
            Ok(meta) if !key.is_empty() => out.push(listed(meta)),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                let prefix = (!key.is_empty()).then_some(&base.key);
                let l = block_on(base.store.list_with_delimiter(prefix))
                    .map_err(|e| store_error(&url, "cannot list", &e))?;
                for m in l.objects {
                    let name = m.location.filename().unwrap_or_default();
                    if name.ends_with(".parquet") && !name.starts_with('.') {
                        out.push(listed(m));
                    }
                }
                if out.is_empty() {
                    return Err(Error::source(
                        &url,
                        "no such object, and no *.parquet objects under this prefix; check source.parquet.path (or --input)",
                    ));
                }
            }
            Err(e) => return Err(store_error(&url, "cannot read", &e)),
        }
    }
    out.sort_by_key(|a| a.location.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme("s3://b/k"), Some("s3"));
        assert_eq!(scheme("file:///tmp/x"), Some("file"));
        assert_eq!(scheme("/tmp/x.parquet"), None);
        assert_eq!(scheme("data/a://b"), None);
        assert!(is_remote("gs://b/x"));
        assert!(!is_remote("file:///x"));
        assert!(!is_remote("out.parquet"));
    }

    #[test]
    fn file_urls_are_local() {
        use std::path::Path;
        let l = Location::parse("file:///tmp/a%20b.parquet", &StorageOptions::new()).unwrap();
        assert!(matches!(l, Location::Local(ref p) if p == Path::new("/tmp/a b.parquet")));
    }

    #[test]
    fn s3_keys_join_and_rename() {
        let opts: StorageOptions = [
            ("endpoint".to_string(), "http://127.0.0.1:1".to_string()),
            ("region".to_string(), "us-east-1".to_string()),
        ]
        .into();
        let l = Location::parse("s3://bucket/out/run%201/x.parquet", &opts).unwrap();
        assert_eq!(l.to_string(), "s3://bucket/out/run 1/x.parquet");
        assert_eq!(l.file_name(), "x.parquet");
        assert_eq!(
            l.with_file_name("x.errors.parquet").to_string(),
            "s3://bucket/out/run 1/x.errors.parquet"
        );
        let d = Location::parse("s3://bucket/out/", &opts).unwrap();
        assert_eq!(
            d.join("part-00000.parquet").to_string(),
            "s3://bucket/out/part-00000.parquet"
        );
        let root = Location::parse("s3://bucket", &opts).unwrap();
        assert_eq!(root.join("a.parquet").to_string(), "s3://bucket/a.parquet");
    }

    #[test]
    fn unknown_options_and_schemes_are_refused() {
        let opts: StorageOptions = [("endpointt".to_string(), "x".to_string())].into();
        let e = Location::parse("s3://bucket/x", &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpointt") && e.contains("S3"), "{e}");
        let e = Location::parse("ftp://host/x", &StorageOptions::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
        let e = Location::parse("s3:///x", &StorageOptions::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bucket"), "{e}");
        let bad: StorageOptions = [("max_retries".to_string(), "many".to_string())].into();
        let e = Location::parse("s3://bucket/x", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_retries"), "{e}");
    }
}
