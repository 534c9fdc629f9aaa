//! Policy generators: `isolate`, `protect`, `isolate_user`.
//!
//! Each enables and forces row level security (so the table owner is not
//! exempt) and (re)creates its policies by name, so a migration may run it
//! twice. Identifiers are quoted by PostgreSQL (`regclass` output and
//! `quote_ident`); permission strings are validated and quoted as literals.
//!
//! They run with the caller's rights (SECURITY INVOKER): only a table's
//! owner can change its policies, so they are safe to leave executable by
//! PUBLIC, and a migration role needs nothing from pg_warden to use them.
//! Their search_path is still pinned to `pg_catalog, pg_temp`, so objects
//! someone planted earlier on the caller's path cannot change what the
//! generated policies mean (operators in a policy are bound when it is
//! created), and the table name always comes out schema-qualified.
//!
//! Policy calls: by default the helpers are wrapped as
//! `(SELECT warden.current_workspace_id())`, which the planner evaluates
//! once per query (an initPlan). Citus refuses subqueries in policies on
//! distributed tables, so with `warden.policy_calls = 'bare'` (or `'auto'`,
//! the default, in a database where the citus extension is installed) the
//! helpers are called bare; they are cheap enough for that.

use crate::context::{validate_permission, validate_resource};
use crate::error::{required, SqlResult, WardenError};
use crate::gucs::{self, PolicyCalls};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::prelude::*;
use std::ffi::CStr;

/// An SQL `name` argument (a column name).
pub struct SqlName(String);

impl FromDatum for SqlName {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a `name` datum points to a NUL-terminated NameData.
        let name = unsafe { CStr::from_ptr(datum.cast_mut_ptr::<std::ffi::c_char>()) };
        Some(SqlName(name.to_string_lossy().into_owned()))
    }
}

// SAFETY: unboxed through FromDatum like pgrx's own by-reference types.
unsafe impl<'fcx> ArgAbi<'fcx> for SqlName {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(SqlName, arg_only = "name");

/// A SQL `regclass` argument, kept as the bare OID. (pgrx's `PgRelation`
/// keeps the relation open, and ALTER TABLE refuses a table that is open in
/// the same session.)
pub struct Table(pg_sys::Oid);

impl Table {
    pub fn oid(&self) -> pg_sys::Oid {
        self.0
    }
}

impl FromDatum for Table {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regclass datum is an OID.
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, typoid) }.map(Table)
    }
}

// SAFETY: unboxed through FromDatum like pgrx's own by-value types.
unsafe impl<'fcx> ArgAbi<'fcx> for Table {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(Table, arg_only = "regclass");

/// The table's name as SQL text (`regclass` output: qualified when not on
/// the search_path, and quoted as needed).
pub(crate) fn table_sql(tbl: &Table) -> Result<String, WardenError> {
    Spi::get_one_with_args::<String>(
        "SELECT $1::pg_catalog.regclass::pg_catalog.text",
        &[tbl.0.into()],
    )?
    .ok_or_else(|| WardenError::Internal("regclass output is NULL".into()))
}

/// The type of a column of the table (`format_type`), or `None` if it has
/// no such column.
pub(crate) fn column_type(tbl: &Table, column: &str) -> Result<Option<String>, WardenError> {
    Ok(Spi::get_one_with_args::<String>(
        "SELECT (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
                   FROM pg_catalog.pg_attribute AS a
                  WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0
                    AND NOT a.attisdropped)",
        &[tbl.0.into(), column.into()],
    )?)
}

/// Checks that `column` exists on the table and is a uuid; returns it quoted.
fn uuid_column_sql(tbl: &Table, table: &str, column: &str) -> Result<String, WardenError> {
    match column_type(tbl, column)?.as_deref() {
        None => Err(WardenError::UndefinedColumn {
            table: table.into(),
            column: column.into(),
        }),
        Some("uuid") => quote_ident(column),
        Some(other) => Err(WardenError::ColumnNotUuid {
            table: table.into(),
            column: column.into(),
            found: other.into(),
        }),
    }
}

pub(crate) fn quote_ident(ident: &str) -> Result<String, WardenError> {
    Spi::get_one_with_args::<String>("SELECT pg_catalog.quote_ident($1)", &[ident.into()])?
        .ok_or_else(|| WardenError::Internal("quote_ident returned NULL".into()))
}

fn quote_literal(text: &str) -> Result<String, WardenError> {
    Spi::get_one_with_args::<String>("SELECT pg_catalog.quote_literal($1)", &[text.into()])?
        .ok_or_else(|| WardenError::Internal("quote_literal returned NULL".into()))
}

/// A helper call as a policy expression: `(SELECT f)` or bare `f`.
fn call(function_call: &str) -> Result<String, WardenError> {
    let bare = match gucs::POLICY_CALLS.get() {
        PolicyCalls::Bare => true,
        PolicyCalls::InitPlan => false,
        PolicyCalls::Auto => Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus')",
        )?
        .unwrap_or(false),
    };
    Ok(if bare {
        function_call.to_string()
    } else {
        format!("(SELECT {function_call})")
    })
}

/// One policy, dropped first if it exists (so re-running replaces it).
struct Policy<'a> {
    name: &'a str,
    command: &'a str,
    restrictive: bool,
    using: Option<String>,
    check: Option<String>,
}

