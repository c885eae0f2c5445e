use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use clap::{Args, Parser, Subcommand, ValueEnum};

use bertflow::config::load::Override;
use bertflow::config::{parse_set_arg, PipelineConfig};
use bertflow::{run, RunOptions, Shutdown};

/// Enrich text at scale with BERT-family models: embeddings, sentiment, entities and answers,
/// from Parquet files or Kafka topics to Parquet files or Kafka topics.
#[derive(Parser, Debug)]
#[command(name = "bertflow", version, about, long_about = None, after_help = ORT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

const ORT_HELP: &str = "The ONNX Runtime library is searched in this order: --ort-lib, runtime.ort_lib, \
$ORT_DYLIB_PATH, next to the executable (and ../lib), ./runtime/onnxruntime/ (made by `make setup`), \
and the set-up folder of the source tree the binary was built from.\n\
Configuration keys can be overridden by --set key.path=value and by environment variables \
BERTFLOW__KEY__PATH=value (double underscores between levels).";

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `run` and `bench` share: the pipeline and what overrides it.
#[derive(Args, Debug)]
struct PipelineArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Input path (overrides source.parquet.path): a file, a glob or a directory.
    #[arg(long)]
    input: Option<String>,
    /// Output path (overrides sink.parquet.path).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Override any configuration key, e.g. --set batching.max_batch_size=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set_arg)]
    sets: Vec<(String, String)>,
    /// Path of libonnxruntime.so.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Batch jobs: read only shard i of N of the input files (e.g. 2/8, or
    /// "$JOB_COMPLETION_INDEX/8" in a Kubernetes Indexed Job); outputs get the shard in their name.
    #[arg(long, value_name = "I/N", env = "BERTFLOW_SHARD")]
    shard: Option<String>,
}

