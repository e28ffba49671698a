//! Live audio sources for streaming commands: mono chunks at a chosen rate
//! (16 kHz for speech recognition) delivered as they become available.
//!
//! - [`FileSource`]: a file decoded and resampled in small chunks (as fast
//!   as it decodes); wrap it in [`Paced`] to replay it at real-time pace.
//! - [`PcmReader`]: headerless PCM from any byte stream (stdin), converted as
//!   bytes arrive.
//! - [`Paced`]: releases another source's chunks on a wall clock (optionally
//!   sped up, for tests).
//!
//! A microphone implements [`LiveSource`] the same way (the `voxtok` binary
//! does it with cpal behind its `mic` feature).

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::decode::{mixdown, Decoder, RawPcm, RawSampleFormat};
use crate::error::CodecError;
use crate::resample::{Quality, Resampler};

/// Default sample rate of live chunks (Hz): what Whisper and the VADs take.
pub const LIVE_RATE: u32 = 16_000;

/// Why a live source stopped delivering audio.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Decoding, reading or resampling failed (names the input).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A capture device problem (none present, no permission, disconnected).
    #[error("{0}")]
    Device(String),
    /// No audio arrived for too long.
    #[error("{name}: no audio for {secs:.1} s (the source stalled)")]
    Stalled { name: String, secs: f64 },
}

/// A source of live mono audio.
pub trait LiveSource: Send {
    /// Name used in messages: a path, `<stdin>` or a device name.
    fn name(&self) -> String;
    /// Sample rate of the chunks (Hz).
    fn sample_rate(&self) -> u32;
    /// The next mono samples, blocking until some are available;
    /// `Ok(None)` at the end of the input.
    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError>;
    /// True when chunks arrive at the pace of speech (microphone, paced
    /// replay, a pipe); false when the whole input is available at once.
    fn is_live(&self) -> bool;
}

impl LiveSource for Box<dyn LiveSource> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn sample_rate(&self) -> u32 {
        (**self).sample_rate()
    }
    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
        (**self).next_chunk()
    }
    fn is_live(&self) -> bool {
        (**self).is_live()
    }
}

/// Samples per chunk for `chunk_ms` milliseconds at `rate` Hz (at least 1).
pub fn chunk_samples(rate: u32, chunk_ms: u32) -> usize {
    (rate as usize * chunk_ms as usize / 1000).max(1)
}

/// A file decoded and resampled to a chosen rate, handed out in fixed-size chunks
/// (the last may be shorter). Memory is bounded by one decoder packet.
pub struct FileSource {
    name: PathBuf,
    dec: Decoder,
    rs: Resampler,
    out: VecDeque<f32>,
    chunk: usize,
    eof: bool,
}

impl FileSource {
    /// Opens `path`; chunks of `chunk_ms` milliseconds at `rate` Hz.
    pub fn open(path: impl AsRef<Path>, rate: u32, chunk_ms: u32) -> Result<Self, CodecError> {
        Self::from_decoder(Decoder::open(path)?, rate, chunk_ms)
    }

    /// Wraps an opened decoder.
    pub fn from_decoder(mut dec: Decoder, rate: u32, chunk_ms: u32) -> Result<Self, CodecError> {
        let chunk = chunk_samples(rate, chunk_ms);
        // Decode about one chunk at a time at the file's own rate.
        let native = (dec.sample_rate() as usize * chunk_ms as usize / 1000).max(1);
        dec.set_min_chunk(native);
        let rs = Resampler::new(dec.sample_rate(), rate, Quality::High)?;
        Ok(FileSource {
            name: dec.name().to_path_buf(),
            dec,
            rs,
            out: VecDeque::new(),
            chunk,
            eof: false,
        })
    }

    /// Sample rate of the file before resampling.
    pub fn native_rate(&self) -> u32 {
        self.rs.from_rate()
    }
}

impl LiveSource for FileSource {
    fn name(&self) -> String {
        self.name.display().to_string()
    }

    fn sample_rate(&self) -> u32 {
        self.rs.to_rate()
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
        let mut buf = Vec::new();
        while self.out.len() < self.chunk && !self.eof {
            buf.clear();
            match self.dec.next_chunk()? {
                Some(c) => self.rs.process_into(&c, &mut buf)?,
                None => {
                    self.rs.finish_into(&mut buf)?;
                    self.eof = true;
                }
            }
            self.out.extend(buf.iter().copied());
        }
        if self.out.is_empty() {
            return Ok(None);
        }
        let n = self.chunk.min(self.out.len());
        Ok(Some(self.out.drain(..n).collect()))
    }

