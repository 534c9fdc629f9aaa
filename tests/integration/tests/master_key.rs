//! Where the master key comes from, what is refused, and a master key
//! rotation (re-wrapping every workspace key, rewriting no data). One test,
//! in its own cluster: it reconfigures the server step by step.

use pg_warden_integration::{cluster, postgres::Client, sqlstate};

const WS: &str = "dddddddd-0000-4000-8000-000000000000";
const USER: &str = "00000000-0000-4000-8000-0000000000d1";

fn app() -> Result<Client, String> {
    let mut client = cluster().connect("mk", "mk_app").unwrap();
    client
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&WS, &USER],
        )
        .map_err(|e| sqlstate(&e))?;
    Ok(client)
}

fn decrypted(client: &mut Client) -> Result<Vec<String>, String> {
    client
        .query(
            "SELECT warden.decrypt(ct) FROM public.secrets ORDER BY id",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .map_err(|e| sqlstate(&e))
}

#[test]
fn master_key_sources_refusals_and_rotation() {
    let c = cluster();
    c.create_database("mk");
    c.create_login_role("mk_app", &["warden_user"]);
    c.create_login_role("mk_admin", &["warden_admin"]);
    c.superuser("mk")
        .batch_execute(&format!(
            "INSERT INTO warden.memberships VALUES ('{WS}', '{USER}', 'user');
             CREATE TABLE public.secrets (id int PRIMARY KEY, ct bytea NOT NULL);
             GRANT ALL ON public.secrets TO mk_app;"
        ))
        .unwrap();
    let k1 = c.master_key_file();
    let dir = c.dir.display();
    let mut a = app().unwrap();
    a.execute(
        "INSERT INTO public.secrets VALUES (1, warden.encrypt('under k1'))",
        &[],
    )
    .unwrap();

    // A session that has read the key notices a change to the file it
    // uses within about a second (it is not stat'ed in every transaction).
    let log_event = |client: &mut Client| {
        client
            .execute("SELECT warden.log_event('regress.check', 'k1')", &[])
            .map(|_| ())
            .map_err(|e| sqlstate(&e))
    };
    assert_eq!(log_event(&mut a), Ok(()));
    c.shell_as_pg(&format!("chmod 0644 {}", k1.display()));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(log_event(&mut a).err().as_deref(), Some("F0000"));
    c.shell_as_pg(&format!("chmod 0600 {}", k1.display()));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(log_event(&mut a), Ok(()));

    // A key file others can read is refused, whatever it holds.
    c.shell_as_pg(&format!(
        "cp {k} {dir}/loose.key && chmod 0644 {dir}/loose.key",
        k = k1.display()
    ));
    c.reconfigure(&[("warden.master_key_file", &format!("{dir}/loose.key"))]);
    assert_eq!(app().err().as_deref(), Some("F0000"), "mode 0644 accepted");
    // Malformed content.
    c.shell_as_pg(&format!("umask 077 && printf '%063d' 0 > {dir}/short.key"));
    c.reconfigure(&[("warden.master_key_file", &format!("{dir}/short.key"))]);
    assert_eq!(
        app().err().as_deref(),
        Some("F0000"),
        "63 hex characters accepted"
    );
    c.shell_as_pg(&format!(
        "umask 077 && printf '%064d' 0 | tr 0 z > {dir}/nothex.key"
    ));
    c.reconfigure(&[("warden.master_key_file", &format!("{dir}/nothex.key"))]);
    assert_eq!(
        app().err().as_deref(),
        Some("F0000"),
        "non-hex key accepted"
    );
    // Missing file, then no key at all.
    c.reconfigure(&[("warden.master_key_file", &format!("{dir}/absent.key"))]);
    assert_eq!(app().err().as_deref(), Some("58P01"));
    c.reconfigure(&[("warden.master_key_file", "")]);
    assert_eq!(app().err().as_deref(), Some("55000"));

    // The same key from a command (KMS / Vault integration).
    c.reconfigure(&[(
        "warden.master_key_command",
        &format!("cat {}", k1.display()),
    )]);
    assert_eq!(decrypted(&mut app().unwrap()).unwrap(), ["under k1"]);
    c.reconfigure(&[("warden.master_key_command", "exit 3")]);
    assert_eq!(app().err().as_deref(), Some("58030"));
    // A command that hangs (a KMS that does not answer) does not hang the
    // backend: statement_timeout ends the wait, and the session goes on.
    c.reconfigure(&[("warden.master_key_command", "sleep 60")]);
    let mut waiting = c.connect("mk", "mk_app").unwrap();
    waiting
        .batch_execute("SET statement_timeout = '500ms'")
        .unwrap();
    let started = std::time::Instant::now();
    let err = waiting
        .execute(
            "SELECT warden.set_context($1::text::uuid, $2::text::uuid, false)",
            &[&WS, &USER],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    waiting.batch_execute("SELECT 1").unwrap();
    // A command printing far more than a key is refused.
    c.reconfigure(&[("warden.master_key_command", "yes 0 | head -c 100000")]);
    assert_eq!(app().err().as_deref(), Some("58030"));

    // Rotation: a new key in place, the old one as previous, a reload.
    c.shell_as_pg(&format!(
        "umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > {dir}/k2.key"
    ));
    c.reconfigure(&[
        ("warden.master_key_command", ""),
        ("warden.master_key_file", &format!("{dir}/k2.key")),
        ("warden.previous_master_key_file", &k1.display().to_string()),
    ]);
    // Until re-wrapped, the workspace keys are under a master key that is
    // not the current one: refused, with a pointer to rewrap_keys().
    let mut a = app().unwrap();
    assert_eq!(decrypted(&mut a).err().as_deref(), Some("55000"));
    let mut admin = c.connect("mk", "mk_admin").unwrap();
    let rewrapped: i64 = admin
        .query_one("SELECT warden.rewrap_keys()", &[])
        .unwrap()
        .get(0);
    assert_eq!(rewrapped, 2, "one data key and one blind-index key");
    let again: i64 = admin
        .query_one("SELECT warden.rewrap_keys()", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "rewrap is idempotent");
    assert_eq!(decrypted(&mut app().unwrap()).unwrap(), ["under k1"]);
    // The old key can go; the data was never rewritten.
    c.reconfigure(&[("warden.previous_master_key_file", "")]);
    let mut a = app().unwrap();
    a.execute(
        "INSERT INTO public.secrets VALUES (2, warden.encrypt('under k2'))",
        &[],
    )
    .unwrap();
    assert_eq!(decrypted(&mut a).unwrap(), ["under k1", "under k2"]);
    let ids: Vec<String> = admin
        .query(
            "SELECT DISTINCT master_key_id FROM warden.key_status($1::text::uuid)",
            &[&WS],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 1, "every key under one master key: {ids:?}");
}
