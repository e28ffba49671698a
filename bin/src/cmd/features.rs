//! `voxtok features`: Whisper log-mel features as .npy.
//! (Being written: the codecs crate's decoder and mel front-end land first.)

use crate::{exit::Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input audio files.
    pub inputs: Vec<std::path::PathBuf>,
}

pub fn run(_args: Args, _g: &Global) -> anyhow::Result<Exit> {
    anyhow::bail!("`voxtok features` is not built yet")
}
