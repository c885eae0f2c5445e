//! The configuration reference of docs/configuration.md, generated from the configuration
//! types: their JSON schema (doc comments, types, serde defaults). A field's doc comment may end
//! with `Type: ...` or `Default: ...` lines for what the schema cannot say (a path, a default
//! read from the model).

use serde_json::Value;

use super::PipelineConfig;
use crate::connector::registry::{Connector, SinkKind, SourceConfig};

/// Where the generated text sits in docs/configuration.md.
pub const BEGIN: &str =
    "<!-- generated from the configuration types: do not edit by hand (make config-docs) -->";
pub const END: &str = "<!-- end of generated reference -->";

/// One section of the reference: heading, level, the type it documents (by schema name), keys
/// documented in sections of their own, and keys whose fields are flattened as `key.field`.
struct Section {
    path: String,
    level: usize,
    def: Option<String>,
    intro: &'static str,
    skip: Vec<&'static str>,
}

fn section(path: &str, level: usize, def: Option<&str>, skip: &[&'static str]) -> Section {
    Section {
        path: path.to_string(),
        level,
        def: def.map(str::to_string),
        intro: "",
        skip: skip.to_vec(),
    }
}

/// A connector's sections: its own table, then those of the mappings it documents apart.
fn connector_sections(side: &str, c: &Connector, out: &mut Vec<Section>) {
    out.push(Section {
        path: format!("{side}.{}", c.key),
        level: 3,
        def: Some(c.def.clone()),
        intro: c.notes.intro,
        skip: c.notes.subsections.iter().map(|(k, _)| *k).collect(),
    });
    for (key, def) in c.notes.subsections {
        out.push(section(
            &format!("{side}.{}.{key}", c.key),
            4,
            Some(def),
            &[],
        ));
    }
}

/// Every section, in document order; the connectors' come from the connector registry.
fn sections() -> Vec<Section> {
    let sources = SourceConfig::connectors();
    let sinks = SinkKind::connectors();
    let mut out = vec![Section {
        path: "source".into(),
        level: 2,
        def: None,
        intro: "Exactly one source, named by its key: `source: {parquet: {...}}` or `source: {kafka: {...}}`.",
        skip: Vec::new(),
    }];
    for c in &sources {
        connector_sections("source", c, &mut out);
    }
    out.push(section(
        "tasks",
        2,
        Some("TasksConfig"),
        &[
            "embed",
            "sentiment",
            "ner",
            "qa",
            "zero_shot",
            "cross_encoder",
            "sparse",
        ],
    ));
    for (key, def) in [
        ("embed", "EmbedConfig"),
        ("sentiment", "SentimentConfig"),
        ("ner", "NerConfig"),
        ("qa", "QaConfig"),
        ("zero_shot", "ZeroShotConfig"),
        ("cross_encoder", "CrossEncoderConfig"),
        ("sparse", "SparseConfig"),
    ] {
        out.push(section(&format!("tasks.{key}"), 3, Some(def), &[]));
    }
    out.push(section("batching", 2, Some("BatchingConfig"), &[]));
    out.push(section("runtime", 2, Some("RuntimeConfig"), &[]));
    let mut skip: Vec<&'static str> = sinks.iter().map(|c| c.key).collect();
    skip.push("errors");
    out.push(Section {
        path: "sink".into(),
        level: 2,
        def: Some("SinkFile".into()),
        intro: "",
        skip,
    });
    for c in &sinks {
        connector_sections("sink", c, &mut out);
    }
    out.push(section("sink.errors", 3, Some("ErrorSinkConfig"), &[]));
    out.push(section("metrics", 2, Some("MetricsConfig"), &[]));
    out
}

/// The reference, as Markdown.
pub fn markdown() -> String {
    let schema = schemars::schema_for!(PipelineConfig).to_value();
    let defs = schema
        .get("$defs")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let mut out = String::new();
    for s in sections() {
        out.push_str(&format!("{} `{}`\n\n", "#".repeat(s.level), s.path));
        if !s.intro.is_empty() {
            out.push_str(s.intro);
            out.push_str("\n\n");
        }
        let Some(name) = &s.def else { continue };
        let def = &defs[name.as_str()];
        let (desc, _, _) = split_directives(def.get("description").and_then(Value::as_str));
        let mut rows = Vec::new();
        collect_rows(def, &defs, "", &s.skip, &mut rows);
        let mut paragraphs = desc.split("\n\n").filter(|p| !p.trim().is_empty());
        // The first paragraph introduces the table, the others follow it.
        if let Some(p) = paragraphs.next() {
            out.push_str(&one_line(p));
            out.push_str("\n\n");
        }
        if !rows.is_empty() {
            out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
            for r in &rows {
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    r.key,
                    cell(&r.ty),
                    cell(&r.default),
                    cell(&r.meaning)
                ));
            }
            out.push('\n');
        }
        for p in paragraphs {
            out.push_str(&one_line(p));
            out.push_str("\n\n");
        }
    }
    out.trim_end().to_string() + "\n"
}

struct Row {
    key: String,
    ty: String,
    default: String,
    meaning: String,
}

