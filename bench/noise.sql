-- The noise floor: the same statement on both sides. Ratios elsewhere that
-- differ from 1.00 by less than this spread mean nothing.
CREATE TABLE noise AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 200000) g;
ANALYZE noise;
SELECT bench.compare('noise floor: identical seq scans of 200k rows',
    'SELECT count(*) FROM noise WHERE body LIKE ''a%''',
    'SELECT count(*) FROM noise WHERE body LIKE ''a%''', 9);
