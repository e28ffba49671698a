//! Streaming Whisper with the LocalAgreement-2 policy of whisper_streaming
//! (Macháček et al., 2023, "Turning Whisper into Real-Time Transcription
//! System"): the caller appends audio to a growing buffer and calls
//! [`OnlineWhisper::process`] every step; each call re-decodes the whole
//! buffer, and the words on which this hypothesis and the previous one agree
//! (their longest common prefix, beyond what is already confirmed) become
//! final. The buffer is trimmed at the end of a Whisper segment whose words
//! are all confirmed once it is longer than `trim_s`.
//!
//! As in whisper_streaming, each decode is prompted with the last
//! [`PROMPT_CHARS`] characters of the confirmed text that lies before the
//! buffer (after `DecodeOptions::initial_prompt`, if any), unless
//! `condition_on_previous_text` is off. For the VAD-controlled mode the
//! caller may decode only up to a sample ([`OnlineWhisper::process_upto`],
//! e.g. the end of speech at a pause) and finalize with
//! [`OnlineWhisper::finish_at`], which decodes again only when that
//! hypothesis does not already cover the speech.
//!
//! Differences from whisper_streaming: word times are spread over each
//! segment's timestamps in proportion to word length (no cross-attention
//! alignment); confirmed words still in the buffer are matched against a new
//! hypothesis by word edit distance instead of by time.

use super::longform::{InMemory, Stream, TranscribeOptions, Transcriber, Transcript};
use super::{Result, Whisper, WhisperError};
use std::time::{Duration, Instant};

/// Samples per second of the audio buffer.
const RATE: f64 = 16_000.0;

/// Characters of confirmed text given as prompt (whisper_streaming: 200).
pub const PROMPT_CHARS: usize = 200;

/// Confirmed words kept for prompts.
const HISTORY_WORDS: usize = 256;

/// One word of a hypothesis, with times in seconds from the start of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// Why text became final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalReason {
    /// Two consecutive hypotheses agreed on it (LocalAgreement-2).
    Agreed,
    /// The caller flushed (speech ended, input ended, interrupted).
    Flushed,
    /// The buffer reached its maximum length with no segment end to trim at.
    BufferFull,
}

/// Text that is final: never changed afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmed {
    pub words: Vec<Word>,
    pub reason: FinalReason,
}

impl Confirmed {
    /// Start of the first word (seconds).
    pub fn start_s(&self) -> f64 {
        self.words.first().map_or(0.0, |w| w.start)
    }
    /// End of the last word (seconds).
    pub fn end_s(&self) -> f64 {
        self.words.last().map_or(0.0, |w| w.end)
    }
    /// The words joined by single spaces.
    pub fn text(&self) -> String {
        join(&self.words)
    }
}

/// Words joined by single spaces.
pub fn join(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one step produced: new final text, and the unconfirmed rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub finals: Vec<Confirmed>,
    /// The unconfirmed tail of the latest hypothesis (the partial line).
    pub partial: Vec<Word>,
}

/// Length of the longest common prefix of two word sequences (exact text):
/// the LocalAgreement-2 rule.
pub fn common_prefix(a: &[Word], b: &[Word]) -> usize {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| x.text == y.text)
        .count()
}