fn collect_rows(def: &Value, defs: &Value, prefix: &str, skip: &[&str], rows: &mut Vec<Row>) {
    let required: Vec<&str> = def
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, p) in props {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let (meaning, ty_override, default_override) =
            split_directives(p.get("description").and_then(Value::as_str));
        // A nested mapping (e.g. `json`) is documented key by key.
        if let Some(target) = struct_def(p, defs) {
            collect_rows(target, defs, &format!("{prefix}{name}."), &[], rows);
            continue;
        }
        let ty = ty_override.unwrap_or_else(|| type_of(p, defs));
        let default = match p.get("default") {
            Some(v) if !v.is_null() => show_default(v),
            _ => default_override.unwrap_or_else(|| {
                if required.contains(&name.as_str()) {
                    "required".into()
                } else {
                    "none".into()
                }
            }),
        };
        rows.push(Row {
            key: format!("{prefix}{name}"),
            ty,
            default,
            meaning: one_line(&meaning),
        });
    }
}

/// The struct a property refers to, when it is a mapping with fields of its own (also an
/// optional one: `anyOf` the struct and null).
fn struct_def<'a>(p: &'a Value, defs: &'a Value) -> Option<&'a Value> {
    let target = resolve(p, defs).or_else(|| {
        let any = p.get("anyOf").and_then(Value::as_array)?;
        let mut refs = any
            .iter()
            .filter(|x| x.get("type") != Some(&Value::from("null")));
        let only = refs.next()?;
        if refs.next().is_some() {
            return None;
        }
        resolve(only, defs)
    })?;
    target.get("properties").map(|_| target)
}

fn resolve<'a>(p: &'a Value, defs: &'a Value) -> Option<&'a Value> {
    let r = p.get("$ref").and_then(Value::as_str).or_else(|| {
        p.get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|x| x.get("$ref"))
            .and_then(Value::as_str)
    })?;
    let name = r.rsplit('/').next()?;
    defs.get(name)
}

fn type_of(p: &Value, defs: &Value) -> String {
    if let Some(target) = resolve(p, defs) {
        return type_of(target, defs);
    }
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(c) = p.get("const") {
        return format!("`{}`", c.as_str().unwrap_or_default());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = p.get(key).and_then(Value::as_array) {
            let shown: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .map(|a| type_of(a, defs))
                .collect();
            let joiner = if shown.iter().all(|s| s.starts_with('`')) {
                " | "
            } else {
                " or "
            };
            return shown.join(joiner);
        }
    }
    let ty = match p.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_string(),
        _ => String::new(),
    };
    match ty.as_str() {
        "string" => "string".into(),
        "integer" => "int".into(),
        "number" => "number".into(),
        "boolean" => "bool".into(),
        "array" => {
            let item = p
                .get("items")
                .map(|i| type_of(i, defs))
                .unwrap_or_else(|| "values".into());
            format!("list of {item}s")
        }
        "object" => match p.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map string → {}", type_of(v, defs)),
            _ => "mapping".into(),
        },
        _ => "value".into(),
    }
}

fn show_default(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "`[{}]`",
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) if o.is_empty() => "`{}`".into(),
        other => format!("`{other}`"),
    }
}

/// A description without its trailing `Type:` / `Default:` lines, and those lines' values.
fn split_directives(desc: Option<&str>) -> (String, Option<String>, Option<String>) {
    let mut ty = None;
    let mut default = None;
    let mut kept = Vec::new();
    for line in desc.unwrap_or_default().lines() {
        if let Some(t) = line.trim().strip_prefix("Type: ") {
            ty = Some(t.trim().to_string());
        } else if let Some(d) = line.trim().strip_prefix("Default: ") {
            default = Some(d.trim().to_string());
        } else {
            kept.push(line);
        }
    }
    (kept.join("\n").trim().to_string(), ty, default)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md holds the reference generated from the types. Set
    /// `BERTFLOW_WRITE_DOCS=1` (or run `make config-docs`) to rewrite it after changing them.
    #[test]
    fn configuration_reference_in_the_docs_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
            panic!(
                "{} has no generated section ({BEGIN} ... {END})",
                path.display()
            );
        };
        let current = &text[b + BEGIN.len()..e];
        let fresh = format!("\n\n{}\n", markdown());
        if current != fresh {
            if std::env::var_os("BERTFLOW_WRITE_DOCS").is_some() {
                let updated = format!("{}{BEGIN}{fresh}{}", &text[..b], &text[e..]);
                std::fs::write(&path, updated).unwrap();
                return;
            }
            panic!(
                "docs/configuration.md is stale: the configuration types changed. Run `make config-docs` and commit the result."
            );
        }
    }

    #[test]
    fn every_section_documents_its_keys() {
        let md = markdown();
        for key in [
            "`path`",
            "`bootstrap_servers`",
            "`json.text`",
            "`max_batch_size`",
            "`execution_provider`",
            "`partial_results`",
            "`exactly_once`",
            "`listen`",
        ] {
            assert!(md.contains(key), "{key} missing from the reference");
        }
        // No key without an explanation.
        for line in md.lines().filter(|l| l.starts_with("| `")) {
            assert!(!line.ends_with("|  |"), "undocumented key: {line}");
        }
    }
}
