#!/usr/bin/env python3
"""Times tfllmer.rec_pca against the numpy/scipy reference
(shared/reference/rec_pca.py) on the same data in the same run, and records
the peak memory of each.

usage: rec_pca.py DATA_DIR REFERENCE_DIR [--dim 64] [--lam 0.5] [--window 1] [--runs 5]
DATA_DIR is in the format of shared/data and is already loaded (tables
interactions and items, scripts/load_dataset.py) into the database of the PG*
environment variables. Run with the venv's Python (numpy, scipy).

tfllmer: server-side time of the whole call (reading the embeddings from
the table, the graph from the catalog, computing, storing). Peak memory: the
backend's VmHWM from /proc (a fresh connection per run).
Reference: the same outputs (Rec-PCA, plain PCA for graph_tv_pca, both TV
figures) from X0 and A already in memory, so loading is not counted; peak
memory: the process's maximum RSS, measured in a fresh process per run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

PSQL = os.path.join(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")

REFERENCE_RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import rec_pca as ref
data, window, dim, lam = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
X0, inter = ref.load(data)
A = ref.build_graph(inter, X0.shape[0], window, 2)
t0 = time.perf_counter()
Ahat = ref.normalise_graph(A)
Z, W, retained = ref.rec_pca(X0, Ahat, dim, lam)
Zp, _, _ = ref.rec_pca(X0, None, dim, 0.0)
tv, tv_pca = ref.graph_tv(Z, Ahat), ref.graph_tv(Zp, Ahat)
Zn = (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)
ms = 1e3 * (time.perf_counter() - t0)
print(json.dumps(dict(ms=ms, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      retained_variance=retained, graph_tv=tv, graph_tv_pca=tv_pca)))
"""


def psql(sql):
    p = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], input=sql, text=True,
                       capture_output=True, check=True)
    return p.stdout.strip()


class Session:
    """One psql session kept open, so that the backend's /proc entry can be
    read between statements."""

    def __init__(self):
        self.p = subprocess.Popen([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = int(self.run("SELECT pg_backend_pid();")[0])

    def run(self, sql):
        self.p.stdin.write(sql + "\n\\echo __done__\n")
        self.p.stdin.flush()
        lines = []
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == "__done__":
                return lines
            lines.append(line)
        raise RuntimeError(f"psql ended early during: {sql}")

    def peak_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("reference")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    psql(f"SELECT 1 FROM tfllmer.build_graph('bench_graph', 'interactions', window_size => {a.window}, replace => true)")
    ours, ref = [], []
    for i in range(a.runs + 1):  # the first run of each side is a warm-up
        s = Session()
        base = s.peak_mb()
        figures = s.run(f"""SELECT retained_variance, graph_tv, graph_tv_pca, build_ms FROM tfllmer.rec_pca(
    'bench_emb', 'items', graph_name => 'bench_graph', dim => {a.dim}, lambda => {a.lam}, replace => true);""")
        peak = s.peak_mb()
        s.close()
        rv, tv, tvp, ms = map(float, figures[0].split("|"))
        r = json.loads(subprocess.run([sys.executable, "-c", REFERENCE_RUN, a.reference, a.data, str(a.window),
                                       str(a.dim), str(a.lam)], check=True, text=True, capture_output=True).stdout)
        if i:
            ours.append(dict(ms=ms, peak_mb=peak, base_mb=base, retained_variance=rv, graph_tv=tv, graph_tv_pca=tvp))
            ref.append(r)
    med = lambda rows, k: statistics.median(row[k] for row in rows)
    span = lambda rows, k: f"{min(row[k] for row in rows):.0f}-{max(row[k] for row in rows):.0f}"
    agree = max(abs(o[k] - r[k]) / abs(r[k]) for o, r in zip(ours, ref) for k in ("retained_variance", "graph_tv", "graph_tv_pca"))
    print("| side | median ms (range) | peak RSS MB |")
    print("|---|---|---|")
    print(f"| tfllmer.rec_pca (server-side, whole call) | {med(ours, 'ms'):.0f} ({span(ours, 'ms')}) | "
          f"{med(ours, 'peak_mb'):.0f} (backend; {med(ours, 'base_mb'):.0f} before the call) |")
    print(f"| numpy/scipy reference (compute only) | {med(ref, 'ms'):.0f} ({span(ref, 'ms')}) | "
          f"{med(ref, 'peak_mb'):.0f} (whole process) |")
    print(f"\nratio (reference / tfllmer): {med(ref, 'ms') / med(ours, 'ms'):.2f}x; "
          f"largest relative difference of the three figures: {agree:.1e}")


if __name__ == "__main__":
    main()
