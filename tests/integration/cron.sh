#!/usr/bin/env bash
# The nightly-retraining recipe of docs/security-and-operations.md, run by
# pg_cron (Debian's postgresql-15-cron) for an ordinary role: a procedure
# adds the catalogue's new items as cold items, warm-starts the model on the
# interactions as they are now (train_and_wait) and keeps the newest two
# versions (prune_model). pg_cron runs it at the next minute while two
# clients call recommend() over TCP. Passes when the scheduled run
# succeeded, the new version is current and the oldest pruned, the new item
# was served as a cold item, and no recommend() call failed.
# The cluster is restarted with pg_cron preloaded and restarted without it
# at the end.
# usage: cron.sh CLUSTER_DIR   (PG* variables point at that cluster, which
#        listens on 127.0.0.1: TFLLMER_LOOPBACK=1 at cluster_start)
source "$(dirname "$0")/../../scripts/common.sh"
cluster="$1"
db=tfllmer_cron
role=tfllmer_shop
if [ ! -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ]; then
    echo "FAIL cron: pg_cron is not installed for PostgreSQL $PG_MAJOR (apt-get install postgresql-$PG_MAJOR-cron)"
    exit 1
fi
work=$(mktemp -d)
chmod 755 "$work"
restore() {
    psql_q -d postgres -c "ALTER SYSTEM RESET shared_preload_libraries" -c "ALTER SYSTEM RESET cron.database_name" \
        -c "ALTER SYSTEM RESET cron.host" >/dev/null 2>&1 || true
    cluster_restart "$cluster" || true
    rm -rf "$work"
}
trap restore EXIT
psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" \
    -c "DROP ROLE IF EXISTS $role" -c "CREATE ROLE $role LOGIN" -c "CREATE DATABASE $db" \
    -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_cron'"
cluster_restart "$cluster"
# (pg_cron's settings exist once it is loaded)
psql_q -d postgres -c "ALTER SYSTEM SET cron.database_name = '$db'" -c "ALTER SYSTEM SET cron.host = '$PGHOST'"
cluster_restart "$cluster"
q() { psql_q -A -t -d "$db" "$@"; }
shop() { psql_q -A -t -d "$db" -U "$role" "$@"; }
q -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION tfllmer" -c "GRANT USAGE ON SCHEMA cron TO $role" \
    -c "GRANT CREATE ON SCHEMA public TO $role" >/dev/null
shop -q <<'SQL'
CREATE TABLE orders AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 120) u, generate_series(0, 11) k;
CREATE INDEX ON orders (user_id, ts, item_id);
-- the catalogue with its "LLM embeddings" (items 1..30 on a circle in
-- walking order); item 31 arrives later
CREATE TABLE products AS
SELECT i::bigint AS item_id,
       ARRAY[cos(2 * pi() * i / 30), sin(2 * pi() * i / 30), cos(4 * pi() * i / 30), sin(4 * pi() * i / 30),
             0.1 * sin(i * 1.7), 0.1 * cos(i * 2.3)]::real[] AS embedding
FROM generate_series(1, 30) i;
SELECT embedding_name FROM tfllmer.rec_pca('shop_texts', 'products', dim => 4);
CALL tfllmer.train_and_wait('shop', 'orders', init => 'shop_texts',
     options => '{"epochs": 5, "batch_size": 16, "max_len": 12, "learning_rate": 0.01}');
CALL tfllmer.train_and_wait('shop', 'orders', init => 'shop_texts', options => '{"warm_start": true, "epochs": 1}');
-- the recipe
CREATE PROCEDURE shop_nightly() LANGUAGE plpgsql AS $$
DECLARE
    job bigint;
    state text;
BEGIN
    -- the day's new products: cold items of the current version
    PERFORM tfllmer.add_items('shop', 'products', skip_known => true);
    COMMIT;
    -- continue the current version on today's orders (raises if it fails)
    CALL tfllmer.train_and_wait('shop', 'orders', init => 'shop_texts',
                                options => '{"warm_start": true, "epochs": 2}', job_id => job, state => state);
    -- keep the last two versions
    PERFORM tfllmer.prune_model('shop', keep => 2);
END $$;
INSERT INTO products VALUES (31, ARRAY[cos(2 * pi() * 3 / 30), sin(2 * pi() * 3 / 30), cos(4 * pi() * 3 / 30),
                                       sin(4 * pi() * 3 / 30), 0.11, 0.0]::real[]);
SQL

# two clients ask for recommendations until the scheduled run is over
cat > "$work/recommend.sql" <<'SQL'
\set u random(1, 120)
SELECT count(*) FROM tfllmer.recommend('shop', :u, k => 5);
SQL
"$PG_BIN/pgbench" -h 127.0.0.1 -U "$role" -n -c 2 -j 2 -T 100 -f "$work/recommend.sql" "$db" \
    > "$work/pgbench.out" 2>&1 &
load=$!
shop -c "SELECT cron.schedule('shop-nightly', '* * * * *', 'CALL shop_nightly()')" >/dev/null
# the next minute boundary, then the run (a few seconds of training)
for _ in $(seq 1 120); do
    [ "$(shop -c "SELECT count(*) FROM cron.job_run_details WHERE status IN ('succeeded', 'failed')")" -ge 1 ] && break
    sleep 1
done
shop -c "SELECT cron.unschedule('shop-nightly')" >/dev/null
wait "$load" || true

failed=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   cron: $1"; else echo "FAIL cron: $1: expected '$2', got '$3'"; failed=1; fi
}
check "the scheduled run succeeded" "succeeded" \
    "$(shop -c "SELECT string_agg(status || coalesce(': ' || return_message, ''), '; ') FROM cron.job_run_details
                WHERE status IN ('succeeded', 'failed')" | sed 's/: CALL$//')"
check "a new version is current, the oldest pruned" "2,3" \
    "$(shop -c "SELECT string_agg(version::text, ',' ORDER BY version) FROM tfllmer.models WHERE model_name = 'shop'")"
check "the new version continued the one before" t \
    "$(shop -c "SELECT bool_or(detail ~ 'warm start from version 2') FROM tfllmer.jobs WHERE model_name = 'shop'")"
check "the new product was added as a cold item, then served" "1 t" \
    "$(shop -c "SELECT count(*) FROM tfllmer.cold_items WHERE model_name = 'shop' AND item_id = 31 AND is_current") $(shop -c \
        "SELECT 31 IN (SELECT item_id FROM tfllmer.recommend('shop', 1, k => 31, exclude_seen => false))")"
check "no recommend() call failed during the switch" "0" \
    "$(grep -c -E 'aborted|ERROR|error' "$work/pgbench.out" || true)"
served=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
check "recommend() answered throughout" t "$([ "${served:-0}" -gt 100 ] && echo t || echo f)"
[ "$failed" = 0 ] || { cat "$work/pgbench.out"; exit 1; }
