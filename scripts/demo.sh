#!/usr/bin/env bash
# The main job, end to end: PostgreSQL with PgQ (a throwaway cluster unless
# PGQ_TEST_DSN points at a server), a queue with a mixed stream of events,
# pgqd as the ticker, and the `testq` example consumer processing them as a
# daemon: done, failed, retried, aborted and panicking events, each visibly.
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PGQ_DEMO_INNER:-}" ]; then
    cargo build --quiet -p pgq-examples --bin testq
    PGQ_DEMO_INNER=1 exec bash scripts/with-postgres.sh bash scripts/demo.sh
fi

testq="$PWD/target/debug/testq"
# The panic the demo provokes is caught and logged in one line; no backtrace.
export RUST_BACKTRACE=0
work=$(mktemp -d "${TMPDIR:-/tmp}/testq-demo.XXXXXX")
chmod 755 "$work"
db="pgq_demo_$$"
admin="$PGQ_TEST_DSN"
dsn="$(printf '%s' "$PGQ_TEST_DSN" | sed -E 's/dbname=[^ ]*//') dbname=$db"
pgqd_pid=""
cleanup() {
    "$testq" -c "$work/testq.toml" stop >/dev/null 2>&1 || true
    [ -n "$pgqd_pid" ] && kill "$pgqd_pid" 2>/dev/null || true
    psql -q "$admin" -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a database with the pgq extension"
psql -q "$admin" -c "create database $db"
psql -q "$dsn" -c "create extension pgq"

cat >"$work/testq.toml" <<CONF
db = "$dsn"
queue = "testq"
consumer = "testq_demo"
pidfile = "$work/testq.pid"
logfile = "$work/testq.log"
loglevel = "notice"
delay = 0.2
CONF

step "testq install"
"$testq" -c "$work/testq.toml" install

step "pgqd, the stock PgQ ticker"
base=$(printf '%s' "$PGQ_TEST_DSN" | sed -E 's/dbname=[^ ]*//')
cat >"$work/pgqd.ini" <<CONF
[pgqd]
base_connstr = $base
initial_database = $db
database_list = $db
logfile = $work/pgqd.log
pidfile = $work/pgqd.pid
ticker_period = 0.2
retry_period = 0.5
CONF
psql -q "$dsn" -c "select pgq.set_queue_config('testq', 'ticker_max_lag', '0.2 seconds')" >/dev/null
pgqd "$work/pgqd.ini" >/dev/null 2>&1 &
pgqd_pid=$!
echo "pgqd running, pid $pgqd_pid"

step "testq start (a daemon: it logs to $work/testq.log)"
"$testq" -c "$work/testq.toml" start

step "producing 10 events: 6 plain, one each of fail, retry, abort, panic"
psql -q "$dsn" <<'SQL'
select pgq.insert_event('testq', t, 'payload ' || n)
  from unnest(array['hello','hello','fail','retry','hello','abort','panic','hello','hello','hello'])
       with ordinality as e(t, n);
SQL

step "waiting for testq to process them"
for _ in $(seq 1 150); do
    done_rows=$(psql -qtA "$dsn" -c "select count(*) from testq_done")
    [ "$done_rows" -ge 8 ] && break
    sleep 0.2
done
sed -E 's/^/    /' "$work/testq.log"
if [ "$done_rows" -lt 8 ]; then
    echo "demo: only $done_rows of the 8 events were processed within 30 s (testq's log is above)" >&2
    exit 1
fi

step "testq status"
"$testq" -c "$work/testq.toml" status || true

step "testq failed (the fail event, and the panic event the framework caught)"
"$testq" -c "$work/testq.toml" failed

step "rows written by testq in the batch's transaction (each event exactly once)"
psql "$dsn" -c "select ev_id, ev_type, ev_data from testq_done order by ev_id"

step "testq stop"
"$testq" -c "$work/testq.toml" stop
echo
echo "Done: 8 events processed exactly once, 2 kept as failed events (see README: failed / retry / delete)."
