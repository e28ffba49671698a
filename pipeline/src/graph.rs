//! The graph builder and its runtime: one thread per node (N for parallel
//! stages), bounded crossbeam channels between them, per-stream reordering,
//! panic isolation, cancellation and draining.

use crate::error::PipelineError;
use crate::item::{BoxError, Failed, Item, Msg, StreamId};
use crate::metrics::{Metrics, Report, StageMetrics};
use crate::reorder::{Group, Reorder};
use crate::sink::{KeepOrder, Sink, SinkHandle};
use crate::source::{Source, SourceCtx};
use crate::stage::{BatchOpts, BatchStage, Emit, Stage};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Select, Sender};
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A shared stop flag: sources stop emitting, in-flight work drains, sinks
/// flush. Clone it into a Ctrl-C handler.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask the run to stop (idempotent, callable from any thread).
    pub fn cancel(&self) {
        self.0.store(true, SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// Graph-wide settings.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Capacity of every channel (items).
    pub capacity: usize,
    /// At most this many streams between the sources and the sinks at once
    /// (bounds reorder and keep-order buffers). `None`: unbounded.
    pub max_open_streams: Option<usize>,
    pub cancel: Cancel,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            capacity: 16,
            max_open_streams: None,
            cancel: Cancel::new(),
        }
    }
}

/// State shared by every node of a running graph.
pub(crate) struct Shared {
    /// Set on a panic or fatal error: every node drains and drops.
    abort: AtomicBool,
    pub(crate) cancel: Cancel,
    errors: Mutex<Vec<PipelineError>>,
    window: Option<usize>,
    sinks: AtomicUsize,
    started: AtomicU64,
    ended: Mutex<u64>,
    ended_cv: Condvar,
}

