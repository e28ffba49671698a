//! voxtok-datasets

pub mod asr_eval;
pub mod asterisk;
pub mod english;
pub mod latex_norm;
pub mod metrics;
pub mod s2l;
pub mod s2l_manifest;
