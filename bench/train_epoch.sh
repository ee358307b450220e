#!/usr/bin/env bash
# Benchmark: seconds per SASRec training epoch, ours (candle,
# crates/tfllmer-train, example train_folder) against the PyTorch reference
# (shared/reference/sasrec_ref.py), back to back on this machine with the
# same model (2 pre-norm blocks, 1 head, dim 64, max length 200, dropout 0.2,
# normalised items), batch 128 and the same number of compute threads.
# Seconds per epoch = the median over the epochs of a run (training only,
# evaluation excluded, as both scripts report it).
#
# usage: bench/train_epoch.sh [DATA_DIR] [EPOCHS] [THREADS]
#   DATA_DIR  a folder with interactions.csv (default: the shared data's ml-1m)
#   EPOCHS    epochs per run (default 3)
#   THREADS   compute threads for both (default 2)
# Timings are wall clock: anything else running on the machine slows both.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"

shared="$(data_dir)"
data="${1:-${shared:+$shared/ml-1m}}"
epochs="${2:-3}"
threads="${3:-2}"
[ -n "$data" ] && [ -f "$data/interactions.csv" ] || { echo "no interactions.csv in '${data}' (pass a data folder)" >&2; exit 2; }
reference="$(reference_dir)"
[ -n "$reference" ] || { echo "no shared/reference/sasrec_ref.py" >&2; exit 2; }

python=$(reference_python)
if ! "$python" -c 'import torch' 2>/dev/null; then
    log "installing torch (CPU) into $TFLLMER_ROOT/.venv"
    "$python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu >&2 \
        || "$python" -m pip install -q torch >&2
fi

log "building train_folder (release)"
cargo build --release -q -p tfllmer-train --example train_folder
target_dir="$(cargo metadata --format-version 1 --no-deps | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
ours="$target_dir/release/examples/train_folder"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $data; $epochs epochs, $threads threads each"

log "ours: train_folder --threads $threads"
RAYON_NUM_THREADS="$threads" "$ours" "$data" --threads "$threads" --epochs "$epochs" \
    --max-len 200 --dim 64 --batch 128 --patience "$epochs" | tee "$out/ours.jsonl"

log "reference: sasrec_ref.py --threads $threads ($("$python" -c 'import torch; print("torch", torch.__version__)'))"
"$python" "$reference/sasrec_ref.py" "$data" --init random --normalize --max-len 200 --dim 64 --batch 128 \
    --threads "$threads" --epochs "$epochs" --patience "$epochs" 2> >(grep -v -e UserWarning -e 's.enc = ' >&2) \
    | tee "$out/torch.jsonl"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" - "$out/ours.jsonl" "$out/torch.jsonl" <<'EOF'
import json, statistics, sys

def epoch_seconds(path):
    rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    return [r["epoch_s"] for r in rows if "epoch" in r]

ours, ref = epoch_seconds(sys.argv[1]), epoch_seconds(sys.argv[2])
if not ours or not ref:
    sys.exit("a run reported no epoch")
m_ours, m_ref = statistics.median(ours), statistics.median(ref)
print()
print(f"| {'trainer':<34} | {'s/epoch (median)':>16} | {'epochs (s)':<28} |")
print(f"|{'-' * 36}|{'-' * 18}|{'-' * 30}|")
for name, m, all_s in (("tfllmer (candle, train_folder)", m_ours, ours), ("reference (PyTorch, sasrec_ref.py)", m_ref, ref)):
    print(f"| {name:<34} | {m:>16.1f} | {', '.join(f'{s:.1f}' for s in all_s):<28} |")
print(f"\nours / reference = {m_ours / m_ref:.2f}")
EOF
