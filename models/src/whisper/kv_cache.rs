//! Decoder caches: self-attention keys/values preallocated once per batch
//! (`[batch, heads, max_len, head_dim]`, written in place) and the
//! cross-attention keys/values of the current audio window.

use candle_core::{DType, Device, Result, Tensor};

/// One layer's self-attention cache, written in place with `slice_set`.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    /// Zeroed cache for `batch` rows of up to `max_len` positions.
    pub fn new(
        batch: usize,
        heads: usize,
        max_len: usize,
        head_dim: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let k = Tensor::zeros((batch, heads, max_len, head_dim), dtype, dev)?;
        let v = Tensor::zeros((batch, heads, max_len, head_dim), dtype, dev)?;
        Ok(Self { k, v, len: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }
    pub fn batch(&self) -> usize {
        self.k.dim(0).unwrap_or(0)
    }

    /// Appends `k`, `v` (`[batch, heads, t, head_dim]`) and returns views of
    /// everything cached so far.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        if self.len + t > self.capacity() {
            candle_core::bail!(
                "decoder context overflow: {} + {t} positions > {}",
                self.len,
                self.capacity()
            );
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += t;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    /// Forgets the cached positions (the allocation is kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (drops a rejected tail).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Reorders the batch rows (beam search): row `i` becomes old row `idx[i]`.
    pub fn reorder(&mut self, idx: &Tensor) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        for buf in [&self.k, &self.v] {
            let picked = buf
                .narrow(2, 0, self.len)?
                .contiguous()?
                .index_select(idx, 0)?;
            buf.slice_set(&picked, 2, 0)?;
        }
        Ok(())
    }
}

/// Every decoder layer's caches for one batch of sequences.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    pub(crate) self_attn: Vec<KvCache>,
    /// Cross-attention keys/values per layer, `[batch, heads, frames, head_dim]`.
    pub(crate) cross: Vec<(Tensor, Tensor)>,
}

impl DecoderCache {
    pub(crate) fn new(self_attn: Vec<KvCache>) -> Self {
        Self {
            self_attn,
            cross: Vec::new(),
        }
    }

    /// Number of decoded positions cached.
    pub fn len(&self) -> usize {
        self.self_attn.first().map_or(0, KvCache::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rows the cache was allocated for.
    pub fn batch(&self) -> usize {
        self.self_attn.first().map_or(0, KvCache::batch)
    }

    /// Forgets self-attention positions; keeps allocations and cross K/V.
    pub fn reset(&mut self) {
        self.self_attn.iter_mut().for_each(KvCache::reset);
    }

    /// Reorders rows of the self- and cross-attention caches (beam search).
    pub fn reorder(&mut self, idx: &Tensor) -> Result<()> {
        for c in &mut self.self_attn {
            c.reorder(idx)?;
        }
        for (k, v) in &mut self.cross {
            *k = k.index_select(idx, 0)?;
            *v = v.index_select(idx, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_reorder_reset() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2, 1, 4, 1, DType::F32, &dev)?;
        let k = Tensor::new(&[[[[1f32], [2.]]], [[[3.], [4.]]]], &dev)?;
        let (kk, _) = c.append(&k, &k)?;
        assert_eq!(kk.flatten_all()?.to_vec1::<f32>()?, vec![1., 2., 3., 4.]);
        let k1 = Tensor::new(&[[[[5f32]]], [[[6.]]]], &dev)?;
        let (kk, _) = c.append(&k1, &k1)?;
        assert_eq!(
            kk.flatten_all()?.to_vec1::<f32>()?,
            vec![1., 2., 5., 3., 4., 6.]
        );
        c.reorder(&Tensor::new(&[1u32, 1], &dev)?)?;
        let (kk, _) = c.append(&k1, &k1)?;
        assert_eq!(
            kk.flatten_all()?.to_vec1::<f32>()?,
            vec![3., 4., 6., 5., 3., 4., 6., 6.]
        );
        assert!(c.append(&k, &k).is_err(), "overflow is an error");
        c.reset();
        assert_eq!(c.len(), 0);
        assert_eq!(c.capacity(), 4);
        Ok(())
    }
}
