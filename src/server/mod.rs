//! The NBD server (placeholder while the skeleton is built).

pub mod status;
