//! Streaming audio decoding (symphonia): WAV (8/16/24/32-bit int, 32-bit
//! float), FLAC, MP3, Ogg Vorbis, AAC/M4A, and headerless raw PCM.
//!
//! A [`Decoder`] reads its input in packets and hands out mono `f32` chunks,
//! so memory stays bounded by one chunk whatever the file length.
//! Multi-channel audio is mixed down by averaging the channels. Integer
//! formats map into [-1, 1); float formats are passed through unclipped.
//!
//! Policy for damaged input: a decoder checks, at the end, the number of
//! sample frames it decoded against the length announced by the header
//! (WAV data chunk, FLAC STREAMINFO, MP3 Xing/Info tag, MP4 sample table).
//! A shortfall is [`CodecError::Truncated`]: the stream first yields the
//! decodable prefix, then that error; [`read_audio`] returns the error. A
//! file cut exactly at a packet boundary whose header announces no length
//! (e.g. a plain MP3 without Xing tag) cannot be told from a shorter file.
//! Malformed packets are errors, never skipped silently; panics inside
//! symphonia are caught and reported as [`CodecError::Malformed`].

use std::fs::File;
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::{CodecError, Result};
use crate::resample::{Quality, Resampler};
use crate::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Name used in errors for audio read from standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Default minimum number of mono samples per [`Decoder::next_chunk`].
pub const DEFAULT_CHUNK: usize = 16384;

/// Sample encoding of headerless (raw) PCM input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSampleFormat {
    /// Signed 16-bit little-endian.
    S16Le,
    /// Signed 32-bit little-endian.
    S32Le,
    /// 32-bit IEEE float little-endian.
    F32Le,
}

impl RawSampleFormat {
    fn bytes(self) -> usize {
        match self {
            RawSampleFormat::S16Le => 2,
            RawSampleFormat::S32Le | RawSampleFormat::F32Le => 4,
        }
    }
}

impl std::str::FromStr for RawSampleFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "s16le" | "s16" => Ok(Self::S16Le),
            "s32le" | "s32" => Ok(Self::S32Le),
            "f32le" | "f32" => Ok(Self::F32Le),
            _ => Err(format!(
                "unknown raw sample format {s:?} (s16le, s32le, f32le)"
            )),
        }
    }
}

/// Layout of headerless PCM input (default: 16 kHz mono s16le).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPcm {
    pub sample_rate: u32,
    pub channels: u16,
    pub format: RawSampleFormat,
}

impl Default for RawPcm {
    fn default() -> Self {
        RawPcm {
            sample_rate: 16000,
            channels: 1,
            format: RawSampleFormat::S16Le,
        }
    }
}

/// Decoded mono audio held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// A streaming decoder yielding mono `f32` chunks at the file's own rate.
pub struct Decoder {
    name: PathBuf,
    sample_rate: u32,
    frames_out: u64,
    min_chunk: usize,
    done: bool,
    inner: Inner,
}

enum Inner {
    Sym(Box<SymState>),
    Raw(RawState),
}

struct SymState {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn codecs::Decoder>,
    track_id: u32,
    expected: Option<u64>,
    slack: u64,
    buf: Option<SampleBuffer<f32>>,
    pending: Vec<f32>,
    eof: bool,
}

struct RawState {
    reader: Box<dyn Read + Send>,
    layout: RawPcm,
    bytes: Vec<u8>,
    filled: usize,
    total_bytes: u64,
    eof: bool,
}