impl Shared {
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Relaxed)
    }
    /// Whether sources should stop (cancelled or aborted).
    pub(crate) fn stopping(&self) -> bool {
        self.aborted() || self.cancel.is_cancelled()
    }
    /// Record a fatal error and make every node drain.
    pub(crate) fn fatal(&self, e: PipelineError) {
        tracing::error!("{e}");
        self.errors.lock().unwrap().push(e);
        self.abort.store(true, SeqCst);
    }
    /// Record an error that does not stop in-flight work.
    pub(crate) fn record(&self, e: PipelineError) {
        tracing::error!("{e}");
        self.errors.lock().unwrap().push(e);
    }
    /// Block until a new stream may be opened; false when stopping.
    pub(crate) fn open_stream(&self) -> bool {
        let Some(w) = self.window else {
            self.started.fetch_add(1, SeqCst);
            return true;
        };
        let sinks = self.sinks.load(SeqCst).max(1) as u64;
        let mut ended = self.ended.lock().unwrap();
        loop {
            if self.stopping() {
                return false;
            }
            let started = self.started.load(SeqCst);
            if started.saturating_sub(*ended / sinks) < w as u64 {
                self.started.fetch_add(1, SeqCst);
                return true;
            }
            ended = self
                .ended_cv
                .wait_timeout(ended, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
    pub(crate) fn stream_done(&self) {
        *self.ended.lock().unwrap() += 1;
        self.ended_cv.notify_all();
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// The receiving end of a channel: the output of one node, to be connected
/// to exactly one consumer (or iterated directly after [`Graph::start`]).
pub struct Port<T> {
    pub(crate) rx: Receiver<Msg<T>>,
    pub(crate) hw: Arc<AtomicUsize>,
    pub(crate) cap: usize,
}

impl<T> IntoIterator for Port<T> {
    type Item = Msg<T>;
    type IntoIter = crossbeam_channel::IntoIter<Msg<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.rx.into_iter()
    }
}

/// Sending end of a channel, recording the queue high-water mark.
pub(crate) struct Tx<T> {
    tx: Sender<Msg<T>>,
    hw: Arc<AtomicUsize>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            tx: self.tx.clone(),
            hw: self.hw.clone(),
        }
    }
}

fn channel<T>(cap: usize) -> (Tx<T>, Port<T>) {
    let (tx, rx) = bounded(cap);
    let hw = Arc::new(AtomicUsize::new(0));
    (Tx { tx, hw: hw.clone() }, Port { rx, hw, cap })
}

/// A node's output: renumbers items per stream and sends them downstream.
pub(crate) struct Output<T> {
    tx: Tx<T>,
    next: HashMap<StreamId, u64>,
    /// Streams that failed: their later items are dropped until the end.
    poisoned: HashSet<StreamId>,
    name: Arc<str>,
    metrics: Arc<StageMetrics>,
    shared: Arc<Shared>,
    /// The consumer is gone: drop everything.
    dead: bool,
    /// Time spent blocked on a full channel.
    pub(crate) blocked: Duration,
}

impl<T> Output<T> {
    fn new(tx: Tx<T>, name: &Arc<str>, metrics: &Arc<StageMetrics>, shared: &Arc<Shared>) -> Self {
        Output {
            tx,
            next: HashMap::new(),
            poisoned: HashSet::new(),
            name: name.clone(),
            metrics: metrics.clone(),
            shared: shared.clone(),
            dead: false,
            blocked: Duration::ZERO,
        }
    }

    /// Send one message as is (no renumbering).
    pub(crate) fn send_raw(&mut self, m: Msg<T>) {
        if self.dead || self.shared.aborted() {
            return;
        }
        if matches!(m, Msg::Item(_)) {
            self.metrics.items_out.fetch_add(1, Relaxed);
        }
        let t = Instant::now();
        let r = match self.tx.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(m)) => self.tx.tx.send(m).map_err(|_| ()),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(()),
        };
        self.blocked += t.elapsed();
        match r {
            Ok(()) => {
                self.tx.hw.fetch_max(self.tx.tx.len(), Relaxed);
            }
            Err(()) => {
                self.dead = true;
                if !self.shared.aborted() {
                    self.shared.fatal(PipelineError::Disconnected {
                        stage: self.name.to_string(),
                    });
                }
            }
        }
    }

    /// Send the next item of `stream` (dropped if the stream already failed).
    pub(crate) fn item(&mut self, stream: StreamId, data: Result<T, Failed>) {
        if self.poisoned.contains(&stream) {
            return;
        }
        if data.is_err() {
            self.poisoned.insert(stream);
        }
        let seq = self.next.entry(stream).or_insert(0);
        let m = Msg::Item(Item {
            stream,
            seq: *seq,
            data,
        });
        *seq += 1;
        self.send_raw(m);
    }

    /// End `stream`.
    pub(crate) fn end(&mut self, stream: StreamId) {
        self.poisoned.remove(&stream);
        let seq = self.next.remove(&stream).unwrap_or(0);
        self.send_raw(Msg::End { stream, seq });
    }

    /// Send a reordered group.
    fn group(&mut self, g: Group<T>) {
        for d in g.outs {
            self.item(g.stream, d);
        }
        if g.end {
            self.end(g.stream);
        }
    }

    /// The stream failed upstream or here: skip its work.
    pub(crate) fn failed(&self, stream: StreamId) -> bool {
        self.poisoned.contains(&stream)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead || self.shared.aborted()
    }
}

type Body = Box<dyn FnOnce() + Send + 'static>;

struct Node {
    thread: String,
    stage: Arc<str>,
    body: Body,
}

/// Builds a graph of sources, stages and sinks; [`Graph::start`] runs it.
pub struct Graph {
    opts: GraphOptions,
    shared: Arc<Shared>,
    nodes: Vec<Node>,
    metrics: Vec<Arc<StageMetrics>>,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new(GraphOptions::default())
    }
}

