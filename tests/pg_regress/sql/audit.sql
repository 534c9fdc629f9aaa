-- The audit trail as an application and an administrator see it.
INSERT INTO warden.memberships (workspace_id, user_id, role) VALUES
    ('aaaaaaaa-0000-4000-8000-000000000000', '00000000-0000-4000-8000-0000000a11ce', 'admin'),
    ('bbbbbbbb-0000-4000-8000-000000000000', '00000000-0000-4000-8000-00000000ca20', 'manager');
CREATE ROLE regress_app IN ROLE warden_user;
-- A leaky function: it tells of any row outside workspace A it is shown.
CREATE FUNCTION regress.peek(workspace uuid, v json) RETURNS boolean
    LANGUAGE plpgsql STABLE COST 0.0000001 AS $$
BEGIN
    IF workspace IS DISTINCT FROM 'aaaaaaaa-0000-4000-8000-000000000000' THEN
        RAISE NOTICE 'peek saw a row of another workspace: %', v;
    END IF;
    RETURN true;
END $$;
CREATE ROLE regress_admin IN ROLE warden_admin;
CREATE ROLE regress_owner;
GRANT CREATE ON SCHEMA public TO regress_owner;

-- A table with a composite primary key and a secret column; one without a key.
SET ROLE regress_owner;
CREATE TABLE public.cards (
    workspace_id uuid NOT NULL,
    n int NOT NULL,
    holder text,
    number text,
    token bytea,
    PRIMARY KEY (workspace_id, n)
);
CREATE TABLE public.notes (workspace_id uuid, body text);
SELECT warden.enable_audit('public.cards', '{number}');
SELECT warden.enable_audit('public.cards', '{number}');   -- idempotent
SELECT warden.enable_audit('public.notes');
SELECT tgname, tgtype, pg_get_triggerdef(oid) LIKE '%audit_row(''pk=workspace_id'', ''pk=n'', ''redact=number'')%' AS args
  FROM pg_trigger WHERE tgrelid = 'public.cards'::regclass ORDER BY 1;
SELECT regress.error_of($$SELECT warden.enable_audit('public.cards', '{nope}')$$);
SELECT regress.error_of($$SELECT warden.enable_audit(NULL)$$);
SELECT regress.error_of($$SELECT warden.enable_audit('public.cards', NULL)$$);
SELECT regress.error_of($$SELECT warden.disable_audit(NULL)$$);
SELECT regress.error_of($$SELECT warden.enable_audit('public.no_such_table')$$);
GRANT ALL ON public.cards, public.notes TO regress_app;
RESET ROLE;

-- Writes in workspace A: every action, redacted and encrypted columns.
SET ROLE regress_app;
BEGIN;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce') IS NOT NULL AS set;
INSERT INTO public.cards VALUES
    ('aaaaaaaa-0000-4000-8000-000000000000', 1, 'Ada', '4242424242424242', warden.encrypt('tok_1')),
    ('aaaaaaaa-0000-4000-8000-000000000000', 2, 'Bob', '5555555555554444', NULL);
UPDATE public.cards SET holder = 'Ada L.', number = '4000056655665556' WHERE n = 1;
UPDATE public.cards SET holder = holder WHERE n = 2;
DELETE FROM public.cards WHERE n = 2;
INSERT INTO public.notes VALUES ('aaaaaaaa-0000-4000-8000-000000000000', 'no key here');
SELECT warden.log_event('export', 'cards', '{"format": "csv", "rows": 1}');
COMMIT;
-- A transaction that rolls back leaves nothing.
BEGIN;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce') IS NOT NULL AS set;
INSERT INTO public.notes VALUES ('aaaaaaaa-0000-4000-8000-000000000000', 'rolled back');
ROLLBACK;
-- A read-only transaction cannot write the trail: log_event says so at
-- once (25006); a temporary table written there (allowed read-only) makes
-- the COMMIT refuse (25006), leaving nothing.
CREATE TEMPORARY TABLE scratch (n int PRIMARY KEY);
SELECT warden.enable_audit('scratch');
BEGIN READ ONLY;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce') IS NOT NULL AS set;
SELECT regress.error_of($$SELECT warden.log_event('export', 'read only')$$);
INSERT INTO scratch VALUES (1);
COMMIT;
DROP TABLE scratch;
-- Workspace B writes too.
BEGIN;
SELECT warden.set_context('bbbbbbbb-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-00000000ca20') IS NOT NULL AS set;
INSERT INTO public.notes VALUES ('bbbbbbbb-0000-4000-8000-000000000000', 'globex');
COMMIT;
RESET ROLE;
-- A superuser without a context writes outside any workspace.
TRUNCATE public.notes;

-- The trail as workspace A's application sees it: its own entries only.
SET ROLE regress_app;
BEGIN;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce') IS NOT NULL AS set;
SELECT txn_seq, actor, db_role, action, target, row_key,
       old_values::jsonb - 'token' AS old_values, new_values::jsonb - 'token' AS new_values, detail
  FROM warden.audit_log ORDER BY id;
-- The encrypted column is logged as ciphertext, never decrypted.
SELECT (new_values->>'token') LIKE '\\x5744%' AS ciphertext_logged
  FROM warden.audit_log WHERE action = 'INSERT' AND row_key->>'n' = '1';
-- A function of the application's own in its conditions sees only the rows
-- the rule lets through, however cheap it claims to be and however the
-- tables are scanned (it would report any other workspace it saw).
SET LOCAL enable_indexscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT count(*) AS seen FROM warden.audit_log WHERE regress.peek(workspace_id, new_values);
RESET enable_indexscan;
RESET enable_bitmapscan;
-- Append-only, and an application may not even try.
SELECT regress.error_of('DELETE FROM warden.audit_log');
SELECT regress.error_of('UPDATE warden.audit_log SET action = $$x$$');
SELECT regress.error_of($$SELECT warden.verify_audit()$$);
SELECT regress.error_of($$SELECT warden.log_event(NULL, 'x')$$);
SELECT regress.error_of($$SELECT warden.require('not a permission')$$);
COMMIT;
RESET ROLE;

