//! Every error pg_warden raises, with its SQLSTATE, in one place.
//!
//! Messages name the problem and never carry key material, plaintext or the
//! location of key files (clients see them; `SHOW` of those settings is
//! superuser-only). SQL functions return `Result<T, ErrorReport>` and use `?`
//! on a `WardenError`, so the code chosen here is what the client sees
//! (a plain `Result<T, E>` would surface as SQLSTATE 22000).

use crate::crypto::CryptoError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum WardenError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("malformed permission \"{0}\": expected resource.action, resource.* or *")]
    MalformedPermission(String),
    #[error("malformed resource name \"{0}\": expected lowercase letters, digits, _ or -")]
    MalformedResource(String),
    #[error("user {user} is not a member of workspace {workspace}")]
    NotAMember { user: String, workspace: String },
    #[error("permission denied: {0} is required")]
    PermissionDenied(String),
    #[error("permission denied: {0} is required, and no pg_warden context is set")]
    PermissionDeniedNoContext(String),
    #[error("column \"{column}\" of {table} does not exist")]
    UndefinedColumn { table: String, column: String },
    #[error("column \"{column}\" of {table} has type {found}; pg_warden needs uuid")]
    ColumnNotUuid {
        table: String,
        column: String,
        found: String,
    },
    #[error("no master key: set warden.master_key_file or warden.master_key_command")]
    MasterKeyNotConfigured,
    #[error("the master key file (warden.master_key_file) does not exist")]
    MasterKeyFileMissing,
    #[error("the master key file (warden.master_key_file) cannot be read: {0}")]
    MasterKeyFileUnreadable(std::io::ErrorKind),
    #[error(
        "the master key file (warden.master_key_file) must be a regular file owned by the \
         server's user with mode 0600 or 0400, not {mode:o}"
    )]
    MasterKeyFileTooPermissive { mode: u32 },
    #[error("the master key file (warden.master_key_file) is not owned by the server's user")]
    MasterKeyFileWrongOwner,
    #[error("the master key from {0} is not 64 hexadecimal characters")]
    MasterKeyMalformed(&'static str),
    #[error("warden.master_key_command failed: {0}")]
    MasterKeyCommandFailed(String),
    #[error("no pg_warden context: call warden.set_context(workspace_id, user_id) first")]
    NoContext,
    #[error("this value was encrypted for workspace {0}, not the acting workspace")]
    WrongWorkspace(String),
    #[error("{0}")]
    NotCiphertext(String),
    #[error("decryption failed: wrong context string, or the ciphertext was tampered with")]
    DecryptionFailed,
    #[error("this ciphertext holds {found}, not {wanted}: use warden.{function}()")]
    WrongPayloadType {
        found: &'static str,
        wanted: &'static str,
        function: &'static str,
    },
    #[error("key version {0} of the acting workspace does not exist")]
    UnknownKeyVersion(u32),
    #[error("workspace {0} was shredded: its data can never be decrypted again")]
    Shredded(String),
    #[error("workspace {0} has no keys yet: its first warden.encrypt() creates them")]
    NoKeysYet(String),
    #[error(
        "a workspace key is wrapped under master key {0}, which is neither the current nor \
         warden.previous_master_key_*: run warden.rewrap_keys() with the previous key configured"
    )]
    WrappedByOtherMasterKey(String),
    #[error(
        "a stored workspace key does not unwrap under the master key: the key table was altered"
    )]
    KeyUnwrapFailed,
    #[error("the decrypted value is not valid text in the database's encoding")]
    NotText,
    #[error(
        "the value is shaped like a pg_warden ciphertext of the acting workspace but does not \
         decrypt with its keys and this context: refused rather than stored unencrypted"
    )]
    EnvelopeNotAuthentic,
    #[error(
        "could not serialize access: the workspace's keys changed concurrently (retry the \
         transaction)"
    )]
    ConcurrentKeyChange,
    #[error("the value is too large to encrypt: {0} bytes")]
    TooLarge(usize),
    #[error("the audit trail is append-only: only warden.purge_audit() deletes from it")]
    AppendOnly,
    #[error(
        "audit entries of this transaction could not be written (an error interrupted them and \
         was caught by a savepoint): the transaction cannot commit"
    )]
    AuditEntriesLost,
    #[error(
        "warden.{0}() cannot run in a transaction that has already written audit entries (they \
         are sealed when it commits): run it in a transaction of its own"
    )]
    AuditRowsUnsealed(&'static str),
    #[error(
        "the audit chain of workspace {workspace} does not verify (first broken row {first}): \
         warden.purge_audit() deletes nothing from a tampered trail"
    )]
    AuditChainBroken { workspace: String, first: i64 },
    #[error(
        "column \"{column}\" of {table}, which its audit redacts or keys rows by, is gone \
         (renamed or dropped): run warden.enable_audit() on the table again"
    )]
    AuditColumnGone { column: String, table: String },
    #[error(
        "\"{0}\" is the name of an action pg_warden records itself (a row change, a denial, a \
         key, membership, role, permission or audit change): name the application's event \
         otherwise"
    )]
    ReservedAction(String),
    #[error("a transaction records at most 2147483647 audit entries")]
    AuditTooManyEntries,
    #[error("{0}() must be attached as an AFTER {1} trigger (warden.enable_audit() does that)")]
    MisattachedTrigger(&'static str, &'static str),
    #[error("warden.ddl_command_end() runs only as pg_warden's event trigger")]
    MisattachedEventTrigger,
    #[error(
        "{0} has audit triggers of its own: warden.disable_audit() it before it becomes a \
         partition of an audited table (the parent's audit, cloned to it, takes over)"
    )]
    PartitionAuditedOnItsOwn(String),
    #[error(
        "warden.audit_id_seq is not to be altered: the audit trail's chains rely on its values \
         being handed out one at a time and in order"
    )]
    AuditSequenceAltered,
    #[error("permission denied, and the denial could not be recorded: {0}")]
    DenialNotRecorded(&'static str),
    #[error("internal error in pg_warden: {0}")]
    Internal(String),
}

