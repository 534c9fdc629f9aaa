//! Who is acting in which workspace.
//!
//! `warden.set_context()` checks the membership, resolves role, level and
//! effective permissions once, and stores them in the setting
//! `warden.context` as a token sealed (HMAC-SHA256) with a key derived from
//! the master key. The setting is the source of truth: parallel workers and
//! Citus workers (which receive `SET LOCAL warden.context = '...'`) see the
//! same value, and a client that writes the setting directly can only write
//! a token this cluster sealed, unchanged (a forged or edited value is no
//! context). Backend memory only caches the verified token, keyed by its
//! exact bytes, so the policy helpers cost a byte comparison per call.

use crate::backend::{as_extension_owner, select_one, BackendLocal};
use crate::crypto::{open_token, seal_token};
use crate::error::WardenError;
use crate::gucs::{self, ContextScope};
use crate::keys::master;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::CStr;
use std::rc::Rc;

/// A verified context.
pub struct Context {
    pub workspace_id: [u8; 16],
    pub user_id: [u8; 16],
    pub role: String,
    pub level: i32,
    /// Exact permissions (`resource.action`) held.
    exact: HashSet<String>,
    /// Resources held with every action (`resource.*`).
    whole_resources: HashSet<String>,
    /// `*`: everything.
    everything: bool,
    /// The last permission asked about and the answer: a policy asks the
    /// same question on every row.
    last_answer: RefCell<Option<(String, bool)>>,
}

impl Context {
    fn new(
        workspace_id: [u8; 16],
        user_id: [u8; 16],
        role: String,
        level: i32,
        perms: impl IntoIterator<Item = String>,
    ) -> Context {
        let mut ctx = Context {
            workspace_id,
            user_id,
            role,
            level,
            exact: HashSet::new(),
            whole_resources: HashSet::new(),
            everything: false,
            last_answer: RefCell::new(None),
        };
        for perm in perms {
            if perm == "*" {
                ctx.everything = true;
            } else if let Some(resource) = perm.strip_suffix(".*") {
                ctx.whole_resources.insert(resource.to_string());
            } else {
                ctx.exact.insert(perm);
            }
        }
        ctx
    }

    /// Whether this context holds `permission`, which must be well-formed.
    /// A wildcard argument asks for the wildcard itself: `can('invoices.*')`
    /// needs `invoices.*` or `*`.
    /// Takes the argument's raw bytes: the memo is checked before any
    /// UTF-8 validation (this runs per row in a bare policy).
    pub fn check(&self, permission: &[u8]) -> Result<bool, WardenError> {
        if let Some((last, answer)) = &*self.last_answer.borrow() {
            if last.as_bytes() == permission {
                return Ok(*answer);
            }
        }
        let permission = as_permission(permission)?;
        let answer = self.can(permission);
        *self.last_answer.borrow_mut() = Some((permission.to_string(), answer));
        Ok(answer)
    }

    fn can(&self, permission: &str) -> bool {
        if self.everything || self.exact.contains(permission) {
            return true;
        }
        match permission.split_once('.') {
            Some((resource, _)) => self.whole_resources.contains(resource),
            None => false,
        }
    }
}

/// The token's payload. Field names are short: this travels in every
/// `SET LOCAL` a Citus coordinator sends.
///
/// A token is a credential: it can surface in `pg_stat_statements` or a log
/// when written with `SET LOCAL`. It is bound to the database (by name, which
/// Citus workers share) and to the login role that set it (`session_user`,
/// which `SET ROLE` does not change), so another role that reads it there
/// cannot use it.
#[derive(Serialize, Deserialize)]
struct Payload {
    db: String,
    login: String,
    ws: String,
    user: String,
    role: String,
    level: i32,
    perms: Vec<String>,
}

/// A permission segment: a lowercase letter, then up to 62 lowercase
/// letters, digits, `_` or `-` (the same grammar as the CHECK constraint on
/// `warden.role_permissions`).
fn is_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// `resource.action`, `resource.*` or `*`.
pub fn validate_permission(permission: &str) -> Result<(), WardenError> {
    let ok = permission == "*"
        || permission
            .split_once('.')
            .is_some_and(|(resource, action)| {
                is_segment(resource) && (action == "*" || is_segment(action))
            });
    if ok {
        Ok(())
    } else {
        Err(WardenError::MalformedPermission(permission.to_string()))
    }
}