-- The administrator sees every chain; all intact.
SET ROLE regress_admin;
SELECT workspace_id, action, regexp_replace(target, '^pg_temp_\d+\.', 'pg_temp.') AS target
  FROM warden.audit_log ORDER BY id;
SELECT * FROM warden.verify_audit();
RESET ROLE;
-- Not even a superuser edits or deletes through SQL: not the entries, not
-- the batches (the view is not writable at all).
SELECT regress.error_of('DELETE FROM warden.audit_entries');
SELECT regress.error_of('UPDATE warden.audit_entries SET detail = NULL');
SELECT regress.error_of('TRUNCATE warden.audit_entries');
SELECT regress.error_of('TRUNCATE warden.audit_batches');
-- The trail's id sequence is not to be altered, by a superuser either: the
-- chains rely on its values being handed out one at a time and in order.
SELECT regress.error_of('ALTER SEQUENCE warden.audit_id_seq CACHE 10');
SELECT regress.error_of('ALTER SEQUENCE warden.audit_id_seq RESTART');
SELECT seqcache, seqincrement FROM pg_catalog.pg_sequence
 WHERE seqrelid = 'warden.audit_id_seq'::regclass;
-- The event trigger's function refuses to run called directly (39P03).
SELECT regress.error_of('SELECT warden.ddl_command_end()');
SELECT regress.error_of('DELETE FROM warden.audit_log');
SELECT regress.error_of('INSERT INTO warden.audit_log SELECT * FROM warden.audit_log LIMIT 1');

-- Tampering around the guard (triggers off) is detected and located: a
-- changed value, and even the same document spelled differently (the MAC
-- covers the text as stored).
CREATE TEMP TABLE original AS SELECT id, detail FROM warden.audit_log WHERE action = 'export';
SET session_replication_role = replica;
UPDATE warden.audit_entries SET detail = '{"format": "csv", "rows": 1000}' WHERE action = 'export';
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT id FROM warden.audit_log WHERE action = 'export') AS at_the_edit
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
UPDATE warden.audit_entries SET detail = '{"format": "csv", "rows": 1}' WHERE action = 'export';
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
UPDATE warden.audit_entries AS l SET detail = o.detail FROM original AS o WHERE l.id = o.id;
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
-- A deleted entry breaks its transaction's seal: reported at the
-- transaction's first entry.
CREATE TEMP TABLE kept AS SELECT * FROM warden.audit_log WHERE action = 'UPDATE' AND row_key->>'n' = '2';
SET session_replication_role = replica;
DELETE FROM warden.audit_entries WHERE id = (SELECT id FROM kept);
RESET session_replication_role;
SELECT workspace_id, intact,
       first_broken_id = (SELECT min(id) FROM warden.audit_log
                           WHERE txid = (SELECT txid FROM kept)) AS at_its_transaction
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
INSERT INTO warden.audit_entries SELECT * FROM kept;
RESET session_replication_role;
-- An inserted entry (its MAC cannot be made without the key) is located.
SET session_replication_role = replica;
INSERT INTO warden.audit_entries (id, at, txid, txn_seq, workspace_id, db_role, action, target, mac)
VALUES (nextval('warden.audit_id_seq'), now(), 1, 1, 'bbbbbbbb-0000-4000-8000-000000000000', 'postgres',
        'DELETE', 'public.notes', '\x00');
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT max(id) FROM warden.audit_log) AS at_the_insertion
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
DELETE FROM warden.audit_entries WHERE id = (SELECT max(id) FROM warden.audit_entries);
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
-- A transaction's only row in a workspace carries its seal, and every seal
-- has its MAC: an edited count is found at the row. Every MAC covers its
-- row's id, so a genuine row copied in under a new id is found too.
CREATE TEMP TABLE lone AS SELECT * FROM warden.audit_entries
 WHERE seal_entries = 1 ORDER BY id LIMIT 1;
SELECT count(*) AS single_row_seals, bool_and(seal_mac IS NOT NULL) AS with_a_mac FROM lone;
SELECT count(*) AS seals_without_a_mac FROM warden.audit_entries
 WHERE seal_entries IS NOT NULL AND seal_mac IS NULL;
SET session_replication_role = replica;
UPDATE warden.audit_entries SET seal_entries = 2 WHERE id = (SELECT id FROM lone);
RESET session_replication_role;
SELECT workspace_id IS NOT DISTINCT FROM (SELECT workspace_id FROM lone) AS its_chain, intact,
       first_broken_id = (SELECT id FROM lone) AS at_the_row
  FROM warden.verify_audit() WHERE NOT intact;
SET session_replication_role = replica;
UPDATE warden.audit_entries SET seal_entries = 1 WHERE id = (SELECT id FROM lone);
RESET session_replication_role;
-- (In a transaction rolled back after: verify_audit() chains the copy's
-- seal, and a chained seal deleted would break the chain for good.)
BEGIN;
CREATE TEMP TABLE copy AS
SELECT nextval('warden.audit_id_seq') AS id, at, txid, txn_seq, workspace_id, actor, db_role,
       action, target, row_key, old_values, new_values, detail, mac, seal_entries, seal_mac
  FROM lone;
SET LOCAL session_replication_role = replica;
INSERT INTO warden.audit_entries SELECT * FROM copy;
RESET session_replication_role;
SELECT workspace_id IS NOT DISTINCT FROM (SELECT workspace_id FROM lone) AS its_chain, intact,
       first_broken_id = (SELECT id FROM copy) AS at_the_copy
  FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
-- Where a broken block shows is not taken from the block itself: a whole
-- chained transaction deleted, and its block's start moved past every
-- row, is found at the first row after where the block should start.
-- (Rolled back after.)
BEGIN;
CREATE TEMP TABLE victim AS
SELECT b.workspace_id, b.seq, b.from_id, e.txid
  FROM warden.audit_blocks AS b
  JOIN warden.audit_entries AS e
    ON e.workspace_id = b.workspace_id AND e.id > b.from_id AND e.id <= b.to_id
 WHERE b.seals > 0 AND e.seal_entries IS NOT NULL
 ORDER BY b.seq DESC, e.id LIMIT 1;
