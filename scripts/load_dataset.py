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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--schema", default="public")
    a = p.parse_args()
    d, s = a.dir, a.schema
    meta = json.load(open(os.path.join(d, "item_embeddings.json")))
    n, dim = meta["n_items"], meta["dim"]
    values = array.array("f")
    with open(os.path.join(d, meta.get("file", "item_embeddings.f32")), "rb") as f:
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
    psql(f"""
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS {s};
DROP TABLE IF EXISTS {s}.interactions, {s}.items, {s}.item_info;
CREATE TABLE {s}.interactions (user_id int NOT NULL, item_id int NOT NULL, ts bigint NOT NULL);
\\copy {s}.interactions FROM '{os.path.join(d, "interactions.csv")}' CSV HEADER
CREATE INDEX ON {s}.interactions (user_id, ts, item_id);  -- serves recommend()'s history reads
CREATE TABLE {s}.items (item_id int PRIMARY KEY, embedding real[] NOT NULL);
\\copy {s}.items FROM '{emb_csv}' CSV
{info_sql}
ANALYZE {s}.interactions, {s}.items;
""")
    os.unlink(emb_csv)
    print(f"loaded {d} into schema {s}: {n} items x {dim}-d embeddings", file=sys.stderr)


if __name__ == "__main__":
    main()
