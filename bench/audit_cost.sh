#!/usr/bin/env bash
# Where an audited bulk INSERT spends its time, per row (9,000 rows in one
# transaction, fewer than the 10,000 that force a mid-statement write): the
# INSERT itself (unaudited), the row trigger (rendering and buffering each
# row's entry), and the write of the entries at COMMIT (as batches of up to
# 1,024). Median of 3; printed in µs. Run by bench/run with PGHOST, PGPORT,
# PGUSER and DB set.
set -euo pipefail
psql=(psql -X -q -v ON_ERROR_STOP=1 -d "$DB")
"${psql[@]}" <<'SQL'
INSERT INTO warden.memberships VALUES ('00000000-0000-4000-8000-000000000066', '00000000-0000-4000-8000-0000000000dd', 'user');
CREATE TABLE source AS SELECT g AS id, '00000000-0000-4000-8000-000000000066'::uuid AS workspace_id,
                              md5(g::text) AS title, g % 1000 AS amount FROM generate_series(1, 9000) AS g;
CREATE TABLE plain (id int PRIMARY KEY, workspace_id uuid, title text, amount int);
CREATE TABLE audited (LIKE plain INCLUDING ALL);
SELECT warden.enable_audit('audited') \gset
SQL
run() {
    "${psql[@]}" <<'SQL' | awk '/Execution Time/ {print $3} /^Time:/ {print $2}' | tr '\n' ' '
TRUNCATE plain, audited;
BEGIN;
SELECT warden.set_context('00000000-0000-4000-8000-000000000066', '00000000-0000-4000-8000-0000000000dd', true) IS NOT NULL;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) INSERT INTO plain SELECT * FROM source;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) INSERT INTO audited SELECT * FROM source;
\timing on
COMMIT;
\timing off
SQL
    echo
}
results=$(for _ in 1 2 3; do run; done)
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
col() { echo "$results" | awk -v c="$1" '{print $c}'; }
plain=$(median $(col 1)); audited=$(median $(col 2)); commit=$(median $(col 3))
awk -v p="$plain" -v a="$audited" -v c="$commit" 'BEGIN {
    n = 9000 / 1000.0
    printf "%-62s  insert %.2f, trigger %.2f, entries at commit %.2f µs a row\n",
        "audit cost per row (9,000-row INSERT, median of 3):", p / n, (a - p) / n, c / n }'
