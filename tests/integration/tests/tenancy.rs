//! Tenancy through a real client as non-superuser login roles: the
//! isolation matrix, forged contexts, the table owner, a global super admin,
//! hostile search_path, transaction scope behind a real PgBouncer.

use pg_warden_integration::{cluster, postgres::Client, simple_rows, sqlstate, PgBouncer};

const WS_A: &str = "aaaaaaaa-0000-4000-8000-000000000000";
const WS_B: &str = "bbbbbbbb-0000-4000-8000-000000000000";
const ALICE_ADMIN_A: &str = "00000000-0000-4000-8000-0000000a11ce";
const BOB_VIEWER_A: &str = "00000000-0000-4000-8000-000000000b0b";
const CAROL_MANAGER_B: &str = "00000000-0000-4000-8000-00000000ca20";
const DAVE_GLOBAL: &str = "00000000-0000-4000-8000-00000000d00d";
const ERIN_USER_A: &str = "00000000-0000-4000-8000-00000000e412";

/// A database with memberships, permissions and an isolated, protected
/// table owned by a non-superuser, with one row per workspace.
fn setup(db: &str) {
    let c = cluster();
    c.create_database(db);
    c.create_login_role("tenancy_app", &["warden_user"]);
    c.create_login_role("tenancy_owner", &[]);
    let mut su = c.superuser(db);
    su.batch_execute(&format!(
        "INSERT INTO warden.memberships VALUES
            ('{WS_A}', '{ALICE_ADMIN_A}', 'admin'), ('{WS_A}', '{BOB_VIEWER_A}', 'viewer'),
            ('{WS_A}', '{ERIN_USER_A}', 'user'), ('{WS_B}', '{CAROL_MANAGER_B}', 'manager'),
            (NULL, '{DAVE_GLOBAL}', 'super_admin');
         INSERT INTO warden.role_permissions VALUES
            ('viewer', 'docs.read'), ('user', 'docs.create'), ('manager', 'docs.update'),
            ('admin', 'docs.delete');
         GRANT CREATE ON SCHEMA public TO tenancy_owner;"
    ))
    .unwrap();
    let mut owner = c.connect(db, "tenancy_owner").unwrap();
    owner
        .batch_execute(
            "CREATE TABLE public.docs (id int PRIMARY KEY, workspace_id uuid NOT NULL, body text);
             SELECT warden.isolate('public.docs');
             SELECT warden.protect('public.docs', 'docs');
             GRANT SELECT, INSERT, UPDATE, DELETE ON public.docs TO tenancy_app;",
        )
        .unwrap();
    su.batch_execute(&format!(
        "INSERT INTO public.docs VALUES (1, '{WS_A}', 'a'), (2, '{WS_B}', 'b')"
    ))
    .unwrap();
}

