//! `voxtok transcribe --task latex`: audio → LaTeX. Three routes, picked from
//! the models given:
//! - **e2e**: the Whisper model's `generation_config.json` has a `latex`
//!   entry in `task_to_id` (a model trained to emit LaTeX, prompt
//!   `<|startoftranscript|><|lang|><|latex|><|notimestamps|>`): the model's
//!   text is the LaTeX;
//! - **llm** (`--latex-model DIR`): the transcript goes to an LLM with the S2L
//!   prompt (`voxtok_models::latex::correct`);
//! - **rules** (otherwise): the transcript goes to the rules converter in the
//!   language given by `--language`, else the detected one (en/ru).
//!
//! The Whisper model for `--task latex` without `--model` and `--latex-model`:
//! the repository's shipped `assets/s2l-small` (or `$VOXTOK_S2L_MODEL`), else
//! the usual default (whisper-tiny.en).

use super::transcribe::{load_whisper, Args};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use voxtok_models::latex::correct::{parse_examples, LatexCorrector};
use voxtok_models::latex::{convert, Lang};
use voxtok_models::llm::Llm;
use voxtok_models::runtime::{find_asset_model, parse_dtype, DeviceSpec, ModelDir};
use voxtok_models::whisper::{TranscribeOptions, Whisper};

/// Name of the shipped spoken-maths model under `assets/`.
pub const S2L_MODEL: &str = "s2l-small";
/// Environment variable naming its directory instead.
pub const S2L_MODEL_ENV: &str = "VOXTOK_S2L_MODEL";

/// Flags of the LaTeX task (flattened into `transcribe`'s arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LatexArgs {
    /// With --task latex: an LLM directory (Qwen2/Llama, Hugging Face layout)
    /// that turns the transcript into LaTeX with the S2L prompt, instead of the rules converter.
    #[arg(long)]
    pub latex_model: Option<PathBuf>,
    /// Few-shot examples for --latex-model: `spoken<TAB>latex` per line.
    #[arg(long)]
    pub examples: Option<PathBuf>,
}

/// How a transcript becomes LaTeX.
pub enum Route {
    /// Rules converter; `None` = the transcript's language.
    Rules(Option<Lang>),
    /// The Whisper model emits LaTeX itself (latex task token).
    Direct,
    /// LLM post-correction.
    Llm(Box<LatexCorrector>),
}

impl Route {
    /// Short route name: `rules`, `e2e` or `llm`.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Rules(_) => "rules",
            Route::Direct => "e2e",
            Route::Llm(_) => "llm",
        }
    }

    /// LaTeX for a batch of transcripts with their languages.
    pub fn convert(&self, texts: &[(String, String)]) -> Vec<Result<String, String>> {
        match self {
            Route::Rules(lang) => texts
                .iter()
                .map(|(t, l)| {
                    let lang = lang
                        .or_else(|| Lang::parse(l))
                        .unwrap_or_else(|| Lang::detect(t));
                    Ok(convert(t.trim(), lang).latex)
                })
                .collect(),
            Route::Direct => texts
                .iter()
                .map(|(t, _)| Ok(t.trim().to_string()))
                .collect(),
            Route::Llm(c) => {
                let inputs: Vec<String> = texts.iter().map(|(t, _)| t.trim().to_string()).collect();
                c.convert_batch(&inputs)
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect()
            }
        }
    }
}

/// The `latex` task token of a model trained for it (generation config
/// `task_to_id["latex"]`).
pub fn latex_task_id(w: &Whisper) -> Option<u32> {
    w.generation
        .task_to_id
        .as_ref()
        .and_then(|m| m.get("latex").copied())
}

/// Makes `w` decode with its latex task token: the token takes the place of
/// `<|transcribe|>` in the prompt. Returns false when the model has none or is
/// English-only (its prompt carries no task token).
pub fn use_latex_task(w: &mut Whisper) -> bool {
    match latex_task_id(w) {
        Some(id) if w.tokenizer.multilingual => {
            w.tokenizer.transcribe = id;
            true
        }
        _ => false,
    }
}

/// The Whisper model for `--task latex`: `--model`, else the shipped model.
pub fn latex_whisper_path(model: Option<&Path>) -> Option<PathBuf> {
    model
        .map(Path::to_path_buf)
        .or_else(|| find_asset_model(S2L_MODEL, S2L_MODEL_ENV))
}

/// Loads an LLM corrector (`--latex-model`, `--examples`).
pub fn load_corrector(
    dir: &Path,
    examples: Option<&Path>,
    device: &str,
    dtype: &str,
) -> anyhow::Result<LatexCorrector> {
    let examples = match examples {
        Some(p) => parse_examples(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => Vec::new(),
    };
    let device = device.parse::<DeviceSpec>()?.open()?;
    let dtype = parse_dtype(dtype)?;
    let llm = Llm::load(&ModelDir::open(dir)?, dtype, &device)
        .with_context(|| format!("cannot load LaTeX model {}", dir.display()))?;
    llm.tokenizer()?;
    Ok(LatexCorrector::new(llm, examples))
}

/// Loads the models of `--task latex`; adjusts `opts` for the e2e route (no
/// timestamps). Returns the Whisper model, the route and the model name for
/// the output's `model` field.
pub fn load(args: &Args, opts: &mut TranscribeOptions) -> anyhow::Result<(Whisper, Route, String)> {
    // The shipped model is the default only when no model at all is named.
    let path = match &args.latex.latex_model {
        None => latex_whisper_path(args.model.as_deref()),
        Some(_) => args.model.clone(),
    };
    let mut w = load_whisper(path.as_deref(), &args.device, &args.dtype)?;
    if args.latex.examples.is_some() && args.latex.latex_model.is_none() {
        bail!("--examples needs --latex-model");
    }
    if let Some(dir) = &args.latex.latex_model {
        let c = load_corrector(
            dir,
            args.latex.examples.as_deref(),
            &args.device,
            &args.dtype,
        )?;
        let name = format!("{}+{}", w.name, dir_name(dir));
        return Ok((w, Route::Llm(Box::new(c)), name));
    }
    if use_latex_task(&mut w) {
        opts.decode.without_timestamps = true;
        let name = w.name.clone();
        return Ok((w, Route::Direct, name));
    }
    let lang = match args.language.as_deref() {
        None => None,
        Some(l) => Some(Lang::parse(l).with_context(|| {
            format!("--task latex: the rules converter speaks en and ru, not `{l}`")
        })?),
    };
    let name = format!("{}+rules", w.name);
    Ok((w, Route::Rules(lang), name))
}

pub fn dir_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// LaTeX of one transcript through `route` (`None` without --task latex);
/// `Some(None)` when the route failed (reported on stderr naming `path`).
pub fn latex_of(
    route: Option<&Route>,
    t: Option<&voxtok_models::whisper::Transcript>,
    path: &str,
) -> Option<Option<String>> {
    let (route, t) = (route?, t?);
    let r = route
        .convert(&[(t.text.clone(), t.language.clone())])
        .pop()
        .unwrap_or_else(|| Err("no output".into()));
    match r {
        Ok(l) => Some(Some(l)),
        Err(e) => {
            eprintln!("error: {path}: latex ({}): {e}", route.name());
            Some(None)
        }
    }
}
