//! Only the outputs a task reads are fetched from the model: a graph that also computes other
//! outputs (sentence-transformers' ONNX exports return token embeddings beside the pooled ones)
//! does not copy them back, with and without I/O binding, and the results do not change.

mod common;

use std::sync::Arc;

use arrow::array::StringArray;
use bertflow::batch::PaddedBatch;
use bertflow::config::PipelineConfig;
use bertflow::model::config::{RuntimeConfig, Switch};
use bertflow::model::tokenizer::TokenCache;
use bertflow::model::OrtRuntime;
use bertflow::pipeline::load_tasks;
use bertflow::record::{Chunk, Origin};
use common::*;

#[test]
fn outputs_the_task_does_not_read_are_not_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let m = copy_model(&model("all-MiniLM-L6-v2"), dir.path());
    // The same graph with a second output, a copy of the token embeddings.
    let script = r#"
import sys, onnx
from onnx import helper
m = onnx.load(sys.argv[1])
src = next(o for o in m.graph.output if o.name == "last_hidden_state")
m.graph.node.append(helper.make_node("Identity", ["last_hidden_state"], ["unread_copy"]))
extra = onnx.ValueInfoProto()
extra.CopyFrom(src)
extra.name = "unread_copy"
m.graph.output.append(extra)
onnx.save(m, sys.argv[1])
"#;
    let o = std::process::Command::new(tools_python())
        .args(["-c", script])
        .arg(m.join("model.onnx"))
        .output()
        .unwrap();
    assert_ok(&o);

    let rt = OrtRuntime::init(None, &RuntimeConfig::default()).expect("ONNX Runtime");
    let yaml = format!(
        "source: {{parquet: {{path: x.parquet}}}}\nsink: {{parquet: {{path: y.parquet}}}}\ntasks:\n  embed: {{model: {}}}\n",
        m.display()
    );
    let cfg = PipelineConfig::from_yaml_str(&yaml, &[], &[]).unwrap();
    let texts = [
        "A short one.",
        "A somewhat longer sentence about the weather in Lisbon.",
    ];
    let chunk = Chunk {
        seq: 0,
        origin: Origin::File {
            path: Arc::from("t"),
            first_row: 0,
        },
        ids: Arc::new(StringArray::from(vec!["0", "1"])),
        texts: texts.iter().map(|t| Some(Arc::from(*t))).collect(),
        columns: Vec::new(),
        passthrough: Vec::new(),
        errors: Vec::new(),
    };
    for binding in [Switch::Off, Switch::On] {
        let rt = Arc::new(OrtRuntime {
            library: rt.library.clone(),
            environment: rt.environment.clone(),
            config: RuntimeConfig {
                io_binding: binding,
                ..RuntimeConfig::default()
            },
        });
        let (mut tasks, _) = load_tasks(&cfg, &rt).expect("tasks");
        let t = &mut tasks[0];
        assert_eq!(t.model.output_names, ["last_hidden_state", "unread_copy"]);
        let feats = t.task.featurize(&chunk, &TokenCache::default());
        let padded = PaddedBatch::new(feats.features.iter().map(|f| &f.encoding), t.task.pad_id());
        let read = t
            .model
            .run(&padded, |out| {
                assert!(out.f32("unread_copy").is_err(), "{binding:?}: fetched");
                out.f32("last_hidden_state").map(|(shape, _)| shape)
            })
            .unwrap();
        assert_eq!(read, [2, padded.seq_len, 384], "{binding:?}");
        // The copy taken for overlapped post-processing holds only what is read, too.
        let owned = t.model.run_owned(&padded).unwrap();
        assert!(owned.view().f32("unread_copy").is_err());
        assert!(owned.view().f32("last_hidden_state").is_ok());
    }

    // The pipeline's embeddings equal the unmodified model's.
    let input = dir.path().join("in.parquet");
    write_parquet(
        &input,
        vec![
            ("id", Arc::new(StringArray::from(vec!["0", "1"])) as _),
            ("text", Arc::new(StringArray::from(texts.to_vec())) as _),
        ],
    );
    let mut got = Vec::new();
    for model_dir in [m.clone(), model("all-MiniLM-L6-v2")] {
        let out = dir.path().join("out.parquet");
        let p = embed_pipeline(dir.path(), &input, &out, "");
        let o = run_pipeline(
            &p,
            &[
                "--set",
                &format!("tasks.embed.model={}", model_dir.display()),
            ],
        );
        assert_ok(&o);
        got.push(embeddings(&read_parquet(&out), "embedding"));
    }
    assert_eq!(got[0], got[1]);
}
