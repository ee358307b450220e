#!/usr/bin/env python3
"""Writes a generated data folder in the format of shared/data: N items with
D-dimensional embeddings (clusters with uneven norms) and interactions of
users that walk between related items. Deterministic (seeded).

usage: generate_embeddings.py OUT_DIR [--items 100000] [--dim 1024] [--users 50000] [--seed 3]
"""
import argparse
import json
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    centres = rng.standard_normal((64, a.dim)).astype(np.float32)
    cluster = rng.integers(0, 64, a.items)
    x = centres[cluster] + 0.5 * rng.standard_normal((a.items, a.dim), dtype=np.float32)
    x *= np.exp(rng.uniform(np.log(0.2), np.log(5.0), (a.items, 1))).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(a.out, "item_embeddings.f32"))
    json.dump({"n_items": a.items, "dim": a.dim, "dtype": "float32", "byte_order": "little",
               "file": "item_embeddings.f32", "generator": "bench/generate_embeddings.py", "seed": a.seed},
              open(os.path.join(a.out, "item_embeddings.json"), "w"))
    lengths = rng.integers(5, 40, a.users)
    rows = []
    for u, n in enumerate(lengths, 1):
        item = rng.integers(0, a.items)
        steps = rng.integers(-50, 51, n)
        items = (item + np.cumsum(steps)) % a.items + 1
        rows.append(np.column_stack([np.full(n, u), items, np.arange(n)]))
    inter = np.concatenate(rows)
    np.savetxt(os.path.join(a.out, "interactions.csv"), inter, fmt="%d", delimiter=",", header="user_id,item_id,ts",
               comments="")
    print(f"wrote {a.items} x {a.dim} embeddings and {len(inter)} interactions to {a.out}")


if __name__ == "__main__":
    main()
