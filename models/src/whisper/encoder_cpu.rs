//! CPU float32 kernels of Whisper's encoder, called through candle custom ops:
//! a dense layer with fused bias and erf-GELU, self-attention read straight
//! from the packed `[q | k | v]` projection (one `gemm` per head and query
//! block, no head split/merge copies), and the im2col of the kernel-3
//! convolutions, so the front end is one matmul per convolution.

use super::fastmath;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows per attention work item: the item's scores (rows × keys)
/// stay in L2 and there are enough items to balance the threads.
const QUERY_BLOCK: usize = 64;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => bail!("{what}: f32 only"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: contiguous input only"),
    }
}

/// True when `t` can go through these kernels.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

fn gemm_threads() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `x·wᵀ + b`, then GELU when set: x `[m, k]`, w `[n, k]`, b `[n]` → `[m, n]`.
struct Dense {
    gelu: bool,
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "whisper-dense"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice(xs, xl, "dense")?,
            f32_slice(ws, wl, "dense")?,
            f32_slice(bs, bl, "dense")?,
        );
        let (m, k) = xl.shape().dims2()?;
        let (n, kw) = wl.shape().dims2()?;
        if k != kw || b.len() != n {
            bail!("dense: x [{m}, {k}], w [{n}, {kw}], b [{}]", b.len());
        }
        let mut out = vec![0f32; m * n];
        // SAFETY: the slices hold m·k, n·k and m·n values with the strides given.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm_threads(),
            );
        }
        let rows = (16384 / n.max(1)).max(1);
        out.par_chunks_mut(rows * n)
            .for_each(|c| fastmath::bias_gelu_in_place(c, b, self.gelu));
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// Dense layer on CPU f32 tensors: `x` `[m, k]`, `w` `[n, k]`, `b` `[n]`.
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(w, b, &Dense { gelu })
}

/// Softmax attention of packed `[batch, t, 3·d]` (`q` already scaled) →
/// `[batch, t, d]` with heads concatenated, ready for the output projection.
struct PackedSelfAttention {
    heads: usize,
}

