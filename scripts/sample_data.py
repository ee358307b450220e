#!/usr/bin/env python3
"""Writes the demo's built-in data set: generated, deterministic, offline,
in the format of shared/data (interactions.csv, item_embeddings.f32 + .json,
items.csv).

It shows the two problems TF-LLMER addresses:
  1. norm disparity: item vectors have very different lengths (x0.2 to x5);
  2. misaligned clusters: the "LLM" vectors cluster by genre, while users
     consume items by taste community, which cuts across genres (the
     vectors carry only a faint trace of it).

usage: sample_data.py OUT_DIR [--users 600] [--items 400] [--dim 64] [--seed 7]
"""
import argparse
import array
import json
import math
import os
import random

GENRES = ["drama", "comedy", "thriller", "scifi", "romance", "documentary", "animation", "horror"]
COMMUNITIES = 5


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    centroids = [unit([rng.gauss(0, 1) for _ in range(a.dim)]) for _ in GENRES]
    # a faint trace of the taste community in the text embedding: the signal
    # Rec-PCA can recover with the help of the co-occurrence graph
    taste = [unit([rng.gauss(0, 1) for _ in range(a.dim)]) for _ in range(COMMUNITIES)]
    items = []  # (item_id, genre, community, popularity)
    vectors = []
    for i in range(a.items):
        genre = i % len(GENRES)
        community = rng.randrange(COMMUNITIES)  # independent of the genre
        popularity = 1.0 / (1 + i // len(GENRES)) ** 0.8
        norm = math.exp(rng.uniform(math.log(0.2), math.log(5.0)))
        v = unit([c + 0.6 * t + rng.gauss(0, 0.35) for c, t in zip(centroids[genre], taste[community])])
        vectors.append([x * norm for x in v])
        items.append((i + 1, genre, community, popularity))

    by_community = [[it for it in items if it[2] == c] for c in range(COMMUNITIES)]
    rows = []
    for u in range(1, a.users + 1):
        community = rng.randrange(COMMUNITIES)
        length = rng.randint(8, 60)
        t = rng.randint(1_700_000_000, 1_700_500_000)
        for _ in range(length):
            pool = by_community[community] if rng.random() < 0.85 else items
            item = rng.choices(pool, weights=[it[3] for it in pool])[0]
            t += rng.choice([0, 0, 60, 300, 3600, 86400])  # equal times happen
            rows.append((u, item[0], t))

    with open(os.path.join(a.out, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,ts\n")
        f.writelines(f"{u},{i},{t}\n" for u, i, t in rows)
    with open(os.path.join(a.out, "items.csv"), "w") as f:
        f.write("item_id,title,genre,community\n")
        f.writelines(f"{i},{GENRES[g]} #{i},{GENRES[g]},{c}\n" for i, g, c, _ in items)
    flat = array.array("f", [x for v in vectors for x in v])
    if flat.itemsize != 4:
        raise SystemExit("float32 arrays are required")
    with open(os.path.join(a.out, "item_embeddings.f32"), "wb") as f:
        if os.sys.byteorder != "little":
            flat.byteswap()
        flat.tofile(f)
    with open(os.path.join(a.out, "item_embeddings.json"), "w") as f:
        json.dump({"n_items": a.items, "dim": a.dim, "dtype": "float32", "byte_order": "little",
                   "layout": "row-major; row r is item_id r+1", "file": "item_embeddings.f32",
                   "generator": "scripts/sample_data.py", "seed": a.seed}, f, indent=1)
    print(f"wrote {len(rows)} interactions of {a.users} users on {a.items} items to {a.out}")


if __name__ == "__main__":
    main()
