-- The audit trail: bulk INSERT ... SELECT of 100k rows into a table with
-- pg_warden's audit trigger, vs the same table unaudited, and vs a plain
-- PL/pgSQL trigger that logs to_jsonb(NEW) into a log table. As a
-- non-superuser application role with a context.
\set ws '''00000000-0000-4000-8000-000000000088'''
INSERT INTO warden.memberships VALUES (:ws, '00000000-0000-4000-8000-0000000000cc', 'user');
DROP ROLE IF EXISTS bench_audit;
CREATE ROLE bench_audit IN ROLE warden_user;
GRANT USAGE ON SCHEMA bench TO bench_audit;
GRANT CREATE ON SCHEMA public TO bench_audit;
SET ROLE bench_audit;
SELECT warden.set_context(:ws, '00000000-0000-4000-8000-0000000000cc', false) IS NOT NULL AS context_set \gset

CREATE TABLE source AS
SELECT g AS id, :ws::uuid AS workspace_id, md5(g::text) AS title, g % 1000 AS amount
  FROM generate_series(1, 100000) AS g;
CREATE TABLE plain (id int PRIMARY KEY, workspace_id uuid, title text, amount int);
CREATE TABLE audited (LIKE plain INCLUDING ALL);
CREATE TABLE plpgsql_audited (LIKE plain INCLUDING ALL);
SELECT bench.plpgsql_log_table() \gset
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON plpgsql_audited
    FOR EACH ROW EXECUTE FUNCTION bench.plpgsql_audit();
SELECT warden.enable_audit('audited');
VACUUM ANALYZE source;

SELECT bench.compare('bulk INSERT 100k rows: audited vs unaudited',
    'INSERT INTO plain SELECT * FROM source',
    'INSERT INTO audited SELECT * FROM source', 5,
    before => 'TRUNCATE plain, audited', goal => '<= 2x');
SELECT bench.compare('bulk INSERT 100k rows: pg_warden vs PL/pgSQL to_jsonb trigger',
    'INSERT INTO plpgsql_audited SELECT * FROM source',
    'INSERT INTO audited SELECT * FROM source', 5,
    before => 'TRUNCATE plpgsql_audited, plpgsql_log, audited', goal => '<= 0.5x');
RESET ROLE;
