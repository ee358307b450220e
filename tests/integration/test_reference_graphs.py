#!/usr/bin/env python3
"""build_graph on the real MovieLens data against the numpy/scipy reference
(shared/reference/rec_pca.py): n_edges and total_weight must be equal.

usage: test_reference_graphs.py DATA_DIR REFERENCE_DIR PYTHON_WITH_SCIPY
Needs a running cluster with tfllmer installed (PG* environment variables).
Data sets missing from DATA_DIR are reported as SKIPPED.
"""
import json
import os
import subprocess
import sys

from pg import one, psql

CASES = [("ml-100k", 1), ("ml-100k", 3), ("ml-1m", 1), ("ml-1m", 3)]


def reference(python, ref_dir, data, window):
    out = subprocess.run(
        [python, os.path.join(ref_dir, "rec_pca.py"), data, "--window", str(window), "--holdout", "2"],
        check=True, text=True, capture_output=True,
    ).stdout
    return json.loads(out)


def main():
    data_dir, ref_dir, python = sys.argv[1:4]
    db = "tfllmer_reference"
    psql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};")
    psql("CREATE EXTENSION tfllmer;", db=db)
    failures, ran = 0, 0
    loaded = set()
    for name, window in CASES:
        data = os.path.join(data_dir, name)
        if not os.path.exists(os.path.join(data, "interactions.csv")):
            print(f"SKIPPED {name} window {window}: {data}/interactions.csv not found")
            continue
        table = name.replace("-", "_")
        if name not in loaded:
            psql(f"CREATE TABLE {table} (user_id int, item_id int, ts bigint);\n"
                 f"\\copy {table} FROM '{data}/interactions.csv' CSV HEADER", db=db)
            loaded.add(name)
        ref = reference(python, ref_dir, data, window)
        got = one(f"SELECT n_edges, total_weight FROM tfllmer.build_graph('{table}_w{window}', '{table}', "
                  f"window_size => {window}, holdout => 2)", db=db)
        n_edges, total_weight = int(got[0]), float(got[1])
        ok = n_edges == ref["n_edges"] and total_weight == ref["total_weight"]
        ran += 1
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} window {window}: n_edges {n_edges} (reference {ref['n_edges']}), "
              f"total_weight {total_weight:.0f} (reference {ref['total_weight']:.0f})")
    psql(f"DROP DATABASE {db};")
    if ran == 0:
        print("SKIPPED: no reference data set found; these checks did not run")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