SET LOCAL session_replication_role = replica;
DELETE FROM warden.audit_entries AS e USING victim AS v
 WHERE e.txid = v.txid AND e.workspace_id = v.workspace_id;
UPDATE warden.audit_blocks AS b SET from_id = 9223372036854775807 FROM victim AS v
 WHERE b.workspace_id = v.workspace_id AND b.seq = v.seq;
RESET session_replication_role;
SELECT workspace_id = (SELECT workspace_id FROM victim) AS its_chain, intact,
       first_broken_id > (SELECT from_id FROM victim) AS after_its_start
  FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
-- Blocks deleted and made again over fewer transactions are found too:
-- each seal names the newest block of its chain its writer knew of (read
-- at most once a second, hence the pause), and that block's MAC.
SELECT count(*) > 0 AS chained FROM warden.verify_audit();
SELECT pg_sleep(1.1);
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT warden.log_event('later', 'x');
SELECT warden.clear_context();
CREATE TEMP TABLE named AS
SELECT workspace_id, seal_head AS seq FROM warden.audit_entries WHERE action = 'later';
SELECT n.seq > 0 AS names_a_block,
       (SELECT b.mac FROM warden.audit_blocks AS b
         WHERE b.workspace_id = n.workspace_id AND b.seq = n.seq) = e.seal_head_mac AS with_its_mac
  FROM named AS n, warden.audit_entries AS e WHERE e.action = 'later';
CREATE TEMP TABLE victim_block AS
SELECT b.workspace_id, b.seq, b.from_id, b.to_id FROM warden.audit_blocks AS b, named AS n
 WHERE b.workspace_id = n.workspace_id AND b.seq <= n.seq AND b.seals > 0
 ORDER BY b.seq DESC LIMIT 1;
BEGIN;
CREATE TEMP TABLE victim_txn AS
SELECT e.workspace_id, e.txid FROM warden.audit_entries AS e, victim_block AS v
 WHERE e.workspace_id = v.workspace_id AND e.id > v.from_id AND e.id <= v.to_id
   AND e.seal_entries IS NOT NULL ORDER BY e.id LIMIT 1;
SET LOCAL session_replication_role = replica;
DELETE FROM warden.audit_entries AS e USING victim_txn AS t
 WHERE e.workspace_id = t.workspace_id AND e.txid = t.txid;
DELETE FROM warden.audit_batches AS e USING victim_txn AS t
 WHERE e.workspace_id = t.workspace_id AND e.txid = t.txid;
DELETE FROM warden.audit_blocks AS b USING victim_block AS v
 WHERE b.workspace_id = v.workspace_id AND b.seq >= v.seq;
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
-- A row copied in under its own id (its primary key dropped first) is
-- found: ids are unique. (Rolled back after.)
BEGIN;
ALTER TABLE warden.audit_entries DROP CONSTRAINT audit_entries_pkey;
SET LOCAL session_replication_role = replica;
INSERT INTO warden.audit_entries SELECT * FROM warden.audit_entries WHERE action = 'later';
RESET session_replication_role;
SELECT workspace_id, intact,
       first_broken_id = (SELECT min(id) FROM warden.audit_entries WHERE action = 'later') AS at_the_copy
  FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
-- Nothing is built on a block whose own fields were edited (here its
-- transaction mark, to make the next block settle at once, before
-- transactions still running had sealed): it is reported instead.
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT warden.log_event('later still', 'x');
SELECT warden.clear_context();
BEGIN;
CREATE TEMP TABLE blocks_before AS
SELECT max(seq) AS seq, count(*) AS n FROM warden.audit_blocks
 WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000';
SET LOCAL session_replication_role = replica;
UPDATE warden.audit_blocks SET next_xid = 4611686018427387904
 WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000' AND seq = (SELECT seq FROM blocks_before);
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() WHERE NOT intact;
SELECT count(*) = (SELECT n FROM blocks_before) AS not_extended FROM warden.audit_blocks
 WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000';
ROLLBACK;

-- A redacted column renamed since enable_audit() is not logged in clear:
-- the table's writes fail (42703) until enable_audit() runs again.
CREATE TABLE public.renamed (n int PRIMARY KEY, secret text);
SELECT warden.enable_audit('public.renamed', redact => '{secret}');
ALTER TABLE public.renamed RENAME COLUMN secret TO pin;
SELECT regress.error_of($$INSERT INTO public.renamed VALUES (1, '1234')$$);
SELECT warden.enable_audit('public.renamed', redact => '{pin}');
INSERT INTO public.renamed VALUES (1, '1234');
SELECT new_values FROM warden.audit_log WHERE target = 'public.renamed' AND action = 'INSERT';
DROP TABLE public.renamed;

-- An application's events cannot pass for pg_warden's own.
SET ROLE regress_app;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT regress.error_of($$SELECT warden.log_event('key.shred', 'warden.workspace_keys')$$);
SELECT regress.error_of($$SELECT warden.log_event('delete', 'public.cards')$$);
SELECT regress.error_of($$SELECT warden.log_event('Membership.removed', 'x')$$);
SELECT regress.error_of($$SELECT warden.log_event(E' DELETE\u200b', 'public.cards')$$);
SELECT warden.log_event('key.created', 'api-keys/7');   -- an application's own API key
SELECT warden.clear_context();
RESET ROLE;

-- Disabling audit detaches the triggers; no more entries; and it is
-- recorded, as enabling is.
SET ROLE regress_owner;
SELECT warden.disable_audit('public.cards');
SELECT warden.disable_audit('public.cards');   -- idempotent
SELECT count(*) AS audit_triggers FROM pg_trigger WHERE tgrelid = 'public.cards'::regclass;
RESET ROLE;
SELECT workspace_id, db_role, action, target, detail FROM warden.audit_log
 WHERE action LIKE 'audit.%' AND target = 'public.cards' ORDER BY id;

-- A denial stays in the trail although the denied transaction rolls back.
SET ROLE regress_app;
BEGIN;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce') IS NOT NULL AS set;
SELECT regress.error_of($$SELECT warden.require('cards.destroy')$$);
-- Recorded whole, however long (a permission can be 127 characters).
SELECT regress.error_of($$SELECT warden.require(
    'quarterly_financial_reports_for_the_board.export_with_all_attachments_included')$$);
