//! Errors that end a run (per-item failures are `Failed` items instead).

/// A fatal error of a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("stage `{stage}` panicked: {message}")]
    Panicked { stage: String, message: String },
    #[error("source `{stage}` failed: {error}")]
    Source { stage: String, error: String },
    #[error("sink `{stage}` failed: {error}")]
    Sink { stage: String, error: String },
    #[error("stage `{stage}`: its output was dropped before the run ended")]
    Disconnected { stage: String },
}
