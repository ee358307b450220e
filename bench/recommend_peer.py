#!/usr/bin/env python3
"""PyTorch peer of tfllmer.recommend: the same trained model's single-user
forward pass + top-k, timed per call on this machine.

usage: recommend_peer.py MODEL.safetensors CONFIG.json DATA_DIR
        [--users 2000] [--k 10] [--threads 1] [--exclude-seen] [--seed 7]
        [--check-scores FILE.json]

MODEL.safetensors: the tfllmer model file (names of Recommender::named_vars).
CONFIG.json: backbone, n_items, dim, max_len, layers, heads, normalize,
temperature, item_ids (token t <-> item_ids[t-1]).
DATA_DIR: a folder with interactions.csv (user_id,item_id,ts), e.g.
../shared/data/ml-1m.
Prints one JSON line with per-call latency (p50/p99/mean, ms) and calls/s.
--exclude-seen: leave out every item of the user's history (as tfllmer does
with exclude_seen => true, its SQL default), not only the latest max_len.
--check-scores FILE: first, FILE holds [{"history": [item ids], "top": [[item,
score], ...]}, ...] as returned by tfllmer.recommend_next (with the same
exclude_seen as --exclude-seen); recomputes each entry here and stops unless
the top items and scores agree (1e-3 relative), then benchmarks.
"""
import argparse, json, math, os, struct, sys, time
import warnings
import numpy as np
import torch

# the reference builds its encoder with the nested-tensor default, which norm_first disables
warnings.filterwarnings("ignore", message="enable_nested_tensor is True")

# the reference implementation: TFLLMER_REFERENCE_DIR, else shared/reference beside the project
sys.path.insert(0, os.environ.get("TFLLMER_REFERENCE_DIR")
                or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference"))
from sasrec_ref import SASRec, GRU4Rec  # noqa: E402

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """name -> float32 array (the safetensors python package is not installed)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        dt = np.dtype(DTYPES[t["dtype"]]).newbyteorder("<")
        x = np.frombuffer(raw, dtype=dt, count=(b - a) // dt.itemsize, offset=8 + n + a)
        if t["dtype"] == "BF16":  # bf16 is the top half of an f32
            x = (x.astype(np.uint32) << 16).view(np.float32)
        out[name] = x.astype(np.float32).reshape(t["shape"])
    return out


def build_model(weights, cfg):
    """The reference module with the tfllmer weights under torch's names."""
    n, d, L = cfg["n_items"], cfg["dim"], cfg["max_len"]
    t = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    item = t["item"].clone()
    item[0] = 0  # the Rust item table zeroes padding whether normalised or not
    sd = {"item.weight": item}
    if cfg["backbone"] == "sasrec":
        model = SASRec(n, d, L, layers=cfg["layers"], heads=cfg["heads"], drop=0.0, normalize=cfg["normalize"])
        sd["pos.weight"] = t["pos"]
        for i in range(cfg["layers"]):
            b, e = f"blocks.{i}.", f"enc.layers.{i}."
            # torch packs q, k, v row-wise into one in-projection
            sd[e + "self_attn.in_proj_weight"] = torch.cat([t[b + p + ".weight"] for p in "qkv"])
            sd[e + "self_attn.in_proj_bias"] = torch.cat([t[b + p + ".bias"] for p in "qkv"])
            for ours, theirs in [("o", "self_attn.out_proj"), ("ff1", "linear1"), ("ff2", "linear2"),
                                 ("ln1", "norm1"), ("ln2", "norm2")]:
                sd[e + theirs + ".weight"] = t[b + ours + ".weight"]
                sd[e + theirs + ".bias"] = t[b + ours + ".bias"]
        sd["ln.weight"], sd["ln.bias"] = t["ln_final.weight"], t["ln_final.bias"]
        used = {"item", "pos", "ln_final.weight", "ln_final.bias"} | {k for k in t if k.startswith("blocks.")}
    else:
        model = GRU4Rec(n, d, L, drop=0.0, normalize=cfg["normalize"])
        for ours, theirs in [("input", "ih"), ("hidden", "hh")]:
            sd[f"gru.weight_{theirs}_l0"] = t[f"gru.{ours}.weight"]
            sd[f"gru.bias_{theirs}_l0"] = t[f"gru.{ours}.bias"]
        used = {"item", "gru.input.weight", "gru.input.bias", "gru.hidden.weight", "gru.hidden.bias"}
    model.load_state_dict(sd, strict=True)  # every torch parameter must be set, with its shape
    # what multiplies h: the learned GRU4Rec scale, or 1/temperature (Recommender::forward)
    scale = 1.0
    if "logit_scale" in t:
        scale *= float(t["logit_scale"].reshape(-1)[0])
        used.add("logit_scale")
    if cfg.get("temperature") is not None:
        scale /= float(cfg["temperature"])
    left = set(t) - used
    if left:
        sys.exit(f"model file has tensors this peer does not map: {sorted(left)}")
    return model.eval(), scale


def histories(data_dir, item_ids):
    """user -> tokens ordered by time, then item id; unknown items dropped."""
    x = np.loadtxt(os.path.join(data_dir, "interactions.csv"), delimiter=",", skiprows=1, dtype=np.int64)
    x = x[np.lexsort((x[:, 1], x[:, 2], x[:, 0]))]
    toks = tokens_of(x[:, 1], item_ids)
    users, toks = x[toks > 0, 0], toks[toks > 0]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return {int(users[s]): toks[s:e].tolist() for s, e in zip(starts, np.r_[starts[1:], len(users)])}


def tokens_of(items, item_ids):
    """item ids -> tokens (0 = not a training item)."""
    pos = np.searchsorted(item_ids, items)
    ok = (pos < len(item_ids)) & (item_ids[np.minimum(pos, len(item_ids) - 1)] == items)
    return np.where(ok, pos + 1, 0)


def encode(model, x):
    """Hidden states and item table of one left-padded sequence (1 x L).

    SASRec.forward masks padding keys with src_key_padding_mask, which leaves
    the leading padding queries with no key at all: with heads > 1 torch
    returns NaN there, and the NaN reaches every row in the next layer. One
    merged mask with the Rust rule (query i sees itself and the non-padding
    keys before it) keeps every row finite and the real rows unchanged."""
    if isinstance(model, GRU4Rec):
        return model(x)
    W, L = model.table(), x.shape[1]
    eye = torch.eye(L, dtype=torch.bool)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1) | ((x[0] == 0)[None, :] & ~eye)
    return model.ln(model.enc(W[x] + model.pos.weight[:L], mask=mask)), W


