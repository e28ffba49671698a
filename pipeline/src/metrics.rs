//! Per-stage counters, readable live (progress bars) and as an end summary.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Live counters of one node (updated with relaxed atomics).
#[derive(Debug)]
pub struct StageMetrics {
    pub name: String,
    pub kind: &'static str,
    pub workers: usize,
    /// Capacity of the node's input queue (0 for sources).
    pub queue_cap: usize,
    pub(crate) items_in: AtomicU64,
    pub(crate) items_out: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) queues: Vec<Arc<AtomicUsize>>,
}

impl StageMetrics {
    pub(crate) fn new(
        name: &str,
        kind: &'static str,
        workers: usize,
        queue_cap: usize,
        queues: Vec<Arc<AtomicUsize>>,
    ) -> Arc<Self> {
        Arc::new(StageMetrics {
            name: name.to_string(),
            kind,
            workers,
            queue_cap,
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            queues,
        })
    }
    pub(crate) fn busy(&self, d: Duration) {
        self.busy_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    /// A copy of the counters now.
    pub fn snapshot(&self) -> StageStats {
        StageStats {
            name: self.name.clone(),
            kind: self.kind,
            workers: self.workers,
            items_in: self.items_in.load(Relaxed),
            items_out: self.items_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            streams: self.streams.load(Relaxed),
            busy: Duration::from_nanos(self.busy_ns.load(Relaxed)),
            batches: self.batches.load(Relaxed),
            queue_hw: self
                .queues
                .iter()
                .map(|q| q.load(Relaxed))
                .max()
                .unwrap_or(0),
            queue_cap: self.queue_cap,
        }
    }
}

/// Counters of one node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStats {
    pub name: String,
    /// `source`, `stage`, `batch`, `tee`, `merge` or `sink`.
    pub kind: &'static str,
    pub workers: usize,
    /// Items received (sources: items emitted).
    pub items_in: u64,
    /// Items sent downstream (sinks: items written).
    pub items_out: u64,
    /// Items this node turned into `Failed`.
    pub errors: u64,
    /// Streams ended (sources: streams opened; sinks: streams completed).
    pub streams: u64,
    /// Time spent in the stage's own code, summed over workers.
    pub busy: Duration,
    /// Batches run (batching stages only).
    pub batches: u64,
    /// Highest input queue depth seen (never above `queue_cap`).
    pub queue_hw: usize,
    pub queue_cap: usize,
}

/// Live view of every node's counters, in graph order.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub(crate) Vec<Arc<StageMetrics>>);

impl Metrics {
    /// A snapshot of every node.
    pub fn snapshot(&self) -> Vec<StageStats> {
        self.0.iter().map(|m| m.snapshot()).collect()
    }
    /// Streams completed at the sinks so far (summed over sinks).
    pub fn streams_done(&self) -> u64 {
        self.0
            .iter()
            .filter(|m| m.kind == "sink")
            .map(|m| m.streams.load(Relaxed))
            .sum()
    }
    /// Streams opened by the sources so far.
    pub fn streams_started(&self) -> u64 {
        self.0
            .iter()
            .filter(|m| m.kind == "source")
            .map(|m| m.streams.load(Relaxed))
            .sum()
    }
}

/// End-of-run summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub stages: Vec<StageStats>,
    pub wall: Duration,
    /// True when the run was cancelled (sources stopped early).
    pub cancelled: bool,
}

impl Report {
    /// The stats of the node called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>6} {:>3} {:>9} {:>9} {:>6} {:>10} {:>6} {:>9}",
            "stage", "kind", "w", "in", "out", "errors", "busy_s", "busy%", "queue_hw"
        )?;
        let wall = self.wall.as_secs_f64().max(1e-9);
        for s in &self.stages {
            let util = 100.0 * s.busy.as_secs_f64() / (wall * s.workers.max(1) as f64);
            let q = if s.queue_cap > 0 {
                format!("{}/{}", s.queue_hw, s.queue_cap)
            } else {
                "-".to_string()
            };
            writeln!(
                f,
                "{:<16} {:>6} {:>3} {:>9} {:>9} {:>6} {:>10.3} {:>5.0}% {:>9}",
                s.name,
                s.kind,
                s.workers,
                s.items_in,
                s.items_out,
                s.errors,
                s.busy.as_secs_f64(),
                util,
                q
            )?;
        }
        write!(
            f,
            "wall {:.3}s{}",
            self.wall.as_secs_f64(),
            if self.cancelled { " (cancelled)" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table_lists_every_stage() {
        let m = StageMetrics::new("decode", "stage", 2, 8, vec![Arc::new(AtomicUsize::new(5))]);
        m.items_in.fetch_add(10, Relaxed);
        m.errors.fetch_add(1, Relaxed);
        m.busy(Duration::from_millis(500));
        let r = Report {
            stages: vec![m.snapshot()],
            wall: Duration::from_secs(1),
            cancelled: false,
        };
        let s = r.to_string();
        assert!(s.lines().nth(1).unwrap().starts_with("decode"), "{s}");
        assert!(s.contains("5/8") && s.contains("25%"), "{s}");
        assert_eq!(r.stage("decode").unwrap().queue_hw, 5);
    }
}