/// A well-formed permission from raw argument bytes.
pub fn as_permission(bytes: &[u8]) -> Result<&str, WardenError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| WardenError::MalformedPermission(String::from_utf8_lossy(bytes).into()))?;
    validate_permission(text)?;
    Ok(text)
}

/// A resource name for `warden.protect`.
pub fn validate_resource(resource: &str) -> Result<(), WardenError> {
    if is_segment(resource) {
        Ok(())
    } else {
        Err(WardenError::MalformedResource(resource.to_string()))
    }
}

/// A user's role, level and effective permissions in a workspace.
pub struct Resolved {
    role: String,
    level: i32,
    perms: Vec<String>,
}

/// Looks up `user_id`'s membership in `workspace_id` (a global super_admin
/// membership counts everywhere; the highest role wins) and the permissions
/// of every role at or below its level. `None`: not a member. Reads the
/// tables with the current user's rights: callers run as their owner
/// (`set_context` is SECURITY DEFINER; claims switch user).
pub fn resolve(workspace_id: [u8; 16], user_id: [u8; 16]) -> Result<Option<Resolved>, WardenError> {
    let (ws, user) = (
        pgrx::Uuid::from_bytes(workspace_id),
        pgrx::Uuid::from_bytes(user_id),
    );
    let membership = Spi::connect(|client| {
        let rows = client.select(
            "SELECT m.role, r.level
               FROM warden.memberships AS m
               JOIN warden.roles AS r ON r.name OPERATOR(pg_catalog.=) m.role
              WHERE m.user_id OPERATOR(pg_catalog.=) $2
                AND (m.workspace_id OPERATOR(pg_catalog.=) $1 OR m.workspace_id IS NULL)
              ORDER BY r.level DESC
              LIMIT 1",
            None,
            &[ws.into(), user.into()],
        )?;
        if rows.is_empty() {
            return Ok::<_, WardenError>(None);
        }
        match rows.first().get_two::<String, i32>()? {
            (Some(role), Some(level)) => Ok(Some((role, level))),
            _ => Ok(None),
        }
    })?;
    let Some((role, level)) = membership else {
        return Ok(None);
    };
    // A role holds its own permissions and those of every lower level.
    let perms = select_one::<Vec<String>>(
        "SELECT COALESCE(pg_catalog.array_agg(DISTINCT p.permission), '{}')
           FROM warden.role_permissions AS p
           JOIN warden.roles AS r ON r.name OPERATOR(pg_catalog.=) p.role
          WHERE r.level OPERATOR(pg_catalog.<=) $1",
        &[level.into()],
    )?
    .unwrap_or_default();
    Ok(Some(Resolved { role, level, perms }))
}

/// Seals a resolved context for the current database.
pub fn seal(
    workspace_id: [u8; 16],
    user_id: [u8; 16],
    resolved: Resolved,
) -> Result<String, WardenError> {
    let (db, login) = session_identity();
    let payload = Payload {
        db,
        login,
        ws: hex::encode(workspace_id),
        user: hex::encode(user_id),
        role: resolved.role,
        level: resolved.level,
        perms: resolved.perms,
    };
    let json = serde_json::to_vec(&payload).map_err(|e| WardenError::Internal(e.to_string()))?;
    Ok(seal_token(&master::current()?.seal, &json))
}

/// Verifies a token; `None` for anything this cluster did not seal for this
/// database. Errors only when the master key itself cannot be had.
fn verify(token: &[u8]) -> Result<Option<Context>, WardenError> {
    let keys = master::current()?;
    let Some(json) = std::str::from_utf8(token)
        .ok()
        .and_then(|t| open_token(&keys.seal, t).ok())
    else {
        return Ok(None);
    };
    let Ok(p) = serde_json::from_slice::<Payload>(&json) else {
        return Ok(None);
    };
    if (p.db, p.login) != session_identity() {
        return Ok(None);
    }
    let (Some(workspace_id), Some(user_id)) = (uuid_from_hex(&p.ws), uuid_from_hex(&p.user)) else {
        return Ok(None);
    };
    let ctx = Context::new(workspace_id, user_id, p.role, p.level, p.perms);
    Ok(Some(ctx))
}

