#!/usr/bin/env python3
"""rec_pca on MovieLens-100K against the numpy reference
(shared/reference/rec_pca.py): retained_variance, graph_tv and graph_tv_pca
must agree to 1e-6 relative for lambda 0, 0.5 and 0.9 (window-1 graph,
dim 64), and two runs must give bit-identical embeddings.

usage: test_reference_rec_pca.py DATA_DIR REFERENCE_DIR PYTHON_WITH_SCIPY
Needs a running cluster with tfllmer installed (PG* environment variables).
"""
import json
import os
import subprocess
import sys

from pg import one, psql

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-6


def main():
    data_dir, ref_dir, python = sys.argv[1:4]
    data = os.path.join(data_dir, "ml-100k")
    if not os.path.exists(os.path.join(data, "item_embeddings.f32")):
        print(f"SKIPPED rec_pca reference checks: {data} not found")
        return
    db = "tfllmer_reference_pca"
    psql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};")
    env = dict(os.environ, PGDATABASE=db)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "load_dataset.py"), data], check=True, env=env)
    psql("CREATE EXTENSION tfllmer; SELECT * FROM tfllmer.build_graph('g1', 'interactions', window_size => 1);", db=db)
    failures = 0
    for lam in (0.0, 0.5, 0.9):
        ref = json.loads(subprocess.run(
            [python, os.path.join(ref_dir, "rec_pca.py"), data, "--window", "1", "--holdout", "2",
             "--dim", "64", "--lam", str(lam)], check=True, text=True, capture_output=True).stdout)
        got = one(f"SELECT retained_variance, graph_tv, graph_tv_pca FROM tfllmer.rec_pca('e{lam}', 'items', "
                  f"graph_name => 'g1', dim => 64, lambda => {lam})", db=db)
        for name, value in zip(("retained_variance", "graph_tv", "graph_tv_pca"), map(float, got)):
            rel = abs(value - ref[name]) / abs(ref[name])
            ok = rel <= TOLERANCE
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} ml-100k lambda {lam} {name}: {value:.12f} (reference {ref[name]:.12f}, "
                  f"relative difference {rel:.1e})")
    # determinism: the same call twice, byte for byte
    digest = "SELECT md5(string_agg(item_id || ':' || embedding::text, ',' ORDER BY item_id)) FROM tfllmer.embedding('{}')"
    psql("SELECT 1 FROM tfllmer.rec_pca('again', 'items', graph_name => 'g1', dim => 64, lambda => 0.5)", db=db)
    first, second = one(digest.format("e0.5"), db=db)[0], one(digest.format("again"), db=db)[0]
    same = first == second
    failures += not same
    print(f"{'ok  ' if same else 'FAIL'} two runs give identical embeddings ({first} vs {second})")
    psql(f"DROP DATABASE {db};")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