fn norm(w: &str) -> String {
    w.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// How many words at the start of `hyp` stand for the already-confirmed
/// words `confirmed` (compared case- and punctuation-insensitively): all of
/// them when `hyp` starts with them, otherwise the prefix of `hyp` with the
/// smallest word edit distance to `confirmed` (ties: one ending with the
/// last confirmed word, then the length closest to `confirmed.len()`).
pub fn skip_confirmed(confirmed: &[String], hyp: &[String]) -> usize {
    if confirmed.is_empty() {
        return 0;
    }
    let c: Vec<String> = confirmed.iter().map(|w| norm(w)).collect();
    let h: Vec<String> = hyp.iter().map(|w| norm(w)).collect();
    if h.len() >= c.len() && h[..c.len()] == c[..] {
        return c.len();
    }
    // prev[j] = edit distance between c[..i] and h[..j].
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, cw) in c.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(*cw != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    let last = c.last();
    (0..=h.len())
        .min_by_key(|&j| {
            let ends_alike = j > 0 && Some(&h[j - 1]) == last;
            (prev[j], !ends_alike, j.abs_diff(c.len()))
        })
        .unwrap_or(0)
}

/// Where a segment ends: the number of words up to its end, and its end time (s).
pub type SegmentEnd = (usize, f64);

/// Words of a transcript with absolute times (`offset` seconds added; times
/// clamped to the buffer's `duration`), and for each segment the number of
/// words up to its end together with its end time.
pub fn transcript_words(
    t: &Transcript,
    offset: f64,
    duration: f64,
) -> (Vec<Word>, Vec<SegmentEnd>) {
    let mut words = Vec::new();
    let mut segs = Vec::new();
    for s in &t.segments {
        let start = s.start.clamp(0.0, duration);
        let end = s.end.clamp(start, duration);
        let ws: Vec<&str> = s.text.split_whitespace().collect();
        if ws.is_empty() {
            continue;
        }
        let total: usize = ws.iter().map(|w| w.chars().count()).sum::<usize>().max(1);
        let mut acc = 0usize;
        for w in ws {
            let a = start + (end - start) * acc as f64 / total as f64;
            acc += w.chars().count();
            let b = start + (end - start) * acc as f64 / total as f64;
            words.push(Word {
                start: offset + a,
                end: offset + b,
                text: w.to_string(),
            });
        }
        segs.push((words.len(), offset + end));
    }
    (words, segs)
}

/// The streaming recognizer's state: audio buffer, confirmed words still in
/// the buffer, and the unconfirmed tail of the last hypothesis.
pub struct OnlineWhisper<'a> {
    tr: Transcriber<'a>,
    trim_s: f64,
    max_buffer_s: f64,
    buf: Vec<f32>,
    /// Absolute sample index of `buf[0]`.
    buf_start: usize,
    /// Buffer length at the last decode.
    decoded_len: usize,
    confirmed: Vec<Word>,
    tail: Vec<Word>,
    decode_time: Duration,
    decodes: usize,
    /// Recent final words (prompt source).
    history: Vec<Word>,
    /// Text before the confirmed text in every prompt.
    initial_prompt: Option<String>,
    /// Characters of confirmed text in the prompt (0: none).
    prompt_chars: usize,
}

/// The prompt for a buffer starting at `buffer_start_s`: the last words of
/// `history` that end before the buffer, at least `chars` characters of them
/// when there are enough (whisper_streaming's rule), after `initial`.
pub fn prompt_text(
    initial: Option<&str>,
    history: &[Word],
    buffer_start_s: f64,
    chars: usize,
) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let mut len = 0;
    for w in history
        .iter()
        .rev()
        .filter(|w| w.end <= buffer_start_s + 1e-6)
    {
        if len >= chars {
            break;
        }
        len += w.text.chars().count() + 1;
        parts.push(&w.text);
    }
    parts.reverse();
    let ctx = parts.join(" ");
    let initial = initial.map(str::trim).filter(|p| !p.is_empty());
    match (initial, ctx.is_empty()) {
        (None, true) => None,
        (None, false) => Some(ctx),
        (Some(p), true) => Some(p.to_string()),
        (Some(p), false) => Some(format!("{p} {ctx}")),
    }
}

impl<'a> OnlineWhisper<'a> {
    /// `trim_s`: trim at a confirmed segment end once the buffer is longer;
    /// `max_buffer_s` (≤ 30): beyond it everything is confirmed and the buffer restarts.
    /// `opts.decode.initial_prompt` starts every prompt; `condition_on_previous_text`
    /// adds the confirmed text before the buffer.
    pub fn new(
        w: &'a Whisper,
        mut opts: TranscribeOptions,
        trim_s: f64,
        max_buffer_s: f64,
    ) -> Result<Self> {
        if !(trim_s > 0.0 && max_buffer_s >= trim_s && max_buffer_s <= 30.0) {
            return Err(WhisperError::Options(format!(
                "streaming buffer: need 0 < trim ({trim_s} s) <= max ({max_buffer_s} s) <= 30 s"
            )));
        }
        let initial_prompt = opts.decode.initial_prompt.take();
        let prompt_chars = if opts.decode.condition_on_previous_text {
            PROMPT_CHARS
        } else {
            0
        };
        Ok(OnlineWhisper {
            tr: Transcriber::new(w, opts)?,
            trim_s,
            max_buffer_s,
            buf: Vec::new(),
            buf_start: 0,
            decoded_len: 0,
            confirmed: Vec::new(),
            tail: Vec::new(),
            decode_time: Duration::ZERO,
            decodes: 0,
            history: Vec::new(),
            initial_prompt,
            prompt_chars,
        })
    }

