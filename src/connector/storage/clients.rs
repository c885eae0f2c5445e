//! Object store clients: one per bucket and options, built from `storage_options`, the
//! environment and (S3) the shared AWS credential and config files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::{ObjectStore, RetryConfig};

use super::StorageOptions;
use crate::error::{Error, Result};

fn stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static S: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// One client per bucket and options, shared by every location in it.
pub(super) fn store_for(root: &str, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