/// (current database, session user) by name.
fn session_identity() -> (String, String) {
    // SAFETY: catalog lookups by OID of this backend's own database and
    // session user; both return palloc'd strings or NULL.
    unsafe {
        let name = |ptr: *mut std::ffi::c_char| {
            if ptr.is_null() {
                String::new()
            } else {
                CStr::from_ptr(ptr).to_string_lossy().into_owned()
            }
        };
        (
            name(pg_sys::get_database_name(pg_sys::MyDatabaseId)),
            name(pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), true)),
        )
    }
}

/// A UUID from 32 hexadecimal characters (the token and worker encoding).
pub fn uuid_from_hex(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok().map(|_| out)
}

/// The raw bytes of `warden.context`, without the copy `GucSetting::get`
/// makes (this runs on every policy call).
fn with_raw_setting<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    // SAFETY: the GUC machinery owns the string and keeps it valid until
    // the setting is next assigned, which cannot happen inside `f` (it only
    // reads our cache).
    unsafe {
        let ptr = *gucs::CONTEXT.as_ptr();
        if ptr.is_null() {
            f(&[])
        } else {
            f(CStr::from_ptr(ptr).to_bytes())
        }
    }
}

/// The last token seen and what it verified to (`None`: no context).
struct Verified {
    /// `ASSIGNMENTS` when this was last checked against the setting.
    generation: u64,
    token: Vec<u8>,
    context: Option<Rc<Context>>,
}

static CACHE: BackendLocal<RefCell<Option<Verified>>> = BackendLocal::new(RefCell::new(None));
/// Counts assignments to `warden.context` in this backend (SET, SET
/// LOCAL, RESET, end-of-transaction restores, parallel worker start-up:
/// PostgreSQL calls the assign hook for each). While it is unchanged,
/// the setting is the string the cache was checked against, so the
/// policy helpers skip even the byte comparison.
static ASSIGNMENTS: BackendLocal<Cell<u64>> = BackendLocal::new(Cell::new(0));

/// Assign hook of `warden.context` (registered in `gucs.rs`).
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn context_assigned(
    newval: *const std::ffi::c_char,
    _extra: *mut std::ffi::c_void,
) {
    ASSIGNMENTS.set(ASSIGNMENTS.get().wrapping_add(1));
    // No context any more (cleared, RESET, DISCARD ALL): no cached keys.
    // SAFETY: newval is NULL or the new NUL-terminated value.
    if newval.is_null() || unsafe { *newval } == 0 {
        crate::keys::workspace::forget_all();
    }
}

/// The acting context, or `None` when there is none (unset, cleared,
/// forged, or set in another database; with `warden.trust_jwt_claims`, the
/// claims' user is not a member of their workspace).
pub fn current() -> Result<Option<Rc<Context>>, WardenError> {
    enum Seen {
        Unset,
        Cached(Option<Rc<Context>>),
        New,
    }
    let generation = ASSIGNMENTS.get();
    let fast = CACHE
        .borrow()
        .as_ref()
        .filter(|v| v.generation == generation)
        .map(|v| v.context.clone());
    if let Some(Some(ctx)) = fast {
        return Ok(Some(ctx));
    }
    let seen = with_raw_setting(|raw| {
        if raw.is_empty() {
            return Seen::Unset;
        }
        match &mut *CACHE.borrow_mut() {
            Some(v) if v.token == raw => {
                v.generation = generation;
                Seen::Cached(v.context.clone())
            }
            _ => Seen::New,
        }
    });
    match seen {
        Seen::Unset if gucs::TRUST_JWT_CLAIMS.get() => from_claims(),
        Seen::Unset => Ok(None),
        Seen::Cached(ctx) => Ok(ctx),
        Seen::New => {
            let token = with_raw_setting(|raw| raw.to_vec());
            let context = verify(&token)?.map(Rc::new);
            // Another workspace acts now: drop the previous one's keys.
            let acting = |v: &Verified| v.context.as_ref().map(|c| c.workspace_id);
            let previous = CACHE.borrow().as_ref().and_then(acting);
            if previous.is_some() && previous != context.as_ref().map(|c| c.workspace_id) {
                crate::keys::workspace::forget_all();
            }
            *CACHE.borrow_mut() = Some(Verified {
                generation,
                token,
                context: context.clone(),
            });
            Ok(context)
        }
    }
}

