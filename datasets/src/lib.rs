//! voxtok-datasets

pub mod asr_eval;
pub mod asterisk;
pub mod english;