impl Graph {
    pub fn new(opts: GraphOptions) -> Self {
        let shared = Arc::new(Shared {
            abort: AtomicBool::new(false),
            cancel: opts.cancel.clone(),
            errors: Mutex::new(Vec::new()),
            window: opts.max_open_streams,
            sinks: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            ended: Mutex::new(0),
            ended_cv: Condvar::new(),
        });
        Graph {
            opts,
            shared,
            nodes: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The cancel flag of this graph.
    pub fn cancel(&self) -> Cancel {
        self.opts.cancel.clone()
    }

    /// Live counters of every node added so far.
    pub fn metrics(&self) -> Metrics {
        Metrics(self.metrics.clone())
    }

    fn add_metrics(
        &mut self,
        name: &str,
        kind: &'static str,
        workers: usize,
        inputs: &[(&Arc<AtomicUsize>, usize)],
    ) -> Arc<StageMetrics> {
        let cap = inputs.iter().map(|i| i.1).max().unwrap_or(0);
        let m = StageMetrics::new(
            name,
            kind,
            workers,
            cap,
            inputs.iter().map(|i| i.0.clone()).collect(),
        );
        self.metrics.push(m.clone());
        m
    }

    fn spawn(&mut self, thread: String, stage: &Arc<str>, body: impl FnOnce() + Send + 'static) {
        self.nodes.push(Node {
            thread,
            stage: stage.clone(),
            body: Box::new(body),
        });
    }

    /// Add a source; its streams flow out of the returned port.
    pub fn source<S: Source>(&mut self, name: &str, mut source: S) -> Port<S::Out> {
        let (tx, port) = channel(self.opts.capacity);
        let m = self.add_metrics(name, "source", 1, &[]);
        let name: Arc<str> = name.into();
        let shared = self.shared.clone();
        let n2 = name.clone();
        self.spawn(name.to_string(), &name, move || {
            let mut out = Output::new(tx, &n2, &m, &shared);
            let mut ctx = SourceCtx::new(&mut out, &n2, &m, &shared);
            let r = catch_unwind(AssertUnwindSafe(|| source.run(&mut ctx)));
            let interrupted = match r {
                Ok(Ok(())) => false,
                Ok(Err(e)) => {
                    if e.downcast_ref::<crate::source::Stopped>().is_none() {
                        shared.record(PipelineError::Source {
                            stage: n2.to_string(),
                            error: crate::item::error_chain(&*e),
                        });
                    }
                    true
                }
                Err(p) => {
                    shared.fatal(PipelineError::Panicked {
                        stage: n2.to_string(),
                        message: panic_message(&*p),
                    });
                    true
                }
            };
            ctx.close_open(interrupted);
        });
        port
    }

    /// Each item of `iter` becomes one stream (id = its index) of one item.
    pub fn source_iter<T, I>(&mut self, name: &str, iter: I) -> Port<T>
    where
        T: Send + 'static,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        self.source(name, crate::source::IterSource(iter.into_iter()))
    }

    /// Add a stage with one worker (per-stream state allowed).
    pub fn stage<S: Stage>(&mut self, name: &str, input: Port<S::In>, stage: S) -> Port<S::Out> {
        let (tx, port) = channel(self.opts.capacity);
        let m = self.add_metrics(name, "stage", 1, &[(&input.hw, input.cap)]);
        let name: Arc<str> = name.into();
        let shared = self.shared.clone();
        let n2 = name.clone();
        self.spawn(name.to_string(), &name, move || {
            let mut out = Output::new(tx, &n2, &m, &shared);
            run_single(stage, input.rx, &mut out, &n2, &m, &shared);
        });
        port
    }

    /// Add a stage with `workers` threads where each stream stays on one
    /// worker (the least busy when the stream starts), so a stage may keep
    /// per-stream state (decoders, resamplers, streaming feature extractors)
    /// and its outputs stream out as they are pushed.
    pub fn per_stream<S, F>(
        &mut self,
        name: &str,
        input: Port<S::In>,
        workers: usize,
        make: F,
    ) -> Port<S::Out>
    where
        S: Stage,
        F: Fn() -> S,
    {
        if workers <= 1 {
            return self.stage(name, input, make());
        }
        let (tx, port) = channel(self.opts.capacity);
        let m = self.add_metrics(name, "stage", workers, &[(&input.hw, input.cap)]);
        let name: Arc<str> = name.into();
        // Messages routed to each worker and not yet handled.
        let pending: Arc<Vec<AtomicUsize>> =
            Arc::new((0..workers).map(|_| AtomicUsize::new(0)).collect());
        let mut wtxs = Vec::new();
        for w in 0..workers {
            let (wtx, wrx) = bounded::<Msg<S::In>>(2);
            wtxs.push(wtx);
            let stage = make();
            let (tx, shared, m, n2, pending) = (
                tx.clone(),
                self.shared.clone(),
                m.clone(),
                name.clone(),
                pending.clone(),
            );
            self.spawn(format!("{name}#{w}"), &name, move || {
                let mut out = Output::new(tx, &n2, &m, &shared);
                let rx = wrx.into_iter().inspect(|_| {
                    pending[w].fetch_sub(1, Relaxed);
                });
                run_single(stage, rx, &mut out, &n2, &m, &shared);
            });
        }
        drop(tx);
        let shared = self.shared.clone();
        self.spawn(format!("{name}#route"), &name, move || {
            let mut assign: HashMap<StreamId, usize> = HashMap::new();
            for msg in input.rx {
                if shared.aborted() {
                    continue;
                }
                let s = msg.stream();
                let w = *assign.entry(s).or_insert_with(|| {
                    (0..workers)
                        .min_by_key(|&i| pending[i].load(Relaxed))
                        .unwrap_or(0)
                });
                if matches!(msg, Msg::End { .. }) {
                    assign.remove(&s);
                }
                pending[w].fetch_add(1, Relaxed);
                // A failed send means the worker died: its panic is recorded.
                let _ = wtxs[w].send(msg);
            }
        });
        port
    }

    /// Add a stage with `workers` threads, each with its own instance from
    /// `make`; items may finish in any order but leave in order per stream.
    /// Only for stages without per-stream state (see [`per_stream`](Self::per_stream)).
    pub fn parallel<S, F>(
        &mut self,
        name: &str,
        input: Port<S::In>,
        workers: usize,
        make: F,
    ) -> Port<S::Out>
    where
        S: Stage,
        F: Fn() -> S,
    {
        if workers <= 1 {
            return self.stage(name, input, make());
        }
        let (tx, port) = channel(self.opts.capacity);
        let m = self.add_metrics(name, "stage", workers, &[(&input.hw, input.cap)]);
        let name: Arc<str> = name.into();
        // Each in-flight item holds a slot until its outputs leave the merge:
        // this bounds the reorder buffer.
        let window = 2 * workers + 2;
        let (slot_tx, slot_rx) = bounded::<()>(window);
        for _ in 0..window {
            slot_tx.send(()).unwrap();
        }
        let (gtx, grx) = bounded::<Group<S::Out>>(window);
        for w in 0..workers {
            let stage = make();
            let (rx, gtx, slot_rx) = (input.rx.clone(), gtx.clone(), slot_rx.clone());
            let (shared, m, n2) = (self.shared.clone(), m.clone(), name.clone());
            self.spawn(format!("{name}#{w}"), &name, move || {
                run_worker(stage, rx, gtx, slot_rx, &n2, &m, &shared);
            });
        }
        drop((gtx, slot_rx));
        let (shared, n2) = (self.shared.clone(), name.clone());
        self.spawn(format!("{name}#merge"), &name, move || {
            let mut out = Output::new(tx, &n2, &m, &shared);
            let mut reorder = Reorder::default();
            for g in grx {
                if out.is_dead() {
                    continue;
                }
                reorder.push(g, |g| {
                    out.group(g);
                    let _ = slot_tx.send(());
                });
            }
        });
        port
    }

    /// A one-in-one-out stage from a function, on `workers` threads.
    pub fn map<I, O, E, F>(&mut self, name: &str, input: Port<I>, workers: usize, f: F) -> Port<O>
    where
        I: Send + 'static,
        O: Send + 'static,
        E: Into<BoxError>,
        F: FnMut(I) -> Result<O, E> + Clone + Send + 'static,
    {
        self.parallel(name, input, workers, || crate::stage::map(f.clone()))
    }

    /// A batching stage: gathers items across streams (up to `max_batch`, or
    /// `max_wait` after the first), runs the batch, scatters results back.
    pub fn batch<B: BatchStage>(
        &mut self,
        name: &str,
        input: Port<B::In>,
        opts: BatchOpts,
        stage: B,
    ) -> Port<B::Out> {
        let (tx, port) = channel(self.opts.capacity);
        let m = self.add_metrics(name, "batch", 1, &[(&input.hw, input.cap)]);
        let name: Arc<str> = name.into();
        let (shared, n2) = (self.shared.clone(), name.clone());
        self.spawn(name.to_string(), &name, move || {
            let mut out = Output::new(tx, &n2, &m, &shared);
            run_batch(stage, opts, input.rx, &mut out, &n2, &m, &shared);
        });
        port
    }

    /// Fan-out: every message of `input` goes to each of `n` ports (the
    /// slowest branch sets the pace).
    pub fn tee<T: Clone + Send + 'static>(
        &mut self,
        name: &str,
        input: Port<T>,
        n: usize,
    ) -> Vec<Port<T>> {
        let (txs, ports): (Vec<_>, Vec<_>) = (0..n).map(|_| channel(self.opts.capacity)).unzip();
        let m = self.add_metrics(name, "tee", 1, &[(&input.hw, input.cap)]);
        let name: Arc<str> = name.into();
        let (shared, n2) = (self.shared.clone(), name.clone());
        self.spawn(name.to_string(), &name, move || {
            let mut outs: Vec<Output<T>> = txs
                .into_iter()
                .map(|t| Output::new(t, &n2, &m, &shared))
                .collect();
            for msg in input.rx {
                if shared.aborted() {
                    continue;
                }
                if matches!(msg, Msg::Item(_)) {
                    m.items_in.fetch_add(1, Relaxed);
                }
                let last = outs.len() - 1;
                for o in &mut outs[..last] {
                    o.send_raw(msg.clone());
                }
                outs[last].send_raw(msg);
            }
        });
        ports
    }

