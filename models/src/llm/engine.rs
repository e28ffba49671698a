//! Generation with continuous batching: up to `max_batch` sequences decode
//! together; when one finishes, its preallocated cache slot is reset and the
//! next waiting request is prefilled into it while the others carry on.

use super::kv_cache::KvCache;
use super::model::{Decoder, SeqInput};
use super::sampling::{Sampler, SamplingParams};
use super::{LlmError, Result};
use crate::text::TextTokenizer;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops once the decoded text contains one of these; the
    /// text is cut before it (the ids keep the token that completed it).
    pub stop_strings: Vec<String>,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence id was generated (it is the last of `ids`).
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` or the context was reached.
    Length,
    /// Stopped early by [`Engine::run_until`]'s stop flag (e.g. Ctrl-C).
    Interrupted,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// Generated ids (not the prompt).
    pub ids: Vec<u32>,
    /// Decoded generated text without special tokens (empty without a tokenizer).
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub finish: FinishReason,
    /// Wall time from admission (prefill start) to the last token.
    pub seconds: f64,
}

struct Active {
    idx: usize,
    slot: usize,
    req: GenerateRequest,
    sampler: Sampler,
    history: Vec<u32>,
    generated: Vec<u32>,
    start: Instant,
}

/// Counters of one `run`, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineStats {
    pub prefill_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_tokens: usize,
    pub decode_seconds: f64,
    pub decode_steps: usize,
    pub max_active: usize,
}

/// A continuous-batching generator over one [`Decoder`].
pub struct Engine<'m> {
    model: &'m Decoder,
    tokenizer: Option<&'m TextTokenizer>,
    eos: Vec<u32>,
    max_batch: usize,
    capacity: usize,
    slots: Vec<KvCache>,
    pub stats: EngineStats,
}

impl<'m> Engine<'m> {
    /// `capacity` is the per-sequence context (prompt + generated), capped by
    /// the model's `max_position_embeddings`; caches are allocated on first
    /// use and reused.
    pub fn new(
        model: &'m Decoder,
        tokenizer: Option<&'m TextTokenizer>,
        eos: Vec<u32>,
        max_batch: usize,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.min(model.config().max_position_embeddings).max(1);
        Self {
            model,
            tokenizer,
            eos,
            max_batch: max_batch.max(1),
            capacity,
            slots: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs every request; `on_done(index, result)` is called as each one
    /// finishes (not in input order). A failing request never stops the others.
    pub fn run<F>(&mut self, requests: Vec<GenerateRequest>, on_done: F)
    where
        F: FnMut(usize, Result<Generation>),
    {
        self.run_until(requests, &AtomicBool::new(false), on_done);
    }

    /// Like [`Engine::run`], checking `stop` before every step: once it is
    /// set, running sequences finish at once with what they generated so far
    /// ([`FinishReason::Interrupted`]) and waiting requests are not started
    /// (no `on_done` for them). Returns the number of requests not started.
    pub fn run_until<F>(
        &mut self,
        requests: Vec<GenerateRequest>,
        stop: &AtomicBool,
        mut on_done: F,
    ) -> usize
    where
        F: FnMut(usize, Result<Generation>),
    {
        let mut queue: VecDeque<(usize, GenerateRequest)> =
            requests.into_iter().enumerate().collect();
        let mut active: Vec<Active> = Vec::new();
        let mut free: Vec<usize> = (0..self.slots.len()).rev().collect();
        while !queue.is_empty() || !active.is_empty() {
            if stop.load(Ordering::SeqCst) {
                active.sort_by_key(|a| a.idx);
                for a in active {
                    let text = self.decode(&a.generated);
                    on_done(
                        a.idx,
                        text.map(|text| Generation {
                            prompt_tokens: a.req.prompt_ids.len(),
                            generated_tokens: a.generated.len(),
                            ids: a.generated,
                            text,
                            finish: FinishReason::Interrupted,
                            seconds: a.start.elapsed().as_secs_f64(),
                        }),
                    );
                }
                return queue.len();
            }
            // 1. admit waiting requests into free slots and prefill them together
            let mut admitted = Vec::new();
            while active.len() + admitted.len() < self.max_batch {
                let Some((idx, req)) = queue.pop_front() else {
                    break;
                };
                if let Err(e) = self.validate(&req) {
                    on_done(idx, Err(e));
                    continue;
                }
                let slot = match free.pop() {
                    Some(s) => s,
                    None => match self.model.new_cache(self.capacity) {
                        Ok(c) => {
                            self.slots.push(c);
                            self.slots.len() - 1
                        }
                        Err(e) => {
                            on_done(idx, Err(e));
                            continue;
                        }
                    },
                };
                self.slots[slot].reset();
                let sampler = Sampler::new(req.sampling.clone());
                let history = req.prompt_ids.clone();
                admitted.push(Active {
                    idx,
                    slot,
                    req,
                    sampler,
                    history,
                    generated: Vec::new(),
                    start: Instant::now(),
                });
            }
            if !admitted.is_empty() {
                let t0 = Instant::now();
                let inputs: Vec<Vec<u32>> =
                    admitted.iter().map(|a| a.req.prompt_ids.clone()).collect();
                let n_tok: usize = inputs.iter().map(Vec::len).sum();
                let res = self.step(&admitted, &inputs);
                self.stats.prefill_tokens += n_tok;
                self.stats.prefill_seconds += t0.elapsed().as_secs_f64();
                self.finish_step(res, admitted, &mut active, &mut free, &mut on_done);
            }
            self.stats.max_active = self.stats.max_active.max(active.len());
            // 2. one decode step for every running sequence
            if !active.is_empty() {
                let t0 = Instant::now();
                let batch = std::mem::take(&mut active);
                let inputs: Vec<Vec<u32>> = batch
                    .iter()
                    .map(|a| vec![*a.generated.last().expect("sampled")])
                    .collect();
                let res = self.step(&batch, &inputs);
                self.stats.decode_tokens += batch.len();
                self.stats.decode_steps += 1;
                self.stats.decode_seconds += t0.elapsed().as_secs_f64();
                self.finish_step(res, batch, &mut active, &mut free, &mut on_done);
            }
        }
        0
    }

    fn validate(&self, req: &GenerateRequest) -> Result<()> {
        let n = req.prompt_ids.len();
        if n == 0 {
            return Err(LlmError::Input("empty prompt".into()));
        }
        if n >= self.capacity {
            return Err(LlmError::PromptTooLong {
                tokens: n,
                context: self.capacity,
            });
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&id) = req.prompt_ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(LlmError::IdOutOfVocab { id, vocab });
        }
        req.sampling.validate().map_err(LlmError::Input)?;
        if req.max_new_tokens == 0 {
            return Err(LlmError::Input("max_new_tokens must be > 0".into()));
        }
        if !req.stop_strings.is_empty() && self.tokenizer.is_none() {
            return Err(LlmError::Input("stop strings need a tokenizer".into()));
        }
        Ok(())
    }

    /// One forward over `batch` with `inputs[i]` new tokens each; rows of logits.
    fn step(&mut self, batch: &[Active], inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<SeqInput> = inputs.iter().map(|t| SeqInput { tokens: t }).collect();
        let slots: Vec<usize> = batch.iter().map(|a| a.slot).collect();
        let mut caches = pick_mut(&mut self.slots, &slots);
        let logits = self.model.forward(&seqs, &mut caches, false)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Samples the next token of each sequence, finishes the done ones.
    fn finish_step<F>(
        &mut self,
        res: Result<Vec<Vec<f32>>>,
        batch: Vec<Active>,
        active: &mut Vec<Active>,
        free: &mut Vec<usize>,
        on_done: &mut F,
    ) where
        F: FnMut(usize, Result<Generation>),
    {
        let rows = match res {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                for a in batch {
                    free.push(a.slot);
                    on_done(
                        a.idx,
                        Err(LlmError::Input(format!("forward failed: {msg}"))),
                    );
                }
                return;
            }
        };
        for (mut a, mut row) in batch.into_iter().zip(rows) {
            let tok = a.sampler.sample(&mut row, &a.history);
            a.history.push(tok);
            a.generated.push(tok);
            match self.check_finish(&a) {
                Ok(None) => active.push(a),
                Ok(Some((finish, text))) => {
                    free.push(a.slot);
                    let g = Generation {
                        prompt_tokens: a.req.prompt_ids.len(),
                        generated_tokens: a.generated.len(),
                        ids: a.generated,
                        text,
                        finish,
                        seconds: a.start.elapsed().as_secs_f64(),
                    };
                    on_done(a.idx, Ok(g));
                }
                Err(e) => {
                    free.push(a.slot);
                    on_done(a.idx, Err(e));
                }
            }
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self.tokenizer {
            Some(t) => Ok(t.decode(ids, true)?),
            None => Ok(String::new()),
        }
    }

    fn check_finish(&self, a: &Active) -> Result<Option<(FinishReason, String)>> {
        let last = *a.generated.last().expect("one token");
        if self.eos.contains(&last) {
            return Ok(Some((FinishReason::Eos, self.decode(&a.generated)?)));
        }
        if !a.req.stop_strings.is_empty() {
            let text = self.decode(&a.generated)?;
            let hit = a
                .req
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            if let Some(cut) = hit {
                return Ok(Some((FinishReason::Stop, text[..cut].to_string())));
            }
        }
        // the next decode step needs room for one more position
        let used = a.req.prompt_ids.len() + a.generated.len();
        if a.generated.len() >= a.req.max_new_tokens || used >= self.capacity {
            return Ok(Some((FinishReason::Length, self.decode(&a.generated)?)));
        }
        Ok(None)
    }
}

/// Distinct mutable references to `v[idx[0]], v[idx[1]], ...` (indices unique).
fn pick_mut<'a, T>(v: &'a mut [T], idx: &[usize]) -> Vec<&'a mut T> {
    let mut slots: Vec<Option<&'a mut T>> = v.iter_mut().map(Some).collect();
    idx.iter()
        .map(|&i| slots[i].take().expect("slot used twice in one batch"))
        .collect()
}
