//! The quality guard: a variant and its fp32 model run the same task on the same calibration
//! texts through bertflow's own task code, and the variant's results are scored against fp32's
//! (embedding cosine, label agreement, entity F1, answer exact match).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};

use crate::error::{Error, Result};
use crate::model::precision::Quality;
use crate::model::tokenizer::TokenCache;
use crate::model::OnnxModel;
use crate::pipeline::{infer_features, InferStats};
use crate::record::{Chunk, Origin, TextColumn};
use crate::task::{Task, TaskOutput};

/// One calibration record: a text, and a question asked of it (question answering).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub text: String,
    #[serde(default)]
    pub question: Option<String>,
}

/// The bundled calibration sample: short reviews, posts and news-like sentences with named
/// entities, and questions over short passages.
const BUNDLED: &str = include_str!("calibration.jsonl");

/// The candidate labels a zero-shot variant is judged with (over every calibration text).
pub const ZERO_SHOT_LABELS: [&str; 8] = [
    "positive",
    "negative",
    "a question",
    "a complaint",
    "business",
    "sports",
    "technology",
    "travel",
];

pub fn bundled() -> Vec<Sample> {
    parse(BUNDLED, "bundled calibration sample").expect("bundled calibration sample")
}

/// Read a calibration file: JSON lines `{"text": ..., "question": ...}` (question optional), or
/// plain text with one text per line.
pub fn read(path: &std::path::Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

fn parse(text: &str, name: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{') {
            let s: Sample = serde_json::from_str(line).map_err(|e| {
                Error::config(format!(
                    "{name} line {}: {e} (each line is {{\"text\": ..., \"question\": ...}} or plain text)",
                    i + 1
                ))
            })?;
            out.push(s);
        } else {
            out.push(Sample {
                text: line.to_string(),
                question: None,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::config(format!("{name} holds no text")));
    }
    Ok(out)
}

/// The task's result of every sample (`None` where the record failed), in sample order.
pub fn run_task(
    task: &dyn Task,
    model: &mut OnnxModel,
    samples: &[Sample],
) -> Result<Vec<Option<TaskOutput>>> {
    let n = samples.len();
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("calibration-{i}")),
    ));
    let chunk = Chunk {
        seq: 0,
        origin: Origin::File {
            path: Arc::from("calibration"),
            first_row: 0,
        },
        ids,
        texts: samples
            .iter()
            .map(|s| Some(Arc::<str>::from(s.text.as_str())))
            .collect(),
        columns: vec![TextColumn {
            name: Arc::from("question"),
            values: samples
                .iter()
                .map(|s| s.question.as_deref().map(Arc::<str>::from))
                .collect(),
        }],
        passthrough: vec![],
        errors: vec![],
    };
    let feats = task.featurize(&chunk, &TokenCache::default());
    let mut stats = InferStats::default();
    let results = infer_features(task, model, &feats.features, 32, 16384, &mut stats, None);
    let mut parts: Vec<Vec<TaskOutput>> = (0..n).map(|_| Vec::new()).collect();
    let mut failed = vec![false; n];
    for e in &feats.errors {
        failed[e.row] = true;
    }
    for (f, r) in feats.features.iter().zip(results) {
        match r {
            Some(Ok(v)) => parts[f.row].push(v),
            Some(Err(e)) => {
                return Err(Error::Runtime(format!(
                    "calibration record {} failed: {e}",
                    f.row + 1
                )))
            }
            None => failed[f.row] = true,
        }
    }
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(row, p)| {
            if failed[row] {
                None
            } else if p.is_empty() {
                task.empty_result()
            } else {
                task.combine(p).ok()
            }
        })
        .collect())
}

/// Score the variant's results against the fp32 results of the same records: the figures are
/// the task's own ([`Task::quality`]).
pub fn compare(
    task: &dyn Task,
    fp32: &[Option<TaskOutput>],
    variant: &[Option<TaskOutput>],
) -> Quality {
    let mut q = Quality {
        task: task.name().to_string(),
        ..Default::default()
    };
    let pairs: Vec<(&TaskOutput, &TaskOutput)> = fp32
        .iter()
        .zip(variant)
        .filter_map(|(a, b)| Some((a.as_ref()?, b.as_ref()?)))
        .collect();
    q.records = pairs.len();
    task.quality(&pairs, &mut q);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_files_take_json_lines_or_plain_lines() {
        let s = parse(
            "plain text one\n\n{\"text\": \"ctx\", \"question\": \"q?\"}\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].question.as_deref(), Some("q?"));
        let e = parse("{\"txt\": 1}", "f.jsonl").unwrap_err().to_string();
        assert!(e.contains("f.jsonl line 1"), "{e}");
        assert!(parse("\n  \n", "empty").is_err());
        let b = bundled();
        assert!(b.len() >= 100, "{}", b.len());
        assert!(b.iter().filter(|s| s.question.is_some()).count() >= 20);
    }
}
