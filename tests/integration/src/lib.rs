//! Test harness: a throwaway PostgreSQL 15 cluster with pg_warden preloaded,
//! driven through a real client (the `postgres` crate) over loopback TCP with
//! password authentication, as the roles an application would use.
//!
//! The extension must already be installed into the system PostgreSQL
//! (`scripts/test` does that first). Each test binary starts one cluster on a
//! free port with its own socket directory; a watchdog stops it and removes
//! its files when the test process exits, even if a test aborts.

use postgres::{Client, NoTls};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use postgres;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster. Obtain the per-process one with [`cluster()`].
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a program as the cluster's OS user (`postgres` when we are root:
/// PostgreSQL refuses to run as root).
pub fn as_pg(program: &str) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory for this run's cluster: under the workspace's target/ when
/// the cluster's OS user can reach it, else under /var/tmp.
fn cluster_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let target = target.canonicalize().unwrap_or(target);
    let base = if as_pg("test")
        .arg("-x")
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success())
    {
        target.join("it-clusters")
    } else {
        PathBuf::from("/var/tmp/pg_warden-it-clusters")
    };
    let dir = base.join(format!("{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&base).unwrap();
    if running_as_root() {
        run(
            Command::new("chown").arg("postgres").arg(&base).arg(&dir),
            "chown",
        );
    }
    dir
}

impl Cluster {
    /// A new cluster with a new master key, or a copy of `master_key`.
    fn start(master_key: Option<&Path>) -> Cluster {
        let dir = cluster_dir();
        let port = free_port();
        let data = dir.join("data");
        let socket = dir.join("run");
        let key = dir.join("master.key");
        run(as_pg("mkdir").arg("-p").arg(&socket), "mkdir run");
        run(
            as_pg(&format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                ])
                .arg("--locale=C.UTF-8"),
            "initdb",
        );
        let make_key = match master_key {
            Some(from) => format!(
                "umask 077 && cat '{}' > '{}'",
                from.display(),
                key.display()
            ),
            None => format!(
                "umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > '{}'",
                key.display()
            ),
        };
        run(as_pg("sh").arg("-c").arg(make_key), "master key");
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_preload_libraries = 'pg_warden, pg_stat_statements'\n\
             warden.master_key_file = '{}'\nmax_connections = 50\nmax_prepared_transactions = 5\n",
            socket.display(),
            key.display()
        );
        write_as_pg(&data.join("postgresql.auto.conf"), &conf);
        write_as_pg(
            &data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        );
        run(
            as_pg(&format!("{PG_BIN}/pg_ctl"))
                // As in production: no Rust backtraces in error details.
                .env_remove("RUST_BACKTRACE")
                .arg("start")
                .arg("-w")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log")),
            "pg_ctl start",
        );
        // Watchdog: when this test process is gone, stop the cluster and
        // remove its files (kept with WARDEN_KEEP_CLUSTER=1, for debugging).
        // It runs as the cluster's user, which may not signal us, so it
        // watches /proc. It must outlive us, so it is never waited for.
        let watchdog = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             {PG_BIN}/pg_ctl stop -D '{data}' -m immediate >/dev/null 2>&1; [ -n \"$WARDEN_KEEP_CLUSTER\" ] || rm -rf '{dir}'",
            pid = std::process::id(),
            data = data.display(),
            dir = dir.display()
        );
        #[allow(clippy::zombie_processes)]
        as_pg("sh")
            .arg("-c")
            .arg(watchdog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog");
        Cluster { dir, port }
    }

    /// The superuser, over the private Unix socket.
    pub fn superuser(&self, database: &str) -> Client {
        Client::connect(
            &format!(
                "host={} port={} user=postgres dbname={database}",
                self.dir.join("run").display(),
                self.port
            ),
            NoTls,
        )
        .unwrap_or_else(|e| panic!("connect as postgres to {database}: {e:?}"))
    }

    /// A login role over loopback TCP with password authentication: the
    /// path an application's driver takes.
    pub fn connect(&self, database: &str, role: &str) -> Result<Client, postgres::Error> {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={role} password={role}-pw dbname={database}",
                self.port
            ),
            NoTls,
        )
    }

    /// A fresh database with pg_warden created in it.
    pub fn create_database(&self, name: &str) {
        self.create_empty_database(name, "");
        self.superuser(name)
            .batch_execute("CREATE EXTENSION pg_warden")
            .unwrap();
    }

    /// A fresh database without the extension, made with `options` (e.g.
    /// `ENCODING 'LATIN1' ... TEMPLATE template0`), dropped first if it
    /// exists.
    pub fn create_empty_database(&self, name: &str, options: &str) {
        let mut admin = self.superuser("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" {options}"))
            .unwrap();
    }

    /// A non-superuser login role (password `<name>-pw`) that is a member of
    /// `member_of` (e.g. `warden_user`), created if missing.
    pub fn create_login_role(&self, name: &str, member_of: &[&str]) {
        // Roles are cluster-wide and tests run in parallel: one at a time.
        static ROLES: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = ROLES.lock().unwrap_or_else(|e| e.into_inner());
        let mut admin = self.superuser("postgres");
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN \
                 CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{name}-pw'; END IF; END $$"
            ))
            .unwrap();
        for role in member_of {
            admin
                .batch_execute(&format!("GRANT \"{role}\" TO \"{name}\""))
                .unwrap();
        }
    }

    /// Runs a client program from the PostgreSQL bin directory (pg_dump,
    /// pg_restore, psql) against this cluster as the superuser.
    pub fn client_program(&self, program: &str) -> Command {
        let mut cmd = Command::new(format!("{PG_BIN}/{program}"));
        cmd.arg("-h")
            .arg(self.dir.join("run"))
            .arg("-p")
            .arg(self.port.to_string());
        cmd.arg("-U").arg("postgres");
        cmd
    }

    /// `pg_dump -Fc` of `from`, restored with `pg_restore --exit-on-error`
    /// into a new database `to` of this cluster (same master key).
    pub fn dump_and_restore(&self, from: &str, to: &str) {
        self.dump_and_replay(from, self, to, Replay::Archive);
    }

    /// `pg_dump` as a plain SQL script of `from`, replayed with
    /// `psql -v ON_ERROR_STOP=1` into a new database `to` (the other way
    /// restores are done).
    pub fn dump_and_restore_plain(&self, from: &str, to: &str) {
        self.dump_and_replay(from, self, to, Replay::Script);
    }

    /// `pg_dump -Fc` of `from`, restored into a new database `to` of
    /// another cluster (which needs the roles the dump grants to).
    pub fn dump_and_restore_into(&self, from: &str, other: &Cluster, to: &str) {
        self.dump_and_replay(from, other, to, Replay::Archive);
    }

    fn dump_and_replay(&self, from: &str, target: &Cluster, to: &str, how: Replay) {
        let (format, program, args): (&str, &str, &[&str]) = match how {
            Replay::Archive => ("-Fc", "pg_restore", &["--exit-on-error", "-d", to]),
            Replay::Script => (
                "-Fp",
                "psql",
                &["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", to, "-f"],
            ),
        };
        let path = self.dir.join(format!("{from}{format}.dump"));
        let dump = self
            .client_program("pg_dump")
            .args([format, "-d", from, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let mut admin = target.superuser("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{to}\""))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{to}\""))
            .unwrap();
        let restore = target
            .client_program(program)
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            restore.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&restore.stderr)
        );
    }

    /// The master key file this cluster was started with.
    pub fn master_key_file(&self) -> PathBuf {
        self.dir.join("master.key")
    }

    /// Runs a shell command as the cluster's OS user (e.g. to prepare a key
    /// file with a given owner and mode).
    pub fn shell_as_pg(&self, script: &str) {
        run(as_pg("sh").arg("-c").arg(script), script);
    }

    /// `ALTER SYSTEM SET`s (as the superuser) and a configuration reload;
    /// new connections see the settings.
    pub fn reconfigure(&self, settings: &[(&str, &str)]) {
        let mut su = self.superuser("postgres");
        for (name, value) in settings {
            let sql = if value.is_empty() {
                format!("ALTER SYSTEM RESET {name}")
            } else {
                format!("ALTER SYSTEM SET {name} = '{value}'")
            };
            su.batch_execute(&sql).unwrap();
        }
        su.batch_execute("SELECT pg_reload_conf()").unwrap();
        // Backends pick the reload up at their next command; give the
        // postmaster a moment to signal them.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    /// The server log so far (for assertions that nothing leaked into it).
    pub fn server_log(&self) -> String {
        let out = as_pg("cat")
            .arg(self.dir.join("server.log"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A PgBouncer in transaction pooling mode with one server connection, in
/// front of `database` on a [`Cluster`]; stopped when dropped.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
}

impl PgBouncer {
    pub fn start(cluster: &Cluster, database: &str, users: &[&str]) -> PgBouncer {
        let port = free_port();
        let dir = cluster.dir.join(format!("pgbouncer-{port}"));
        run(as_pg("mkdir").arg("-p").arg(&dir), "mkdir pgbouncer");
        let auth: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        write_as_pg(&dir.join("users.txt"), &auth);
        write_as_pg(
            &dir.join("pgbouncer.ini"),
            &format!(
                "[databases]\n{database} = host={socket} port={pgport} dbname={database}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {auth}\n\
                 pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 20\n\
                 server_reset_query =\nlogfile = {log}\npidfile = {pid}\n",
                socket = cluster.dir.join("run").display(),
                pgport = cluster.port,
                auth = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        );
        // Like the cluster's watchdog: gone when this test process is.
        #[allow(clippy::zombie_processes)]
        as_pg("sh")
            .arg("-c")
            .arg(format!(
                "/usr/sbin/pgbouncer '{ini}' & bouncer=$!; \
                 while [ -d /proc/{pid} ] && [ -d /proc/$bouncer ]; do sleep 0.5; done; \
                 kill $bouncer 2>/dev/null",
                ini = dir.join("pgbouncer.ini").display(),
                pid = std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return PgBouncer { port, dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pgbouncer did not start: see {}", dir.display());
    }

    /// A client through the pooler (simple query protocol only: transaction
    /// pooling cannot carry prepared statements).
    pub fn connect(&self, database: &str, role: &str) -> Client {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={role} dbname={database}",
                self.port
            ),
            NoTls,
        )
        .unwrap_or_else(|e| panic!("connect through pgbouncer as {role}: {e:?}"))
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // It runs as the cluster's OS user; stop it the same way.
        let pidfile = self.dir.join("pgbouncer.pid");
        let _ = as_pg("sh")
            .arg("-c")
            .arg(format!("kill $(cat '{}')", pidfile.display()))
            .status();
        let _ = as_pg("rm").arg("-rf").arg(&self.dir).status();
    }
}

fn write_as_pg(path: &Path, contents: &str) {
    use std::io::Write;
    let mut child = as_pg("tee")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tee");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "writing {}",
        path.display()
    );
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(None))
}

/// A second cluster with the same master key (a restore elsewhere),
/// started on first use.
pub fn second_cluster() -> &'static Cluster {
    static SECOND: OnceLock<Cluster> = OnceLock::new();
    SECOND.get_or_init(|| Cluster::start(Some(&cluster().master_key_file())))
}

/// The SQLSTATE of a failed statement, for asserting on error classes.
pub fn sqlstate(err: &postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// The rows of every statement in `sql`, run with the simple query protocol
/// (the only one a transaction pooler can carry), as text.
pub fn simple_rows(client: &mut Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// How a dump goes back in.
enum Replay {
    /// `pg_dump -Fc` and `pg_restore`.
    Archive,
    /// `pg_dump -Fp` and `psql`.
    Script,
}
