//! Tables below a protected table. A partition (or an inheritance child)
//! queried, written or truncated directly answers to its own policies and
//! triggers, not its parent's: PostgreSQL clones a partitioned table's
//! row triggers to its partitions, and nothing else. So pg_warden's
//! policies and audit triggers are carried down the tree by pg_warden:
//! - by the generators and `enable_audit` / `disable_audit`, over the
//!   tables below at the time;
//! - by pg_warden's event trigger (`ddl`), at the end of the
//!   CREATE TABLE ... PARTITION OF / INHERITS or ALTER TABLE ... ATTACH
//!   PARTITION / INHERIT that puts a table below a protected one.
//!
//! What is carried: every `warden_*` policy of the parent the child lacks
//! (an exact copy, `pg_get_expr` of the parent's expressions: the tree's
//! tables share their column names), row level security enabled and
//! forced as on the parent; the TRUNCATE audit trigger; and, for an
//! inheritance child (PostgreSQL clones nothing to those), the row audit
//! trigger with the parent's redacted columns and the child's own primary
//! key. All of it runs with the rights of whoever ran the command: they own
//! the child (PostgreSQL requires it), which is all CREATE POLICY and
//! CREATE TRIGGER need.
//!
//! A dump restores without this firing on anything: pg_dump puts
//! partitions and attachments before every policy and trigger (its
//! post-data section), so the parents have nothing to carry yet.

use super::audit::{attach_audit_triggers, audit_triggers, drop_audit_triggers_of};
use crate::error::WardenError;
use pgrx::prelude::*;
use pgrx::PgList;

/// A parent and a table directly below it.
pub struct Edge {
    pub parent: pg_sys::Oid,
    pub child: pg_sys::Oid,
}

/// The edges of the tree below `table` (partitions of partitions and
/// inheritance grandchildren included), parents before their children.
pub fn edges_below(table: pg_sys::Oid) -> Result<Vec<Edge>, WardenError> {
    edges("inhparent", table)
}

/// The edges from each parent of `child` to it, then those below it,
/// parents before their children.
fn edges_into(child: pg_sys::Oid) -> Result<Vec<Edge>, WardenError> {
    edges("inhrelid", child)
}

fn edges(start_column: &str, table: pg_sys::Oid) -> Result<Vec<Edge>, WardenError> {
    // (A table can be reached twice in an inheritance tree: each edge is
    // carried once, at its first depth.)
    let query = format!(
        "WITH RECURSIVE edge(parent, child, depth) AS (
             SELECT inhparent, inhrelid, 0 FROM pg_catalog.pg_inherits WHERE {start_column} = $1
             UNION
             SELECT i.inhparent, i.inhrelid, e.depth + 1
               FROM pg_catalog.pg_inherits AS i JOIN edge AS e ON i.inhparent = e.child
              WHERE e.depth < 1000)
         SELECT parent, child FROM edge GROUP BY parent, child ORDER BY min(depth), parent, child"
    );
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(&query, None, &[table.into()])? {
            if let (Some(parent), Some(child)) =
                (row.get::<pg_sys::Oid>(1)?, row.get::<pg_sys::Oid>(2)?)
            {
                out.push(Edge { parent, child });
            }
        }
        Ok(out)
    })
}

/// A table of the tree: its SQL name (`regclass` output), kind, and
/// whether it is a partition.
pub struct Relation {
    pub name: String,
    kind: String,
    partition: bool,
}

impl Relation {
    /// A plain or partitioned table (a foreign table can have neither row
    /// level security nor TRUNCATE triggers).
    pub fn can_have_policies(&self) -> bool {
        matches!(self.kind.as_str(), "r" | "p")
    }
}

/// The warning for a foreign table below one with pg_warden's policies.
pub fn warn_no_policies(name: &str) {
    pgrx::warning!(
        "{name} is below a table with pg_warden's policies but cannot have row level security \
         (a foreign table): queried directly, it shows every workspace's rows"
    );
}

pub fn relation(oid: pg_sys::Oid) -> Result<Option<Relation>, WardenError> {
    Spi::connect(|client| {
        let mut rows = client.select(
            "SELECT c.oid::pg_catalog.regclass::pg_catalog.text, c.relkind::pg_catalog.text,
                    c.relispartition
               FROM pg_catalog.pg_class AS c WHERE c.oid = $1",
            None,
            &[oid.into()],
        )?;
        let Some(row) = rows.next() else {
            return Ok(None);
        };
        Ok(Some(Relation {
            name: row.get::<String>(1)?.unwrap_or_default(),
            kind: row.get::<String>(2)?.unwrap_or_default(),
            partition: row.get::<bool>(3)?.unwrap_or(false),
        }))
    })
}

