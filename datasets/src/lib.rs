//! voxtok-datasets