ROLLBACK;
RESET ROLE;
SELECT workspace_id, actor, db_role, action, target, detail
  FROM warden.audit_log WHERE action = 'permission.denied' ORDER BY id;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;

-- Changes to who may do what are recorded: memberships in their workspace's
-- chain (the tenant sees them), roles and permissions outside any
-- workspace. An UPDATE that moves a membership is a removal and an
-- addition; one that changes nothing is not recorded.
SET ROLE regress_admin;
INSERT INTO warden.memberships VALUES
    ('bbbbbbbb-0000-4000-8000-000000000000', '00000000-0000-4000-8000-00000000e412', 'viewer');
UPDATE warden.memberships SET role = 'manager' WHERE user_id = '00000000-0000-4000-8000-00000000e412';
UPDATE warden.memberships SET role = 'manager' WHERE user_id = '00000000-0000-4000-8000-00000000e412';
UPDATE warden.memberships SET workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000'
 WHERE user_id = '00000000-0000-4000-8000-00000000e412';
DELETE FROM warden.memberships WHERE user_id = '00000000-0000-4000-8000-00000000e412';
INSERT INTO warden.roles VALUES ('auditor', 50);
UPDATE warden.roles SET level = 55 WHERE name = 'auditor';
INSERT INTO warden.role_permissions VALUES ('auditor', 'reports.read'), ('auditor', 'audit.*');
DELETE FROM warden.roles WHERE name = 'auditor';   -- its permissions go with it
SELECT workspace_id, db_role, action, target, row_key, old_values, new_values
  FROM warden.audit_log
 WHERE target IN ('warden.memberships', 'warden.roles', 'warden.role_permissions')
   AND db_role = 'regress_admin'
 ORDER BY id;
RESET ROLE;
-- A workspace's trail shows the values of audited rows, which policies
-- may hide from some members: it needs audit.read (seeded for admin and
-- the roles above). B's manager sees only its own entries without;
-- granted audit.read, B's membership events, and nothing of A's or the
-- cluster's.
SET ROLE regress_app;
SELECT warden.set_context('bbbbbbbb-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-00000000ca20', false) IS NOT NULL AS set;
SELECT warden.log_event('report.viewed', 'reports/1');
SELECT warden.can('audit.read') AS may_read,
       count(*) FILTER (WHERE actor IS DISTINCT FROM warden.current_user_id()) AS others_seen,
       count(*) FILTER (WHERE actor = warden.current_user_id()) AS own_seen
  FROM warden.audit_log;
RESET ROLE;
INSERT INTO warden.role_permissions VALUES ('manager', 'audit.read');
SET ROLE regress_app;
SELECT warden.set_context('bbbbbbbb-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-00000000ca20', false) IS NOT NULL AS set;
SELECT action, row_key->>'user_id' AS user_id, old_values, new_values
  FROM warden.audit_log WHERE target = 'warden.memberships' ORDER BY id;
SELECT warden.clear_context();
RESET ROLE;
DELETE FROM warden.role_permissions WHERE role = 'manager' AND permission = 'audit.read';
-- A restore (pg_restore and pg_dump scripts load data with row_security =
-- off) by the tables' owner or a superuser is not recorded: those rows are
-- data coming back beside their own trail. Anyone else is recorded with
-- row_security off too.
SET row_security = off;
INSERT INTO warden.memberships VALUES
    ('bbbbbbbb-0000-4000-8000-000000000000', '00000000-0000-4000-8000-0000000ee001', 'viewer');
SET ROLE regress_admin;
INSERT INTO warden.memberships VALUES
    ('bbbbbbbb-0000-4000-8000-000000000000', '00000000-0000-4000-8000-0000000ee002', 'viewer');
RESET ROLE;
RESET row_security;
SELECT row_key->>'user_id' AS user_id, db_role FROM warden.audit_log
 WHERE action = 'membership.added' AND row_key->>'user_id' LIKE '%ee00_';
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;

-- Values are recorded exactly: every digit of a numeric, a float's
-- shortest exact form, the scale of a numeric(…, 2).
CREATE TABLE public.amounts (id int PRIMARY KEY, big numeric, f float8, price numeric(10,2));
SELECT warden.enable_audit('public.amounts');
INSERT INTO public.amounts VALUES (1, 12345678901234567890.123456789, 0.1::float8 + 0.2::float8, 1.50);
UPDATE public.amounts SET big = big + 0.000000001, f = 1e300 WHERE id = 1;
SELECT action, old_values, new_values FROM warden.audit_log WHERE target = 'public.amounts' AND action <> 'audit.enabled' ORDER BY id;
DROP TABLE public.amounts;

-- Every kind of column is recorded as SQL renders it in JSON: the text of
-- row_to_json(row), exactly (a numeric's scale, a float's shortest exact
-- form, NaN quoted, embedded json verbatim, jsonb as it prints, arrays,
-- composites, domains and enums as to_json renders them); an UPDATE
-- records the columns whose rendering changed (a numeric's scale, a
-- nested document), not one assigned its own value.
CREATE TYPE public.pair AS (x int, y text, z int[]);
CREATE TYPE public.mood AS ENUM ('ok', 'meh');
CREATE DOMAIN public.positive AS int CHECK (VALUE > 0);
CREATE DOMAIN public.label AS text;
CREATE TABLE public.kinds (i int PRIMARY KEY, s smallint, b bigint, n numeric(12,4),
    nn numeric, r real, f float8, nan float8, inf float8, t text, v varchar(5), c char(3),
    nm name, u uuid, ts timestamptz, tz timestamp, d date, tm time, iv interval, ok bool,
    arr int[], txts text[], j json, jb jsonb, bin bytea, ip inet, p public.pair, dropped int,
    m public.mood, pos public.positive, lb public.label, ctl text, e text);
