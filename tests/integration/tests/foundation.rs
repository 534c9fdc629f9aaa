//! The extension as an installed product: preloading, create/drop cycles,
//! settings that only a superuser may move, grants as a non-superuser sees
//! them, and the configuration tables in a dump.

use pg_warden_integration::{cluster, postgres, sqlstate};

#[test]
fn preloaded_library_registers_settings_before_any_call() {
    let c = cluster();
    c.create_database("preload");
    // A fresh connection that has not called any pg_warden function still
    // sees its settings: the library was loaded by the postmaster.
    let mut db = c.superuser("preload");
    let preload: String = db
        .query_one("SHOW shared_preload_libraries", &[])
        .unwrap()
        .get(0);
    assert!(preload.split(", ").any(|l| l == "pg_warden"), "{preload}");
    let names: Vec<String> = db
        .query(
            "SELECT name FROM pg_catalog.pg_settings WHERE name LIKE 'warden.%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "warden.context",
            "warden.context_scope",
            "warden.jwt_workspace_claim",
            "warden.master_key_command",
            "warden.master_key_file",
            "warden.policy_calls",
            "warden.previous_master_key_command",
            "warden.previous_master_key_file",
            "warden.trust_jwt_claims",
        ]
    );
}

#[test]
fn drop_and_recreate_is_clean() {
    let c = cluster();
    c.create_database("recreate");
    let mut db = c.superuser("recreate");
    for _ in 0..2 {
        db.batch_execute("DROP EXTENSION pg_warden").unwrap();
        // The control-file schema itself stays (Postgres never makes it a
        // member of the extension); nothing may be left inside it.
        let leftovers: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_class
                          WHERE relnamespace = 'warden'::regnamespace)
                      + (SELECT count(*) FROM pg_catalog.pg_proc
                          WHERE pronamespace = 'warden'::regnamespace)
                      + (SELECT count(*) FROM pg_catalog.pg_type
                          WHERE typnamespace = 'warden'::regnamespace)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(leftovers, 0, "DROP EXTENSION left objects behind");
        db.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    }
    let levels: Vec<(String, i32)> = db
        .query(
            "SELECT name, level FROM warden.roles ORDER BY level DESC",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("super_admin", 100),
        ("admin", 80),
        ("manager", 60),
        ("user", 40),
        ("learner", 30),
        ("viewer", 20),
    ];
    assert_eq!(levels, expected.map(|(n, l)| (n.to_string(), l)));
}

#[test]
fn trust_roots_are_superuser_only() {
    let c = cluster();
    c.create_database("trust_roots");
    c.create_login_role("app_trust", &["warden_user"]);
    let mut app = c.connect("trust_roots", "app_trust").unwrap();

    // Where the master key lives is not even visible to an application.
    let err = app.simple_query("SHOW warden.master_key_file").unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // Reload-only settings cannot be set from a session at all.
    let err = app
        .simple_query("SET warden.master_key_file = '/tmp/k'")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55P02", "{err}");
    // Superuser-only switches.
    for stmt in [
        "SET warden.trust_jwt_claims = on",
        "SET warden.context_scope = 'session'",
        "SET warden.jwt_workspace_claim = 'tenant'",
    ] {
        let err = app.simple_query(stmt).unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{stmt}: {err}");
    }
    // The context setting is writable (it is sealed, not trusted).
    app.simple_query("SET warden.context = 'anything'").unwrap();
}

