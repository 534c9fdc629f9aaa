//! The audit trail's SQL surface: `enable_audit`, `disable_audit`,
//! `log_event`, `verify_audit`, `purge_audit`, and the trigger functions.

// The trail's tables, after the guard trigger function they use.
extension_sql_file!(
    "../../sql/audit.sql",
    name = "audit",
    requires = [
        "helpers",
        audit_append_only,
        audit_access_change,
        audit_truncate
    ]
);

use super::descendants;
use crate::api::policies::{column_type, quote_ident, table_sql, Table};
use crate::audit::json::{self, Values};
use crate::audit::{self, json_text, Entry};
use crate::error::{raise, required, SqlResult, WardenError};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{Map, Value};
use std::rc::Rc;

/// Guards the trail: UPDATE, DELETE and TRUNCATE are refused for everyone,
/// the owner and superusers included; only `warden.purge_audit()` deletes.
#[pg_trigger]
fn audit_append_only<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, WardenError> {
    if audit::purging() {
        return Ok(_trigger.old());
    }
    raise(WardenError::AppendOnly)
}

/// A trigger's outcome: an error raised as itself (an `Err` returned from a
/// trigger is reported as a panic, without its SQLSTATE), else no row.
fn raised<'a>(
    done: Result<(), WardenError>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, WardenError> {
    done.unwrap_or_else(|e| raise(e));
    Ok(None)
}