fn check_rate(name: &Path, rate: u64) -> Result<u32> {
    if (MIN_SAMPLE_RATE as u64..=MAX_SAMPLE_RATE as u64).contains(&rate) {
        Ok(rate as u32)
    } else {
        Err(CodecError::BadSampleRate {
            path: name.to_path_buf(),
            rate,
        })
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`, turning a panic into a `Malformed` error naming `name`.
fn guard<T>(name: &Path, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| CodecError::Malformed {
        path: name.to_path_buf(),
        detail: format!("{what} panicked: {}", panic_message(p)),
    })
}

fn codec_name(c: codecs::CodecType) -> String {
    if let Some(d) = symphonia::default::get_codecs().get_codec(c) {
        return d.short_name.to_string();
    }
    let known = [
        (codecs::CODEC_TYPE_OPUS, "opus"),
        (codecs::CODEC_TYPE_SPEEX, "speex"),
        (codecs::CODEC_TYPE_WAVPACK, "wavpack"),
        (codecs::CODEC_TYPE_MP1, "mp1"),
        (codecs::CODEC_TYPE_EAC3, "eac3"),
        (codecs::CODEC_TYPE_DCA, "dts"),
        (codecs::CODEC_TYPE_ATRAC3, "atrac3"),
        (codecs::CODEC_TYPE_PCM_ALAW, "pcm a-law"),
        (codecs::CODEC_TYPE_PCM_MULAW, "pcm mu-law"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == c)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("(symphonia codec id {c})"))
}

fn is_lossless(c: codecs::CodecType) -> bool {
    use codecs::*;
    // PCM codec ids are 0x100..=0x125 in symphonia; CodecType only exposes them via Display.
    let pcm = u32::from_str_radix(c.to_string().trim_start_matches("0x"), 16)
        .is_ok_and(|id| (0x100..=0x1ff).contains(&id));
    c == CODEC_TYPE_FLAC || c == CODEC_TYPE_ALAC || pcm
}

impl Decoder {
    /// Opens a file (format detected from its content, the extension is a
    /// hint). The path `-` reads a container (e.g. WAV) from standard input.
    pub fn open(path: impl AsRef<Path>) -> Result<Decoder> {
        let path = path.as_ref();
        if path == Path::new("-") {
            return Decoder::from_reader(std::io::stdin(), STDIN_NAME);
        }
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CodecError::NotFound { path: path.into() },
            _ => CodecError::Io {
                path: path.into(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Err(CodecError::IsDirectory { path: path.into() });
        }
        if meta.len() == 0 {
            return Err(CodecError::EmptyFile { path: path.into() });
        }
        let mut file = File::open(path).map_err(|e| CodecError::Io {
            path: path.into(),
            source: e,
        })?;
        let mut head = [0u8; 512];
        let n = read_full(&mut file, &mut head).map_err(|e| CodecError::Io {
            path: path.into(),
            source: e,
        })?;
        check_wav_header(path, &head[..n])?;
        if crate::mp4check::looks_like_mp4(&head[..n]) {
            crate::mp4check::check_mp4(&mut file, meta.len()).map_err(|detail| {
                CodecError::Malformed {
                    path: path.into(),
                    detail,
                }
            })?;
        }
        std::io::Seek::rewind(&mut file).map_err(|e| CodecError::Io {
            path: path.into(),
            source: e,
        })?;
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        Decoder::from_source(path.into(), Box::new(file), hint)
    }

    /// Decodes a container read from any byte stream (not seekable: formats
    /// needing seeks, such as some MP4 layouts, may fail, and the MP4 table
    /// sanity check of [`Decoder::open`] cannot run). `name` labels errors.
    pub fn from_reader<R: Read + Send + Sync + 'static>(
        mut reader: R,
        name: impl Into<PathBuf>,
    ) -> Result<Decoder> {
        let name = name.into();
        let mut head = vec![0u8; 512];
        let n = read_full(&mut reader, &mut head).map_err(|e| CodecError::Io {
            path: name.clone(),
            source: e,
        })?;
        if n == 0 {
            return Err(CodecError::EmptyFile { path: name });
        }
        head.truncate(n);
        check_wav_header(&name, &head)?;
        let src = ReadOnlySource::new(Cursor::new(head).chain(reader));
        Decoder::from_source(name, Box::new(src), Hint::new())
    }

    /// Decodes a container held in memory (seekable). `name` labels errors.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Decoder> {
        let name = name.into();
        if bytes.is_empty() {
            return Err(CodecError::EmptyFile { path: name });
        }
        check_wav_header(&name, &bytes[..bytes.len().min(512)])?;
        if crate::mp4check::looks_like_mp4(&bytes) {
            crate::mp4check::check_mp4(&mut Cursor::new(&bytes), bytes.len() as u64).map_err(
                |detail| CodecError::Malformed {
                    path: name.clone(),
                    detail,
                },
            )?;
        }
        Decoder::from_source(name, Box::new(Cursor::new(bytes)), Hint::new())
    }

    /// Reads headerless PCM with the given layout from a byte stream.
    pub fn raw<R: Read + Send + 'static>(
        reader: R,
        name: impl Into<PathBuf>,
        layout: RawPcm,
    ) -> Result<Decoder> {
        let name = name.into();
        let rate = check_rate(&name, layout.sample_rate as u64)?;
        if layout.channels == 0 {
            return Err(CodecError::InvalidArgument(
                "raw PCM needs at least one channel".into(),
            ));
        }
        let frame = layout.format.bytes() * layout.channels as usize;
        let bytes = vec![0u8; frame * DEFAULT_CHUNK];
        Ok(Decoder {
            name,
            sample_rate: rate,
            frames_out: 0,
            min_chunk: DEFAULT_CHUNK,
            done: false,
            inner: Inner::Raw(RawState {
                reader: Box::new(reader),
                layout,
                bytes,
                filled: 0,
                total_bytes: 0,
                eof: false,
            }),
        })
    }

    fn from_source(name: PathBuf, source: Box<dyn MediaSource>, hint: Hint) -> Result<Decoder> {
        let mss = MediaSourceStream::new(source, Default::default());
        let fmt_opts = FormatOptions {
            enable_gapless: true,
            ..Default::default()
        };
        let probed = guard(&name, "format probe", || {
            symphonia::default::get_probe().format(
                &hint,
                mss,
                &fmt_opts,
                &MetadataOptions::default(),
            )
        })?
        .map_err(|e| match e {
            SymError::Unsupported(m) => CodecError::UnrecognizedFormat {
                path: name.clone(),
                detail: m.to_string(),
            },
            SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                CodecError::UnrecognizedFormat {
                    path: name.clone(),
                    detail: "data ends inside the header".into(),
                }
            }
            e => CodecError::UnrecognizedFormat {
                path: name.clone(),
                detail: e.to_string(),
            },
        })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| CodecError::NoAudio { path: name.clone() })?;
        let params = track.codec_params.clone();
        let track_id = track.id;
        let rate = match params.sample_rate {
            Some(r) => check_rate(&name, r as u64)?,
            None => 0, // learnt from the first decoded packet
        };
        let decoder = guard(&name, "codec setup", || {
            symphonia::default::get_codecs().make(&params, &DecoderOptions::default())
        })?
        .map_err(|e| match e {
            SymError::Unsupported(_) => CodecError::UnsupportedCodec {
                path: name.clone(),
                codec: codec_name(params.codec),
            },
            e => CodecError::Malformed {
                path: name.clone(),
                detail: e.to_string(),
            },
        })?;
        let slack = if is_lossless(params.codec) { 0 } else { 4096 };
        let mut dec = Decoder {
            name,
            sample_rate: rate,
            frames_out: 0,
            min_chunk: DEFAULT_CHUNK,
            done: false,
            inner: Inner::Sym(Box::new(SymState {
                format,
                decoder,
                track_id,
                expected: params.n_frames,
                slack,
                buf: None,
                pending: Vec::new(),
                eof: false,
            })),
        };
        // Decode the first packet now: bad files fail at open, and the rate is known.
        let first = dec.sym_packet()?;
        if let (Inner::Sym(s), Some(first)) = (&mut dec.inner, first) {
            s.pending = first;
        }
        if dec.sample_rate == 0 {
            return Err(CodecError::NoAudio { path: dec.name });
        }
        Ok(dec)
    }

    /// Sample rate of the decoded audio in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Name used in errors (the path, or e.g. `<stdin>`).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Number of sample frames the header announces, when it does.
    pub fn n_frames_hint(&self) -> Option<u64> {
        match &self.inner {
            Inner::Sym(s) => s.expected,
            Inner::Raw(_) => None,
        }
    }

    /// Sample frames handed out so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_out
    }

    /// Sets the minimum number of samples per chunk (the last may be shorter).
    pub fn set_min_chunk(&mut self, n: usize) {
        self.min_chunk = n.max(1);
    }

    /// Next chunk of mono samples; `Ok(None)` at the end. After an error the
    /// decoder is finished and returns `Ok(None)`.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>> {
        if self.done {
            return Ok(None);
        }
        let r = self.next_chunk_inner();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn next_chunk_inner(&mut self) -> Result<Option<Vec<f32>>> {
        let mut out = match &mut self.inner {
            Inner::Sym(s) => std::mem::take(&mut s.pending),
            Inner::Raw(_) => Vec::new(),
        };
        while out.len() < self.min_chunk {
            let more = match &self.inner {
                Inner::Sym(_) => self.sym_packet()?,
                Inner::Raw(_) => self.raw_block()?,
            };
            match more {
                Some(v) if out.is_empty() => out = v,
                Some(v) => out.extend_from_slice(&v),
                None => break,
            }
        }
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            return Err(CodecError::NonFinite {
                path: self.name.clone(),
                frame: self.frames_out + i as u64,
            });
        }
        self.frames_out += out.len() as u64;
        if !out.is_empty() {
            return Ok(Some(out));
        }
        self.finish_checks()?;
        Ok(None)
    }

    fn finish_checks(&self) -> Result<()> {
        if let Inner::Sym(s) = &self.inner {
            if let Some(expected) = s.expected {
                if self.frames_out + s.slack < expected {
                    return Err(CodecError::Truncated {
                        path: self.name.clone(),
                        decoded: self.frames_out,
                        expected,
                    });
                }
            }
        }
        if self.frames_out == 0 {
            return Err(CodecError::NoAudio {
                path: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Decodes the next packet of our track into mono samples (None at end).
    fn sym_packet(&mut self) -> Result<Option<Vec<f32>>> {
        let name = self.name.clone();
        let Inner::Sym(s) = &mut self.inner else {
            return Ok(None);
        };
        if s.eof {
            return Ok(None);
        }
        loop {
            let pkt = guard(&name, "demuxer", || s.format.next_packet())?;
            let pkt =
                match pkt {
                    Ok(p) => p,
                    Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        s.eof = true;
                        return Ok(None);
                    }
                    Err(SymError::ResetRequired) => return Err(CodecError::Malformed {
                        path: name,
                        detail:
                            "stream changes its parameters mid-way (chained stream): not supported"
                                .into(),
                    }),
                    Err(e) => {
                        return Err(CodecError::Malformed {
                            path: name,
                            detail: e.to_string(),
                        })
                    }
                };
            if pkt.track_id() != s.track_id {
                continue;
            }
            let decoder = &mut s.decoder;
            let buf = &mut s.buf;
            let res = guard(&name, "decoder", || -> std::result::Result<_, SymError> {
                let audio = decoder.decode(&pkt)?;
                let spec = *audio.spec();
                let frames = audio.frames();
                if frames == 0 {
                    return Ok(None);
                }
                let need = audio.capacity() as u64;
                if buf
                    .as_ref()
                    .is_none_or(|b| b.capacity() < need as usize * spec.channels.count())
                {
                    *buf = Some(SampleBuffer::<f32>::new(need, spec));
                }
                let b = buf.as_mut().expect("buffer just set");
                b.copy_interleaved_ref(audio);
                Ok(Some((
                    mixdown(b.samples(), spec.channels.count()),
                    spec.rate,
                )))
            })?;
            match res {
                Ok(None) => continue,
                Ok(Some((mono, rate))) => {
                    if self.sample_rate == 0 {
                        self.sample_rate = check_rate(&name, rate as u64)?;
                    } else if rate != self.sample_rate {
                        return Err(CodecError::Malformed {
                            path: name,
                            detail: format!(
                                "sample rate changes mid-stream ({} -> {rate} Hz)",
                                self.sample_rate
                            ),
                        });
                    }
                    return Ok(Some(mono));
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    s.eof = true;
                    return Ok(None);
                }
                Err(e) => {
                    return Err(CodecError::Malformed {
                        path: name,
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    /// Reads the next block of raw PCM (None at end).
    fn raw_block(&mut self) -> Result<Option<Vec<f32>>> {
        let name = self.name.clone();
        let Inner::Raw(r) = &mut self.inner else {
            return Ok(None);
        };
        if r.eof && r.filled == 0 {
            return Ok(None);
        }
        while !r.eof && r.filled < r.bytes.len() {
            match r.reader.read(&mut r.bytes[r.filled..]) {
                Ok(0) => r.eof = true,
                Ok(n) => {
                    r.filled += n;
                    r.total_bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(CodecError::Io {
                        path: name,
                        source: e,
                    })
                }
            }
        }
        if r.total_bytes == 0 {
            return Err(CodecError::EmptyFile { path: name });
        }
        let ch = r.layout.channels as usize;
        let frame = r.layout.format.bytes() * ch;
        let whole = r.filled / frame * frame;
        if r.eof && whole != r.filled {
            return Err(CodecError::Truncated {
                path: name,
                decoded: self.frames_out + (whole / frame) as u64,
                expected: self.frames_out + (whole / frame) as u64 + 1,
            });
        }
        let data = &r.bytes[..whole];
        let inter: Vec<f32> = match r.layout.format {
            RawSampleFormat::S16Le => data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                .collect(),
            RawSampleFormat::S32Le => data
                .chunks_exact(4)
                .map(|b| {
                    (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2147483648.0) as f32
                })
                .collect(),
            RawSampleFormat::F32Le => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        r.bytes.copy_within(whole..r.filled, 0);
        r.filled -= whole;
        if inter.is_empty() {
            return Ok(None);
        }
        Ok(Some(mixdown(&inter, ch)))
    }
}

/// Rejects a RIFF/WAVE header whose `fmt ` chunk has a sample rate of 0
/// (symphonia 0.5 panics on it) or out of range, before probing.
fn check_wav_header(name: &Path, head: &[u8]) -> Result<()> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(());
    }
    let mut pos = 12;
    while pos + 8 <= head.len() {
        let id = &head[pos..pos + 4];
        let len = u32::from_le_bytes([head[pos + 4], head[pos + 5], head[pos + 6], head[pos + 7]])
            as usize;
        if id == b"fmt " {
            if pos + 16 <= head.len() {
                let rate = u32::from_le_bytes([
                    head[pos + 12],
                    head[pos + 13],
                    head[pos + 14],
                    head[pos + 15],
                ]);
                check_rate(name, rate as u64)?;
            }
            return Ok(());
        }
        pos = pos.saturating_add(8).saturating_add(len + (len & 1));
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Averages interleaved channels into mono.
pub fn mixdown(interleaved: &[f32], channels: usize) -> Vec<f32> {
    match channels {
        0 | 1 => interleaved.to_vec(),
        2 => interleaved
            .chunks_exact(2)
            .map(|f| 0.5 * (f[0] + f[1]))
            .collect(),
        c => {
            let inv = 1.0 / c as f32;
            interleaved
                .chunks_exact(c)
                .map(|f| f.iter().sum::<f32>() * inv)
                .collect()
        }
    }
}

/// Decodes a whole file to mono, resampled to `target_rate` when given
/// (high quality). Memory grows with the file: prefer [`Decoder`] for long audio.
pub fn read_audio(path: impl AsRef<Path>, target_rate: Option<u32>) -> Result<Audio> {
    let dec = Decoder::open(path)?;
    decode_all(dec, target_rate, Quality::High)
}

/// Drains a decoder into memory, resampling to `target_rate` when given.
pub fn decode_all(mut dec: Decoder, target_rate: Option<u32>, quality: Quality) -> Result<Audio> {
    let from = dec.sample_rate();
    let to = target_rate.unwrap_or(from);
    let mut rs = Resampler::new(from, to, quality)?;
    let mut samples = Vec::new();
    if let Some(n) = dec.n_frames_hint() {
        let n = Resampler::output_len(from, to, n).min(1 << 28);
        samples.reserve(n as usize);
    }
    while let Some(chunk) = dec.next_chunk()? {
        rs.process_into(&chunk, &mut samples)?;
    }
    rs.finish_into(&mut samples)?;
    Ok(Audio {
        samples,
        sample_rate: to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn decode(rel: &str) -> Audio {
        read_audio(fixture(rel), None).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn reference() -> Audio {
        decode("audio/speech_16k.wav")
    }

    /// RMS envelope in 10 ms frames.
    fn envelope(x: &[f32], rate: u32) -> Vec<f64> {
        let hop = rate as usize / 100;
        x.chunks(hop)
            .map(|c| (c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
            .collect()
    }

    /// Best normalised correlation of two envelopes over lags of ±200 ms.
    fn envelope_corr(a: &[f64], b: &[f64]) -> f64 {
        let mut best = -1.0f64;
        for lag in -20isize..=20 {
            let pairs: Vec<(f64, f64)> = (0..a.len())
                .filter_map(|i| {
                    let j = i as isize + lag;
                    (j >= 0 && (j as usize) < b.len()).then(|| (a[i], b[j as usize]))
                })
                .collect();
            let n = pairs.len() as f64;
            let (ma, mb) = (
                pairs.iter().map(|p| p.0).sum::<f64>() / n,
                pairs.iter().map(|p| p.1).sum::<f64>() / n,
            );
            let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
            let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
            let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
            best = best.max(cov / (va * vb).sqrt());
        }
        best
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn decoder_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Decoder>();
        is_send::<Resampler>();
    }

    #[test]
    fn pcm_wav_variants_decode_exactly() {
        let r = reference();
        assert_eq!(r.sample_rate, 16000);
        assert_eq!(r.samples.len(), 46684);
        // (file, max abs difference to the 16-bit reference: the format's quantisation step)
        for (rel, tol) in [
            ("audio/speech_s24.wav", 1e-6),
            ("audio/speech_s32.wav", 1e-6),
            ("audio/speech_f32.wav", 1e-6),
            ("audio/speech.flac", 0.0),
            ("audio/speech_u8.wav", 1.0 / 128.0 + 1e-6),
        ] {
            let a = decode(rel);
            assert_eq!(a.sample_rate, 16000, "{rel}");
            let d = max_abs_diff(&a.samples, &r.samples);
            assert!(d <= tol, "{rel}: max abs diff {d}");
        }
    }

    #[test]
    fn lossy_formats_decode_with_similar_content() {
        let r = reference();
        let env_r = envelope(&r.samples, 16000);
        // (file, allowed extra/missing samples: encoder delay/padding not removed by symphonia)
        for (rel, slack) in [
            ("audio/speech.mp3", 100usize),
            ("audio/speech.ogg", 100),
            ("audio/speech.m4a", 2048),
        ] {
            let a = decode(rel);
            assert_eq!(a.sample_rate, 16000, "{rel}");
            assert!(
                a.samples.len().abs_diff(r.samples.len()) <= slack,
                "{rel}: {} samples",
                a.samples.len()
            );
            assert!(
                a.samples.iter().all(|v| v.abs() <= 1.5),
                "{rel}: out of range"
            );
            let c = envelope_corr(&envelope(&a.samples, 16000), &env_r);
            assert!(c > 0.95, "{rel}: envelope correlation {c}");
        }
    }

    #[test]
    fn stereo_44k_is_mixed_down_and_resampled() {
        let r = reference();
        let d = Decoder::open(fixture("audio/speech_stereo_44k.wav")).unwrap();
        assert_eq!(d.sample_rate(), 44100);
        let a = read_audio(fixture("audio/speech_stereo_44k.wav"), Some(16000)).unwrap();
        assert_eq!(a.sample_rate, 16000);
        // 128673 frames at 44.1 kHz -> ceil(128673 * 160 / 441) = 46685.
        assert_eq!(a.samples.len(), 46685);
        // Left = speech, right = silence: mono = speech / 2 (up to two resamplings).
        let half: Vec<f32> = r.samples.iter().map(|v| v * 0.5).collect();
        let err: f64 = a.samples[..half.len()]
            .iter()
            .zip(&half)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>();
        let sig: f64 = half.iter().map(|y| (*y as f64).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 20.0, "SNR {snr} dB");
    }

    #[test]
    fn chunks_are_bounded_and_complete() {
        let mut d = Decoder::open(fixture("audio/long45_16k.flac")).unwrap();
        d.set_min_chunk(4096);
        let mut n = 0;
        let mut biggest = 0;
        while let Some(c) = d.next_chunk().unwrap() {
            n += c.len();
            biggest = biggest.max(c.len());
        }
        assert_eq!(n, 45 * 16000);
        assert!(biggest < 4096 + 8192, "chunk of {biggest} samples");
        assert_eq!(d.next_chunk().unwrap(), None);
    }

    #[test]
    fn raw_pcm_and_container_from_a_reader() {
        let r = reference();
        let bytes = std::fs::read(fixture("audio/speech_16k_s16le.raw")).unwrap();
        let d = Decoder::raw(Cursor::new(bytes.clone()), STDIN_NAME, RawPcm::default()).unwrap();
        assert_eq!(decode_all(d, None, Quality::High).unwrap(), r);
        // Same bytes as stereo: half as many frames, each the mean of a pair.
        let layout = RawPcm {
            channels: 2,
            ..RawPcm::default()
        };
        let a = decode_all(
            Decoder::raw(Cursor::new(bytes.clone()), "x", layout).unwrap(),
            None,
            Quality::High,
        )
        .unwrap();
        assert_eq!(a.samples.len(), r.samples.len() / 2);
        assert_eq!(a.samples[10], 0.5 * (r.samples[20] + r.samples[21]));
        // A dangling half sample is an error naming the input.
        let e = decode_all(
            Decoder::raw(
                Cursor::new(bytes[..101].to_vec()),
                "odd.raw",
                RawPcm::default(),
            )
            .unwrap(),
            None,
            Quality::High,
        )
        .unwrap_err();
        assert!(
            matches!(e, CodecError::Truncated { .. }) && e.to_string().contains("odd.raw"),
            "{e}"
        );
        let e = decode_all(
            Decoder::raw(Cursor::new(Vec::new()), STDIN_NAME, RawPcm::default()).unwrap(),
            None,
            Quality::High,
        )
        .unwrap_err();
        assert!(matches!(e, CodecError::EmptyFile { .. }), "{e}");
        // A WAV container through a non-seekable reader, and from memory.
        let wav = std::fs::read(fixture("audio/speech_16k.wav")).unwrap();
        let a = decode_all(
            Decoder::from_reader(Cursor::new(wav.clone()), STDIN_NAME).unwrap(),
            None,
            Quality::High,
        )
        .unwrap();
        assert_eq!(a, r);
        let a = decode_all(
            Decoder::from_bytes(wav, "mem").unwrap(),
            None,
            Quality::High,
        )
        .unwrap();
        assert_eq!(a, r);
    }

    /// Every bad input gets its error kind, and the message names the file.
    #[test]
    fn bad_inputs_get_clear_errors() {
        type Check = fn(&CodecError) -> bool;
        let cases: [(&str, Check); 14] = [
            ("audio/does_not_exist.wav", |e| {
                matches!(e, CodecError::NotFound { .. })
            }),
            ("audio", |e| matches!(e, CodecError::IsDirectory { .. })),
            ("audio/bad/empty.wav", |e| {
                matches!(e, CodecError::EmptyFile { .. })
            }),
            ("audio/bad/zero_length.wav", |e| {
                matches!(e, CodecError::NoAudio { .. })
            }),
            ("audio/bad/text.wav", |e| {
                matches!(e, CodecError::UnrecognizedFormat { .. })
            }),
            ("audio/bad/truncated.wav", |e| {
                matches!(e, CodecError::Truncated { .. })
            }),
            ("audio/bad/truncated.flac", |e| {
                matches!(e, CodecError::Truncated { .. })
            }),
            ("audio/bad/truncated.mp3", |e| {
                matches!(e, CodecError::Truncated { .. })
            }),
            ("audio/bad/nan.wav", |e| {
                matches!(e, CodecError::NonFinite { frame: 100, .. })
            }),
            ("audio/bad/rate0.wav", |e| {
                matches!(e, CodecError::BadSampleRate { rate: 0, .. })
            }),
            ("audio/bad/rate_absurd.wav", |e| {
                matches!(
                    e,
                    CodecError::BadSampleRate {
                        rate: 2_000_000_000,
                        ..
                    }
                )
            }),
            (
                "audio/speech.opus",
                |e| matches!(e, CodecError::UnsupportedCodec { codec, .. } if codec == "opus"),
            ),
            ("audio/speech_16k_s16le.raw", |e| {
                matches!(e, CodecError::UnrecognizedFormat { .. })
            }),
            // Found by the fuzzer: an M4A whose sample table makes symphonia allocate 37 GB.
            ("audio/bad/fuzz_huge_table.m4a", |e| {
                matches!(e, CodecError::Malformed { .. })
            }),
        ];
        for (rel, check) in cases {
            let path = fixture(rel);
            let e = read_audio(&path, Some(16000)).expect_err(rel);
            assert!(check(&e), "{rel}: wrong error {e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{rel}: message does not name the file: {msg}"
            );
            assert_eq!(e.path(), Some(path.as_path()));
        }
    }

    #[test]
    fn truncated_stream_yields_prefix_then_error() {
        let mut d = Decoder::open(fixture("audio/bad/truncated.wav")).unwrap();
        let mut n = 0;
        let err = loop {
            match d.next_chunk() {
                Ok(Some(c)) => n += c.len(),
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert!(n > 20000);
        assert!(
            matches!(err, CodecError::Truncated { decoded, expected: 46684, .. } if decoded == n as u64)
        );
        assert_eq!(d.next_chunk().unwrap(), None);
    }

    #[test]
    fn garbage_never_panics() {
        // Headers of real files followed by noise, and pure noise.
        let mut seed = 12345u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for rel in [
            "audio/speech.mp3",
            "audio/speech.flac",
            "audio/speech.ogg",
            "audio/speech.m4a",
            "audio/speech_16k.wav",
        ] {
            let good = std::fs::read(fixture(rel)).unwrap();
            for keep in [0usize, 4, 12, 44, 200, 1000] {
                let mut b: Vec<u8> = good[..keep.min(good.len())].to_vec();
                b.extend((0..3000).map(|_| rnd()));
                if let Ok(d) = Decoder::from_bytes(b, rel) {
                    let _ = decode_all(d, Some(16000), Quality::Fast);
                }
            }
        }
    }
}
