-- Field encryption as an application sees it, as non-superuser roles:
-- regress_app (warden_user) encrypts and decrypts in its workspace;
-- regress_admin (warden_admin) manages keys.
INSERT INTO warden.memberships (workspace_id, user_id, role) VALUES
    ('aaaaaaaa-0000-4000-8000-000000000000', '00000000-0000-4000-8000-0000000a11ce', 'admin'),
    ('bbbbbbbb-0000-4000-8000-000000000000', '00000000-0000-4000-8000-00000000ca20', 'manager');
CREATE ROLE regress_app IN ROLE warden_user;
CREATE ROLE regress_admin IN ROLE warden_admin;
CREATE ROLE regress_stranger;
CREATE TABLE public.secrets (id int PRIMARY KEY, kind text, ct bytea);
GRANT ALL ON public.secrets TO regress_app;

-- No context, no encryption; and no grant, no call.
SET ROLE regress_app;
SELECT regress.error_of($$SELECT warden.encrypt('x')$$);
SELECT regress.error_of($$SELECT warden.decrypt('\x00'::bytea)$$);
SET ROLE regress_stranger;
SELECT regress.error_of($$SELECT warden.encrypt('x')$$);
SELECT regress.error_of($$SELECT warden.rotate_workspace_key('aaaaaaaa-0000-4000-8000-000000000000')$$);
SET ROLE regress_app;
SELECT regress.error_of($$SELECT warden.rotate_workspace_key('aaaaaaaa-0000-4000-8000-000000000000')$$);
SELECT regress.error_of($$SELECT warden.key_status('aaaaaaaa-0000-4000-8000-000000000000')$$);

-- In workspace A: round trips for every type; NULL in, NULL out.
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
INSERT INTO public.secrets VALUES
    (1, 'text', warden.encrypt('sk_live_4242424242424242')),
    (2, 'bytea', warden.encrypt('\x00010203fffefd'::bytea)),
    (3, 'jsonb', warden.encrypt('{"card": "4242", "exp": [12, 2030], "cvc": null}'::jsonb)),
    (4, 'context', warden.encrypt('42.00', 'invoices.amount:4')),
    (5, 'empty', warden.encrypt('')),
    (6, 'null', warden.encrypt(NULL::text));
SELECT id, kind, warden.decrypt(ct) FROM public.secrets WHERE kind IN ('text', 'empty', 'null') ORDER BY id;
SELECT warden.decrypt_bytea(ct) FROM public.secrets WHERE kind = 'bytea';
SELECT warden.decrypt_jsonb(ct) FROM public.secrets WHERE kind = 'jsonb';
SELECT warden.decrypt(ct) FROM public.secrets WHERE kind = 'jsonb';
SELECT warden.decrypt(ct, 'invoices.amount:4') FROM public.secrets WHERE kind = 'context';
SELECT warden.decrypt(NULL), warden.decrypt_bytea(NULL), warden.decrypt_jsonb(NULL),
       warden.encrypt(NULL::bytea), warden.encrypt(NULL::jsonb), warden.reencrypt(NULL);
-- The header, without any key; the envelope is 53 bytes plus the plaintext.
SELECT i.*, length(ct) - octet_length('sk_live_4242424242424242') AS overhead
  FROM public.secrets, warden.envelope_info(ct) AS i WHERE kind = 'text';

-- The same plaintext never gives the same ciphertext; the plaintext is not in it.
SELECT count(DISTINCT warden.encrypt('same')) AS distinct_of_100 FROM generate_series(1, 100);
SELECT position('sk_live'::bytea IN ct) AS plaintext_at FROM public.secrets WHERE kind = 'text';

