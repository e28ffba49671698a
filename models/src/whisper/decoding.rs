//! Decoding of one window (30 s for released models) per batch row, after openai-whisper's
//! `decoding.py`: language detection, greedy / sampling / beam search,
//! the suppress-tokens, suppress-blank and timestamp rules, no-speech
//! probability, and the scores used by temperature fallback.
//!
//! With every heuristic off (no suppression, no timestamps, temperature 0)
//! greedy decoding is exactly `transformers`' `generate` with the same
//! forced prompt.

use super::kv_cache::DecoderCache;
use super::tokenizer::{Task, WhisperTokenizer};
use super::{Result, Whisper, WhisperError};
use candle_core::{Tensor, D};
use std::collections::HashMap;

/// Which tokens are suppressed at every step.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Suppress {
    /// `generation_config.json`'s `suppress_tokens` (openai-whisper's
    /// non-speech symbols and special tokens when the file has no list).
    #[default]
    Default,
    /// Nothing suppressed (`--suppress-tokens none`).
    None,
    /// Exactly these ids.
    List(Vec<u32>),
}

/// Options for decoding one window (one temperature).
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub task: Task,
    /// Language code; `None` detects it per window.
    pub language: Option<String>,
    /// Beam width for temperature 0; `None` or 1 is greedy.
    pub beam_size: Option<usize>,
    /// Number of samples (best picked) at temperature > 0.
    pub best_of: usize,
    /// Beam search patience (openai-whisper): finished candidates = beam × patience.
    pub patience: f64,
    /// `None`: rank by sum log-prob / length; `Some(a)`: Google NMT penalty.
    pub length_penalty: Option<f64>,
    pub suppress: Suppress,
    /// Suppress " " and end-of-text as the first sampled token
    /// (`generation_config`'s `begin_suppress_tokens`).
    pub suppress_blank: bool,
    pub without_timestamps: bool,
    /// Latest allowed first timestamp in seconds (openai: 1.0); `None`: no limit.
    pub max_initial_timestamp: Option<f64>,
    /// Maximum number of sampled tokens (openai: 224 = half the context).
    pub sample_len: usize,
    /// Seed of the sampler used at temperature > 0.
    pub seed: u64,
    /// Long-form (openai `transcribe`): text given as the previous-text
    /// prompt of the first window.
    pub initial_prompt: Option<String>,
    /// Long-form: prompt each window with the text so far (reset after a
    /// window whose final temperature was above 0.5).
    pub condition_on_previous_text: bool,
    /// Long-form: word-level timestamps (see [`super::timing`]).
    pub word_timestamps: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            beam_size: None,
            best_of: 5,
            patience: 1.0,
            length_penalty: None,
            suppress: Suppress::Default,
            suppress_blank: true,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
            sample_len: 224,
            seed: 0,
            initial_prompt: None,
            condition_on_previous_text: true,
            word_timestamps: false,
        }
    }
}

impl DecodeOptions {
    /// Every heuristic off: plain greedy with the forced prompt.
    pub fn plain() -> Self {
        Self {
            suppress: Suppress::None,
            suppress_blank: false,
            without_timestamps: true,
            max_initial_timestamp: None,
            condition_on_previous_text: false,
            ..Self::default()
        }
    }
}

/// What decoding one window produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodingResult {
    /// Sampled tokens, without the prompt and the final end-of-text.
    pub tokens: Vec<u32>,
    pub text: String,
    pub language: String,
    pub avg_logprob: f64,
    pub sum_logprob: f64,
    pub no_speech_prob: f64,
    pub temperature: f64,
    pub compression_ratio: f64,
}

/// Runs windows through the decoder, reusing one preallocated KV cache per
/// batch row count.
pub struct Decoder<'a> {
    w: &'a Whisper,
    caches: HashMap<usize, DecoderCache>,
}

impl<'a> Decoder<'a> {
    pub fn new(w: &'a Whisper) -> Self {
        Self {
            w,
            caches: HashMap::new(),
        }
    }

