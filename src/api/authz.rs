//! Context and permissions: `set_context`, `clear_context`, and the policy
//! helpers (`current_*`, `has_level`, `can`, `require`).
//!
//! The helpers read only the verified context (see `context.rs`), never a
//! table, so a policy may call them bare on every row (Citus forbids
//! subqueries in policies). They are STABLE and PARALLEL SAFE: their answer
//! depends only on settings, which parallel workers inherit.

use super::fmgr;
use crate::audit;
use crate::context::{self, as_permission, validate_permission, Context};
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

/// Raises SQLSTATE 42501 unless the acting role holds `permission`, and
/// records the denial in the audit trail so that it outlives the denied
/// transaction (VOLATILE and PARALLEL UNSAFE for that write).
#[pg_extern(volatile, parallel_unsafe)]
fn require(permission: Option<&str>) -> SqlResult<()> {
    let permission = required(permission, "permission")?;
    let context = context::current()?;
    let denied = match &context {
        Some(c) if c.check(permission.as_bytes())? => return Ok(()),
        Some(_) => WardenError::PermissionDenied(permission.to_string()),
        None => {
            validate_permission(permission)?;
            WardenError::PermissionDeniedNoContext(permission.to_string())
        }
    };
    audit::record_denial(
        permission,
        context.as_ref().map(|c| c.workspace_id),
        context.as_ref().map(|c| c.user_id),
    )?;
    Err(denied.into())
}

// The helpers a bare policy calls on every row (isolate's
// current_workspace_id, protect's can, isolate_user's current_user_id) are
// plain V1 functions (see `fmgr.rs`), declared in `sql/helpers.sql`.

// Each is an unguarded entry point that answers from the call site's memo
// (plain loads that cannot panic or raise, see `memo_of`) and otherwise
// calls a `#[pg_guard]`ed function, where a panic or a raised error becomes
// a PostgreSQL ERROR.

