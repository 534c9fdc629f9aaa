-- Row level security under pg_warden's generated policies.
-- 1M rows in 100 workspaces, an index on the workspace column; queries run
-- as a non-superuser application role with a context (superusers bypass RLS).
\set ws '''00000000-0000-4000-8000-000000000042'''
CREATE TABLE plain_docs (id bigint PRIMARY KEY, workspace_id uuid NOT NULL, amount int NOT NULL);
INSERT INTO plain_docs
SELECT g, ('00000000-0000-4000-8000-' || lpad((g % 100)::text, 12, '0'))::uuid, g % 1000
  FROM generate_series(1, 1000000) AS g;
CREATE INDEX ON plain_docs (workspace_id);
CREATE TABLE docs (LIKE plain_docs INCLUDING ALL);
INSERT INTO docs SELECT * FROM plain_docs;
CREATE TABLE bare_docs (LIKE plain_docs INCLUDING ALL);
INSERT INTO bare_docs SELECT * FROM plain_docs;
VACUUM ANALYZE plain_docs, docs, bare_docs;

SELECT warden.isolate('docs');
SELECT warden.protect('docs', 'docs');
SET warden.policy_calls = bare;
SELECT warden.isolate('bare_docs');
SELECT warden.protect('bare_docs', 'docs');
RESET warden.policy_calls;

INSERT INTO warden.memberships VALUES (:ws, '00000000-0000-4000-8000-0000000000aa', 'viewer');
INSERT INTO warden.role_permissions VALUES ('viewer', 'docs.read');
DROP ROLE IF EXISTS bench_app;
CREATE ROLE bench_app IN ROLE warden_user;
GRANT SELECT ON plain_docs, docs, bare_docs TO bench_app;
GRANT USAGE ON SCHEMA bench TO bench_app;
SET ROLE bench_app;
SELECT warden.set_context(:ws, '00000000-0000-4000-8000-0000000000aa', false) IS NOT NULL AS context_set \gset

-- Index scan of one workspace (10k rows): generated policies vs the WHERE a
-- developer would write on a table without RLS.
SELECT bench.compare('rls: isolate+protect vs hand-written WHERE (10k of 1M rows)',
    format('SELECT count(*), sum(amount) FROM plain_docs WHERE workspace_id = %L', :ws),
    'SELECT count(*), sum(amount) FROM docs', 31, goal => '<= 1.10x');

-- Sequential scan of all 1M rows where the policy calls the helpers bare on
-- every row (the Citus form) vs a comparison with a constant.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SET max_parallel_workers_per_gather = 0;
SELECT bench.compare('rls: bare helpers per row vs constant (seq scan, 1M rows)',
    format('SELECT count(*) FROM plain_docs WHERE workspace_id = %L', :ws),
    'SELECT count(*) FROM bare_docs', 15, goal => '<= 1.5x');
RESET ALL;