    fn tok(&self) -> &'a WhisperTokenizer {
        &self.w.tokenizer
    }

    /// The cache for `rows` rows, allocated on first use (at most two kept).
    fn cache(&mut self, rows: usize) -> Result<DecoderCache> {
        if let Some(c) = self.caches.remove(&rows) {
            return Ok(c);
        }
        if self.caches.len() >= 2 {
            self.caches.clear();
        }
        Ok(self.w.model.decoder.new_cache(rows)?)
    }

    fn put_back(&mut self, cache: DecoderCache) {
        self.caches.insert(cache.batch(), cache);
    }

    /// Most likely language of each row of `audio` (`[batch, frames, d]`):
    /// (token id, probability among the language tokens).
    pub fn detect_language(&mut self, audio: &Tensor) -> Result<Vec<(u32, f64)>> {
        let tok = self.tok();
        if tok.languages.is_empty() {
            return Err(WhisperError::Options(
                "this model has no language tokens".into(),
            ));
        }
        let b = audio.dim(0)?;
        let mut cache = self.cache(b)?;
        let dec = &self.w.model.decoder;
        dec.start(&mut cache, audio)?;
        let sot = Tensor::new(vec![tok.sot; b], self.w.model.device())?.reshape((b, 1))?;
        let h = dec.forward(&sot, &mut cache)?;
        let logits: Vec<Vec<f32>> = dec.logits(&h)?.squeeze(1)?.to_vec2()?;
        self.put_back(cache);
        let langs: Vec<u32> = tok.languages.values().copied().collect();
        Ok(logits
            .iter()
            .map(|row| {
                let l: Vec<f64> = langs.iter().map(|&i| row[i as usize] as f64).collect();
                let p = softmax(&l);
                let (best, pb) =
                    p.iter()
                        .enumerate()
                        .fold((0, -1.0), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
                (langs[best], pb)
            })
            .collect())
    }

    /// Decodes one window per row of `audio` at `temperature`. `languages`
    /// gives each row's language token (ignored by English-only models).
    pub fn decode(
        &mut self,
        audio: &Tensor,
        languages: &[u32],
        opts: &DecodeOptions,
        temperature: f64,
    ) -> Result<Vec<DecodingResult>> {
        self.decode_with_prompts(audio, languages, &[], opts, temperature)
    }

    /// The decoder prefix for previous-text `prompt` tokens: openai-whisper's
    /// `<|startofprev|>` + the last `n_ctx / 2 - 1` (223) tokens; empty for none.
    pub fn prompt_prefix(&self, prompt: &[u32]) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Ok(Vec::new());
        }
        let prev = self.tok().sot_prev.ok_or_else(|| {
            WhisperError::Options("this model has no <|startofprev|> token for prompts".into())
        })?;
        let keep = (self.w.model.decoder.max_len() / 2).saturating_sub(1);
        let mut p = vec![prev];
        p.extend_from_slice(&prompt[prompt.len().saturating_sub(keep)..]);
        Ok(p)
    }

    /// Like [`Decoder::decode`], with previous-text tokens per row (`prompts`
    /// empty, or one list per row; an empty list is no prompt), as
    /// openai-whisper's `DecodingOptions.prompt`. Rows whose prefixes differ
    /// in length are decoded in separate groups (exact, no padding).
    pub fn decode_with_prompts(
        &mut self,
        audio: &Tensor,
        languages: &[u32],
        prompts: &[Vec<u32>],
        opts: &DecodeOptions,
        temperature: f64,
    ) -> Result<Vec<DecodingResult>> {
        let n_audio = audio.dim(0)?;
        if languages.len() != n_audio || !(prompts.is_empty() || prompts.len() == n_audio) {
            return Err(WhisperError::Options(
                "one language (and prompt) per audio row is needed".into(),
            ));
        }
        let prefixes: Vec<Vec<u32>> = (0..n_audio)
            .map(|r| self.prompt_prefix(prompts.get(r).map_or(&[][..], |p| p)))
            .collect::<Result<_>>()?;
        let mut lens: Vec<usize> = prefixes.iter().map(Vec::len).collect();
        lens.sort_unstable();
        lens.dedup();
        if lens.len() <= 1 {
            return self.decode_group(audio, languages, &prefixes, opts, temperature);
        }
        let mut out: Vec<Option<DecodingResult>> = vec![None; n_audio];
        for len in lens {
            let rows: Vec<usize> = (0..n_audio).filter(|&r| prefixes[r].len() == len).collect();
            let idx = Tensor::new(
                rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                audio.device(),
            )?;
            let sub = audio.index_select(&idx, 0)?;
            let l: Vec<u32> = rows.iter().map(|&r| languages[r]).collect();
            let p: Vec<Vec<u32>> = rows.iter().map(|&r| prefixes[r].clone()).collect();
            for (&r, res) in rows
                .iter()
                .zip(self.decode_group(&sub, &l, &p, opts, temperature)?)
            {
                out[r] = Some(res);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every row decoded"))
            .collect())
    }

    /// Decodes rows whose decoder prefixes (`<|startofprev|>` ...) have one length.
    fn decode_group(
        &mut self,
        audio: &Tensor,
        languages: &[u32],
        prefixes: &[Vec<u32>],
        opts: &DecodeOptions,
        temperature: f64,
    ) -> Result<Vec<DecodingResult>> {
        let tok = self.tok();
        let n_audio = audio.dim(0)?;
        let sot_index = prefixes.first().map_or(0, Vec::len);
        let beam = opts.beam_size.filter(|&b| b > 1 && temperature == 0.0);
        let group = match beam {
            Some(b) => b,
            None if temperature > 0.0 => opts.best_of.max(1),
            None => 1,
        };
        let prompts: Vec<Vec<u32>> = languages
            .iter()
            .zip(prefixes)
            .map(|(&l, pre)| {
                let mut p = pre.clone();
                p.extend(tok.prompt(Some(l), opts.task, !opts.without_timestamps));
                p
            })
            .collect();
        let plen = prompts[0].len();
        let max_new = opts
            .sample_len
            .min(self.w.model.decoder.max_len().saturating_sub(plen));
        let rows = n_audio * group;
        let dev = self.w.model.device().clone();

        // Repeat each audio row `group` times (beams or samples).
        let audio_rows = if group > 1 {
            let idx: Vec<u32> = (0..rows as u32).map(|r| r / group as u32).collect();
            audio.index_select(&Tensor::new(idx, &dev)?, 0)?
        } else {
            audio.clone()
        };
        let mut cache = self.cache(rows)?;
        let dec = &self.w.model.decoder;
        dec.start(&mut cache, &audio_rows)?;
        let mut seqs: Vec<Vec<u32>> = (0..rows).map(|r| prompts[r / group].clone()).collect();
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        let input = Tensor::new(flat, &dev)?.reshape((rows, plen))?;
        let h = dec.forward(&input, &mut cache)?;
        // No-speech probability from the logits at <|startoftranscript|>.
        let no_speech: Vec<f64> = match tok.no_speech {
            Some(ns) => {
                let first = dec.logits(&h.narrow(1, sot_index, 1)?)?.squeeze(1)?;
                let p = candle_nn::ops::softmax_last_dim(&first)?;
                let p: Vec<f32> = p
                    .narrow(D::Minus1, ns as usize, 1)?
                    .flatten_all()?
                    .to_vec1()?;
                p.into_iter().map(f64::from).collect()
            }
            None => vec![0.0; rows],
        };
        let mut logits: Vec<Vec<f32>> = dec
            .logits(&h.narrow(1, plen - 1, 1)?)?
            .squeeze(1)?
            .to_vec2()?;

        let filters = Filters::new(self.w, opts, plen);
        let mut sum_lp = vec![0f64; rows];
        let mut rng = Rng::new(opts.seed ^ (temperature.to_bits()));
        let mut finished: Vec<Vec<(Vec<u32>, f64)>> = vec![Vec::new(); n_audio];
        let max_cand = ((group as f64) * opts.patience).round().max(1.0) as usize;

        for _ in 0..max_new {
            for (r, l) in logits.iter_mut().enumerate() {
                filters.apply(l, &seqs[r]);
            }
            let next: Vec<u32>;
            if let Some(bw) = beam {
                let (new_seqs, src, new_lp, done) = beam_step(
                    &logits,
                    &seqs,
                    &sum_lp,
                    n_audio,
                    bw,
                    tok.eot,
                    &mut finished,
                    max_cand,
                );
                let idx = Tensor::new(src.iter().map(|&s| s as u32).collect::<Vec<_>>(), &dev)?;
                cache.reorder(&idx)?;
                next = new_seqs
                    .iter()
                    .map(|s| *s.last().unwrap_or(&tok.eot))
                    .collect();
                seqs = new_seqs;
                sum_lp = new_lp;
                if done {
                    break;
                }
            } else {
                let mut n = Vec::with_capacity(rows);
                for (r, l) in logits.iter().enumerate() {
                    let last = *seqs[r].last().unwrap_or(&tok.sot);
                    let t = if last == tok.eot && seqs[r].len() > plen {
                        tok.eot
                    } else if temperature == 0.0 {
                        argmax(l)
                    } else {
                        rng.categorical(l, temperature)
                    };
                    if !(last == tok.eot && seqs[r].len() > plen) {
                        sum_lp[r] += log_softmax_at(l, t as usize);
                    }
                    seqs[r].push(t);
                    n.push(t);
                }
                next = n;
                if seqs.iter().all(|s| s.last() == Some(&tok.eot)) {
                    break;
                }
            }
            if seqs[0].len() >= plen + max_new {
                break;
            }
            let input = Tensor::new(next, &dev)?.reshape((rows, 1))?;
            let h = dec.forward(&input, &mut cache)?;
            logits = dec.logits(&h)?.squeeze(1)?.to_vec2()?;
        }
        self.put_back(cache);

        // Candidates per audio, then rank.
        let mut out = Vec::with_capacity(n_audio);
        for a in 0..n_audio {
            let cands: Vec<(Vec<u32>, f64)> = if beam.is_some() {
                let mut f = std::mem::take(&mut finished[a]);
                if f.len() < group {
                    let mut order: Vec<usize> = (0..group).collect();
                    order.sort_by(|&x, &y| sum_lp[a * group + y].total_cmp(&sum_lp[a * group + x]));
                    for j in order {
                        if f.len() >= group {
                            break;
                        }
                        f.push((seqs[a * group + j].clone(), sum_lp[a * group + j]));
                    }
                }
                f
            } else {
                (0..group)
                    .map(|j| (seqs[a * group + j].clone(), sum_lp[a * group + j]))
                    .collect()
            };
            let mut best: Option<(f64, Vec<u32>, f64)> = None;
            for (s, lp) in cands {
                let mut t: Vec<u32> = s[plen.min(s.len())..].to_vec();
                if let Some(e) = t.iter().position(|&x| x == tok.eot) {
                    t.truncate(e);
                }
                let len = t.len() as f64;
                let penalty = match opts.length_penalty {
                    None => len,
                    Some(a) => ((5.0 + len) / 6.0).powf(a),
                };
                let score = lp / penalty.max(f64::MIN_POSITIVE);
                if best.as_ref().is_none_or(|b| score > b.0) {
                    best = Some((score, t, lp));
                }
            }
            let (_, tokens, lp) = best.unwrap_or((0.0, Vec::new(), 0.0));
            let text = tok.decode(&tokens)?;
            let language = tok
                .language_code(languages[a])
                .map(str::to_string)
                .unwrap_or_else(|| {
                    if tok.multilingual {
                        String::new()
                    } else {
                        "en".into()
                    }
                });
            out.push(DecodingResult {
                avg_logprob: lp / (tokens.len() as f64 + 1.0),
                sum_logprob: lp,
                compression_ratio: compression_ratio(&text),
                no_speech_prob: no_speech[a * group],
                tokens,
                text,
                language,
                temperature,
            });
        }
        Ok(out)
    }
}

