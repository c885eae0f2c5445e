//! Building a job from its pipeline file: the tasks (through the task registry), the output
//! schema, and what sharding changes.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};

use crate::config::PipelineConfig;
use crate::connector::parquet::config::Shard;
use crate::error::{Error, Result};
use crate::model::{ModelDir, OnnxModel, OrtRuntime, ProviderInfo};
use crate::task::LoadedTask;

/// Load every configured task: model session and task post-processing. Optional tasks whose
/// model directory is missing are skipped; their names and reasons are returned.
pub fn load_tasks(
    cfg: &PipelineConfig,
    rt: &Arc<OrtRuntime>,
) -> Result<(Vec<LoadedTask>, Vec<String>)> {
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    for tc in cfg.tasks.all() {
        let kind = tc.kind();
        let optional = tc.optional();
        let resolved = match crate::model::hub::resolve_model(tc.model()) {
            Ok(p) => p,
            Err(e) if optional => {
                let msg = format!("{kind}: {e}; task skipped (it is marked optional)");
                tracing::warn!("{msg}");
                skipped.push(msg);
                continue;
            }
            Err(e) => return Err(e),
        };
        let model_dir = resolved.as_path();
        if optional && !model_dir.exists() {
            let msg = format!(
                "{kind}: model {} not found, task skipped (it is marked optional)",
                model_dir.display()
            );
            tracing::warn!("{msg}");
            skipped.push(msg);
            continue;
        }
        let dir = ModelDir::open(model_dir)?;
        let precision = tc.precision();
        let (graph, meta) = crate::model::precision::resolve(&dir.onnx, precision)?;
        if let Some(why) = crate::model::precision::CpuFeatures::detect()
            .unsuitable_on(precision, rt.config.execution_provider)
        {
            tracing::warn!(task = kind, "precision {precision}: {why}");
        }
        if let Some(m) = &meta {
            crate::model::precision::check_provider(m, &graph, rt.config.execution_provider)?;
        }
        let mut model = OnnxModel::load_as(rt, &graph, precision)?;
        crate::model::inspect::check_for_task(kind, &dir, &model)?;
        let task = crate::task::load(tc, &dir, &model)?;
        model
            .fetch_only(&task.model_outputs())
            .map_err(|e| Error::model(&graph, format!("{kind}: {e}")))?;
        if let Some(p) = meta.as_ref().and_then(|m| m.pooling.as_ref()) {
            task.accepts_graph_pooling(p)
                .map_err(|why| Error::model(&graph, format!("{kind}: {why}")))?;
        }
        let precision = match &meta {
            Some(m) => {
                if m.forced {
                    tracing::warn!(
                        task = kind,
                        graph = %graph.display(),
                        "the {precision} variant was kept with --force below its quality threshold: {}",
                        m.describe()
                    );
                }
                m.describe()
            }
            // A graph quantised by its maker runs as it is: say so rather than "fp32".
            None => match crate::model::precision::quantised_ops(&graph) {
                Some(q) => format!("{precision} (graph: {q})"),
                None => precision.to_string(),
            },
        };
        tracing::info!(
            task = kind,
            graph = %graph.display(),
            provider = %model.provider,
            precision = %precision,
            "model loaded"
        );
        tasks.push(LoadedTask {
            task,
            model,
            precision,
        });
    }
    if tasks.is_empty() {
        return Err(Error::config(format!(
            "no task left to run: {}",
            skipped.join("; ")
        )));
    }
    Ok((tasks, skipped))
}

/// Output schema: source fields (id, passthrough) then each task's fields; names must be unique.
pub fn output_schema(source: &[FieldRef], tasks: &[LoadedTask]) -> Result<SchemaRef> {
    let mut fields: Vec<FieldRef> = source.to_vec();
    for t in tasks {
        // A task's columns are null for a record it failed for while the others succeeded.
        fields.extend(
            t.task
                .fields()
                .into_iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
        );
    }
    let mut seen = HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            return Err(Error::config(format!(
                "output column '{}' would appear twice; rename the passthrough column or the task's `column`",
                f.name()
            )));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Give a shard its own output and error paths.
pub(crate) fn shard_outputs(cfg: &mut PipelineConfig, shard: Shard) {
    if let Some(p) = cfg.sink.parquet_mut() {
        let is_dir = p.rows_per_file.is_some();
        p.path = shard.path(&p.path, is_dir);
    }
    if let Some(e) = cfg.sink.errors.as_mut().and_then(|e| e.path.as_mut()) {
        *e = shard.path(e, false);
    }
}

pub(crate) fn describe_providers<'a>(it: impl Iterator<Item = &'a ProviderInfo>) -> String {
    let mut names: Vec<String> = it.map(|p| p.to_string()).collect();
    names.dedup();
    names.join(", ")
}

pub(crate) fn make_progress(enabled: bool, total: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    pb.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}
