//! The [`Stage`] and [`BatchStage`] traits, and closures as stages.

use crate::item::{BoxError, StreamId};
use std::time::Duration;

/// Where a stage puts its outputs for the item it is processing; outputs keep
/// the stream of the input and are renumbered per stream by the graph.
pub struct Emit<'a, T> {
    pub(crate) stream: StreamId,
    pub(crate) seq: u64,
    pub(crate) out: &'a mut dyn FnMut(T),
}

impl<T> Emit<'_, T> {
    /// Send one output downstream (in order, after earlier outputs).
    pub fn push(&mut self, value: T) {
        (self.out)(value)
    }
    /// The stream of the input being processed.
    pub fn stream(&self) -> StreamId {
        self.stream
    }
    /// Sequence number of the input being processed (for `flush`: the
    /// number of items the stream had).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// A processing step: zero or more outputs per input item, per stream.
///
/// `process` is never called for failed items (they pass through). An `Err`
/// becomes a `Failed` item for that input's stream, which ends the stream:
/// its later items are dropped. A panic stops the run.
pub trait Stage: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    /// Handle one input of stream `out.stream()`.
    fn process(&mut self, input: Self::In, out: &mut Emit<'_, Self::Out>) -> Result<(), BoxError>;
    /// End of stream `out.stream()`: emit anything buffered for it and drop
    /// its state. Also called after the stream failed (outputs then dropped).
    /// Stages with per-stream state run on one worker or with
    /// `Graph::per_stream`, never `Graph::parallel`.
    fn flush(&mut self, out: &mut Emit<'_, Self::Out>) -> Result<(), BoxError> {
        let _ = out;
        Ok(())
    }
}

/// A stage made of a function `In -> Result<Out, E>` (one output per input).
pub struct Map<F, I, O> {
    f: F,
    _t: std::marker::PhantomData<fn(I) -> O>,
}

impl<F: Clone, I, O> Clone for Map<F, I, O> {
    fn clone(&self) -> Self {
        Map {
            f: self.f.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

/// Wrap `f` as a one-in-one-out [`Stage`].
pub fn map<I, O, E, F>(f: F) -> Map<F, I, O>
where
    F: FnMut(I) -> Result<O, E> + Send + 'static,
    E: Into<BoxError>,
{
    Map {
        f,
        _t: std::marker::PhantomData,
    }
}

impl<F, I, O, E> Stage for Map<F, I, O>
where
    F: FnMut(I) -> Result<O, E> + Send + 'static,
    E: Into<BoxError>,
    I: Send + 'static,
    O: Send + 'static,
{
    type In = I;
    type Out = O;
    fn process(&mut self, input: I, out: &mut Emit<'_, O>) -> Result<(), BoxError> {
        out.push((self.f)(input).map_err(Into::into)?);
        Ok(())
    }
}

/// A stage that works on batches gathered across streams (model stages).
/// Returns one result per input, in input order; an outer `Err` fails every
/// item of the batch.
pub trait BatchStage: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    fn process_batch(
        &mut self,
        inputs: Vec<Self::In>,
    ) -> Result<Vec<Result<Self::Out, BoxError>>, BoxError>;
}

/// How a batching stage gathers its inputs.
#[derive(Debug, Clone, Copy)]
pub struct BatchOpts {
    /// Run the batch as soon as it has this many items.
    pub max_batch: usize,
    /// ... or when its first item has waited this long.
    pub max_wait: Duration,
}

impl Default for BatchOpts {
    fn default() -> Self {
        BatchOpts {
            max_batch: 8,
            max_wait: Duration::from_millis(20),
        }
    }
}

/// A [`BatchStage`] made of a function over a batch.
pub struct BatchFn<F, I, O> {
    f: F,
    _t: std::marker::PhantomData<fn(I) -> O>,
}

/// Wrap `f: Vec<In> -> Result<Vec<Result<Out>>>` as a [`BatchStage`].
pub fn batch_fn<I, O, F>(f: F) -> BatchFn<F, I, O>
where
    F: FnMut(Vec<I>) -> Result<Vec<Result<O, BoxError>>, BoxError> + Send + 'static,
{
    BatchFn {
        f,
        _t: std::marker::PhantomData,
    }
}

impl<F, I, O> BatchStage for BatchFn<F, I, O>
where
    F: FnMut(Vec<I>) -> Result<Vec<Result<O, BoxError>>, BoxError> + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    type In = I;
    type Out = O;
    fn process_batch(&mut self, inputs: Vec<I>) -> Result<Vec<Result<O, BoxError>>, BoxError> {
        (self.f)(inputs)
    }
}