    /// Forgets the buffer and its hypothesis (not the confirmed text used as
    /// prompt); the next audio starts at absolute sample `at`.
    pub fn reset(&mut self, at: usize) {
        self.buf.clear();
        self.buf_start = at;
        self.decoded_len = 0;
        self.confirmed.clear();
        self.tail.clear();
    }

    /// Appends 16 kHz mono samples.
    pub fn push(&mut self, samples: &[f32]) {
        self.buf.extend_from_slice(samples);
    }

    /// Seconds of audio in the buffer.
    pub fn buffered_s(&self) -> f64 {
        self.buf.len() as f64 / RATE
    }

    /// Seconds of audio added since the last decode.
    pub fn pending_s(&self) -> f64 {
        (self.buf.len() - self.decoded_len) as f64 / RATE
    }

    /// Absolute sample index just past the buffer.
    pub fn end_sample(&self) -> usize {
        self.buf_start + self.buf.len()
    }

    /// Absolute sample index just past the audio the last decode covered
    /// (the buffer start when nothing was decoded since).
    pub fn decoded_end(&self) -> usize {
        self.buf_start + self.decoded_len
    }

    /// The prompt the next decode gets.
    pub fn prompt(&self) -> Option<String> {
        prompt_text(
            self.initial_prompt.as_deref(),
            &self.history,
            self.buf_start as f64 / RATE,
            self.prompt_chars,
        )
    }

    /// Marks words final (kept as prompt context).
    fn confirm(&mut self, words: Vec<Word>, reason: FinalReason) -> Confirmed {
        self.history.extend(words.iter().cloned());
        let extra = self.history.len().saturating_sub(HISTORY_WORDS);
        self.history.drain(..extra);
        Confirmed { words, reason }
    }

    /// The unconfirmed tail of the last hypothesis.
    pub fn partial(&self) -> &[Word] {
        &self.tail
    }

    /// Total time spent decoding, and the number of decodes.
    pub fn decode_stats(&self) -> (Duration, usize) {
        (self.decode_time, self.decodes)
    }

    /// Decodes the first `n` samples of the buffer: their words and segment
    /// ends (absolute times).
    fn hypothesis(&mut self, n: usize) -> Result<(Vec<Word>, Vec<SegmentEnd>)> {
        let n = n.min(self.buf.len());
        let t0 = Instant::now();
        self.tr.opts.decode.initial_prompt = self.prompt();
        let mut s = [Stream::new(Box::new(InMemory::new(self.buf[..n].to_vec())))];
        self.tr.run(&mut s)?;
        let [s] = s;
        let t = s.into_result().map_err(WhisperError::Decode)?;
        self.decode_time += t0.elapsed();
        self.decodes += 1;
        self.decoded_len = n;
        Ok(transcript_words(
            &t,
            self.buf_start as f64 / RATE,
            n as f64 / RATE,
        ))
    }

    /// The new (not yet confirmed) words of a hypothesis.
    fn unconfirmed(&self, words: &[Word]) -> usize {
        let c: Vec<String> = self.confirmed.iter().map(|w| w.text.clone()).collect();
        let h: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
        skip_confirmed(&c, &h)
    }

    /// One step: re-decode, confirm what two consecutive hypotheses agree
    /// on, trim the buffer when it is long.
    pub fn process(&mut self) -> Result<Update> {
        self.process_upto(self.end_sample())
    }