/// Calls `f` with the acting context, borrowed from the cache when the
/// setting has not been assigned since it was verified (no reference count
/// traffic: the bare policy helpers run this per row).
pub fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> Result<R, WardenError> {
    {
        let cache = CACHE.borrow();
        let fresh = cache.as_ref().filter(|v| v.generation == ASSIGNMENTS.get());
        if let Some(ctx) = fresh.and_then(|v| v.context.as_deref()) {
            return Ok(f(Some(ctx)));
        }
    }
    let ctx = current()?;
    Ok(f(ctx.as_deref()))
}

/// Calls `f` with the acting context as [`with_current`] does, and says
/// whether the answer may be memoized until the setting is next assigned:
/// `Some(generation)` when the context came from `warden.context` (which
/// only an assignment changes), `None` when there is no verified context
/// (e.g. PostgREST claims, which change without our assign hook seeing it).
pub fn with_current_memo<R>(
    f: impl FnOnce(Option<&Context>) -> R,
) -> Result<(R, Option<u64>), WardenError> {
    let answer = with_current(f)?;
    let generation = ASSIGNMENTS.get();
    let cache = CACHE.borrow();
    let memo = cache
        .as_ref()
        .filter(|v| v.generation == generation && v.context.is_some())
        .map(|_| generation);
    Ok((answer, memo))
}

/// Whether a memo taken at `generation` (see [`with_current_memo`]) still
/// holds: the setting has not been assigned since. One load and compare,
/// for the bare policy helpers' per-row path.
#[inline]
pub fn memo_holds(generation: u64) -> bool {
    ASSIGNMENTS.get() == generation
}

/// The workspace the last resolved claims named (kept across transactions:
/// it decides when cached keys belong to another tenant).
static LAST_CLAIMED_WORKSPACE: BackendLocal<Cell<Option<[u8; 16]>>> =
    BackendLocal::new(Cell::new(None));

/// Claims resolved in this transaction (cleared at its end).
static CLAIMS: BackendLocal<RefCell<Option<Verified>>> = BackendLocal::new(RefCell::new(None));

/// The context PostgREST's `request.jwt.claims` describe: the user from
/// `sub`, the workspace from the claim named by `warden.jwt_workspace_claim`,
/// checked against the memberships once per transaction (the claims of a
/// request do not change within it, but memberships may between requests).
fn from_claims() -> Result<Option<Rc<Context>>, WardenError> {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC
    // machinery, valid until the setting changes; we copy it at once.
    let claims = unsafe {
        let ptr = pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false);
        if ptr.is_null() {
            return Ok(None);
        }
        CStr::from_ptr(ptr).to_bytes().to_vec()
    };
    if claims.is_empty() {
        return Ok(None);
    }
    let cached = CLAIMS
        .borrow()
        .as_ref()
        .filter(|v| v.token == claims)
        .map(|v| v.context.clone());
    if let Some(ctx) = cached {
        return Ok(ctx);
    }
    let ctx = match claimed_ids(&claims) {
        Some((workspace_id, user_id)) => as_extension_owner(|| resolve(workspace_id, user_id))?
            .map(|r| {
                Rc::new(Context::new(
                    workspace_id,
                    user_id,
                    r.role,
                    r.level,
                    r.perms,
                ))
            }),
        None => None,
    };
    // Another workspace acts now (a pooled connection serves request after
    // request): drop the previous one's keys, as set_context does.
    let acting = ctx.as_ref().map(|c| c.workspace_id);
    let previous = LAST_CLAIMED_WORKSPACE.replace(acting);
    if previous.is_some() && previous != acting {
        crate::keys::workspace::forget_all();
    }
    *CLAIMS.borrow_mut() = Some(Verified {
        generation: 0,
        token: claims,
        context: ctx.clone(),
    });
    Ok(ctx)
}

