//! The run report: what a run read, wrote and failed, where its time went and where its output
//! is; printed at the end of every run.

use std::time::Duration;

use crate::batch::PaddedBatch;
use crate::connector::SinkReport;

/// What a run did, printed at its end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub source: String,
    pub tasks: Vec<String>,
    /// Each task's model precision (and a variant's measured quality), in task order.
    pub precision: Vec<String>,
    /// Optional tasks skipped because their model is missing, with why.
    pub skipped: Vec<String>,
    pub provider: String,
    /// The model batch limits the run used.
    pub batch_limits: Option<crate::batch::BatchLimits>,
    pub records: u64,
    pub written: u64,
    pub errors: u64,
    /// Tasks that failed for records still written (their columns null).
    pub task_errors: u64,
    pub truncated: u64,
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub elapsed: Duration,
    /// Of `elapsed`, the time before the first record was read (library, models, source, sink).
    pub startup: Duration,
    pub tokenize_time: Duration,
    pub model_time: Duration,
    pub postprocess_time: Duration,
    pub write_time: Duration,
    pub output: SinkReport,
    /// Per task, every batch run (only with `RunOptions::record_batches`).
    pub recorded: Vec<Vec<PaddedBatch>>,
    /// A batch job stopped by a signal before the end of its input; its output was discarded.
    pub interrupted: bool,
    /// Sequence number of the last chunk written.
    pub last_seq: Option<u64>,
}

impl Summary {
    pub fn records_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.records as f64 / s
        } else {
            0.0
        }
    }

    /// Fraction of model tokens that were padding.
    pub fn padding_ratio(&self) -> f64 {
        if self.padded_tokens == 0 {
            0.0
        } else {
            1.0 - self.real_tokens as f64 / self.padded_tokens as f64
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
        writeln!(f, "bertflow summary")?;
        writeln!(f, "  source        {}", self.source)?;
        writeln!(
            f,
            "  tasks         {} on {}",
            self.tasks.join(", "),
            self.provider
        )?;
        if !self.precision.is_empty() {
            let each: Vec<String> = self
                .tasks
                .iter()
                .zip(&self.precision)
                .map(|(t, p)| format!("{t} {p}"))
                .collect();
            writeln!(f, "  precision     {}", each.join(", "))?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped       {s}")?;
        }
        if self.interrupted {
            writeln!(
                f,
                "  interrupted   by a signal before the end of the input: output discarded"
            )?;
        }
        writeln!(f, "  records       {}", self.records)?;
        writeln!(f, "  written       {}", self.written)?;
        writeln!(f, "  errors        {}", self.errors)?;
        if self.task_errors > 0 {
            writeln!(
                f,
                "  task errors   {} (records written with those tasks' columns null)",
                self.task_errors
            )?;
        }
        writeln!(f, "  truncated     {}", self.truncated)?;
        if let Some(l) = &self.batch_limits {
            writeln!(f, "  batches       {l}")?;
        }
        writeln!(
            f,
            "  throughput    {:.1} records/s ({} in {} batches, padding {:.1}%)",
            self.records_per_second(),
            secs(self.elapsed),
            self.batches,
            self.padding_ratio() * 100.0
        )?;
        writeln!(
            f,
            "  time          start-up {}, tokenize {}, model {}, post-process {}, write {}",
            secs(self.startup),
            secs(self.tokenize_time),
            secs(self.model_time),
            secs(self.postprocess_time),
            secs(self.write_time)
        )?;
        for p in &self.output.files {
            writeln!(f, "  output        {}", p.display())?;
        }
        for d in &self.output.destinations {
            writeln!(f, "  output        {d}")?;
        }
        if let Some(p) = &self.output.error_file {
            writeln!(
                f,
                "  error output  {} ({} rows)",
                p.display(),
                self.output.error_rows
            )?;
        }
        Ok(())
    }
}
