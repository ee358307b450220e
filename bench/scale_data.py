#!/usr/bin/env python3
"""Generates interaction sets of any size with the structure real ones have,
in the format of shared/data (interactions.csv, item_embeddings.f32 + .json),
for the scale benchmarks. Generated, never committed.

usage: bench/scale_data.py OUT_DIR [--size S|M|L] [--users U] [--items N]
                           [--interactions E] [--dim D] [--seed SEED]
  S: 6,000 users, 3,700 items, 1M interactions (MovieLens-1M's shape)
  M: 1M users, 100k items, 20M interactions
  L: 1M users, 1M items, 100M interactions
  --users/--items/--interactions override the size's counts; --dim is the
  width of the item vectors (default 768).
Needs numpy (the project venv has it). Load with scripts/load_dataset.py.

The structure, and why:
- Items fall into taste communities (sizes Zipf-like); within a community
  they lie along a hidden one-dimensional order. Each user belongs to three
  communities (drawn by their popularity). A user's sequence walks along the
  order of the current community and sometimes moves to another of its
  communities (8% a step) or jumps to a
  random place (2%): each step picks one of the next 16 items along the
  order (nearer and more popular ones likelier) and moves there. Sequential
  drift that a sequential model can learn and popularity cannot; items
  repeat in a history only after a wrap-around or a jump.
- Item popularity is Zipf-like (weight 1/rank^0.9), applied when a user
  picks among the items near its position, so popular items recur across
  users and communities.
- Item vectors are LLM-like: a large shared offset (LLM embeddings are
  anisotropic), a topic centroid (topics match the communities only partly:
  60% of a community's items carry its home topic, the others a random one,
  the paper's second cause), a smooth function of the item's place in its
  community's order (what makes them useful as an initialisation), and
  noise; each vector is scaled by a factor spread over an order of magnitude
  (norms in [1, 10] × the base norm).
Sequence lengths are lognormal around interactions / users (at least 3, as
leave-one-out needs). Deterministic for a seed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

SIZES = {
    "S": (6_000, 3_700, 1_000_000),
    "M": (1_000_000, 100_000, 20_000_000),
    "L": (1_000_000, 1_000_000, 100_000_000),
}
WINDOW = 16  # candidates around a user's position each step
USER_COMMUNITIES = 3  # communities a user moves between (the first is home)
SWITCH = 0.08  # chance a step moves to another of the user's communities
JUMP = 0.02  # chance a step jumps to a random place of the community's order
HOME_TOPIC = 0.6  # share of a community's items with its home topic


def log(msg, started=[time.time()]):
    print(f"[{time.time() - started[0]:7.1f} s] {msg}", file=sys.stderr, flush=True)


def communities(n_items, rng):
    n_comm = max(4, int(round(np.sqrt(n_items) / 3)))
    weight = 1.0 / np.arange(1, n_comm + 1) ** 0.7
    comm = rng.choice(n_comm, size=n_items, p=weight / weight.sum())
    coord = rng.random(n_items)
    # items ordered by community, then by their place in its order
    order = np.lexsort((coord, comm))
    size = np.bincount(comm, minlength=n_comm)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    return n_comm, comm, coord, order, size, start


def interactions(n_users, n_items, n_events, rng, out):
    n_comm, comm, coord, order, size, start = communities(n_items, rng)
    popularity = 1.0 / rng.permutation(np.arange(1, n_items + 1)) ** 0.9
    comm_pop = np.bincount(comm, weights=popularity, minlength=n_comm)
    # communities with no items are never chosen
    # each user's communities: the first is home
    comms = rng.choice(n_comm, size=(USER_COMMUNITIES, n_users), p=comm_pop / comm_pop.sum())
    mean = n_events / n_users
    lengths = np.maximum(3, rng.lognormal(np.log(mean) - 0.32, 0.8, size=n_users)).astype(np.int64)
    lengths = np.maximum(3, np.round(lengths * (n_events / lengths.sum()))).astype(np.int64)
    lengths = np.minimum(lengths, 20 * int(mean) + 50)
    current = np.zeros(n_users, dtype=np.int64)
    # a place in each of the user's communities' orders
    place = rng.random((USER_COMMUNITIES, n_users))
    offsets = np.arange(1, WINDOW + 1)
    closeness = np.exp(-((offsets - 1).astype(np.float64) ** 2) / (2 * 4.0**2))
    users_by_len = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[users_by_len]
    chunks = []
    total = int(lengths.sum())
    done = 0
    for t in range(int(lengths.max())):
        active = users_by_len[: np.searchsorted(-sorted_len, -t, side="left")]
        switch = rng.random(active.size) < SWITCH
        a_sw = active[switch]
        current[a_sw] = (current[a_sw] + rng.integers(1, USER_COMMUNITIES, a_sw.size)) % USER_COMMUNITIES
        jump = rng.random(active.size) < JUMP
        side = current[active]
        place[side[jump], active[jump]] = rng.random(np.count_nonzero(jump))
        c = comms[side, active]
        n_c = size[c]
        base = np.floor(place[side, active] * n_c).astype(np.int64)
        # the next WINDOW items along the order, nearer ones likelier, popular ones likelier
        ahead = (base[:, None] + offsets[None, :]) % n_c[:, None]
        cand = order[start[c][:, None] + ahead]
        w = popularity[cand] * closeness[None, :]
        cum = np.cumsum(w, axis=1)
        u = rng.random(active.size) * cum[:, -1]
        k = (cum < u[:, None]).sum(axis=1).clip(max=WINDOW - 1)
        pick = cand[np.arange(active.size), k]
        place[side, active] = (ahead[np.arange(active.size), k] + 0.5) / n_c
        chunks.append((active.astype(np.int32), pick.astype(np.int32), np.full(active.size, t, np.int32)))
        done += active.size
        if t % 50 == 0:
            log(f"step {t}: {done:,} of {total:,} interactions")
    users = np.concatenate([c[0] for c in chunks])
    items = np.concatenate([c[1] for c in chunks])
    steps = np.concatenate([c[2] for c in chunks])
    del chunks
    by_user = np.lexsort((steps, users))
    users, items, steps = users[by_user], items[by_user], steps[by_user]
    log(f"writing {users.size:,} interactions")
    ts = 1_700_000_000 + steps.astype(np.int64) * 60 + (users.astype(np.int64) % 3600)
    with open(os.path.join(out, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,ts\n")
        step = 2_000_000
        for i in range(0, users.size, step):
            block = np.column_stack([users[i:i + step] + 1, items[i:i + step] + 1, ts[i:i + step]])
            np.savetxt(f, block, fmt="%d", delimiter=",")
    return comm, coord, n_comm, users.size, np.unique(items).size


def item_vectors(n_items, dim, comm, coord, n_comm, rng, out):
    home_topic = rng.permutation(n_comm)
    topic = np.where(rng.random(n_items) < HOME_TOPIC, home_topic[comm], rng.integers(0, n_comm, n_items))
    offset = rng.normal(0.0, 1.0, dim) * 3.0
    centroids = rng.normal(0.0, 1.0, (n_comm, dim))
    # per community, how the place in its order shows in the vector
    order_maps = rng.normal(0.0, 1.0, (n_comm, 8, dim)) * 0.6
    norms = []
    path = os.path.join(out, "item_embeddings.f32")
    with open(path, "wb") as f:
        step = 20_000
        for i in range(0, n_items, step):
            j = min(n_items, i + step)
            k = np.arange(1, 5)
            angle = 2 * np.pi * coord[i:j, None] * k[None, :]
            feats = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
            v = offset[None, :] + centroids[topic[i:j]] + np.einsum("nf,nfd->nd", feats, order_maps[comm[i:j]])
            v += rng.normal(0.0, 0.8, (j - i, dim))
            v *= np.exp(rng.uniform(0.0, np.log(10.0), j - i))[:, None] / np.sqrt(dim)
            v = v.astype("<f4")
            norms.append(np.linalg.norm(v, axis=1))
            f.write(v.tobytes())
    norms = np.concatenate(norms)
    meta = {
        "n_items": int(n_items), "dim": int(dim), "dtype": "float32", "byte_order": "little",
        "layout": "row-major; row r is item_id r+1", "file": "item_embeddings.f32",
        "generator": "bench/scale_data.py",
    }
    json.dump(meta, open(os.path.join(out, "item_embeddings.json"), "w"), indent=2)
    return float(norms.min()), float(np.median(norms)), float(norms.max())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--size", choices=sorted(SIZES), default="S")
    p.add_argument("--users", type=int)
    p.add_argument("--items", type=int)
    p.add_argument("--interactions", type=int)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    users, items, events = SIZES[a.size]
    users, items, events = a.users or users, a.items or items, a.interactions or events
    if min(users, items, a.dim) < 1 or events < 3 * users:
        sys.exit("need users, items, dim >= 1 and at least 3 interactions per user")
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    log(f"{users:,} users, {items:,} items, about {events:,} interactions, {a.dim}-d vectors, seed {a.seed}")
    comm, coord, n_comm, n_events, n_used = interactions(users, items, events, rng, a.out)
    log(f"{n_events:,} interactions over {n_used:,} items; writing item vectors")
    low, median, high = item_vectors(items, a.dim, comm, coord, n_comm, rng, a.out)
    stats = {
        "users": users, "items": items, "interactions": int(n_events), "items_with_interactions": int(n_used),
        "communities": int(n_comm), "dim": a.dim, "seed": a.seed,
        "vector_norm": {"min": low, "median": median, "max": high},
    }
    json.dump(stats, open(os.path.join(a.out, "stats.json"), "w"), indent=2)
    log(f"done: {json.dumps(stats)}")


if __name__ == "__main__":
    main()
