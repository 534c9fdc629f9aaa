//! The master key: 32 bytes, read by each backend from
//! `warden.master_key_file` or the output of `warden.master_key_command`,
//! never passed through SQL and never logged.
//!
//! The key and what is derived from it are cached per backend, keyed by
//! where the key came from: the setting's value and, for a file, its inode,
//! size and modification time. A transaction uses one key throughout. A
//! configuration reload that points elsewhere is picked up at the next
//! transaction; a replaced (or re-permissioned) key file under an unchanged
//! setting at the first transaction a second or more after the last check. A command
//! is re-run only when `warden.master_key_command` changes (a command can be
//! slow: a KMS round trip) or in a new backend.

use crate::backend::BackendLocal;
use crate::crypto::{derive_audit_key, derive_seal_key, master_key_id, Key32};
use crate::error::WardenError;
use crate::gucs;
use pgrx::guc::GucSetting;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use zeroize::Zeroizing;

/// One master key and what the backend derives from it.
pub struct MasterKeys {
    /// The key itself (zeroized on drop); workspace KEKs derive from it.
    pub master: Key32,
    /// Its public fingerprint, recorded with every key it wraps.
    pub id: String,
    /// Seals session contexts (`warden.context`).
    pub seal: Key32,
    /// MACs the audit trail.
    pub audit: Key32,
}

impl MasterKeys {
    fn derive(master: Key32) -> MasterKeys {
        MasterKeys {
            id: master_key_id(&master),
            seal: derive_seal_key(&master),
            audit: derive_audit_key(&master),
            master,
        }
    }
}

/// Where a cached key came from; a different source means a reload.
#[derive(PartialEq, Eq)]
enum Source {
    File {
        path: CString,
        ino: u64,
        len: u64,
        mtime: (i64, i64),
    },
    Command(CString),
}

/// The keys of the master key last read, and where it came from.
struct Loaded {
    source: Source,
    keys: Rc<MasterKeys>,
    /// Start of the transaction that last checked `source`.
    checked_at: pg_sys::TimestampTz,
    /// Start of the transaction that last used these keys.
    used_in: pg_sys::TimestampTz,
}

static CURRENT: BackendLocal<RefCell<Option<Loaded>>> = BackendLocal::new(RefCell::new(None));

/// Which master key setting to read: the current one, or the previous one
/// during a master key rotation.
struct KeySettings {
    file: &'static GucSetting<Option<CString>>,
    command: &'static GucSetting<Option<CString>>,
}

const CURRENT_SETTINGS: KeySettings = KeySettings {
    file: &gucs::MASTER_KEY_FILE,
    command: &gucs::MASTER_KEY_COMMAND,
};
const PREVIOUS_SETTINGS: KeySettings = KeySettings {
    file: &gucs::PREVIOUS_MASTER_KEY_FILE,
    command: &gucs::PREVIOUS_MASTER_KEY_COMMAND,
};

/// The master key before a rotation (`warden.previous_master_key_file` /
/// `_command`), for `warden.rewrap_keys()` only; `None` if not configured.
/// Read each time: it is needed once per rotation.
pub fn previous() -> Result<Option<MasterKeys>, WardenError> {
    match locate(&PREVIOUS_SETTINGS) {
        Ok(source) => Ok(Some(MasterKeys::derive(read(&source)?))),
        Err(WardenError::MasterKeyNotConfigured) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long keys read from an unchanged setting are used before the file
/// is checked again (microseconds).
const RECHECK_INTERVAL: i64 = 1_000_000;

/// The keys derived from the current master key, loading it if needed.
pub fn current() -> Result<Rc<MasterKeys>, WardenError> {
    // A changed setting (a reload) is taken at the next transaction. An unchanged one is
    // checked again at the first transaction a second or more after the
    // last check: a key file is replaced, or its mode changed, rarely, and
    // a stat(2) per transaction is a measurable share of a short one.
    // SAFETY: reads the transaction's start time.
    let transaction = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    {
        let mut current = CURRENT.borrow_mut();
        if let Some(l) = current.as_mut() {
            // One key for a whole transaction (its audit entries and their
            // seal are MAC'ed under it), even across a reload between its
            // statements.
            if l.used_in == transaction {
                return Ok(l.keys.clone());
            }
            if transaction > l.checked_at
                && transaction - l.checked_at < RECHECK_INTERVAL
                && same_setting(&l.source, &CURRENT_SETTINGS)
            {
                l.used_in = transaction;
                return Ok(l.keys.clone());
            }
        }
    }
    let source = locate(&CURRENT_SETTINGS)?;
    let mut current = CURRENT.borrow_mut();
    if let Some(loaded) = current.as_mut().filter(|l| l.source == source) {
        loaded.checked_at = transaction;
        loaded.used_in = transaction;
        return Ok(loaded.keys.clone());
    }
    let keys = Rc::new(MasterKeys::derive(read(&source)?));
    *current = Some(Loaded {
        source,
        keys: Rc::clone(&keys),
        checked_at: transaction,
        used_in: transaction,
    });
    Ok(keys)
}

/// Whether the settings still name `source` (no file system access).
fn same_setting(source: &Source, settings: &KeySettings) -> bool {
    match (source, non_empty(settings.file)) {
        (Source::File { path, .. }, Some(file)) => *path == file,
        (Source::File { .. }, None) => false,
        (Source::Command(command), None) => non_empty(settings.command).as_ref() == Some(command),
        (Source::Command(_), Some(_)) => false,
    }
}

fn non_empty(setting: &'static GucSetting<Option<CString>>) -> Option<CString> {
    setting.get().filter(|s| !s.as_bytes().is_empty())
}

fn locate(settings: &KeySettings) -> Result<Source, WardenError> {
    if let Some(path) = non_empty(settings.file) {
        let path_str = path
            .to_str()
            .map_err(|_| WardenError::MasterKeyFileMissing)?;
        let meta = match std::fs::metadata(path_str) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WardenError::MasterKeyFileMissing)
            }
            Err(e) => return Err(WardenError::MasterKeyFileUnreadable(e.kind())),
        };
        // Like PostgreSQL's own ssl_key_file check: a key others can read
        // is refused, whatever it holds.
        let mode = meta.mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 != 0 {
            return Err(WardenError::MasterKeyFileTooPermissive { mode });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(WardenError::MasterKeyFileWrongOwner);
        }
        return Ok(Source::File {
            path,
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        });
    }
    if let Some(command) = non_empty(settings.command) {
        return Ok(Source::Command(command));
    }
    Err(WardenError::MasterKeyNotConfigured)
}

