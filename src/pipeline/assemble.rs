//! Output assembly: a chunk's per-task results become the result rows (an Arrow batch in input
//! order) and typed error rows.
//!
//! A record fails as a whole when its source could not read it, or when every task failed for
//! it. When only some tasks failed, the record is written with those tasks' columns null and
//! one error row per failed task (`written: true`), unless `sink.partial_results: false`, which
//! sends the whole record to the error output.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use super::flow::{FeatureResult, Inferred};
use crate::connector::{ChunkOutput, ErrorRow};
use crate::error::{Error, Result};
use crate::record::Stage;
use crate::task::{Task, TaskOutput};
use crate::telemetry::{Event, RecordsFailed};

/// One task's failure for one record.
struct TaskFailure {
    stage: Stage,
    task: &'static str,
    reason: String,
}

/// Split a chunk's records into results (in input order) and error rows.
pub(crate) fn assemble(
    inf: Inferred,
    tasks: &[Arc<dyn Task>],
    schema: &SchemaRef,
    partial: bool,
) -> Result<ChunkOutput> {
    let Inferred {
        chunk,
        per_task,
        early_errors,
        ..
    } = inf;
    let n = chunk.len();
    // Records the source already failed.
    let mut source_failed: Vec<Option<String>> = vec![None; n];
    for e in &chunk.errors {
        match &mut source_failed[e.row] {
            Some(r) => {
                r.push_str("; ");
                r.push_str(&e.reason);
            }
            slot => *slot = Some(e.reason.clone()),
        }
    }
    // Per record, the tasks that failed for it, in task order.
    let mut task_failed: Vec<Vec<TaskFailure>> = (0..n).map(|_| Vec::new()).collect();
    let mut failed_early = vec![vec![false; n]; tasks.len()];
    for (ti, (task, errs)) in tasks.iter().zip(&early_errors).enumerate() {
        for e in errs {
            failed_early[ti][e.row] = true;
            task_failed[e.row].push(TaskFailure {
                stage: e.stage,
                task: task.name(),
                reason: e.reason.clone(),
            });
        }
    }
    for (ti, (task, rows)) in tasks.iter().zip(&per_task).enumerate() {
        for (row, r) in rows.iter().enumerate() {
            match r {
                Some(Err(reason)) => task_failed[row].push(TaskFailure {
                    stage: Stage::Model,
                    task: task.name(),
                    reason: reason.clone(),
                }),
                None if chunk.texts[row].is_some() && !failed_early[ti][row] => task_failed[row]
                    .push(TaskFailure {
                        stage: Stage::Task,
                        task: task.name(),
                        reason: "internal: no result".to_string(),
                    }),
                _ => {}
            }
        }
    }

    let mut errors: Vec<ErrorRow> = Vec::new();
    let mut ok: Vec<u32> = Vec::new();
    for row in 0..n {
        let source = || chunk.origin.describe(row);
        if let Some(reason) = source_failed[row].take() {
            errors.push(ErrorRow {
                row: row as u32,
                reason,
                stage: Stage::Source,
                task: None,
                source: source(),
                written: false,
            });
            continue;
        }
        let fails = std::mem::take(&mut task_failed[row]);
        if fails.is_empty() {
            ok.push(row as u32);
        } else if partial && fails.len() < tasks.len() {
            ok.push(row as u32);
            for f in fails {
                errors.push(ErrorRow {
                    row: row as u32,
                    reason: f.reason,
                    stage: f.stage,
                    task: Some(f.task),
                    source: source(),
                    written: true,
                });
            }
        } else {
            // The whole record fails: one row naming the first failure, with every reason.
            let mut it = fails.into_iter();
            let first = it.next().expect("not empty");
            let mut reason = first.reason;
            for f in it {
                reason.push_str("; ");
                reason.push_str(f.task);
                reason.push_str(": ");
                reason.push_str(&f.reason);
            }
            errors.push(ErrorRow {
                row: row as u32,
                reason,
                stage: first.stage,
                task: Some(first.task),
                source: source(),
                written: false,
            });
        }
    }

    let take = |a: &ArrayRef, rows: &UInt32Array| -> Result<ArrayRef> {
        arrow::compute::take(a.as_ref(), rows, None)
            .map_err(|e| Error::sink("output", e.to_string()))
    };
    let ok_idx = UInt32Array::from(ok.clone());
    let mut columns = vec![take(&chunk.ids, &ok_idx)?];
    for p in &chunk.passthrough {
        columns.push(take(p, &ok_idx)?);
    }
    for (task, rows) in tasks.iter().zip(per_task) {
        let mut rows: Vec<Option<FeatureResult>> = rows;
        // The written records that have this task's result; the others get nulls.
        let mut present: Vec<TaskOutput> = Vec::with_capacity(ok.len());
        let mut index: Vec<Option<u32>> = Vec::with_capacity(ok.len());
        for &i in &ok {
            match rows[i as usize].take() {
                Some(Ok(v)) => {
                    index.push(Some(present.len() as u32));
                    present.push(v);
                }
                _ => index.push(None),
            }
        }
        let cols = task.columns(present)?;
        if index.iter().all(Option::is_some) {
            columns.extend(cols);
        } else {
            let idx = UInt32Array::from(index);
            for c in cols {
                columns.push(take(&c, &idx)?);
            }
        }
    }
    let results = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::sink("output", format!("cannot build output batch: {e}")))?;
    let err_idx = UInt32Array::from_iter_values(errors.iter().map(|r| r.row));
    let error_ids = take(&chunk.ids, &err_idx)?;
    Ok(ChunkOutput {
        seq: chunk.seq,
        results,
        result_rows: ok,
        errors,
        error_ids,
        origin: chunk.origin,
    })
}

/// Count error rows by stage and task.
pub(crate) fn emit_failures(errors: &[ErrorRow]) {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in errors {
        *counts
            .entry((e.stage.as_str(), e.task.unwrap_or("none")))
            .or_default() += 1;
    }
    for ((stage, task), count) in counts {
        RecordsFailed { stage, task, count }.emit();
    }
}
