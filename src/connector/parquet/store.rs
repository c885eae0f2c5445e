//! Object storage: every input and output path of this connector may be a local path or an
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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, UploadPart,
};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// Options of an object store client (`storage_options` in the configuration): the keys the
/// `object_store` crate knows for the URL's scheme (`endpoint`, `region`, `allow_http`,
/// `virtual_hosted_style_request`, `access_key_id`, ...), plus `max_retries` and
/// `retry_timeout` (seconds) for failed requests.
pub type StorageOptions = BTreeMap<String, String>;

/// Parts of a multipart upload (the last one may be smaller). S3 needs at least 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 4;

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

// ------------------------------------------------------------------------------ client set-up

fn stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static S: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// One client per bucket and options, shared by every location in it.
fn store_for(root: &str, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let cache_key = format!("{root}\n{options:?}");
    if let Some(s) = stores().lock().expect("store cache").get(&cache_key) {
        return Ok(s.clone());
    }
    let store = build_store(root, options)?;
    stores()
        .lock()
        .expect("store cache")
        .insert(cache_key, store.clone());
    Ok(store)
}

/// `max_retries` and `retry_timeout` (seconds) of the options, over object_store's defaults.
fn retry_config(options: &StorageOptions, root: &str) -> Result<(RetryConfig, StorageOptions)> {
    let mut retry = RetryConfig::default();
    let mut rest = StorageOptions::new();
    for (k, v) in options {
        match k.to_ascii_lowercase().as_str() {
            "max_retries" => {
                retry.max_retries = v.trim().parse().map_err(|_| {
                    Error::config(format!(
                        "storage_options.max_retries for {root}: '{v}' is not a whole number"
                    ))
                })?
            }
            "retry_timeout" => {
                let secs: f64 = v.trim().trim_end_matches('s').parse().map_err(|_| {
                    Error::config(format!(
                        "storage_options.retry_timeout for {root}: '{v}' is not a number of seconds"
                    ))
                })?;
                retry.retry_timeout = Duration::from_secs_f64(secs.max(0.0));
            }
            _ => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    Ok((retry, rest))
}

fn unknown_option(root: &str, key: &str, kind: &str) -> Error {
    Error::config(format!(
        "storage_options.{key} is not an option of {kind} stores (for {root}); see docs/object-storage.md for the keys"
    ))
}

fn build_store(root: &str, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let scheme = root.split("://").next().unwrap_or_default();
    let (retry, options) = retry_config(options, root)?;
    let built: std::result::Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env().with_url(root);
            let mut given: Vec<AmazonS3ConfigKey> = Vec::new();
            for (k, v) in &options {
                let key: AmazonS3ConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| unknown_option(root, k, "S3"))?;
                given.push(key);
                b = b.with_config(key, v);
            }
            // An http:// endpoint (a local MinIO or SeaweedFS) means plain HTTP is wanted.
            let endpoint = b
                .get_config_value(&AmazonS3ConfigKey::Endpoint)
                .unwrap_or_default();
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            b = apply_aws_profile(b)?;
            b.with_retry(retry).build().map(|s| Arc::new(s) as _)
        }
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(root);
            for (k, v) in &options {
                let key: GoogleConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| unknown_option(root, k, "Google Cloud Storage"))?;
                b = b.with_config(key, v);
            }
            b.with_retry(retry).build().map(|s| Arc::new(s) as _)
        }
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::from_env().with_url(root);
            for (k, v) in &options {
                let key: AzureConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| unknown_option(root, k, "Azure"))?;
                b = b.with_config(key, v);
            }
            b.with_retry(retry).build().map(|s| Arc::new(s) as _)
        }
        other => {
            return Err(Error::config(format!(
                "'{root}': unsupported scheme '{other}://'; use a local path, file://, s3://, gs:// or az://"
            )))
        }
    };
    built.map_err(|e| {
        Error::store(
            root,
            format!("cannot set up the store client: {e}; check storage_options and the credentials in the environment"),
        )
    })
}

/// Credentials and region from the shared AWS files (`AWS_SHARED_CREDENTIALS_FILE`,
/// `AWS_CONFIG_FILE`, default `~/.aws/credentials` and `~/.aws/config`), profile `AWS_PROFILE`
/// or `default`, for what the environment and the options left unset. Static keys only (an SSO
/// or assume-role profile needs its keys exported, e.g. `aws configure export-credentials`).
fn apply_aws_profile(
    mut b: object_store::aws::AmazonS3Builder,
) -> Result<object_store::aws::AmazonS3Builder> {
    use object_store::aws::AmazonS3ConfigKey as K;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let creds_file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config_file = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let explicit = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let creds = read(&creds_file)
        .map(|t| ini_section(&t, &profile))
        .unwrap_or_default();
    let config = read(&config_file)
        .map(|t| {
            let name = if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            };
            ini_section(&t, &name)
        })
        .unwrap_or_default();
    if explicit.is_some() && creds.is_empty() && config.is_empty() {
        return Err(Error::config(format!(
            "AWS_PROFILE={profile}: no such profile in {} or {}",
            creds_file
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config_file
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )));
    }
    let unset = |b: &object_store::aws::AmazonS3Builder, k: &K| {
        b.get_config_value(k).is_none_or(|v| v.is_empty())
    };
    if unset(&b, &K::AccessKeyId) && unset(&b, &K::SecretAccessKey) {
        let pick = |k: &str| creds.get(k).or_else(|| config.get(k)).cloned();
        if let (Some(id), Some(secret)) = (pick("aws_access_key_id"), pick("aws_secret_access_key"))
        {
            b = b
                .with_config(K::AccessKeyId, id)
                .with_config(K::SecretAccessKey, secret);
            if let Some(t) = pick("aws_session_token") {
                b = b.with_config(K::Token, t);
            }
        }
    }
    if unset(&b, &K::Region) {
        if let Some(r) = config.get("region").or_else(|| creds.get("region")) {
            b = b.with_config(K::Region, r);
        }
    }
    if unset(&b, &K::Endpoint) {
        if let Some(e) = config.get("endpoint_url") {
            b = b.with_config(K::Endpoint, e);
        }
    }
    Ok(b)
}

