//! The envelope every item travels in: stream id, sequence number, and either
//! a payload or a [`Failed`] record.

use std::fmt;

/// Identifies one input (a file, a microphone session, a dataset row) across
/// the graph. Sources number their streams; `0, 1, 2, ...` in input order is
/// what the keep-order sink expects.
pub type StreamId = u64;

/// Any error a stage, source or sink may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed item: which stream, which stage, and the error text (with its
/// causes). It flows downstream in place of the payload so the sink can
/// report it; the run carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub stream: StreamId,
    pub stage: String,
    pub error: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.error)
    }
}

impl std::error::Error for Failed {}

impl Failed {
    /// A failure of `stream` in `stage`, with the full cause chain of `err`.
    pub fn new(stream: StreamId, stage: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        Failed {
            stream,
            stage: stage.to_string(),
            error: error_chain(err),
        }
    }
}

/// `err: cause: cause...` on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// One item of a stream: `seq` counts from 0 within the stream, with no gaps.
#[derive(Debug, Clone)]
pub struct Item<T> {
    pub stream: StreamId,
    pub seq: u64,
    pub data: Result<T, Failed>,
}

impl<T> Item<T> {
    /// The payload, if this item did not fail.
    pub fn ok(&self) -> Option<&T> {
        self.data.as_ref().ok()
    }
}

/// What travels on every channel: items, and one `End` per stream after its
/// last item (`seq` = the number of items the stream had).
#[derive(Debug, Clone)]
pub enum Msg<T> {
    Item(Item<T>),
    End { stream: StreamId, seq: u64 },
}

impl<T> Msg<T> {
    /// The stream this message belongs to.
    pub fn stream(&self) -> StreamId {
        match self {
            Msg::Item(i) => i.stream,
            Msg::End { stream, .. } => *stream,
        }
    }
    /// Position in the stream (the end marker comes after the last item).
    pub fn seq(&self) -> u64 {
        match self {
            Msg::Item(i) => i.seq,
            Msg::End { seq, .. } => *seq,
        }
    }
}

/// Generic payloads shared by commands. Model-specific payloads (tensors)
/// live in their own crates and travel as `Item<T>` like any other.
pub mod payload {
    use std::sync::Arc;

    /// Mono f32 samples in [-1, 1], one chunk of a stream.
    #[derive(Debug, Clone)]
    pub struct AudioChunk {
        pub sample_rate: u32,
        pub samples: Arc<[f32]>,
        /// Start time of the chunk within its stream, in seconds.
        pub start_s: f64,
        /// True on the last chunk of the stream.
        pub last: bool,
    }

    /// What a token id sequence means.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum TokenKind {
        Text { tokenizer: String },
        Audio { codec: String, codebooks: usize },
    }

    /// Token ids; audio ids are row-major [codebooks × frames].
    #[derive(Debug, Clone)]
    pub struct Tokens {
        pub kind: TokenKind,
        pub ids: Vec<u32>,
        /// Optional start time (seconds) per frame / token.
        pub times: Option<Vec<f32>>,
    }

    /// One transcribed segment.
    #[derive(Debug, Clone)]
    pub struct Segment {
        pub start_s: f64,
        pub end_s: f64,
        pub text: String,
        pub tokens: Vec<u32>,
        pub avg_logprob: f32,
    }

    /// Transcript of (part of) a stream; `partial` for live updates.
    #[derive(Debug, Clone)]
    pub struct Transcript {
        pub segments: Vec<Segment>,
        pub partial: bool,
    }
}
