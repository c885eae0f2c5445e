//! Extractive question answering, as transformers 4.53's QuestionAnsweringPipeline: the
//! question and context encoded as a pair (question first for right-padding tokenizers), the
//! context split into windows of `max_seq_len` tokens overlapping by `doc_stride`, everything but
//! the context (and CLS) masked, start/end softmax, span score p_start * p_end for spans of at
//! most `max_answer_len` tokens, the top_k spans per window mapped to character offsets through
//! word alignment, equal answers (case-insensitive) across windows merged by adding their
//! scores, and the "no answer" score (the smallest CLS score over windows) when
//! `handle_impossible_answer` is on.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};

use super::{list_of_structs, list_of_structs_builder, Featurized, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::default_max_length;
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::{Chunk, RecordError, Stage};
use crate::task::config::QaConfig;
use crate::task::quality;

/// One answer to one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub question: Arc<str>,
    pub answer: String,
    pub score: f32,
    /// Character offsets into the context (end exclusive).
    pub start: usize,
    pub end: usize,
}

/// Candidates of one window of one question, in the order the pipeline ranks them.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAnswers {
    pub question_index: usize,
    pub question: Arc<str>,
    pub candidates: Vec<Answer>,
    /// p_start(CLS) * p_end(CLS) of this window.
    pub null_score: f32,
}

/// The window length and stride of the task over a model folder: the configured ones, else
/// transformers' defaults (the model's length up to 384, half of it up to 128).
fn windows(cfg: &QaConfig, dir: &ModelDir) -> Result<(usize, usize)> {
    let max_seq_len = cfg
        .max_seq_len
        .unwrap_or_else(|| default_max_length(dir).min(crate::model::labels::QA_MAX_SEQ_LEN));
    let doc_stride = cfg.doc_stride.unwrap_or((max_seq_len / 2).min(128));
    if doc_stride > max_seq_len {
        return Err(Error::config(format!(
            "tasks.qa.doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})"
        )));
    }
    Ok((max_seq_len, doc_stride))
}

pub struct QaTask {
    tokenizer: TextTokenizer,
    questions: Vec<Arc<str>>,
    /// The input column asked of each record (`tasks.qa.question_column`).
    question_column: Option<String>,
    top_k: usize,
    max_question_len: usize,
    max_answer_len: usize,
    handle_impossible: bool,
    align_to_words: bool,
    column: String,
    start_output: String,
    end_output: String,
}

pub fn answer_fields() -> Fields {
    Fields::from(vec![
        Field::new("question", DataType::Utf8, false),
        Field::new("answer", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ])
}

/// Python-style slice of `text` by character offsets (`""` when start >= end).
fn char_slice(text: &str, start: usize, end: usize) -> String {
    if start >= end {
        return String::new();
    }
    text.chars().skip(start).take(end - start).collect()
}

/// Softmax in f32 with the maximum subtracted.
fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The top_k spans (start, end, score) of one window, as `decode_spans` ranks them: by score,
/// ties in row-major order, zero-score spans last, then only spans whose both ends are allowed.
#[allow(clippy::needless_range_loop)] // (start, end) index pairs read clearer as indices
pub fn best_spans(
    start: &[f32],
    end: &[f32],
    allowed: &[bool],
    top_k: usize,
    max_answer_len: usize,
) -> Vec<(usize, usize, f32)> {
    let n = start.len();
    let mut positive: Vec<(f32, usize, usize)> = Vec::new();
    for s in 0..n {
        for e in s..n.min(s + max_answer_len) {
            let score = start[s] * end[e];
            if score > 0.0 {
                positive.push((score, s, e));
            }
        }
    }
    positive.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut chosen: Vec<(usize, usize, f32)> = positive
        .into_iter()
        .take(top_k)
        .map(|(sc, s, e)| (s, e, sc))
        .collect();
    if chosen.len() < top_k {
        // Zero-score spans fill the remaining places in row-major order.
        'outer: for s in 0..n {
            for e in 0..n {
                let in_band = e >= s && e < s + max_answer_len;
                if !in_band || start[s] * end[e] == 0.0 {
                    chosen.push((s, e, 0.0));
                    if chosen.len() == top_k {
                        break 'outer;
                    }
                }
            }
        }
    }
    chosen
        .into_iter()
        .filter(|&(s, e, _)| allowed[s] && allowed[e])
        .collect()
}

