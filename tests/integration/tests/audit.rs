//! The audit trail through a real client: concurrent writers in one
//! workspace, the tenant view, and dump/restore.

use pg_warden_integration::{cluster, postgres::Client};

const WS_A: &str = "eeeeeeee-0000-4000-8000-00000000000a";
const WS_B: &str = "eeeeeeee-0000-4000-8000-00000000000b";
const USER_A: &str = "00000000-0000-4000-8000-0000000000e1";
const USER_B: &str = "00000000-0000-4000-8000-0000000000e2";

fn setup(db: &str) {
    let c = cluster();
    c.create_database(db);
    c.create_login_role("audit_app", &["warden_user"]);
    c.create_login_role("audit_admin", &["warden_admin"]);
    c.superuser(db)
        .batch_execute(&format!(
            "INSERT INTO warden.memberships VALUES ('{WS_A}', '{USER_A}', 'user'), ('{WS_B}', '{USER_B}', 'user');
             CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                         workspace_id uuid NOT NULL, payload text);
             SELECT warden.enable_audit('public.events');
             GRANT ALL ON public.events TO audit_app;"
        ))
        .unwrap();
}

fn app(db: &str, ws: &str, user: &str) -> Client {
    let mut client = cluster().connect(db, "audit_app").unwrap();
    client
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&ws, &user],
        )
        .unwrap();
    client
}

