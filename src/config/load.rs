//! Loading a pipeline: the YAML file, then `BERTFLOW__*` environment overrides (collected by the
//! `config` crate's environment source), then `--set` overrides, each replacing the value at its
//! key path. A mistake is reported with the key as the user writes it (`tasks.ner[0].column`),
//! where it came from (the file, the variable or the `--set` argument) and, for a value out of a
//! fixed set, the values there are.

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Prefix of environment variables that override configuration keys. Nested keys are separated
/// by a double underscore: `BERTFLOW__BATCHING__MAX_BATCH_SIZE=64` sets `batching.max_batch_size`.
pub const ENV_PREFIX: &str = "BERTFLOW__";

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The pipeline file (its name).
    File(String),
    /// An environment variable (its name).
    Env(String),
    /// A `--set key=value` argument.
    Set,
    /// A command-line option that sets a key (`--input`, `--output`, `--shard`).
    Flag(&'static str),
}

/// One override: a key path (`batching.max_batch_size`, `tasks.ner[1].column`), its value as
/// written, and where it came from.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

impl Override {
    pub fn set(key: &str, value: &str) -> Override {
        Override {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Set,
        }
    }

    /// A command-line option setting `key`.
    pub fn flag(flag: &'static str, key: &str, value: &str) -> Override {
        Override {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Flag(flag),
        }
    }

    /// How the user wrote it.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Flag(f) => format!("{f} {}", self.value.trim_matches('"')),
            Origin::Env(var) => format!("environment variable {var}"),
            Origin::Set => format!("--set {}={}", self.key, self.value),
            Origin::File(f) => f.clone(),
        }
    }
}