/// (workspace, user) from the claims JSON; `None` if either is missing or
/// not a UUID (no context, never an error: policies call this per query).
fn claimed_ids(claims: &[u8]) -> Option<([u8; 16], [u8; 16])> {
    let claims: serde_json::Value = serde_json::from_slice(claims).ok()?;
    let claim_name = gucs::JWT_WORKSPACE_CLAIM.get()?;
    let workspace = claims.get(claim_name.to_str().ok()?)?.as_str()?;
    let user = claims.get("sub")?.as_str()?;
    Some((parse_uuid(workspace)?, parse_uuid(user)?))
}

/// A UUID in its canonical 8-4-4-4-12 hexadecimal form.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths != [8, 4, 4, 4, 12] {
        return None;
    }
    uuid_from_hex(&groups.concat())
}

/// Registers the end-of-transaction hook that enforces
/// `warden.context_scope = 'transaction'`.
pub fn init() {
    // SAFETY: called once from _PG_init; the callbacks are plain functions.
    unsafe {
        pg_sys::RegisterXactCallback(Some(end_of_transaction), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(end_of_subtransaction), std::ptr::null_mut());
    }
}

/// A rolled-back savepoint may have cached keys it created, and took its
/// audit entries with it.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn end_of_subtransaction(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        crate::keys::workspace::forget_all();
        crate::audit::forget_subtransaction(my);
    }
}

/// In `'transaction'` scope, a context must not outlive the transaction that
/// set it, whatever the client does: `SET LOCAL` values end with the
/// transaction anyway, and the session-level value (a plain `SET`,
/// `set_config(..., false)`, or one hidden under a `SET LOCAL`) is set to
/// empty just before every commit. So a pooled connection never hands a
/// context to the next transaction.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn end_of_transaction(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    // A parallel worker ends a transaction of its own after restoring the
    // leader's settings: that is not the end of the leader's.
    // SAFETY: ParallelWorkerNumber is a plain backend global.
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return;
    }
    // A rolled-back transaction may have cached keys it created, and
    // leaves no audit entries to seal.
    if event == XACT_EVENT_ABORT {
        crate::keys::workspace::forget_all();
        crate::audit::forget_pending();
    }
    // A prepared transaction may still roll back, with any block it made.
    if event == XACT_EVENT_PREPARE {
        crate::audit::forget_pending();
    }
    // Claims are resolved once per transaction.
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE
    ) {
        *CLAIMS.borrow_mut() = None;
    }
    let ending = event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE;
    if ending {
        // Seal this transaction's audit entries into their chains.
        crate::audit::seal_transaction(event == XACT_EVENT_PRE_COMMIT)
            .unwrap_or_else(|e| crate::error::raise(e));
    }
    if ending && gucs::CONTEXT_SCOPE.get() == ContextScope::Transaction {
        clear_session_value();
    }
}

/// Sets the session-level value of `warden.context` to empty.
fn clear_session_value() {
    // SAFETY: a user setting set at session level while a transaction is
    // in progress; its hooks only touch our own state.
    unsafe {
        pg_sys::SetConfigOption(
            c"warden.context".as_ptr(),
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
}

/// Loaded on demand in `'transaction'` scope, we were not there to police
/// what was set before: a context written earlier (as a placeholder) is
/// dropped, failing closed. Preloading avoids this (see the README).
pub fn on_load() {
    // SAFETY: a plain backend global.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if !preloading
        && gucs::CONTEXT_SCOPE.get() == ContextScope::Transaction
        && !with_raw_setting(|raw| raw.is_empty())
    {
        clear_session_value();
    }
}

/// Check hook of `warden.context`: only a session may set it (`SET`,
/// `SET LOCAL`, `set_config`, `warden.set_context`). A default from
/// `ALTER ROLE/DATABASE ... SET`, the server configuration or connection
/// options would come back at every `RESET` or `DISCARD ALL`. The value is
/// never echoed in the error.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn context_check(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: newval points to the proposed value (NULL or a C string).
    let empty = unsafe { (*newval).is_null() || **newval == 0 };
    if empty || source == pg_sys::GucSource::PGC_S_SESSION {
        return true;
    }
    // SAFETY: the documented way for a check hook to word its error; the
    // message is copied into the current memory context.
    unsafe {
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
            c"warden.context can only be set in a session (warden.set_context), not as a default"
                .as_ptr(),
        );
    }
    false
}