/// One beam search step for every audio (openai-whisper's
/// `BeamSearchDecoder.update`). Returns the new sequences, their source
/// rows, their scores, and whether every audio has enough finished candidates.
#[allow(clippy::too_many_arguments)]
fn beam_step(
    logits: &[Vec<f32>],
    seqs: &[Vec<u32>],
    sum_lp: &[f64],
    n_audio: usize,
    beam: usize,
    eot: u32,
    finished: &mut [Vec<(Vec<u32>, f64)>],
    max_cand: usize,
) -> (Vec<Vec<u32>>, Vec<usize>, Vec<f64>, bool) {
    let mut new_seqs = Vec::with_capacity(seqs.len());
    let mut src = Vec::with_capacity(seqs.len());
    let mut new_lp = Vec::with_capacity(seqs.len());
    for (a, fin) in finished.iter_mut().enumerate().take(n_audio) {
        let mut scores: Vec<(f64, usize, u32)> = Vec::new();
        for j in 0..beam {
            let r = a * beam + j;
            let lp = log_softmax(&logits[r]);
            for (t, v) in top_k(&lp, beam + 1) {
                scores.push((sum_lp[r] + v, r, t));
            }
        }
        // Stable sort by score (descending), ties by insertion order as Python's sorted.
        scores.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut newly: Vec<(Vec<u32>, f64)> = Vec::new();
        let mut saved = 0;
        for (s, r, t) in scores {
            let mut seq = seqs[r].clone();
            seq.push(t);
            if t == eot {
                newly.push((seq, s));
            } else {
                new_seqs.push(seq);
                src.push(r);
                new_lp.push(s);
                saved += 1;
                if saved == beam {
                    break;
                }
            }
        }
        for (seq, s) in newly {
            if fin.len() >= max_cand {
                break;
            }
            if !fin.iter().any(|(f, _)| *f == seq) {
                fin.push((seq, s));
            }
        }
    }
    let done = finished.iter().all(|f| f.len() >= max_cand);
    (new_seqs, src, new_lp, done)
}

