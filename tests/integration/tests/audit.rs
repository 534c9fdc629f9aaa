//! The audit trail through a real client: concurrent writers in one
//! workspace, the tenant view, and dump/restore.

use pg_warden_integration::{cluster, postgres::Client, second_cluster, Cluster};

const WS_A: &str = "eeeeeeee-0000-4000-8000-00000000000a";
const WS_B: &str = "eeeeeeee-0000-4000-8000-00000000000b";
const USER_A: &str = "00000000-0000-4000-8000-0000000000e1";
const USER_B: &str = "00000000-0000-4000-8000-0000000000e2";

/// The chain outside any workspace after `setup`: enabling the audit of
/// `public.events`, and the permission to read a workspace's trail.
const GLOBAL: (Option<String>, i64, bool) = (None, 2, true);

fn setup(db: &str) {
    let c = cluster();
    c.create_database(db);
    c.create_login_role("audit_app", &["warden_user"]);
    c.create_login_role("audit_admin", &["warden_admin"]);
    c.superuser(db)
        .batch_execute(&format!(
            "INSERT INTO warden.memberships VALUES ('{WS_A}', '{USER_A}', 'user'), ('{WS_B}', '{USER_B}', 'user');
             INSERT INTO warden.role_permissions VALUES ('user', 'audit.read');
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

/// How many of `public.events`' entries are the only one of their
/// transaction, sealed with a MAC.
fn single_row_seals(db: &str) -> i64 {
    cluster()
        .superuser(db)
        .query_one(
            "SELECT count(*) FROM warden.audit_log
              WHERE target = 'public.events' AND seal_entries = 1 AND seal_mac IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0)
}

/// (workspace, entries, intact) per chain, as the administrator verifies.
fn verify(db: &str) -> Vec<(Option<String>, i64, bool)> {
    verify_in(cluster(), db)
}

fn verify_in(c: &Cluster, db: &str) -> Vec<(Option<String>, i64, bool)> {
    c.connect(db, "audit_admin")
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
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ]
    );
    let seals: i64 = single_row_seals("audit_concurrent");
    assert_eq!(
        seals, 1600,
        "one seal per committed single-row transaction, on its own row"
    );
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
    assert_eq!(all, 8, "both workspaces', and the setup's two outside any");
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
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
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
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ]
    );
}

#[test]
fn a_prepared_transaction_is_sealed_and_holds_up_no_verification() {
    setup("audit_prepared");
    let mut a = app("audit_prepared", WS_A, USER_A);
    // The backend's first audited commit would chain (and take the chain's
    // lock, which a prepared transaction keeps).
    a.batch_execute(
        "BEGIN;
         INSERT INTO public.events (workspace_id, payload) VALUES ('eeeeeeee-0000-4000-8000-00000000000a', 'p');
         PREPARE TRANSACTION 'audit_prepared_1'",
    )
    .unwrap();
    let mut admin = cluster().connect("audit_prepared", "audit_admin").unwrap();
    admin
        .batch_execute("SET statement_timeout = '10s'")
        .unwrap();
    let chains: Vec<(Option<String>, i64, bool)> = admin
        .query(
            "SELECT workspace_id::text, entries, intact FROM warden.verify_audit() ORDER BY 1",
            &[],
        )
        .expect("verify_audit() does not wait for the prepared transaction")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        chains,
        [
            (Some(WS_A.to_string()), 1, true),
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ],
        "the prepared entry is not there yet"
    );
    cluster()
        .superuser("audit_prepared")
        .batch_execute("COMMIT PREPARED 'audit_prepared_1'")
        .unwrap();
    assert_eq!(
        verify("audit_prepared"),
        [
            (Some(WS_A.to_string()), 2, true),
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ],
        "committed, the prepared entry is in its chain, sealed"
    );
    let sealed: i64 = single_row_seals("audit_prepared");
    assert_eq!(sealed, 1);
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
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ]
    );
}

