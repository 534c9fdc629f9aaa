-- The audit trail. Written only by pg_warden's own code, as the tables'
-- owner; read through the view warden.audit_log by warden_user (its own
-- workspace's entries) and warden_admin (everything).

-- Every row of the trail (an entry, or a batch of entries) takes its id
-- from this sequence, at the time it is written.
CREATE SEQUENCE warden.audit_id_seq;

-- One row per event. `mac` is HMAC-SHA256 under a key derived from the
-- master key over every other column but the seal, `id` included (see
-- src/audit/macs.rs), so an edited, inserted or re-numbered row is
-- detectable by warden.verify_audit(). The last row a transaction writes
-- in a workspace (here or in audit_batches) carries the transaction's seal
-- there: how many entries it wrote in that workspace (`seal_entries`) and
-- the MAC of its rows' MACs, in order (`seal_mac`, on every seal), so a
-- deleted row is detectable too; the seal also names the newest block of
-- its chain the writer knew of (`seal_head`, its seq, 0 for none, and
-- `seal_head_mac`, its MAC, both under `seal_mac`), so blocks deleted and
-- made again over fewer transactions are detectable as well.
CREATE TABLE warden.audit_entries (
    id           bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    txid         bigint NOT NULL,
    txn_seq      integer NOT NULL,
    workspace_id uuid,
    actor        uuid,
    db_role      text NOT NULL,
    action       text NOT NULL,
    target       text,
    row_key      json,
    old_values   json,
    new_values   json,
    detail       json,
    mac          bytea NOT NULL,
    seal_entries integer,
    seal_mac     bytea,
    seal_head    bigint,
    seal_head_mac bytea
);
-- A workspace's rows in order: the tenant view's index, and the one
-- chaining reads a range of.
CREATE INDEX audit_entries_workspace ON warden.audit_entries (workspace_id, id);
COMMENT ON TABLE warden.audit_entries IS
    'pg_warden audit trail: entries (read them through warden.audit_log)';

-- The entries of a statement that changed many rows of one table (64 or
-- more, one action): up to 1,024 a row, entry n (from 1) with txn_seq
-- txn_seq + n - 1, its values at [n] of the arrays (a NULL array: no entry
-- has that value); they share the batch's id. One MAC covers the whole
-- batch; writing a row and two index entries per 1,024 entries instead of
-- per entry is what keeps a bulk write cheap.
CREATE TABLE warden.audit_batches (
    id           bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    txid         bigint NOT NULL,
    txn_seq      integer NOT NULL,
    entries      integer NOT NULL,
    workspace_id uuid,
    actor        uuid,
    db_role      text NOT NULL,
    action       text NOT NULL,
    target       text,
    row_keys     json[],
    old_values   json[],
    new_values   json[],
    details      json[],
    mac          bytea NOT NULL,
    seal_entries integer,
    seal_mac     bytea,
    seal_head    bigint,
    seal_head_mac bytea
);
-- A batch's arrays are large (about 130 kB of JSON for 1,024 rows of four
-- columns): compressed with lz4 where this PostgreSQL has it (14 or
-- later, built with lz4), else stored uncompressed. pglz, the default,
-- would cost more than everything else an audited bulk write does.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE warden.audit_batches
                 ALTER COLUMN row_keys SET COMPRESSION lz4, ALTER COLUMN old_values SET COMPRESSION lz4,
                 ALTER COLUMN new_values SET COMPRESSION lz4, ALTER COLUMN details SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    ALTER TABLE warden.audit_batches
        ALTER COLUMN row_keys SET STORAGE EXTERNAL, ALTER COLUMN old_values SET STORAGE EXTERNAL,
        ALTER COLUMN new_values SET STORAGE EXTERNAL, ALTER COLUMN details SET STORAGE EXTERNAL;
END
$$;
CREATE INDEX audit_batches_workspace ON warden.audit_batches (workspace_id, id);
COMMENT ON TABLE warden.audit_batches IS
    'pg_warden audit trail: entries of bulk statements (read them through warden.audit_log)';