fn read(source: &Source) -> Result<Key32, WardenError> {
    // The raw text is zeroized when dropped, whatever happens below.
    let mut text = Zeroizing::new(Vec::with_capacity(80));
    match source {
        Source::File { path, ino, .. } => {
            let path = path
                .to_str()
                .map_err(|_| WardenError::MasterKeyFileMissing)?;
            let file = std::fs::File::open(path)
                .map_err(|e| WardenError::MasterKeyFileUnreadable(e.kind()))?;
            // The file opened must be the one `locate` checked (not one
            // swapped in since): same inode, still private, still ours.
            let meta = file
                .metadata()
                .map_err(|e| WardenError::MasterKeyFileUnreadable(e.kind()))?;
            let mode = meta.mode() & 0o7777;
            if !meta.is_file() || mode & 0o077 != 0 || meta.ino() != *ino {
                return Err(WardenError::MasterKeyFileTooPermissive { mode });
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            if meta.uid() != unsafe { libc::geteuid() } {
                return Err(WardenError::MasterKeyFileWrongOwner);
            }
            // Read into room reserved up front (no reallocation leaves a
            // copy behind); a key file is 64 characters, 4 KB is plenty.
            text.reserve(4096);
            file.take(4096)
                .read_to_end(&mut text)
                .map_err(|e| WardenError::MasterKeyFileUnreadable(e.kind()))?;
            Key32::from_hex_bytes(&text)
                .map_err(|_| WardenError::MasterKeyMalformed("warden.master_key_file"))
        }
        Source::Command(command) => {
            let command = command.to_str().map_err(|_| {
                WardenError::MasterKeyCommandFailed("the command is not valid UTF-8".into())
            })?;
            run_command(command, &mut text)?;
            Key32::from_hex_bytes(&text)
                .map_err(|_| WardenError::MasterKeyMalformed("warden.master_key_command"))
        }
    }
}

/// How long `warden.master_key_command` may take.
const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// More output than a key needs is refused (and never buffered).
const COMMAND_OUTPUT_LIMIT: usize = 4096;

/// Runs the key command, reading its output into `out` (which zeroizes),
/// without ever blocking uninterruptibly: it waits on the pipe with
/// PostgreSQL's latch machinery, so a cancel or `statement_timeout` stops
/// it, and gives up after [`COMMAND_DEADLINE`]. The child is killed and
/// reaped whenever the wait ends early, an ERROR included.
fn run_command(command: &str, out: &mut Zeroizing<Vec<u8>>) -> Result<(), WardenError> {
    use std::os::fd::AsRawFd;
    let failed = |e: std::io::Error| WardenError::MasterKeyCommandFailed(e.kind().to_string());
    let child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(failed)?;
    /// Kills and reaps the child unless it finished.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let mut stdout = child.0.stdout.take().expect("stdout is piped");
    let fd = stdout.as_raw_fd();
    let started = std::time::Instant::now();
    out.reserve(COMMAND_OUTPUT_LIMIT + 1);
    let mut chunk = Zeroizing::new([0u8; 512]);
    loop {
        if started.elapsed() > COMMAND_DEADLINE {
            return Err(WardenError::MasterKeyCommandFailed(format!(
                "no answer within {} s",
                COMMAND_DEADLINE.as_secs()
            )));
        }
        // SAFETY: waits on this process's latch and on the pipe's fd, which
        // stays open while `stdout` lives; the latch is reset after use.
        let events = unsafe {
            let events = pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET
                    | pg_sys::WL_SOCKET_READABLE
                    | pg_sys::WL_TIMEOUT
                    | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                fd,
                100,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
            events
        };
        pgrx::check_for_interrupts!();
        if events & pg_sys::WL_SOCKET_READABLE as i32 == 0 {
            continue;
        }
        // Readable: data or end of file, so this read does not block.
        let n = std::io::Read::read(&mut stdout, &mut chunk[..]).map_err(failed)?;
        if n == 0 {
            break;
        }
        if out.len() + n > COMMAND_OUTPUT_LIMIT {
            return Err(WardenError::MasterKeyCommandFailed(
                "it printed more than a key".into(),
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    let status = child.0.wait().map_err(failed)?;
    if !status.success() {
        return Err(WardenError::MasterKeyCommandFailed(status.to_string()));
    }
    Ok(())
}
