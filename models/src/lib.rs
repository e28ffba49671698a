//! voxtok-models