    fn is_live(&self) -> bool {
        false
    }
}

/// Headerless PCM read from a byte stream (e.g. stdin) as it arrives,
/// mixed down to mono and resampled to a chosen rate.
pub struct PcmReader {
    name: String,
    reader: Box<dyn Read + Send>,
    layout: RawPcm,
    rs: Resampler,
    bytes: Vec<u8>,
    filled: usize,
    eof: bool,
    total: u64,
}

impl PcmReader {
    /// Reads `layout` PCM from `reader`, resampled to `rate` Hz; at most
    /// `chunk_ms` of audio per read.
    pub fn new(
        reader: Box<dyn Read + Send>,
        name: impl Into<String>,
        layout: RawPcm,
        rate: u32,
        chunk_ms: u32,
    ) -> Result<Self, CodecError> {
        let name = name.into();
        if layout.channels == 0 {
            return Err(CodecError::InvalidArgument(
                "raw PCM needs at least one channel".into(),
            ));
        }
        if !(crate::MIN_SAMPLE_RATE..=crate::MAX_SAMPLE_RATE).contains(&layout.sample_rate) {
            return Err(CodecError::BadSampleRate {
                path: PathBuf::from(&name),
                rate: layout.sample_rate as u64,
            });
        }
        let frame = sample_bytes(layout.format) * layout.channels as usize;
        let frames = (layout.sample_rate as usize * chunk_ms as usize / 1000).max(1);
        let rs = Resampler::new(layout.sample_rate, rate, Quality::High)?;
        Ok(PcmReader {
            name,
            reader,
            layout,
            rs,
            bytes: vec![0; frames * frame],
            filled: 0,
            eof: false,
            total: 0,
        })
    }
}

fn sample_bytes(f: RawSampleFormat) -> usize {
    match f {
        RawSampleFormat::S16Le => 2,
        RawSampleFormat::S32Le | RawSampleFormat::F32Le => 4,
    }
}

