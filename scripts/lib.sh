# Shared by the project's scripts: where things are, and how to run a
# throwaway PostgreSQL 15 cluster as a non-root user (Postgres refuses root).
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=/usr/bin/pg_config
PGRX_VERSION=0.18.1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# As root, clusters belong to the `postgres` OS user; otherwise to the caller.
if [ "$(id -u)" -eq 0 ]; then
    PG_OS_USER=postgres
    as_pg() { runuser -u postgres -- "$@"; }
    as_root() { "$@"; }
else
    PG_OS_USER=$(id -un)
    as_pg() { "$@"; }
    as_root() { sudo "$@"; }
fi

# state_dir PARENT NAME: a directory for cluster state that the cluster's OS
# user can reach: PARENT/NAME when it can traverse PARENT (e.g. the project's
# .dev/ or target/), else the same under /var/tmp.
state_dir() {
    local parent=$1 name=$2
    mkdir -p "$parent"
    local dir="$parent/$name"
    if ! as_pg test -x "$parent" 2>/dev/null; then
        dir="/var/tmp/pg_warden-$(printf '%s' "$parent" | sha256sum | cut -c1-12)/$name"
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown "$PG_OS_USER" "$dir"; fi
    printf '%s' "$dir"
}

# cluster_init DIR PORT [postgresql.conf lines...]: initdb once into DIR/data
# with a socket in DIR/run, no TCP beyond loopback, and the given settings.
cluster_init() {
    local dir=$1 port=$2
    shift 2
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg mkdir -p "$dir/run"
        as_pg chmod 700 "$dir/run"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
            --no-instructions -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; die "initdb failed in $dir/data"; }
    fi
    # Rewritten on every start so a changed setting takes effect.
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir/run'"
        echo "fsync = off"
        echo "log_min_messages = warning"
        local line
        for line in "$@"; do echo "$line"; done
    } | as_pg tee "$dir/data/postgresql.auto.conf" >/dev/null
    # Trust only the private socket directory; loopback TCP needs a password.
    as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
EOF
}

# cluster_start DIR: start (or restart to pick up settings) the cluster,
# without RUST_BACKTRACE (as in production: no backtraces in error details).
cluster_start() (
    local dir=$1
    unset RUST_BACKTRACE
    if as_pg "$PG_BIN/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" restart -D "$dir/data" -w -m fast -l "$dir/server.log" >/dev/null ||
            { tail -20 "$dir/server.log" >&2; die "could not restart the cluster in $dir"; }
    else
        as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -w -l "$dir/server.log" >/dev/null ||
            { tail -20 "$dir/server.log" >&2; die "could not start the cluster in $dir"; }
    fi
)

# cluster_stop DIR
cluster_stop() {
    local dir=$1
    if [ -f "$dir/data/PG_VERSION" ] &&
        as_pg "$PG_BIN/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -w -m fast >/dev/null
    fi
}

# new_master_key FILE: 32 random bytes as 64 hex characters, mode 0600,
# owned by the cluster's OS user. Never overwrites an existing key.
new_master_key() {
    local file=$1
    [ -s "$file" ] && return 0
    as_pg sh -c "umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$file'"
}

# install_extension: build (release) and install into the system PostgreSQL.
install_extension() {
    say "building and installing pg_warden (release)"
    local sudo_flag=()
    [ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
    mkdir -p "$ROOT/target"
    (cd "$ROOT" && cargo pgrx install --release --pg-config "$PG_CONFIG" "${sudo_flag[@]}") \
        >"$ROOT/target/install.log" 2>&1 ||
        { tail -40 "$ROOT/target/install.log" >&2; die "cargo pgrx install failed (full log: target/install.log)"; }
}