impl QaTask {
    pub fn new(cfg: &QaConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        for name in ["start_logits", "end_logits"] {
            if !model.output_names.iter().any(|n| n == name) {
                return Err(Error::model(
                    &dir.onnx,
                    format!(
                        "the graph has no '{name}' output (outputs: {}); is this a question-answering model?",
                        model.output_names.join(", ")
                    ),
                ));
            }
        }
        let (max_seq_len, doc_stride) = windows(cfg, dir)?;
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length: max_seq_len,
                stride: doc_stride,
                windows: true,
                only_second: true,
                only_first: false,
            },
        )?;
        let mut task = QaTask {
            tokenizer,
            questions: Vec::new(),
            question_column: cfg.question_column.clone(),
            top_k: cfg.top_k,
            max_question_len: cfg.max_question_len,
            max_answer_len: cfg.max_answer_len,
            handle_impossible: cfg.handle_impossible_answer,
            align_to_words: cfg.align_to_words,
            column: cfg.column.clone(),
            start_output: "start_logits".into(),
            end_output: "end_logits".into(),
        };
        // Fixed questions are checked and cut once, not per record.
        for (i, q) in cfg.questions.iter().enumerate() {
            if q.trim().is_empty() {
                return Err(Error::config(format!("tasks.qa.questions[{i}] is empty")));
            }
            let capped = task
                .cap_question(&Arc::from(q.as_str()))
                .map_err(|e| Error::config(format!("tasks.qa.questions[{i}]: {e}")))?;
            task.questions.push(capped);
        }
        Ok(task)
    }

    /// Cut a question longer than `max_question_len` tokens at that token's end, and check that
    /// it leaves room for more context tokens per window than `doc_stride`.
    fn cap_question(&self, q: &Arc<str>) -> std::result::Result<Arc<str>, String> {
        let offsets = self.tokenizer.plain_offsets(q)?;
        let n = offsets.len().min(self.max_question_len);
        let tr = self.tokenizer.truncation;
        let room = tr
            .max_length
            .saturating_sub(n + self.tokenizer.added_tokens(true));
        if room <= tr.stride {
            return Err(format!(
                "the question ({n} tokens) leaves {room} context tokens per window, not more than doc_stride ({}); raise max_seq_len or lower max_question_len / doc_stride",
                tr.stride
            ));
        }
        if offsets.len() <= self.max_question_len {
            return Ok(q.clone());
        }
        let end = offsets[self.max_question_len - 1].1;
        Ok(Arc::from(char_slice(q, 0, end).as_str()))
    }

    fn window(&self, f: &Feature, q: &Arc<str>, start: &[f32], end: &[f32]) -> WindowAnswers {
        let enc = &f.encoding;
        let n = enc.len();
        let question_first = !self.tokenizer.pads_left;
        let context_seq = if question_first { 1 } else { 0 };
        let seq_ids = enc.get_sequence_ids();
        let ids = enc.get_ids();
        let mask = enc.get_attention_mask();
        let allowed: Vec<bool> = (0..n)
            .map(|i| {
                let p_mask = if question_first {
                    seq_ids[i] != Some(1) && Some(ids[i]) != self.tokenizer.cls_id
                } else {
                    false
                };
                !p_mask && mask[i] == 1
            })
            .collect();
        let mut s: Vec<f32> = (0..n)
            .map(|i| if allowed[i] { start[i] } else { -10000.0 })
            .collect();
        let mut e: Vec<f32> = (0..n)
            .map(|i| if allowed[i] { end[i] } else { -10000.0 })
            .collect();
        softmax_in_place(&mut s);
        softmax_in_place(&mut e);
        let null_score = s[0] * e[0];
        s[0] = 0.0;
        e[0] = 0.0;
        let offsets = enc.get_offsets();
        let candidates = best_spans(&s, &e, &allowed, self.top_k, self.max_answer_len)
            .into_iter()
            .map(|(si, ei, score)| {
                let aligned = if self.align_to_words {
                    enc.token_to_word(si).zip(enc.token_to_word(ei)).and_then(
                        |((_, ws), (_, we))| {
                            Some((
                                enc.word_to_chars(ws, context_seq)?.0,
                                enc.word_to_chars(we, context_seq)?.1,
                            ))
                        },
                    )
                } else {
                    None
                };
                let (cs, ce) = aligned.unwrap_or((offsets[si].0, offsets[ei].1));
                Answer {
                    question: q.clone(),
                    answer: char_slice(&f.text, cs, ce),
                    score,
                    start: cs,
                    end: ce,
                }
            })
            .collect();
        WindowAnswers {
            question_index: f.part,
            question: q.clone(),
            candidates,
            null_score,
        }
    }

    /// Merge the windows of one question into its final answers.
    fn merge(&self, windows: Vec<WindowAnswers>) -> Vec<Answer> {
        let mut answers: Vec<Answer> = Vec::new();
        let mut min_null = 1_000_000f32;
        let question = windows[0].question.clone();
        for w in windows {
            if self.handle_impossible {
                min_null = min_null.min(w.null_score);
            }
            for c in w.candidates {
                let key = c.answer.to_lowercase();
                match answers.iter_mut().find(|a| a.answer.to_lowercase() == key) {
                    Some(a) => a.score += c.score,
                    None => answers.push(c),
                }
            }
        }
        if self.handle_impossible {
            answers.push(Answer {
                question,
                answer: String::new(),
                score: min_null,
                start: 0,
                end: 0,
            });
        }
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(self.top_k);
        answers
    }
}

