#!/usr/bin/env bash
# Single-row INSERT transactions from 8 clients (pgbench), audited vs the
# same table unaudited, and vs the same table with a PL/pgSQL trigger logging
# to_jsonb(NEW), alternately, 3 rounds of 10 s; prints the median throughput
# ratios. Run by bench/run with PGHOST, PGPORT, PGUSER and DB set.
set -euo pipefail
psql=(psql -X -q -v ON_ERROR_STOP=1 -d "$DB")
"${psql[@]}" <<'SQL'
CREATE TABLE plain_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_id uuid, title text, amount int);
CREATE TABLE audited_rows (LIKE plain_rows INCLUDING ALL);
SELECT warden.enable_audit('audited_rows') \gset
CREATE TABLE plpgsql_rows (LIKE plain_rows INCLUDING ALL);
SELECT bench.plpgsql_log_table() \gset
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON plpgsql_rows
    FOR EACH ROW EXECUTE FUNCTION bench.plpgsql_audit();
SQL
dir=$(mktemp -d)
for t in plain_rows audited_rows plpgsql_rows; do
    cat > "$dir/$t.sql" <<SQL
\set amount random(1, 1000)
BEGIN;
INSERT INTO $t (workspace_id, title, amount) VALUES ('00000000-0000-4000-8000-000000000099', md5(:amount::text), :amount);
COMMIT;
SQL
done
tps() { pgbench -n -c 8 -j 2 -T 10 -f "$dir/$1.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
plain=(); audited=(); plpgsql=()
for _ in 1 2 3; do
    plain+=("$(tps plain_rows)")
    audited+=("$(tps audited_rows)")
    plpgsql+=("$(tps plpgsql_rows)")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
p=$(median "${plain[@]}"); a=$(median "${audited[@]}"); l=$(median "${plpgsql[@]}")
awk -v a="$a" -v p="$p" -v l="$l" 'BEGIN {
    printf "%-62s%7.2fx  (ours %.0f tps, baseline %.0f tps, median of 3, 8 clients)  goal >= 0.80x\n",
        "single-row INSERT transactions: audited vs unaudited tps:", a / p, a, p
    printf "%-62s%7.2fx  (ours %.0f tps, baseline %.0f tps, median of 3, 8 clients)\n",
        "single-row INSERT transactions: pg_warden vs PL/pgSQL tps:", a / l, a, l }'
rm -rf "$dir"