    /// [`Self::process`] decoding the buffer only up to absolute sample
    /// `end` (the audio after it stays buffered).
    pub fn process_upto(&mut self, end: usize) -> Result<Update> {
        let (words, segs) = self.hypothesis(end.saturating_sub(self.buf_start))?;
        let k = self.unconfirmed(&words);
        let new = &words[k..];
        let n = common_prefix(&self.tail, new);
        let agreed = new[..n].to_vec();
        self.tail = new[n..].to_vec();
        self.confirmed.extend(agreed.iter().cloned());
        let mut finals = Vec::new();
        if !agreed.is_empty() {
            finals.push(self.confirm(agreed, FinalReason::Agreed));
        }
        let upto = k + n;
        if self.buffered_s() > self.trim_s {
            let lo = self.buf_start as f64 / RATE;
            let hi = self.decoded_end() as f64 / RATE;
            let cut = segs
                .iter()
                .rev()
                .find(|&&(idx, end)| idx > 0 && idx <= upto && end > lo && end < hi);
            if let Some(&(idx, end)) = cut {
                let drop = (((end * RATE).round() as usize).saturating_sub(self.buf_start))
                    .min(self.buf.len());
                self.buf.drain(..drop);
                self.buf_start += drop;
                self.decoded_len = self.decoded_len.saturating_sub(drop);
                self.confirmed = words[idx..upto].to_vec();
            }
        }
        if self.buffered_s() > self.max_buffer_s {
            let tail = std::mem::take(&mut self.tail);
            if !tail.is_empty() {
                finals.push(self.confirm(tail, FinalReason::BufferFull));
            }
            // Audio past the decoded part starts the new buffer.
            let rest = self.buf.split_off(self.decoded_len);
            let at = self.decoded_end();
            self.reset(at);
            self.buf = rest;
        }
        Ok(Update {
            finals,
            partial: self.tail.clone(),
        })
    }

    /// Confirms everything: re-decodes if audio arrived since the last
    /// decode, returns the unconfirmed words as final and restarts the
    /// buffer after the audio seen.
    pub fn finish(&mut self) -> Result<Option<Confirmed>> {
        Ok(self.finish_at(self.end_sample())?.0)
    }

    /// Confirms everything up to absolute sample `end` (e.g. the end of
    /// speech): the unconfirmed words of the last hypothesis when it already
    /// covers `end` (no decode), otherwise of a decode of the buffer up to
    /// `end`. Restarts the buffer after all the audio seen. Also returns
    /// whether it decoded.
    pub fn finish_at(&mut self, end: usize) -> Result<(Option<Confirmed>, bool)> {
        let n = end.saturating_sub(self.buf_start).min(self.buf.len());
        let decode = n > self.decoded_len;
        let words = if decode {
            let (words, _) = self.hypothesis(n)?;
            let k = self.unconfirmed(&words);
            words[k..].to_vec()
        } else {
            std::mem::take(&mut self.tail)
        };
        let at = self.end_sample();
        self.reset(at);
        let c = (!words.is_empty()).then(|| self.confirm(words, FinalReason::Flushed));
        Ok((c, decode))
    }