-- Wrong, missing or extra context strings fail alike (no decryption oracle).
SELECT regress.error_of($$SELECT warden.decrypt(ct, 'invoices.amount:5') FROM public.secrets WHERE id = 4$$);
SELECT regress.error_of($$SELECT warden.decrypt(ct) FROM public.secrets WHERE id = 4$$);
SELECT regress.error_of($$SELECT warden.decrypt(ct, '') FROM public.secrets WHERE id = 1$$);
-- decrypt_bytea (which decrypts any payload type) refuses the same way:
-- a wrong context, a flipped bit, a truncation, garbage.
SELECT regress.error_of($$SELECT warden.decrypt_bytea(ct, 'invoices.amount:5') FROM public.secrets WHERE id = 4$$);
SELECT regress.error_of($$SELECT warden.decrypt_bytea(set_byte(ct, 45, get_byte(ct, 45) # 1)) FROM public.secrets WHERE id = 2$$);
SELECT regress.error_of($$SELECT warden.decrypt_bytea(substring(ct FROM 1 FOR 52)) FROM public.secrets WHERE id = 2$$);
SELECT regress.error_of($$SELECT warden.decrypt_bytea('\x00'::bytea)$$);
SELECT encode(warden.decrypt_bytea(ct, 'invoices.amount:4'), 'escape') AS any_type FROM public.secrets WHERE id = 4;
-- The payload type is part of the ciphertext.
SELECT regress.error_of($$SELECT warden.decrypt(ct) FROM public.secrets WHERE id = 2$$);
SELECT regress.error_of($$SELECT warden.decrypt_jsonb(ct) FROM public.secrets WHERE id = 1$$);

-- Every single-bit flip and every truncation is refused; so is garbage of
-- every length. Counted by SQLSTATE; the backend stays up.
CREATE FUNCTION pg_temp.outcomes(cts bytea[]) RETURNS TABLE (outcome text, n bigint)
LANGUAGE plpgsql AS $$
DECLARE
    c bytea;
    results text[] := '{}';
BEGIN
    FOREACH c IN ARRAY cts LOOP
        BEGIN
            PERFORM warden.decrypt(c);
            results := results || 'decrypted'::text;
        EXCEPTION WHEN OTHERS THEN
            results := results || SQLSTATE::text;
        END;
    END LOOP;
    RETURN QUERY SELECT r, count(*) FROM unnest(results) AS r GROUP BY r ORDER BY r;
END
$$;
SELECT 'bit flips' AS what, o.* FROM public.secrets AS s,
       pg_temp.outcomes(ARRAY(SELECT set_bit(s.ct, b, 1 - get_bit(s.ct, b))
                                FROM generate_series(0, length(s.ct) * 8 - 1) AS b)) AS o
 WHERE s.id = 1;
SELECT 'truncations' AS what, o.* FROM public.secrets AS s,
       pg_temp.outcomes(ARRAY(SELECT substring(s.ct FROM 1 FOR n)
                                FROM generate_series(0, length(s.ct) - 1) AS n)) AS o
 WHERE s.id = 1;
SELECT 'garbage' AS what, o.* FROM
       pg_temp.outcomes(ARRAY(SELECT decode(repeat('5744010102', 40), 'hex')::bytea
                                     || gen_random_bytes_stub.b
                                FROM (SELECT substring(sha512(g::text::bytea) FROM 1 FOR g % 64) AS b
                                        FROM generate_series(0, 200) AS g) AS gen_random_bytes_stub
                              UNION ALL
                              SELECT substring(sha512(g::text::bytea) || sha512((g + 1)::text::bytea)
                                               FROM 1 FOR g)
                                FROM generate_series(0, 128) AS g)) AS o;
DROP FUNCTION pg_temp.outcomes(bytea[]);
SELECT regress.error_of($$SELECT * FROM warden.envelope_info('\x57440101'::bytea)$$);
SELECT regress.error_of($$SELECT * FROM warden.envelope_info('plain text'::bytea)$$);

-- A ciphertext is never encrypted twice by warden.encrypt(bytea).
SELECT warden.encrypt(ct) = ct AS unchanged FROM public.secrets WHERE id = 1;
-- Only a genuine one, that decrypts with the context string given: bytes
-- merely shaped like a ciphertext of this workspace (its header, then
-- anything) are refused rather than stored as they came.
SELECT regress.error_of(format($$SELECT warden.encrypt(%L::bytea)$$,
           substring(ct FROM 1 FOR 37) || '\x000102030405060708090a0b0c0d0e0f10111213'::bytea))
  FROM public.secrets WHERE id = 1;
SELECT regress.error_of(format($$SELECT warden.encrypt(%L::bytea, 'another context')$$, ct))
  FROM public.secrets WHERE id = 1;

-- Blind indexes: deterministic within a workspace and context.
SELECT warden.blind_index('alice@example.com', 'users.email') AS bi \gset
SELECT warden.blind_index('alice@example.com', 'users.email') = :'bi' AS same,
       warden.blind_index('alice@example.com', 'users.login') = :'bi' AS other_context,
       warden.blind_index('alice@example.co', 'users.email') = :'bi' AS other_value,
       length(:'bi'::bytea) AS bytes;
SELECT regress.error_of($$SELECT warden.blind_index(NULL, 'users.email') IS NULL$$);

-- Another workspace cannot read A's ciphertexts, nor pass them off as its own.
SELECT warden.set_context('bbbbbbbb-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-00000000ca20', false) IS NOT NULL AS set;
SELECT regress.error_of($$SELECT warden.decrypt(ct) FROM public.secrets WHERE id = 1$$);
SELECT regress.error_of($$SELECT warden.encrypt(ct) FROM public.secrets WHERE id = 1$$);
-- A workspace's first encryption creates its keys; a blind index before
-- that has no key to use.
SELECT regress.error_of($$SELECT warden.blind_index('alice@example.com', 'users.email')$$);
INSERT INTO public.secrets VALUES (10, 'b', warden.encrypt('globex secret'));
SELECT warden.blind_index('alice@example.com', 'users.email') = :'bi' AS same_in_b;
RESET ROLE;

-- Rotation: a new version encrypts, old versions keep decrypting,
-- reencrypt moves a value to the current version.
SET ROLE regress_admin;
SELECT warden.rotate_workspace_key('aaaaaaaa-0000-4000-8000-000000000000') AS new_version;
SELECT kind, version, state, length(master_key_id) AS id_len
  FROM warden.key_status('aaaaaaaa-0000-4000-8000-000000000000');
SET ROLE regress_app;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT key_version, warden.decrypt(ct) FROM public.secrets, warden.envelope_info(ct) WHERE id = 1;
SELECT key_version FROM warden.envelope_info(warden.encrypt('new'));
UPDATE public.secrets SET ct = warden.reencrypt(ct, CASE WHEN id = 4 THEN 'invoices.amount:4' END)
 WHERE id <= 5;
SELECT id, key_version, payload_type FROM public.secrets, warden.envelope_info(ct) WHERE id <= 5 ORDER BY id;
SELECT warden.decrypt(ct, 'invoices.amount:4') FROM public.secrets WHERE id = 4;
RESET ROLE;

-- pg_warden's own queries run as its owner with the search path pinned:
-- an operator an administrator put first in its path is never called as
-- the owner (it would say so).
CREATE SCHEMA regress_trap AUTHORIZATION regress_admin;
SET ROLE regress_admin;
CREATE FUNCTION regress_trap.eq(smallint, integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'trap called as %', current_user;
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_trap.= (FUNCTION = regress_trap.eq, LEFTARG = smallint, RIGHTARG = integer);
SET search_path = regress_trap, pg_catalog;
SELECT kind, version, state FROM warden.key_status('aaaaaaaa-0000-4000-8000-000000000000') ORDER BY 1, 2;
RESET search_path;
RESET ROLE;
DROP SCHEMA regress_trap CASCADE;

-- Shredding B: irreversible, and B gets no new keys.
SET ROLE regress_admin;
SELECT warden.shred_workspace('bbbbbbbb-0000-4000-8000-000000000000');
SELECT kind, version, state FROM warden.key_status('bbbbbbbb-0000-4000-8000-000000000000');
SELECT regress.error_of($$SELECT warden.rotate_workspace_key('bbbbbbbb-0000-4000-8000-000000000000')$$);
SELECT regress.error_of($$SELECT warden.shred_workspace(NULL)$$);
SELECT regress.error_of($$SELECT warden.rotate_workspace_key(NULL)$$);
SELECT regress.error_of($$SELECT * FROM warden.key_status(NULL)$$);
SELECT * FROM warden.envelope_info(NULL);
-- Nothing was wrapped under another master key.
SELECT warden.rewrap_keys() AS rewrapped;
SET ROLE regress_app;
SELECT warden.set_context('bbbbbbbb-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-00000000ca20', false) IS NOT NULL AS set;
SELECT regress.error_of($$SELECT warden.decrypt(ct) FROM public.secrets WHERE id = 10$$);
SELECT regress.error_of($$SELECT warden.encrypt('more')$$);
SELECT regress.error_of($$SELECT warden.blind_index('x', 'y')$$);
SELECT warden.clear_context();
RESET ROLE;
-- A key version that does not exist.
SET ROLE regress_app;
SELECT warden.set_context('aaaaaaaa-0000-4000-8000-000000000000',
                          '00000000-0000-4000-8000-0000000a11ce', false) IS NOT NULL AS set;
SELECT regress.error_of(format('SELECT warden.decrypt(%L::bytea)',
       overlay(ct PLACING '\x00000009'::bytea FROM 22 FOR 4))) FROM public.secrets WHERE id = 1;
SELECT warden.clear_context();
RESET ROLE;

-- Nobody but pg_warden reads the key table.
SET ROLE regress_admin;
SELECT regress.error_of('SELECT * FROM warden.workspace_keys');
-- Every key operation is in the audit trail, in its workspace's chain.
SELECT workspace_id, action, detail::jsonb - 'master_key_id' AS detail FROM warden.audit_log WHERE action LIKE 'key.%' ORDER BY id;
SELECT count(*) FILTER (WHERE NOT intact) AS broken_chains FROM warden.verify_audit();
RESET ROLE;

DROP TABLE public.secrets;
DELETE FROM warden.memberships;
DROP ROLE regress_app, regress_admin, regress_stranger;
