//! The files of a model directory (Hugging Face / sentence-transformers layout).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// A model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, and the optional
/// JSON files that describe the model (`config.json`, sentence-transformers files).
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
    /// `config.json`, when present.
    pub config: Option<Value>,
}

impl ModelDir {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                "not a directory; point the task's `model` at a directory holding model.onnx and tokenizer.json (run `make setup` for the bundled models)",
            ));
        }
        let onnx = ["model.onnx", "onnx/model.onnx"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::model(
                    dir,
                    "no model.onnx (looked for model.onnx and onnx/model.onnx); export the model to ONNX first",
                )
            })?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(Error::model(
                dir,
                "no tokenizer.json; save the tokenizer with a fast (Rust) tokenizer, e.g. `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`",
            ));
        }
        let config = read_json_opt(&dir.join("config.json"))?;
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            onnx,
            tokenizer,
            config,
        })
    }

    /// The folder's description files alone, without checking that its graph and tokenizer
    /// are there (unit tests of the sentence-transformers files).
    pub fn files_only(dir: &Path) -> Self {
        ModelDir {
            dir: dir.to_path_buf(),
            onnx: dir.join("model.onnx"),
            tokenizer: dir.join("tokenizer.json"),
            config: None,
        }
    }

    /// Read an optional JSON file relative to the model directory.
    pub fn json(&self, rel: &str) -> Result<Option<Value>> {
        read_json_opt(&self.dir.join(rel))
    }

    /// `max_position_embeddings` from `config.json`, when present.
    /// The length sentence-transformers cuts texts at (`sentence_bert_config.json`
    /// `max_seq_length`), when the folder is a sentence-transformers model.
    pub fn st_max_seq_length(&self) -> Result<Option<usize>> {
        Ok(self
            .json("sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
            .map(|m| m as usize))
    }

    pub fn max_positions(&self) -> Option<usize> {
        self.config
            .as_ref()?
            .get("max_position_embeddings")?
            .as_u64()
            .map(|v| v as usize)
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::model(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::model(path, format!("invalid JSON: {e}")))
}
