//! pg_warden: field encryption, tenant isolation, permissions and a
//! tamper-evident audit trail for multi-tenant PostgreSQL.
//!
//! Module map (see README "Layout"):
//! - `gucs`: every setting, registered in one place;
//! - `crypto`: the pure cryptographic core (no pgrx; unit-tested without Postgres);
//! - `api`: the SQL surface, one file per area (only place with `#[pg_extern]`);
//! - `sql/bootstrap.sql`, `sql/finalize.sql`: schema objects and grants that
//!   wrap the generated functions.

// SQL functions return pgrx's ErrorReport (how a Rust error chooses its
// SQLSTATE); it is large, but only ever built on the cold error path.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod api;
mod append;
mod audit;
mod backend;
mod context;
pub mod crypto;
mod error;
mod gucs;
mod keys;

::pgrx::pg_module_magic!(name, version);

// Tables, roles and seeds the generated functions depend on.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// The per-row policy helpers (plain V1 functions, declared by hand).
extension_sql_file!(
    "../sql/helpers.sql",
    name = "helpers",
    requires = ["bootstrap"]
);
// Grants, run after every function exists.
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Runs once per process that loads the library: the postmaster when
/// `shared_preload_libraries` names us, otherwise the first backend that
/// calls one of our functions. Registers settings only: nothing here may
/// create per-process secret state, because preloaded state is shared by
/// every forked backend.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    backend::init();
    context::init();
    context::on_load();
    keys::workspace::init();
    audit::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The #[pg_test] cluster loads pg_warden preloaded; pg_regress and
        // the integration tests cover loading on demand.
        vec!["shared_preload_libraries = 'pg_warden'"]
    }
}
