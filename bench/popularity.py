#!/usr/bin/env python3
"""The popularity baseline of a data folder (interactions.csv), evaluated as
tfllmer evaluates: leave-one-out (each user's last item is the test target,
the one before it validation, the rest training; users with at least 3
interactions), items ranked by how often they occur in the training parts,
the user's history (everything before the target) masked, full ranking.
Prints test HR@10 and NDCG@10.

usage: bench/popularity.py DIR
"""
import sys

import numpy as np

d = np.loadtxt(sys.argv[1] + "/interactions.csv", delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
user, item, ts = d[:, 0], d[:, 1], d[:, 2]
order = np.lexsort((item, ts, user))  # equal times ordered by item id, as tfllmer does
user, item = user[order], item[order]
starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
ends = np.r_[starts[1:], len(user)]
keep = (ends - starts) >= 3
starts, ends = starts[keep], ends[keep]
train = np.zeros(len(user), dtype=bool)
for s, e in zip(starts, ends):
    train[s:e - 2] = True
counts = np.bincount(item[train], minlength=item.max() + 1)
counts[0] = -1  # id 0 is no item
# popularity rank of every item: 0 = most popular, ties by item id
ranking = np.lexsort((np.arange(len(counts)), -counts))
rank = np.empty_like(ranking)
rank[ranking] = np.arange(len(ranking))
hits = ndcg = 0.0
for s, e in zip(starts, ends):
    target = item[e - 1]
    history = np.unique(item[s:e - 1])
    if np.any(history == target):
        continue  # masked: it cannot be recommended
    r = rank[target] - np.count_nonzero(rank[history] < rank[target])
    if r < 10:
        hits += 1
        ndcg += 1.0 / np.log2(r + 2)
n = len(starts)
print(f"popularity: {n} users, test HR@10 {hits / n:.4f}, NDCG@10 {ndcg / n:.4f}")
