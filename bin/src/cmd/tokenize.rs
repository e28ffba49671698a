//! `voxtok tokenize` (audio → discrete codes) and `voxtok detokenize`
//! (codes → WAV) over the tokenizers in `voxtok_models::codec`.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use voxtok_models::codec::{self, llm_mapping, npy, AudioTokenizer, CodecKind, Codes, LoadOptions};
use voxtok_models::runtime::{parse_device, ModelDir};
use voxtok_pipeline::inputs::Input;

/// Model selection shared by both commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Tokenizer family: encodec, dac, mimi, ssl (HuBERT / wav2vec2 / WavLM
    /// features + k-means; no decoder).
    #[arg(long, value_name = "encodec|dac|mimi|ssl")]
    pub codec: String,
    /// Hugging Face-layout model directory (config.json + *.safetensors),
    /// or a name under $VOXTOK_MODELS.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `voxtok tokenize`.
#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Target bitrate in kbps (EnCodec: 1.5, 3, 6, 12, 24 for the 24 kHz
    /// model ↔ 2, 4, 8, 16, 32 codebooks). Default: the model's first target bandwidth.
    #[arg(long, value_name = "KBPS", conflicts_with = "codebooks")]
    pub bandwidth: Option<f64>,
    /// Number of codebooks to keep (instead of --bandwidth).
    #[arg(long, value_name = "N")]
    pub codebooks: Option<usize>,
    /// SSL: hidden layer whose features are clustered (transformers'
    /// `hidden_states[L]`: 0 = transformer input, L = output of layer L).
    #[arg(long, value_name = "L")]
    pub layer: Option<usize>,
    /// SSL: k-means centroids, .npy [K x D] float or .safetensors.
    #[arg(long, value_name = "FILE")]
    pub kmeans: Option<PathBuf>,
    /// SSL: collapse runs of repeated ids.
    #[arg(long)]
    pub dedup: bool,
    /// JSONL: also write `llm_ids`, the codes mapped into a text LLM's
    /// vocabulary starting at id BASE (usually the text vocabulary size):
    /// code c of codebook k -> BASE + k*codebook_size + c, wrapped in
    /// <audio> (BASE + K*codebook_size) ... </audio> (that + 1).
    #[arg(long, value_name = "BASE")]
    pub llm_base: Option<u32>,
    /// Order of `llm_ids`: interleaved (frame-major) or flattened (codebook-major).
    #[arg(long, default_value = "interleaved", value_parser = ["interleaved", "flattened"])]
    pub llm_order: String,
    /// Audio files or directories (searched recursively for audio files).
    #[arg(required = true, value_name = "IN")]
    pub inputs: Vec<String>,
    /// Output: OUT.npy (int64 [codebooks x frames]; one input only) or
    /// OUT.jsonl / `-` (one JSON object per input: path, codec, codebooks,
    /// frame_rate, codes, error).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// `voxtok detokenize`.
#[derive(clap::Args, Debug)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codes as .npy: integer [codebooks x frames] (or [1 x codebooks x frames]).
    #[arg(value_name = "CODES.npy")]
    pub codes: PathBuf,
    /// Output WAV (16-bit PCM at the model's sample rate).
    #[arg(short, long, value_name = "OUT.wav")]
    pub output: PathBuf,
    /// Write 32-bit float WAV instead of 16-bit PCM.
    #[arg(long)]
    pub float: bool,
}

fn load(m: &ModelArgs, opts: &LoadOptions) -> anyhow::Result<Box<dyn AudioTokenizer>> {
    let kind: CodecKind = m.codec.parse()?;
    let device = parse_device(&m.device)?;
    let dir = ModelDir::open(&m.model)?;
    let tok = codec::load(kind, &dir, opts, &device).with_context(|| {
        format!(
            "cannot load the {} model from {}",
            kind.name(),
            m.model.display()
        )
    })?;
    let i = tok.info();
    tracing::info!(
        "{}: {} Hz, {} Hz frames, {} codebooks of {}",
        i.codec,
        i.sample_rate,
        i.frame_rate,
        i.max_codebooks,
        i.codebook_size
    );
    Ok(tok)
}

