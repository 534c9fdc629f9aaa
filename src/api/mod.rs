//! The SQL surface of schema `warden`, one file per area. Nothing outside
//! this module declares `#[pg_extern]`.

mod audit;
mod authz;
mod ddl;
mod descendants;
mod encrypt;
mod fmgr;
mod info;
mod keys;
pub(crate) mod policies;

/// Catalog-level promises about the whole SQL surface. These query the
/// catalogs, so they keep holding as later areas add functions.
#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Every SECURITY DEFINER function in `warden` pins its search_path to
    /// exactly `pg_catalog, pg_temp` (the CVE-2018-1058 class).
    #[pg_test]
    fn security_definer_functions_pin_search_path() {
        let unpinned = Spi::get_one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ')
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'warden'::regnamespace
                AND p.prosecdef
                AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)",
        )
        .unwrap();
        assert_eq!(
            unpinned, None,
            "SECURITY DEFINER without pinned search_path"
        );
    }

    /// PUBLIC may execute only the policy helpers (policies run them as
    /// whoever queries) and harmless introspection: nothing that touches
    /// keys, contexts, the audit trail or administration.
    #[pg_test]
    fn public_executes_only_the_allowlist() {
        let allowed = [
            "warden.library_version()",
            "warden.current_workspace_id()",
            "warden.current_user_id()",
            "warden.\"current_role\"()",
            "warden.current_level()",
            "warden.has_level(integer)",
            "warden.can(text)",
            "warden.isolate(regclass,name)",
            "warden.protect(regclass,text)",
            "warden.isolate_user(regclass,name)",
            "warden.enable_audit(regclass,text[])",
            "warden.disable_audit(regclass)",
            "warden.audit_row()",
            "warden.audit_truncate()",
        ];
        let public: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    "SELECT p.oid::regprocedure::text
                       FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = 'warden'::regnamespace
                        AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
                      ORDER BY 1",
                    None,
                    &[],
                )
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect()
        });
        let extra: Vec<&String> = public
            .iter()
            .filter(|f| !allowed.contains(&f.as_str()))
            .collect();
        assert!(extra.is_empty(), "executable by PUBLIC: {extra:?}");
        assert!(public.iter().any(|f| f == "warden.library_version()"));
    }

    /// The configuration tables are registered for pg_dump.
    #[pg_test]
    fn configuration_tables_are_dumped() {
        let dumped = Spi::get_one::<String>(
            "SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
               FROM pg_catalog.pg_extension e, unnest(e.extconfig) AS c
              WHERE e.extname = 'pg_warden'",
        )
        .unwrap();
        assert_eq!(
            dumped.as_deref(),
            Some(
                "warden.audit_batches,warden.audit_blocks,warden.audit_entries,\
                 warden.audit_id_seq,warden.memberships,\
                 warden.role_permissions,warden.roles,warden.shredded_workspaces,\
                 warden.workspace_keys"
            )
        );
    }

    /// The two NOLOGIN roles exist and the seeded ladder is in place.
    #[pg_test]
    fn roles_and_levels_are_seeded() {
        let roles = Spi::get_one::<String>(
            "SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname)
               FROM pg_catalog.pg_roles WHERE rolname IN ('warden_user', 'warden_admin')",
        )
        .unwrap();
        assert_eq!(
            roles.as_deref(),
            Some("warden_admin:false,warden_user:false")
        );
        let ladder = Spi::get_one::<String>(
            "SELECT string_agg(name || '=' || level, ',' ORDER BY level DESC) FROM warden.roles",
        )
        .unwrap();
        assert_eq!(
            ladder.as_deref(),
            Some("super_admin=100,admin=80,manager=60,user=40,learner=30,viewer=20")
        );
    }
}
