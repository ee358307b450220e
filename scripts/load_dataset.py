#!/usr/bin/env python3
"""Loads a data folder in the format of shared/data into PostgreSQL:
  interactions(user_id int, item_id int, ts bigint)      from interactions.csv
  items(item_id int PRIMARY KEY, embedding real[])        from item_embeddings.f32/.json
  item_info(item_id int, title text, genre text, ...)     from items.csv (first columns kept)
Connection from the PG* environment variables (psql).

usage: load_dataset.py DIR [--schema public]
"""
import argparse
import array
import csv
import json
import os
import subprocess
import sys
import tempfile

PSQL = os.path.join(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")


def psql(sql):
    subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=sql, text=True, check=True)


def copy_embeddings_binary(path, n, dim, table):
    """Streams the .f32 file into `table` (item_id, embedding real[]) with
    COPY's binary format (no float text to write or parse: a million
    768-d vectors load in a minute or two). Needs numpy."""
    import numpy as np
    elem = np.dtype([("len", ">i4"), ("v", ">f4")])
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i4"), ("arr_len", ">i4"), ("ndim", ">i4"),
                    ("hasnull", ">i4"), ("oid", ">i4"), ("size", ">i4"), ("lbound", ">i4"), ("e", elem, (dim,))])
    proc = subprocess.Popen([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                             f"\\copy {table} FROM pstdin (FORMAT binary)"], stdin=subprocess.PIPE)
    proc.stdin.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
    values = np.memmap(path, dtype="<f4", mode="r", shape=(n, dim))
    step = 20_000
    for start in range(0, n, step):
        block = values[start:start + step]
        out = np.zeros(len(block), dtype=row)
        out["fields"], out["id_len"], out["arr_len"] = 2, 4, 20 + 8 * dim
        out["id"] = np.arange(start + 1, start + 1 + len(block))
        out["ndim"], out["oid"], out["size"], out["lbound"] = 1, 700, dim, 1  # 700: float4
        out["e"]["len"] = 4
        out["e"]["v"] = block
        proc.stdin.write(out.tobytes())
    proc.stdin.write(b"\xff\xff")
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("loading the embeddings failed")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--schema", default="public")
    a = p.parse_args()
    d, s = a.dir, a.schema
    meta = json.load(open(os.path.join(d, "item_embeddings.json")))
    n, dim = meta["n_items"], meta["dim"]
    f32 = os.path.join(d, meta.get("file", "item_embeddings.f32"))
    try:
        import numpy  # noqa: F401  (the fast path)
        emb_csv = None
    except ImportError:
        values = array.array("f")
        with open(f32, "rb") as f:
            values.fromfile(f, n * dim)
        if sys.byteorder != "little":
            values.byteswap()
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as tmp:
            for r in range(n):
                row = values[r * dim:(r + 1) * dim]
                tmp.write(f'{r + 1},"{{{",".join(repr(x) for x in row)}}}"\n')
            emb_csv = tmp.name
        os.chmod(emb_csv, 0o644)
    info_sql = ""
    items_csv = os.path.join(d, "items.csv")
    if os.path.exists(items_csv):
        with open(items_csv, newline="") as f:
            header = next(csv.reader(f))
        cols = ", ".join(f'"{c}" text' for c in header[1:])
        info_sql = (f"CREATE TABLE {s}.item_info (item_id int PRIMARY KEY, {cols});\n"
                    f"\\copy {s}.item_info FROM '{items_csv}' CSV HEADER\n")
    copy_csv = f"\\copy {s}.items FROM '{emb_csv}' CSV" if emb_csv else ""
    psql(f"""
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS {s};
DROP TABLE IF EXISTS {s}.interactions, {s}.items, {s}.item_info;
CREATE TABLE {s}.interactions (user_id int NOT NULL, item_id int NOT NULL, ts bigint NOT NULL);
\\copy {s}.interactions FROM '{os.path.join(d, "interactions.csv")}' CSV HEADER
CREATE INDEX ON {s}.interactions (user_id, ts, item_id);  -- serves recommend()'s history reads
CREATE TABLE {s}.items (item_id int PRIMARY KEY, embedding real[] NOT NULL);
{copy_csv}
{info_sql}
""")
    if emb_csv:
        os.unlink(emb_csv)
    else:
        copy_embeddings_binary(f32, n, dim, f"{s}.items")
    psql(f"ANALYZE {s}.interactions, {s}.items;")
    print(f"loaded {d} into schema {s}: {n} items x {dim}-d embeddings", file=sys.stderr)


if __name__ == "__main__":
    main()
