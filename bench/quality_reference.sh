#!/usr/bin/env bash
# The quality peer of bench/quality.sh: the PyTorch reference
# (shared/reference/sasrec_ref.py) trains the same four SASRec variants with
# the same setup (graph window 1, Rec-PCA lambda 0.5, dim 64, patience 10,
# seed 7), for a fixed number of epochs each (give it the epochs that
# quality.sh's runs reached, for the same training per variant). The four
# runs go at once with THREADS threads each. Prints a markdown table.
#
# usage: bench/quality_reference.sh DATA_DIR [EPOCHS] [MAX_LEN] [THREADS]
#   e.g. bench/quality_reference.sh ../shared/data/ml-100k 49 200 1
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="$(cd "$1" && pwd)"
epochs="${2:-50}"
max_len="${3:-200}"
threads="${4:-1}"
reference="$(reference_dir)"
[ -n "$reference" ] || { echo "no shared/reference/sasrec_ref.py" >&2; exit 2; }
python=$(reference_python)
"$python" -c 'import torch' 2>/dev/null || "$python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu >&2
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); torch $("$python" -c 'import torch; print(torch.__version__)')"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # run LABEL INIT [--normalize]
    local label=$1 init=$2; shift 2
    "$python" -W ignore "$reference/sasrec_ref.py" "$data" --init "$init" "$@" --lam 0.5 --window 1 --epochs "$epochs" \
        --patience 10 --max-len "$max_len" --dim 64 --seed 7 --threads "$threads" > "$work/$label.jsonl"
}
run a random &
run b pca &
run c pca --normalize &
run d recpca --normalize &
wait
echo "| variant | epochs | best valid NDCG@10 | test HR@10 | test NDCG@10 | s/epoch (4 at once) |"
echo "|---|---|---|---|---|---|"
for label in a b c d; do
    tail -1 "$work/$label.jsonl" | python3 -c 'import json, sys
r = json.load(sys.stdin)
print("| (%s) %s%s | %d | %.4f | %.4f | %.4f | %.1f |" % (sys.argv[1], r["init"], ", normalised" if r["normalize"] else "",
      r["epochs_run"], r["best_valid_ndcg10"], r["test_hr@10"], r["test_ndcg@10"], r["median_epoch_s"]))' "$label"
done