ALTER TABLE public.kinds DROP COLUMN dropped;
SELECT warden.enable_audit('public.kinds');
INSERT INTO public.kinds VALUES (1, -7, 9007199254740993, 12.3400, 'NaN', 1.5, 0.1, 'NaN',
    '-Infinity', E'\u00e9 "q" \t \\', 'ab', 'x', 'nm', '6b5acb58-2d2e-4586-9320-20f19124dd5d',
    '2026-11-23 10:00:01.5+00', '2026-11-23 10:00:01', '2026-11-23', '10:00', '1 day 2 hours',
    true, '{1,NULL,3}', '{"a b",NULL,"c\"d"}', '{"b": 1, "a": [2], "b": 3}', '{"z": 1.10}',
    '\x00ff', '10.0.0.1/8', ROW(1, 'x', '{4,5}'), 'meh', 5, 'lab', E'\x01\x1f\b\f\n\r', NULL);
SELECT new_values FROM warden.audit_log WHERE target = 'public.kinds' AND action <> 'audit.enabled';
SELECT l.new_values::text = row_to_json(k)::text AS same_as_row_to_json
  FROM warden.audit_log AS l, public.kinds AS k WHERE l.target = 'public.kinds' AND action <> 'audit.enabled';
UPDATE public.kinds SET n = 12.34, jb = '{"z": 1.1}', arr = '{1,NULL,3}', p = ROW(1, 'y', '{4,5}'),
    e = NULL, t = t;
SELECT old_values, new_values FROM warden.audit_log WHERE target = 'public.kinds' AND action = 'UPDATE';
DROP TABLE public.kinds;
DROP TYPE public.pair;
DROP TYPE public.mood;
DROP DOMAIN public.positive;
DROP DOMAIN public.label;

-- A statement that changes 64 rows or more of a table is stored in
-- batches (up to 1,024 entries a row of warden.audit_batches), and read
-- through warden.audit_log like any entries: a batch's entries share its
-- id, with txn_seq one apart, values as row_to_json renders them, the seal
-- on the transaction's last entry. 63 rows stay single entries.
CREATE TABLE public.bulk (n int PRIMARY KEY, label text);
SELECT warden.enable_audit('public.bulk');
INSERT INTO public.bulk SELECT g, 'row ' || g FROM generate_series(1, 63) AS g;
INSERT INTO public.bulk SELECT g, 'row ' || g FROM generate_series(101, 1125) AS g;
SELECT (SELECT count(*) FROM warden.audit_entries WHERE target = 'public.bulk' AND action <> 'audit.enabled') AS single_entries,
       (SELECT count(*) FROM warden.audit_batches WHERE target = 'public.bulk') AS batches,
       (SELECT string_agg(entries::text, ',' ORDER BY id) FROM warden.audit_batches
         WHERE target = 'public.bulk') AS batch_sizes;
SELECT count(*) AS entries, count(DISTINCT id) AS ids, count(DISTINCT (id, txn_seq)) AS keys,
       bool_and(l.new_values::text = row_to_json(b)::text) AS same_as_row_to_json,
       bool_and(l.row_key::text = '{"n":' || b.n || '}') AS row_keys
  FROM warden.audit_log AS l JOIN public.bulk AS b ON (l.row_key->>'n')::int = b.n
 WHERE l.target = 'public.bulk';
SELECT count(DISTINCT id) AS batch_ids, max(txn_seq) - min(txn_seq) = 1024 AS seqs_one_apart,
       count(*) FILTER (WHERE seal_entries IS NOT NULL) AS seals,
       max(txn_seq) FILTER (WHERE seal_entries IS NOT NULL) = max(txn_seq) AS seal_on_the_last
  FROM warden.audit_log WHERE target = 'public.bulk' AND action <> 'audit.enabled' AND (row_key->>'n')::int > 100;
UPDATE public.bulk SET label = upper(label) WHERE n > 1000;
DELETE FROM public.bulk WHERE n > 1061;
SELECT action, count(*), min(old_values::text), min(new_values::text)
  FROM warden.audit_log WHERE target = 'public.bulk' AND action <> 'audit.enabled' AND action <> 'INSERT' GROUP BY 1 ORDER BY 1;
SELECT action, entries, row_keys IS NOT NULL AS keys, old_values IS NOT NULL AS old,
       new_values IS NOT NULL AS new, details IS NOT NULL AS details
  FROM warden.audit_batches WHERE target = 'public.bulk' ORDER BY id;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
-- The latest entries can be read newest first from the indexes, batches
-- included, without sorting or reading the whole trail (the plan the
-- planner picks for a trail of any size; forced here, where the tables are
-- small enough for a sort to look cheaper).
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE line text; plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || query LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END $$;
BEGIN;
SET LOCAL enable_sort = off;
SET LOCAL enable_seqscan = off;
SELECT plan_of LIKE '%Merge Append%' AS merged, plan_of NOT LIKE '%Sort Method%' AS no_sort,
       (SELECT sum(m[1]::int) FROM regexp_matches(plan_of, 'Function Scan on x\w* \(actual rows=(\d+)', 'g') AS m)
           AS batch_entries_unpacked
  FROM pg_temp.plan_of('SELECT id, txn_seq FROM warden.audit_log ORDER BY id DESC LIMIT 10');
COMMIT;
SELECT id = (SELECT max(id) FROM warden.audit_batches) AS newest_batch, txn_seq
  FROM warden.audit_log ORDER BY id DESC LIMIT 3;
SELECT regress.error_of('DELETE FROM warden.audit_batches');
SELECT regress.error_of('UPDATE warden.audit_batches SET details = NULL');
-- An edited, shortened, lengthened or deleted batch is located: at the
-- batch; a deleted one (here its transaction's only row, with its seal)
-- where the block covering that transaction begins, no later than the
-- next entry.
CREATE TEMP TABLE kept_batch AS SELECT * FROM warden.audit_batches WHERE action = 'UPDATE';
SET session_replication_role = replica;
UPDATE warden.audit_batches SET new_values[7] = '{"n":1006,"label":"ROW 1006!"}' WHERE action = 'UPDATE';
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT id FROM kept_batch) AS at_the_batch
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
UPDATE warden.audit_batches SET new_values = new_values[1:124] WHERE action = 'UPDATE';
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT id FROM kept_batch) AS at_the_batch
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
UPDATE warden.audit_batches AS b SET new_values = k.new_values || '{"x":1}'::json
  FROM kept_batch AS k WHERE b.id = k.id;
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT id FROM kept_batch) AS at_the_batch
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
DELETE FROM warden.audit_batches WHERE action = 'UPDATE';
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id <= (SELECT min(id) FROM warden.audit_log
                                                  WHERE txid > (SELECT txid FROM kept_batch)) AS located
  FROM warden.verify_audit() ORDER BY 1;
