#!/usr/bin/env bash
# A read-only hot standby (pg_basebackup -R) of a database with a trained
# model, started with RUST_BACKTRACE=1 in its environment: everything that
# only reads works there (the views, job_log, loss_plot, wait_job, evaluate,
# recommend, recommend_next, similar_items, graph_edges, embedding) and
# answers as the primary does; a job running on the primary shows as
# running (not as lost); everything that writes refuses with SQLSTATE 25006
# and a HINT to call it on the primary; no message carries a Rust backtrace,
# a source location or panic text.
# usage: standby.sh CLUSTER_DIR   (PG* variables point at that cluster, the primary)
source "$(dirname "$0")/../../scripts/common.sh"
dir="$1"
db=tfllmer_standby
standby="$dir/standby"
failures=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   standby: $1"; else echo "FAIL standby: $1: expected '$2', got '$3'"; failures=$((failures + 1)); fi
}
q() { psql_q -d "$db" -A -t -c "$1"; }

psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql_q -d "$db" -c "CREATE EXTENSION tfllmer" -f "$(dirname "$0")/whole_pipeline.sql" >/dev/null
job=$(q "SELECT max(job_id) FROM tfllmer.jobs")
# a job that keeps running on the primary while the standby looks at it
running=$(q "SELECT tfllmer.train('walker_long', 'walks', options => '{\"epochs\": 100000, \"patience\": 100000, \"max_len\": 12}')")
for _ in $(seq 1 600); do
    [ "$(q "SELECT state = 'running' AND epoch >= 1 FROM tfllmer.jobs WHERE job_id = $running")" = t ] && break
    sleep 0.1
done

cluster_stop "$standby"
as_root rm -rf "$standby"
as_root install -d -o "$PG_OS_USER" -g "$PG_OS_USER" "$standby"
as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_basebackup" -D "$standby/data" -R -X stream -c fast \
    -h "$PGHOST" -p "$PGPORT" -U postgres
port=$(free_port)
as_root runuser -u "$PG_OS_USER" -- env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$standby/data" \
    -l "$standby/server.log" -w -o "$(server_options "$standby" "$port")" start >/dev/null
trap 'cluster_stop "$standby"' EXIT
sq() { psql_q -h "$standby" -p "$port" -d "$db" -A -t -c "$1"; }
# a call on the standby that may fail: its output, then "SQLSTATE <code>"
# (empty when it succeeded)
try() {
    "$PG_BIN/psql" -X -q -h "$standby" -p "$port" -d "$db" -A -t -v ON_ERROR_STOP=0 \
        -c "$1" -c '\echo SQLSTATE :LAST_ERROR_SQLSTATE' 2>&1
}
for _ in $(seq 1 300); do
    [ "$(sq "SELECT count(*) FROM tfllmer.models WHERE model_name = 'walker'" 2>/dev/null)" = 1 ] && break
    sleep 0.1
done

check "the standby is in recovery" t "$(sq "SELECT pg_is_in_recovery()")"
check "jobs view" succeeded "$(sq "SELECT state FROM tfllmer.jobs WHERE job_id = $job")"
check "a job running on the primary is running here, not lost" running \
    "$(sq "SELECT state FROM tfllmer.jobs WHERE job_id = $running")"
check "job_log" 3 "$(sq "SELECT count(*) FROM tfllmer.job_log($job)")"
check "loss_plot" t "$(sq "SELECT tfllmer.loss_plot(ARRAY[$job]) LIKE '<svg%'")"
check "wait_job of a finished job" succeeded "$(sq "SELECT tfllmer.wait_job($job)")"
check "wait_job of a running job times out with its state" running \
    "$(sq "SELECT tfllmer.wait_job($running, timeout_s => 0.3)")"
check "evaluate: the same figures as on the primary" \
    "$(q "SELECT string_agg(split || n_users || round(ndcg::numeric, 6), ',' ORDER BY split) FROM tfllmer.evaluate('walker')")" \
    "$(sq "SELECT string_agg(split || n_users || round(ndcg::numeric, 6), ',' ORDER BY split) FROM tfllmer.evaluate('walker')")"
answers="SELECT string_agg(u || ':' || r.item_id, ',' ORDER BY u, r.score DESC, r.item_id)
           FROM generate_series(1, 80, 9) u, tfllmer.recommend('walker', u, k => 5) r"
check "recommend: the primary's answers" "$(q "$answers")" "$(sq "$answers")"
check "recommend_next" 5 "$(sq "SELECT count(*) FROM tfllmer.recommend_next('walker', ARRAY[1, 8, 15], k => 5)")"
check "similar_items" 5 "$(sq "SELECT count(*) FROM tfllmer.similar_items('walker', 1, k => 5)")"
rules="SELECT string_agg(item_id || ':' || score, ' ' ORDER BY item_id)
       FROM tfllmer.recommend('walker', 3, k => 3, candidates => ARRAY[1, 2, 3, 4, 5, 6], exclude => ARRAY[2])"
