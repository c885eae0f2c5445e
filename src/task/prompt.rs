//! Prompts, as sentence-transformers applies them (`encode(prompt=..., prompt_name=...)`): a text
//! put before every input, given as it is (`prompt`) or by name from the model's
//! `config_sentence_transformers.json` (`prompts`, `default_prompt_name`). When the model's
//! Pooling module says `include_prompt: false`, the prompt's tokens (the first special token and
//! the prompt's own tokens) are left out of the pooling.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{ModelDir, TextTokenizer};

/// A task's prompt, resolved against its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The text put before every input (never empty).
    pub text: String,
    /// Where it came from: `prompt`, `prompt_name: query`, `default_prompt_name: query`.
    pub source: String,
}

/// Named prompts, in the file's order.
type NamedPrompts = Vec<(String, String)>;

/// The model's named prompts and its default prompt's name.
fn model_prompts(dir: &ModelDir) -> Result<(NamedPrompts, Option<String>)> {
    let Some(v) = dir.json("config_sentence_transformers.json")? else {
        return Ok((Vec::new(), None));
    };
    let file = dir.dir.join("config_sentence_transformers.json");
    let mut prompts = Vec::new();
    match v.get("prompts") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, p) in m {
                let p = p
                    .as_str()
                    .ok_or_else(|| Error::model(&file, format!("prompts.{k} is not a string")))?;
                prompts.push((k.clone(), p.to_string()));
            }
        }
        Some(_) => {
            return Err(Error::model(
                &file,
                "`prompts` is not a mapping of names to texts",
            ))
        }
    }
    let default = v
        .get("default_prompt_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((prompts, default))
}

/// The prompt `tasks.<task>` runs with: `prompt` as given (an empty one means none, also over the
/// model's default), else the model's prompt named `prompt_name`, else the model's
/// `default_prompt_name`; `None` when there is none or it is empty. Giving both keys is refused.
pub fn resolve(
    task: &str,
    prompt: Option<&str>,
    prompt_name: Option<&str>,
    dir: &ModelDir,
) -> Result<Option<Prompt>> {
    let (prompts, default) = model_prompts(dir)?;
    let named = |name: &str, key: &str| -> Result<Option<Prompt>> {
        match prompts.iter().find(|(k, _)| k == name) {
            Some((_, p)) if p.is_empty() => Ok(None),
            Some((_, p)) => Ok(Some(Prompt {
                text: p.clone(),
                source: format!("{key}: {name}"),
            })),
            None => Err(Error::config(format!(
                "tasks.{task}.{key} is '{name}' but the model {} has {}; {}",
                dir.dir.display(),
                if prompts.is_empty() {
                    "no prompts (config_sentence_transformers.json `prompts`)".to_string()
                } else {
                    format!(
                        "the prompts {}",
                        prompts
                            .iter()
                            .map(|(k, _)| format!("'{k}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                "give one of them, or the text itself as tasks.".to_string() + task + ".prompt"
            ))),
        }
    };
    match (prompt, prompt_name) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "tasks.{task} has both prompt and prompt_name; give one of the two"
        ))),
        (Some(""), None) => Ok(None),
        (Some(p), None) => Ok(Some(Prompt {
            text: p.to_string(),
            source: "prompt".into(),
        })),
        (None, Some(name)) => named(name, "prompt_name"),
        (None, None) => match default {
            Some(name) => named(&name, "default_prompt_name"),
            None => Ok(None),
        },
    }
}

/// Whether the model's Pooling module pools the prompt's tokens too (`include_prompt`, default
/// true).
pub fn pooling_includes_prompt(dir: &ModelDir, pooling_config: &str) -> Result<bool> {
    Ok(dir
        .json(pooling_config)?
        .and_then(|v| v.get("include_prompt").and_then(Value::as_bool))
        .unwrap_or(true))
}

/// How many leading tokens sentence-transformers leaves out of the pooling for a prompt when
/// `include_prompt` is false: the prompt tokenized alone with special tokens, less the last
/// token when it is a special one (`[SEP]`, `</s>`), i.e. the leading special token and the
/// prompt's own tokens.
pub fn excluded_tokens(tokenizer: &TextTokenizer, prompt: &str) -> Result<usize> {
    let t = tokenizer
        .encode_texts(&[prompt])
        .remove(0)
        .map_err(Error::config)?;
    let e = &t.windows[0];
    let trailing_special = e.get_special_tokens_mask().last() == Some(&1);
    Ok(e.len() - usize::from(trailing_special && !e.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(config: Option<&str>) -> (tempfile::TempDir, ModelDir) {
        let d = tempfile::tempdir().unwrap();
        if let Some(c) = config {
            std::fs::write(d.path().join("config_sentence_transformers.json"), c).unwrap();
        }
        let m = ModelDir::files_only(d.path());
        (d, m)
    }

    #[test]
    fn resolution_follows_sentence_transformers() {
        let (_d, m) = dir_with(Some(
            r#"{"prompts": {"query": "query: ", "passage": "passage: ", "none": ""}, "default_prompt_name": "passage"}"#,
        ));
        let text = |p: Option<Prompt>| p.map(|p| p.text);
        // The default prompt when nothing is given.
        let p = resolve("embed", None, None, &m).unwrap().unwrap();
        assert_eq!(
            (p.text.as_str(), p.source.as_str()),
            ("passage: ", "default_prompt_name: passage")
        );
        assert_eq!(
            text(resolve("embed", None, Some("query"), &m).unwrap()).as_deref(),
            Some("query: ")
        );
        // An empty named prompt, or an empty prompt over the default: none.
        assert_eq!(resolve("embed", None, Some("none"), &m).unwrap(), None);
        assert_eq!(resolve("embed", Some(""), None, &m).unwrap(), None);
        assert_eq!(
            text(resolve("embed", Some("Represent: "), None, &m).unwrap()).as_deref(),
            Some("Represent: ")
        );
        // An unknown name is refused, naming the model's prompts.
        let e = resolve("sparse", None, Some("qeury"), &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tasks.sparse.prompt_name is 'qeury'")
                && e.contains("'query'")
                && e.contains("'passage'"),
            "{e}"
        );
        let e = resolve("embed", Some("x"), Some("query"), &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both prompt and prompt_name"), "{e}");
    }

    #[test]
    fn a_model_without_prompts() {
        let (_d, m) = dir_with(None);
        assert_eq!(resolve("embed", None, None, &m).unwrap(), None);
        let e = resolve("embed", None, Some("query"), &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no prompts"), "{e}");
        // A default naming a prompt the model lacks is the model's mistake, said as such.
        let (_d, m) = dir_with(Some(r#"{"prompts": {}, "default_prompt_name": "query"}"#));
        let e = resolve("embed", None, None, &m).unwrap_err().to_string();
        assert!(e.contains("default_prompt_name is 'query'"), "{e}");
    }
}