SET session_replication_role = replica;
INSERT INTO warden.audit_batches SELECT * FROM kept_batch;
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
TRUNCATE public.bulk;
-- Entries written mid-statement (every 10,000) are the current
-- subtransaction's only. A write that fails inside a savepoint goes with
-- it and takes no earlier entry of the transaction along (the failure
-- here: the trail's id sequence set back, so the write hits an existing
-- batch's id).
BEGIN;
INSERT INTO public.bulk VALUES (0);
SELECT setval('warden.audit_id_seq', (SELECT min(id) FROM warden.audit_batches), false) > 0 AS set_back;
SELECT regress.error_of('INSERT INTO public.bulk SELECT g FROM generate_series(1, 10000) AS g');
SELECT setval('warden.audit_id_seq', greatest((SELECT max(id) FROM warden.audit_entries),
                                              (SELECT max(id) FROM warden.audit_batches))) > 0 AS restored;
COMMIT;
SELECT n FROM public.bulk;
SELECT action, row_key FROM warden.audit_log WHERE target = 'public.bulk' AND action <> 'audit.enabled' AND txid = (
    SELECT max(txid) FROM warden.audit_log WHERE target = 'public.bulk' AND action <> 'audit.enabled') ORDER BY id;
-- Large rows force a write before 10,000 entries, once 16 MB of JSON is
-- buffered: a row here is about 1,000,030 bytes of JSON, so 16 rows stay
-- buffered and a 17th forces the write. With the trail's ids set back (as
-- above) that write fails, in the statement rather than at COMMIT. Inside a
-- savepoint only its own entries count (they are all it could write).
CREATE TABLE public.large (n int PRIMARY KEY, body text);
SELECT warden.enable_audit('public.large');
CREATE FUNCTION pg_temp.set_back() RETURNS boolean LANGUAGE sql
    AS $$SELECT setval('warden.audit_id_seq', (SELECT min(id) FROM warden.audit_entries), false) > 0$$;
BEGIN;
SELECT pg_temp.set_back();
SELECT regress.error_of($$INSERT INTO public.large SELECT g, repeat('x', 1000000) FROM generate_series(1, 16) AS g$$) AS sixteen;
ROLLBACK;
BEGIN;
SELECT pg_temp.set_back();
SELECT regress.error_of($$INSERT INTO public.large SELECT g, repeat('x', 1000000) FROM generate_series(1, 17) AS g$$) AS seventeen;
ROLLBACK;
BEGIN;
SELECT pg_temp.set_back();
INSERT INTO public.large SELECT g, repeat('x', 1000000) FROM generate_series(1, 10) AS g;
SAVEPOINT s;
INSERT INTO public.large SELECT g, repeat('x', 1000000) FROM generate_series(11, 20) AS g;
RELEASE s;
\set VERBOSITY terse
INSERT INTO public.large VALUES (21, repeat('x', 1000000));
\set VERBOSITY default
ROLLBACK;
SELECT setval('warden.audit_id_seq', greatest((SELECT max(id) FROM warden.audit_entries),
                                              (SELECT max(id) FROM warden.audit_batches))) > 0 AS restored;
INSERT INTO public.large SELECT g, repeat('x', 1000000) FROM generate_series(1, 20) AS g;
SELECT count(*) AS entries, sum(length(new_values->>'body')) AS bytes
  FROM warden.audit_log WHERE target = 'public.large' AND action <> 'audit.enabled';
DROP TABLE public.large;

-- The trigger functions refuse to run attached other than as
-- enable_audit() attaches them (no rows to read, or a BEFORE trigger that
-- would skip the change).
CREATE TABLE public.misattached (n int);
CREATE TRIGGER t BEFORE INSERT ON public.misattached FOR EACH ROW EXECUTE FUNCTION warden.audit_row();
SELECT regress.error_of('INSERT INTO public.misattached VALUES (1)');
DROP TRIGGER t ON public.misattached;
CREATE TRIGGER t AFTER INSERT ON public.misattached FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_row();
SELECT regress.error_of('INSERT INTO public.misattached VALUES (1)');
DROP TRIGGER t ON public.misattached;
CREATE TRIGGER t AFTER INSERT ON public.misattached FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_access_change('roles');
SELECT regress.error_of('INSERT INTO public.misattached VALUES (1)');
DROP TRIGGER t ON public.misattached;
CREATE TRIGGER t AFTER INSERT ON public.misattached FOR EACH ROW EXECUTE FUNCTION warden.audit_truncate();
SELECT regress.error_of('INSERT INTO public.misattached VALUES (1)');
DROP TRIGGER t ON public.misattached;
CREATE TRIGGER t AFTER INSERT ON public.misattached FOR EACH STATEMENT EXECUTE FUNCTION warden.audit_truncate();
SELECT regress.error_of('INSERT INTO public.misattached VALUES (1)');
DROP TABLE public.misattached;
-- A savepoint that wrote a full buffer and is rolled back takes only its
-- own entries along: the 9,999 recorded before it are written at COMMIT
-- and the chain verifies.
CREATE TABLE public.spill (n int PRIMARY KEY);
SELECT warden.enable_audit('public.spill');
BEGIN;
INSERT INTO public.spill SELECT g FROM generate_series(1, 9999) AS g;
SAVEPOINT s;
INSERT INTO public.spill SELECT g FROM generate_series(10000, 20000) AS g;
ROLLBACK TO s;
COMMIT;
SELECT count(*) AS entries FROM warden.audit_log WHERE target = 'public.spill' AND action <> 'audit.enabled';
-- The seal is on the transaction's last entry, which a mid-statement write
-- leaves for the COMMIT to write (here exactly 10,000 rows: the write at
-- the 10,000th entry leaves it).
INSERT INTO public.spill SELECT g FROM generate_series(30001, 40000) AS g;
SELECT target, txn_seq, seal_entries FROM warden.audit_log
 WHERE target = 'public.spill' AND action <> 'audit.enabled' AND seal_entries IS NOT NULL ORDER BY id;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
