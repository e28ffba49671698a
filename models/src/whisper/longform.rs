//! Long-form transcription: sequential windows (30 s for released models;
//! `2 × max_source_positions` mel frames in general) with seek by the last
//! timestamp (openai-whisper's `transcribe`), temperature fallback and
//! no-speech skipping, for several streams at once (one batch row each).
//!
//! Memory is bounded: a stream keeps at most one window of 16 kHz samples
//! plus one decoder chunk; features are computed per window.

use super::decoding::{DecodeOptions, Decoder, DecodingResult};
use super::timing::{self, TimedSegment, Word};
use super::{Result, Whisper, WhisperError};
use candle_core::Tensor;
use voxtok_codecs::mel::{LogMel, MelPadding};

/// 16 kHz samples per mel frame.
pub const HOP: usize = 160;
/// Samples in one 30 s window (released models; see [`window_samples`]).
pub const WINDOW_SAMPLES: usize = 480_000;

/// Samples in one window of `w`: `2 × max_source_positions` mel frames.
pub fn window_samples(w: &Whisper) -> usize {
    w.model.config.n_frames() * HOP
}
/// Audio shorter than this (seconds) gives an empty transcript.
pub const MIN_DURATION_S: f64 = 0.1;

/// Long-form and fallback options (openai-whisper's defaults).
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub decode: DecodeOptions,
    /// Tried in order until a window passes the thresholds; `[0.0]`: no fallback.
    pub temperatures: Vec<f64>,
    pub compression_ratio_threshold: Option<f64>,
    pub logprob_threshold: Option<f64>,
    /// Windows whose no-speech probability exceeds this (and whose average
    /// log-prob is below `logprob_threshold`) are skipped as silence.
    pub no_speech_threshold: Option<f64>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            decode: DecodeOptions::default(),
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
        }
    }
}

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Token ids, timestamps included.
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    pub temperature: f64,
    pub compression_ratio: f64,
}

/// The transcript of one input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    pub text: String,
    /// Language code (detected or given).
    pub language: String,
    pub segments: Vec<Segment>,
    pub duration_s: f64,
}

/// Where a stream's 16 kHz mono samples come from, read forward once.
pub trait SampleSource: Send {
    /// The next chunk, or `None` at the end; errors are messages for the user.
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<f32>>, String>;
}

/// Samples already in memory.
pub struct InMemory(Option<Vec<f32>>);

impl InMemory {
    pub fn new(samples: Vec<f32>) -> Self {
        Self(Some(samples))
    }
}

impl SampleSource for InMemory {
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<f32>>, String> {
        Ok(self.0.take())
    }
}

/// One input being transcribed.
pub struct Stream {
    source: Box<dyn SampleSource>,
    buf: Vec<f32>,
    /// Absolute sample index of `buf[0]`.
    buf_start: usize,
    eof: bool,
    /// Current position in mel frames.
    seek: usize,
    language: Option<u32>,
    transcript: Transcript,
    error: Option<String>,
    done: bool,
    tokens_decoded: usize,
    /// Window length in samples (set from the model by the transcriber).
    win: usize,
    /// Previous-text prompt (openai `all_tokens[prompt_reset_since:]`, tail only).
    prompt: Vec<u32>,
    prompt_started: bool,
    /// End of the last word (word timestamps).
    last_speech: f64,
    /// Words of each segment (empty without word timestamps).
    words: Vec<Vec<Word>>,
}

