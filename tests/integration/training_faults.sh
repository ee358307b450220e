#!/usr/bin/env bash
# Training jobs under faults, on a real cluster: jobs beyond the free worker
# slots queue and still finish; a panic inside the training loop (a
# test-only fault point) ends the job 'failed' with the panic's message and
# the queue moves on; a worker killed with kill -9, a fast restart
# and an immediate restart each end the job as 'failed' with the reason
# (never 'running' forever), and the model's earlier version stays in use;
# a cancel, a cancelled statement or an immediate shutdown during the final
# save leaves either the whole new version or none of it.
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
CREATE INDEX ON walks (user_id, ts, item_id);
CREATE INDEX ON long_walks (user_id, ts, item_id);
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

# 1b. a panic inside the training loop (the build's test-only fault point
#    "train-batch", switched on through the server's environment: a
#    worker's 101st batch panics, once: in the third epoch of long_walks): the job ends failed with the panic's
#    message, and the job queued behind it (one slot) starts without anyone
#    calling wait_job for it (the finishing worker runs it)
as_root runuser -u "$PG_OS_USER" -- env "FAILPOINTS=train-batch=100*off->1*panic(injected fault in the training loop)->off" \
    "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -m fast -o "$(server_options "$dir" "$PGPORT")" \
    restart >/dev/null
tiny='{"epochs": 1, "batch_size": 64, "max_len": 10, "dim": 8}'
panicky=$(q "SELECT tfllmer.train('panicky', 'long_walks', options => '$long')")
wait_until_running "$panicky"
behind=$(psql_q -d "$db" -A -t -c "SELECT tfllmer.train('behind_the_panic', 'walks', options => '$tiny')" 2>/dev/null)
check "panic: the second job waits for the only slot" queued "$(q "SELECT state FROM tfllmer.jobs WHERE job_id = $behind")"
check "panic: the job ends failed" failed "$(q "SELECT tfllmer.wait_job($panicky, timeout_s => 300)")"
check "panic: the job's error is the panic's message" t \
    "$(q "SELECT error LIKE '%injected fault in the training loop%' FROM tfllmer.jobs WHERE job_id = $panicky")"
check "panic: the error is not the lost-worker text" f \
    "$(q "SELECT error LIKE '%ended without finishing%' FROM tfllmer.jobs WHERE job_id = $panicky")"
check "panic: no Rust backtrace or source location in the error" f \
    "$(q "SELECT error ~ '(backtrace|\\.rs:[0-9]|panicked at)' FROM tfllmer.jobs WHERE job_id = $panicky")"
for _ in $(seq 1 600); do
    [ "$(q "SELECT state FROM tfllmer.jobs WHERE job_id = $behind")" = succeeded ] && break
    sleep 0.1
done
check "panic: the queued job started after the panic and finished" succeeded \
    "$(q "SELECT state FROM tfllmer.jobs WHERE job_id = $behind")"
check "panic: no process still works on the failed job" 0 \
    "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tfllmer job $panicky'")"

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

# 5. faults during the final save. The save is one transaction (the job row
#    locked, the version stored, the job marked succeeded); a session holding
#    a lock on model_store holds the worker inside it.
hold_model_store() {  # until release_model_store
    psql_q -d "$db" -v ON_ERROR_STOP=0 -c "SET application_name = 'tfllmer_test_lock'" \
        -c "BEGIN" -c "LOCK TABLE tfllmer.model_store IN SHARE MODE" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
    holder=$!
    for _ in $(seq 1 100); do
        [ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                WHERE a.application_name = 'tfllmer_test_lock' AND l.relation = 'tfllmer.model_store'::regclass
                  AND l.granted")" = 1 ] && return 0
        sleep 0.1
    done
    echo "FAIL could not lock model_store"; exit 1
}
release_model_store() {
    q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'tfllmer_test_lock'" >/dev/null
    wait "$holder" || true  # (its statement was cancelled)
}
wait_until_saving() {  # wait_until_saving JOB: its worker waits to store the version
    for _ in $(seq 1 1200); do
        [ "$(q "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                WHERE a.application_name = 'tfllmer job $1' AND NOT l.granted")" = t ] && return 0
        sleep 0.1
    done
    echo "FAIL job $1 never reached its save"; exit 1
}
saved_versions() { q "SELECT count(*) || ' ' || max(version) FROM tfllmer.models WHERE model_name = 'kept'"; }

# 5a. cancel_job() during the save waits for it and then finds the job
#     finished: the new version is whole, and cancel_job says it was too late
hold_model_store
job=$(q "SELECT tfllmer.train('kept', 'walks', options => '$quick')")
wait_until_saving "$job"
cancelled=$(mktemp)
q "SELECT tfllmer.cancel_job($job)" > "$cancelled" &
canceller=$!
sleep 1
release_model_store
wait "$canceller"
check "cancel during the save: cancel_job says the job had ended" f "$(cat "$cancelled")"
check "cancel during the save: the job succeeded" succeeded "$(q "SELECT tfllmer.wait_job($job)")"
check "cancel during the save: the new version is whole and current" "2 2 t" \
    "$(saved_versions) $(q "SELECT size_bytes > 0 AND is_current FROM tfllmer.models WHERE model_name = 'kept' AND version = 2")"
check "cancel during the save: the new version answers" 2 "$(q "SELECT count(*) FROM tfllmer.evaluate('kept')")"

# 5b. the statement cancelled under the worker during the save (what
#     pg_cancel_backend or a lock timeout does): nothing stored, job failed
hold_model_store
job=$(q "SELECT tfllmer.train('kept', 'walks', options => '$quick')")
wait_until_saving "$job"
q "SELECT pg_cancel_backend(worker_pid) FROM tfllmer.jobs WHERE job_id = $job" >/dev/null
check "statement cancelled in the save: the job failed" failed "$(q "SELECT tfllmer.wait_job($job, timeout_s => 60)")"
check "statement cancelled in the save: the error says why" t \
    "$(q "SELECT error LIKE '%cancel%' FROM tfllmer.jobs WHERE job_id = $job")"
release_model_store
check "statement cancelled in the save: no half version, version 2 still current" "2 2" "$(saved_versions)"

# 5c. immediate shutdown during the save: after the restart, the job is
#     failed and nothing of the version it was storing exists
hold_model_store
job=$(q "SELECT tfllmer.train('kept', 'walks', options => '$quick')")
wait_until_saving "$job"
pg_ctl_as_owner -m immediate -o "$(server_options "$dir" "$PGPORT")" restart
wait "$holder" || true
wait_for_server
check "immediate shutdown in the save: the job failed" failed "$(q "SELECT tfllmer.wait_job($job)")"
check "immediate shutdown in the save: no half version, version 2 still current" "2 2" "$(saved_versions)"
check "immediate shutdown in the save: version 2 still answers" 2 "$(q "SELECT count(*) FROM tfllmer.evaluate('kept')")"

psql_q -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
[ "$failures" -eq 0 ] || exit 1