    /// Confirms the unconfirmed tail of the last hypothesis without decoding.
    pub fn finish_now(&mut self) -> Option<Confirmed> {
        let words = std::mem::take(&mut self.tail);
        let end = self.end_sample();
        self.reset(end);
        (!words.is_empty()).then(|| self.confirm(words, FinalReason::Flushed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> Vec<Word> {
        s.split_whitespace()
            .enumerate()
            .map(|(i, t)| Word {
                start: i as f64,
                end: i as f64 + 1.0,
                text: t.into(),
            })
            .collect()
    }

    fn strs(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn local_agreement_prefix() {
        assert_eq!(common_prefix(&ws("a b c"), &ws("a b d e")), 2);
        assert_eq!(common_prefix(&ws("a b c"), &ws("a b c d")), 3);
        assert_eq!(common_prefix(&ws(""), &ws("a")), 0);
        assert_eq!(common_prefix(&ws("x b"), &ws("a b")), 0);
        // Exact text: punctuation and case count.
        assert_eq!(common_prefix(&ws("Hello, world"), &ws("Hello world")), 0);
    }

    #[test]
    fn skip_confirmed_alignment() {
        assert_eq!(skip_confirmed(&[], &strs("a b")), 0);
        assert_eq!(skip_confirmed(&strs("a b"), &strs("a b c")), 2);
        // Punctuation / case changes in the confirmed part do not matter.
        assert_eq!(
            skip_confirmed(&strs("Hello, world"), &strs("hello world. next")),
            2
        );
        // A dropped word: "the" missing from the new hypothesis.
        assert_eq!(
            skip_confirmed(&strs("go to the shop"), &strs("go to shop now please")),
            3
        );
        // An inserted word.
        assert_eq!(skip_confirmed(&strs("go shop"), &strs("go to shop now")), 3);
        // Hypothesis shorter than the confirmed text.
        assert_eq!(skip_confirmed(&strs("a b c d"), &strs("a b")), 2);
        // Nothing in common: as long as the confirmed part.
        assert_eq!(skip_confirmed(&strs("a b"), &strs("x y z")), 2);
    }

    /// The LocalAgreement-2 loop on a scripted sequence of hypotheses
    /// (what `process` does after decoding), checking that confirmed text is
    /// only ever appended and is always a prefix of the previous partial.
    #[test]
    fn local_agreement_scripted_stream() {
        let hyps = [
            "i",
            "i think so",
            "i think that",
            "I think that we should",
            "I think that we should go home",
            "I think that we should go home now",
        ];
        let mut confirmed: Vec<Word> = Vec::new();
        let mut tail: Vec<Word> = Vec::new();
        let mut out: Vec<String> = Vec::new();
        for h in hyps {
            let words = ws(h);
            let c: Vec<String> = confirmed.iter().map(|w| w.text.clone()).collect();
            let h: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
            let k = skip_confirmed(&c, &h);
            let new = &words[k..];
            let n = common_prefix(&tail, new);
            let prev_partial = join(&tail);
            let agreed = join(&new[..n]);
            assert!(prev_partial.starts_with(&agreed));
            if n > 0 {
                out.push(agreed);
            }
            confirmed.extend(new[..n].iter().cloned());
            tail = new[n..].to_vec();
        }
        // "i" agreed at step 2, "think" at 3; "that" at 4 ("I" vs "i" is a case
        // change in confirmed text, skipped by alignment); "we should" at 5,
        // "go home" at 6.
        assert_eq!(out, vec!["i", "think", "that", "we should", "go home"]);
        assert_eq!(join(&tail), "now");
    }

    #[test]
    fn prompt_is_confirmed_text_before_the_buffer() {
        // Words i..i+1 s long: "w0" ends at 1 s, "w1" at 2 s, ...
        let h: Vec<Word> = (0..100)
            .map(|i| Word {
                start: i as f64,
                end: i as f64 + 1.0,
                text: format!("w{i}"),
            })
            .collect();
        assert_eq!(prompt_text(None, &h, 0.5, 200), None);
        assert_eq!(
            prompt_text(Some(" Maths. "), &h, 0.5, 200).unwrap(),
            "Maths."
        );
        // Only words ending before the buffer (at 3 s): w0 w1 w2.
        assert_eq!(prompt_text(None, &h, 3.0, 200).unwrap(), "w0 w1 w2");
        assert_eq!(
            prompt_text(Some("Notes:"), &h, 3.0, 200).unwrap(),
            "Notes: w0 w1 w2"
        );
        // At least `chars` characters, taken from the end, whole words.
        let p = prompt_text(None, &h, 100.0, 10).unwrap();
        assert_eq!(p, "w97 w98 w99");
        let p = prompt_text(None, &h, 100.0, 200).unwrap();
        // (The count includes one separator a word, as in whisper_streaming.)
        assert!(p.len() + 1 >= 200 && p.ends_with("w99") && !p.starts_with("w0 "));
        // Conditioning off: only the initial prompt.
        assert_eq!(prompt_text(None, &h, 100.0, 0), None);
        assert_eq!(prompt_text(Some("x"), &h, 100.0, 0).unwrap(), "x");
    }

    #[test]
    fn words_spread_over_segments() {
        let seg = |start: f64, end: f64, text: &str| super::super::Segment {
            start,
            end,
            text: text.into(),
            tokens: vec![],
            avg_logprob: 0.0,
            no_speech_prob: 0.0,
            temperature: 0.0,
            compression_ratio: 1.0,
        };
        let t = Transcript {
            text: String::new(),
            language: "en".into(),
            segments: vec![seg(0.0, 1.0, " ab c"), seg(1.0, 40.0, " dd")],
            duration_s: 3.0,
        };
        let (w, s) = transcript_words(&t, 10.0, 3.0);
        let got: Vec<(f64, f64, &str)> = w
            .iter()
            .map(|w| (w.start, w.end, w.text.as_str()))
            .collect();
        let r = |x: f64| (x * 1e9).round() / 1e9;
        let got: Vec<(f64, f64, &str)> = got.into_iter().map(|(a, b, t)| (r(a), r(b), t)).collect();
        assert_eq!(
            got,
            vec![
                (10.0, r(10.0 + 2.0 / 3.0), "ab"),
                (r(10.0 + 2.0 / 3.0), 11.0, "c"),
                (11.0, 13.0, "dd") // clamped to the 3 s buffer
            ]
        );
        assert_eq!(s, vec![(2, 11.0), (3, 13.0)]);
    }
}
