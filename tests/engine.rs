//! The engine a host program (the Python package) drives: models loaded once, several runs over
//! Arrow batches through the Python connector, results and error rows as the command line's.

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use bertflow::connector::python::{BatchOutput, ErrorMode};
use bertflow::pipeline::{Engine, HostOptions};
use bertflow::{PipelineConfig, Shutdown};

fn engine() -> Engine {
    let model = common::root().join("tests/fixtures/tasks/bert-sentiment");
    let yaml = format!(
        "source: {{python: {{text_column: body, id_column: key}}}}\ntasks: {{sentiment: {{model: '{}'}}}}\nsink: {{python: {{}}}}\n",
        model.display()
    );
    let cfg = PipelineConfig::from_yaml_str(&yaml, &[], &[]).unwrap();
    Engine::load(&cfg, None).unwrap()
}

fn input() -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "key",
            Arc::new(Int64Array::from(vec![10, 11, 12, 13])) as ArrayRef,
        ),
        (
            "body",
            Arc::new(StringArray::from(vec![
                Some("good"),
                None,
                Some(""),
                Some("bad"),
            ])) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn run(e: &mut Engine, opts: &HostOptions, batches: Vec<RecordBatch>) -> Vec<BatchOutput> {
    let schema = batches[0].schema();
    let (in_tx, in_rx) = crossbeam_channel::unbounded();
    let (out_tx, out_rx) = crossbeam_channel::unbounded();
    for b in batches {
        in_tx.send(b).unwrap();
    }
    drop(in_tx);
    let summary = e
        .run(&schema, opts, in_rx, out_tx, &Shutdown::new())
        .unwrap();
    assert_eq!(summary.records, 8);
    out_rx.try_iter().collect()
}

#[test]
fn one_engine_serves_several_runs_with_the_command_lines_rows() {
    let mut e = engine();
    let b = input();
    // Results and error rows apart, as the command line writes them.
    let opts = HostOptions::default();
    let want = e.schemas(&b.schema(), &opts).unwrap();
    let out = run(&mut e, &opts, vec![b.clone(), b.clone()]);
    let results: Vec<i64> = out
        .iter()
        .flat_map(|o| {
            o.results
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(results, [10, 12, 13, 10, 12, 13]);
    assert!(out.iter().all(|o| o.results.schema() == want.results));
    let errors: Vec<String> = out
        .iter()
        .flat_map(|o| {
            let r = o.errors.column(1).as_string::<i32>();
            (0..r.len())
                .map(|i| r.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(errors, ["text column 'body' is null"; 2]);
    assert_eq!(out[0].errors.schema(), want.errors);

    // The same engine again: every record with its errors, in portable types.
    let opts = HostOptions {
        errors: ErrorMode::Column,
        portable: true,
        label: "partition 7".into(),
        ..HostOptions::default()
    };
    let want = e.schemas(&b.schema(), &opts).unwrap();
    let out = run(&mut e, &opts, vec![b.clone(), b]);
    let rows: usize = out.iter().map(|o| o.results.num_rows()).sum();
    assert_eq!(rows, 8);
    let first = &out[0].results;
    assert_eq!(first.schema(), want.results);
    assert_eq!(first.schema().field(0).data_type(), &DataType::Int64);
    let errs = first.column_by_name("errors").unwrap().as_list::<i32>();
    assert_eq!(errs.value(1).len(), 1);
    assert!(first.column_by_name("sentiment_label").unwrap().is_null(1));
    let source = errs.value(1);
    let source = source.as_struct().column_by_name("source").unwrap();
    assert_eq!(source.as_string::<i32>().value(0), "partition 7 row 1");
}

#[test]
fn a_missing_column_is_named_before_any_work() {
    let e = engine();
    let opts = HostOptions {
        text_column: Some("text".into()),
        ..HostOptions::default()
    };
    let err = e.schemas(&input().schema(), &opts).unwrap_err().to_string();
    assert!(
        err.contains("no text column 'text'") && err.contains("key, body"),
        "{err}"
    );
}
