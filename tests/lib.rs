//! End-to-end tests of the `voxtok` binary live in this crate's `tests/` folder.