/// `warden.current_workspace_id() RETURNS uuid`: the acting workspace, or
/// NULL without a context.
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_current_workspace_id(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's, from the function manager; the memo of
    // this function is a Memo<[u8; 16]>.
    unsafe {
        match memo_of::<[u8; 16]>(fcinfo) {
            Some(memo) => pg_sys::Datum::from(&raw const (*memo).value),
            None => current_workspace_id_guarded(fcinfo),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn current_workspace_id_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's.
    unsafe { uuid_helper(fcinfo, |c| c.workspace_id) }
}

/// `warden.current_user_id() RETURNS uuid`: the acting user, or NULL.
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_current_user_id(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: as above.
    unsafe {
        match memo_of::<[u8; 16]>(fcinfo) {
            Some(memo) => pg_sys::Datum::from(&raw const (*memo).value),
            None => current_user_id_guarded(fcinfo),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn current_user_id_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's.
    unsafe { uuid_helper(fcinfo, |c| c.user_id) }
}

/// `warden.can(permission text) RETURNS boolean`: whether the acting role
/// holds `permission` (`resource.action`); false without a context.
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_can(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's; the memo of this function is a
    // Memo<bool>, taken for this call site's constant argument.
    unsafe {
        match memo_of::<bool>(fcinfo) {
            Some(memo) => pg_sys::Datum::from((*memo).value),
            None => can_guarded(fcinfo),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn can_guarded(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: declared with one text argument.
    let Some(permission) = (unsafe { fmgr::varlena_arg(fcinfo, 0) }) else {
        raise(WardenError::NullArgument("permission"));
    };
    let (answer, generation) = context::with_current_memo(|c| match c {
        Some(c) => c.check(permission),
        None => as_permission(permission).map(|_| false),
    })
    .unwrap_or_else(|e| raise(e));
    let answer = answer.unwrap_or_else(|e| raise(e));
    // Memoize per call site only when the argument is a constant in the
    // expression, as in every generated policy. (Not "stable": a PL/pgSQL
    // variable is a stable parameter within one evaluation, but the
    // expression, with its fn_extra, is evaluated again with other values.)
    // SAFETY: as above; the memo lives in fn_mcxt, as long as fn_extra.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if let Some(generation) = generation {
            if !flinfo.is_null() && first_arg_is_const(flinfo) {
                let mut memo = (*flinfo).fn_extra.cast::<Memo<bool>>();
                if memo.is_null() {
                    memo = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<Memo<bool>>())
                        .cast();
                    (*flinfo).fn_extra = memo.cast();
                }
                memo.write(Memo {
                    generation,
                    value: answer,
                });
            }
        }
    }
    pg_sys::Datum::from(answer)
}

/// A helper's answer at one call site (`fn_extra`), valid while the
/// context setting keeps the generation it was taken at (see
/// `context::with_current_memo`): a bare policy calls the helpers once per
/// row, and this makes every call after the first a load and a compare.
#[repr(C)]
struct Memo<T> {
    generation: u64,
    value: T,
}

/// The call site's memo if it still holds. Only loads and a compare: it
/// cannot panic or raise, so it runs before any guard.
///
/// # Safety
/// `fcinfo` is the current call's, and its `fn_extra` is NULL or a
/// `Memo<T>` (each helper stores only its own type there).
#[inline(always)]
unsafe fn memo_of<T>(fcinfo: pg_sys::FunctionCallInfo) -> Option<*const Memo<T>> {
    // SAFETY: see the function's contract (a C caller may pass no flinfo).
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if flinfo.is_null() {
            return None;
        }
        let memo = (*flinfo).fn_extra.cast::<Memo<T>>();
        (!memo.is_null() && context::memo_holds((*memo).generation)).then_some(memo.cast_const())
    }
}

/// Whether the call's first argument is a literal constant in the calling
/// expression (`warden.can('invoices.read')`).
///
/// # Safety
/// `flinfo` is the current call's, not NULL.
unsafe fn first_arg_is_const(flinfo: *mut pg_sys::FmgrInfo) -> bool {
    // SAFETY: fn_expr is NULL or the calling expression node; a FuncExpr's
    // args is NULL or a List of expression nodes.
    unsafe {
        let expr = (*flinfo).fn_expr;
        if expr.is_null() || (*expr).type_ != pg_sys::NodeTag::T_FuncExpr {
            return false;
        }
        let args = (*expr.cast::<pg_sys::FuncExpr>()).args;
        if args.is_null() || (*args).length < 1 {
            return false;
        }
        let first = (*(*args).elements).ptr_value.cast::<pg_sys::Node>();
        !first.is_null() && (*first).type_ == pg_sys::NodeTag::T_Const
    }
}

/// `current_workspace_id` / `current_user_id`: a uuid or NULL. The 16
/// bytes live in the call site's memo (`fn_extra`, allocated in `fn_mcxt`,
/// which lasts as long as the query's use of this call site) and are
/// returned by reference: results are read or copied by the executor,
/// never freed, and a changed value gets a fresh memo, so an earlier
/// result is never overwritten.
unsafe fn uuid_helper(
    fcinfo: pg_sys::FunctionCallInfo,
    field: impl FnOnce(&Context) -> [u8; 16],
) -> pg_sys::Datum {
    // SAFETY: fcinfo and its flinfo are the call's; fn_extra is ours alone
    // and, when set, a Memo<[u8; 16]>.
    unsafe {
        let (value, generation) =
            context::with_current_memo(|c| c.map(field)).unwrap_or_else(|e| raise(e));
        let Some(bytes) = value else {
            return fmgr::return_null(fcinfo);
        };
        let flinfo = (*fcinfo).flinfo;
        if flinfo.is_null() {
            // A C caller without flinfo: a plain copy in its memory context.
            let out = pg_sys::palloc(16).cast::<[u8; 16]>();
            out.write(bytes);
            return pg_sys::Datum::from(out);
        }
        let memo = (*flinfo).fn_extra.cast::<Memo<[u8; 16]>>();
        // Without a memo-able context, the generation can never hold.
        let generation = generation.unwrap_or(u64::MAX);
        if !memo.is_null() && (*memo).value == bytes {
            (*memo).generation = generation;
            return pg_sys::Datum::from(&raw const (*memo).value);
        }
        let fresh = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<Memo<[u8; 16]>>())
            .cast::<Memo<[u8; 16]>>();
        fresh.write(Memo {
            generation,
            value: bytes,
        });
        (*flinfo).fn_extra = fresh.cast();
        pg_sys::Datum::from(&raw const (*fresh).value)
    }
}

fmgr::v1_function_info!(
    pg_finfo_warden_current_workspace_id,
    pg_finfo_warden_current_user_id,
    pg_finfo_warden_can
);