    /// Fan-in: items of every input, each input's order kept per stream,
    /// renumbered per stream; a stream ends once every input ended it (or
    /// closed). Use it to join branches of a [`tee`](Self::tee), or sources
    /// with disjoint stream ids.
    pub fn merge<T: Send + 'static>(&mut self, name: &str, inputs: Vec<Port<T>>) -> Port<T> {
        let (tx, port) = channel(self.opts.capacity);
        let qs: Vec<_> = inputs.iter().map(|p| (&p.hw, p.cap)).collect();
        let m = self.add_metrics(name, "merge", 1, &qs);
        let name: Arc<str> = name.into();
        let (shared, n2) = (self.shared.clone(), name.clone());
        self.spawn(name.to_string(), &name, move || {
            let mut out = Output::new(tx, &n2, &m, &shared);
            run_merge(inputs, &mut out, &m);
        });
        port
    }

    /// Add a sink (one thread); `keep_order` delivers whole streams in stream
    /// id order (0, 1, 2, ...) instead of as they complete.
    pub fn sink<S: Sink>(
        &mut self,
        name: &str,
        input: Port<S::In>,
        sink: S,
        keep_order: bool,
    ) -> SinkHandle<S> {
        let m = self.add_metrics(name, "sink", 1, &[(&input.hw, input.cap)]);
        let handle = SinkHandle::new();
        let h2 = handle.clone();
        self.shared.sinks.fetch_add(1, SeqCst);
        let name: Arc<str> = name.into();
        let (shared, n2) = (self.shared.clone(), name.clone());
        self.spawn(name.to_string(), &name, move || {
            let sink = crate::sink::run_sink(
                sink,
                input.rx,
                keep_order.then(KeepOrder::default),
                &n2,
                &m,
                &shared,
            );
            h2.put(sink);
        });
        handle
    }

    /// Start every node on its own thread.
    pub fn start(self) -> Running {
        let started = Instant::now();
        let mut handles = Vec::new();
        for node in self.nodes {
            let shared = self.shared.clone();
            let stage = node.stage.clone();
            let body = node.body;
            let h = std::thread::Builder::new()
                .name(node.thread.clone())
                .spawn(move || {
                    tracing::trace!(stage = %stage, "node started");
                    if let Err(p) = catch_unwind(AssertUnwindSafe(body)) {
                        shared.fatal(PipelineError::Panicked {
                            stage: stage.to_string(),
                            message: panic_message(&*p),
                        });
                    }
                })
                .expect("spawn pipeline thread");
            handles.push(h);
        }
        Running {
            handles,
            shared: self.shared,
            metrics: Metrics(self.metrics),
            started,
            cancel: self.opts.cancel,
        }
    }

    /// Start and wait for the end.
    pub fn run(self) -> Result<Report, PipelineError> {
        self.start().wait()
    }
}

