//! Sources: where streams begin.

use crate::graph::{Output, Shared};
use crate::item::{BoxError, Failed, StreamId};
use crate::metrics::StageMetrics;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// Produces streams of items into the graph from its own thread.
pub trait Source: Send + 'static {
    type Out: Send + 'static;
    /// Emit every stream; return early with `?` when `ctx` says [`Stopped`].
    fn run(&mut self, ctx: &mut SourceCtx<'_, Self::Out>) -> Result<(), BoxError>;
}

/// The run was cancelled or aborted: the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped")]
pub struct Stopped;

/// A source's handle on the graph: emit items, failures and stream ends.
pub struct SourceCtx<'a, T> {
    out: &'a mut Output<T>,
    name: &'a str,
    metrics: &'a StageMetrics,
    shared: &'a Shared,
    /// Streams opened and not yet ended.
    open: HashMap<StreamId, ()>,
}

impl<'a, T> SourceCtx<'a, T> {
    pub(crate) fn new(
        out: &'a mut Output<T>,
        name: &'a str,
        metrics: &'a StageMetrics,
        shared: &'a Shared,
    ) -> Self {
        SourceCtx {
            out,
            name,
            metrics,
            shared,
            open: HashMap::new(),
        }
    }

    /// True once the run is cancelled or aborted: stop emitting.
    pub fn stopped(&self) -> bool {
        self.shared.stopping() || self.out.is_dead()
    }

    fn open(&mut self, stream: StreamId) -> Result<(), Stopped> {
        if self.stopped() {
            return Err(Stopped);
        }
        if !self.open.contains_key(&stream) {
            if !self.shared.open_stream() {
                return Err(Stopped);
            }
            self.metrics.streams.fetch_add(1, Relaxed);
            self.open.insert(stream, ());
        }
        Ok(())
    }

    /// Emit the next item of `stream` (opening it if new; may block on a
    /// full queue or on the open-stream limit).
    pub fn emit(&mut self, stream: StreamId, value: T) -> Result<(), Stopped> {
        self.open(stream)?;
        self.metrics.items_in.fetch_add(1, Relaxed);
        self.out.item(stream, Ok(value));
        Ok(())
    }

    /// Emit a failure for `stream` (e.g. the file cannot be opened).
    pub fn fail(
        &mut self,
        stream: StreamId,
        err: &(dyn std::error::Error + 'static),
    ) -> Result<(), Stopped> {
        self.open(stream)?;
        self.metrics.errors.fetch_add(1, Relaxed);
        self.out
            .item(stream, Err(Failed::new(stream, self.name, err)));
        Ok(())
    }

    /// End `stream`: no more items for it.
    pub fn end(&mut self, stream: StreamId) -> Result<(), Stopped> {
        // Ending an open stream is always allowed, even when stopping.
        if self.open.remove(&stream).is_none() {
            self.open(stream)?;
            self.open.remove(&stream);
        }
        self.out.end(stream);
        Ok(())
    }

    /// End the streams left open; if `interrupted`, each gets a `Failed`
    /// ("interrupted") first so it is not mistaken for complete.
    pub(crate) fn close_open(&mut self, interrupted: bool) {
        let mut open: Vec<StreamId> = self.open.drain().map(|(s, _)| s).collect();
        open.sort_unstable();
        for s in open {
            if interrupted {
                self.metrics.errors.fetch_add(1, Relaxed);
                let f = Failed {
                    stream: s,
                    stage: self.name.to_string(),
                    error: "interrupted".into(),
                };
                self.out.item(s, Err(f));
            }
            self.out.end(s);
        }
    }
}

/// Each item of an iterator is one stream (id = its index) with one item.
pub struct IterSource<I>(pub I);

impl<I> Source for IterSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Out = I::Item;
    fn run(&mut self, ctx: &mut SourceCtx<'_, I::Item>) -> Result<(), BoxError> {
        for (i, v) in (&mut self.0).enumerate() {
            let s = i as StreamId;
            ctx.emit(s, v)?;
            ctx.end(s)?;
        }
        Ok(())
    }
}
