//! Introspection that needs no context and touches no key.

use pgrx::prelude::*;

/// The version of the loaded library (which can differ from the installed
/// SQL objects' version until `ALTER EXTENSION pg_warden UPDATE`).
#[pg_extern(stable, parallel_safe)]
fn library_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn library_version_matches_installed_extension() {
        let installed = Spi::get_one::<String>(
            "SELECT extversion::text FROM pg_catalog.pg_extension WHERE extname = 'pg_warden'",
        );
        assert_eq!(installed, Ok(Some(super::library_version().to_string())));
    }
}