/// (workspace, entries, intact) per chain, as the administrator verifies.
fn verify(db: &str) -> Vec<(Option<String>, i64, bool)> {
    cluster()
        .connect(db, "audit_admin")
        .unwrap()
        .query(
            "SELECT workspace_id::text, entries, intact FROM warden.verify_audit() ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn concurrent_writers_in_one_workspace_make_one_intact_chain() {
    setup("audit_concurrent");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = app("audit_concurrent", WS_A, USER_A);
                for i in 0..200 {
                    client
                        .execute(
                            "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, $2)",
                            &[&WS_A, &format!("writer {t} row {i}")],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 1600 rows, and in each workspace the membership the setup added.
    assert_eq!(
        verify("audit_concurrent"),
        [
            (Some(WS_A.to_string()), 1601, true),
            (Some(WS_B.to_string()), 1, true)
        ]
    );
    let seals: i64 = cluster()
        .superuser("audit_concurrent")
        .query_one(
            "SELECT count(*) FROM warden.audit_log
              WHERE target = 'public.events' AND seal_entries = 1 AND seal_mac IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seals, 1600, "one seal per committed single-row transaction");
}

#[test]
fn each_workspace_reads_only_its_own_trail() {
    setup("audit_tenants");
    for (ws, user) in [(WS_A, USER_A), (WS_B, USER_B)] {
        let mut client = app("audit_tenants", ws, user);
        client
            .execute(
                "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, 'x')",
                &[&ws],
            )
            .unwrap();
        client
            .execute("SELECT warden.log_event('login', $1, NULL)", &[&user])
            .unwrap();
    }
    let mut a = app("audit_tenants", WS_A, USER_A);
    let seen: Vec<String> = a
        .query(
            "SELECT DISTINCT workspace_id::text FROM warden.audit_log",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, [WS_A]);
    let count: i64 = a
        .query_one("SELECT count(*) FROM warden.audit_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 3, "its membership, its row, its event");
    let mut admin = cluster().connect("audit_tenants", "audit_admin").unwrap();
    let all: i64 = admin
        .query_one("SELECT count(*) FROM warden.audit_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(all, 6);
}

#[test]
fn a_restored_trail_still_verifies() {
    setup("audit_dump");
    let mut a = app("audit_dump", WS_A, USER_A);
    for i in 0..20 {
        a.execute(
            "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, $2)",
            &[&WS_A, &format!("row {i}")],
        )
        .unwrap();
    }
    a.execute(
        "UPDATE public.events SET payload = payload || '!' WHERE id % 2 = 0",
        &[],
    )
    .unwrap();
    a.execute("DELETE FROM public.events WHERE id % 5 = 0", &[])
        .unwrap();
    let before = verify("audit_dump");
    // 20 inserts, 10 updates, 4 deletes, and the memberships of the setup.
    assert_eq!(
        before,
        [
            (Some(WS_A.to_string()), 35, true),
            (Some(WS_B.to_string()), 1, true)
        ]
    );
    // The restore loads the memberships without recording them again,
    // from an archive (pg_restore) and from a plain script (psql).
    cluster().dump_and_restore("audit_dump", "audit_restored");
    assert_eq!(verify("audit_restored"), before);
    cluster().dump_and_restore_plain("audit_dump", "audit_restored_sql");
    assert_eq!(verify("audit_restored_sql"), before);
    // And the restored trail keeps growing on the same chain.
    let mut r = app("audit_restored", WS_A, USER_A);
    r.execute(
        "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, 'after')",
        &[&WS_A],
    )
    .unwrap();
    assert_eq!(
        verify("audit_restored"),
        [
            (Some(WS_A.to_string()), 36, true),
            (Some(WS_B.to_string()), 1, true)
        ]
    );
}

#[test]
fn a_denial_outlives_the_denied_transaction() {
    setup("audit_denial");
    let mut a = app("audit_denial", WS_A, USER_A);
    let mut tx = a.transaction().unwrap();
    let err = tx
        .execute("SELECT warden.require('events.purge')", &[])
        .unwrap_err();
    assert_eq!(pg_warden_integration::sqlstate(&err), "42501", "{err}");
    drop(tx); // rolled back
    let mut admin = cluster().connect("audit_denial", "audit_admin").unwrap();
    let denials: Vec<(String, String, String)> = admin
        .query(
            "SELECT workspace_id::text, db_role, target FROM warden.audit_log
              WHERE action = 'permission.denied'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        denials,
        [(
            WS_A.to_string(),
            "audit_app".to_string(),
            "events.purge".to_string()
        )]
    );
    assert_eq!(
        verify("audit_denial"),
        [
            (Some(WS_A.to_string()), 2, true),
            (Some(WS_B.to_string()), 1, true)
        ]
    );
}

#[test]
fn membership_changes_by_an_administrator_reach_the_tenant_trail() {
    setup("audit_access");
    let mut admin = cluster().connect("audit_access", "audit_admin").unwrap();
    let newcomer = "00000000-0000-4000-8000-0000000000e3";
    admin
        .execute(
            "INSERT INTO warden.memberships VALUES ($1::text::uuid, $2::text::uuid, 'viewer')",
            &[&WS_A, &newcomer],
        )
        .unwrap();
    admin
        .execute(
            "UPDATE warden.memberships SET role = 'manager' WHERE user_id = $1::text::uuid",
            &[&newcomer],
        )
        .unwrap();
    let mut a = app("audit_access", WS_A, USER_A);
    let events: Vec<(String, String, Option<String>)> = a
        .query(
            "SELECT action, db_role, new_values::text FROM warden.audit_log
              WHERE row_key->>'user_id' = $1 ORDER BY id",
            &[&newcomer],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        events,
        [
            (
                "membership.added".to_string(),
                "audit_admin".to_string(),
                Some(r#"{"role":"viewer"}"#.to_string())
            ),
            (
                "membership.changed".to_string(),
                "audit_admin".to_string(),
                Some(r#"{"role":"manager"}"#.to_string())
            ),
        ]
    );
    // The other tenant sees none of it.
    let mut b = app("audit_access", WS_B, USER_B);
    let seen: i64 = b
        .query_one(
            "SELECT count(*) FROM warden.audit_log WHERE row_key->>'user_id' = $1",
            &[&newcomer],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    assert_eq!(
        verify("audit_access"),
        [
            (Some(WS_A.to_string()), 3, true),
            (Some(WS_B.to_string()), 1, true)
        ]
    );
}
