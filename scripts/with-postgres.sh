#!/usr/bin/env bash
# Runs a command against a PostgreSQL server that has the pgq extension.
#
#   scripts/with-postgres.sh COMMAND [ARG...]
#
# It installs PostgreSQL, the pgq and pgq_node extensions, pgqd, Skytools'
# Python framework, openssl, chromium and chromium-driver from Debian packages
# when they are missing. When PGQ_TEST_DSN is set, that server is used as it
# is. Otherwise it starts a throwaway cluster in a temporary directory on a
# free port, exports its connection string as PGQ_TEST_DSN, runs the command,
# and stops and removes the cluster however the command ends.
set -euo pipefail

log() { printf 'with-postgres: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    log "installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The server's major version: from pg_config when there is one, else the
# newest server installed, else whatever Debian's default server package brings.
server_major() {
    local major=""
    if command -v pg_config >/dev/null 2>&1; then
        major=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    fi
    if [ -z "$major" ] || [ ! -x "/usr/lib/postgresql/$major/bin/initdb" ]; then
        major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1 || true)
    fi
    printf '%s' "$major"
}

major=$(server_major)
if [ -z "$major" ] || [ ! -x "/usr/lib/postgresql/$major/bin/initdb" ]; then
    apt_install postgresql
    major=$(server_major)
fi
bindir="/usr/lib/postgresql/$major/bin"
missing=()
[ -f "/usr/share/postgresql/$major/extension/pgq.control" ] || missing+=("postgresql-$major-pgq3")
# Cascades: pgq_node, and Skytools' Python worker and consumer to mix with ours.
[ -f "/usr/share/postgresql/$major/extension/pgq_node.control" ] || missing+=("postgresql-$major-pgq-node")
/usr/bin/python3 -I -c 'import pgq.cascade.worker' >/dev/null 2>&1 || missing+=(python3-pgq)
command -v londiste >/dev/null 2>&1 || missing+=(python3-londiste)
command -v pgqd >/dev/null 2>&1 || missing+=(pgqd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# pgq-admin's tests: headless Chromium driven through WebDriver (their
# Skytools Python consumer is python3-pgq, above).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s' "$port"
            return 0
        fi
    done
    log "found no free port"
    return 1
}

workdir=$(mktemp -d "${TMPDIR:-/tmp}/pgq-cluster.XXXXXX")
port=$(free_port)
if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root: the cluster belongs to postgres.
    chown postgres: "$workdir"
    chmod 755 "$workdir"
    as_pg() { runuser -u postgres -- "$@"; }
    dbuser=postgres
    export PGQ_TEST_RUNAS=postgres
else
    as_pg() { "$@"; }
    dbuser=$(id -un)
fi

cleanup() {
    # The clusters the tests started (test-support's Cluster), then ours.
    for data in "$workdir"/cluster-*/data; do
        [ -d "$data" ] && as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    done
    as_pg "$bindir/pg_ctl" -D "$workdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# For tests that need a second cluster (test-support's Cluster starts it on
# first use, in this folder, and the cleanup above stops it), whatever the
# server: another machine's in PGQ_TEST_DSN too, unless PGQ_TEST_DSN2 names a
# second server.
export PGQ_TEST_PGBIN="$bindir" PGQ_TEST_WORKDIR="$workdir" PGQ_TEST_PGUSER="$dbuser"

run() {
    set +e
    "$@"
    status=$?
    set -e
    exit "$status"
}

# Another server: the tools above are still needed (psql, pgqd, the Python
# peers, Chromium, a local server for second clusters); the server is that one.
if [ -n "${PGQ_TEST_DSN:-}" ]; then
    log "using the server in PGQ_TEST_DSN"
    run "$@"
fi

log "starting PostgreSQL $major on port $port in $workdir"
as_pg "$bindir/initdb" -D "$workdir/data" -U "$dbuser" --auth=trust -E UTF8 --locale=C >"$workdir/initdb.log" 2>&1 \
    || { cat "$workdir/initdb.log" >&2; exit 1; }
# A self-signed certificate for "localhost", so the TLS tests have a server to verify.
as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" \
    -keyout "$workdir/data/server.key" -out "$workdir/data/server.crt" >"$workdir/openssl.log" 2>&1 \
    || { cat "$workdir/openssl.log" >&2; exit 1; }
as_pg chmod 600 "$workdir/data/server.key"
as_pg "$bindir/pg_ctl" -D "$workdir/data" -l "$workdir/server.log" -w \
    -o "-p $port -k $workdir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c ssl=on" \
    start >/dev/null \
    || { cat "$workdir/server.log" >&2; exit 1; }

export PGQ_TEST_DSN="host=127.0.0.1 port=$port user=$dbuser dbname=postgres"
export PGQ_TEST_PGDATA="$workdir/data"
export PGQ_TEST_SSLROOTCERT="$workdir/data/server.crt"
log "PGQ_TEST_DSN=$PGQ_TEST_DSN"
run "$@"
