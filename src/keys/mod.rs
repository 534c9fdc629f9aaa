//! Key material as the backend holds it: the master key, read from the
//! server's configuration (never from SQL), and what is derived from it.
//! `workspace` holds the per-workspace keys wrapped under it.

pub mod master;
pub mod workspace;
