//! voxtok-codecs
