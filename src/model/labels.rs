//! Labels and lengths read from a model directory, with the defaults transformers uses.

use serde_json::Value;

use crate::model::tokenizer::model_max_length;
use crate::model::ModelDir;

/// `id2label` of `config.json` in id order. A config without it gets transformers' default names
/// `LABEL_0`, `LABEL_1`, ... (`num_labels`, else the model's output width decides how many).
#[derive(Debug, Clone)]
pub struct Labels {
    names: Vec<String>,
    pub from_config: bool,
}

impl Labels {
    pub fn from_model(dir: &ModelDir) -> Self {
        let map = dir
            .config
            .as_ref()
            .and_then(|c| c.get("id2label"))
            .and_then(Value::as_object);
        if let Some(map) = map {
            let mut pairs: Vec<(usize, String)> = map
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect();
            pairs.sort();
            let n = pairs.last().map(|p| p.0 + 1).unwrap_or(0);
            let mut names: Vec<String> = (0..n).map(|i| format!("LABEL_{i}")).collect();
            for (i, name) in pairs {
                names[i] = name;
            }
            if !names.is_empty() {
                return Labels {
                    names,
                    from_config: true,
                };
            }
        }
        let n = dir
            .config
            .as_ref()
            .and_then(|c| c.get("num_labels"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        Labels {
            names: (0..n).map(|i| format!("LABEL_{i}")).collect(),
            from_config: false,
        }
    }

    /// Name of label `i` (`LABEL_i` past the known names).
    pub fn name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{i}"))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Default tokens per input: the tokenizer's `model_max_length`, else the position limit, at
/// most 512 (and never above the position limit).
/// The window length of question answering when none is configured, at most (transformers'
/// pipeline default).
pub const QA_MAX_SEQ_LEN: usize = 384;

pub fn default_max_length(dir: &ModelDir) -> usize {
    let positions = dir.max_positions().map(|p| {
        // RoBERTa-style models reserve two positions for the padding offset.
        let model_type = dir
            .config
            .as_ref()
            .and_then(|c| c.get("model_type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(model_type, "roberta" | "xlm-roberta" | "camembert") {
            p.saturating_sub(2)
        } else {
            p
        }
    });
    let tok = model_max_length(&dir.dir);
    match (tok, positions) {
        (Some(t), Some(p)) => t.min(p),
        (Some(t), None) => t,
        (None, Some(p)) => p.min(512),
        (None, None) => 512,
    }
}
