//! Properties of the stage graph: exactly-once delivery in order per stream,
//! failures reported, bounded memory, clean shutdown on panic and cancel.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voxtok_pipeline::*;

/// Run `f` on a thread and fail if it takes longer than `secs` (no hangs).
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("graph run hung")
}

/// Deterministic pseudo-random in [0, 1) from a few numbers.
fn hash01(a: u64, b: u64, c: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ c.wrapping_add(0x1656_67B1_9E37_79F9);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Payload: (stream, index in stream, stages passed).
type P = (u64, u64, u32);

#[derive(Debug, Clone)]
enum Kind {
    Map { workers: usize },
    Batch { max_batch: usize, wait_us: u64 },
    PerStream { workers: usize },
}

/// A stateful stage: checks it sees each stream's items in order on one
/// worker, and that `flush` comes once per stream, after its items.
struct Sticky {
    spec: Arc<Spec>,
    stage: usize,
    next: std::collections::HashMap<StreamId, u64>,
}

impl Stage for Sticky {
    type In = P;
    type Out = P;
    fn process(&mut self, p: P, out: &mut Emit<'_, P>) -> Result<(), BoxError> {
        let next = self.next.entry(out.stream()).or_insert(0);
        assert_eq!(p.1, *next, "per-stream worker sees its stream in order");
        *next += 1;
        delay(&self.spec, self.stage, &p);
        if fails(&self.spec, self.stage, &p) {
            return Err(format!("fail {} {}", p.0, p.1).into());
        }
        out.push((p.0, p.1, p.2 + 1));
        Ok(())
    }
    fn flush(&mut self, out: &mut Emit<'_, P>) -> Result<(), BoxError> {
        self.next.remove(&out.stream());
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Spec {
    streams: Vec<u64>,
    stages: Vec<Kind>,
    fail_rate: f64,
    max_delay_us: u64,
    capacity: usize,
    seed: u64,
    keep_order: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        3 => (1usize..4).prop_map(|workers| Kind::Map { workers }),
        1 => (1usize..5, 0u64..500).prop_map(|(max_batch, wait_us)| Kind::Batch { max_batch, wait_us }),
        1 => (1usize..4).prop_map(|workers| Kind::PerStream { workers }),
    ];
    (
        prop::collection::vec(0u64..12, 1..7),
        prop::collection::vec(kind, 1..5),
        prop_oneof![Just(0.0), 0.0f64..0.3],
        0u64..200,
        1usize..5,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(streams, stages, fail_rate, max_delay_us, capacity, seed, keep_order)| Spec {
                streams,
                stages,
                fail_rate,
                max_delay_us,
                capacity,
                seed,
                keep_order,
            },
        )
}

/// Emits `counts[s]` items for stream s, interleaving streams.
struct Interleaved(Vec<u64>);

impl Source for Interleaved {
    type Out = P;
    fn run(&mut self, ctx: &mut SourceCtx<'_, P>) -> Result<(), BoxError> {
        let max = self.0.iter().copied().max().unwrap_or(0);
        for i in 0..=max {
            for (s, &n) in self.0.iter().enumerate() {
                let s = s as u64;
                if i < n {
                    ctx.emit(s, (s, i, 0))?;
                }
                if i + 1 == n || (n == 0 && i == 0) {
                    ctx.end(s)?;
                }
            }
        }
        Ok(())
    }
}

fn fails(spec: &Spec, stage: usize, p: &P) -> bool {
    hash01(spec.seed, stage as u64, p.0 * 1000 + p.1) < spec.fail_rate
}

fn delay(spec: &Spec, stage: usize, p: &P) {
    let us =
        (hash01(spec.seed ^ 7, stage as u64, p.0 * 1000 + p.1) * spec.max_delay_us as f64) as u64;
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

fn run_spec(spec: Spec) -> (Vec<Msg<P>>, Report) {
    let mut g = Graph::new(GraphOptions {
        capacity: spec.capacity,
        ..Default::default()
    });
    let mut port = g.source("src", Interleaved(spec.streams.clone()));
    for (i, k) in spec.stages.iter().enumerate() {
        let sp = Arc::new(spec.clone());
        let name = format!("s{i}");
        port = match *k {
            Kind::Map { workers } => g.map(&name, port, workers, move |p: P| {
                delay(&sp, i, &p);
                if fails(&sp, i, &p) {
                    return Err(format!("fail {} {}", p.0, p.1));
                }
                Ok((p.0, p.1, p.2 + 1))
            }),
            Kind::PerStream { workers } => g.per_stream(&name, port, workers, || Sticky {
                spec: sp.clone(),
                stage: i,
                next: Default::default(),
            }),
            Kind::Batch { max_batch, wait_us } => {
                let opts = BatchOpts {
                    max_batch,
                    max_wait: Duration::from_micros(wait_us),
                };
                g.batch(
                    &name,
                    port,
                    opts,
                    batch_fn(move |ps: Vec<P>| {
                        assert!(ps.len() <= max_batch);
                        Ok(ps
                            .into_iter()
                            .map(|p| {
                                delay(&sp, i, &p);
                                if fails(&sp, i, &p) {
                                    Err(format!("fail {} {}", p.0, p.1).into())
                                } else {
                                    Ok((p.0, p.1, p.2 + 1))
                                }
                            })
                            .collect())
                    }),
                )
            }
        };
    }
    let out = g.sink("sink", port, Collect::default(), spec.keep_order);
    let report = g.run().expect("run ok");
    (out.take().unwrap().msgs, report)
}

fn check(spec: &Spec, msgs: &[Msg<P>], report: &Report) {
    let n_stages = spec.stages.len() as u32;
    let mut per: BTreeMap<u64, Vec<&Msg<P>>> = BTreeMap::new();
    for m in msgs {
        per.entry(m.stream()).or_default().push(m);
    }
    assert_eq!(
        per.len(),
        spec.streams.len(),
        "every stream reaches the sink"
    );
    let mut failures = 0;
    for (s, &n) in spec.streams.iter().enumerate() {
        let got = &per[&(s as u64)];
        // A stream stops at its first failing item: earlier items arrive,
        // then that one failure, then the end.
        let first_bad =
            (0..n).find(|&i| (0..spec.stages.len()).any(|st| fails(spec, st, &(s as u64, i, 0))));
        let n = first_bad.map_or(n, |i| i + 1);
        assert_eq!(got.len() as u64, n + 1, "stream {s}: {n} items + end");
        for (i, m) in got.iter().enumerate() {
            let i = i as u64;
            match m {
                Msg::End { seq, .. } => assert_eq!((*seq, i), (n, n), "end last"),
                Msg::Item(it) => {
                    assert_eq!(it.seq, i, "stream {s} in order");
                    let p: P = (s as u64, i, 0);
                    let first_fail = (0..spec.stages.len()).find(|&st| fails(spec, st, &p));
                    match (&it.data, first_fail) {
                        (Ok(v), None) => assert_eq!(*v, (s as u64, i, n_stages)),
                        (Err(f), Some(st)) => {
                            failures += 1;
                            assert_eq!(f.stage, format!("s{st}"));
                            assert_eq!(f.error, format!("fail {s} {i}"));
                            assert_eq!(f.stream, s as u64);
                        }
                        (d, ff) => {
                            panic!("stream {s} item {i}: got {d:?}, first failing stage {ff:?}")
                        }
                    }
                }
            }
        }
    }
    if spec.keep_order {
        let order: Vec<u64> = msgs.iter().map(|m| m.stream()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            order, sorted,
            "keep-order delivers whole streams in id order"
        );
    }
    let errs: u64 = report
        .stages
        .iter()
        .filter(|s| s.kind != "sink" && s.kind != "source")
        .map(|s| s.errors)
        .sum();
    assert!(
        errs >= failures,
        "per-stage error counters {errs} < {failures}"
    );
    assert_eq!(
        report.stage("sink").unwrap().errors,
        failures,
        "sink counts failures"
    );
    for st in &report.stages {
        assert!(
            st.queue_hw <= st.queue_cap,
            "{} queue {} > cap {}",
            st.name,
            st.queue_hw,
            st.queue_cap
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_graphs_deliver_everything_once_in_order(spec in spec()) {
        let s2 = spec.clone();
        let (msgs, report) = with_timeout(60, move || run_spec(s2));
        check(&spec, &msgs, &report);
    }
}

#[test]
fn stalled_sink_bounds_memory() {
    struct Gate(Arc<AtomicBool>);
    impl Sink for Gate {
        type In = Vec<u8>;
        fn item(&mut self, _: Item<Vec<u8>>) -> Result<(), BoxError> {
            while !self.0.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }
    let cap = 4;
    let open = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let p2 = produced.clone();
    let mut g = Graph::new(GraphOptions {
        capacity: cap,
        ..Default::default()
    });
    // 10 000 chunks of 64 KiB = 640 MB if nothing pushed back.
    let src = g.source_iter(
        "src",
        (0..10_000u64).map(move |_| {
            p2.fetch_add(1, Ordering::SeqCst);
            vec![0u8; 65536]
        }),
    );
    let a = g.map("a", src, 3, |v: Vec<u8>| Ok::<_, BoxError>(v));
    let b = g.batch(
        "b",
        a,
        BatchOpts {
            max_batch: 4,
            max_wait: Duration::from_millis(1),
        },
        batch_fn(|v: Vec<Vec<u8>>| Ok(v.into_iter().map(Ok).collect())),
    );
    g.sink("gate", b, Gate(open.clone()), false);
    let running = g.start();
    std::thread::sleep(Duration::from_millis(300));
    let held = produced.load(Ordering::SeqCst);
    // queues (4 channels + parallel window) + items held by workers/batch/sink.
    let bound = (4 * cap + (2 * 3 + 2) + 3 + 4 + 2 + 1) as u64;
    assert!(
        held <= bound,
        "a stalled sink let {held} items in (bound {bound})"
    );
    assert!(held >= cap as u64, "the source ran ({held})");
    for s in running.metrics().snapshot() {
        assert!(
            s.queue_hw <= s.queue_cap,
            "{} queue {} > {}",
            s.name,
            s.queue_hw,
            s.queue_cap
        );
    }
    open.store(true, Ordering::SeqCst);
    let report = with_timeout(60, move || running.wait()).unwrap();
    assert_eq!(report.stage("gate").unwrap().items_out, 10_000);
    assert_eq!(report.stage("a").unwrap().queue_hw, cap);
}

#[test]
fn panicking_stage_stops_the_run_without_hanging() {
    for workers in [1, 3] {
        let r = with_timeout(30, move || {
            let mut g = Graph::new(GraphOptions {
                capacity: 2,
                ..Default::default()
            });
            let src = g.source_iter("src", 0..u64::MAX); // endless: must be stopped
            let a = g.map("ok", src, 2, |x: u64| Ok::<_, BoxError>(x));
            let b = g.map("boom", a, workers, |x: u64| {
                if x == 50 {
                    panic!("item {x} is cursed");
                }
                Ok::<_, BoxError>(x)
            });
            let c = g.batch(
                "batch",
                b,
                BatchOpts::default(),
                batch_fn(|v: Vec<u64>| Ok(v.into_iter().map(Ok).collect())),
            );
            g.sink("sink", c, Collect::default(), false);
            g.run()
        });
        match r {
            Err(PipelineError::Panicked { stage, message }) => {
                assert_eq!(stage, "boom");
                assert!(message.contains("cursed"), "{message}");
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
}

#[test]
fn panicking_sink_and_source_are_reported() {
    struct Bad;
    impl Sink for Bad {
        type In = u64;
        fn item(&mut self, it: Item<u64>) -> Result<(), BoxError> {
            assert!(it.stream < 10, "sink gave up");
            Ok(())
        }
    }
    let r = with_timeout(30, || {
        let mut g = Graph::default();
        let src = g.source_iter("src", 0..u64::MAX);
        let a = g.map("id", src, 2, |x: u64| Ok::<_, BoxError>(x));
        g.sink("bad", a, Bad, false);
        g.run()
    });
    assert!(
        matches!(r, Err(PipelineError::Panicked { ref stage, .. }) if stage == "bad"),
        "{r:?}"
    );

    struct BadSource;
    impl Source for BadSource {
        type Out = u64;
        fn run(&mut self, ctx: &mut SourceCtx<'_, u64>) -> Result<(), BoxError> {
            ctx.emit(0, 1)?;
            Err("manifest unreadable".into())
        }
    }
    let r = with_timeout(30, || {
        let mut g = Graph::default();
        let src = g.source("list", BadSource);
        let out = g.sink("c", src, Collect::default(), false);
        (g.run(), out.take().unwrap().msgs)
    });
    assert!(
        matches!(r.0, Err(PipelineError::Source { ref error, .. }) if error == "manifest unreadable")
    );
    // The open stream is closed as interrupted, not left dangling.
    assert!(
        matches!(&r.1[..], [Msg::Item(a), Msg::Item(b), Msg::End { .. }] if a.data.is_ok() && b.data.is_err())
    );
}

#[test]
fn cancel_stops_sources_and_drains() {
    let r = with_timeout(30, || {
        let cancel = Cancel::new();
        let mut g = Graph::new(GraphOptions {
            capacity: 4,
            cancel: cancel.clone(),
            ..Default::default()
        });
        let src = g.source_iter("src", 0..u64::MAX);
        let a = g.map("slow", src, 2, |x: u64| {
            std::thread::sleep(Duration::from_micros(200));
            Ok::<_, BoxError>(x)
        });
        let out = g.sink("c", a, Collect::default(), true);
        let running = g.start();
        std::thread::sleep(Duration::from_millis(100));
        running.cancel();
        (running.wait(), out.take().unwrap().msgs)
    });
    let report = r.0.expect("a cancelled run is not an error");
    assert!(report.cancelled);
    let msgs = r.1;
    let ends = msgs.iter().filter(|m| matches!(m, Msg::End { .. })).count() as u64;
    let items = msgs.iter().filter(|m| matches!(m, Msg::Item(_))).count() as u64;
    assert!(
        ends > 10 && ends == items,
        "{ends} streams ended, {items} items"
    );
    // Every stream the source started was finished (drained, in order).
    assert_eq!(report.stage("src").unwrap().streams, ends);
    for (i, m) in msgs.chunks(2).enumerate() {
        assert!(
            matches!(m, [Msg::Item(it), Msg::End { .. }] if it.stream == i as u64 && it.data.is_ok())
        );
    }
}

#[test]
fn tee_and_merge_join_branches_per_stream() {
    #[derive(Clone, Debug, PartialEq)]
    enum Out {
        Len(usize),
        Sum(u64),
    }
    /// Splits each input into `len` chunks (one-to-many), flush adds a total.
    struct Chunker(BTreeMap<StreamId, u64>);
    impl Stage for Chunker {
        type In = Vec<u64>;
        type Out = Out;
        fn process(&mut self, v: Vec<u64>, out: &mut Emit<'_, Out>) -> Result<(), BoxError> {
            for x in v {
                *self.0.entry(out.stream()).or_default() += x;
                out.push(Out::Sum(x));
            }
            Ok(())
        }
        fn flush(&mut self, out: &mut Emit<'_, Out>) -> Result<(), BoxError> {
            let total = self.0.remove(&out.stream()).unwrap_or(0);
            out.push(Out::Sum(total));
            Ok(())
        }
    }
    let msgs = with_timeout(30, || {
        let mut g = Graph::new(GraphOptions {
            capacity: 2,
            ..Default::default()
        });
        let src = g.source_iter("src", (0..20u64).map(|i| (0..i % 5).collect::<Vec<u64>>()));
        let mut b = g.tee("tee", src, 2).into_iter();
        let (l, r) = (b.next().unwrap(), b.next().unwrap());
        let l = g.map("len", l, 2, |v: Vec<u64>| {
            Ok::<_, BoxError>(Out::Len(v.len()))
        });
        let r = g.stage("chunk", r, Chunker(BTreeMap::new()));
        let m = g.merge("join", vec![l, r]);
        let out = g.sink("c", m, Collect::default(), false);
        g.run().unwrap();
        out.take().unwrap().msgs
    });
    for s in 0..20u64 {
        let mine: Vec<&Msg<Out>> = msgs.iter().filter(|m| m.stream() == s).collect();
        let n = s % 5;
        let items: Vec<Out> = mine
            .iter()
            .filter_map(|m| match m {
                Msg::Item(i) => Some(i.data.clone().unwrap()),
                _ => None,
            })
            .collect();
        assert!(matches!(mine.last(), Some(Msg::End { seq, .. }) if *seq == items.len() as u64));
        assert_eq!(
            mine.iter().filter(|m| matches!(m, Msg::End { .. })).count(),
            1
        );
        let lens: Vec<_> = items
            .iter()
            .filter(|o| matches!(o, Out::Len(_)))
            .cloned()
            .collect();
        let sums: Vec<_> = items
            .iter()
            .filter(|o| matches!(o, Out::Sum(_)))
            .cloned()
            .collect();
        assert_eq!(lens, vec![Out::Len(n as usize)]);
        let mut want: Vec<Out> = (0..n).map(Out::Sum).collect();
        want.push(Out::Sum((0..n).sum()));
        assert_eq!(sums, want, "one-to-many outputs in order, then the flush");
    }
}

#[test]
fn batches_gather_across_streams_and_respect_max_wait() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s2 = sizes.clone();
    let t = Instant::now();
    let msgs = with_timeout(30, move || {
        let mut g = Graph::default();
        let src = g.source_iter("src", 0..100u64);
        let b = g.batch(
            "b",
            src,
            BatchOpts {
                max_batch: 8,
                max_wait: Duration::from_millis(5),
            },
            batch_fn(move |v: Vec<u64>| {
                s2.lock().unwrap().push(v.len());
                Ok(v.into_iter().map(|x| Ok(x * 10)).collect())
            }),
        );
        let out = g.sink("c", b, Collect::default(), true);
        g.run().unwrap();
        out.take().unwrap().msgs
    });
    let vals: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            Msg::Item(i) => i.data.clone().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(vals, (0..100).map(|x| x * 10).collect::<Vec<_>>());
    let sizes = sizes.lock().unwrap();
    assert!(sizes.iter().all(|&n| (1..=8).contains(&n)));
    assert!(
        sizes.iter().any(|&n| n > 1),
        "items from different streams share batches: {sizes:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn open_stream_limit_bounds_keep_order_buffering() {
    let max_open = Arc::new(AtomicU64::new(0));
    let live = Arc::new(AtomicU64::new(0));
    let (m2, l2, l3) = (max_open.clone(), live.clone(), live.clone());
    struct Count(Arc<AtomicU64>);
    impl Sink for Count {
        type In = u64;
        fn item(&mut self, _: Item<u64>) -> Result<(), BoxError> {
            Ok(())
        }
        fn end_stream(&mut self, _: StreamId) -> Result<(), BoxError> {
            self.0.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }
    with_timeout(30, move || {
        let mut g = Graph::new(GraphOptions {
            capacity: 8,
            max_open_streams: Some(5),
            ..Default::default()
        });
        let src = g.source_iter(
            "src",
            (0..200u64).inspect(move |_| {
                let n = l2.fetch_add(1, Ordering::SeqCst) + 1;
                m2.fetch_max(n, Ordering::SeqCst);
            }),
        );
        // Stream 0 is slow: without the limit every other stream would pile up.
        let a = g.map("a", src, 3, |x: u64| {
            std::thread::sleep(Duration::from_millis(if x.is_multiple_of(50) {
                30
            } else {
                0
            }));
            Ok::<_, BoxError>(x)
        });
        g.sink("c", a, Count(l3), true);
        g.run().unwrap();
    });
    // The iterator runs one item ahead of the limit check.
    assert!(
        max_open.load(Ordering::SeqCst) <= 6,
        "{}",
        max_open.load(Ordering::SeqCst)
    );
    assert_eq!(live.load(Ordering::SeqCst), 0);
}