/// The `BERTFLOW__*` variables of the environment as overrides, through the `config` crate's
/// environment source (keys lowercased, `__` between levels).
pub fn env_overrides() -> Vec<Override> {
    let source = config::Environment::with_prefix("BERTFLOW").separator("__");
    let collected = config::Source::collect(&source).unwrap_or_default();
    let mut out: Vec<Override> = collected
        .into_iter()
        .filter_map(|(key, value)| {
            let var = format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"));
            Some(Override {
                value: value.into_string().ok()?,
                key,
                origin: Origin::Env(var),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `tasks.ner[1].column` -> `tasks`, `ner`, `[1]`, `column`.
fn parse_path(key: &str) -> std::result::Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(format!("'{key}' has an empty key"));
        }
        steps.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .filter(|_| rest.starts_with('['))
                .ok_or_else(|| format!("'{key}': write list positions as name[0]"))?;
            let i: usize = rest[1..close]
                .trim()
                .parse()
                .map_err(|_| format!("'{key}': '{}' is not a list position", &rest[1..close]))?;
            steps.push(Step::Index(i));
            rest = &rest[close + 1..];
        }
    }
    Ok(steps)
}

fn show(steps: &[Step]) -> String {
    let mut s = String::new();
    for st in steps {
        match st {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Replace the value at `steps` in `tree` (missing mappings on the way are made).
fn put(tree: &mut Value, steps: &[Step], value: Value) -> std::result::Result<(), String> {
    let mut at = tree;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Key(k) => {
                if at.is_null() {
                    *at = Value::Mapping(Mapping::new());
                }
                let Value::Mapping(m) = at else {
                    return Err(format!(
                        "`{}` is {}, so it has no key `{k}`",
                        show(&steps[..n]),
                        kind(at)
                    ));
                };
                at = m.entry(Value::String(k.clone())).or_insert(Value::Null);
            }
            Step::Index(i) => {
                // A task given once (a mapping) is its list's only entry.
                if matches!(at, Value::Mapping(_)) && *i == 0 {
                    continue;
                }
                let Value::Sequence(items) = at else {
                    return Err(format!(
                        "`{}` is {}, not a list, so it has no position [{i}]",
                        show(&steps[..n]),
                        kind(at)
                    ));
                };
                let len = items.len();
                at = items.get_mut(*i).ok_or_else(|| {
                    format!(
                        "`{}` has {len} entr{} (positions 0 to {}), so [{i}] is out of range",
                        show(&steps[..n]),
                        if len == 1 { "y" } else { "ies" },
                        len.saturating_sub(1)
                    )
                })?;
            }
        }
    }
    *at = value;
    Ok(())
}

/// An override's value read as YAML, so that `64`, `true`, `[a, b]` and `null` keep their
/// types; an empty value is an empty string.
fn parse_value(o: &Override) -> Result<Value> {
    if o.value.trim().is_empty() {
        return Ok(Value::String(o.value.clone()));
    }
    serde_yaml::from_str(&o.value)
        .map_err(|e| Error::config(format!("{}: not a valid value: {e}", o.describe())))
}

/// The file's tree with every override applied in order (each replaces the value at its key).
pub fn merged(text: &str, file: &str, overrides: &[Override]) -> Result<Value> {
    let mut tree: Value = serde_yaml::from_str(text)
        .map_err(|e| Error::config(format!("{file}: not valid YAML: {e}")))?;
    if tree.is_null() {
        tree = Value::Mapping(Mapping::new());
    }
    for o in overrides {
        let steps =
            parse_path(&o.key).map_err(|e| Error::config(format!("{}: {e}", o.describe())))?;
        let value = parse_value(o)?;
        put(&mut tree, &steps, value)
            .map_err(|e| Error::config(format!("{}: {e}", o.describe())))?;
    }
    Ok(tree)
}

/// Deserialize the merged tree; a mistake names its key path and where it came from.
pub fn deserialize<T: DeserializeOwned>(
    tree: Value,
    file: &str,
    overrides: &[Override],
) -> Result<T> {
    // serde_json's reader takes an externally tagged enum as a one-key mapping
    // (`source: {parquet: {...}}`), as the pipeline file writes it, and says where a mistake is.
    let json = serde_json::to_value(&tree)
        .map_err(|e| Error::config(format!("{file}: {e} (keys must be strings)")))?;
    let strict = serde_path_to_error::deserialize(json);
    let strict = match strict {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // It is strict about scalars; the `config` crate's reader takes `1` for a string and "64"
    // for a number, as YAML users expect: a file only that one rejects is accepted.
    if let Ok(v) = T::deserialize(yaml_to_config(tree)) {
        return Ok(v);
    }
    Err({
        let e = strict;
        let path = user_path(&e.path().to_string());
        let inner = e.into_inner().to_string();
        let message = user_words(&inner);
        // An unknown key is named in the message; the others at the path.
        let key = match unknown_field(&inner) {
            Some(f) if path.is_empty() => f.to_string(),
            Some(f) if !path.ends_with(f) => format!("{path}.{f}"),
            _ => path.clone(),
        };
        let from = blame(&key, file, overrides);
        let at = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        Error::config(format!(
            "{from}: {at}{message} (see docs/configuration.md for every key and its values)"
        ))
    })
}

/// The tree as the `config` crate's value, whose reader converts scalars as needed.
fn yaml_to_config(v: serde_yaml::Value) -> config::Value {
    use config::{Value, ValueKind};
    let kind = match v {
        serde_yaml::Value::Null => ValueKind::Nil,
        serde_yaml::Value::Bool(b) => ValueKind::Boolean(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ValueKind::I64(i)
            } else if let Some(u) = n.as_u64() {
                ValueKind::U64(u)
            } else {
                ValueKind::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_yaml::Value::String(s) => ValueKind::String(s),
        serde_yaml::Value::Sequence(items) => {
            ValueKind::Array(items.into_iter().map(yaml_to_config).collect())
        }
        serde_yaml::Value::Mapping(m) => ValueKind::Table(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        serde_yaml::Value::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_config(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => return yaml_to_config(t.value),
    };
    Value::new(None, kind)
}

/// Where a mistake the checks after parsing found came from: the last override whose key the
/// message names, else the file.
pub fn blame_message(message: &str, file: &str, overrides: &[Override]) -> String {
    overrides
        .iter()
        .rev()
        .find(|o| message.contains(&normalise(&o.key)) || message.contains(&o.key))
        .map(Override::describe)
        .unwrap_or_else(|| file.to_string())
}

/// The override that set `key` (or a mapping holding it), else the file.
fn blame(key: &str, file: &str, overrides: &[Override]) -> String {
    let key = normalise(key);
    overrides
        .iter()
        .rev()
        .find(|o| {
            let k = normalise(&o.key);
            key == k || key.starts_with(&format!("{k}.")) || key.starts_with(&format!("{k}["))
        })
        .map(Override::describe)
        .unwrap_or_else(|| file.to_string())
}

/// A key path with `[0]` of a single task dropped, for comparing paths.
fn normalise(key: &str) -> String {
    key.replace("[0]", "")
}

/// serde_path_to_error's path (`tasks.ner[0].aggregation`, `?` for untracked steps) as the user
/// writes it.
fn user_path(p: &str) -> String {
    if p == "." {
        return String::new();
    }
    p.replace(".?", "").replace('?', "")
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Serde's messages in the user's words: no Rust type names.
fn user_words(message: &str) -> String {
    let mut m = message.to_string();
    for (from, to) in [
        (
            "invalid value: map, expected map with a single key",
            "give exactly one key, the connector's name",
        ),
        ("expected a map", "expected a mapping"),
        ("expected struct ", "expected a mapping of "),
        ("expected enum ", "expected one of the values of "),
        ("expected a sequence", "expected a list"),
        ("unknown variant", "unknown value"),
    ] {
        m = m.replace(from, to);
    }
    // "expected a mapping of BatchingConfig" -> "expected a mapping"
    strip_type_names(&m)
}

/// Drop a CamelCase Rust type name that follows "mapping of " or "values of ".
fn strip_type_names(m: &str) -> String {
    let mut out = m.to_string();
    for lead in ["a mapping of ", "the values of "] {
        while let Some(i) = out.find(lead) {
            let start = i + lead.len();
            let name_len = out[start..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(out.len() - start);
            let name = &out[start..start + name_len];
            if name.chars().next().is_some_and(char::is_uppercase) {
                let keep = lead.trim_end_matches(" of ").to_string();
                out = format!("{}{}{}", &out[..i], keep, &out[start + name_len..]);
            } else {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_show() {
        let p = parse_path("tasks.ner[1].column").unwrap();
        assert_eq!(
            p,
            vec![
                Step::Key("tasks".into()),
                Step::Key("ner".into()),
                Step::Index(1),
                Step::Key("column".into())
            ]
        );
        assert_eq!(show(&p), "tasks.ner[1].column");
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
    }

    #[test]
    fn overrides_replace_and_say_what_is_out_of_range() {
        let text =
            "tasks:\n  ner:\n    - {model: a}\n    - {model: b}\n  embed: {model: e, column: x}\n";
        let t = merged(
            text,
            "p.yaml",
            &[
                Override::set("tasks.ner[1].column", "pii"),
                Override::set("tasks.embed", "{model: f}"),
                Override::set("tasks.embed[0].pooling", "cls"),
            ],
        )
        .unwrap();
        assert_eq!(t["tasks"]["ner"][1]["column"], Value::from("pii"));
        // A mapping replaces the one there: `column: x` is gone.
        assert_eq!(t["tasks"]["embed"]["model"], Value::from("f"));
        assert!(t["tasks"]["embed"].get("column").is_none());
        assert_eq!(t["tasks"]["embed"]["pooling"], Value::from("cls"));
        let e = merged(text, "p.yaml", &[Override::set("tasks.ner[5].column", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set tasks.ner[5].column=x")
                && e.contains(
                    "`tasks.ner` has 2 entries (positions 0 to 1), so [5] is out of range"
                ),
            "{e}"
        );
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            user_words("invalid type: string \"x\", expected struct BatchingConfig"),
            "invalid type: string \"x\", expected a mapping"
        );
        assert_eq!(
            user_words("unknown variant `gpu`, expected `cpu` or `cuda`"),
            "unknown value `gpu`, expected `cpu` or `cuda`"
        );
        assert_eq!(
            user_path("tasks.ner[0].aggregation"),
            "tasks.ner[0].aggregation"
        );
        assert_eq!(user_path("."), "");
    }

    #[test]
    fn mistakes_are_blamed_on_their_origin() {
        let env = Override {
            key: "batching.max_batch_siz".into(),
            value: "8".into(),
            origin: Origin::Env("BERTFLOW__BATCHING__MAX_BATCH_SIZ".into()),
        };
        assert_eq!(
            blame(
                "batching.max_batch_siz",
                "p.yaml",
                std::slice::from_ref(&env)
            ),
            "environment variable BERTFLOW__BATCHING__MAX_BATCH_SIZ"
        );
        assert_eq!(blame("batching.max_batch_size", "p.yaml", &[env]), "p.yaml");
        let set = Override::set("tasks", "{embed: {model: m, colum: x}}");
        assert_eq!(
            blame("tasks.embed.colum", "p.yaml", &[set]),
            "--set tasks={embed: {model: m, colum: x}}"
        );
    }
}
