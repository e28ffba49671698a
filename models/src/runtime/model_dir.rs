//! Hugging Face-layout model directories: `config.json`, one or more
//! `*.safetensors` (sharded with `model.safetensors.index.json`), and the
//! optional tokenizer / preprocessor / generation configs.

use super::{Result, RuntimeError};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A local model directory, checked to exist. Files are read lazily.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// Opens `path`, or `$VOXTOK_MODELS/path` when `path` is a bare name
    /// that does not exist relative to the working directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Ok(Self {
                root: path.to_path_buf(),
            });
        }
        if path.is_relative() {
            if let Some(base) = std::env::var_os("VOXTOK_MODELS") {
                let cand = Path::new(&base).join(path);
                if cand.is_dir() {
                    return Ok(Self { root: cand });
                }
            }
        }
        Err(RuntimeError::NoModelDir(path.to_path_buf()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of `name` inside the directory, or `None` when it is absent.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let p = self.root.join(name);
        p.is_file().then_some(p)
    }

    /// Path of `name`, or a `MissingFile` error naming the directory.
    pub fn require(&self, name: &str) -> Result<PathBuf> {
        self.file(name).ok_or_else(|| RuntimeError::MissingFile {
            dir: self.root.clone(),
            file: name.to_string(),
        })
    }

    /// Parses a JSON file of the directory into `T`.
    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.require(name)?;
        read_json(&path)
    }

    /// Parses `config.json`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        self.json("config.json")
    }

    /// The safetensors files holding the weights: `model.safetensors`, or
    /// the shards listed in `model.safetensors.index.json`, or (last resort)
    /// every `*.safetensors` in the directory, sorted.
    pub fn safetensors(&self) -> Result<Vec<PathBuf>> {
        if let Some(p) = self.file("model.safetensors") {
            return Ok(vec![p]);
        }
        if let Some(index) = self.file("model.safetensors.index.json") {
            let v: serde_json::Value = read_json(&index)?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| RuntimeError::BadFile {
                    path: index.clone(),
                    msg: "no `weight_map` object".into(),
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            return files.iter().map(|f| self.require(f)).collect();
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| RuntimeError::BadFile {
                path: self.root.clone(),
                msg: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(RuntimeError::MissingFile {
                dir: self.root.clone(),
                file: "model.safetensors".into(),
            });
        }
        Ok(files)
    }

    /// A `VarBuilder` over the directory's safetensors (memory-mapped).
    /// Weights are converted to `dtype` as they are fetched.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let files = self.safetensors()?;
        for f in &files {
            check_safetensors_header(f)?;
        }
        // SAFETY: the files are mapped read-only; voxtok never writes to a
        // model directory while a model is loaded from it.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Ok(vb)
    }
}

/// Where a default model named `name` (e.g. `whisper-tiny.en`) is looked
/// for, in order: `$VOXTOK_MODELS/name`, `./data/models/name`, and
/// `data/models/name` beside the binary's checkout (`target/<profile>/voxtok`
/// → `../../data/models`), which is where `scripts/setup.sh` puts them.
pub fn default_model_candidates(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(base) = std::env::var_os("VOXTOK_MODELS") {
        out.push(Path::new(&base).join(name));
    }
    out.push(Path::new("data/models").join(name));
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            out.push(up.join("data/models").join(name));
        }
    }
    out
}

/// The first existing directory of [`default_model_candidates`].
pub fn find_default_model(name: &str) -> Option<PathBuf> {
    default_model_candidates(name)
        .into_iter()
        .find(|p| p.is_dir())
}

/// A model shipped in the repository under `assets/<name>` (e.g. `s2l-small`):
/// `$env_var` when set (and a directory), else `assets/<name>` beside the
/// binary's checkout (`target/<profile>/voxtok` → `../../assets/<name>`, and
/// further up for `target/<triple>/<profile>`), else `./assets/<name>`.
pub fn find_asset_model(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(2).take(3) {
            candidates.push(up.join("assets").join(name));
        }
    }
    candidates.push(Path::new("assets").join(name));
    candidates.into_iter().find(|p| p.is_dir())
}

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::BadFile {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| RuntimeError::BadFile {
        path: path.to_path_buf(),
        msg: format!("invalid JSON: {e}"),
    })
}

/// Checks that a file starts with a plausible safetensors header, so a
/// truncated or wrong file is reported by name instead of deep in candle.
fn check_safetensors_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |msg: String| RuntimeError::BadFile {
        path: path.to_path_buf(),
        msg,
    };
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("too short to be a safetensors file".into()))?;
    let header = u64::from_le_bytes(n);
    if header == 0 || header > len.saturating_sub(8) {
        return Err(bad("not a safetensors file (bad header length)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_and_files_are_named() {
        let err = ModelDir::open("/definitely/not/here").unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"));
        let dir = std::env::temp_dir().join(format!("voxtok-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md = ModelDir::open(&dir).unwrap();
        let err = md.require("config.json").unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(md.safetensors().is_err());
        std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
        let err = md
            .var_builder(DType::F32, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