-- A transaction whose statement has written rows before its commit (here
-- 10,000 entries) has rows not sealed yet: verify_audit() and
-- purge_audit() refuse to run in it rather than report them.
BEGIN;
INSERT INTO public.spill SELECT g FROM generate_series(50001, 60000) AS g;
SELECT regress.error_of('SELECT * FROM warden.verify_audit()');
SELECT regress.error_of($$SELECT warden.purge_audit(now())$$);
ROLLBACK;
DROP TABLE public.bulk, public.spill;

-- The owner can switch the audit triggers off, but not without a trace:
-- ALTER TABLE ... DISABLE / ENABLE [REPLICA | ALWAYS] TRIGGER of one of
-- them, or of ALL or USER, is recorded (audit.paused while one of them
-- does not fire in an ordinary session, audit.resumed when both do); a
-- rolled-back switch leaves nothing, nor does one on a table not audited.
SET ROLE regress_owner;
CREATE TABLE public.paused (n int PRIMARY KEY);
SELECT warden.enable_audit('public.paused');
ALTER TABLE public.paused DISABLE TRIGGER warden_audit;
INSERT INTO public.paused VALUES (1);
ALTER TABLE public.paused ENABLE TRIGGER warden_audit;
ALTER TABLE public.paused DISABLE TRIGGER USER, ENABLE REPLICA TRIGGER warden_audit_truncate;
ALTER TABLE public.paused ENABLE TRIGGER USER;
ALTER TABLE public.paused ENABLE ALWAYS TRIGGER warden_audit;
BEGIN;
ALTER TABLE public.paused DISABLE TRIGGER warden_audit;
ROLLBACK;
INSERT INTO public.paused VALUES (2);
-- The triggers are known by what they run: renamed, still recorded; the
-- table's name unqualified, as migrations write it.
ALTER TRIGGER warden_audit ON public.paused RENAME TO quiet;
SET search_path = public;
ALTER TABLE paused DISABLE TRIGGER quiet;
ALTER TABLE paused ENABLE TRIGGER USER;
RESET search_path;
ALTER TRIGGER quiet ON public.paused RENAME TO warden_audit;
CREATE TABLE public.unaudited (n int);
ALTER TABLE public.unaudited DISABLE TRIGGER USER;
RESET ROLE;
-- A superuser's ALL and USER switches are not recorded: a data-only
-- restore switches every table's that way (and a superuser can stop the
-- trail untraced anyway); one naming an audit trigger is.
ALTER TABLE public.paused DISABLE TRIGGER ALL;
ALTER TABLE public.paused ENABLE TRIGGER ALL;
ALTER TABLE public.paused DISABLE TRIGGER warden_audit_truncate;
ALTER TABLE public.paused ENABLE TRIGGER warden_audit_truncate;
SELECT action, target, row_key, detail FROM warden.audit_log
 WHERE target IN ('public.paused', 'public.unaudited') ORDER BY id;
SELECT regress.error_of($$SELECT warden.log_event('audit.paused', 'public.paused')$$);
DROP TABLE public.paused, public.unaudited;