/// The logit filters of one decoding pass.
struct Filters {
    suppress: Vec<u32>,
    begin_suppress: Vec<u32>,
    timestamps: bool,
    sample_begin: usize,
    eot: u32,
    no_timestamps: u32,
    ts_begin: u32,
    max_initial: Option<u32>,
    /// Last timestamp index inside the window (`max_source_positions`: 1500 = 30.00 s).
    max_ts: usize,
}

impl Filters {
    fn new(w: &Whisper, o: &DecodeOptions, sample_begin: usize) -> Self {
        let tok = &w.tokenizer;
        let g = &w.generation;
        let suppress = match &o.suppress {
            Suppress::None => Vec::new(),
            Suppress::List(l) => l.clone(),
            Suppress::Default => g.suppress_tokens.clone().unwrap_or_else(|| {
                let mut s = tok.non_speech_tokens();
                s.extend([tok.transcribe, tok.translate, tok.sot]);
                s.extend(tok.sot_prev.iter().chain(&tok.sot_lm).chain(&tok.no_speech));
                s
            }),
        };
        let begin_suppress = if o.suppress_blank {
            g.begin_suppress_tokens.clone().unwrap_or_else(|| {
                let mut b: Vec<u32> = tok.encode(" ").unwrap_or_default();
                b.push(tok.eot);
                b
            })
        } else {
            Vec::new()
        };
        let max_initial = o
            .max_initial_timestamp
            .map(|s| (s / super::tokenizer::TIME_PRECISION).round() as u32);
        let vocab = w.model.config.vocab_size as u32;
        Self {
            suppress: suppress.into_iter().filter(|&t| t < vocab).collect(),
            begin_suppress: begin_suppress.into_iter().filter(|&t| t < vocab).collect(),
            timestamps: !o.without_timestamps,
            sample_begin,
            eot: tok.eot,
            no_timestamps: tok.no_timestamps,
            ts_begin: tok.timestamp_begin,
            max_initial,
            max_ts: w.model.config.max_source_positions,
        }
    }