/// Carries the parent's audit triggers to the child: the TRUNCATE trigger
/// if the child lacks one; for an inheritance child, the row trigger,
/// redacting what the parent's does and what the child's own did (a
/// column redacted on either stays redacted: carrying never shows more).
pub fn carry_audit(edge: &Edge) -> Result<(), WardenError> {
    let Some(child) = relation(edge.child)? else {
        return Ok(());
    };
    let parent_triggers = audit_triggers(edge.parent)?;
    if !child.can_have_policies() {
        if !parent_triggers.is_empty() {
            pgrx::warning!(
                "{} is below an audited table but is a foreign table: changes to its rows are \
                 not recorded",
                child.name
            );
        }
        return Ok(());
    }
    let child_triggers = audit_triggers(edge.child)?;
    if child.partition
        && parent_triggers.iter().any(|t| t.row)
        && child_triggers.iter().any(|t| t.row && !t.cloned)
    {
        // Its own row trigger beside the parent's clone would record
        // every change twice, each redacting what it redacts.
        return Err(WardenError::PartitionAuditedOnItsOwn(child.name));
    }
    let truncate = parent_triggers.iter().any(|t| !t.row) && !child_triggers.iter().any(|t| !t.row);
    let row = match parent_triggers.iter().find(|t| t.row) {
        // (A partition has PostgreSQL's clone of the parent's already.)
        Some(parent_row) if !child.partition => {
            let mut redact = parent_row.redacted();
            for column in child_triggers
                .iter()
                .filter(|t| t.row)
                .flat_map(|t| t.redacted())
            {
                if !redact.contains(&column) {
                    redact.push(column);
                }
            }
            Some(redact)
        }
        _ => None,
    };
    attach_audit_triggers(edge.child, &child.name, row.as_deref(), truncate)
}

/// Takes the audit triggers off the child (for `disable_audit` of the
/// parent): the TRUNCATE trigger, and an inheritance child's row trigger
/// (a partition's clone of the row trigger goes with the parent's);
/// whether it had any.
pub fn drop_carried_audit(edge: &Edge) -> Result<bool, WardenError> {
    let Some(child) = relation(edge.child)? else {
        return Ok(false);
    };
    drop_audit_triggers_of(edge.child, &child.name)
}

/// Carries the parent's `warden_*` policies the child lacks, with row
/// level security enabled (and forced) as on the parent.
fn carry_policies(edge: &Edge) -> Result<(), WardenError> {
    let Some(child) = relation(edge.child)? else {
        return Ok(());
    };
    // One statement per missing policy, ready to run; and whether the
    // parent has any of pg_warden's policies, enables, forces.
    let (ddl, any, enabled, forced): (Vec<String>, bool, bool, bool) = Spi::connect(|client| {
        let flags = client.select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy
                             WHERE polrelid = c.oid AND pg_catalog.starts_with(polname::pg_catalog.text, 'warden_')),
                    c.relrowsecurity, c.relforcerowsecurity
               FROM pg_catalog.pg_class AS c WHERE c.oid = $1",
            None,
            &[edge.parent.into()],
        )?;
        let (mut any, mut enabled, mut forced) = (false, false, false);
        for row in flags {
            any = row.get::<bool>(1)?.unwrap_or(false);
            enabled = row.get::<bool>(2)?.unwrap_or(false);
            forced = row.get::<bool>(3)?.unwrap_or(false);
        }
        let mut ddl = Vec::new();
        if !any {
            return Ok::<_, WardenError>((ddl, any, enabled, forced));
        }
        for row in client.select(
            "SELECT pg_catalog.format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
                        p.polname, $3::pg_catalog.text,
                        CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                        CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                                      WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                        CASE WHEN p.polroles OPERATOR(pg_catalog.@>) '{0}'::pg_catalog.oid[] THEN 'PUBLIC'
                             ELSE (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ')
                                     FROM pg_catalog.pg_roles AS r
                                    WHERE r.oid OPERATOR(pg_catalog.=) ANY (p.polroles)) END,
                        ' USING (' OPERATOR(pg_catalog.||) pg_catalog.pg_get_expr(p.polqual, p.polrelid)
                            OPERATOR(pg_catalog.||) ')',
                        ' WITH CHECK (' OPERATOR(pg_catalog.||)
                            pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) OPERATOR(pg_catalog.||) ')')
               FROM pg_catalog.pg_policy AS p
              WHERE p.polrelid = $1 AND pg_catalog.starts_with(p.polname::pg_catalog.text, 'warden_')
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_policy AS q
                                 WHERE q.polrelid = $2 AND q.polname = p.polname)
              ORDER BY p.polname",
            None,
            &[edge.parent.into(), edge.child.into(), child.name.clone().into()],
        )? {
            if let Some(statement) = row.get::<String>(1)? {
                ddl.push(statement);
            }
        }
        Ok((ddl, any, enabled, forced))
    })?;
    if !any {
        return Ok(());
    }
    if !child.can_have_policies() {
        warn_no_policies(&child.name);
        return Ok(());
    }
    let mut script = String::new();
    if enabled {
        script.push_str(&format!(
            "ALTER TABLE {} ENABLE ROW LEVEL SECURITY;\n",
            child.name
        ));
    }
    if forced {
        script.push_str(&format!(
            "ALTER TABLE {} FORCE ROW LEVEL SECURITY;\n",
            child.name
        ));
    }
    for statement in ddl {
        script.push_str(&statement);
        script.push_str(";\n");
    }
    if !script.is_empty() {
        Spi::run(&script)?;
    }
    Ok(())
}