/// The `key = value` pairs of one `[section]` of an INI file.
fn ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
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

// ------------------------------------------------------------------------------------ writing

/// Writes one object by multipart upload: parts of [`PART_SIZE`] go up in the background while
/// the writer fills the next; [`ObjectWriter::finish`] completes the upload (an object smaller
/// than one part is sent with a single PUT). Until then the object does not exist; on failure
/// or [`ObjectWriter::abort`] the upload is aborted and nothing is left.
pub struct ObjectWriter {
    object: Object,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Vec<tokio::task::JoinHandle<object_store::Result<()>>>,
    written: u64,
    failed: Option<String>,
}

impl ObjectWriter {
    pub fn new(object: Object) -> Self {
        ObjectWriter {
            object,
            buf: Vec::new(),
            upload: None,
            in_flight: Vec::new(),
            written: 0,
            failed: None,
        }
    }

    pub fn url(&self) -> String {
        self.object.url()
    }

    /// Bytes accepted so far.
    pub fn bytes(&self) -> u64 {
        self.written
    }

    fn fail(&mut self, what: &str, e: &object_store::Error) -> std::io::Error {
        let err = store_error(&self.object.url(), what, e);
        self.failed = Some(err.to_string());
        std::io::Error::other(err.to_string())
    }

    fn send_part(&mut self) -> std::io::Result<()> {
        if let Some(f) = &self.failed {
            return Err(std::io::Error::other(f.clone()));
        }
        if self.upload.is_none() {
            let store = self.object.store.clone();
            let key = self.object.key.clone();
            match block_on(async move { store.put_multipart(&key).await }) {
                Ok(u) => self.upload = Some(u),
                Err(e) => return Err(self.fail("cannot start the upload", &e)),
            }
        }
        let data = std::mem::take(&mut self.buf);
        let part: UploadPart = self
            .upload
            .as_mut()
            .expect("started above")
            .put_part(PutPayload::from(data));
        self.in_flight.push(runtime().spawn(part));
        if self.in_flight.len() >= PARTS_IN_FLIGHT {
            let oldest = self.in_flight.remove(0);
            self.wait(oldest)?;
        }
        Ok(())
    }

    fn wait(
        &mut self,
        h: tokio::task::JoinHandle<object_store::Result<()>>,
    ) -> std::io::Result<()> {
        match block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail("upload of a part failed", &e)),
            Err(e) => Err(std::io::Error::other(format!(
                "{}: upload task failed: {e}",
                self.object.url()
            ))),
        }
    }

    /// Send what is left and complete the object. On failure the upload is aborted.
    pub fn finish(mut self) -> Result<()> {
        let url = self.object.url();
        let r = (|| -> std::io::Result<()> {
            if self.upload.is_none() {
                let store = self.object.store.clone();
                let key = self.object.key.clone();
                let data = PutPayload::from(std::mem::take(&mut self.buf));
                return block_on(async move { store.put(&key, data).await })
                    .map(|_| ())
                    .map_err(|e| self.fail("cannot write", &e));
            }
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            for h in std::mem::take(&mut self.in_flight) {
                self.wait(h)?;
            }
            let upload = self.upload.as_mut().expect("started");
            block_on(upload.complete()).map_err(|e| self.fail("cannot complete the upload", &e))?;
            // Complete: nothing to abort any more.
            self.upload = None;
            Ok(())
        })();
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort();
                Err(Error::store(url, e.to_string()))
            }
        }
    }

    /// Abort the upload: no object appears, the parts sent are dropped.
    pub fn abort(&mut self) {
        for h in std::mem::take(&mut self.in_flight) {
            h.abort();
            let _ = block_on(h);
        }
        if let Some(mut u) = self.upload.take() {
            if let Err(e) = block_on(u.abort()) {
                tracing::warn!(object = %self.object.url(), error = %e, "could not abort the multipart upload; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes its parts");
            }
        }
        self.buf = Vec::new();
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(std::io::Error::other(f.clone()));
        }
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= PART_SIZE {
            self.send_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.upload.is_some() {
            self.abort();
        }
    }
}

/// Rename an object (copy, then delete the source).
pub fn rename_object(from: &Object, to: &Object) -> Result<()> {
    block_on(from.store.rename(&from.key, &to.key))
        .map_err(|e| store_error(&to.url(), "cannot move into place", &e))
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

    #[test]
    fn ini_sections() {
        let t = "[default]\naws_access_key_id = A\n# c\n[profile dev]\nregion=eu-west-1\naws_secret_access_key= S \n";
        assert_eq!(ini_section(t, "default")["aws_access_key_id"], "A");
        let dev = ini_section(t, "profile dev");
        assert_eq!(dev["region"], "eu-west-1");
        assert_eq!(dev["aws_secret_access_key"], "S");
        assert!(ini_section(t, "other").is_empty());
    }
}
