//! Key material as the backend holds it: the master key, read from the
//! server's configuration (never from SQL), and what is derived from it.
//! Workspace data keys arrive with the field-encryption work.

pub mod master;