#[test]
fn denials_take_turns_for_background_workers() {
    setup("audit_turns");
    // The trail's table locked, the workers of the first two denials wait
    // to write, each holding one of the database's two turns: a third
    // denial waits for a turn without starting a worker.
    let mut holder = cluster().superuser("audit_turns");
    holder
        .batch_execute("BEGIN; LOCK TABLE warden.audit_entries IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let deny = |permission: &'static str, timeout: &'static str| {
        std::thread::spawn(move || {
            let mut a = app("audit_turns", WS_A, USER_A);
            a.batch_execute(&format!("SET statement_timeout = '{timeout}'"))
                .unwrap();
            let err = a
                .execute("SELECT warden.require($1)", &[&permission])
                .unwrap_err();
            pg_warden_integration::sqlstate(&err)
        })
    };
    // (Polled, outside the holder's transaction, which would see one
    // snapshot of pg_stat_activity: sessions and workers take a moment to
    // start.)
    let mut watcher = cluster().superuser("audit_turns");
    let mut poll = |want: (i64, i64)| {
        let mut seen = (0, 0);
        for _ in 0..100 {
            let row = watcher
                .query_one(
                    "SELECT count(*) FILTER (WHERE query LIKE '%warden.require%' AND state = 'active'),
                            count(*) FILTER (WHERE backend_type = 'pg_warden denial')
                       FROM pg_stat_activity
                      WHERE datname = 'audit_turns' AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap();
            seen = (row.get::<_, i64>(0), row.get::<_, i64>(1));
            if seen == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        seen
    };
    // The first two take the turns; their statement_timeout fires while
    // their workers wait, and waits for them: a cancelled denial keeps its
    // turn until its worker is done (else a loop of cancelled denials
    // would start workers without bound).
    let mut denials = vec![
        deny("events.purge", "200ms"),
        deny("events.export", "200ms"),
    ];
    assert_eq!(poll((2, 2)), (2, 2), "two denials, two workers");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        poll((2, 2)),
        (2, 2),
        "timed out, still waiting for their workers"
    );
    denials.push(deny("events.share", "0"));
    assert_eq!(
        poll((3, 2)),
        (3, 2),
        "a third denial waits, without a worker"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(poll((3, 2)), (3, 2), "and still no third worker");
    // No role can take the turns itself (they are not the advisory locks
    // SQL reaches): a session takes every advisory lock SQL can name for
    // them, while the turns are held, and keeps nothing out.
    let mut squatter = cluster().connect("audit_turns", "audit_app").unwrap();
    let squatted: (bool, bool) = {
        let row = squatter
            .query_one(
                "SELECT pg_try_advisory_lock(1463898692, 0), pg_try_advisory_lock(1463898692, 1)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(squatted, (true, true));
    // A denial cancelled while it waits (here by statement_timeout) is
    // not in the trail, but in the server log: waiting, then cancelling,
    // does not tell a session it is denied without a trace.
    let mut impatient = app("audit_turns", WS_A, USER_A);
    let err = impatient
        .batch_execute("SET statement_timeout = '300ms'; SELECT warden.require('events.delete')")
        .unwrap_err();
    assert_eq!(pg_warden_integration::sqlstate(&err), "57014", "{err}");
    assert!(
        cluster().server_log().contains(
            "not in the audit trail (cancelled while waiting for its turn): events.delete"
        ),
        "the cancelled denial is in the server log"
    );
    holder.batch_execute("COMMIT").unwrap();
    let outcomes: Vec<String> = denials.into_iter().map(|d| d.join().unwrap()).collect();
    // (The timed-out two end as denied, recorded: the denial is what
    // happened, and error recovery forgets the cancel.)
    assert_eq!(outcomes, ["42501", "42501", "42501"]);
    let mut admin = cluster().connect("audit_turns", "audit_admin").unwrap();
    let recorded: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.audit_log WHERE action = 'permission.denied'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        recorded, 3,
        "the three that got a turn (two of them timed out after), not the one cancelled waiting"
    );
}

/// The database's own settings reach the denial's worker as any session;
/// an application overrides them in its own, and so does the worker: a
/// database made read-only by default still records its denials.
#[test]
fn a_denial_is_recorded_whatever_the_database_defaults_to() {
    setup("audit_denial_ro");
    cluster()
        .superuser("audit_denial_ro")
        .batch_execute(
            "ALTER DATABASE audit_denial_ro SET default_transaction_read_only = on;
             ALTER DATABASE audit_denial_ro SET statement_timeout = '1ms'",
        )
        .unwrap();
    let mut a = cluster().connect("audit_denial_ro", "audit_app").unwrap();
    a.batch_execute("SET default_transaction_read_only = off; SET statement_timeout = 0")
        .unwrap();
    a.execute(
        "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
        &[&WS_A, &USER_A],
    )
    .unwrap();
    let err = a
        .execute("SELECT warden.require('events.purge')", &[])
        .unwrap_err();
    assert_eq!(pg_warden_integration::sqlstate(&err), "42501", "{err}");
    assert!(
        !err.to_string().contains("could not be recorded"),
        "recorded: {err}"
    );
    let mut admin = cluster().connect("audit_denial_ro", "audit_admin").unwrap();
    admin
        .batch_execute("SET default_transaction_read_only = off; SET statement_timeout = 0")
        .unwrap();
    let denials: i64 = admin
        .query_one(
            "SELECT count(*) FROM warden.audit_log WHERE action = 'permission.denied'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(denials, 1);
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
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ]
    );
}

/// The next transaction id to be given out (reading it takes none).
fn next_xid(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Transaction ids start again in a new cluster: a trail restored there
/// holds the ids its new transactions take. A transaction is its id up to
/// its seal, so those new transactions seal, chain and verify as their own.
#[test]
fn a_trail_restored_into_another_cluster_keeps_verifying() {
    setup("audit_moved");
    // Ahead of the new cluster, whatever else ran here first.
    let mut su = cluster().superuser("audit_moved");
    for _ in 0..600 {
        su.batch_execute("SELECT pg_current_xact_id()").unwrap();
    }
    let mut a = app("audit_moved", WS_A, USER_A);
    for i in 0..30 {
        a.execute(
            "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, $2)",
            &[&WS_A, &format!("row {i}")],
        )
        .unwrap();
    }
    a.execute(
        "INSERT INTO public.events (workspace_id, payload)
         SELECT $1::text::uuid, 'bulk ' || g FROM generate_series(1, 100) AS g",
        &[&WS_A],
    )
    .unwrap();
    let before = verify("audit_moved");
    assert_eq!(before[0], (Some(WS_A.to_string()), 131, true));

    let other = second_cluster();
    // (Its first CREATE EXTENSION creates warden_user and warden_admin.)
    other.create_database("audit_roles");
    other.create_login_role("audit_app", &["warden_user"]);
    other.create_login_role("audit_admin", &["warden_admin"]);
    cluster().dump_and_restore_into("audit_moved", other, "audit_moved");
    assert_eq!(verify_in(other, "audit_moved"), before);

    // New audited transactions at transaction ids the restored trail holds
    // (three of them: a background process may take an id meant for one).
    let mut su = other.superuser("audit_moved");
    let candidates: Vec<i64> = su
        .query(
            "SELECT DISTINCT txid FROM warden.audit_log
              WHERE txid > pg_current_xact_id()::text::bigint + 5 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut b = other.connect("audit_moved", "audit_app").unwrap();
    b.execute(
        "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
        &[&WS_A, &USER_A],
    )
    .unwrap();
    let mut taken = Vec::new();
    for txid in candidates {
        while next_xid(&mut su) < txid {
            su.batch_execute("SELECT pg_current_xact_id()").unwrap();
        }
        if next_xid(&mut su) != txid {
            continue;
        }
        let mut tx = b.transaction().unwrap();
        tx.execute(
            "INSERT INTO public.events (workspace_id, payload) VALUES ($1::text::uuid, 'moved')",
            &[&WS_A],
        )
        .unwrap();
        let own: i64 = tx
            .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
            .unwrap()
            .get(0);
        if own == txid {
            tx.commit().unwrap();
            taken.push(txid);
            if taken.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(
        taken.len(),
        3,
        "three new transactions at ids of the old trail"
    );
    let shared: i64 = su
        .query_one(
            "SELECT count(DISTINCT id) FROM warden.audit_log WHERE txid = ANY ($1)",
            &[&taken],
        )
        .unwrap()
        .get(0);
    assert!(shared >= 6, "old and new entries share transaction ids");
    assert_eq!(
        verify_in(other, "audit_moved"),
        [
            (Some(WS_A.to_string()), 134, true),
            (Some(WS_B.to_string()), 1, true),
            GLOBAL,
        ]
    );
}