check "recommend with candidates and exclude: the primary's answer" "$(q "$rules")" "$(sq "$rules")"
vectors="SELECT tfllmer.user_vector('walker', 3)::text || (SELECT count(*) FROM tfllmer.item_vectors('walker'))"
check "user_vector and item_vectors: the primary's" "$(q "$vectors")" "$(sq "$vectors")"
check "graph_edges" t "$(sq "SELECT count(*) > 0 FROM tfllmer.graph_edges('walk_graph')")"
check "embedding" 30 "$(sq "SELECT count(*) FROM tfllmer.embedding('items_4d')")"

# the item index (where this server has pgvector): the standby serves the
# model through the primary's index table, and a new version with its own
# index once replayed
if [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
    q "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
    q "SELECT version FROM tfllmer.create_item_index('walker')" >/dev/null
    replayed() {  # replayed SQL EXPECTED: waits until the standby answers EXPECTED
        for _ in $(seq 1 300); do [ "$(sq "$1" 2>/dev/null)" = "$2" ] && return; sleep 0.1; done
    }
    replayed "SELECT count(*) FROM tfllmer.item_indexes WHERE model_name = 'walker'" 1
    check "item index: the standby sees it" 1 "$(sq "SELECT count(*) FROM tfllmer.item_indexes WHERE is_current")"
    check "item index: recommend answers as the primary" "$(q "$answers")" "$(sq "$answers")"
    check "item index: with rules, as the primary" "$(q "$rules")" "$(sq "$rules")"
    indexed_job=$(q "SELECT tfllmer.train('walker', 'walks', options => '{\"epochs\": 1, \"max_len\": 12, \"seed\": 3}')")
    q "SELECT tfllmer.wait_job($indexed_job)" >/dev/null
    version=$(q "SELECT max(version) FROM tfllmer.item_indexes WHERE model_name = 'walker'")
    replayed "SELECT max(version) FROM tfllmer.item_indexes WHERE model_name = 'walker'" "$version"
    check "item index: a new version's index is served once replayed" "$(q "$answers")" "$(sq "$answers")"
    check "item index: the standby serves the new version" "$version" \
        "$(sq "SELECT version FROM tfllmer.models WHERE model_name = 'walker' AND is_current")"
else
    echo "SKIPPED standby: item index checks (this server has no pgvector)"
fi

# every function that writes: 25006 and the hint, nothing half-done
for call in \
    "SELECT * FROM tfllmer.build_graph('g2', 'walks')" \
    "SELECT tfllmer.drop_graph('walk_graph')" \
    "SELECT * FROM tfllmer.rec_pca('e2', 'items', dim => 2)" \
    "SELECT tfllmer.drop_embedding('items_4d')" \
    "SELECT tfllmer.train('walker', 'walks')" \
    "SELECT tfllmer.cancel_job($running)" \
    "SELECT tfllmer.drop_model('walker')" \
    "CALL tfllmer.train_and_wait('walker', 'walks')" \
    "SELECT * FROM tfllmer.create_item_index('walker')" \
    "SELECT tfllmer.drop_item_index('walker')"; do
    out=$(try "$call")
    check "$call: refused with 25006" yes "$(echo "$out" | grep -q '^SQLSTATE 25006$' && echo yes || echo "no: $out")"
    check "$call: says to call it on the primary" yes \
        "$(echo "$out" | grep -q 'HINT:  Call it on the primary' && echo yes || echo "no: $out")"
done

# nothing a user sees (ERROR, DETAIL, HINT, CONTEXT) carries a backtrace, a
# Rust source location or panic text (the standby runs with RUST_BACKTRACE=1)
out=$(for call in "SELECT tfllmer.train('walker', 'walks')" "SELECT * FROM tfllmer.recommend('nope', 1)" \
        "SELECT * FROM tfllmer.job_log(123456)" "SELECT * FROM tfllmer.evaluate('walker', k => 0)"; do
    try "$call"
done)
found=$(echo "$out" | grep -E -i 'backtrace|\.rs:[0-9]|panicked|rust_begin_unwind' | head -3 | tr '\n' ' ' || true)
check "no backtrace, source file or panic text in any message" none "${found:-none}"

q "SELECT tfllmer.cancel_job($running)" >/dev/null
q "SELECT tfllmer.wait_job($running, timeout_s => 60)" >/dev/null
if [ "$failures" -gt 0 ]; then echo "standby: $failures check(s) failed"; exit 1; fi
echo "standby: all checks passed"