-- Partitions: PostgreSQL clones the row trigger to every partition, and
-- pg_warden gives each one the TRUNCATE trigger too, whether it was made
-- or attached before or after enable_audit (by its event trigger, with
-- the rights of whoever ran the DDL), so a partition truncated on its own
-- is recorded. An inheritance child (PostgreSQL clones nothing to those)
-- also gets the row trigger, with the parent's redacted columns.
-- disable_audit takes them all off again.
SET ROLE regress_owner;
CREATE TABLE public.parted (n int PRIMARY KEY, secret text) PARTITION BY RANGE (n);
CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (10);
SELECT warden.enable_audit('public.parted', '{secret}');
CREATE TABLE public.parted_2 PARTITION OF public.parted FOR VALUES FROM (10) TO (20);
CREATE TABLE public.parted_3 (n int PRIMARY KEY, secret text);
ALTER TABLE public.parted ATTACH PARTITION public.parted_3 FOR VALUES FROM (20) TO (30);
-- A table audited on its own (here with its trigger renamed, which
-- PostgreSQL's clone would not clash with) is refused as a partition of
-- an audited table: both triggers would record every change.
CREATE TABLE public.parted_4 (n int PRIMARY KEY, secret text);
SELECT warden.enable_audit('public.parted_4');
ALTER TRIGGER warden_audit ON public.parted_4 RENAME TO own_audit;
SELECT regress.error_of($$ALTER TABLE public.parted ATTACH PARTITION public.parted_4 FOR VALUES FROM (30) TO (40)$$);
SELECT warden.disable_audit('public.parted_4');
ALTER TABLE public.parted ATTACH PARTITION public.parted_4 FOR VALUES FROM (30) TO (40);
CREATE TABLE public.legacy (n int PRIMARY KEY, secret text);
SELECT warden.enable_audit('public.legacy', '{secret}');
CREATE TABLE public.legacy_kid (extra int) INHERITS (public.legacy);
-- (Audited on its own, redacting another column: carrying never shows
-- more, so it redacts both.)
CREATE TABLE public.legacy_adopted (n int NOT NULL, secret text, extra int);
SELECT warden.enable_audit('public.legacy_adopted', '{extra}');
ALTER TABLE public.legacy_adopted INHERIT public.legacy;
INSERT INTO public.parted VALUES (1, 'a'), (11, 'b'), (21, 'c');
INSERT INTO public.legacy_kid VALUES (1, 'hush', 7);
INSERT INTO public.legacy_adopted VALUES (2, 'hush', 8);
UPDATE public.legacy SET secret = 'still hush';
TRUNCATE public.parted_1;
TRUNCATE public.parted_2, public.parted_3;
TRUNCATE public.legacy_kid;
RESET ROLE;
SELECT action, target, row_key, old_values, new_values FROM warden.audit_log
 WHERE target LIKE 'public.parted%' OR target LIKE 'public.legacy%' ORDER BY id, txn_seq;
SET ROLE regress_owner;
SELECT warden.disable_audit('public.parted');
SELECT warden.disable_audit('public.legacy');
SELECT tgrelid::regclass AS "table", tgname FROM pg_catalog.pg_trigger
 WHERE tgrelid::regclass::text ~ '^(parted|legacy)' ORDER BY 1, 2;
DROP TABLE public.parted, public.legacy_kid, public.legacy_adopted, public.legacy;
RESET ROLE;
-- Each table whose audit triggers disable_audit took off is recorded.
SELECT action, target, detail FROM warden.audit_log
 WHERE action = 'audit.disabled' AND target ~ '^public\.(parted|legacy)' ORDER BY id;

-- Names are looked up once per backend, and again after a rename.
CREATE SCHEMA regress_s;
CREATE TABLE regress_s.t (n int PRIMARY KEY);
SELECT warden.enable_audit('regress_s.t');
INSERT INTO regress_s.t VALUES (1);
ALTER SCHEMA regress_s RENAME TO regress_renamed;
INSERT INTO regress_renamed.t VALUES (2);
SELECT target, row_key FROM warden.audit_log WHERE target LIKE 'regress\_%.t' AND action <> 'audit.enabled' ORDER BY id;
DROP SCHEMA regress_renamed CASCADE;

-- Purge refuses a chain that does not verify: it would erase the
-- evidence.
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM warden.audit_entries
 WHERE id = (SELECT min(id) FROM warden.audit_entries WHERE workspace_id IS NOT NULL);
RESET session_replication_role;
SELECT regexp_replace(regress.error_of($$SELECT warden.purge_audit(now() + interval '1 day')$$),
                      'row \d+', 'row N') AS refused;
ROLLBACK;
-- (The workspace's oldest transaction, to put back after the purge.)
CREATE TEMP TABLE purged_txn AS
SELECT * FROM warden.audit_entries
 WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000'
   AND txid = (SELECT txid FROM warden.audit_entries
                WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000' ORDER BY id LIMIT 1);
-- Purge: whole transactions older than the cut-off go, a mark stays, and
-- the rest still verifies.
SET ROLE regress_admin;
SELECT warden.purge_audit(now() + interval '1 day') > 0 AS purged_some;
SELECT count(*) AS entries_left FROM warden.audit_log;
SELECT workspace_id, purge IS NOT NULL AS purge_mark, (purge->>'purged_through_seq')::bigint = seq - 1 AS marks_all_before FROM warden.audit_blocks ORDER BY 1, seq;
SELECT * FROM warden.verify_audit();
SELECT regress.error_of($$SELECT warden.purge_audit(NULL)$$);
RESET ROLE;
-- Purges go on: each leaves a mark, earlier marks go with what they
-- precede, and the chain verifies after every one.
CREATE TABLE public.later (n int PRIMARY KEY);
SELECT warden.enable_audit('public.later');
INSERT INTO public.later VALUES (1);
INSERT INTO public.later VALUES (2);
SET ROLE regress_admin;
SELECT warden.purge_audit(now() + interval '1 day') AS second_purge;
RESET ROLE;
INSERT INTO public.later VALUES (3);
SET ROLE regress_admin;
SELECT warden.purge_audit(now() + interval '1 day') AS third_purge;
SELECT count(*) AS entries_left FROM warden.audit_log;
SELECT count(*) FILTER (WHERE purge IS NOT NULL) AS marks, count(*) AS blocks
  FROM warden.audit_blocks WHERE workspace_id IS NULL;
SELECT * FROM warden.verify_audit();
-- Nothing older than the cut-off: nothing goes.
RESET ROLE;
INSERT INTO public.later VALUES (4);
SET ROLE regress_admin;
SELECT warden.purge_audit(now() - interval '1 day') AS nothing_older;
SELECT count(*) AS entries_left FROM warden.audit_log;
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
RESET ROLE;
-- A purged transaction put back is found (the mark records where the
-- purged part ended); so is a forged mark claiming more was purged (a
-- mark anchors the chain only if its own MAC holds). (Rolled back after.)
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO warden.audit_entries SELECT * FROM purged_txn;
RESET session_replication_role;
SELECT workspace_id, intact, first_broken_id = (SELECT min(id) FROM purged_txn) AS at_the_row
  FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO warden.audit_blocks
SELECT workspace_id, seq + 1, to_id, to_id, next_to_id, next_xid, 0,
       json_build_object('purged_through_seq', seq, 'purged_through_id', to_id,
                         'anchor_mac', encode(mac, 'hex')),
       mac, mac, fields_mac
  FROM warden.audit_blocks WHERE workspace_id = 'aaaaaaaa-0000-4000-8000-000000000000'
 ORDER BY seq DESC LIMIT 1;
RESET session_replication_role;
SELECT workspace_id, intact FROM warden.verify_audit() WHERE NOT intact;
ROLLBACK;
-- The nil UUID is a workspace like any other: its chain is its own, not
-- the chain of what happens outside any workspace.
INSERT INTO warden.memberships
VALUES ('00000000-0000-0000-0000-000000000000', '00000000-0000-4000-8000-0000000a11ce', 'user');
SET ROLE regress_app;
SELECT warden.set_context('00000000-0000-0000-0000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT warden.log_event('nil.event', 'x');
SELECT warden.clear_context();
RESET ROLE;
SELECT warden.log_event('outside.event', 'y');
SELECT workspace_id, intact FROM warden.verify_audit() ORDER BY 1;
SELECT workspace_id, action FROM warden.audit_log
 WHERE action IN ('nil.event', 'outside.event') ORDER BY id;
DROP TABLE public.later;

DROP TABLE public.cards, public.notes;
DROP FUNCTION regress.peek(uuid, json);
DELETE FROM warden.memberships;
REVOKE CREATE ON SCHEMA public FROM regress_owner;
DROP ROLE regress_app, regress_admin, regress_owner;