impl Task for QaTask {
    fn name(&self) -> &'static str {
        "qa"
    }

    fn fields(&self) -> Vec<FieldRef> {
        vec![list_of_structs(&self.column, answer_fields())]
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn model_outputs(&self) -> Vec<String> {
        vec![self.start_output.clone(), self.end_output.clone()]
    }

    fn featurize(&self, chunk: &Chunk, _cache: &TokenCache) -> Featurized {
        let mut out = Featurized::default();
        // Every (record, question) pair of the chunk, checked, then tokenized in one call.
        let mut jobs: Vec<(usize, usize, Arc<str>)> = Vec::new();
        let mut failed: Vec<Option<String>> = vec![None; chunk.len()];
        for (row, text) in chunk.texts.iter().enumerate() {
            let Some(context) = text else { continue };
            if context.trim().is_empty() {
                failed[row] = Some("question answering needs a context: the text is empty".into());
                continue;
            }
            let mut questions: Vec<Arc<str>> = self.questions.clone();
            if self.question_column.is_some() {
                match self
                    .question_column
                    .as_deref()
                    .and_then(|name| chunk.column(name))
                    .and_then(|q| q.get(row).cloned().flatten())
                {
                    Some(q) if q.trim().is_empty() => {
                        failed[row] = Some("the question of this record is empty".into());
                        continue;
                    }
                    Some(q) => match self.cap_question(&q) {
                        Ok(q) => questions.push(q),
                        Err(e) => {
                            failed[row] = Some(e);
                            continue;
                        }
                    },
                    None => {
                        failed[row] =
                            Some("the question column is null or not text for this record".into());
                        continue;
                    }
                }
            }
            for (qi, q) in questions.into_iter().enumerate() {
                jobs.push((row, qi, q));
            }
        }
        let pairs: Vec<(&str, &str)> = jobs
            .iter()
            .map(|(row, _, q)| {
                let context = chunk.texts[*row].as_deref().unwrap_or_default();
                if self.tokenizer.pads_left {
                    (context, &**q)
                } else {
                    (&**q, context)
                }
            })
            .collect();
        let encoded = self.tokenizer.encode_pairs(&pairs);
        let context_seq = if self.tokenizer.pads_left { 0 } else { 1 };
        let mut truncated = vec![false; chunk.len()];
        let mut feats: Vec<Feature> = Vec::new();
        for ((row, qi, q), enc) in jobs.into_iter().zip(encoded) {
            if failed[row].is_some() {
                continue;
            }
            match enc {
                Ok(t) if !t.windows[0].get_sequence_ids().contains(&Some(context_seq)) => {
                    failed[row] = Some("the context has no tokens".into());
                }
                Ok(t) => {
                    truncated[row] |= t.truncated;
                    let context = chunk.texts[row].clone().unwrap_or_else(|| Arc::from(""));
                    for w in t.windows {
                        feats.push(Feature {
                            row,
                            part: qi,
                            encoding: w,
                            text: context.clone(),
                            question: Some(q.clone()),
                        });
                    }
                }
                Err(e) => {
                    failed[row] = Some(format!(
                        "{e} (question too long for max_seq_len {}?)",
                        self.tokenizer.max_length()
                    ));
                }
            }
        }
        out.features = feats
            .into_iter()
            .filter(|f| failed[f.row].is_none())
            .collect();
        out.truncated = (0..chunk.len())
            .filter(|&r| truncated[r] && failed[r].is_none())
            .count();
        out.errors = failed
            .into_iter()
            .enumerate()
            .filter_map(|(row, f)| f.map(|reason| RecordError::new(row, Stage::Tokenize, reason)))
            .collect();
        out
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (s_shape, s_data) = outputs.f32(&self.start_output)?;
        let (e_shape, e_data) = outputs.f32(&self.end_output)?;
        let expect = [features.len(), batch.seq_len];
        if s_shape != expect || e_shape != expect {
            return Err(Error::Inference(format!(
                "start/end logits have shapes {s_shape:?} / {e_shape:?}, expected {expect:?}"
            )));
        }
        let seq = batch.seq_len;
        Ok(features
            .iter()
            .enumerate()
            .map(|(r, f)| {
                let n = f.encoding.len();
                let q = f.question.clone().unwrap_or_else(|| Arc::from(""));
                let start = &s_data[r * seq..r * seq + n];
                let end = &e_data[r * seq..r * seq + n];
                Ok(TaskOutput::AnswerWindow(self.window(f, &q, start, end)))
            })
            .collect())
    }

    fn combine(&self, parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        let mut per_question: Vec<Vec<WindowAnswers>> = Vec::new();
        for p in parts {
            let TaskOutput::AnswerWindow(w) = p else {
                return Err("internal: qa got another output".into());
            };
            match per_question
                .iter_mut()
                .find(|g| g[0].question_index == w.question_index)
            {
                Some(g) => g.push(w),
                None => per_question.push(vec![w]),
            }
        }
        Ok(TaskOutput::Answers(
            per_question
                .into_iter()
                .flat_map(|g| self.merge(g))
                .collect(),
        ))
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        let mut answers = Vec::new();
        for (a, b) in pairs {
            if let (TaskOutput::Answers(x), TaskOutput::Answers(y)) = (a, b) {
                answers.extend(
                    x.iter()
                        .zip(y)
                        .map(|(p, r)| ((&p.answer, p.start), (&r.answer, r.start))),
                );
            }
        }
        quality::exact_match(figures, answers);
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let mut list = list_of_structs_builder(answer_fields());
        for o in outputs {
            let TaskOutput::Answers(answers) = o else {
                return Err(Error::Inference("internal: qa got another output".into()));
            };
            let sb = list.values();
            for a in answers {
                sb.field_builder::<StringBuilder>(0)
                    .expect("question")
                    .append_value(&*a.question);
                sb.field_builder::<StringBuilder>(1)
                    .expect("answer")
                    .append_value(&a.answer);
                sb.field_builder::<Float32Builder>(2)
                    .expect("score")
                    .append_value(a.score);
                sb.field_builder::<Int64Builder>(3)
                    .expect("start")
                    .append_value(a.start as i64);
                sb.field_builder::<Int64Builder>(4)
                    .expect("end")
                    .append_value(a.end as i64);
                sb.append(true);
            }
            list.append(true);
        }
        Ok(vec![Arc::new(list.finish())])
    }
}