/// A started graph.
pub struct Running {
    handles: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    started: Instant,
    cancel: Cancel,
}

impl Running {
    /// Live counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    /// True when every node thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }
    /// Stop the sources; in-flight work drains.
    pub fn cancel(&self) {
        self.cancel.cancel()
    }
    /// Wait for every node; the first fatal error (panic, source or sink
    /// failure) if any, else the summary.
    pub fn wait(self) -> Result<Report, PipelineError> {
        for h in self.handles {
            let _ = h.join();
        }
        let report = Report {
            stages: self.metrics.snapshot(),
            wall: self.started.elapsed(),
            cancelled: self.cancel.is_cancelled(),
        };
        for s in &report.stages {
            tracing::debug!(
                stage = %s.name, items_in = s.items_in, items_out = s.items_out, errors = s.errors,
                busy_s = s.busy.as_secs_f64(), queue_hw = s.queue_hw, "stage finished"
            );
        }
        let mut errors = std::mem::take(&mut *self.shared.errors.lock().unwrap());
        if errors.is_empty() {
            Ok(report)
        } else {
            // A panic explains the disconnects it causes: report it first.
            errors.sort_by_key(|e| !matches!(e, PipelineError::Panicked { .. }));
            Err(errors.swap_remove(0))
        }
    }
}

