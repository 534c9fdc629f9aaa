-- What CREATE EXTENSION pg_warden gives a database, as a user inspects it.
SELECT extname, extversion = warden.library_version() AS library_matches, extrelocatable
  FROM pg_extension WHERE extname = 'pg_warden';

-- The roles the extension creates, and how they nest.
SELECT rolname, rolcanlogin, rolsuper, rolbypassrls
  FROM pg_roles WHERE rolname LIKE 'warden\_%' ORDER BY 1;
SELECT pg_has_role('warden_admin', 'warden_user', 'MEMBER') AS admin_is_user;

-- The role ladder.
SELECT name, level FROM warden.roles ORDER BY level DESC;
SELECT role, permission FROM warden.role_permissions ORDER BY 1, 2;

-- Every function: volatility, strictness, parallel safety, security, who may run it.
SELECT p.oid::regprocedure AS function, p.provolatile AS vol, p.proisstrict AS strict,
       p.proparallel AS par, p.prosecdef AS secdef, p.proconfig, p.proacl
  FROM pg_proc p WHERE p.pronamespace = 'warden'::regnamespace ORDER BY p.oid::regprocedure::text;

-- Tables and who may touch them; which are dumped with pg_dump.
SELECT c.relname, c.relacl FROM pg_class c
 WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind IN ('r', 'v', 'S') ORDER BY 1;
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'pg_warden' ORDER BY 1;

-- Settings, their context (who may change them) and defaults.
SELECT name, context, vartype,
       CASE WHEN name = 'warden.master_key_file' AND setting <> '' THEN '(a path)' ELSE setting END AS setting
  FROM pg_settings WHERE name LIKE 'warden.%' ORDER BY 1;

-- The tables check what they hold.
SELECT regress.error_of($$INSERT INTO warden.roles VALUES ('Bad Name', 10)$$);
SELECT regress.error_of($$INSERT INTO warden.roles VALUES ('ok', -1)$$);
SELECT regress.error_of($$INSERT INTO warden.role_permissions VALUES ('admin', '')$$);
SELECT regress.error_of($$INSERT INTO warden.role_permissions VALUES ('admin', 'invoices read')$$);
SELECT regress.error_of($$INSERT INTO warden.role_permissions VALUES ('admin', 'a..b')$$);
SELECT regress.error_of($$INSERT INTO warden.role_permissions VALUES ('admin', 'invoices.read.all')$$);
SELECT regress.error_of($$INSERT INTO warden.role_permissions VALUES ('nobody', 'invoices.read')$$);
SELECT regress.error_of($$INSERT INTO warden.memberships VALUES (NULL, gen_random_uuid(), 'admin')$$);
INSERT INTO warden.role_permissions VALUES ('admin', 'invoices.*'), ('viewer', 'invoices.read'), ('admin', '*');

-- Inserting an existing role updates it (this is what lets pg_restore bring
-- edited seed levels back); inserting an existing permission is a no-op.
INSERT INTO warden.roles VALUES ('manager', 65);
INSERT INTO warden.role_permissions VALUES ('viewer', 'invoices.read');
SELECT name, level FROM warden.roles WHERE name = 'manager';
SELECT count(*) FROM warden.role_permissions WHERE role = 'viewer';

-- A role with no pg_warden grant sees nothing; an application role reads the ladder only.
CREATE ROLE regress_stranger;
CREATE ROLE regress_app IN ROLE warden_user;
SET ROLE regress_stranger;
SELECT regress.error_of('SELECT * FROM warden.roles');
SELECT regress.error_of('SELECT * FROM warden.memberships');
SELECT regress.error_of('SET warden.trust_jwt_claims = on');
SELECT regress.error_of('SET warden.context_scope = transaction');
SELECT regress.error_of('SET warden.master_key_file = ''/tmp/key''');
SELECT regress.error_of('SHOW warden.master_key_file');
SET ROLE regress_app;
SELECT count(*) AS roles_visible FROM warden.roles;
SELECT regress.error_of('SELECT * FROM warden.memberships');
SELECT regress.error_of($$UPDATE warden.roles SET level = 99 WHERE name = 'viewer'$$);
RESET ROLE;

-- Dropping and re-creating the extension is clean: nothing is left in the
-- (control-file) schema; the cluster-wide roles stay.
DROP EXTENSION pg_warden;
SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'warden'::regnamespace)
     + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'warden'::regnamespace) AS leftovers;
CREATE EXTENSION pg_warden;
SELECT name, level FROM warden.roles ORDER BY level DESC;
DROP ROLE regress_stranger, regress_app;