impl crate::task::config::TaskSpec for QaConfig {
    crate::task::config::task_spec_basics!("qa");

    fn preflight(&self, dir: &ModelDir) -> Result<()> {
        windows(self, dir).map(|_| ())
    }

    fn text_columns(&self) -> Vec<crate::record::TextColumnRequest> {
        self.question_column
            .iter()
            .map(|name| crate::record::TextColumnRequest {
                name: name.clone(),
                role: "question",
                key: "tasks.qa.question_column".into(),
            })
            .collect()
    }

    fn load(&self, dir: &ModelDir, model: &OnnxModel) -> Result<std::sync::Arc<dyn Task>> {
        Ok(std::sync::Arc::new(QaTask::new(self, dir, model)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_respect_length_order_and_mask() {
        let start = [0.0, 0.6, 0.3, 0.1];
        let end = [0.0, 0.1, 0.2, 0.7];
        let allowed = [true, true, true, true];
        let best = best_spans(&start, &end, &allowed, 2, 15);
        assert_eq!((best[0].0, best[0].1), (1, 3));
        assert!((best[0].2 - 0.42).abs() < 1e-6);
        assert_eq!((best[1].0, best[1].1), (2, 3));
        // max_answer_len 2: (1,3) is too long.
        let best = best_spans(&start, &end, &allowed, 1, 2);
        assert_eq!((best[0].0, best[0].1), (2, 3));
        // A disallowed end drops the span after ranking.
        let allowed = [true, true, true, false];
        let best = best_spans(&start, &end, &allowed, 1, 15);
        assert!(best.is_empty());
    }

    #[test]
    fn python_style_char_slices() {
        assert_eq!(char_slice("héllo wörld", 6, 11), "wörld");
        assert_eq!(char_slice("abc", 2, 1), "");
        assert_eq!(char_slice("abc", 0, 10), "abc");
    }
}
