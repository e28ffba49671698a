//! Linear layers with a decode fast path: for a few rows (the batched decode
//! step) on CPU in f32, `y = x·Wᵀ (+ b)` is computed by a kernel that streams
//! each weight row once and dots it with every input row, in parallel over
//! output features. Generic gemm packs the whole weight matrix for such thin
//! inputs, which costs more than the product itself. Other shapes, dtypes
//! and devices go through candle's matmul.

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor};
use rayon::prelude::*;

/// Rows up to which the streaming kernel is used.
pub const SMALL_M: usize = 16;

/// `Linear` with weight `[out, in]` and optional bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(inner: candle_nn::Linear) -> Self {
        Self { inner }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.inner.weight();
        if x.rank() == 2 && x.dim(0)? <= SMALL_M && x.device().is_cpu() && x.dtype() == DType::F32 {
            if let Some(y) = small_m_f32(x, w)? {
                return match self.inner.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
        }
        self.inner.forward(x)
    }
}

/// `x [m, k] · w[n, k]ᵀ` when `w` is a contiguous f32 CPU tensor; `None` otherwise.
fn small_m_f32(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let wd = &data[start..end];
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut out_t = vec![0f32; n * m]; // [n, m]: each weight row writes m adjacent values
    const BLOCK: usize = 64;
    #[cfg(target_arch = "x86_64")]
    let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    out_t
        .par_chunks_mut(BLOCK * m)
        .enumerate()
        .for_each(|(bi, chunk)| {
            let rows = &wd[bi * BLOCK * k..];
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: the CPU supports avx2 and fma (checked above).
                unsafe { block_avx2(&xs, rows, chunk, m, k) };
                return;
            }
            block(&xs, rows, chunk, m, k, dot);
        });
    drop(storage);
    let y = Tensor::from_vec(out_t, (n, m), x.device())?
        .t()?
        .contiguous()?;
    Ok(Some(y))
}

/// One block of output features: `chunk[jj*m + i] = x_i · w_jj`.
#[inline(always)]
fn block(
    xs: &[f32],
    rows: &[f32],
    chunk: &mut [f32],
    m: usize,
    k: usize,
    dot: impl Fn(&[f32], &[f32]) -> f32,
) {
    for (jj, outs) in chunk.chunks_mut(m).enumerate() {
        let row = &rows[jj * k..(jj + 1) * k];
        for (i, o) in outs.iter_mut().enumerate() {
            *o = dot(&xs[i * k..(i + 1) * k], row);
        }
    }
}

/// `block` compiled for AVX2 + FMA (8-wide fused multiply-adds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(xs: &[f32], rows: &[f32], chunk: &mut [f32], m: usize, k: usize) {
    block(xs, rows, chunk, m, k, dot_fma)
}

/// Like [`dot`] with fused multiply-adds (only fast where FMA is enabled).
#[inline(always)]
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        // fixed-size arrays: no bounds checks, so the lanes vectorize
        let x: &[f32; 16] = x.try_into().expect("chunk of 16");
        let y: &[f32; 16] = y.try_into().expect("chunk of 16");
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s = 0f32;
    for l in 0..8 {
        s += acc[l] + acc[l + 8];
    }
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Dot product with 8 independent accumulators (vectorizes without fast-math).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let x: &[f32; 8] = x.try_into().expect("chunk of 8");
        let y: &[f32; 8] = y.try_into().expect("chunk of 8");
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn small_m_matches_candle_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (70, 37), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        let lin = Linear::new(candle_nn::Linear::new(w.clone(), Some(b.clone())));
        for m in [1, 3, 16, 17] {
            let x = Tensor::randn(0f32, 1.0, (m, 37), &dev).unwrap();
            let want = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let got = lin.forward(&x).unwrap();
            let d: f32 = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-4, "m={m}: {d}");
        }
    }
}
