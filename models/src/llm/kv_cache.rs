//! A per-sequence key/value cache, preallocated once at its capacity and
//! reused across requests (reset sets the length to zero; nothing is freed).
//!
//! Layout per layer: `[kv_heads, capacity, head_dim]`. Any decoder with
//! multi-head attention over one sequence (the LLM, Whisper's decoder) can
//! use it: `append` writes the new keys/values in place and returns views of
//! everything cached so far.

use candle_core::{DType, Device, Result, Tensor};

/// Keys and values of one sequence for every layer.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Allocates `layers` × K/V buffers of `[heads, capacity, head_dim]`.
    pub fn new(
        layers: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let mk = || Tensor::zeros((heads, capacity, head_dim), dtype, dev);
        let k = (0..layers).map(|_| mk()).collect::<Result<Vec<_>>>()?;
        let v = (0..layers).map(|_| mk()).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
        })
    }

    /// Number of positions already cached (committed by `advance`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the contents; the buffers are kept for the next sequence.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Writes `k`, `v` (`[heads, n, head_dim]`) of `layer` at positions
    /// `len..len+n` and returns views of positions `0..len+n`. The length
    /// only grows with `advance`, after every layer has appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        if self.len + n > self.capacity {
            candle_core::bail!(
                "kv cache full: {} + {n} positions exceed its capacity {}",
                self.len,
                self.capacity
            );
        }
        self.k[layer].slice_set(&k.contiguous()?, 1, self.len)?;
        self.v[layer].slice_set(&v.contiguous()?, 1, self.len)?;
        Ok((
            self.k[layer].narrow(1, 0, self.len + n)?,
            self.v[layer].narrow(1, 0, self.len + n)?,
        ))
    }

    /// Commits `n` appended positions.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_place_and_resets() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 2, 3, 4, DType::F32, &dev).unwrap();
        let a = Tensor::ones((2, 2, 3), DType::F32, &dev).unwrap();
        let (k, _) = c.append(0, &a, &a).unwrap();
        assert_eq!(k.dims(), [2, 2, 3]);
        c.advance(2);
        let b = (Tensor::ones((2, 1, 3), DType::F32, &dev).unwrap() * 2.0).unwrap();
        let (k, v) = c.append(0, &b, &b).unwrap();
        c.advance(1);
        assert_eq!(k.dims(), [2, 3, 3]);
        let s: f32 = v.sum_all().unwrap().to_scalar().unwrap();
        // two positions of ones and one of twos, 2 heads x 3 dims each
        assert_eq!(s, 12.0 + 12.0);
        assert!(c.append(0, &a, &a).is_err(), "over capacity must fail");
        c.reset();
        assert!(c.is_empty());
        assert!(c.append(0, &a, &a).is_ok());
    }
}