impl WardenError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            WardenError::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            WardenError::MalformedPermission(_)
            | WardenError::MalformedResource(_)
            | WardenError::ReservedAction(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            WardenError::NotAMember { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            WardenError::PermissionDenied(_) | WardenError::PermissionDeniedNoContext(_) => {
                ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            WardenError::UndefinedColumn { .. } | WardenError::AuditColumnGone { .. } => {
                ERRCODE_UNDEFINED_COLUMN
            }
            WardenError::ColumnNotUuid { .. } => ERRCODE_DATATYPE_MISMATCH,
            WardenError::MasterKeyNotConfigured => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            WardenError::MasterKeyFileMissing => ERRCODE_UNDEFINED_FILE,
            WardenError::MasterKeyFileUnreadable(_) | WardenError::MasterKeyCommandFailed(_) => {
                ERRCODE_IO_ERROR
            }
            WardenError::MasterKeyFileTooPermissive { .. }
            | WardenError::MasterKeyFileWrongOwner
            | WardenError::MasterKeyMalformed(_) => ERRCODE_CONFIG_FILE_ERROR,
            WardenError::NoContext | WardenError::WrongWorkspace(_) => {
                ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            WardenError::NotCiphertext(_) => ERRCODE_INVALID_BINARY_REPRESENTATION,
            WardenError::DecryptionFailed
            | WardenError::KeyUnwrapFailed
            | WardenError::EnvelopeNotAuthentic => ERRCODE_DATA_CORRUPTED,
            WardenError::WrongPayloadType { .. } => ERRCODE_DATATYPE_MISMATCH,
            WardenError::UnknownKeyVersion(_) => ERRCODE_UNDEFINED_OBJECT,
            WardenError::Shredded(_)
            | WardenError::NoKeysYet(_)
            | WardenError::WrappedByOtherMasterKey(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            WardenError::NotText => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            WardenError::TooLarge(_) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            WardenError::ConcurrentKeyChange => ERRCODE_T_R_SERIALIZATION_FAILURE,
            WardenError::AppendOnly | WardenError::DenialNotRecorded(_) => {
                ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            WardenError::AuditEntriesLost => ERRCODE_TRANSACTION_ROLLBACK,
            WardenError::AuditRowsUnsealed(_) => ERRCODE_ACTIVE_SQL_TRANSACTION,
            WardenError::AuditTooManyEntries => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            WardenError::AuditChainBroken { .. } => ERRCODE_DATA_CORRUPTED,
            WardenError::MisattachedTrigger(..) => ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            WardenError::MisattachedEventTrigger => ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
            WardenError::PartitionAuditedOnItsOwn(_) | WardenError::AuditSequenceAltered => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            WardenError::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
}

impl From<CryptoError> for WardenError {
    fn from(e: CryptoError) -> Self {
        // CryptoError's messages carry no secrets by construction.
        WardenError::Internal(e.to_string())
    }
}

impl From<pgrx::spi::SpiError> for WardenError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        WardenError::Internal(format!("SPI: {e}"))
    }
}

impl From<WardenError> for ErrorReport {
    fn from(e: WardenError) -> Self {
        ErrorReport::new(e.sqlstate(), e.to_string(), "pg_warden")
    }
}

/// What our SQL functions return.
pub type SqlResult<T> = Result<T, ErrorReport>;

/// Raises `e` as a PostgreSQL ERROR. Only for the policy helpers, which
/// run on every row and return plain values: a `SqlResult` moves a
/// 200-byte `ErrorReport`-sized value on every call.
pub fn raise(e: WardenError) -> ! {
    ErrorReport::from(e).report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// A SQL argument that must not be NULL (our functions are not STRICT where
/// a silent NULL result would hide a bug, e.g. a NULL workspace id).
pub fn required<T>(value: Option<T>, name: &'static str) -> Result<T, WardenError> {
    value.ok_or(WardenError::NullArgument(name))
}