/// Interleaved samples of whole frames of raw PCM bytes.
fn convert(data: &[u8], format: RawSampleFormat) -> Vec<f32> {
    match format {
        RawSampleFormat::S16Le => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect(),
        RawSampleFormat::S32Le => data
            .chunks_exact(4)
            .map(|b| (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2147483648.0) as f32)
            .collect(),
        RawSampleFormat::F32Le => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

impl LiveSource for PcmReader {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn sample_rate(&self) -> u32 {
        self.rs.to_rate()
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
        let frame = sample_bytes(self.layout.format) * self.layout.channels as usize;
        let mut out = Vec::new();
        // Read until at least one output sample is ready (the resampler
        // holds back a partial block) or the input ends.
        while out.is_empty() && !self.eof {
            let n = loop {
                match self.reader.read(&mut self.bytes[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(CodecError::Io {
                            path: PathBuf::from(&self.name),
                            source: e,
                        }
                        .into())
                    }
                }
            };
            if n == 0 {
                self.eof = true;
                if !self.filled.is_multiple_of(frame) {
                    return Err(CodecError::Truncated {
                        path: PathBuf::from(&self.name),
                        decoded: self.total / frame as u64,
                        expected: self.total / frame as u64 + 1,
                    }
                    .into());
                }
                if self.total == 0 {
                    return Err(CodecError::EmptyFile {
                        path: PathBuf::from(&self.name),
                    }
                    .into());
                }
                self.rs.finish_into(&mut out)?;
                break;
            }
            self.filled += n;
            self.total += n as u64;
            let whole = self.filled / frame * frame;
            if whole == 0 {
                continue;
            }
            let inter = convert(&self.bytes[..whole], self.layout.format);
            if let Some(i) = inter.iter().position(|x| !x.is_finite()) {
                return Err(CodecError::NonFinite {
                    path: PathBuf::from(&self.name),
                    frame: (self.total - n as u64) / frame as u64
                        + (i / self.layout.channels as usize) as u64,
                }
                .into());
            }
            self.bytes.copy_within(whole..self.filled, 0);
            self.filled -= whole;
            let mono = mixdown(&inter, self.layout.channels as usize);
            self.rs.process_into(&mono, &mut out)?;
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// Releases the chunks of another source on a wall clock: a chunk ending at
/// audio time `t` is delivered at `start + t / speedup` (never early).
pub struct Paced<S> {
    inner: S,
    speedup: f64,
    start: Option<Instant>,
    released: u64,
}

impl<S: LiveSource> Paced<S> {
    /// Real-time pace times `speedup` (1.0 = real time; must be > 0).
    pub fn new(inner: S, speedup: f64) -> Self {
        Paced {
            inner,
            speedup: if speedup > 0.0 { speedup } else { 1.0 },
            start: None,
            released: 0,
        }
    }
}

impl<S: LiveSource> LiveSource for Paced<S> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let Some(c) = self.inner.next_chunk()? else {
            return Ok(None);
        };
        self.released += c.len() as u64;
        let rate = self.inner.sample_rate().max(1) as f64;
        let due = Duration::from_secs_f64(self.released as f64 / rate / self.speedup);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        Ok(Some(c))
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn drain(s: &mut dyn LiveSource) -> (Vec<f32>, usize) {
        let mut all = Vec::new();
        let mut n = 0;
        while let Some(c) = s.next_chunk().unwrap() {
            all.extend(c);
            n += 1;
        }
        (all, n)
    }

    #[test]
    fn file_chunks_equal_whole_file_decode() {
        let path = fixture("audio/speech_stereo_44k.wav");
        let whole = crate::read_audio(&path, Some(LIVE_RATE)).unwrap().samples;
        let mut src = FileSource::open(&path, LIVE_RATE, 100).unwrap();
        assert_eq!(src.native_rate(), 44100);
        let (all, n) = drain(&mut src);
        assert_eq!(all.len(), whole.len());
        let max = all
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-6, "max diff {max}");
        assert!(n >= whole.len() / 1600, "{n} chunks");
    }

    #[test]
    fn pcm_reader_matches_raw_decoder_and_trickles() {
        let raw = std::fs::read(fixture("audio/speech_16k_s16le.raw")).unwrap();
        // A reader that hands out 37 bytes at a time (odd: splits samples).
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = 37.min(buf.len()).min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let mut r = PcmReader::new(
            Box::new(Trickle(raw.clone(), 0)),
            "<stdin>",
            RawPcm::default(),
            LIVE_RATE,
            100,
        )
        .unwrap();
        let (all, _) = drain(&mut r);
        let expect: Vec<f32> = convert(&raw, RawSampleFormat::S16Le);
        assert_eq!(all, expect);
    }

    #[test]
    fn pcm_reader_errors() {
        let mut r = PcmReader::new(
            Box::new(std::io::Cursor::new(vec![1u8, 2, 3])),
            "<stdin>",
            RawPcm::default(),
            LIVE_RATE,
            100,
        )
        .unwrap();
        let e = loop {
            match r.next_chunk() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("odd byte count accepted"),
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut empty = PcmReader::new(
            Box::new(std::io::Cursor::new(Vec::new())),
            "<stdin>",
            RawPcm::default(),
            LIVE_RATE,
            100,
        )
        .unwrap();
        assert!(empty
            .next_chunk()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let bad = RawPcm {
            sample_rate: 0,
            ..RawPcm::default()
        };
        assert!(
            PcmReader::new(Box::new(std::io::empty()), "<stdin>", bad, LIVE_RATE, 100).is_err()
        );
    }

    #[test]
    fn paced_release_follows_the_clock() {
        // 0.5 s of audio at 10x should take about 50 ms, never less.
        struct Ones(usize);
        impl LiveSource for Ones {
            fn name(&self) -> String {
                "ones".into()
            }
            fn sample_rate(&self) -> u32 {
                LIVE_RATE
            }
            fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
                if self.0 == 0 {
                    return Ok(None);
                }
                self.0 -= 1;
                Ok(Some(vec![1.0; 1600]))
            }
            fn is_live(&self) -> bool {
                false
            }
        }
        let mut p = Paced::new(Ones(5), 10.0);
        let t = Instant::now();
        let (all, n) = drain(&mut p);
        let dt = t.elapsed().as_secs_f64();
        assert_eq!((all.len(), n), (8000, 5));
        assert!(dt >= 0.049, "released too early: {dt}");
        assert!(dt < 1.0, "too slow: {dt}");
        assert!(p.is_live());
    }
}