impl Stream {
    pub fn new(source: Box<dyn SampleSource>) -> Self {
        Self {
            source,
            buf: Vec::new(),
            buf_start: 0,
            eof: false,
            seek: 0,
            language: None,
            transcript: Transcript::default(),
            error: None,
            done: false,
            tokens_decoded: 0,
            win: WINDOW_SAMPLES,
            prompt: Vec::new(),
            prompt_started: false,
            last_speech: 0.0,
            words: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Number of tokens sampled so far (all windows, final passes only).
    pub fn tokens_decoded(&self) -> usize {
        self.tokens_decoded
    }

    /// The transcript, or the error that stopped this stream.
    pub fn into_result(self) -> std::result::Result<Transcript, String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.transcript),
        }
    }

    /// The transcript with the words of each segment (empty lists without
    /// word timestamps), or the error that stopped this stream.
    pub fn into_result_with_words(
        self,
    ) -> std::result::Result<(Transcript, Vec<Vec<Word>>), String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.transcript, self.words)),
        }
    }

    fn fail(&mut self, e: String) {
        self.error = Some(e);
        self.done = true;
        self.buf = Vec::new();
    }

    /// Reads until the window at `seek` is buffered (or the input ends).
    fn fill(&mut self) {
        let start = self.seek * HOP;
        // Drop samples before the window.
        if start > self.buf_start {
            let drop = (start - self.buf_start).min(self.buf.len());
            self.buf.drain(..drop);
            self.buf_start += drop;
        }
        while !self.eof && self.buf_start + self.buf.len() < start + self.win {
            match self.source.next_chunk() {
                Ok(Some(c)) => {
                    let skip = start
                        .saturating_sub(self.buf_start + self.buf.len())
                        .min(c.len());
                    self.buf_start += skip;
                    self.buf.extend_from_slice(&c[skip..]);
                }
                Ok(None) => self.eof = true,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        if self.eof {
            self.transcript.duration_s = (self.buf_start + self.buf.len()) as f64 / 16000.0;
        }
    }

    /// Total mel frames when known.
    fn content_frames(&self) -> Option<usize> {
        self.eof.then_some((self.buf_start + self.buf.len()) / HOP)
    }

    /// The 16 kHz samples of the window at `seek` and its length in frames.
    fn window(&self) -> (&[f32], usize) {
        let start = (self.seek * HOP)
            .saturating_sub(self.buf_start)
            .min(self.buf.len());
        let end = (start + self.win).min(self.buf.len());
        let frames = match self.content_frames() {
            Some(total) => (total - self.seek).min(self.win / HOP),
            None => self.win / HOP,
        };
        (&self.buf[start..end], frames)
    }
}

/// Transcribes batches of streams window by window.
pub struct Transcriber<'a> {
    w: &'a Whisper,
    dec: Decoder<'a>,
    mel: LogMel,
    /// Window length in samples (from the model's `max_source_positions`).
    win: usize,
    pub opts: TranscribeOptions,
}

impl<'a> Transcriber<'a> {
    pub fn new(w: &'a Whisper, opts: TranscribeOptions) -> Result<Self> {
        let win = window_samples(w);
        let mel = LogMel::new(w.n_mels(), MelPadding::Samples(win))
            .map_err(|e| WhisperError::Options(format!("log-mel front-end: {e}")))?;
        if opts.temperatures.is_empty() {
            return Err(WhisperError::Options(
                "at least one temperature is needed".into(),
            ));
        }
        Ok(Self {
            w,
            dec: Decoder::new(w),
            mel,
            win,
            opts,
        })
    }

    /// Runs every stream to its end; streams advance together, one batch
    /// row each, so `streams.len()` is the batch size.
    pub fn run(&mut self, streams: &mut [Stream]) -> Result<()> {
        while self.step(streams)? {}
        Ok(())
    }