impl PipelineArgs {
    /// Load the pipeline with `--input` / `--output` applied as the last overrides.
    fn load(self) -> anyhow::Result<(PathBuf, PipelineConfig, Option<PathBuf>)> {
        // `--output` takes the error output with it (beside the new output), unless the error
        // path is given on the command line (or in the environment) too.
        let errors_given = self.sets.iter().any(|(k, _)| k == "sink.errors.path")
            || std::env::var_os("BERTFLOW__SINK__ERRORS__PATH").is_some();
        let move_errors = self.output.is_some() && !errors_given;
        let mut overrides: Vec<Override> =
            self.sets.iter().map(|(k, v)| Override::set(k, v)).collect();
        if let Some(i) = self.input {
            overrides.push(Override::flag(
                "--input",
                "source.parquet.path",
                &yaml_string(&i),
            ));
        }
        if let Some(o) = self.output {
            overrides.push(Override::flag(
                "--output",
                "sink.parquet.path",
                &yaml_string(&o.to_string_lossy()),
            ));
        }
        if let Some(s) = self.shard {
            overrides.push(Override::flag(
                "--shard",
                "source.parquet.shard",
                &yaml_string(&s),
            ));
        }
        let mut cfg = PipelineConfig::load_with(&self.pipeline, &overrides)?;
        if move_errors {
            if let Some(e) = &mut cfg.sink.errors {
                if e.path.is_some() {
                    e.path = None;
                }
                if e.topic.is_none() {
                    cfg.sink.errors = None;
                }
            }
        }
        Ok((self.pipeline, cfg, self.ort_lib))
    }
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Download a model from the Hugging Face Hub (honours HF_ENDPOINT, HF_HOME, HF_TOKEN) and
    /// assemble a model directory; prints its path. Pipelines may also name `hf:...` directly.
    Pull {
        /// hf:<org>/<repo>[@revision]
        reference: String,
        /// ONNX file inside the repository (default: model.onnx, else onnx/model.onnx).
        #[arg(long)]
        onnx_file: Option<String>,
    },
    /// Export a transformers / sentence-transformers model (safetensors or pytorch_model.bin
    /// weights) to an ONNX model folder that `run` uses as it is. The graph follows the folder:
    /// a sentence-transformers layout gives the bare encoder, a SparseEncoder layout or a
    /// ...ForMaskedLM model the MLM logits, ...ForSequenceClassification /
    /// ...ForTokenClassification / ...ForQuestionAnswering their heads. The export is checked
    /// against the framework on sample texts and refused when it differs. Needs Python with
    /// torch, transformers, onnx and onnxruntime (`make refenv` makes one).
    Export {
        /// A model folder (config.json, weights, tokenizer files) or hf:<org>/<repo>[@revision].
        src: String,
        /// The new model folder.
        out: PathBuf,
        /// Export the head this task needs (embed, sparse, sentiment, ner, qa, zero_shot,
        /// cross_encoder) instead of the folder's own.
        #[arg(long)]
        task: Option<String>,
        /// Python interpreter with torch, transformers, onnx and onnxruntime (default:
        /// $BERTFLOW_EXPORT_PYTHON, the environment `make refenv` makes, python3).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Each dimension's range (minimum, maximum) of a model's embeddings over calibration texts,
    /// as JSON for `tasks.embed.output: int8 / uint8` (`tasks.embed.output_ranges`).
    Ranges {
        /// A model directory of an embedding model.
        model: PathBuf,
        /// Calibration texts: JSON lines {"text": ...} or one text per line (default: the
        /// bundled sample). Take texts like the ones the pipeline will embed.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// The `tasks.embed.dimensions` the pipeline writes.
        #[arg(long)]
        dimensions: Option<usize>,
        /// The pipeline's `tasks.embed.normalize_dimensions`.
        #[arg(long)]
        normalize_dimensions: bool,
        /// Write the ranges here (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH or the usual places).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Print a model's inputs and outputs, labels, maximum length, tokenizer and the tasks it
    /// can serve, with any problem found.
    Inspect {
        /// A model directory or an hf: reference.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Path of libonnxruntime.so.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Make a precision variant of a model (fused fp32, int8, fp16, bf16) with ONNX Runtime's
    /// transformer optimizer and quantizer, measure it against the fp32 model on calibration
    /// texts, and store it beside the model (model.<precision>.onnx + .json) only if it passes
    /// the quality guard. Needs a Python with onnxruntime==1.31.1, onnx and sympy (`make setup`
    /// makes one; --python or BERTFLOW_PYTHON names it).
    Optimize {
        /// A model directory (model.onnx, tokenizer.json, config.json).
        model: PathBuf,
        /// fp32 (fused graph), int8, fp16 or bf16.
        #[arg(long, value_parser = parse_precision)]
        precision: bertflow::model::Precision,
        /// Judge only these tasks (default: every task the model serves; of the pair tasks only the
        /// one its config.json declares: zero_shot for an NLI head, cross_encoder for a cross-encoder).
        #[arg(long = "task")]
        tasks: Vec<String>,
        /// Calibration texts: JSON lines {"text": ..., "question": ...} or one text per line
        /// (default: the bundled sample).
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Lowest cosine to fp32 allowed for an embedding (default: 0.99 for int8/bf16, 0.999
        /// for fp16, 0.9999 for fp32).
        #[arg(long)]
        min_cosine: Option<f64>,
        /// Lowest label agreement / entity F1 / answer exact match allowed (default: 0.99 for
        /// int8/bf16, 0.995 for fp16, 1.0 for fp32).
        #[arg(long)]
        min_agreement: Option<f64>,
        /// Keep the variant even when a figure is below its threshold (recorded as forced).
        #[arg(long)]
        force: bool,
        /// Unsigned 8-bit weights for int8 (signed by default).
        #[arg(long)]
        u8_weights: bool,
        /// int8: leave these matrix products of every layer in fp32 (ffn_output,
        /// attention_output; `none` for all in int8). Default: all in int8 first, then ffn_output,
        /// then both, keeping the first variant that passes the guard.
        #[arg(long, value_delimiter = ',')]
        keep_fp32: Option<Vec<String>>,
        /// End the graph in the model's pooling: for embedding models sentence-transformers'
        /// pooling (and normalisation), so a batch returns [batch, dim] instead of every token's
        /// vector (much less to copy back from a GPU); for masked-language (SPLADE) models the
        /// sparse task's activation and pooling, so a batch returns [batch, vocabulary] instead
        /// of every token's logits. Only the task with the same pooling can use the variant.
        #[arg(long)]
        pool: bool,
        /// Python interpreter with onnxruntime and onnx (default: $BERTFLOW_PYTHON, python3).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Where the guard runs the fp32 model and the variant: cpu, cuda (judge an fp16
        /// variant on the GPU it is meant for; needs the onnxruntime-gpu library), or openvino
        /// (a bf16 variant for OpenVINO's CPU plugin: the exported graph, run at bf16; needs the
        /// onnxruntime-openvino library).
        #[arg(long, default_value = "cpu", value_parser = parse_provider)]
        execution_provider: bertflow::model::config::ExecutionProvider,
        /// Path of libonnxruntime.so.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
}

fn parse_provider(s: &str) -> Result<bertflow::model::config::ExecutionProvider, String> {
    match s {
        "cpu" => Ok(bertflow::model::config::ExecutionProvider::Cpu),
        "cuda" => Ok(bertflow::model::config::ExecutionProvider::Cuda),
        "openvino" => Ok(bertflow::model::config::ExecutionProvider::Openvino),
        _ => Err(format!(
            "'{s}' is not an execution provider (cpu, cuda, openvino)"
        )),
    }
}

fn parse_precision(s: &str) -> Result<bertflow::model::Precision, String> {
    bertflow::model::Precision::parse(s)
        .ok_or_else(|| format!("'{s}' is not a precision (fp32, int8, fp16, bf16)"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline: a batch job until its input ends, a streaming job until SIGTERM/SIGINT.
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Do not draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run a pipeline, then the same model batches through bare ONNX Runtime sessions, and
    /// report throughput, stage times, padding, peak memory and the ratio to raw ONNX Runtime.
    Bench {
        #[command(flatten)]
        args: PipelineArgs,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Get and examine models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Check a pipeline file (keys, types, values) without running it.
    Validate {
        pipeline: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set_arg)]
        sets: Vec<(String, String)>,
        /// Also read every record of the (Parquet) source, without models: reports records,
        /// unusable records, read throughput and peak memory. Exits non-zero when a record is
        /// unusable.
        #[arg(long)]
        scan: bool,
        /// Shard `i/N` of the input to scan (as `run --shard`).
        #[arg(long, env = "BERTFLOW_SHARD")]
        shard: Option<String>,
    },
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,bertflow=info,ort=warn"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    init_logging(format);
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let retryable = e.chain().any(|c| {
                c.downcast_ref::<bertflow::Error>()
                    .is_some_and(|b| b.retryable())
            });
            let message = error_message(&e);
            match format {
                LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({
                        "level": "ERROR",
                        "fields": {"message": message, "retryable": retryable},
                    })
                ),
                LogFormat::Text => {
                    eprintln!("error: {message}");
                    if retryable {
                        eprintln!("(a system was unreachable: running again later can help)");
                    }
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a cause whose text the message already holds is
/// left out.
fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { args, no_progress } => {
            let (pipeline, cfg, ort_lib) = args.load()?;
            let opts = RunOptions {
                ort_lib,
                progress: !no_progress,
                record_batches: false,
                shutdown: Some(shutdown_on_signals()?),
            };
            let summary = run(&cfg, &opts)
                .with_context(|| format!("pipeline {} failed", pipeline.display()))?;
            print!("{summary}");
            if summary.interrupted {
                anyhow::bail!(
                    "pipeline {} interrupted by a signal before the end of its input: its output was discarded; run it again",
                    pipeline.display()
                );
            }
            Ok(())
        }
        Command::Bench { args, json } => {
            let (pipeline, cfg, ort_lib) = args.load()?;
            let opts = RunOptions {
                ort_lib,
                progress: false,
                record_batches: true,
                shutdown: None,
            };
            let (summary, report) = bertflow::bench::bench(&cfg, &opts)
                .with_context(|| format!("benchmark of {} failed", pipeline.display()))?;
            print!("{summary}");
            println!(
                "  raw ORT       {:.2}s on the same {} batches: bertflow reaches {:.2}x of raw ONNX Runtime ({:.2}x after its {:.2}s start-up)",
                report.raw_ort_seconds,
                report.batches,
                report.ratio_to_raw_ort,
                report.ratio_to_raw_ort_after_startup,
                report.startup_seconds
            );
            println!(
                "  tokens/s      {:.0}; peak RSS {:.0} MiB",
                report.tokens_per_second, report.peak_rss_mib
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Command::Models { command } => match command {
            ModelsCommand::Pull {
                reference,
                onnx_file,
            } => {
                let r = bertflow::model::hub::HubRef::parse(&reference).ok_or_else(|| {
                    anyhow::anyhow!("'{reference}' is not an hf:<org>/<repo>[@revision] reference")
                })??;
                let dir = bertflow::model::hub::pull(&r, onnx_file.as_deref())?;
                println!("{}", dir.display());
                Ok(())
            }
            ModelsCommand::Export {
                src,
                out,
                task,
                python,
            } => {
                let src = match bertflow::model::hub::HubRef::parse(&src) {
                    Some(r) => bertflow::model::hub::pull_source(&r?)?,
                    None => PathBuf::from(&src),
                };
                let report = bertflow::export::export(
                    &src,
                    &out,
                    &bertflow::export::ExportOptions { task, python },
                )?;
                println!("{report}");
                Ok(())
            }
            ModelsCommand::Inspect {
                model,
                json,
                ort_lib,
            } => {
                let dir = bertflow::model::hub::resolve_model(&model)?;
                let rt = bertflow::model::OrtRuntime::init(
                    ort_lib.as_deref(),
                    &bertflow::model::config::RuntimeConfig::default(),
                )?;
                let report = bertflow::model::inspect::inspect(&rt, &dir)?;
                if json {
                    write_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))
                } else {
                    write_stdout(&report.to_string())
                }
            }
            ModelsCommand::Ranges {
                model,
                calibration,
                dimensions,
                normalize_dimensions,
                output,
                ort_lib,
            } => {
                let rt = bertflow::model::OrtRuntime::init(
                    ort_lib.as_deref(),
                    &bertflow::model::config::RuntimeConfig::default(),
                )?;
                let dir = bertflow::model::hub::resolve_model(&model)?;
                let (ranges, n) = bertflow::optimize::ranges::embedding_ranges(
                    &rt,
                    &dir,
                    calibration.as_deref(),
                    dimensions,
                    normalize_dimensions,
                )?;
                let json = format!("{}\n", serde_json::to_string(&ranges)?);
                match output {
                    Some(p) => {
                        std::fs::write(&p, json)
                            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
                        eprintln!(
                            "wrote {}: {} dimensions from {n} texts",
                            p.display(),
                            ranges.min.len()
                        );
                    }
                    None => write_stdout(&json)?,
                }
                Ok(())
            }
            ModelsCommand::Optimize {
                model,
                precision,
                tasks,
                calibration,
                min_cosine,
                min_agreement,
                force,
                u8_weights,
                keep_fp32,
                pool,
                python,
                execution_provider,
                ort_lib,
            } => {
                let rt = bertflow::model::OrtRuntime::init(
                    ort_lib.as_deref(),
                    &bertflow::model::config::RuntimeConfig {
                        execution_provider,
                        ..Default::default()
                    },
                )?;
                let opts = bertflow::optimize::OptimizeOptions {
                    dir: bertflow::model::hub::resolve_model(&model)?,
                    precision,
                    tasks,
                    calibration,
                    min_cosine,
                    min_agreement,
                    force,
                    python,
                    u8_weights,
                    keep_fp32: keep_fp32.map(|k| k.into_iter().filter(|s| s != "none").collect()),
                    pool,
                };
                let report = bertflow::optimize::optimize(&rt, &opts)?;
                println!("{report}");
                Ok(())
            }
        },
        Command::Validate {
            pipeline,
            sets,
            scan,
            shard,
        } => {
            let mut overrides: Vec<Override> =
                sets.iter().map(|(k, v)| Override::set(k, v)).collect();
            if let Some(s) = shard {
                overrides.push(Override::flag(
                    "--shard",
                    "source.parquet.shard",
                    &yaml_string(&s),
                ));
            }
            let cfg = PipelineConfig::load_with(&pipeline, &overrides)?;
            // The same start-up checks as `run` makes before it opens anything.
            for note in bertflow::pipeline::preflight(&cfg)? {
                println!("  note: {note}");
            }
            if !scan {
                println!("{}: ok", pipeline.display());
                return Ok(());
            }
            let r = bertflow::pipeline::scan(&cfg)?;
            println!("{}: ok", pipeline.display());
            println!(
                "scanned {}: {} records, {} unusable, {:.1} s ({:.0} records/s), peak memory {:.0} MiB",
                r.inputs, r.records, r.bad_records, r.seconds, r.records_per_second, r.peak_rss_mib
            );
            for e in &r.examples {
                println!("  {e}");
            }
            if r.bad_records > 0 {
                anyhow::bail!(
                    "{} records cannot be used (a run sends them to the error output)",
                    r.bad_records
                );
            }
            Ok(())
        }
    }
}

/// A token triggered by the first SIGTERM or SIGINT: a streaming job then stops fetching,
/// abandons the work in flight (read again later: its offsets are not committed), flushes and
/// commits what is durable and leaves its group; a batch job abandons its work in flight and
/// discards its unfinished output (no partial file under a final name), prints its summary and
/// exits non-zero. A second signal exits at once.
fn shutdown_on_signals() -> anyhow::Result<Shutdown> {
    let token = Shutdown::new();
    token.on_signals()?;
    Ok(token)
}

/// Write to standard output; a reader that went away (`| head`) ends the output quietly.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Quote a path so that `--set` value parsing keeps it a string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| s.to_string())
}