/// The table a statement names, if it exists.
///
/// # Safety
/// `name` is null or a statement's `RangeVar`.
pub unsafe fn range_var_oid(name: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a live RangeVar; missing_ok, no lock (the statement that
    // named it holds its own).
    let oid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            name,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Whether the statement creates tables (CREATE TABLE, CREATE FOREIGN
/// TABLE, CREATE SCHEMA with CREATE TABLE elements): see
/// [`created_tables`].
///
/// # Safety
/// `tree` is null or the statement of the running event trigger.
pub unsafe fn creates_tables(tree: *mut pg_sys::Node) -> bool {
    // SAFETY: as the caller's.
    !tree.is_null()
        && matches!(
            unsafe { (*tree).type_ },
            pg_sys::NodeTag::T_CreateStmt
                | pg_sys::NodeTag::T_CreateForeignTableStmt
                | pg_sys::NodeTag::T_CreateSchemaStmt
        )
}

/// The tables the running command created that are below another (as a
/// partition or an inheritance child), as PostgreSQL reports them
/// (`pg_event_trigger_ddl_commands()`: the tables it made, not a name
/// looked up again, which a temporary table of the same name would
/// shadow).
pub fn created_tables() -> Result<Vec<pg_sys::Oid>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
              WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND c.object_type IN ('table', 'foreign table')
                AND EXISTS (SELECT FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = c.objid)",
            None,
            &[],
        )? {
            out.extend(row.get::<pg_sys::Oid>(1)?);
        }
        Ok(out)
    })
}

/// The tables an ALTER TABLE statement has just put below another one
/// (ATTACH PARTITION, INHERIT). Names are resolved as the statement
/// resolved them: call this under the caller's search path.
///
/// # Safety
/// `tree` is the statement of the running event trigger.
pub unsafe fn attached_children(tree: *mut pg_sys::Node) -> Vec<pg_sys::Oid> {
    // SAFETY: node tags checked before each cast; the statement's lists
    // and names are its own, alive through the event trigger.
    unsafe {
        let mut out = Vec::new();
        if tree.is_null() || (*tree).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return out;
        }
        let stmt = tree.cast::<pg_sys::AlterTableStmt>();
        let cmds = PgList::<pg_sys::Node>::from_pg((*stmt).cmds);
        for cmd in cmds.iter_ptr() {
            if cmd.is_null() || (*cmd).type_ != pg_sys::NodeTag::T_AlterTableCmd {
                continue;
            }
            let cmd = cmd.cast::<pg_sys::AlterTableCmd>();
            match (*cmd).subtype {
                pg_sys::AlterTableType::AT_AttachPartition => {
                    let def = (*cmd).def;
                    if !def.is_null() && (*def).type_ == pg_sys::NodeTag::T_PartitionCmd {
                        out.extend(range_var_oid((*def.cast::<pg_sys::PartitionCmd>()).name));
                    }
                }
                pg_sys::AlterTableType::AT_AddInherit => {
                    out.extend(range_var_oid((*stmt).relation));
                }
                _ => {}
            }
        }
        out.sort_by_key(|oid| oid.to_u32());
        out.dedup();
        out
    }
}

/// Gives each of these tables, just put below others, their pg_warden
/// policies and audit triggers, and so every table below it.
pub fn protect_children(children: &[pg_sys::Oid]) -> Result<(), WardenError> {
    for &child in children {
        for edge in &edges_into(child)? {
            carry_policies(edge)?;
            carry_audit(edge)?;
        }
    }
    Ok(())
}
