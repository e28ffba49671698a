//! Word-level timestamps after openai-whisper's `timing.py`: cross-attention
//! of the alignment heads over the window's text tokens, normalised per
//! frame, median-filtered (width 7), averaged over heads and aligned by DTW;
//! tokens are merged into words (spaces, punctuation) and the word times
//! tidied with openai's duration heuristics.

use super::{Result, Whisper};
use candle_core::{IndexOp, Tensor};

/// Encoder positions (alignment columns) per second.
const TOKENS_PER_SECOND: f64 = 50.0;
/// openai-whisper's defaults.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
const MEDFILT_WIDTH: usize = 7;

/// One word of a segment (times in seconds from the start of the input).
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// A word of the alignment (times relative to the window).
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// A segment of one window whose words are being timed.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedSegment {
    pub start: f64,
    pub end: f64,
    pub tokens: Vec<u32>,
    pub words: Vec<Word>,
}

/// The alignment heads: `generation_config.json`'s `alignment_heads`, or
/// every head of the last half of the decoder layers (openai's default).
pub fn alignment_heads(w: &Whisper) -> Vec<(usize, usize)> {
    let (layers, heads) = w.model.decoder.layers_heads();
    match &w.generation.alignment_heads {
        Some(h) if !h.is_empty() => h
            .iter()
            .filter(|[l, hd]| *l < layers && *hd < heads)
            .map(|[l, hd]| (*l, *hd))
            .collect(),
        _ => (layers / 2..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect(),
    }
}

/// openai `find_alignment`: words of `text_tokens` (ids below end-of-text)
/// with times relative to the window. `audio` is the window's encoder output
/// `[1, positions, d]`, `sot_sequence` the window's `<|sot|>[<|lang|><|task|>]`,
/// `num_frames` its mel frames of real audio.
pub fn find_alignment(
    w: &Whisper,
    audio: &Tensor,
    sot_sequence: &[u32],
    text_tokens: &[u32],
    num_frames: usize,
    language: &str,
) -> Result<Vec<WordTiming>> {
    if text_tokens.is_empty() {
        return Ok(Vec::new());
    }
    let tok = &w.tokenizer;
    let heads = alignment_heads(w);
    let mut tokens: Vec<u32> = sot_sequence.to_vec();
    tokens.push(tok.no_timestamps);
    tokens.extend_from_slice(text_tokens);
    tokens.push(tok.eot);
    let n_tok = tokens.len();
    let dec = &w.model.decoder;
    let (layers, _) = dec.layers_heads();
    let mut want = vec![false; layers];
    for &(l, _) in &heads {
        want[l] = true;
    }
    let mut cache = dec.new_cache(1)?;
    dec.start(&mut cache, audio)?;
    let input = Tensor::new(tokens.clone(), audio.device())?.reshape((1, n_tok))?;
    let (h, scores) = dec.forward_with_cross_scores(&input, &mut cache, &want)?;
    let logits: Vec<Vec<f32>> = dec.logits(&h)?.i(0)?.to_vec2()?;

    // Probability of each text token among the text vocabulary.
    let sot_len = sot_sequence.len();
    let eot = tok.eot as usize;
    let probs: Vec<f64> = text_tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &logits[sot_len + i][..eot];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            (row[t as usize] as f64 - m).exp() / s
        })
        .collect();

    // heads × tokens × frames: softmax over the real frames, normalised per
    // frame across tokens, median filtered along time, averaged over heads.
    let n_frames = (num_frames / 2).max(1);
    let mut matrix = vec![vec![0f64; n_frames]; n_tok];
    for &(l, hd) in &heads {
        let s = scores[l].as_ref().expect("scores of wanted layers");
        let s: Vec<Vec<f32>> = s.i((0, hd))?.to_vec2()?;
        let mut wts: Vec<Vec<f64>> = s
            .iter()
            .map(|row| {
                let row = &row[..n_frames.min(row.len())];
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let e: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.into_iter().map(|x| x / sum).collect()
            })
            .collect();
        let cols = wts[0].len();
        for f in 0..cols {
            let mean = wts.iter().map(|r| r[f]).sum::<f64>() / n_tok as f64;
            let var = wts.iter().map(|r| (r[f] - mean).powi(2)).sum::<f64>() / n_tok as f64;
            let std = var.sqrt();
            for r in wts.iter_mut() {
                r[f] = (r[f] - mean) / std;
            }
        }
        for (acc, r) in matrix.iter_mut().zip(&wts) {
            let r = median_filter(r, MEDFILT_WIDTH);
            for (a, v) in acc.iter_mut().zip(r) {
                *a += v / heads.len() as f64;
            }
        }
    }
    let matrix: Vec<Vec<f64>> = matrix[sot_len..n_tok - 1]
        .iter()
        .map(|r| r.iter().map(|v| -v).collect())
        .collect();
    let (text_idx, time_idx) = dtw(&matrix);

    let mut all = text_tokens.to_vec();
    all.push(tok.eot);
    let (words, word_tokens) = split_to_word_tokens(w, &all, language)?;
    if word_tokens.len() <= 1 {
        return Ok(Vec::new());
    }
    let mut bounds = vec![0usize];
    for t in &word_tokens[..word_tokens.len() - 1] {
        bounds.push(bounds.last().unwrap() + t.len());
    }
    let jump_times: Vec<f64> = (0..text_idx.len())
        .filter(|&k| k == 0 || text_idx[k] != text_idx[k - 1])
        .map(|k| time_idx[k] as f64 / TOKENS_PER_SECOND)
        .collect();
    let mut out = Vec::new();
    for (k, (word, toks)) in words.into_iter().zip(word_tokens).enumerate() {
        if k + 1 >= bounds.len() {
            break;
        }
        let (i, j) = (bounds[k], bounds[k + 1]);
        let p = if j > i {
            probs[i..j].iter().sum::<f64>() / (j - i) as f64
        } else {
            f64::NAN
        };
        out.push(WordTiming {
            word,
            tokens: toks,
            start: jump_times.get(i).copied().unwrap_or(0.0),
            end: jump_times.get(j).copied().unwrap_or(0.0),
            probability: p,
        });
    }
    Ok(out)
}

