# Starts a throwaway PostgreSQL cluster for tests and benchmarks.
# Source this file, then call `start_postgres WORKDIR`; it exports
# VERN_TEST_POSTGRES_URL and registers `stop_postgres` to run at exit.

find_pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the postgres system user when we are root (initdb
# refuses to run as root), else as ourselves.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local work="$1"
    local bin
    if ! bin="$(find_pg_bin)"; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "PostgreSQL server binaries not found; installing them from Debian's packages" >&2
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
            bin="$(find_pg_bin)" || { echo "PostgreSQL is still missing after install" >&2; return 1; }
        else
            echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2
            return 1
        fi
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home postgres
    fi
    PG_DIR="$work/pg"
    mkdir -p "$PG_DIR"
    chmod 755 "$work"
    if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
    local port
    port="$(free_port)"
    as_pg_user "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$work/initdb.log" 2>&1 ||
        { cat "$work/initdb.log" >&2; return 1; }
    # fsync and synchronous_commit stay on: the durability tests rely on them.
    as_pg_user "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on -c synchronous_commit=on" \
        start >/dev/null ||
        { cat "$PG_DIR/server.log" >&2; return 1; }
    PG_BIN="$bin"
    export VERN_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running at $VERN_TEST_POSTGRES_URL" >&2
}

stop_postgres() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
        as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
}
