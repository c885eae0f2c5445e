//! The quality guard: a variant and its fp32 model run the same task on the same calibration
//! texts through bertflow's own task code, and the variant's results are scored against fp32's
//! (embedding cosine, label agreement, entity F1, answer exact match).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};

use crate::error::{Error, Result};
use crate::model::precision::Quality;
use crate::model::tokenizer::TokenCache;
use crate::model::OnnxModel;
use crate::pipeline::{infer_features, InferStats};
use crate::record::{Chunk, Origin};
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
        questions: Some(
            samples
                .iter()
                .map(|s| s.question.as_deref().map(Arc::<str>::from))
                .collect(),
        ),
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

/// Score the variant's results against the fp32 results of the same records.
pub fn compare(task: &str, fp32: &[Option<TaskOutput>], variant: &[Option<TaskOutput>]) -> Quality {
    let mut q = Quality {
        task: task.to_string(),
        ..Default::default()
    };
    let pairs: Vec<(&TaskOutput, &TaskOutput)> = fp32
        .iter()
        .zip(variant)
        .filter_map(|(a, b)| Some((a.as_ref()?, b.as_ref()?)))
        .collect();
    q.records = pairs.len();
    let mut cos = Vec::new();
    let (mut same, mut labelled) = (0usize, 0usize);
    let (mut tp, mut n_ref, mut n_got) = (0usize, 0usize, 0usize);
    let (mut exact, mut asked) = (0usize, 0usize);
    for (a, b) in pairs {
        match (a, b) {
            (TaskOutput::Embedding(x), TaskOutput::Embedding(y)) => cos.push(cosine(x, y)),
            (TaskOutput::Chunks(x), TaskOutput::Chunks(y)) => {
                for (p, r) in x.iter().zip(y) {
                    cos.push(cosine(&p.embedding, &r.embedding));
                }
            }
            (TaskOutput::Classes(x), TaskOutput::Classes(y)) => {
                labelled += 1;
                same += usize::from(argmax(x) == argmax(y));
            }
            (TaskOutput::Entities(x), TaskOutput::Entities(y)) => {
                let key = |e: &crate::task::ner::Entity| (e.entity_group.clone(), e.start, e.end);
                let want: HashSet<_> = x.iter().map(key).collect();
                let got: HashSet<_> = y.iter().map(key).collect();
                tp += want.intersection(&got).count();
                n_ref += want.len();
                n_got += got.len();
            }
            (TaskOutput::Answers(x), TaskOutput::Answers(y)) => {
                for (p, r) in x.iter().zip(y) {
                    asked += 1;
                    exact += usize::from(p.answer == r.answer && p.start == r.start);
                }
            }
            _ => {}
        }
    }
    if !cos.is_empty() {
        q.min_cosine = cos.iter().copied().reduce(f64::min);
        q.mean_cosine = Some(cos.iter().sum::<f64>() / cos.len() as f64);
    }
    if labelled > 0 {
        q.label_agreement = Some(same as f64 / labelled as f64);
    }
    if n_ref + n_got > 0 {
        q.entity_f1 = Some(2.0 * tp as f64 / (n_ref + n_got) as f64);
    } else if matches!(fp32.iter().flatten().next(), Some(TaskOutput::Entities(_))) {
        // Neither found an entity anywhere: they agree.
        q.entity_f1 = Some(1.0);
    }
    if asked > 0 {
        q.exact_match = Some(exact as f64 / asked as f64);
    }
    q
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ner::Entity;
    use crate::task::qa::Answer;

    fn ent(g: &str, s: usize, e: usize) -> Entity {
        Entity {
            entity_group: g.into(),
            score: 0.9,
            word: "w".into(),
            start: s,
            end: e,
        }
    }

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

    #[test]
    fn figures_score_the_variant_against_fp32() {
        let e = |v: Vec<f32>| Some(TaskOutput::Embedding(v));
        let q = compare(
            "embed",
            &[e(vec![1.0, 0.0]), e(vec![0.0, 1.0]), None],
            &[e(vec![1.0, 0.0]), e(vec![1.0, 1.0]), e(vec![1.0, 0.0])],
        );
        assert_eq!(q.records, 2);
        assert!((q.min_cosine.unwrap() - 0.5f64.sqrt()).abs() < 1e-9);
        assert!((q.mean_cosine.unwrap() - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-9);

        let c = |v: Vec<f32>| Some(TaskOutput::Classes(v));
        let q = compare(
            "sentiment",
            &[c(vec![0.9, 0.1]), c(vec![0.2, 0.8])],
            &[c(vec![0.6, 0.4]), c(vec![0.6, 0.4])],
        );
        assert_eq!(q.label_agreement, Some(0.5));

        let n = |v: Vec<Entity>| Some(TaskOutput::Entities(v));
        let q = compare(
            "ner",
            &[n(vec![ent("PER", 0, 5), ent("LOC", 10, 16)])],
            &[n(vec![ent("PER", 0, 5), ent("ORG", 10, 16)])],
        );
        assert_eq!(q.entity_f1, Some(0.5));
        let q = compare("ner", &[n(vec![])], &[n(vec![])]);
        assert_eq!(q.entity_f1, Some(1.0));

        let a = |text: &str, start| Answer {
            question: Arc::from("q"),
            answer: text.into(),
            score: 0.5,
            start,
            end: start + text.len(),
        };
        let q = compare(
            "qa",
            &[Some(TaskOutput::Answers(vec![
                a("Paris", 3),
                a("1889", 20),
            ]))],
            &[Some(TaskOutput::Answers(vec![
                a("Paris", 3),
                a("in 1889", 17),
            ]))],
        );
        assert_eq!(q.exact_match, Some(0.5));
    }
}