/// Run `f` (a stage call) catching panics; `Err(None)` for a panic (already
/// recorded as fatal), `Err(Some(failed))` for an error.
fn call<R>(
    name: &str,
    stream: StreamId,
    shared: &Shared,
    f: impl FnOnce() -> Result<R, BoxError>,
) -> Result<R, Option<Failed>> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Some(Failed::new(stream, name, &*e))),
        Err(p) => {
            shared.fatal(PipelineError::Panicked {
                stage: name.to_string(),
                message: panic_message(&*p),
            });
            Err(None)
        }
    }
}

/// One worker, outputs sent as they are pushed (streaming, in order).
fn run_single<S: Stage>(
    mut stage: S,
    rx: impl IntoIterator<Item = Msg<S::In>>,
    out: &mut Output<S::Out>,
    name: &str,
    m: &StageMetrics,
    shared: &Shared,
) {
    for msg in rx {
        if out.is_dead() {
            continue; // drain so upstream never blocks
        }
        let (stream, seq, input, end) = match msg {
            Msg::Item(Item {
                stream,
                data: Err(f),
                ..
            }) => {
                m.items_in.fetch_add(1, Relaxed);
                out.item(stream, Err(f));
                continue;
            }
            Msg::Item(Item {
                stream,
                seq,
                data: Ok(v),
            }) => {
                m.items_in.fetch_add(1, Relaxed);
                if out.failed(stream) {
                    continue;
                }
                (stream, seq, Some(v), false)
            }
            Msg::End { stream, seq } => (stream, seq, None, true),
        };
        let t = Instant::now();
        let blocked0 = out.blocked;
        let r = {
            let mut push = |v| out.item(stream, Ok(v));
            let mut emit = Emit {
                stream,
                seq,
                out: &mut push,
            };
            call(name, stream, shared, || match input {
                Some(v) => stage.process(v, &mut emit),
                None => stage.flush(&mut emit),
            })
        };
        m.busy(t.elapsed().saturating_sub(out.blocked - blocked0));
        match r {
            Ok(()) => {}
            Err(Some(f)) => {
                m.errors.fetch_add(1, Relaxed);
                tracing::debug!("{f}");
                out.item(stream, Err(f));
            }
            Err(None) => continue,
        }
        if end {
            m.streams.fetch_add(1, Relaxed);
            out.end(stream);
        }
    }
}