fn ids(client: &mut Client) -> Vec<i32> {
    client
        .query("SELECT id FROM public.docs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What one actor can do to the table, each attempt in its own rolled-back
/// transaction: (visible ids, insert into own ws, insert into other ws,
/// update own row, move own row to other ws, delete own row).
#[derive(Debug, PartialEq)]
struct Outcome {
    visible: Vec<i32>,
    insert_own: &'static str,
    insert_other: &'static str,
    update_own: &'static str,
    move_out: &'static str,
    delete_own: &'static str,
}

fn attempt(
    client: &mut Client,
    context: &dyn Fn(&mut postgres::Transaction),
    sql: &str,
) -> &'static str {
    let mut tx = client.transaction().unwrap();
    context(&mut tx);
    let result = tx.execute(sql, &[]);
    tx.rollback().unwrap();
    match result {
        Ok(0) => "no rows",
        Ok(_) => "ok",
        Err(e) if sqlstate(&e) == "42501" => "denied",
        Err(e) => panic!("{sql}: {e}"),
    }
}

use pg_warden_integration::postgres;

fn outcome(
    client: &mut Client,
    ctx: Option<(&str, &str)>,
    own_ws: &str,
    other_ws: &str,
    own_id: i32,
) -> Outcome {
    let set = move |tx: &mut postgres::Transaction| {
        if let Some((ws, user)) = ctx {
            tx.execute(
                "SELECT warden.set_context($1::text::uuid, $2::text::uuid)",
                &[&ws, &user],
            )
            .unwrap();
        }
    };
    let visible = {
        let mut tx = client.transaction().unwrap();
        set(&mut tx);
        let v = tx
            .query("SELECT id FROM public.docs ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.rollback().unwrap();
        v
    };
    Outcome {
        visible,
        insert_own: attempt(
            client,
            &set,
            &format!("INSERT INTO public.docs VALUES (10, '{own_ws}', 'x')"),
        ),
        insert_other: attempt(
            client,
            &set,
            &format!("INSERT INTO public.docs VALUES (11, '{other_ws}', 'x')"),
        ),
        update_own: attempt(
            client,
            &set,
            &format!("UPDATE public.docs SET body = 'y' WHERE id = {own_id}"),
        ),
        move_out: attempt(
            client,
            &set,
            &format!("UPDATE public.docs SET workspace_id = '{other_ws}' WHERE id = {own_id}"),
        ),
        delete_own: attempt(
            client,
            &set,
            &format!("DELETE FROM public.docs WHERE id = {own_id}"),
        ),
    }
}

#[test]
fn isolation_matrix() {
    setup("tenancy_matrix");
    let c = cluster();
    let mut app = c.connect("tenancy_matrix", "tenancy_app").unwrap();
    let o = |visible: Vec<i32>, io, ix, u, m, d| Outcome {
        visible,
        insert_own: io,
        insert_other: ix,
        update_own: u,
        move_out: m,
        delete_own: d,
    };
    // viewer: reads own workspace only; may not write.
    assert_eq!(
        outcome(&mut app, Some((WS_A, BOB_VIEWER_A)), WS_A, WS_B, 1),
        o(vec![1], "denied", "denied", "no rows", "no rows", "no rows")
    );
    // user: may create (own workspace only), not update or delete.
    assert_eq!(
        outcome(&mut app, Some((WS_A, ERIN_USER_A)), WS_A, WS_B, 1),
        o(vec![1], "ok", "denied", "no rows", "no rows", "no rows")
    );
    // manager in B: create and update within B; a row cannot leave B.
    assert_eq!(
        outcome(&mut app, Some((WS_B, CAROL_MANAGER_B)), WS_B, WS_A, 2),
        o(vec![2], "ok", "denied", "ok", "denied", "no rows")
    );
    // admin in A: everything within A, nothing into or across to B.
    assert_eq!(
        outcome(&mut app, Some((WS_A, ALICE_ADMIN_A)), WS_A, WS_B, 1),
        o(vec![1], "ok", "denied", "ok", "denied", "ok")
    );
    // global super_admin: everything, in whichever workspace it acts.
    assert_eq!(
        outcome(&mut app, Some((WS_B, DAVE_GLOBAL)), WS_B, WS_A, 2),
        o(vec![2], "ok", "denied", "ok", "denied", "ok")
    );
    // no context: nothing.
    assert_eq!(
        outcome(&mut app, None, WS_A, WS_B, 1),
        o(vec![], "denied", "denied", "no rows", "no rows", "no rows")
    );
}

#[test]
fn forged_and_foreign_contexts_are_no_context() {
    setup("tenancy_forged");
    let c = cluster();
    let mut su = c.superuser("tenancy_forged");
    let mut app = c.connect("tenancy_forged", "tenancy_app").unwrap();
    let token: String = app
        .query_one(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&WS_A, &ALICE_ADMIN_A],
        )
        .unwrap()
        .get(0);
    assert_eq!(ids(&mut app), vec![1]);

    // Every single-character edit of the token is no context.
    for i in 0..token.len() {
        let mut forged = token.clone().into_bytes();
        forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        app.execute("SELECT set_config('warden.context', $1, false)", &[&forged])
            .unwrap();
        let role: Option<String> = app
            .query_one("SELECT warden.current_role()", &[])
            .unwrap()
            .get(0);
        assert_eq!(role, None, "edited at {i}: {forged}");
        assert!(ids(&mut app).is_empty());
    }
    // A token sealed in another database of the same cluster is no context.
    setup("tenancy_forged_other");
    let mut other = c.connect("tenancy_forged_other", "tenancy_app").unwrap();
    other
        .execute("SELECT set_config('warden.context', $1, false)", &[&token])
        .unwrap();
    let ws: Option<String> = other
        .query_one("SELECT warden.current_workspace_id()::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(ws, None);
    // Another login role that reads the token (in pg_stat_statements, say)
    // cannot use it: a token is bound to the role that set it.
    c.create_login_role("tenancy_snoop", &["warden_user"]);
    su.batch_execute("GRANT SELECT ON public.docs TO tenancy_snoop")
        .unwrap();
    let mut snoop = c.connect("tenancy_forged", "tenancy_snoop").unwrap();
    snoop
        .execute("SELECT set_config('warden.context', $1, false)", &[&token])
        .unwrap();
    assert!(
        ids(&mut snoop).is_empty(),
        "a harvested token worked for another role"
    );
    // The genuine token, written directly, is the context (Citus form).
    app.execute("SELECT set_config('warden.context', $1, false)", &[&token])
        .unwrap();
    assert_eq!(ids(&mut app), vec![1]);
}

#[test]
fn table_owner_is_bound_by_policies() {
    setup("tenancy_owner_db");
    let c = cluster();
    let mut owner = c.connect("tenancy_owner_db", "tenancy_owner").unwrap();
    assert!(
        ids(&mut owner).is_empty(),
        "FORCE ROW LEVEL SECURITY binds the owner"
    );
    // The owner is not a warden_user: it cannot even establish a context.
    let err = owner
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid)",
            &[&WS_A, &ALICE_ADMIN_A],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[test]
fn hostile_search_path_changes_nothing() {
    setup("tenancy_hostile");
    let c = cluster();
    let mut su = c.superuser("tenancy_hostile");
    su.batch_execute(
        "CREATE SCHEMA evil; GRANT USAGE, CREATE ON SCHEMA evil TO tenancy_app, tenancy_owner;",
    )
    .unwrap();
    let mut app = c.connect("tenancy_hostile", "tenancy_app").unwrap();
    // Shadows of what our SQL uses, planted ahead of pg_catalog.
    app.batch_execute(
        "CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text
             LANGUAGE sql AS $$ SELECT 'hijacked' $$;
         CREATE FUNCTION evil.array_agg(text) RETURNS text[] LANGUAGE sql AS $$ SELECT ARRAY['*'] $$;
         CREATE FUNCTION evil.always(uuid, uuid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
         CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.always);
         CREATE FUNCTION evil.always_int(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
         CREATE OPERATOR evil.<= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.always_int);
         SET search_path = evil, pg_catalog, public;",
    )
    .unwrap();
    // A non-member still cannot get a context; a member gets exactly theirs.
    let err = app
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid)",
            &[&WS_B, &BOB_VIEWER_A],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    app.execute(
        "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
        &[&WS_A, &BOB_VIEWER_A],
    )
    .unwrap();
    let row = app
        .query_one(
            "SELECT warden.current_role(), warden.can('docs.delete'), warden.can('docs.read')",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        ("viewer".into(), false, true)
    );
    assert_eq!(ids(&mut app), vec![1]);

    // A generator run under the same hostile path binds pg_catalog's operator.
    let mut owner = c.connect("tenancy_hostile", "tenancy_owner").unwrap();
    owner
        .batch_execute(
            "CREATE FUNCTION evil.always2(uuid, uuid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
             SET search_path = evil, pg_catalog, public;
             CREATE TABLE public.notes (workspace_id uuid NOT NULL);
             SELECT warden.isolate('public.notes');",
        )
        .unwrap();
    let qual: String = su
        .query_one(
            "SELECT qual FROM pg_policies WHERE tablename = 'notes' AND cmd = 'SELECT'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!qual.contains("evil"), "{qual}");
    assert!(
        qual.starts_with("(workspace_id = ( SELECT warden.current_workspace_id()"),
        "{qual}"
    );
}

#[test]
fn transaction_scope_behind_pgbouncer() {
    setup("tenancy_pool");
    let c = cluster();
    let mut su = c.superuser("tenancy_pool");
    // Two application roles: one left at the default ('session') to show
    // what pooling does, one in 'transaction' scope.
    c.create_login_role("pool_leaky", &["warden_user"]);
    c.create_login_role("pool_safe", &["warden_user"]);
    su.batch_execute(
        "GRANT SELECT ON public.docs TO pool_leaky, pool_safe;
         ALTER ROLE pool_safe IN DATABASE tenancy_pool SET warden.context_scope = 'transaction';",
    )
    .unwrap();
    let bouncer = PgBouncer::start(c, "tenancy_pool", &["pool_leaky", "pool_safe"]);

    let current = |client: &mut Client| -> String {
        let sql = "SELECT coalesce(warden.current_workspace_id()::text, 'none')";
        simple_rows(client, sql)[0][0].clone().unwrap()
    };
    let set_session = format!("SELECT warden.set_context('{WS_A}', '{ALICE_ADMIN_A}', false)");

    // Session scope through a transaction pooler: the next client inherits
    // the context. This is the hazard the setting exists for.
    {
        let mut a = bouncer.connect("tenancy_pool", "pool_leaky");
        let mut b = bouncer.connect("tenancy_pool", "pool_leaky");
        simple_rows(&mut a, &set_session);
        assert_eq!(
            current(&mut b),
            WS_A,
            "expected the leak this test guards against"
        );
        simple_rows(&mut b, "SELECT warden.clear_context()");
    }
    // Transaction scope: neither set_context(..., false) nor a direct SET
    // survives the transaction, so the next client gets nothing.
    {
        let mut a = bouncer.connect("tenancy_pool", "pool_safe");
        let mut b = bouncer.connect("tenancy_pool", "pool_safe");
        simple_rows(&mut a, &set_session);
        assert_eq!(current(&mut b), "none");
        let token = simple_rows(&mut a, &format!("BEGIN; {set_session}"))[0][0]
            .clone()
            .unwrap();
        assert_eq!(
            current(&mut a),
            WS_A,
            "the context holds within its transaction"
        );
        simple_rows(&mut a, "COMMIT");
        simple_rows(&mut a, &format!("SET warden.context = '{token}'"));
        assert_eq!(current(&mut b), "none");
        assert_eq!(current(&mut a), "none");
        // Within one transaction, the context works as usual.
        let sql = format!(
            "BEGIN; SET LOCAL warden.context = '{token}'; SELECT count(*) FROM public.docs; COMMIT"
        );
        assert_eq!(simple_rows(&mut a, &sql), [[Some("1".to_string())]]);
    }
}

#[test]
fn postgrest_claims_resolved_once_per_transaction() {
    setup("tenancy_claims");
    let c = cluster();
    // PostgREST's authenticator: trusted with claims by the superuser, and
    // needing nothing from pg_warden itself (the helpers are PUBLIC).
    c.create_login_role("claims_api", &[]);
    let mut su = c.superuser("tenancy_claims");
    su.batch_execute(
        "GRANT SELECT ON public.docs TO claims_api;
         ALTER ROLE claims_api IN DATABASE tenancy_claims SET warden.trust_jwt_claims = on;",
    )
    .unwrap();
    let mut api = c.connect("tenancy_claims", "claims_api").unwrap();
    let claims = format!(r#"{{"sub": "{BOB_VIEWER_A}", "workspace_id": "{WS_A}"}}"#);
    let request = |api: &mut Client| -> Vec<i32> {
        let mut tx = api.transaction().unwrap();
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .unwrap();
        let ids = tx
            .query("SELECT id FROM public.docs ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().unwrap();
        ids
    };
    assert_eq!(request(&mut api), vec![1]);

    // Within a transaction the resolution holds; the next one sees the
    // membership change.
    let mut tx = api.transaction().unwrap();
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims],
    )
    .unwrap();
    assert_eq!(
        tx.query("SELECT id FROM public.docs", &[]).unwrap().len(),
        1
    );
    su.execute(
        "DELETE FROM warden.memberships WHERE user_id = $1::text::uuid",
        &[&BOB_VIEWER_A],
    )
    .unwrap();
    assert_eq!(
        tx.query("SELECT id FROM public.docs", &[]).unwrap().len(),
        1
    );
    tx.commit().unwrap();
    assert_eq!(request(&mut api), Vec::<i32>::new());

    // The client cannot switch claims trust on for itself.
    let mut app = c.connect("tenancy_claims", "tenancy_app").unwrap();
    let err = app
        .batch_execute("SET warden.trust_jwt_claims = on")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

/// pg_warden's policies and audit triggers on every table of a tree,
/// as (table, what) rows.
fn protections(client: &mut Client) -> Vec<Vec<Option<String>>> {
    simple_rows(
        client,
        "SELECT c.relname::text, 'policy ' || p.polname FROM pg_catalog.pg_policy AS p
           JOIN pg_catalog.pg_class AS c ON c.oid = p.polrelid WHERE c.relname LIKE 'ledger%'
         UNION ALL
         SELECT c.relname::text, 'trigger ' || t.tgname FROM pg_catalog.pg_trigger AS t
           JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
          WHERE c.relname LIKE 'ledger%' AND t.tgname LIKE 'warden%'
         UNION ALL
         SELECT relname::text, 'rls ' || relrowsecurity || ' ' || relforcerowsecurity
           FROM pg_catalog.pg_class WHERE relname LIKE 'ledger%' AND relkind IN ('r', 'p')
         ORDER BY 1, 2",
    )
}

#[test]
fn partitions_added_later_are_isolated_and_restore_unchanged() {
    setup("tenancy_parts");
    let c = cluster();
    let mut owner = c.connect("tenancy_parts", "tenancy_owner").unwrap();
    // The generator and enable_audit run on the tree as it is; partitions
    // made and attached afterwards, by the owner through its own
    // connection, get the same protections from pg_warden's event trigger.
    owner
        .batch_execute(
            "CREATE TABLE public.ledger (id int, workspace_id uuid NOT NULL, amount int,
                                         PRIMARY KEY (id, workspace_id)) PARTITION BY RANGE (id);
             CREATE TABLE public.ledger_1 PARTITION OF public.ledger FOR VALUES FROM (0) TO (100);
             SELECT warden.isolate('public.ledger');
             SELECT warden.enable_audit('public.ledger', '{amount}');
             CREATE TABLE public.ledger_2 PARTITION OF public.ledger FOR VALUES FROM (100) TO (200);
             CREATE TABLE public.ledger_3 (id int, workspace_id uuid NOT NULL, amount int,
                                           PRIMARY KEY (id, workspace_id));
             ALTER TABLE public.ledger ATTACH PARTITION public.ledger_3 FOR VALUES FROM (200) TO (300);
             GRANT SELECT, INSERT, TRUNCATE ON public.ledger, public.ledger_1, public.ledger_2,
                 public.ledger_3 TO tenancy_app;",
        )
        .unwrap();
    let mut su = c.superuser("tenancy_parts");
    su.batch_execute(&format!(
        "INSERT INTO public.ledger VALUES (1, '{WS_A}', 1), (2, '{WS_B}', 2), (101, '{WS_A}', 3),
             (102, '{WS_B}', 4), (201, '{WS_A}', 5), (202, '{WS_B}', 6)"
    ))
    .unwrap();
    let mut app = c.connect("tenancy_parts", "tenancy_app").unwrap();
    let mut tx = app.transaction().unwrap();
    tx.execute(
        "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
        &[&WS_A, &ALICE_ADMIN_A],
    )
    .unwrap();
    for (table, expected) in [("ledger_1", 1), ("ledger_2", 101), ("ledger_3", 201)] {
        let seen: Vec<i32> = tx
            .query(&format!("SELECT id FROM public.{table}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            seen,
            [expected],
            "{table} read directly shows workspace A's row only"
        );
    }
    let err = tx
        .execute(
            "INSERT INTO public.ledger_3 VALUES (203, $1::text::uuid, 7)",
            &[&WS_B],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    tx.rollback().unwrap();
    // A partition truncated on its own is in the trail.
    app.batch_execute("TRUNCATE public.ledger_3").unwrap();
    let truncated: i64 = su
        .query_one(
            "SELECT count(*) FROM warden.audit_log WHERE action = 'TRUNCATE' AND target = 'public.ledger_3'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(truncated, 1);
    // A dump restores the same protections, as archive and as script:
    // the event trigger finds nothing to carry while the tables are made
    // (policies and triggers come after them in a dump), so nothing
    // is made twice.
    let before = protections(&mut su);
    assert_eq!(before.len(), 4 * 4 + 4 * 2 + 4, "{before:?}");
    c.dump_and_restore("tenancy_parts", "tenancy_parts_restored");
    c.dump_and_restore_plain("tenancy_parts", "tenancy_parts_restored_sql");
    for db in ["tenancy_parts_restored", "tenancy_parts_restored_sql"] {
        assert_eq!(protections(&mut c.superuser(db)), before, "{db}");
    }
}