    /// Masks `logits` (one row) given the row's tokens so far (prompt included).
    fn apply(&self, logits: &mut [f32], seq: &[u32]) {
        const NEG: f32 = f32::NEG_INFINITY;
        let at_begin = seq.len() == self.sample_begin;
        if at_begin {
            for &t in &self.begin_suppress {
                logits[t as usize] = NEG;
            }
        }
        for &t in &self.suppress {
            logits[t as usize] = NEG;
        }
        if !self.timestamps {
            return;
        }
        let tb = self.ts_begin as usize;
        if let Some(l) = logits.get_mut(self.no_timestamps as usize) {
            *l = NEG;
        }
        // Timestamps past the window's end (a no-op for 30 s models, whose
        // vocabulary ends at <|30.00|>).
        if let Some(past) = logits.get_mut(tb + self.max_ts + 1..) {
            past.fill(NEG);
        }
        let sampled = &seq[self.sample_begin.min(seq.len())..];
        let n = sampled.len();
        let last_ts = n >= 1 && sampled[n - 1] >= self.ts_begin;
        let penult_ts = n < 2 || sampled[n - 2] >= self.ts_begin;
        if last_ts {
            if penult_ts {
                logits[tb..].fill(NEG);
            } else {
                logits[..self.eot as usize].fill(NEG);
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|&&t| t >= self.ts_begin) {
            let limit = (if last_ts && !penult_ts {
                last
            } else {
                last + 1
            } as usize)
                .min(logits.len());
            logits[tb..limit].fill(NEG);
        }
        if at_begin {
            logits[..tb].fill(NEG);
            if let Some(m) = self.max_initial {
                let last_allowed = tb + m as usize;
                if last_allowed + 1 < logits.len() {
                    logits[last_allowed + 1..].fill(NEG);
                }
            }
        }
        // If the timestamps together are likelier than any text token, force a timestamp.
        let lp = log_softmax(logits);
        let ts_lp = log_sum_exp(&lp[tb..]);
        let max_text = lp[..tb].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if ts_lp > max_text {
            logits[..tb].fill(NEG);
        }
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = v.iter().map(|&x| (x as f64 - m).exp()).sum();
    let ls = m + s.ln();
    v.iter().map(|&x| x as f64 - ls).collect()
}

fn log_softmax_at(v: &[f32], i: usize) -> f64 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = v.iter().map(|&x| (x as f64 - m).exp()).sum();
    v[i] as f64 - m - s.ln()
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

fn softmax(v: &[f64]) -> Vec<f64> {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The `k` largest entries (token, value), largest first; ties by lower id.
fn top_k(v: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let k = k.min(v.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        v[b].total_cmp(&v[a]).then(a.cmp(&b))
    });
    let mut top: Vec<usize> = idx[..k].to_vec();
    top.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    top.into_iter().map(|i| (i as u32, v[i])).collect()
}

/// gzip-style compression ratio of the text (openai-whisper: zlib level 6).
pub fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let _ = e.write_all(text.as_bytes());
    let n = e.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f64 / n.max(1) as f64
}

/// A small deterministic sampler (SplitMix64); no global state.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_add(0x9E37_79B9_7F4A_7C15))
    }
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Samples from softmax(logits / temperature).
    fn categorical(&mut self, logits: &[f32], temperature: f64) -> u32 {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = logits
            .iter()
            .map(|&x| ((x as f64 - m) / temperature).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut u = self.next_f64() * total;
        for (i, &x) in w.iter().enumerate() {
            if u < x {
                return i as u32;
            }
            u -= x;
        }
        argmax(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_flags_repetition() {
        let rep = "the the the the the the the the the the the the the the the the the the";
        assert!(compression_ratio(rep) > 2.4, "{}", compression_ratio(rep));
        assert!(compression_ratio("A short, varied sentence.") < 1.5);
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn top_k_and_softmax() {
        let v = [0.1, 3.0, -1.0, 3.0, 2.0];
        assert_eq!(top_k(&v, 3), vec![(1, 3.0), (3, 3.0), (4, 2.0)]);
        let p = softmax(&[0.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12);
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn sampler_is_deterministic_and_follows_weights() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let l = [0.0f32, 5.0, f32::NEG_INFINITY];
        let xs: Vec<u32> = (0..200).map(|_| a.categorical(&l, 1.0)).collect();
        let ys: Vec<u32> = (0..200).map(|_| b.categorical(&l, 1.0)).collect();
        assert_eq!(xs, ys);
        assert!(!xs.contains(&2));
        assert!(xs.iter().filter(|&&x| x == 1).count() > 180);
    }
}