/// Process one message into a group of outputs (parallel workers).
fn process_group<S: Stage>(
    stage: &mut S,
    msg: Msg<S::In>,
    name: &str,
    m: &StageMetrics,
    shared: &Shared,
) -> Option<Group<S::Out>> {
    let (stream, seq, input, end) = match msg {
        Msg::Item(Item {
            stream,
            seq,
            data: Err(f),
        }) => {
            m.items_in.fetch_add(1, Relaxed);
            return Some(Group {
                stream,
                seq,
                outs: vec![Err(f)],
                end: false,
            });
        }
        Msg::Item(Item {
            stream,
            seq,
            data: Ok(v),
        }) => {
            m.items_in.fetch_add(1, Relaxed);
            (stream, seq, Some(v), false)
        }
        Msg::End { stream, seq } => (stream, seq, None, true),
    };
    let mut outs = Vec::new();
    let t = Instant::now();
    let r = {
        let mut push = |v| outs.push(Ok(v));
        let mut emit = Emit {
            stream,
            seq,
            out: &mut push,
        };
        call(name, stream, shared, || match input {
            Some(v) => stage.process(v, &mut emit),
            None => stage.flush(&mut emit),
        })
    };
    m.busy(t.elapsed());
    match r {
        Ok(()) => {}
        Err(Some(f)) => {
            m.errors.fetch_add(1, Relaxed);
            tracing::debug!("{f}");
            outs.push(Err(f));
        }
        Err(None) => return None,
    }
    if end {
        m.streams.fetch_add(1, Relaxed);
    }
    Some(Group {
        stream,
        seq,
        outs,
        end,
    })
}

fn run_worker<S: Stage>(
    mut stage: S,
    rx: Receiver<Msg<S::In>>,
    gtx: Sender<Group<S::Out>>,
    slots: Receiver<()>,
    name: &str,
    m: &StageMetrics,
    shared: &Shared,
) {
    'outer: loop {
        // Take a slot (abort-aware), then an input.
        loop {
            match slots.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(RecvTimeoutError::Timeout) if !shared.aborted() => continue,
                _ => break 'outer,
            }
        }
        let Ok(msg) = rx.recv() else { return };
        if shared.aborted() {
            break;
        }
        let Some(g) = process_group(&mut stage, msg, name, m, shared) else {
            break;
        };
        if gtx.send(g).is_err() {
            break;
        }
    }
    // Aborting: drain the input so upstream never blocks.
    for _ in rx {}
}