-- The chains: a block covers every seal of its workspace on a row with an
-- id in (from_id, to_id], and the previous block's MAC. The next block may
-- cover up to next_to_id (the id sequence's mark when this one was made)
-- once no transaction below next_xid runs any more (see src/audit/chain.rs).
-- A purge leaves a mark block (purge IS NOT NULL) saying where the chain
-- now starts.
CREATE TABLE warden.audit_blocks (
    workspace_id uuid,
    seq          bigint NOT NULL,
    from_id      bigint NOT NULL,
    to_id        bigint NOT NULL,
    next_to_id   bigint NOT NULL,
    next_xid     bigint NOT NULL,
    seals        integer NOT NULL,
    purge        json,
    prev_mac     bytea,
    mac          bytea NOT NULL,
    -- The MAC of the fields above alone: checked before the chain is
    -- extended from this block.
    fields_mac   bytea NOT NULL
);
-- One block per seq and chain; the chain outside any workspace (NULL) is
-- its own, apart from every workspace's (the nil UUID's too).
CREATE UNIQUE INDEX audit_blocks_chain ON warden.audit_blocks (workspace_id, seq)
    WHERE workspace_id IS NOT NULL;
CREATE UNIQUE INDEX audit_blocks_unscoped ON warden.audit_blocks (seq)
    WHERE workspace_id IS NULL;
COMMENT ON TABLE warden.audit_blocks IS 'pg_warden audit trail: per-workspace chains of seals';

-- Append-only, for every role including the owner and superusers: only
-- warden.purge_audit() deletes (and leaves a mark in the chain).
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON warden.audit_entries
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON warden.audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON warden.audit_batches
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON warden.audit_batches
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON warden.audit_blocks
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON warden.audit_blocks
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_append_only();

-- Changes to who may do what are recorded too (see audit_access_change in
-- src/api/audit.rs): memberships in their workspace's chain, roles and
-- permissions outside any workspace.
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON warden.memberships
    FOR EACH ROW EXECUTE FUNCTION warden.audit_access_change('memberships');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON warden.role_permissions
    FOR EACH ROW EXECUTE FUNCTION warden.audit_access_change('role_permissions');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON warden.roles
    FOR EACH ROW EXECUTE FUNCTION warden.audit_access_change('roles');
CREATE TRIGGER audit_truncate AFTER TRUNCATE ON warden.memberships
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_truncate('global');
CREATE TRIGGER audit_truncate AFTER TRUNCATE ON warden.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_truncate('global');
CREATE TRIGGER audit_truncate AFTER TRUNCATE ON warden.roles
    FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_truncate('global');

-- Only the owner reads the tables (row level security with no policy is
-- a second lock behind the missing grants); everyone else reads the view.
ALTER TABLE warden.audit_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE warden.audit_batches ENABLE ROW LEVEL SECURITY;