#[test]
fn grants_as_a_non_superuser_sees_them() {
    let c = cluster();
    c.create_database("grants");
    c.create_login_role("app_grants", &["warden_user"]);
    c.create_login_role("admin_grants", &["warden_admin"]);
    c.create_login_role("stranger_grants", &[]);

    let mut stranger = c.connect("grants", "stranger_grants").unwrap();
    for table in [
        "warden.roles",
        "warden.role_permissions",
        "warden.memberships",
    ] {
        let err = stranger
            .query(&format!("SELECT * FROM {table}"), &[])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{table}: {err}");
    }
    // PUBLIC keeps USAGE on the schema and the harmless introspection.
    let v: String = stranger
        .query_one("SELECT warden.library_version()", &[])
        .unwrap()
        .get(0);
    assert!(!v.is_empty());

    let mut app = c.connect("grants", "app_grants").unwrap();
    let n: i64 = app
        .query_one("SELECT count(*) FROM warden.roles", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    let err = app
        .query("SELECT * FROM warden.memberships", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let err = app
        .execute(
            "INSERT INTO warden.roles (name, level) VALUES ('intern', 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    let mut admin = c.connect("grants", "admin_grants").unwrap();
    admin
        .execute(
            "INSERT INTO warden.roles (name, level) VALUES ('intern', 10)",
            &[],
        )
        .unwrap();
    admin
        .execute(
            "INSERT INTO warden.memberships (workspace_id, user_id, role) \
             VALUES (gen_random_uuid(), gen_random_uuid(), 'intern')",
            &[],
        )
        .unwrap();
    // Table checks hold for administrators too.
    let err = admin
        .execute(
            "INSERT INTO warden.memberships (workspace_id, user_id, role) \
             VALUES (NULL, gen_random_uuid(), 'admin')",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "23514",
        "global membership must be super_admin: {err}"
    );
    let err = admin
        .execute(
            "INSERT INTO warden.role_permissions VALUES ('admin', 'a..b')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514", "{err}");
}

#[test]
fn configuration_tables_survive_dump_and_restore() {
    let c = cluster();
    c.create_database("dump_src");
    let mut src = c.superuser("dump_src");
    src.batch_execute(
        "UPDATE warden.roles SET level = 65 WHERE name = 'manager';
         INSERT INTO warden.roles VALUES ('auditor', 50);
         INSERT INTO warden.role_permissions VALUES ('auditor', 'audit.read'), ('manager', 'invoices.*');
         INSERT INTO warden.memberships VALUES
             ('6f1c1a52-0000-4000-8000-000000000001', '6f1c1a52-0000-4000-8000-0000000000aa', 'auditor'),
             (NULL, '6f1c1a52-0000-4000-8000-0000000000bb', 'super_admin');",
    )
    .unwrap();

    let text = c
        .client_program("pg_dump")
        .args(["-d", "dump_src"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for needle in [
        "COPY warden.roles",
        "COPY warden.role_permissions",
        "COPY warden.memberships",
        "auditor\t50",
    ] {
        assert!(text.contains(needle), "dump lacks {needle:?}");
    }

    c.dump_and_restore("dump_src", "dump_dst");

    let mut dst = c.superuser("dump_dst");
    let q = |db: &mut postgres::Client, sql: &str| -> Vec<String> {
        db.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    };
    for sql in [
        "SELECT name || ':' || level FROM warden.roles ORDER BY 1",
        "SELECT role || ':' || permission FROM warden.role_permissions ORDER BY 1",
        "SELECT coalesce(workspace_id::text, '-') || ':' || user_id || ':' || role \
         FROM warden.memberships ORDER BY 1",
    ] {
        assert_eq!(q(&mut src, sql), q(&mut dst, sql), "{sql}");
    }
}

/// A trail dropped with the extension and made again is a new trail: a
/// session that wrote to the old one does not carry what it knew of the
/// old chains (their newest blocks) into the new one.
#[test]
fn a_recreated_trail_starts_afresh_in_a_session_that_wrote_to_the_old_one() {
    let c = cluster();
    c.create_database("recreate_trail");
    let mut db = c.superuser("recreate_trail");
    let ws = "dddddddd-0000-4000-8000-000000000000";
    let user = "00000000-0000-4000-8000-0000000000d1";
    let write = |db: &mut pg_warden_integration::postgres::Client| {
        db.batch_execute(&format!(
            "INSERT INTO warden.memberships VALUES ('{ws}', '{user}', 'user')
               ON CONFLICT DO NOTHING;
             SELECT warden.set_context('{ws}', '{user}', false);
             SELECT warden.log_event('write', 'x');
             SELECT warden.clear_context();"
        ))
        .unwrap();
    };
    write(&mut db);
    db.batch_execute("SELECT * FROM warden.verify_audit()")
        .unwrap();
    // The next commit names the chain's newest block (read now: over a
    // second since this session last read it).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&mut db);
    db.batch_execute("DROP EXTENSION pg_warden; CREATE EXTENSION pg_warden")
        .unwrap();
    write(&mut db);
    let intact: Vec<bool> = db
        .query("SELECT intact FROM warden.verify_audit()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(intact.iter().all(|&i| i), "{intact:?}");
}

/// CREATE EXTENSION takes over a `warden` schema only if a superuser owns
/// it and it is empty: its owner could otherwise rename it, plant
/// look-alikes that SECURITY DEFINER code would read, or drop the trail.
#[test]
fn an_existing_warden_schema_not_a_superusers_is_refused() {
    let c = cluster();
    let db = "schema_taken";
    c.create_empty_database(db, "");
    let mut su = c.superuser(db);
    su.batch_execute(
        "DO $$ BEGIN CREATE ROLE schema_squatter NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE SCHEMA warden AUTHORIZATION schema_squatter",
    )
    .unwrap();
    let err = su.batch_execute("CREATE EXTENSION pg_warden").unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    su.batch_execute("ALTER SCHEMA warden OWNER TO postgres; CREATE TABLE warden.planted (n int)")
        .unwrap();
    let err = su.batch_execute("CREATE EXTENSION pg_warden").unwrap_err();
    assert_eq!(sqlstate(&err), "42P06", "{err}");
    su.batch_execute("DROP TABLE warden.planted; CREATE EXTENSION pg_warden")
        .unwrap();
}

/// CREATE EXTENSION refuses `warden_user` / `warden_admin` roles that can
/// log in, have a special attribute, do not inherit, or are members of
/// another role: every member of ours would hold their rights. (Each
/// change is made in the transaction that tries CREATE EXTENSION, and
/// rolled back with it: other tests share the roles.)
#[test]
fn warden_roles_with_more_than_membership_are_refused() {
    let c = cluster();
    let db = "roles_taken";
    c.create_empty_database(db, "");
    let mut su = c.superuser(db);
    // The roles exist (another database's CREATE EXTENSION made them).
    c.create_database("roles_made");
    for change in [
        "ALTER ROLE warden_user LOGIN",
        "ALTER ROLE warden_user SUPERUSER",
        "ALTER ROLE warden_admin CREATEROLE",
        "ALTER ROLE warden_admin CREATEDB",
        "ALTER ROLE warden_user REPLICATION",
        "ALTER ROLE warden_admin BYPASSRLS",
        "ALTER ROLE warden_user NOINHERIT",
        "GRANT pg_read_all_data TO warden_user",
    ] {
        let mut tx = su.transaction().unwrap();
        tx.batch_execute(change).unwrap();
        let err = tx.batch_execute("CREATE EXTENSION pg_warden").unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{change}: {err}");
        tx.rollback().unwrap();
    }
    su.batch_execute("CREATE EXTENSION pg_warden").unwrap();
}
