-- Field encryption: 64-byte fields, 100k rows, as a non-superuser
-- application role with a context, against pgcrypto.
\set ws '''00000000-0000-4000-8000-000000000077'''
INSERT INTO warden.memberships VALUES (:ws, '00000000-0000-4000-8000-0000000000bb', 'user');
DROP ROLE IF EXISTS bench_enc;
CREATE ROLE bench_enc IN ROLE warden_user;
GRANT USAGE ON SCHEMA bench TO bench_enc;
GRANT CREATE ON SCHEMA public TO bench_enc;
SET ROLE bench_enc;
SELECT warden.set_context(:ws, '00000000-0000-4000-8000-0000000000bb', false) IS NOT NULL AS context_set \gset

CREATE TABLE fields AS
SELECT g AS id, rpad(md5(g::text), 64, 'x') AS v FROM generate_series(1, 100000) AS g;
CREATE TABLE few AS SELECT * FROM fields WHERE id <= 1000;
CREATE TABLE plain_rows (id int, v text);
CREATE TABLE warden_rows (id int, v bytea);
CREATE TABLE pgcrypto_rows (id int, v bytea);
INSERT INTO warden_rows SELECT id, warden.encrypt(v) FROM fields;
INSERT INTO pgcrypto_rows SELECT id, encrypt(convert_to(v, 'UTF8'), 'k3y-0f-32-bytes-for-aes-256-cbc!', 'aes') FROM fields;
INSERT INTO plain_rows SELECT * FROM fields;
VACUUM ANALYZE fields, few, plain_rows, warden_rows, pgcrypto_rows;

SELECT bench.compare('encrypt 100k x 64 B: warden.encrypt vs pgcrypto encrypt(aes)',
    $$SELECT count(encrypt(convert_to(v, 'UTF8'), 'k3y-0f-32-bytes-for-aes-256-cbc!', 'aes')) FROM fields$$,
    'SELECT count(warden.encrypt(v)) FROM fields', 7, goal => '< 1.0x');
SELECT bench.compare('decrypt 100k x 64 B: warden.decrypt vs pgcrypto decrypt(aes)',
    $$SELECT count(convert_from(decrypt(v, 'k3y-0f-32-bytes-for-aes-256-cbc!', 'aes'), 'UTF8')) FROM pgcrypto_rows$$,
    'SELECT count(warden.decrypt(v)) FROM warden_rows', 7, goal => '< 1.0x');
SELECT bench.compare('encrypt 1k x 64 B: warden.encrypt vs pgp_sym_encrypt',
    $$SELECT count(pgp_sym_encrypt(v, 'passphrase')) FROM few$$,
    'SELECT count(warden.encrypt(v)) FROM few', 3, goal => '<= 0.01x');
SELECT bench.compare('SELECT 100k rows: decrypting one column vs plain',
    'SELECT sum(length(v)) FROM plain_rows',
    'SELECT sum(length(warden.decrypt(v))) FROM warden_rows', 7, goal => '<= 5x');
SELECT bench.compare('INSERT 100k rows: one encrypted column vs plain',
    'INSERT INTO plain_rows SELECT * FROM fields',
    'INSERT INTO warden_rows SELECT id, warden.encrypt(v) FROM fields', 7,
    before => 'TRUNCATE plain_rows, warden_rows', goal => '<= 1.5x');
RESET ROLE;