extern "C-unwind" {
    /// PostgreSQL's `row_to_json(record)`, called through the function
    /// manager (pgrx's binding of it is a guarded Rust function).
    fn row_to_json(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// One row of a trigger's tuple as a JSON object (PostgreSQL's own
/// `row_to_json`, so every type is rendered as it would be in SQL).
fn row_json(tuple: *mut pg_sys::HeapTupleData, desc: pg_sys::TupleDesc) -> Map<String, Value> {
    // SAFETY: tuple and descriptor come from the firing trigger; row_to_json
    // reads the row type from the composite datum it is given.
    // The json text is read in place (row_to_json returns a plain,
    // uncompressed text in this memory context).
    let text = unsafe {
        let datum = pg_sys::heap_copy_tuple_as_datum(tuple, desc);
        let json = pg_sys::DirectFunctionCall1Coll(Some(row_to_json), pg_sys::InvalidOid, datum);
        pgrx::varlena::varlena_to_byte_slice(json.cast_mut_ptr())
    };
    match serde_json::from_slice(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Refuses a trigger function attached other than as it expects (a
/// statement-level trigger has no rows to read; a BEFORE trigger returning
/// nothing would skip the change).
fn expect_attached(
    trigger: &PgTrigger<'_>,
    function: &'static str,
    row: bool,
    shape: &'static str,
) {
    let level_ok = match trigger.level() {
        PgTriggerLevel::Row => row,
        PgTriggerLevel::Statement => !row,
    };
    if !(level_ok && matches!(trigger.when(), Ok(PgTriggerWhen::After))) {
        raise(WardenError::MisattachedTrigger(function, shape))
    }
}

/// Records each changed row: action, table, primary key, old and new values
/// (only the changed columns for UPDATE), redacted columns as
/// `"[redacted]"`. Encrypted columns hold ciphertext and are logged as
/// such: nothing is ever decrypted. Values are rendered as `row_to_json`
/// renders them, through the trigger's cached plan (see `audit::json`).
#[pg_trigger]
fn audit_row<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, WardenError> {
    raised(record_row(trigger))
}

fn record_row(trigger: &PgTrigger<'_>) -> Result<(), WardenError> {
    expect_attached(trigger, "warden.audit_row", true, "FOR EACH ROW");
    let data = trigger.trigger_data();
    let op = trigger
        .op()
        .map_err(|e| WardenError::Internal(e.to_string()))?;
    // SAFETY: the firing trigger's relation, trigger and tuples (of the
    // relation's row type).
    let (plan, action, row_key, old, new) = unsafe {
        let plan = json::plan_for(data.tg_relation, data.tg_trigger, audit::names_generation())?;
        let desc = (*data.tg_relation).rd_att;
        let (action, row_key, old, new) = match op {
            PgTriggerOperation::Insert => {
                let row = Values::of(data.tg_trigtuple, desc);
                ("INSERT", plan.key(&row), None, Some(plan.row(&row)))
            }
            PgTriggerOperation::Delete => {
                let row = Values::of(data.tg_trigtuple, desc);
                ("DELETE", plan.key(&row), Some(plan.row(&row)), None)
            }
            PgTriggerOperation::Update => {
                let old = Values::of(data.tg_trigtuple, desc);
                let new = Values::of(data.tg_newtuple, desc);
                // Only what changed.
                let (o, n) = plan.changed(&old, &new);
                ("UPDATE", plan.key(&new), Some(o), Some(n))
            }
            PgTriggerOperation::Truncate => {
                return Err(WardenError::Internal("row-level TRUNCATE".into()))
            }
        };
        (plan, action, row_key, old, new)
    };
    let entry = Entry {
        workspace: None,
        action: action.into(),
        target: Some(Rc::clone(&plan.target)),
        row_key,
        old_values: old,
        new_values: new,
        detail: None,
    };
    audit::record(entry).unwrap_or_else(|e| raise(e));
    Ok(())
}

/// What the access tables' trigger records for each of them (its one
/// argument names the table).
struct AccessTable {
    /// Event names: `<noun>.<added>` / `.changed` / `.<removed>`.
    noun: &'static str,
    added: &'static str,
    removed: &'static str,
    /// The columns that identify a row (its `row_key`).
    key: &'static [&'static str],
    /// The column naming the workspace whose chain (and tenant view) the
    /// event belongs to; `None`: cluster-wide (roles, permissions).
    workspace: Option<&'static str>,
}

const ACCESS_TABLES: &[(&str, AccessTable)] = &[
    (
        "memberships",
        AccessTable {
            noun: "membership",
            added: "added",
            removed: "removed",
            key: &["workspace_id", "user_id"],
            workspace: Some("workspace_id"),
        },
    ),
    (
        "role_permissions",
        AccessTable {
            noun: "permission",
            added: "granted",
            removed: "revoked",
            key: &["role", "permission"],
            workspace: None,
        },
    ),
    (
        "roles",
        AccessTable {
            noun: "role",
            added: "created",
            removed: "removed",
            key: &["name"],
            workspace: None,
        },
    ),
];

/// Records changes to who may do what: memberships (in the membership's
/// workspace, so the tenant sees them), role permissions and the role
/// ladder (outside any workspace). An UPDATE that changes a row's identity
/// (another workspace, user, role or permission) is recorded as a removal
/// and an addition; one that changes nothing is not recorded.
///
/// Not recorded: rows loaded by a restore. `pg_dump` output and
/// `pg_restore` run with `row_security = off`; when the table's owner (or
/// a superuser) writes with that setting, directly in its session (not
/// through a SECURITY DEFINER function, whose caller may have turned the
/// setting off), the rows are data coming back, not changes, and the trail
/// they belong to is being restored beside them (recording them would
/// collide with it). Those roles could disable the trigger anyway;
/// `warden_admin` and every other role are always recorded.
#[pg_trigger]
fn audit_access_change<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, WardenError> {
    raised(record_access_change(trigger))
}

fn record_access_change(trigger: &PgTrigger<'_>) -> Result<(), WardenError> {
    expect_attached(trigger, "warden.audit_access_change", true, "FOR EACH ROW");
    let data = trigger.trigger_data();
    let args = trigger.extra_args().unwrap_or_default();
    let table = ACCESS_TABLES
        .iter()
        .find(|(name, _)| args.first().map(String::as_str) == Some(*name))
        .map(|(_, t)| t)
        .ok_or_else(|| WardenError::Internal("audit_access_change: unknown table".into()))?;
    // SAFETY: the firing relation; plain reads of backend globals.
    let (desc, restoring) = unsafe {
        let rel = data.tg_relation;
        let owner = (*(*rel).rd_rel).relowner;
        // Not inside a SECURITY DEFINER function or a security-restricted
        // operation: there GetUserId() is the definer's, not the session's.
        let restoring = !pg_sys::row_security
            && !pg_sys::InLocalUserIdChange()
            && !pg_sys::InSecurityRestrictedOperation()
            && pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner);
        ((*rel).rd_att, restoring)
    };
    if restoring {
        return Ok(());
    }
    let op = trigger
        .op()
        .map_err(|e| WardenError::Internal(e.to_string()))?;
    let (old, new) = match op {
        PgTriggerOperation::Insert => (None, Some(row_json(data.tg_trigtuple, desc))),
        PgTriggerOperation::Delete => (Some(row_json(data.tg_trigtuple, desc)), None),
        PgTriggerOperation::Update => (
            Some(row_json(data.tg_trigtuple, desc)),
            Some(row_json(data.tg_newtuple, desc)),
        ),
        PgTriggerOperation::Truncate => {
            return Err(WardenError::Internal("row-level TRUNCATE".into()))
        }
    };
    let identity = |row: &Map<String, Value>| {
        let mut id: Vec<Value> = table.key.iter().map(|k| field(row, k)).collect();
        if let Some(ws) = table.workspace {
            id.push(field(row, ws));
        }
        id
    };
    let event = |verb: &str,
                 row: &Map<String, Value>,
                 old: Option<Value>,
                 new: Option<Value>|
     -> Result<(), WardenError> {
        let workspace = match table.workspace {
            Some(column) => match field(row, column) {
                Value::String(text) => Some(
                    crate::context::uuid_from_hex(&text.replace('-', ""))
                        .ok_or_else(|| WardenError::Internal("malformed workspace id".into()))?,
                ),
                _ => None,
            },
            None => None,
        };
        let row_key = table
            .key
            .iter()
            .map(|k| (k.to_string(), field(row, k)))
            .collect();
        audit::record(Entry {
            workspace: Some(workspace),
            action: format!("{}.{verb}", table.noun).into(),
            target: Some(Rc::from(format!("warden.{}", args[0]))),
            row_key: Some(json_text(&Value::Object(row_key))),
            old_values: old.as_ref().map(json_text),
            new_values: new.as_ref().map(json_text),
            detail: None,
        })
    };
    let rest = |row: &Map<String, Value>| {
        let mut row = row.clone();
        row.retain(|k, _| !table.key.contains(&k.as_str()) && Some(k.as_str()) != table.workspace);
        (!row.is_empty()).then_some(Value::Object(row))
    };
    match (old, new) {
        (None, Some(n)) => event(table.added, &n, None, rest(&n))?,
        (Some(o), None) => event(table.removed, &o, rest(&o), None)?,
        (Some(o), Some(n)) if identity(&o) != identity(&n) => {
            event(table.removed, &o, rest(&o), None)?;
            event(table.added, &n, None, rest(&n))?;
        }
        (Some(o), Some(n)) if o != n => {
            let (mut before, mut after) = (o.clone(), n.clone());
            before.retain(|k, v| n.get(k) != Some(v));
            after.retain(|k, v| o.get(k) != Some(v));
            event(
                "changed",
                &n,
                Some(Value::Object(before)),
                Some(Value::Object(after)),
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// A column of a row as JSON (NULL if absent).
fn field(row: &Map<String, Value>, column: &str) -> Value {
    row.get(column).cloned().unwrap_or(Value::Null)
}

/// Records a TRUNCATE of an audited table.
#[pg_trigger]
fn audit_truncate<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, WardenError> {
    raised(record_truncate(trigger))
}

fn record_truncate(trigger: &PgTrigger<'_>) -> Result<(), WardenError> {
    expect_attached(trigger, "warden.audit_truncate", false, "TRUNCATE");
    if !matches!(trigger.op(), Ok(PgTriggerOperation::Truncate)) {
        raise(WardenError::MisattachedTrigger(
            "warden.audit_truncate",
            "TRUNCATE",
        ))
    }
    let schema = trigger
        .table_schema()
        .map_err(|e| WardenError::Internal(e.to_string()))?;
    let name = trigger
        .table_name()
        .map_err(|e| WardenError::Internal(e.to_string()))?;
    // pg_warden's own tables (memberships, roles, permissions) concern every
    // workspace: their TRUNCATE goes to the chain outside any workspace,
    // not to the acting tenant's.
    let global = schema == "warden"
        && trigger
            .extra_args()
            .unwrap_or_default()
            .iter()
            .any(|a| a == "global");
    let entry = Entry {
        workspace: global.then_some(None),
        action: "TRUNCATE".into(),
        target: Some(Rc::from(format!("{schema}.{name}"))),
        row_key: None,
        old_values: None,
        new_values: None,
        detail: None,
    };
    audit::record(entry).unwrap_or_else(|e| raise(e));
    Ok(())
}

/// Attaches the audit triggers to a table (idempotent: re-run it after
/// changing the primary key or the redacted columns). Runs with the
/// caller's rights: only the table's owner can add triggers.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn enable_audit(
    tbl: Option<Table>,
    redact: default!(Option<Vec<String>>, "'{}'"),
) -> SqlResult<()> {
    let tbl = required(tbl, "tbl")?;
    let redact = required(redact, "redact")?;
    let table = table_sql(&tbl)?;
    for column in &redact {
        if column_type(&tbl, column)?.is_none() {
            return Err(WardenError::UndefinedColumn {
                table,
                column: column.clone(),
            }
            .into());
        }
    }
    drop_audit_triggers(&tbl, &table)?;
    attach_audit_triggers(tbl.oid(), &table, Some(&redact), true)?;
    // The tables below it (partitions, inheritance children) get the
    // TRUNCATE trigger, which PostgreSQL does not clone, and inheritance
    // children the row trigger too (see `descendants`).
    for edge in descendants::edges_below(tbl.oid())? {
        descendants::carry_audit(&edge)?;
    }
    audit::config_event(
        "audit.enabled",
        &target_name(&tbl)?,
        serde_json::json!({ "redact": redact }),
    )?;
    Ok(())
}

/// The row audit trigger's name on every audited table.
pub const ROW_TRIGGER: &str = "warden_audit";
/// The TRUNCATE audit trigger's name.
pub const TRUNCATE_TRIGGER: &str = "warden_audit_truncate";

/// Creates the audit triggers on a table (`table`, its SQL name): the row
/// trigger redacting `redact` (with the table's own primary key as the row
/// key), replacing one already there, if `redact` is given; the TRUNCATE
/// trigger if `truncate`.
pub fn attach_audit_triggers(
    oid: pg_sys::Oid,
    table: &str,
    redact: Option<&[String]>,
    truncate: bool,
) -> Result<(), WardenError> {
    let mut ddl = String::new();
    if let Some(redact) = redact {
        let key: Vec<String> = Spi::connect(|client| {
            let mut out = Vec::new();
            for row in client.select(
                "SELECT a.attname::text FROM pg_catalog.pg_index AS i
                   JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                  WHERE i.indrelid = $1 AND i.indisprimary
                  ORDER BY array_position(i.indkey::int2[], a.attnum)",
                None,
                &[oid.into()],
            )? {
                out.push(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok::<_, WardenError>(out)
        })?;
        let args: Vec<String> = key
            .iter()
            .map(|k| format!("pk={k}"))
            .chain(redact.iter().map(|r| format!("redact={r}")))
            .collect();
        let args = Spi::get_one_with_args::<String>(
            "SELECT COALESCE(string_agg(quote_literal(a), ', '), '') FROM unnest($1::text[]) AS a",
            &[args.into()],
        )?
        .unwrap_or_default();
        for trigger in audit_triggers(oid)? {
            if trigger.row && !trigger.cloned {
                ddl.push_str(&format!(
                    "DROP TRIGGER {} ON {table};\n",
                    quote_ident(&trigger.name)?
                ));
            }
        }
        ddl.push_str(&format!(
            "CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
                 FOR EACH ROW EXECUTE FUNCTION warden.audit_row({args});\n"
        ));
    }
    if truncate {
        ddl.push_str(&format!(
            "CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_truncate();\n"
        ));
    }
    if !ddl.is_empty() {
        Spi::run(&ddl)?;
    }
    Ok(())
}

/// Detaches the audit triggers (idempotent).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn disable_audit(tbl: Option<Table>) -> SqlResult<()> {
    let tbl = required(tbl, "tbl")?;
    let table = table_sql(&tbl)?;
    // Below first: a partition's clone of the row trigger goes with the
    // parent's, but not the TRUNCATE trigger pg_warden gave it. Each table
    // below that had audit triggers is recorded as disabled too (some may
    // have had their own).
    for edge in descendants::edges_below(tbl.oid())? {
        if descendants::drop_carried_audit(&edge)? {
            audit::config_event(
                "audit.disabled",
                &target_name_of(edge.child)?,
                serde_json::json!({ "with": target_name(&tbl)? }),
            )?;
        }
    }
    if drop_audit_triggers(&tbl, &table)? {
        audit::config_event("audit.disabled", &target_name(&tbl)?, serde_json::json!({}))?;
    }
    Ok(())
}

/// A table as the trail names it (`schema.table`, unquoted, as its rows'
/// entries do).
fn target_name(tbl: &Table) -> Result<String, WardenError> {
    target_name_of(tbl.oid())
}

/// [`target_name`] of a table by OID.
pub fn target_name_of(oid: pg_sys::Oid) -> Result<String, WardenError> {
    Spi::get_one_with_args::<String>(
        "SELECT n.nspname::text || '.' || c.relname::text
           FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[oid.into()],
    )?
    .ok_or_else(|| WardenError::Internal("the table is gone".into()))
}

/// Drops the audit triggers of `table` (its own, not a partition's clones
/// of its parent's); whether there were any.
pub fn drop_audit_triggers_of(oid: pg_sys::Oid, table: &str) -> Result<bool, WardenError> {
    let mut dropped = false;
    for trigger in audit_triggers(oid)? {
        if !trigger.cloned {
            Spi::run(&format!(
                "DROP TRIGGER {} ON {table}",
                quote_ident(&trigger.name)?
            ))?;
            dropped = true;
        }
    }
    Ok(dropped)
}

fn drop_audit_triggers(tbl: &Table, table: &str) -> Result<bool, WardenError> {
    drop_audit_triggers_of(tbl.oid(), table)
}

/// An audit trigger of a table, known by the function it runs (whatever it
/// is called now: a renamed one is still one).
pub struct AuditTrigger {
    pub name: String,
    /// `warden.audit_row` (else `warden.audit_truncate`).
    pub row: bool,
    /// `pg_trigger.tgenabled`: O, A (fire), R (replica only), D.
    pub enabled: String,
    /// A partition's clone of its parent's.
    pub cloned: bool,
    /// Its arguments, NUL-terminated one after the other.
    pub args: Vec<u8>,
}

impl AuditTrigger {
    /// The columns a row trigger redacts (its `redact=` arguments).
    pub fn redacted(&self) -> Vec<String> {
        self.args
            .split(|b| *b == 0)
            .filter_map(|arg| arg.strip_prefix(b"redact="))
            .map(|column| String::from_utf8_lossy(column).into_owned())
            .collect()
    }
}

/// The audit triggers of a table, by name.
pub fn audit_triggers(oid: pg_sys::Oid) -> Result<Vec<AuditTrigger>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT t.tgname::pg_catalog.text,
                    t.tgfoid OPERATOR(pg_catalog.=) 'warden.audit_row()'::pg_catalog.regprocedure,
                    t.tgenabled::pg_catalog.text, t.tgparentid OPERATOR(pg_catalog.<>) 0, t.tgargs
               FROM pg_catalog.pg_trigger AS t
              WHERE t.tgrelid OPERATOR(pg_catalog.=) $1
                AND t.tgfoid OPERATOR(pg_catalog.=) ANY (ARRAY[
                        'warden.audit_row()'::pg_catalog.regprocedure,
                        'warden.audit_truncate()'::pg_catalog.regprocedure]::pg_catalog.oid[])
              ORDER BY 1",
            None,
            &[oid.into()],
        )? {
            out.push(AuditTrigger {
                name: row.get::<String>(1)?.unwrap_or_default(),
                row: row.get::<bool>(2)?.unwrap_or(false),
                enabled: row.get::<String>(3)?.unwrap_or_default(),
                cloned: row.get::<bool>(4)?.unwrap_or(false),
                args: row.get::<Vec<u8>>(5)?.unwrap_or_default(),
            });
        }
        Ok(out)
    })
}

/// Records an application event (token use, outbound call, export) under
/// the acting context.
#[pg_extern(volatile, parallel_unsafe)]
fn log_event(
    action: Option<&str>,
    target: Option<&str>,
    detail: default!(Option<JsonB>, "NULL"),
) -> SqlResult<()> {
    let action = required(action, "action")?;
    // The entry would be written at COMMIT, which a read-only transaction
    // refuses (25006): say so now, where the application can see why.
    // SAFETY: raises an ERROR in a read-only transaction, nothing else.
    unsafe { pg_sys::PreventCommandIfReadOnly(c"warden.log_event()".as_ptr()) };
    if reserved_action(action) {
        return Err(WardenError::ReservedAction(action.to_string()).into());
    }
    audit::record(Entry {
        workspace: None,
        action: action.to_string().into(),
        target: target.map(Rc::from),
        row_key: None,
        old_values: None,
        new_values: None,
        detail: detail.map(|JsonB(v)| json_text(&v)),
    })?;
    Ok(())
}

/// Whether `action` is one pg_warden records itself (a row change, a
/// denial, a key, membership, role, permission or audit change): an
/// application's event may not pass for one.
fn reserved_action(action: &str) -> bool {
    const RESERVED: [&str; 22] = [
        "insert",
        "update",
        "delete",
        "truncate",
        "permission.denied",
        "key.create",
        "key.rotate",
        "key.shred",
        "key.rewrap",
        "audit.enabled",
        "audit.disabled",
        "audit.paused",
        "audit.resumed",
        "membership.added",
        "membership.changed",
        "membership.removed",
        "role.created",
        "role.changed",
        "role.removed",
        "permission.granted",
        "permission.changed",
        "permission.revoked",
    ];
    // Compared as a reader would see it: case, spaces and invisible
    // characters aside (not every look-alike letter: keep names ASCII).
    let seen: String = action
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    RESERVED.contains(&seen.as_str())
}

/// One row per chain (NULL workspace: events outside any workspace):
/// entries, whether the chain is intact, and the first entry that breaks it.
#[pg_extern(volatile, parallel_unsafe)]
fn verify_audit() -> TableIterator<
    'static,
    (
        name!(workspace_id, Option<Uuid>),
        name!(entries, i64),
        name!(intact, bool),
        name!(first_broken_id, Option<i64>),
    ),
> {
    // (pgrx generates no SQL for a Result around a TableIterator: raise.)
    let reports = audit::verify().unwrap_or_else(|e| raise(e));
    TableIterator::new(reports.into_iter().map(|r| {
        (
            r.workspace.map(Uuid::from_bytes),
            r.entries,
            r.first_broken_id.is_none(),
            r.first_broken_id,
        )
    }))
}

/// Retention: deletes whole sealed transactions older than `before`, and
/// leaves a purge seal in each chain so the rest still verifies. Returns the
/// number of entries deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn purge_audit(before: Option<TimestampWithTimeZone>) -> SqlResult<i64> {
    let before = required(before, "before")?;
    Ok(audit::purge(before)?)
}