/// Median of a reflect-padded sliding window of odd `width` (torch's
/// `unfold(...).sort()` median; NaN sorts last).
fn median_filter(x: &[f64], width: usize) -> Vec<f64> {
    let pad = width / 2;
    let n = x.len();
    if n <= pad {
        return x.to_vec();
    }
    let at = |i: isize| -> f64 {
        let j = if i < 0 {
            -i
        } else if i >= n as isize {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        x[j as usize]
    };
    let mut win = vec![0f64; width];
    (0..n)
        .map(|c| {
            for (k, v) in win.iter_mut().enumerate() {
                *v = at(c as isize + k as isize - pad as isize);
            }
            win.sort_by(|a, b| a.total_cmp(b));
            win[pad]
        })
        .collect()
}

/// openai `dtw_cpu` + `backtrace` (float32 cost as openai): the monotonic
/// path `(text indices, time indices)` through cost matrix `x`.
fn dtw(x: &[Vec<f64>]) -> (Vec<usize>, Vec<usize>) {
    let n = x.len();
    let m = x.first().map_or(0, Vec::len);
    let mut cost = vec![vec![f32::INFINITY; m + 1]; n + 1];
    let mut trace = vec![vec![-1i8; m + 1]; n + 1];
    cost[0][0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let (c0, c1, c2) = (cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]);
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i][j] = (x[i - 1][j - 1] + c as f64) as f32;
            trace[i][j] = t;
        }
    }
    for v in trace[0].iter_mut() {
        *v = 2;
    }
    for r in trace.iter_mut() {
        r[0] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::new();
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        match trace[i][j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    // (openai yields -1 there; only a NaN matrix reaches the border.)
    path.into_iter().unzip()
}

/// openai `split_to_word_tokens`: unicode-complete pieces, joined into words
/// at spaces and punctuation (languages without spaces keep the pieces).
fn split_to_word_tokens(
    w: &Whisper,
    tokens: &[u32],
    language: &str,
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    let tok = &w.tokenizer;
    let full: Vec<char> = tok.decode_with_specials(tokens)?.chars().collect();
    let (mut subwords, mut subtoks) = (Vec::new(), Vec::new());
    let mut cur: Vec<u32> = Vec::new();
    let mut offset = 0usize;
    for &t in tokens {
        cur.push(t);
        let d = tok.decode_with_specials(&cur)?;
        let dc: Vec<char> = d.chars().collect();
        let complete = match dc.iter().position(|&c| c == '\u{fffd}') {
            None => true,
            Some(p) => full.get(offset + p) == Some(&'\u{fffd}'),
        };
        if complete {
            offset += dc.len();
            subwords.push(d);
            subtoks.push(std::mem::take(&mut cur));
        }
    }
    if ["zh", "ja", "th", "lo", "my", "yue"].contains(&language) {
        return Ok((subwords, subtoks));
    }
    const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    let (mut words, mut wtoks): (Vec<String>, Vec<Vec<u32>>) = (Vec::new(), Vec::new());
    for (sw, st) in subwords.into_iter().zip(subtoks) {
        let special = st[0] >= tok.eot;
        let with_space = sw.starts_with(' ');
        let punctuation = PUNCT.contains(sw.trim());
        if special || with_space || punctuation || words.is_empty() {
            words.push(sw);
            wtoks.push(st);
        } else {
            words.last_mut().unwrap().push_str(&sw);
            wtoks.last_mut().unwrap().extend(st);
        }
    }
    Ok((words, wtoks))
}

/// openai `merge_punctuations` (Python `in` on strings is a substring test).
pub fn merge_punctuations(al: &mut [WordTiming], prepended: &str, appended: &str) {
    if al.len() >= 2 {
        let (mut i, mut j) = (al.len() as isize - 2, al.len() - 1);
        while i >= 0 {
            let iu = i as usize;
            if al[iu].word.starts_with(' ') && prepended.contains(al[iu].word.trim()) {
                let (w, t) = (
                    std::mem::take(&mut al[iu].word),
                    std::mem::take(&mut al[iu].tokens),
                );
                al[j].word = w + &al[j].word;
                al[j].tokens = [t, std::mem::take(&mut al[j].tokens)].concat();
            } else {
                j = iu;
            }
            i -= 1;
        }
    }
    let (mut i, mut j) = (0, 1);
    while j < al.len() {
        if !al[i].word.ends_with(' ') && appended.contains(al[j].word.as_str()) {
            let (w, t) = (
                std::mem::take(&mut al[j].word),
                std::mem::take(&mut al[j].tokens),
            );
            al[i].word.push_str(&w);
            al[i].tokens.extend(t);
        } else {
            i = j;
        }
        j += 1;
    }
}

/// openai `add_word_timestamps` after the alignment of the window's text:
/// sentence-boundary and pause heuristics, punctuation merging, words per
/// segment; segment bounds move to their words. `last_speech` is updated.
pub fn add_word_timestamps(
    segments: &mut [TimedSegment],
    mut alignment: Vec<WordTiming>,
    time_offset: f64,
    last_speech: &mut f64,
    eot: u32,
) {
    if segments.is_empty() {
        return;
    }
    let durs: Vec<f64> = alignment
        .iter()
        .map(|t| t.end - t.start)
        .filter(|&d| d != 0.0)
        .collect();
    let median = if durs.is_empty() {
        0.0
    } else {
        let mut d = durs.clone();
        d.sort_by(|a, b| a.total_cmp(b));
        let n = d.len();
        if n % 2 == 1 {
            d[n / 2]
        } else {
            (d[n / 2 - 1] + d[n / 2]) / 2.0
        }
    };
    let median = median.min(0.7);
    let max_d = median * 2.0;
    if !durs.is_empty() {
        const ENDS: &str = ".。!！?？";
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_d {
                if ENDS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_d;
                } else if ENDS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_d;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
    let round2 = |x: f64| (x * 100.0).round_ties_even() / 100.0;
    let mut wi = 0;
    for seg in segments.iter_mut() {
        let n_text = seg.tokens.iter().filter(|&&t| t < eot).count();
        let mut saved = 0;
        let mut words: Vec<Word> = Vec::new();
        while wi < alignment.len() && saved < n_text {
            let t = &alignment[wi];
            if !t.word.is_empty() {
                words.push(Word {
                    word: t.word.clone(),
                    start: round2(time_offset + t.start),
                    end: round2(time_offset + t.end),
                    probability: t.probability,
                });
            }
            saved += t.tokens.len();
            wi += 1;
        }
        if !words.is_empty() {
            let long_first = words[0].end - words[0].start > max_d;
            let long_pair = words.len() > 1 && words[1].end - words[0].start > max_d * 2.0;
            if words[0].end - *last_speech > median * 4.0 && (long_first || long_pair) {
                if words.len() > 1 && words[1].end - words[1].start > max_d {
                    let b = (words[1].end / 2.0).max(words[1].end - max_d);
                    words[0].end = b;
                    words[1].start = b;
                }
                words[0].start = (words[0].end - max_d).max(0.0);
            }
            if seg.start < words[0].end && seg.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median).min(seg.start).max(0.0);
            } else {
                seg.start = words[0].start;
            }
            let last = words.len() - 1;
            if seg.end > words[last].start && seg.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median).max(seg.end);
            } else {
                seg.end = words[last].end;
            }
            *last_speech = seg.end;
        }
        seg.words = words;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let x = [5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 0.0, 7.0];
        // Index 0's window (reflect): x[3] x[2] x[1] x[0] x[1] x[2] x[3] = 2 4 1 5 1 4 2.
        assert_eq!(median_filter(&x, 7)[0], 2.0);
        assert_eq!(median_filter(&x, 7).len(), x.len());
        assert_eq!(median_filter(&[1.0, 2.0], 7), vec![1.0, 2.0]);
    }

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        let x = vec![
            vec![0.0, 1.0, 1.0, 1.0],
            vec![1.0, 0.0, 0.0, 1.0],
            vec![1.0, 1.0, 1.0, 0.0],
        ];
        let (ti, fi) = dtw(&x);
        assert_eq!(ti, vec![0, 1, 1, 2]);
        assert_eq!(fi, vec![0, 1, 2, 3]);
    }

    #[test]
    fn punctuation_is_merged_like_openai() {
        let wt = |w: &str, t: u32| WordTiming {
            word: w.into(),
            tokens: vec![t],
            start: 0.0,
            end: 0.0,
            probability: 1.0,
        };
        let mut al = vec![
            wt(" (", 1),
            wt("hello", 2),
            wt(",", 3),
            wt(" world", 4),
            wt("!", 5),
        ];
        merge_punctuations(&mut al, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = al.iter().map(|a| a.word.as_str()).collect();
        assert_eq!(words, vec!["", " (hello,", "", " world!", ""]);
        assert_eq!(al[1].tokens, vec![1, 2, 3]);
    }
}
