//! Every setting pg_warden reads, registered in one place.
//!
//! Trust roots (where the master key comes from, whether JWT claims are
//! believed, how long a context lives) are superuser-only: a client that can
//! run arbitrary SQL must not be able to move them. The context itself is an
//! ordinary user setting, because `SET LOCAL warden.context = '<sealed>'` is
//! how it reaches parallel and Citus workers; it is sealed with a key only
//! the extension can read, so writing it directly forges nothing.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;

/// How long a context set with `warden.set_context(..., is_local => false)`
/// may live.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ContextScope {
    /// A session context lives until cleared, reset or `DISCARD ALL`.
    #[name = c"session"]
    Session,
    /// Every context dies with the transaction that set it (PgBouncer
    /// transaction pooling).
    #[name = c"transaction"]
    Transaction,
}

/// How the policy generators call the helpers.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum PolicyCalls {
    /// `bare` where the citus extension is installed, else `initplan`.
    #[name = c"auto"]
    Auto,
    /// `(SELECT warden.current_workspace_id())`: evaluated once per query.
    #[name = c"initplan"]
    InitPlan,
    /// `warden.current_workspace_id()`: per row (Citus forbids subqueries
    /// in policies on distributed tables).
    #[name = c"bare"]
    Bare,
}

pub static MASTER_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static PREVIOUS_MASTER_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static PREVIOUS_MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static CONTEXT_SCOPE: GucSetting<ContextScope> =
    GucSetting::<ContextScope>::new(ContextScope::Session);
pub static TRUST_JWT_CLAIMS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static JWT_WORKSPACE_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"workspace_id"));
pub static POLICY_CALLS: GucSetting<PolicyCalls> =
    GucSetting::<PolicyCalls>::new(PolicyCalls::Auto);
pub static CONTEXT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Registers every setting. Called from `_PG_init`, in the postmaster when
/// preloaded, otherwise in the backend that first loads the library.
pub fn init() {
    // Key sources: only the server configuration (reload) may set them, and
    // only superusers may even read where the key lives.
    let key_source = GucFlags::SUPERUSER_ONLY;
    GucRegistry::define_string_guc(
        c"warden.master_key_file",
        c"File holding the 64-hex-character master key (owned by the server user, mode 0600 or 0400).",
        c"Read by each backend on first use and again after a configuration reload.",
        &MASTER_KEY_FILE,
        GucContext::Sighup,
        key_source,
    );
    GucRegistry::define_string_guc(
        c"warden.master_key_command",
        c"Command whose standard output is the 64-hex-character master key (KMS / Vault integration).",
        c"Used when warden.master_key_file is not set. Run by each backend on first use and again after a reload.",
        &MASTER_KEY_COMMAND,
        GucContext::Sighup,
        key_source,
    );
    GucRegistry::define_string_guc(
        c"warden.previous_master_key_file",
        c"Master key file that wrapped the data keys before a master key rotation.",
        c"Read only by warden.rewrap_keys().",
        &PREVIOUS_MASTER_KEY_FILE,
        GucContext::Sighup,
        key_source,
    );
    GucRegistry::define_string_guc(
        c"warden.previous_master_key_command",
        c"Command printing the master key that wrapped the data keys before a rotation.",
        c"Read only by warden.rewrap_keys().",
        &PREVIOUS_MASTER_KEY_COMMAND,
        GucContext::Sighup,
        key_source,
    );
    GucRegistry::define_enum_guc(
        c"warden.context_scope",
        c"'session' (default) or 'transaction': in 'transaction' mode a context never outlives the transaction that set it.",
        c"Set per role or database (superuser only) for PgBouncer transaction pooling.",
        &CONTEXT_SCOPE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"warden.trust_jwt_claims",
        c"Take the context from PostgREST's request.jwt.claims when no context is set.",
        c"Only for deployments where clients cannot run arbitrary SQL (PostgREST).",
        &TRUST_JWT_CLAIMS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"warden.jwt_workspace_claim",
        c"Name of the JWT claim that holds the workspace id.",
        c"Used when warden.trust_jwt_claims is on.",
        &JWT_WORKSPACE_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"warden.policy_calls",
        c"How warden.isolate/protect/isolate_user call the helpers: 'auto', 'initplan' or 'bare'.",
        c"'initplan' wraps them as (SELECT ...), evaluated once per query; 'bare' calls them per row, as Citus requires; 'auto' is 'bare' where the citus extension is installed.",
        &POLICY_CALLS,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: the hooks only read their arguments and touch our own state.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"warden.context",
            c"The sealed acting context, as returned by warden.set_context().",
            c"Written by warden.set_context(); a value not sealed by this cluster's master key is no context.",
            &CONTEXT,
            GucContext::Userset,
            GucFlags::default(),
            Some(crate::context::context_check),
            Some(crate::context::context_assigned),
            None,
        );
    }
}
