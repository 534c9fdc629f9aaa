//! Field encryption through a real client, as `warden_user` and
//! `warden_admin` login roles, in a cluster with pg_warden preloaded:
//! racing first use, nonces across backends, rotation and shredding seen by
//! other sessions, dump and restore, and the master key never leaving the
//! server's memory.

use pg_warden_integration::{cluster, postgres::Client, sqlstate};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

const WS: &str = "cccccccc-0000-4000-8000-000000000000";
const USER: &str = "00000000-0000-4000-8000-0000000000c1";

fn setup(db: &str) {
    let c = cluster();
    c.create_database(db);
    c.create_login_role("enc_app", &["warden_user"]);
    c.create_login_role("enc_admin", &["warden_admin"]);
    let mut su = c.superuser(db);
    su.batch_execute(&format!(
        "INSERT INTO warden.memberships VALUES ('{WS}', '{USER}', 'user');
         CREATE TABLE public.secrets (id int PRIMARY KEY, ct bytea NOT NULL);
         GRANT ALL ON public.secrets TO enc_app;"
    ))
    .unwrap();
}

fn app(db: &str) -> Client {
    let mut client = cluster().connect(db, "enc_app").unwrap();
    client
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&WS, &USER],
        )
        .unwrap();
    client
}

fn decrypt_all(client: &mut Client) -> Vec<(i32, String)> {
    client
        .query(
            "SELECT id, warden.decrypt(ct) FROM public.secrets ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn concurrent_first_uses_converge_on_one_key() {
    setup("enc_race");
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = app("enc_race");
                barrier.wait();
                client
                    .execute(
                        "INSERT INTO public.secrets VALUES ($1, warden.encrypt('racer ' || $1::int))",
                        &[&(i as i32)],
                    )
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut admin = cluster().connect("enc_race", "enc_admin").unwrap();
    let keys: Vec<String> = admin
        .query(
            "SELECT kind || ':' || version FROM warden.key_status($1::text::uuid)",
            &[&WS],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["blind_index:1", "data:1"]);
    let all = decrypt_all(&mut app("enc_race"));
    assert_eq!(all.len(), n);
    assert!(all.iter().all(|(i, text)| *text == format!("racer {i}")));
}

#[test]
fn nonces_never_repeat_across_backends() {
    setup("enc_nonces");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let mut client = app("enc_nonces");
                client
                    .query(
                        "SELECT substring(warden.encrypt('same plaintext') FROM 26 FOR 12)
                           FROM generate_series(1, 500)",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut nonces = HashSet::new();
    for t in threads {
        for nonce in t.join().unwrap() {
            assert_eq!(nonce.len(), 12);
            assert!(nonces.insert(nonce), "a nonce repeated across backends");
        }
    }
    assert_eq!(nonces.len(), 4000);
}

#[test]
fn rotation_and_shredding_reach_sessions_that_hold_the_key() {
    setup("enc_shred");
    let mut a = app("enc_shred");
    a.execute(
        "INSERT INTO public.secrets VALUES (1, warden.encrypt('before'))",
        &[],
    )
    .unwrap();
    assert_eq!(decrypt_all(&mut a), [(1, "before".to_string())]);

    let mut admin = cluster().connect("enc_shred", "enc_admin").unwrap();
    let v: i32 = admin
        .query_one("SELECT warden.rotate_workspace_key($1::text::uuid)", &[&WS])
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
    // The session that cached version 1 as current encrypts with 2 now,
    // and still reads 1.
    let version: i64 = a
        .query_one(
            "SELECT key_version FROM warden.envelope_info(warden.encrypt('after'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    assert_eq!(decrypt_all(&mut a), [(1, "before".to_string())]);

    admin
        .execute("SELECT warden.shred_workspace($1::text::uuid)", &[&WS])
        .unwrap();
    let err = a
        .query("SELECT warden.decrypt(ct) FROM public.secrets", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    let err = a.query("SELECT warden.encrypt('more')", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    // Not even the superuser, who holds the master key, gets it back.
    let mut su = cluster().superuser("enc_shred");
    let keys: i64 = su
        .query_one(
            "SELECT count(*) FROM warden.workspace_keys WHERE workspace_id = $1::text::uuid",
            &[&WS],
        )
        .unwrap()
        .get(0);
    assert_eq!(keys, 0);
}

#[test]
fn dump_and_restore_decrypt_everything_and_encrypt_nothing_twice() {
    setup("enc_dump");
    let c = cluster();
    let mut su = c.superuser("enc_dump");
    // An application trigger that encrypts on the way in: a restore re-fires
    // it on values that already are ciphertexts.
    su.batch_execute(
        "CREATE FUNCTION public.encrypt_ct() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.ct := warden.encrypt(NEW.ct); RETURN NEW; END $$;
         CREATE TRIGGER encrypt_ct BEFORE INSERT ON public.secrets
             FOR EACH ROW EXECUTE FUNCTION public.encrypt_ct();",
    )
    .unwrap();
    let mut a = app("enc_dump");
    a.execute(
        "INSERT INTO public.secrets SELECT g, convert_to('row ' || g, 'UTF8') FROM generate_series(1, 50) g",
        &[],
    )
    .unwrap();
    let before: Vec<Vec<u8>> = su
        .query("SELECT ct FROM public.secrets ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    c.dump_and_restore("enc_dump", "enc_restored");

    let mut restored_su = c.superuser("enc_restored");
    let after: Vec<Vec<u8>> = restored_su
        .query("SELECT ct FROM public.secrets ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        before, after,
        "the restore changed (re-encrypted) ciphertexts"
    );
    let mut restored = app("enc_restored");
    let texts: Vec<Vec<u8>> = restored
        .query(
            "SELECT warden.decrypt_bytea(ct) FROM public.secrets ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(texts.len(), 50);
    assert!(texts
        .iter()
        .enumerate()
        .all(|(i, t)| *t == format!("row {}", i + 1).into_bytes()));
}

#[test]
fn the_master_key_never_reaches_logs_statistics_settings_or_errors() {
    setup("enc_leak");
    let c = cluster();
    let key = std::fs::read_to_string(c.master_key_file()).unwrap();
    let key = key.trim().to_string();
    assert_eq!(key.len(), 64);
    let mut su = c.superuser("enc_leak");
    su.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
         ALTER DATABASE enc_leak SET log_statement = 'all';
         ALTER DATABASE enc_leak SET log_min_duration_statement = 0;
         ALTER DATABASE enc_leak SET log_min_error_statement = 'error';",
    )
    .unwrap();
    let mut a = app("enc_leak");
    a.execute(
        "INSERT INTO public.secrets VALUES (1, warden.encrypt('sk_live_leakcheck'))",
        &[],
    )
    .unwrap();
    let _ = decrypt_all(&mut a);
    // Errors of every kind along the way.
    for bad in [
        "SELECT warden.decrypt('\\x00'::bytea)",
        "SELECT warden.decrypt(ct, 'wrong') FROM public.secrets",
        "SELECT warden.encrypt('x', NULL) FROM public.nope",
    ] {
        let err = a.query(bad, &[]).unwrap_err();
        assert!(!format!("{err:?}").contains(&key));
    }
    let mut admin = c.connect("enc_leak", "enc_admin").unwrap();
    admin
        .query("SELECT * FROM warden.key_status($1::text::uuid)", &[&WS])
        .unwrap();
    admin.query("SELECT warden.rewrap_keys()", &[]).unwrap();

    let statements: Vec<String> = su
        .query("SELECT query FROM pg_stat_statements", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!statements.is_empty());
    let show_all: Vec<String> = su
        .query("SELECT setting FROM pg_settings", &[])
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect();
    let log = c.server_log();
    assert!(
        log.contains("warden.encrypt('sk_live_leakcheck')"),
        "statement logging is on"
    );
    for (place, text) in [
        ("server log", log),
        ("pg_stat_statements", statements.join("\n")),
        ("SHOW ALL", show_all.join("\n")),
    ] {
        assert!(!text.contains(&key), "the master key is in the {place}");
        assert!(
            !text.to_lowercase().contains(&key.to_lowercase()),
            "the master key is in the {place}"
        );
    }
    // And a non-superuser cannot even see where the key file is.
    let err = a.query("SHOW warden.master_key_file", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[test]
fn a_rotation_waiting_on_a_shred_finds_the_workspace_shredded() {
    setup("enc_shred_race");
    let mut a = app("enc_shred_race");
    a.execute("SELECT warden.encrypt('first')", &[]).unwrap();
    // The shred holds the workspace's key lock until it commits...
    let mut shredder = cluster().connect("enc_shred_race", "enc_admin").unwrap();
    let mut tx = shredder.transaction().unwrap();
    tx.execute("SELECT warden.shred_workspace($1::text::uuid)", &[&WS])
        .unwrap();
    // ...so a rotation started meanwhile waits for it, then sees the shred.
    let rotation = std::thread::spawn(|| {
        let mut admin = cluster().connect("enc_shred_race", "enc_admin").unwrap();
        admin
            .query_one("SELECT warden.rotate_workspace_key($1::text::uuid)", &[&WS])
            .map(|r| r.get::<_, i32>(0))
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!rotation.is_finished(), "the rotation waits for the shred");
    tx.commit().unwrap();
    let err = rotation.join().unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    assert_eq!(
        keys_of("enc_shred_race", WS),
        0,
        "no key outlives the shred"
    );
}

#[test]
fn a_shred_reaches_a_transaction_already_holding_the_key() {
    setup("enc_open_tx");
    let mut a = app("enc_open_tx");
    // The workspace's first key is created (and its lock released) first.
    a.execute("SELECT warden.encrypt('first')", &[]).unwrap();
    let mut tx = a.transaction().unwrap();
    tx.execute(
        "INSERT INTO public.secrets VALUES (1, warden.encrypt('kept in cache'))",
        &[],
    )
    .unwrap();
    cluster()
        .connect("enc_open_tx", "enc_admin")
        .unwrap()
        .execute("SELECT warden.shred_workspace($1::text::uuid)", &[&WS])
        .unwrap();
    // The next statement of the same transaction no longer encrypts.
    let err = tx.query("SELECT warden.encrypt('after')", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
}

fn keys_of(db: &str, ws: &str) -> i64 {
    cluster()
        .superuser(db)
        .query_one(
            "SELECT count(*) FROM warden.workspace_keys WHERE workspace_id = $1::text::uuid",
            &[&ws],
        )
        .unwrap()
        .get(0)
}

/// Key operations are serialized by a lock, but a REPEATABLE READ
/// transaction reads its first snapshot: what another operation committed
/// after that snapshot (and before the lock was taken) must not be missed.
#[test]
fn key_operations_under_repeatable_read_see_what_committed_after_their_snapshot() {
    setup("enc_rr");
    let mut a = app("enc_rr");
    a.execute("SELECT warden.encrypt('first')", &[]).unwrap();
    // A shred whose snapshot predates a rotation would delete only the
    // keys it can see, and the rotation's key would outlive it: refused.
    let mut shredder = cluster().connect("enc_rr", "enc_admin").unwrap();
    shredder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    cluster()
        .connect("enc_rr", "enc_admin")
        .unwrap()
        .execute("SELECT warden.rotate_workspace_key($1::text::uuid)", &[&WS])
        .unwrap();
    let err = shredder
        .execute("SELECT warden.shred_workspace($1::text::uuid)", &[&WS])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "40001", "{err}");
    shredder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        keys_of("enc_rr", WS),
        3,
        "data keys 1 and 2 and the index key"
    );
    // Retried (here at READ COMMITTED), the shred takes every key.
    shredder
        .execute("SELECT warden.shred_workspace($1::text::uuid)", &[&WS])
        .unwrap();
    assert_eq!(keys_of("enc_rr", WS), 0);

    // A first use whose snapshot predates the shred of a workspace that
    // had no keys yet does not create keys for it.
    const FRESH: &str = "cccccccc-0000-4000-8000-0000000000f1";
    cluster()
        .superuser("enc_rr")
        .execute(
            "INSERT INTO warden.memberships VALUES ($1::text::uuid, $2::text::uuid, 'user')",
            &[&FRESH, &USER],
        )
        .unwrap();
    let mut late = cluster().connect("enc_rr", "enc_app").unwrap();
    late.execute(
        "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
        &[&FRESH, &USER],
    )
    .unwrap();
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    shredder
        .execute("SELECT warden.shred_workspace($1::text::uuid)", &[&FRESH])
        .unwrap();
    let err = late.query("SELECT warden.encrypt('x')", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    late.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        keys_of("enc_rr", FRESH),
        0,
        "a shredded workspace gets no keys"
    );

    // A rewrap whose snapshot predates a key written since under another
    // master key (a backend still on the previous one, say; planted here)
    // would leave that key out: refused, 40001. A key written since under
    // the current master key needs nothing, and is no reason to refuse.
    const NEWER: &str = "cccccccc-0000-4000-8000-0000000000f2";
    let mut su = cluster().superuser("enc_rr");
    su.execute(
        "INSERT INTO warden.memberships VALUES ($1::text::uuid, $2::text::uuid, 'user')",
        &[&NEWER, &USER],
    )
    .unwrap();
    let mut rewrapper = cluster().connect("enc_rr", "enc_admin").unwrap();
    let rewrap = |rewrapper: &mut Client| {
        rewrapper
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
            .unwrap();
    };
    rewrap(&mut rewrapper);
    let mut newer = cluster().connect("enc_rr", "enc_app").unwrap();
    newer
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&NEWER, &USER],
        )
        .unwrap();
    newer.execute("SELECT warden.encrypt('y')", &[]).unwrap();
    let rewrapped: i64 = rewrapper
        .query_one("SELECT warden.rewrap_keys()", &[])
        .unwrap()
        .get(0);
    assert_eq!(rewrapped, 0);
    rewrapper.batch_execute("COMMIT").unwrap();
    rewrap(&mut rewrapper);
    su.execute(
        "INSERT INTO warden.workspace_keys (workspace_id, kind, version, wrapped, master_key_id)
         VALUES ($1::text::uuid, 1, 9, pg_catalog.decode(repeat('00', 60), 'hex'), 'an older one')",
        &[&NEWER],
    )
    .unwrap();
    let err = rewrapper
        .query("SELECT warden.rewrap_keys()", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "40001", "{err}");
    rewrapper.batch_execute("ROLLBACK").unwrap();
    su.execute(
        "DELETE FROM warden.workspace_keys WHERE master_key_id = 'an older one'",
        &[],
    )
    .unwrap();
}

/// Text is encrypted as the database stores it, and decrypts in a database
/// whose encoding is not UTF-8 (here LATIN1; the client speaks UTF-8 and
/// the server converts both ways).
#[test]
fn text_round_trips_in_a_latin1_database() {
    let c = cluster();
    let db = "enc_latin1";
    c.create_empty_database(
        db,
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    c.superuser(db)
        .batch_execute(&format!(
            "CREATE EXTENSION pg_warden;
             INSERT INTO warden.memberships VALUES ('{WS}', '{USER}', 'user');"
        ))
        .unwrap();
    c.create_login_role("enc_app", &["warden_user"]);
    let mut client = app(db);
    let row = client
        .query_one(
            "SELECT warden.decrypt(warden.encrypt('café crème'::text)),
                    length(warden.decrypt_bytea(warden.encrypt('café'::text)))",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "café crème");
    assert_eq!(row.get::<_, i32>(1), 4, "one byte per character in LATIN1");
}