/// The table and, for a partitioned or inheritance parent, every table
/// below it (partitions of partitions included), as (OID, SQL name): a
/// partition queried directly is checked against its own policies, not
/// its parent's. (Foreign partitions can have no policies: left out, with
/// a warning.)
fn table_and_descendants(
    tbl: &Table,
    table: &str,
) -> Result<Vec<(pg_sys::Oid, String)>, WardenError> {
    let mut out = vec![(tbl.0, table.to_string())];
    for edge in super::descendants::edges_below(tbl.0)? {
        if out.iter().any(|(oid, _)| *oid == edge.child) {
            continue;
        }
        if let Some(child) = super::descendants::relation(edge.child)? {
            if child.can_have_policies() {
                out.push((edge.child, child.name));
            } else {
                super::descendants::warn_no_policies(&child.name);
            }
        }
    }
    Ok(out)
}

fn apply(tbl: &Table, table: &str, policies: &[Policy]) -> Result<(), WardenError> {
    let mut ddl = String::new();
    for (oid, table) in table_and_descendants(tbl, table)? {
        apply_to(oid, &table, policies, &mut ddl)?;
    }
    Spi::run(&ddl)?;
    Ok(())
}

fn apply_to(
    oid: pg_sys::Oid,
    table: &str,
    policies: &[Policy],
    ddl: &mut String,
) -> Result<(), WardenError> {
    ddl.push_str(&format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n"
    ));
    for p in policies {
        let name = quote_ident(p.name)?;
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polrelid = $1 AND polname = $2)",
            &[oid.into(), p.name.into()],
        )?
        .unwrap_or(false);
        if exists {
            ddl.push_str(&format!("DROP POLICY {name} ON {table};\n"));
        }
        ddl.push_str(&format!(
            "CREATE POLICY {name} ON {table} AS {} FOR {}",
            if p.restrictive {
                "RESTRICTIVE"
            } else {
                "PERMISSIVE"
            },
            p.command
        ));
        if let Some(using) = &p.using {
            ddl.push_str(&format!(" USING ({using})"));
        }
        if let Some(check) = &p.check {
            ddl.push_str(&format!(" WITH CHECK ({check})"));
        }
        ddl.push_str(";\n");
    }
    Ok(())
}

/// Tenant isolation: rows are visible and writable only in the acting
/// workspace, and cannot be written or moved into another one.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn isolate(
    tbl: Option<Table>,
    workspace_column: default!(Option<SqlName>, "'workspace_id'"),
) -> SqlResult<()> {
    let tbl = required(tbl, "tbl")?;
    let column = required(workspace_column, "workspace_column")?;
    let table = table_sql(&tbl)?;
    let col = uuid_column_sql(&tbl, &table, &column.0)?;
    let mine = format!("{col} = {}", call("warden.current_workspace_id()")?);
    apply(
        &tbl,
        &table,
        &[
            Policy {
                name: "warden_isolate_select",
                command: "SELECT",
                restrictive: false,
                using: Some(mine.clone()),
                check: None,
            },
            Policy {
                name: "warden_isolate_insert",
                command: "INSERT",
                restrictive: false,
                using: None,
                check: Some(mine.clone()),
            },
            Policy {
                name: "warden_isolate_update",
                command: "UPDATE",
                restrictive: false,
                using: Some(mine.clone()),
                check: Some(mine.clone()),
            },
            Policy {
                name: "warden_isolate_delete",
                command: "DELETE",
                restrictive: false,
                using: Some(mine),
                check: None,
            },
        ],
    )?;
    Ok(())
}

/// Permissions: restrictive policies requiring `resource.read` to see rows,
/// `resource.create` to insert, `resource.update` to update and
/// `resource.delete` to delete. Layer it on `isolate` (restrictive policies
/// alone admit nothing).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn protect(tbl: Option<Table>, resource: Option<&str>) -> SqlResult<()> {
    let tbl = required(tbl, "tbl")?;
    let resource = required(resource, "resource")?;
    validate_resource(resource)?;
    let table = table_sql(&tbl)?;
    let can = |action: &str| -> Result<String, WardenError> {
        let permission = format!("{resource}.{action}");
        validate_permission(&permission)?;
        call(&format!("warden.can({})", quote_literal(&permission)?))
    };
    apply(
        &tbl,
        &table,
        &[
            Policy {
                name: "warden_protect_select",
                command: "SELECT",
                restrictive: true,
                using: Some(can("read")?),
                check: None,
            },
            Policy {
                name: "warden_protect_insert",
                command: "INSERT",
                restrictive: true,
                using: None,
                check: Some(can("create")?),
            },
            Policy {
                name: "warden_protect_update",
                command: "UPDATE",
                restrictive: true,
                using: Some(can("update")?),
                check: None,
            },
            Policy {
                name: "warden_protect_delete",
                command: "DELETE",
                restrictive: true,
                using: Some(can("delete")?),
                check: None,
            },
        ],
    )?;
    Ok(())
}

/// Per-user rows: a restrictive policy so each row is visible and writable
/// only by the user it belongs to, whatever the role. Layer it on `isolate`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn isolate_user(
    tbl: Option<Table>,
    user_column: default!(Option<SqlName>, "'user_id'"),
) -> SqlResult<()> {
    let tbl = required(tbl, "tbl")?;
    let column = required(user_column, "user_column")?;
    let table = table_sql(&tbl)?;
    let col = uuid_column_sql(&tbl, &table, &column.0)?;
    let own = format!("{col} = {}", call("warden.current_user_id()")?);
    apply(
        &tbl,
        &table,
        &[Policy {
            name: "warden_isolate_user",
            command: "ALL",
            restrictive: true,
            using: Some(own.clone()),
            check: Some(own),
        }],
    )?;
    Ok(())
}
