//! voxtok-datasets

pub mod asterisk;
pub mod english;
