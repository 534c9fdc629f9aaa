//! Context and permissions: `set_context`, `clear_context`, and the policy
//! helpers (`current_*`, `has_level`, `can`, `require`).
//!
//! The helpers read only the verified context (see `context.rs`), never a
//! table, so a policy may call them bare on every row (Citus forbids
//! subqueries in policies). They are STABLE and PARALLEL SAFE: their answer
//! depends only on settings, which parallel workers inherit.

use crate::context::{self, validate_permission, Context};
use crate::error::{raise, required, SqlResult, WardenError};
use crate::gucs::{self, ContextScope};
use pgrx::prelude::*;
use pgrx::Uuid;
use std::rc::Rc;

/// Establishes who acts where: checks that `user_id` is a member of
/// `workspace_id` (a global `super_admin` membership counts everywhere),
/// resolves role, level and permissions once, stores the sealed result in
/// `warden.context` (transaction-local when `is_local`, and always in
/// `warden.context_scope = 'transaction'`), and returns it, so
/// `SET LOCAL warden.context = '<value>'` establishes the same context
/// (that is how a Citus coordinator reaches its workers).
///
/// SECURITY DEFINER because the caller (`warden_user`) may not read
/// memberships; the search_path is pinned and every object qualified.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_context(
    workspace_id: Option<Uuid>,
    user_id: Option<Uuid>,
    is_local: default!(Option<bool>, true),
) -> SqlResult<String> {
    let workspace_id = required(workspace_id, "workspace_id")?;
    let user_id = required(user_id, "user_id")?;
    let is_local =
        required(is_local, "is_local")? || gucs::CONTEXT_SCOPE.get() == ContextScope::Transaction;

    let Some(resolved) = context::resolve(*workspace_id, *user_id)? else {
        return Err(WardenError::NotAMember {
            user: user_id.to_string(),
            workspace: workspace_id.to_string(),
        }
        .into());
    };
    let token = context::seal(*workspace_id, *user_id, resolved)?;
    if is_local && !unsafe { pg_sys::IsTransactionBlock() } {
        pgrx::warning!(
            "warden.set_context() with is_local => true outside a transaction block lasts only \
             for this statement"
        );
    }
    Spi::run_with_args(
        "SELECT pg_catalog.set_config('warden.context', $1, $2)",
        &[token.as_str().into(), is_local.into()],
    )
    .map_err(WardenError::from)?;
    Ok(token)
}

/// Removes the context (session-wide, including a transaction-local one).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn clear_context() -> SqlResult<()> {
    Spi::run("SELECT pg_catalog.set_config('warden.context', '', false)")
        .map_err(WardenError::from)?;
    Ok(())
}

/// The verified context, or NULL; raises only if the master key is unusable.
fn current() -> Option<Rc<Context>> {
    context::current().unwrap_or_else(|e| raise(e))
}

/// The acting workspace, or NULL without a context.
#[pg_extern(stable, parallel_safe)]
fn current_workspace_id() -> Option<Uuid> {
    current().map(|c| Uuid::from_bytes(c.workspace_id))
}

/// The acting user, or NULL without a context.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<Uuid> {
    current().map(|c| Uuid::from_bytes(c.user_id))
}

/// The acting user's role in the acting workspace, or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_role() -> Option<String> {
    current().map(|c| c.role.clone())
}

/// The level of that role, or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_level() -> Option<i32> {
    current().map(|c| c.level)
}

/// Whether the acting role's level is at least `min_level` (false without
/// a context).
#[pg_extern(stable, parallel_safe)]
fn has_level(min_level: Option<i32>) -> bool {
    let min_level = required(min_level, "min_level").unwrap_or_else(|e| raise(e));
    current().is_some_and(|c| c.level >= min_level)
}

/// Whether the acting role holds `permission` (`resource.action`); false
/// without a context.
#[pg_extern(stable, parallel_safe)]
fn can(permission: Option<&str>) -> bool {
    let permission = required(permission, "permission").unwrap_or_else(|e| raise(e));
    let answer = match current() {
        Some(c) => c.check(permission),
        None => validate_permission(permission).map(|()| false),
    };
    answer.unwrap_or_else(|e| raise(e))
}

/// Raises SQLSTATE 42501 unless the acting role holds `permission`.
#[pg_extern(stable, parallel_safe)]
fn require(permission: Option<&str>) -> SqlResult<()> {
    let permission = required(permission, "permission")?;
    match context::current()? {
        Some(c) if c.check(permission)? => Ok(()),
        Some(_) => Err(WardenError::PermissionDenied(permission.to_string()).into()),
        None => {
            validate_permission(permission)?;
            Err(WardenError::PermissionDeniedNoContext(permission.to_string()).into())
        }
    }
}
