//! voxtok-pipeline
