//! Next-token choice from logits: greedy, or temperature / top-k / top-p
//! sampling, with a repetition penalty; deterministic for a given seed.
//! Independent of the model, so any decoder (Whisper too) can use it.

use serde::{Deserialize, Serialize};

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 (or `greedy`) picks the arg-max.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// transformers' penalty: logits of seen tokens divided (if > 0) or
    /// multiplied (if < 0) by it; 1 = off.
    pub repetition_penalty: f32,
    pub greedy: bool,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            greedy: false,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// Checks ranges; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.greedy || self.temperature == 0.0 || self.top_k == 1
    }
}

/// A small deterministic RNG (SplitMix64): same seed, same stream, on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Chooses tokens for one sequence; owns that sequence's RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits` (modified in place); `history` is
    /// every id seen so far (prompt and generated) for the penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l < 0.0 {
                        *l * p.repetition_penalty
                    } else {
                        *l / p.repetition_penalty
                    };
                }
            }
        }
        if p.is_greedy() {
            return argmax(logits);
        }
        let t = p.temperature;
        // candidates sorted by logit (descending), ties by id for determinism
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = if p.top_k == 0 {
            idx.len()
        } else {
            p.top_k.min(idx.len())
        };
        let cmp = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, cmp);
            idx.truncate(k);
        }
        idx.sort_unstable_by(cmp);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| (((logits[i as usize] - max) / t) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            // keep the smallest prefix whose mass reaches top_p (at least one token)
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let mut u = self.rng.next_f64();
        for (i, &q) in probs.iter().enumerate() {
            if u < q {
                return idx[i];
            }
            u -= q;
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest value (first one on ties, like torch.argmax).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalty() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        // 3.0 / 2 = 1.5 < 2.9
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[1, 1]), 2);
        let mut l = [-1.0, 0.5];
        Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        })
        .sample(&mut l, &[0]);
        assert_eq!(l[0], -2.0);
    }

    #[test]
    fn top_k_top_p_and_seed_determinism() {
        let logits = [1.0f32, 2.0, 3.0, 4.0, 0.0];
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..200)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let k2 = draw(SamplingParams {
            top_k: 2,
            seed: 7,
            ..Default::default()
        });
        assert!(k2.iter().all(|&t| t == 2 || t == 3));
        assert!(k2.contains(&2) && k2.contains(&3));
        // top token has p ~ 0.64: top_p 0.5 keeps only it
        let p = draw(SamplingParams {
            top_p: 0.5,
            seed: 7,
            ..Default::default()
        });
        assert!(p.iter().all(|&t| t == 3));
        let a = draw(SamplingParams {
            seed: 42,
            ..Default::default()
        });
        let b = draw(SamplingParams {
            seed: 42,
            ..Default::default()
        });
        let c = draw(SamplingParams {
            seed: 43,
            ..Default::default()
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(
            a.contains(&4) || a.contains(&0),
            "full distribution reaches the tail"
        );
        let low_t = draw(SamplingParams {
            temperature: 0.05,
            seed: 1,
            ..Default::default()
        });
        assert!(low_t.iter().all(|&t| t == 3));
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