    /// Decodes one window of every unfinished stream; `false` when all are done.
    pub fn step(&mut self, streams: &mut [Stream]) -> Result<bool> {
        let n_mels = self.w.n_mels();
        let n_frames = self.win / HOP;
        let t0 = std::time::Instant::now();
        let mut active = Vec::new();
        let mut mels: Vec<f32> = Vec::new();
        let mut sizes = Vec::new();
        for (i, s) in streams.iter_mut().enumerate() {
            if s.done {
                continue;
            }
            s.win = self.win;
            s.fill();
            if s.done {
                continue;
            }
            let total = s.content_frames();
            let too_short = s.eof && s.transcript.duration_s < MIN_DURATION_S;
            if too_short || total.is_some_and(|t| s.seek >= t) {
                s.done = true;
                s.buf = Vec::new();
                continue;
            }
            let (samples, frames) = s.window();
            let m = self.mel.compute(samples);
            debug_assert_eq!((m.n_mels, m.n_frames), (n_mels, n_frames));
            mels.extend_from_slice(&m.data);
            sizes.push(frames);
            active.push(i);
        }
        if active.is_empty() {
            return Ok(false);
        }
        let dev = self.w.model.device();
        let mel = Tensor::from_vec(mels, (active.len(), n_mels, n_frames), dev)?;
        let t_mel = t0.elapsed();
        let audio = self.w.model.encode(&mel)?;
        let t_enc = t0.elapsed();

        // Languages: given, detected once per stream, or English-only.
        let tok = &self.w.tokenizer;
        let given = match &self.opts.decode.language {
            Some(l) if tok.multilingual => Some(tok.language_id(l).ok_or_else(|| {
                WhisperError::Options(format!("language `{l}` is not supported by this model"))
            })?),
            _ => None,
        };
        let need: Vec<usize> = (0..active.len())
            .filter(|&r| {
                given.is_none() && tok.multilingual && streams[active[r]].language.is_none()
            })
            .collect();
        if !need.is_empty() {
            let rows = select_rows(&audio, &need)?;
            let detected = self.dec.detect_language(&rows)?;
            for (&r, (id, _)) in need.iter().zip(detected) {
                streams[active[r]].language = Some(id);
            }
        }
        let langs: Vec<u32> = active
            .iter()
            .map(|&i| given.or(streams[i].language).unwrap_or(tok.sot + 1))
            .collect();

        // Previous-text prompts (the initial prompt before the first window).
        let o = &self.opts;
        let mut prompts = Vec::with_capacity(active.len());
        for &i in &active {
            let s = &mut streams[i];
            if !s.prompt_started {
                s.prompt_started = true;
                if let Some(p) = &o.decode.initial_prompt {
                    s.prompt = tok.encode(&format!(" {}", p.trim()))?;
                }
            }
            prompts.push(s.prompt.clone());
        }

        // Temperature fallback, re-decoding only the rows that need it.
        let mut results: Vec<Option<DecodingResult>> = vec![None; active.len()];
        let mut pending: Vec<usize> = (0..active.len()).collect();
        for (ti, &t) in o.temperatures.iter().enumerate() {
            let rows = select_rows(&audio, &pending)?;
            let l: Vec<u32> = pending.iter().map(|&r| langs[r]).collect();
            let p: Vec<Vec<u32>> = pending.iter().map(|&r| prompts[r].clone()).collect();
            let res = self.dec.decode_with_prompts(&rows, &l, &p, &o.decode, t)?;
            let last = ti + 1 == o.temperatures.len();
            let mut still = Vec::new();
            for (&r, res) in pending.iter().zip(res) {
                let fallback = !last && needs_fallback(o, &res);
                results[r] = Some(res);
                if fallback {
                    still.push(r);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
        }
        tracing::debug!(
            rows = active.len(),
            "window: input+mel {:?}, encoder {:?}, decoder {:?}",
            t_mel,
            t_enc - t_mel,
            t0.elapsed() - t_enc
        );
        for (r, &i) in active.iter().enumerate() {
            let res = results[r].take().expect("every row decoded");
            let row = audio.narrow(0, r, 1)?;
            accept(self.w, o, &mut streams[i], res, sizes[r], (&row, langs[r]))?;
        }
        Ok(true)
    }
}

fn select_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor> {
    if rows.len() == t.dim(0)? && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(t.clone());
    }
    let idx = Tensor::new(
        rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        t.device(),
    )?;
    Ok(t.index_select(&idx, 0)?)
}

/// openai-whisper's fallback test: too repetitive or too unlikely, unless silent.
fn needs_fallback(o: &TranscribeOptions, r: &DecodingResult) -> bool {
    let mut f = false;
    if o.compression_ratio_threshold
        .is_some_and(|c| r.compression_ratio > c)
    {
        f = true;
    }
    if o.logprob_threshold.is_some_and(|l| r.avg_logprob < l) {
        f = true;
    }
    if o.no_speech_threshold.is_some_and(|n| r.no_speech_prob > n)
        && o.logprob_threshold.is_some_and(|l| r.avg_logprob < l)
    {
        f = false;
    }
    f
}

/// Turns one window's result into segments (and words) and moves the
/// stream's seek; `row` is the window's encoder output and language token.
fn accept(
    w: &Whisper,
    o: &TranscribeOptions,
    s: &mut Stream,
    r: DecodingResult,
    size: usize,
    row: (&Tensor, u32),
) -> Result<()> {
    let tok = &w.tokenizer;
    if s.transcript.language.is_empty() {
        s.transcript.language = r.language.clone();
    }
    if let Some(n) = o.no_speech_threshold {
        let mut skip = r.no_speech_prob > n;
        if o.logprob_threshold.is_some_and(|l| r.avg_logprob > l) {
            skip = false;
        }
        if skip {
            s.seek += size;
            return Ok(());
        }
    }
    s.tokens_decoded += r.tokens.len();
    let window_start = s.seek;
    let offset = s.seek as f64 * HOP as f64 / 16000.0;
    let tokens = &r.tokens;
    let is_ts: Vec<bool> = tokens.iter().map(|&t| tok.is_timestamp(t)).collect();
    let n = tokens.len();
    let single_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
    let mut segs: Vec<(f64, f64, Vec<u32>)> = Vec::new();
    if !consecutive.is_empty() {
        let mut slices = consecutive.clone();
        if single_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &cur in &slices {
            let sl = &tokens[last..cur];
            let start = offset + tok.timestamp_seconds(sl[0]);
            let end = offset + tok.timestamp_seconds(sl[sl.len() - 1]);
            segs.push((start, end, sl.to_vec()));
            last = cur;
        }
        if single_ending {
            s.seek += size;
        } else {
            let last_pos = (tokens[last - 1] - tok.timestamp_begin) as usize;
            // (A window that ends at <|0.00|> would never advance: take it whole.)
            s.seek += if last_pos == 0 {
                size
            } else {
                (last_pos * 2).min(size)
            };
        }
    } else {
        let mut duration = size as f64 * HOP as f64 / 16000.0;
        if let Some(&t) = tokens.iter().rev().find(|&&t| tok.is_timestamp(t)) {
            if t != tok.timestamp_begin {
                duration = tok.timestamp_seconds(t);
            }
        }
        segs.push((offset, offset + duration, tokens.clone()));
        s.seek += size;
    }
    // A timestamp past the window's real audio (a short last window is padded
    // to 30 s) would put a segment after the end of the file: clip it there.
    // (openai `transcribe()` does not clip; this is a deliberate deviation.)
    let content_end = offset + size as f64 * HOP as f64 / 16000.0;
    for seg in &mut segs {
        seg.1 = seg.1.min(content_end);
        seg.0 = seg.0.min(seg.1);
    }
    let mut words: Vec<Vec<Word>> = vec![Vec::new(); segs.len()];
    if o.decode.word_timestamps && !segs.is_empty() {
        let (audio, lang) = row;
        let sot_seq = tok.prompt(Some(lang), o.decode.task, true);
        let text: Vec<u32> = segs
            .iter()
            .flat_map(|x| x.2.iter().copied().filter(|&t| t < tok.eot))
            .collect();
        let al = timing::find_alignment(w, audio, &sot_seq, &text, size, &r.language)?;
        let mut ts: Vec<TimedSegment> = segs
            .iter()
            .map(|(a, b, t)| TimedSegment {
                start: *a,
                end: *b,
                tokens: t.clone(),
                words: Vec::new(),
            })
            .collect();
        let mut last_speech = s.last_speech;
        timing::add_word_timestamps(&mut ts, al, offset, &mut last_speech, tok.eot);
        // openai `get_end`: the last word's end, else the last segment's end.
        let end = ts
            .iter()
            .rev()
            .find_map(|t| t.words.last().map(|w| w.end))
            .or(ts.last().map(|t| t.end));
        if !single_ending {
            if let Some(e) = end.filter(|&e| e > offset) {
                s.seek = ((e * 100.0).round_ties_even() as usize).max(window_start + 1);
            }
        }
        if let Some(e) = end {
            s.last_speech = e;
        }
        for (k, t) in ts.into_iter().enumerate() {
            segs[k].0 = t.start;
            segs[k].1 = t.end;
            words[k] = t.words;
        }
    }
    for ((start, end, toks), seg_words) in segs.into_iter().zip(words) {
        let text = tok.decode(&toks).unwrap_or_default();
        if start == end || text.trim().is_empty() {
            continue;
        }
        s.prompt.extend_from_slice(&toks);
        s.words.push(seg_words);
        s.transcript.segments.push(Segment {
            start,
            end,
            text: text.clone(),
            tokens: toks,
            avg_logprob: r.avg_logprob,
            no_speech_prob: r.no_speech_prob,
            temperature: r.temperature,
            compression_ratio: r.compression_ratio,
        });
        s.transcript.text.push_str(&text);
    }
    if !o.decode.condition_on_previous_text || r.temperature > 0.5 {
        s.prompt.clear();
    } else if s.prompt.len() > 448 {
        s.prompt.drain(..s.prompt.len() - 448);
    }
    Ok(())
}
