//! voxtok-pipeline: the stage graph every voxtok command runs on.
//!
//! Sources emit streams of items (one stream per input); stages transform
//! them on their own threads, connected by bounded channels; sinks consume
//! them. Every item carries `(stream, seq)`; results leave the graph in
//! order per stream, failures travel as [`Failed`] items, a panic stops the
//! run cleanly, and a [`Cancel`] flag stops the sources and drains the rest.
//!
//! ```
//! use voxtok_pipeline::{Graph, Collect, Msg};
//! let mut g = Graph::default();
//! let nums = g.source_iter("numbers", 0..10u32);
//! let doubled = g.map("double", nums, 2, |x: u32| Ok::<_, std::io::Error>(x * 2));
//! let out = g.sink("collect", doubled, Collect::default(), true);
//! let report = g.run().unwrap();
//! let items: Vec<u32> = out.take().unwrap().msgs.into_iter()
//!     .filter_map(|m| match m { Msg::Item(i) => i.data.ok(), _ => None }).collect();
//! assert_eq!(items, (0..10).map(|x| x * 2).collect::<Vec<_>>());
//! assert_eq!(report.stage("double").unwrap().items_in, 10);
//! ```

pub mod error;
pub mod graph;
pub mod inputs;
pub mod item;
pub mod metrics;
pub mod records;
mod reorder;
pub mod sink;
pub mod source;
pub mod stage;

pub use error::PipelineError;
pub use graph::{Cancel, Graph, GraphOptions, Port, Running};
pub use inputs::{Input, InputError, Shard};
pub use item::{payload, BoxError, Failed, Item, Msg, StreamId};
pub use metrics::{Metrics, Report, StageStats};
pub use records::{Format, RecordWriter};
pub use sink::{Collect, Sink, SinkHandle};
pub use source::{IterSource, Source, SourceCtx, Stopped};
pub use stage::{batch_fn, map, BatchOpts, BatchStage, Emit, Map, Stage};
