#!/usr/bin/env bash
# Recommendations under load while the model is retrained: two clients call
# recommend() for LOAD_SECONDS (default 60) over TCP on 127.0.0.1 while a new
# version of the same model is trained and becomes current. Passes when no
# call failed, every answer is exactly the old version's or the new
# version's answer for that user (never a mix), each client switches from old
# to new at most once and never back, and the new version was served.
# usage: recommend_load.sh CLUSTER_DIR   (PG* variables point at that cluster,
#        which must listen on 127.0.0.1: TFLLMER_LOOPBACK=1 at cluster_start)
source "$(dirname "$0")/../../scripts/common.sh"
seconds="${LOAD_SECONDS:-60}"
db=tfllmer_load
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
q() { psql_q -h 127.0.0.1 -A -t -d "$db" "$@"; }

psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
q -q <<'SQL'
CREATE EXTENSION tfllmer;
-- 500 users walking through 200 items, each with its own step
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k * (1 + u % 3)) % 200 AS item_id, k AS ts
FROM generate_series(1, 500) u, generate_series(0, 19) k;
CREATE INDEX ON walks (user_id, ts, item_id);
SQL
train() {  # train SEED: a version of model 'm', waited for
    local job
    job=$(q -c "SELECT tfllmer.train('m', 'walks', options => '{\"epochs\": 3, \"max_len\": 20, \"dim\": 16, \"seed\": $1}')")
    [ "$(q -c "SELECT tfllmer.wait_job($job)")" = succeeded ] || { echo "FAIL training job $job did not succeed"; exit 1; }
}
# one answer per user as a line "user|item:score,item:score,..."
answer_sql() {
    echo "SELECT $1, string_agg(item_id || ':' || score, ',' ORDER BY n) FROM tfllmer.recommend('m', $1, 5) WITH ORDINALITY r(item_id, score, n);"
}
all_answers() {
    for u in $(seq 1 500); do answer_sql "$u"; done | q > "$1"
}

train 1
all_answers "$work/v1"

# two clients, each one connection sending calls for random users until the time is up
client() {
    python3 -u - "$seconds" "$1" <<'PY' | q -v ON_ERROR_STOP=0 > "$work/client$1.out" 2> "$work/client$1.err"
import random, sys, time
seconds, seed = float(sys.argv[1]), int(sys.argv[2])
rng, end = random.Random(seed), time.monotonic() + seconds
while time.monotonic() < end:
    u = rng.randint(1, 500)
    print(f"SELECT {u}, string_agg(item_id || ':' || score, ',' ORDER BY n) "
          f"FROM tfllmer.recommend('m', {u}, 5) WITH ORDINALITY r(item_id, score, n);")
    time.sleep(0.001)
PY
}
client 1 &
first=$!
client 2 &
second=$!
sleep $((seconds / 6))
train 2
all_answers "$work/v2"
wait "$first" "$second"

status=0
python3 - "$work" <<'PY' || status=$?
import sys
work = sys.argv[1]
def answers(path):
    return dict(line.rstrip("\n").split("|", 1) for line in open(path) if "|" in line)
v1, v2 = answers(f"{work}/v1"), answers(f"{work}/v2")
differ = sum(v1[u] != v2[u] for u in v1)
failures = []
if differ < len(v1) // 2:
    failures.append(f"the two versions answer alike for {len(v1) - differ} of {len(v1)} users: the test cannot tell them apart")
total = {"v1": 0, "v2": 0}
for c in (1, 2):
    errors = open(f"{work}/client{c}.err").read().strip()
    if errors:
        failures.append(f"client {c} got errors: {errors[:500]}")
    version_seen, switches = None, 0
    for n, line in enumerate(open(f"{work}/client{c}.out")):
        user, answer = line.rstrip("\n").split("|", 1)
        if answer == v1[user] and answer != v2[user]:
            version = "v1"
        elif answer == v2[user] and answer != v1[user]:
            version = "v2"
        elif answer == v1[user]:
            continue  # both versions agree for this user
        else:
            failures.append(f"client {c} call {n}: user {user} got an answer of neither version: {answer}")
            continue
        total[version] += 1
        if version_seen == "v2" and version == "v1":
            failures.append(f"client {c} call {n}: back to the old version after the new one")
        if version != version_seen and version_seen is not None:
            switches += 1
        version_seen = version
    print(f"client {c}: {n + 1} calls, ended on {version_seen}")
if total["v2"] == 0:
    failures.append("no answer came from the new version")
print(f"answers from the old version: {total['v1']}, from the new: {total['v2']}")
for f in failures:
    print("FAIL", f)
sys.exit(1 if failures else 0)
PY
psql_q -d postgres -c "DROP DATABASE $db" >/dev/null
[ $status -eq 0 ] && echo "ok   recommend under load while retraining"
exit $status
