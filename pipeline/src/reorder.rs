//! Per-stream reordering of results that finished out of order.

use crate::item::{Failed, StreamId};
use std::collections::{BTreeMap, HashMap};

/// The outputs produced for one input message (`seq` is the input's).
pub(crate) struct Group<T> {
    pub stream: StreamId,
    pub seq: u64,
    pub outs: Vec<Result<T, Failed>>,
    /// The input was the stream's end marker.
    pub end: bool,
}

/// Releases groups per stream in input sequence order.
pub(crate) struct Reorder<T> {
    streams: HashMap<StreamId, (u64, BTreeMap<u64, Group<T>>)>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            streams: HashMap::new(),
        }
    }
}

impl<T> Reorder<T> {
    /// Add a group; every group now in order is passed to `emit`.
    pub fn push(&mut self, g: Group<T>, mut emit: impl FnMut(Group<T>)) {
        let stream = g.stream;
        let st = self
            .streams
            .entry(stream)
            .or_insert_with(|| (0, BTreeMap::new()));
        if g.seq != st.0 {
            st.1.insert(g.seq, g);
            return;
        }
        let mut next = Some(g);
        let mut ended = false;
        while let Some(g) = next {
            st.0 += 1;
            ended = g.end;
            emit(g);
            next = st.1.remove(&st.0);
        }
        if ended {
            self.streams.remove(&stream);
        }
    }

    /// Groups waiting for an earlier one.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.streams.values().map(|s| s.1.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_per_stream() {
        let mut r = Reorder::<u32>::default();
        let mut got = Vec::new();
        let g = |stream, seq, end| Group {
            stream,
            seq,
            outs: vec![Ok(seq as u32)],
            end,
        };
        r.push(g(1, 1, false), |g| got.push((g.stream, g.seq)));
        r.push(g(2, 0, false), |g| got.push((g.stream, g.seq)));
        r.push(g(1, 2, true), |g| got.push((g.stream, g.seq)));
        assert_eq!(got, vec![(2, 0)]);
        assert_eq!(r.buffered(), 2);
        r.push(g(1, 0, false), |g| got.push((g.stream, g.seq)));
        assert_eq!(got, vec![(2, 0), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(r.buffered(), 0);
        assert!(!r.streams.contains_key(&1), "ended stream is forgotten");
    }
}