#[allow(clippy::too_many_arguments)]
fn run_batch<B: BatchStage>(
    mut stage: B,
    opts: BatchOpts,
    rx: Receiver<Msg<B::In>>,
    out: &mut Output<B::Out>,
    name: &str,
    m: &StageMetrics,
    shared: &Shared,
) {
    let max_batch = opts.max_batch.max(1);
    let mut reorder = Reorder::default();
    let mut pending: Vec<(StreamId, u64, B::In)> = Vec::new();
    let mut first_at = Instant::now();
    let mut flush = |pending: &mut Vec<(StreamId, u64, B::In)>,
                     out: &mut Output<B::Out>,
                     reorder: &mut Reorder<B::Out>| {
        if pending.is_empty() {
            return;
        }
        let (metas, inputs): (Vec<_>, Vec<_>) =
            pending.drain(..).map(|(s, q, v)| ((s, q), v)).unzip();
        let n = metas.len();
        let t = Instant::now();
        let r = call(name, metas[0].0, shared, || stage.process_batch(inputs));
        m.busy(t.elapsed());
        m.batches.fetch_add(1, Relaxed);
        let results: Vec<Result<B::Out, Failed>> = match r {
            Ok(res) if res.len() == n => res
                .into_iter()
                .zip(&metas)
                .map(|(r, &(s, _))| r.map_err(|e| Failed::new(s, name, &*e)))
                .collect(),
            Ok(res) => {
                let msg = format!(
                    "batch function returned {} results for {n} inputs",
                    res.len()
                );
                metas
                    .iter()
                    .map(|&(s, _)| {
                        Err(Failed {
                            stream: s,
                            stage: name.to_string(),
                            error: msg.clone(),
                        })
                    })
                    .collect()
            }
            Err(Some(f)) => metas
                .iter()
                .map(|&(s, _)| {
                    Err(Failed {
                        stream: s,
                        ..f.clone()
                    })
                })
                .collect(),
            Err(None) => return,
        };
        for (r, (stream, seq)) in results.into_iter().zip(metas) {
            if r.is_err() {
                m.errors.fetch_add(1, Relaxed);
            }
            reorder.push(
                Group {
                    stream,
                    seq,
                    outs: vec![r],
                    end: false,
                },
                |g| out.group(g),
            );
        }
    };
    loop {
        let msg = if pending.is_empty() {
            match rx.recv() {
                Ok(msg) => msg,
                Err(_) => break,
            }
        } else {
            match rx.recv_deadline(first_at + opts.max_wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    flush(&mut pending, out, &mut reorder);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        if out.is_dead() {
            pending.clear();
            continue;
        }
        match msg {
            Msg::Item(Item {
                stream,
                seq,
                data: Ok(v),
            }) => {
                m.items_in.fetch_add(1, Relaxed);
                if pending.is_empty() {
                    first_at = Instant::now();
                }
                pending.push((stream, seq, v));
                if pending.len() >= max_batch {
                    flush(&mut pending, out, &mut reorder);
                }
            }
            Msg::Item(Item {
                stream,
                seq,
                data: Err(f),
            }) => {
                m.items_in.fetch_add(1, Relaxed);
                reorder.push(
                    Group {
                        stream,
                        seq,
                        outs: vec![Err(f)],
                        end: false,
                    },
                    |g| out.group(g),
                );
            }
            Msg::End { stream, seq } => {
                m.streams.fetch_add(1, Relaxed);
                reorder.push(
                    Group {
                        stream,
                        seq,
                        outs: vec![],
                        end: true,
                    },
                    |g| out.group(g),
                );
            }
        }
    }
    if !out.is_dead() {
        flush(&mut pending, out, &mut reorder);
    }
}

fn run_merge<T: Send + 'static>(inputs: Vec<Port<T>>, out: &mut Output<T>, m: &StageMetrics) {
    let n = inputs.len();
    let rxs: Vec<Receiver<Msg<T>>> = inputs.into_iter().map(|p| p.rx).collect();
    let mut closed = vec![false; n];
    // Per open stream: which inputs ended it.
    let mut ended: HashMap<StreamId, Vec<bool>> = HashMap::new();
    let mut live = n;
    let mut sel = Select::new();
    for r in &rxs {
        sel.recv(r);
    }
    while live > 0 {
        let op = sel.select();
        let i = op.index();
        match op.recv(&rxs[i]) {
            Err(_) => {
                sel.remove(i);
                closed[i] = true;
                live -= 1;
                let done: Vec<StreamId> = ended
                    .iter()
                    .filter(|(_, e)| e.iter().zip(&closed).all(|(a, b)| *a || *b))
                    .map(|(s, _)| *s)
                    .collect();
                for s in done {
                    ended.remove(&s);
                    m.streams.fetch_add(1, Relaxed);
                    out.end(s);
                }
            }
            Ok(Msg::Item(it)) => {
                m.items_in.fetch_add(1, Relaxed);
                ended.entry(it.stream).or_insert_with(|| vec![false; n]);
                out.item(it.stream, it.data);
            }
            Ok(Msg::End { stream, .. }) => {
                let e = ended.entry(stream).or_insert_with(|| vec![false; n]);
                e[i] = true;
                if e.iter().zip(&closed).all(|(a, b)| *a || *b) {
                    ended.remove(&stream);
                    m.streams.fetch_add(1, Relaxed);
                    out.end(stream);
                }
            }
        }
    }
}
