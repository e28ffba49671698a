//! Sinks: where streams end. A sink sees each stream's items in order, then
//! `end_stream`.

use crate::error::PipelineError;
use crate::graph::{panic_message, Shared};
use crate::item::{error_chain, BoxError, Item, Msg, StreamId};
use crate::metrics::StageMetrics;
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Consumes the items leaving the graph. An `Err` from any method is fatal
/// (the output cannot be written): the run stops and reports it.
pub trait Sink: Send + 'static {
    type In: Send + 'static;
    /// One item (or failure) of a stream, in sequence order.
    fn item(&mut self, item: Item<Self::In>) -> Result<(), BoxError>;
    /// The stream has no more items.
    fn end_stream(&mut self, stream: StreamId) -> Result<(), BoxError> {
        let _ = stream;
        Ok(())
    }
    /// End of the run (also after a cancel): flush and close.
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Gets the sink back after the run (e.g. to read what it collected).
pub struct SinkHandle<S>(Arc<Mutex<Option<S>>>);

impl<S> Clone for SinkHandle<S> {
    fn clone(&self) -> Self {
        SinkHandle(self.0.clone())
    }
}

impl<S> SinkHandle<S> {
    pub(crate) fn new() -> Self {
        SinkHandle(Arc::new(Mutex::new(None)))
    }
    pub(crate) fn put(&self, s: S) {
        *self.0.lock().unwrap() = Some(s);
    }
    /// The sink, once the run has ended (`None` before, or if it panicked).
    pub fn take(&self) -> Option<S> {
        self.0.lock().unwrap().take()
    }
}

/// Collects every message in delivery order (tests, small runs).
#[derive(Debug)]
pub struct Collect<T> {
    pub msgs: Vec<Msg<T>>,
}

impl<T> Default for Collect<T> {
    fn default() -> Self {
        Collect { msgs: Vec::new() }
    }
}

impl<T: Send + 'static> Sink for Collect<T> {
    type In = T;
    fn item(&mut self, item: Item<T>) -> Result<(), BoxError> {
        self.msgs.push(Msg::Item(item));
        Ok(())
    }
    fn end_stream(&mut self, stream: StreamId) -> Result<(), BoxError> {
        let seq = self
            .msgs
            .iter()
            .filter(|m| m.stream() == stream && matches!(m, Msg::Item(_)))
            .count() as u64;
        self.msgs.push(Msg::End { stream, seq });
        Ok(())
    }
}

/// Holds back later streams until earlier ones (by id) have ended.
pub(crate) struct KeepOrder<T> {
    next: StreamId,
    buf: BTreeMap<StreamId, Vec<Msg<T>>>,
}

impl<T> Default for KeepOrder<T> {
    fn default() -> Self {
        KeepOrder {
            next: 0,
            buf: BTreeMap::new(),
        }
    }
}

impl<T> KeepOrder<T> {
    /// Feed one message; deliver what is now in order.
    fn push(&mut self, msg: Msg<T>, deliver: &mut impl FnMut(Msg<T>) -> bool) -> bool {
        if msg.stream() != self.next {
            self.buf.entry(msg.stream()).or_default().push(msg);
            return true;
        }
        let ended = matches!(msg, Msg::End { .. });
        if !deliver(msg) {
            return false;
        }
        if ended {
            self.next += 1;
            while let Some(msgs) = self.buf.remove(&self.next) {
                let mut done = false;
                for m in msgs {
                    done = matches!(m, Msg::End { .. });
                    if !deliver(m) {
                        return false;
                    }
                }
                if !done {
                    break;
                }
                self.next += 1;
            }
        }
        true
    }

    /// End of input: deliver whatever is left, in stream order.
    fn drain(&mut self, deliver: &mut impl FnMut(Msg<T>) -> bool) {
        for (_, msgs) in std::mem::take(&mut self.buf) {
            for m in msgs {
                if !deliver(m) {
                    return;
                }
            }
        }
    }
}

pub(crate) fn run_sink<S: Sink>(
    mut sink: S,
    rx: Receiver<Msg<S::In>>,
    mut keep: Option<KeepOrder<S::In>>,
    name: &str,
    m: &StageMetrics,
    shared: &Shared,
) -> S {
    let fail = |e: String| {
        shared.fatal(PipelineError::Sink {
            stage: name.to_string(),
            error: e,
        })
    };
    let guard = |r: std::thread::Result<Result<(), BoxError>>| -> bool {
        match r {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                fail(error_chain(&*e));
                false
            }
            Err(p) => {
                shared.fatal(PipelineError::Panicked {
                    stage: name.to_string(),
                    message: panic_message(&*p),
                });
                false
            }
        }
    };
    let mut dead = false;
    {
        let mut deliver = |msg: Msg<S::In>| -> bool {
            let t = Instant::now();
            let ok = match msg {
                Msg::Item(it) => {
                    m.items_out.fetch_add(1, Relaxed);
                    if it.data.is_err() {
                        m.errors.fetch_add(1, Relaxed);
                    }
                    guard(catch_unwind(AssertUnwindSafe(|| sink.item(it))))
                }
                Msg::End { stream, .. } => {
                    let ok = guard(catch_unwind(AssertUnwindSafe(|| sink.end_stream(stream))));
                    m.streams.fetch_add(1, Relaxed);
                    shared.stream_done();
                    ok
                }
            };
            m.busy(t.elapsed());
            ok
        };
        for msg in &rx {
            if dead || shared.aborted() {
                continue; // drain
            }
            if matches!(msg, Msg::Item(_)) {
                m.items_in.fetch_add(1, Relaxed);
            }
            let ok = match &mut keep {
                Some(k) => k.push(msg, &mut deliver),
                None => deliver(msg),
            };
            dead = !ok;
        }
        if let (Some(k), false) = (&mut keep, dead || shared.aborted()) {
            k.drain(&mut deliver);
        }
    }
    // Flush even after a cancel or abort: what was written stays valid.
    guard(catch_unwind(AssertUnwindSafe(|| sink.finish())));
    sink
}
