//! Integration tests: one binary, one module per feature.

mod client;
mod interop;
mod serve;