/// Reads, downmixes and (if needed) resamples one file to the model's rate.
fn read_input(path: &Path, rate: u32) -> anyhow::Result<Vec<f32>> {
    let dec = voxtok_codecs::Decoder::open(path)?;
    let from = dec.sample_rate();
    if from != rate {
        tracing::info!("{}: resampling {from} Hz -> {rate} Hz", path.display());
    }
    let audio = voxtok_codecs::decode::decode_all(dec, Some(rate), voxtok_codecs::Quality::High)?;
    if audio.samples.is_empty() {
        bail!("no audio samples");
    }
    Ok(audio.samples)
}

fn rows(c: &Codes) -> Vec<Vec<u32>> {
    (0..c.codebooks).map(|k| c.row(k).to_vec()).collect()
}

pub fn run_tokenize(args: TokenizeArgs, g: &Global) -> anyhow::Result<Exit> {
    let inputs = voxtok_pipeline::inputs::expand(
        &args.inputs,
        None,
        voxtok_pipeline::inputs::AUDIO_EXTENSIONS,
    )?;
    if inputs.is_empty() {
        bail!("no audio files found in {:?}", args.inputs);
    }
    let out = &args.output;
    let as_npy = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if as_npy && inputs.len() > 1 {
        bail!(
            "{} inputs: write JSONL (-o OUT.jsonl), .npy holds one input's codes",
            inputs.len()
        );
    }
    if as_npy && args.llm_base.is_some() {
        bail!("--llm-base adds `llm_ids` to JSONL records: write -o OUT.jsonl");
    }
    let opts = LoadOptions {
        layer: args.layer,
        kmeans: args.kmeans.clone(),
        dedup: args.dedup,
    };
    let tok = load(&args.model, &opts)?;
    let info = tok.info().clone();
    let k = match (args.bandwidth, args.codebooks) {
        (Some(bw), _) => info.codebooks_for_bandwidth(bw)?,
        (None, Some(n)) if n == 0 || n > info.max_codebooks => {
            bail!(
                "--codebooks {n}: the {} model has 1..={}",
                info.codec,
                info.max_codebooks
            )
        }
        (None, Some(n)) => n,
        (None, None) => info.default_codebooks,
    };
    tracing::info!("{} codebooks, {:.3} kbps", k, info.bitrate(k) / 1000.0);

    if as_npy {
        // One input: encode it here and write [codebooks x frames] int64.
        let input = &inputs[0];
        let res = match input {
            Input::Stdin => Err(anyhow::anyhow!("stdin input is not supported by tokenize")),
            Input::Path(p) => read_input(p, info.sample_rate)
                .and_then(|x| Ok(codec::encode_mono(tok.as_ref(), &x, k)?)),
        };
        return match res {
            Ok(c) => {
                let data: Vec<i64> = c.ids.iter().map(|&v| v as i64).collect();
                npy::write_i64(out, &[c.codebooks, c.frames], &data)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                Ok(Exit::Ok)
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", input.key());
                Ok(Exit::SomeFailed)
            }
        };
    }

    // JSONL: a stage graph (decode+resample on one thread, the model on
    // another), records written in input order as they complete.
    let w: Box<dyn Write + Send> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        let f = std::fs::File::create(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let order = if args.llm_order == "flattened" {
        llm_mapping::Order::Flattened
    } else {
        llm_mapping::Order::Interleaved
    };
    let failed = Arc::new(AtomicUsize::new(0));
    let sink = JsonlSink {
        w,
        keys: inputs.iter().map(Input::key).collect(),
        info: info.clone(),
        codebooks: k,
        llm: args.llm_base.map(|b| (b, order)),
        failed: failed.clone(),
        quiet: g.quiet,
    };
    let tok: Arc<dyn AudioTokenizer> = Arc::from(tok);
    let rate = info.sample_rate;
    let mut graph = voxtok_pipeline::Graph::default();
    let src = graph.source_iter("inputs", inputs.clone());
    let audio = graph.map(
        "decode",
        src,
        1,
        move |inp: Input| -> anyhow::Result<Vec<f32>> {
            match inp {
                Input::Stdin => bail!("stdin input is not supported by tokenize"),
                Input::Path(p) => read_input(&p, rate),
            }
        },
    );
    let codes = graph.map("encode", audio, 1, move |x: Vec<f32>| {
        codec::encode_mono(tok.as_ref(), &x, k)
    });
    graph.sink("jsonl", codes, sink, true);
    graph.run().map_err(|e| anyhow::anyhow!("{e}"))?;
    let failed = failed.load(Relaxed);
    if !g.quiet && inputs.len() > 1 {
        eprintln!(
            "tokenized {} of {} inputs with {} ({k} codebooks)",
            inputs.len() - failed,
            inputs.len(),
            info.codec
        );
    }
    Ok(Exit::from_failures(failed))
}

/// Writes one JSON object per input (in input order) and counts failures.
struct JsonlSink {
    w: Box<dyn Write + Send>,
    keys: Vec<String>,
    info: codec::TokenizerInfo,
    codebooks: usize,
    llm: Option<(u32, llm_mapping::Order)>,
    failed: Arc<AtomicUsize>,
    quiet: bool,
}

impl voxtok_pipeline::Sink for JsonlSink {
    type In = Codes;

    fn item(
        &mut self,
        item: voxtok_pipeline::Item<Codes>,
    ) -> Result<(), voxtok_pipeline::BoxError> {
        let key = self
            .keys
            .get(item.stream as usize)
            .cloned()
            .unwrap_or_default();
        let info = &self.info;
        let rec = match &item.data {
            Ok(c) => {
                let mut r = serde_json::json!({
                    "path": key, "codec": info.codec, "codebooks": c.codebooks,
                    "frame_rate": info.frame_rate, "sample_rate": info.sample_rate,
                    "codes": rows(c), "error": null,
                });
                if let Some((base, order)) = self.llm {
                    let vocab = llm_mapping::AudioVocab::new(base, c.codebooks, info.codebook_size);
                    r["llm_ids"] = serde_json::json!(vocab.encode(c, order)?);
                }
                r
            }
            Err(f) => {
                self.failed.fetch_add(1, Relaxed);
                if !self.quiet {
                    if f.error.contains(key.as_str()) {
                        eprintln!("error: {}", f.error);
                    } else {
                        eprintln!("error: {key}: {}", f.error);
                    }
                }
                serde_json::json!({
                    "path": key, "codec": info.codec, "codebooks": self.codebooks,
                    "frame_rate": info.frame_rate, "sample_rate": info.sample_rate,
                    "codes": null, "error": f.error,
                })
            }
        };
        writeln!(self.w, "{rec}")?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), voxtok_pipeline::BoxError> {
        self.w.flush()?;
        Ok(())
    }
}

/// Reads a code matrix from `.npy`, with errors naming the problem.
pub fn read_codes(path: &Path) -> anyhow::Result<Codes> {
    let a = npy::read_int(path)?;
    let (k, n) = match a.shape.as_slice() {
        [n] => (1, *n),
        [k, n] => (*k, *n),
        [1, k, n] => (*k, *n),
        s => bail!("codes must be [codebooks x frames], got shape {s:?}"),
    };
    if k == 0 || n == 0 {
        bail!("empty code matrix (shape {:?})", a.shape);
    }
    if let Some((i, v)) = a
        .data
        .iter()
        .enumerate()
        .find(|(_, &v)| v < 0 || v > u32::MAX as i64)
    {
        bail!(
            "code {v} at codebook {}, frame {} is out of range",
            i / n,
            i % n
        );
    }
    Ok(Codes {
        codebooks: k,
        frames: n,
        ids: a.data.iter().map(|&v| v as u32).collect(),
    })
}

pub fn run_detokenize(args: DetokenizeArgs, _g: &Global) -> anyhow::Result<Exit> {
    let kind: CodecKind = args.model.codec.parse()?;
    if kind == CodecKind::Ssl {
        bail!(
            "the ssl tokenizer has no decoder: SSL + k-means ids cannot be turned back into audio"
        );
    }
    let tok = load(&args.model, &LoadOptions::default())?;
    let res = read_codes(&args.codes).and_then(|c| {
        tracing::info!(
            "{}: {} codebooks x {} frames",
            args.codes.display(),
            c.codebooks,
            c.frames
        );
        Ok(codec::decode_mono(tok.as_ref(), &c)?)
    });
    let audio = match res {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}: {e:#}", args.codes.display());
            return Ok(Exit::SomeFailed);
        }
    };
    let fmt = if args.float {
        voxtok_codecs::WavFormat::Float32
    } else {
        voxtok_codecs::WavFormat::Pcm16
    };
    voxtok_codecs::write_wav(&args.output, &audio, tok.info().sample_rate, fmt)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(Exit::Ok)
}