impl CustomOp1 for PackedSelfAttention {
    fn name(&self) -> &'static str {
        "whisper-packed-self-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s, l, "attention")?;
        let (batch, t, d3) = l.shape().dims3()?;
        let d = d3 / 3;
        if d * 3 != d3 || self.heads == 0 || d % self.heads != 0 {
            bail!(
                "attention: width {d3} is not 3 × heads ({}) × head_dim",
                self.heads
            );
        }
        let hd = d / self.heads;
        let blocks = t.div_ceil(QUERY_BLOCK);
        let mut out = vec![0f32; batch * t * d];
        let out_ptr = out.as_mut_ptr() as usize;
        let qkv_ptr = qkv.as_ptr() as usize;
        (0..batch * self.heads * blocks)
            .into_par_iter()
            .for_each_init(
                || vec![0f32; QUERY_BLOCK * t],
                |scores, item| {
                    let blk = item % blocks;
                    let h = (item / blocks) % self.heads;
                    let bi = item / (blocks * self.heads);
                    let s0 = blk * QUERY_BLOCK;
                    let rows = QUERY_BLOCK.min(t - s0);
                    let base = qkv_ptr as *const f32;
                    // SAFETY: every pointer stays inside `qkv` / `out` for the
                    // strides given; items write disjoint (rows × head) tiles of `out`.
                    unsafe {
                        let row0 = base.add(bi * t * d3);
                        let q = row0.add(s0 * d3 + h * hd);
                        let k = row0.add(d + h * hd);
                        let v = row0.add(2 * d + h * hd);
                        // scores[r, j] = q[r]·k[j]
                        gemm::gemm(
                            rows,
                            t,
                            hd,
                            scores.as_mut_ptr(),
                            1,
                            t as isize,
                            false,
                            q,
                            1,
                            d3 as isize,
                            k,
                            d3 as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                        for row in scores[..rows * t].chunks_mut(t) {
                            fastmath::softmax_in_place(row);
                        }
                        let o = (out_ptr as *mut f32).add((bi * t + s0) * d + h * hd);
                        gemm::gemm(
                            rows,
                            hd,
                            t,
                            o,
                            1,
                            d as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            t as isize,
                            v,
                            1,
                            d3 as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((batch, t, d))))
    }
}

/// Self-attention of a packed `[batch, t, 3·d]` projection (CPU f32).
pub fn packed_self_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    qkv.contiguous()?
        .apply_op1_no_bwd(&PackedSelfAttention { heads })
}

/// Columns of a kernel-3, padding-1 convolution: `[batch, c, t]`
/// (channel-major) or `[batch, t, c]` (time-major) → `[batch·t_out, c·3]`,
/// column `ci·3 + j` holding input time `o·stride + j − 1`.
struct Im2Col3 {
    stride: usize,
    time_major: bool,
}

impl CustomOp1 for Im2Col3 {
    fn name(&self) -> &'static str {
        "whisper-im2col3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "im2col")?;
        let (batch, a, b) = l.shape().dims3()?;
        let (c, t) = if self.time_major { (b, a) } else { (a, b) };
        let t_out = (t + 2 - 3) / self.stride + 1;
        let width = c * 3;
        let mut out = vec![0f32; batch * t_out * width];
        let (stride, time_major) = (self.stride, self.time_major);
        out.par_chunks_mut(width).enumerate().for_each(|(r, col)| {
            let (bi, o) = (r / t_out, r % t_out);
            let xb = &x[bi * c * t..(bi + 1) * c * t];
            for j in 0..3 {
                let Some(ti) = (o * stride + j).checked_sub(1).filter(|&ti| ti < t) else {
                    continue;
                };
                if time_major {
                    let src = &xb[ti * c..(ti + 1) * c];
                    for (ci, &v) in src.iter().enumerate() {
                        col[ci * 3 + j] = v;
                    }
                } else {
                    for ci in 0..c {
                        col[ci * 3 + j] = xb[ci * t + ti];
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((batch * t_out, width))))
    }
}

/// im2col of a kernel-3, padding-1 convolution input (CPU f32).
pub fn im2col3(x: &Tensor, stride: usize, time_major: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&Im2Col3 { stride, time_major })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    use crate::runtime::testing::max_abs_diff as max_diff;

    #[test]
    fn dense_matches_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (37, 24), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (19, 24), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 19, &dev)?;
        let want = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        assert!(max_diff(&dense(&x, &w, &b, false)?, &want) < 1e-5);
        let g = dense(&x, &w, &b, true)?;
        assert!(max_diff(&g, &want.gelu_erf()?) < 1e-5);
        Ok(())
    }

    #[test]
    fn packed_attention_matches_reference() -> Result<()> {
        let dev = Device::Cpu;
        let (batch, t, heads, hd) = (2, 70, 3, 4); // two query blocks, a short one
        let d = heads * hd;
        let qkv = Tensor::randn(0f32, 1.0, (batch, t, 3 * d), &dev)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((batch, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let w = candle_nn::ops::softmax(&q.matmul(&k.t()?)?, D::Minus1)?;
        let want = w.matmul(&v)?.transpose(1, 2)?.reshape((batch, t, d))?;
        let got = packed_self_attention(&qkv, heads)?;
        assert!(max_diff(&got, &want) < 1e-5);
        Ok(())
    }

    #[test]
    fn im2col_conv_matches_candle_conv1d() -> Result<()> {
        let dev = Device::Cpu;
        let (batch, c, t, o) = (2, 5, 11, 7);
        let x = Tensor::randn(0f32, 1.0, (batch, c, t), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (o, c, 3), &dev)?;
        let b = Tensor::zeros(o, candle_core::DType::F32, &dev)?;
        for stride in [1, 2] {
            let want = x.conv1d(&w, 1, stride, 1, 1)?.transpose(1, 2)?;
            let w2 = w.reshape((o, c * 3))?;
            for time_major in [false, true] {
                let input = if time_major {
                    x.transpose(1, 2)?.contiguous()?
                } else {
                    x.clone()
                };
                let cols = im2col3(&input, stride, time_major)?;
                let got = dense(&cols, &w2, &b, false)?.reshape(want.shape())?;
                assert!(
                    max_diff(&got, &want) < 1e-5,
                    "stride {stride} tm {time_major}"
                );
            }
        }
        Ok(())
    }
}
