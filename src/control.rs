//! Placeholder while the skeleton is built.
