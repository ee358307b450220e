#!/usr/bin/env bash
# Training jobs under faults, on a real cluster: jobs beyond the free worker
# slots queue and still finish; a worker killed with kill -9, a fast restart
# and an immediate restart each end the job as 'failed' with the reason
# (never 'running' forever), and the model's earlier version stays in use.
# usage: training_faults.sh CLUSTER_DIR   (PG* variables point at that cluster)
source "$(dirname "$0")/../../scripts/common.sh"
dir="$1"
db=tfllmer_faults
failures=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; failures=$((failures + 1)); fi
}
q() { psql_q -A -t -d "$db" -c "$1"; }
pg_ctl_as_owner() { as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w "$@" >/dev/null; }
wait_until_running() {  # wait_until_running JOB: until its first epoch is logged
    for _ in $(seq 1 600); do
        [ "$(q "SELECT state = 'running' AND epoch >= 1 FROM tfllmer.jobs WHERE job_id = $1")" = t ] && return 0
        sleep 0.1
    done
    echo "FAIL job $1 never started running"; exit 1
}
wait_for_server() {
    for _ in $(seq 1 300); do
        psql_q -d postgres -c "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "FAIL the server did not come back"; exit 1
}

psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql_q -d "$db" <<'SQL'
CREATE EXTENSION tfllmer;
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 60) u, generate_series(0, 9) k;
CREATE TABLE long_walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 300 AS item_id, k AS ts
FROM generate_series(1, 400) u, generate_series(0, 49) k;
SQL
quick='{"epochs": 2, "batch_size": 16, "max_len": 10, "dim": 8}'
long='{"epochs": 100000, "batch_size": 8, "max_len": 50}'

# 1. more jobs than worker slots: one slot is left for tfllmer (the other
#    belongs to the logical replication launcher); the rest queue
psql_q -d postgres -c "ALTER SYSTEM SET max_worker_processes = 2" -c "ALTER SYSTEM SET max_parallel_workers_per_gather = 0"
pg_ctl_as_owner -m fast -o "$(server_options "$dir" "$PGPORT")" restart
notices=$(psql_q -d "$db" -A -t 2>&1 <<SQL
SELECT tfllmer.train('q1', 'walks', options => '$quick');
SELECT tfllmer.train('q2', 'walks', options => '$quick');
SELECT tfllmer.train('q3', 'walks', options => '$quick');
SQL
)
check "a train() beyond the free slots says it is queued" yes \
    "$(echo "$notices" | grep -q 'is queued and starts when a tfllmer job finishes' && echo yes || echo no)"
last=$(q "SELECT max(job_id) FROM tfllmer.jobs")
q "SELECT tfllmer.wait_job($last, timeout_s => 300)" >/dev/null
for j in $(q "SELECT job_id FROM tfllmer.jobs ORDER BY job_id"); do q "SELECT tfllmer.wait_job($j, timeout_s => 300)" >/dev/null; done
check "every queued job ran to the end" "3 succeeded" "$(q "SELECT count(*) || ' ' || min(state) FROM tfllmer.jobs WHERE state = 'succeeded'")"
psql_q -d postgres -c "ALTER SYSTEM RESET max_worker_processes" -c "ALTER SYSTEM RESET max_parallel_workers_per_gather"
pg_ctl_as_owner -m fast -o "$(server_options "$dir" "$PGPORT")" restart

# a version to keep serving through the faults below
job=$(q "SELECT tfllmer.train('kept', 'walks', options => '$quick')")
q "SELECT tfllmer.wait_job($job)" >/dev/null
check "version 1 trained" "1" "$(q "SELECT max(version) FROM tfllmer.models WHERE model_name = 'kept'")"

# 2. kill -9 of a training worker (the server restarts every backend)
job=$(q "SELECT tfllmer.train('kept', 'long_walks', options => '$long')")
wait_until_running "$job"
pid=$(q "SELECT worker_pid FROM tfllmer.jobs WHERE job_id = $job")
as_root kill -9 "$pid"
sleep 1
wait_for_server
check "killed worker: the job shows as failed" failed "$(q "SELECT state FROM tfllmer.jobs WHERE job_id = $job")"
check "killed worker: the error says why" t \
    "$(q "SELECT error LIKE '%ended without finishing the job: it was killed, crashed, or the server restarted' FROM tfllmer.jobs WHERE job_id = $job")"
check "killed worker: wait_job returns" failed "$(q "SELECT tfllmer.wait_job($job)")"
check "killed worker: the failure is written down" failed "$(q "SELECT state FROM tfllmer.job_store WHERE job_id = $job")"

# 3. fast restart: the worker hears SIGTERM and records why it stopped
job=$(q "SELECT tfllmer.train('kept', 'long_walks', options => '$long')")
wait_until_running "$job"
pg_ctl_as_owner -m fast -o "$(server_options "$dir" "$PGPORT")" restart
check "fast restart: the job failed" failed "$(q "SELECT state FROM tfllmer.job_store WHERE job_id = $job")"
check "fast restart: the error says why" t \
    "$(q "SELECT error LIKE 'the server shut down%' FROM tfllmer.jobs WHERE job_id = $job")"

# 4. immediate restart: nothing runs on the way down; the job's row still
#    says 'running', the jobs view says failed, and the next call records it
job=$(q "SELECT tfllmer.train('kept', 'long_walks', options => '$long')")
wait_until_running "$job"
pg_ctl_as_owner -m immediate -o "$(server_options "$dir" "$PGPORT")" restart
wait_for_server
check "immediate restart: the view shows failed" failed "$(q "SELECT state FROM tfllmer.jobs WHERE job_id = $job")"
check "immediate restart: wait_job returns" failed "$(q "SELECT tfllmer.wait_job($job)")"
check "immediate restart: a new job on the name is accepted" t \
    "$(q "SELECT tfllmer.cancel_job(tfllmer.train('kept', 'walks', options => '$quick')) IS NOT NULL")"

# through all of it, version 1 stayed the one in use
check "the earlier version is still current" "1 1" \
    "$(q "SELECT count(*) || ' ' || max(version) FROM tfllmer.models WHERE model_name = 'kept'")"
check "and it still evaluates" 2 "$(q "SELECT count(*) FROM tfllmer.evaluate('kept')")"

psql_q -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
[ "$failures" -eq 0 ] || exit 1