-- The trail, one row per entry, and the tenant view of it: a warden_user
-- reads entries of its acting workspace, a warden_admin reads all. A
-- member reads the workspace's entries with the permission audit.read
-- (seeded for admin, and so for every role above it), and its own entries
-- (its user as the actor) without: the trail holds the values of rows
-- that policies may hide from some members (a viewer, say; `protect` and
-- `isolate_user` do not reach into it), but never hides what one did
-- oneself. The view reads the tables with its owner's rights and applies
-- that rule itself, behind a security barrier: a caller's own conditions
-- (a cheap leaky function, say) run on what the rule has let through,
-- never before it.
-- (The barrier holds because the view's body is a SELECT over the union,
-- not the union itself: PostgreSQL flattens a bare UNION ALL view into its
-- parts and would push the caller's conditions into them.) Each of the
-- four parts (entries and batches, for a tenant and for an administrator:
-- the rule's subqueries are evaluated once, and the parts that do not
-- apply are skipped) yields its rows newest first from an index, and the
-- view merges them newest first: "the latest 50 entries" reads about 50
-- rows, not the whole trail. An entry is identified by (id, txn_seq): the
-- entries of a batch share its id.
CREATE VIEW warden.audit_log WITH (security_barrier) AS
SELECT * FROM (
(SELECT e.id, e.at, e.txid, e.txn_seq, e.workspace_id, e.actor, e.db_role, e.action,
        e.target, e.row_key, e.old_values, e.new_values, e.detail, e.mac,
        e.seal_entries, e.seal_mac
   FROM warden.audit_entries AS e
  WHERE e.workspace_id OPERATOR(pg_catalog.=) (SELECT warden.current_workspace_id())
    AND NOT (SELECT pg_catalog.pg_has_role('warden_admin', 'USAGE'))
    AND ((SELECT warden.can('audit.read'))
         OR e.actor OPERATOR(pg_catalog.=) (SELECT warden.current_user_id()))
  ORDER BY e.id DESC)
UNION ALL
(SELECT e.id, e.at, e.txid, e.txn_seq, e.workspace_id, e.actor, e.db_role, e.action,
        e.target, e.row_key, e.old_values, e.new_values, e.detail, e.mac,
        e.seal_entries, e.seal_mac
   FROM warden.audit_entries AS e
  WHERE (SELECT pg_catalog.pg_has_role('warden_admin', 'USAGE'))
  ORDER BY e.id DESC)
UNION ALL
(SELECT b.id, b.at, b.txid, b.txn_seq + (x.n - 1)::integer, b.workspace_id, b.actor,
        b.db_role, b.action, b.target, x.row_key, x.old_values, x.new_values, x.detail,
        b.mac,
        CASE WHEN x.n OPERATOR(pg_catalog.=) b.entries THEN b.seal_entries END,
        CASE WHEN x.n OPERATOR(pg_catalog.=) b.entries THEN b.seal_mac END
   FROM warden.audit_batches AS b
  CROSS JOIN LATERAL ROWS FROM (
            pg_catalog.generate_series(1::bigint, b.entries::bigint),
            pg_catalog.unnest(b.row_keys), pg_catalog.unnest(b.old_values),
            pg_catalog.unnest(b.new_values), pg_catalog.unnest(b.details))
        AS x(n, row_key, old_values, new_values, detail)
  WHERE b.workspace_id OPERATOR(pg_catalog.=) (SELECT warden.current_workspace_id())
    AND NOT (SELECT pg_catalog.pg_has_role('warden_admin', 'USAGE'))
    AND ((SELECT warden.can('audit.read'))
         OR b.actor OPERATOR(pg_catalog.=) (SELECT warden.current_user_id()))
  ORDER BY b.id DESC)
UNION ALL
(SELECT b.id, b.at, b.txid, b.txn_seq + (x.n - 1)::integer, b.workspace_id, b.actor,
        b.db_role, b.action, b.target, x.row_key, x.old_values, x.new_values, x.detail,
        b.mac,
        CASE WHEN x.n OPERATOR(pg_catalog.=) b.entries THEN b.seal_entries END,
        CASE WHEN x.n OPERATOR(pg_catalog.=) b.entries THEN b.seal_mac END
   FROM warden.audit_batches AS b
  CROSS JOIN LATERAL ROWS FROM (
            pg_catalog.generate_series(1::bigint, b.entries::bigint),
            pg_catalog.unnest(b.row_keys), pg_catalog.unnest(b.old_values),
            pg_catalog.unnest(b.new_values), pg_catalog.unnest(b.details))
        AS x(n, row_key, old_values, new_values, detail)
  WHERE (SELECT pg_catalog.pg_has_role('warden_admin', 'USAGE'))
  ORDER BY b.id DESC)
) AS trail
ORDER BY id DESC;
-- Writing through the view is refused like writing the tables (42501).
CREATE TRIGGER append_only INSTEAD OF INSERT OR UPDATE OR DELETE ON warden.audit_log
    FOR EACH ROW EXECUTE FUNCTION warden.audit_append_only();
COMMENT ON VIEW warden.audit_log IS
    'pg_warden audit trail: one row per entry; append-only, tamper-evident (warden.verify_audit)';

SELECT pg_catalog.pg_extension_config_dump('warden.audit_entries', '');
SELECT pg_catalog.pg_extension_config_dump('warden.audit_batches', '');
SELECT pg_catalog.pg_extension_config_dump('warden.audit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.audit_blocks', '');
