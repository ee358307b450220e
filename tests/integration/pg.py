"""A minimal PostgreSQL client for the integration tests: psql in a
subprocess, connection from the PG* environment variables."""
import os
import subprocess

PSQL = os.path.join(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")


def psql(sql, *, db=None, check=True):
    """Runs SQL (which may contain psql meta-commands); returns the rows of
    the last result as lists of strings."""
    cmd = [PSQL, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    if db:
        cmd += ["-d", db]
    proc = subprocess.run(cmd, input=sql, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"psql failed ({proc.returncode}):\n{sql}\n{proc.stderr}")
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def one(sql, **kw):
    rows = psql(sql, **kw)
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {rows!r} from\n{sql}")
    return rows[0]
