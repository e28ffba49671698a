//! Scaled dot-product attention of one sequence's new queries against its
//! cached keys/values, with grouped-query heads and a causal mask.
//! Shared by any decoder that keeps a [`super::KvCache`] per sequence.

use candle_core::{Result, Tensor};

/// `q`: `[heads, n, d]` for the newest `n` positions; `k`, `v`:
/// `[kv_heads, total, d]` (positions `0..total`, the last `n` being the new
/// ones). Returns `[n, heads * d]`. Query heads are grouped per kv head, so
/// GQA needs no copy of the keys.
pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let (heads, n, d) = q.dims3()?;
    let (kv_heads, total, _) = k.dims3()?;
    let rep = heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let q = q.contiguous()?.reshape((kv_heads, rep * n, d))?;
    let mut att = (q.matmul(&k.t()?)? * scale)?;
    if causal && n > 1 {
        let start = total - n;
        let mut mask = Vec::with_capacity(rep * n * total);
        for _ in 0..rep {
            for t in 0..n {
                for j in 0..total {
                    mask.push(if j <= start + t {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (rep * n, total), att.device())?.to_dtype(att.dtype())?;
        att = att.broadcast_add(&mask)?;
    }
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let out = att.matmul(&v.contiguous_if_needed()?)?; // [kv_heads, rep*n, d]
    out.reshape((heads, n, d))?
        .transpose(0, 1)?
        .reshape((n, heads * d))
}

/// `contiguous` only when the matmul kernel could not take the strides.
trait ContiguousIfNeeded {
    fn contiguous_if_needed(&self) -> Result<Tensor>;
}

impl ContiguousIfNeeded for Tensor {
    fn contiguous_if_needed(&self) -> Result<Tensor> {
        // CPU gemm takes any row/col strides; other backends want contiguous rows.
        if self.device().is_cpu() {
            Ok(self.clone())
        } else {
            self.contiguous()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn matches_naive_gqa_attention() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (4, 3, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
        let out = cached_attention(&q, &k, &v, true).unwrap();
        // naive: repeat kv heads, full causal mask offset by 2 cached positions
        for h in 0..4 {
            let kh = k.get(h / 2).unwrap();
            let vh = v.get(h / 2).unwrap();
            for t in 0..3 {
                let qt = q.get(h).unwrap().get(t).unwrap();
                let s = (kh
                    .matmul(&qt.unsqueeze(1).unwrap())
                    .unwrap()
                    .squeeze(1)
                    .unwrap()
                    / 8f64.sqrt())
                .unwrap();
                let s = s.narrow(0, 0, 2 + t + 1).unwrap();
                let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
                let o = p
                    .unsqueeze(0)
                    .unwrap()
                    .matmul(&vh.narrow(0, 0, 3 + t).unwrap())
                    .unwrap();
                let got = out.get(t).unwrap().narrow(0, h * 8, 8).unwrap();
                let diff: f32 = (o.squeeze(0).unwrap() - got)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(diff < 1e-5, "head {h} t {t}: {diff}");
            }
        }
    }
}