def recommend(model, scale, history, L, k, exclude_seen):
    """One call as timed: tensor creation, forward, scores, masking, top-k.
    `history`: the user's known tokens, oldest first (non-empty)."""
    seq = torch.tensor(history, dtype=torch.long)
    x = torch.zeros(1, L, dtype=torch.long)
    x[0, L - min(L, len(history)):] = seq[-L:]  # the latest L, left-padded as the Rust model expects
    h, W = encode(model, x)
    scores = (h[0, -1] * scale) @ W.T
    scores[0] = -math.inf
    if exclude_seen:
        scores[seq] = -math.inf
    return torch.topk(scores, k)


def check(model, scale, cfg, path, exclude_seen):
    item_ids = np.asarray(cfg["item_ids"], dtype=np.int64)
    entries = json.load(open(path))
    matched = 0
    for i, e in enumerate(entries):
        toks = tokens_of(np.asarray(e["history"], dtype=np.int64), item_ids)
        history = toks[toks > 0].tolist()
        top = e["top"] or []  # json_agg gives null for no rows (no known history)
        want_items = [int(a) for a, _ in top]
        want_scores = [float(s) for _, s in top]
        got_items, got_scores = [], []
        if history and top:
            val, idx = recommend(model, scale, history, cfg["max_len"], len(top), exclude_seen)
            got_items, got_scores = item_ids[idx.numpy() - 1].tolist(), val.tolist()
        elif history or top:
            print(json.dumps({"mismatch": i, "tfllmer": top, "known_history": len(history)}), file=sys.stderr)
            continue
        tol = 1e-3 * max([1.0] + [abs(v) for v in got_scores[:1]])  # relative to the row's largest score
        ok = all(abs(a - b) <= tol for a, b in zip(got_scores, want_scores))
        # a different item is only acceptable where scores tie within tolerance
        ok &= all(a == b or abs(sa - sb) <= tol
                  for a, b, sa, sb in zip(got_items, want_items, got_scores, want_scores))
        if ok:
            matched += 1
        else:
            print(json.dumps({"mismatch": i, "tfllmer": e["top"],
                              "pytorch": [[a, s] for a, s in zip(got_items, got_scores)]}), file=sys.stderr)
    print(json.dumps({"check": path, "entries": len(entries), "matched": matched}))
    if matched < len(entries):
        sys.exit(f"{len(entries) - matched} of {len(entries)} entries differ (was exclude_seen the same on both sides?)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model"); p.add_argument("config"); p.add_argument("data")
    p.add_argument("--users", type=int, default=2000); p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1); p.add_argument("--exclude-seen", action="store_true")
    p.add_argument("--seed", type=int, default=7); p.add_argument("--check-scores")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = json.load(open(a.config))
    model, scale = build_model(read_safetensors(a.model), cfg)
    L = cfg["max_len"]
    with torch.inference_mode():
        if a.check_scores:
            check(model, scale, cfg, a.check_scores, a.exclude_seen)
        hist = histories(a.data, np.asarray(cfg["item_ids"], dtype=np.int64))
        users = sorted(u for u, s in hist.items() if s)
        rng = np.random.default_rng(a.seed)
        pick = rng.choice(len(users), a.users, replace=a.users > len(users))
        seqs = [hist[users[i]] for i in pick]
        for s in seqs[:50]:  # warm-up (allocator, lazy init), not timed
            recommend(model, scale, s, L, a.k, a.exclude_seen)
        ms = np.empty(len(seqs))
        for i, s in enumerate(seqs):
            t0 = time.perf_counter()
            recommend(model, scale, s, L, a.k, a.exclude_seen)
            ms[i] = (time.perf_counter() - t0) * 1e3
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": a.threads, "users": len(seqs),
                      "backbone": cfg["backbone"], "k": a.k, "max_len": L, "exclude_seen": a.exclude_seen,
                      "p50_ms": round(float(np.percentile(ms, 50)), 4),
                      "p99_ms": round(float(np.percentile(ms, 99)), 4),
                      "mean_ms": round(float(ms.mean()), 4), "calls_per_s": round(1e3 / float(ms.mean()), 1)}))


if __name__ == "__main__":
    main()
