#!/usr/bin/env bash
# The benchmark: this framework against Skytools' Python PgQ framework
# (python3-pgq), on the same queue contents, side by side, in one run.
#
#   bash scripts/bench.sh
#
# Uses the server in PGQ_TEST_DSN when it is set, otherwise a throwaway cluster
# (scripts/with-postgres.sh). Installs python3-pgq when it is missing, builds
# `pgq-bench` in release mode, creates a database of its own and drops it at
# the end. Prints each measurement, then a table of the ratios.
#
#   BENCH_RUNS=3            each timed run is repeated (alternating sides); the best counts
#   BENCH_SSLMODE=disable   sslmode of every connection, the same for both sides
#   BENCH_IDLE_SECONDS=60   how long the idle cost is counted (after 70 s of settling)
#   BENCH_SCALE=1           event counts are multiplied by it (0.1 for a quick look)
#   BENCH_ONLY=             a comma-separated list of the parts to run (consume, daemon,
#                           writes, produce, cascade, latency, memory, idle); all when empty
#
# Not a test: nothing here runs under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PGQ_TEST_DSN:-}" ]; then
    exec bash scripts/with-postgres.sh bash scripts/bench.sh "$@"
fi

log() { printf 'bench: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

RUNS=${BENCH_RUNS:-3}
SSL=${BENCH_SSLMODE:-disable}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
SCALE=${BENCH_SCALE:-1}
ONLY=${BENCH_ONLY:-}
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); if (v < 1) v = 1; print v }'; }

# Debian's python3 (with python3-pgq), not whatever python3 comes first in PATH.
PY=/usr/bin/python3
if ! "$PY" -I -c 'import pgq.cascade.worker, psycopg2' 2>/dev/null; then
    log "installing python3-pgq (Skytools' PgQ framework for Python)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pgq >/dev/null
fi
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)

log "building pgq-bench, testq and pgq-cascade (release)"
cargo build --release -q -p pgq-examples --bin pgq-bench --bin testq --bin pgq-cascade
BENCH=target/release/pgq-bench
TESTQ=target/release/testq
CASCADE=target/release/pgq-cascade

# libpq key=value strings: the later of two equal keys wins.
ADMIN="$PGQ_TEST_DSN sslmode=$SSL"
NAME="pgq_bench_$$"
DB="$ADMIN dbname=$NAME"
sql() { "$PSQL" "$DB" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
# The remote database of the remote consumers.
RDB="$ADMIN dbname=${NAME}_remote"
rsql() { "$PSQL" "$RDB" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
"$PSQL" "$ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "create database $NAME"
"$PSQL" "$ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "create database ${NAME}_remote"
# The cascade part's node databases, dropped at the end too.
CASCADE_DBS=()
CASCADE_DIR=$(mktemp -d)
cleanup() {
    rm -rf "$CASCADE_DIR"
    for db in "$NAME" "${NAME}_remote" "${CASCADE_DBS[@]}"; do
        "$PSQL" "$ADMIN" -qAtX -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
sql "create extension pgq" >/dev/null

# The value of key=VALUE in the last line of a run's output.
field() { tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# The larger of two numbers (the first when the second is empty).
best() { awk -v a="$1" -v b="${2:-}" 'BEGIN { if (b == "" || a + 0 >= b + 0) print a; else print b }'; }

tick() { sql "select pgq.force_tick('$1')" >/dev/null; sql "select pgq.ticker('$1')" >/dev/null; }
# Puts a consumer back where it was, so that it reads the same batches again.
rewind() { sql "select pgq.register_consumer_at('$1', '$2', $3)" >/dev/null; }
last_tick_of() {
    sql "select s.sub_last_tick from pgq.subscription s join pgq.queue q on q.queue_id = s.sub_queue
         join pgq.consumer c on c.co_id = s.sub_consumer where q.queue_name = '$1' and c.co_name = '$2'"
}

# consume QUEUE: both sides read the same batches RUNS times each,
# alternating; prints "RS PY" (best events per second of each).
consume_both() {
    local queue=$1 start rs="" py="" out
    start=$(last_tick_of "$queue" rs)
    for run in $(seq "$RUNS"); do
        rewind "$queue" rs "$start"
        out=$("$BENCH" consume --db "$DB" --queue "$queue" --consumer rs)
        log "  pgq-rs  run $run: $(tail -n 1 <<<"$out")"
        rs=$(best "$(field ev_per_s <<<"$out")" "$rs")
        rewind "$queue" py "$start"
        out=$("$PY" scripts/pgq_bench.py consume --db "$DB" --queue "$queue" --consumer py)
        log "  python  run $run: $(tail -n 1 <<<"$out")"
        py=$(best "$(field ev_per_s <<<"$out")" "$py")
    done
    echo "$rs $py"
}

# consume_writes QUEUE START local|remote: handlers that write one row per event into
# bench_rows, in the queue database or (remote) the remote one: ours the
# README's way (execute), pipelined, by one INSERT per batch and by COPY, and
# Python's INSERT through its cursor, on the same batches, RUNS times each,
# alternating; the table is
# emptied and the remote records of applied batches forgotten before each
# run, and each consumer put back at tick START. Prints "EXECUTE PIPELINED
# INSERT COPY PY" (best events per second of each).
consume_writes() {
    local queue=$1 start=$2 where=$3 out way py="" remote_rs=() remote_py=()
    local -A rs=()
    if [ "$where" = remote ]; then
        remote_rs=(--remote-db "$RDB")
        remote_py=(--remote-db "$RDB")
        reset() {
            rsql "truncate bench_rows; delete from pgq_ext.batch_done;
                  do \$\$ begin
                    if to_regnamespace('pgq_consumer') is not null then
                      perform pgq_consumer.forget_applied_batches('$queue', 'rs', null);
                    end if;
                  end \$\$" >/dev/null
        }
    else
        reset() { sql "truncate bench_rows" >/dev/null; }
    fi
    for run in $(seq "$RUNS"); do
        for way in execute pipelined insert copy; do
            rewind "$queue" rs "$start"
            reset
            out=$("$BENCH" consume --db "$DB" --queue "$queue" --consumer rs --write "$way" "${remote_rs[@]}")
            log "  pgq-rs $way run $run: $(tail -n 1 <<<"$out")"
            rs[$way]=$(best "$(field ev_per_s <<<"$out")" "${rs[$way]:-}")
        done
        rewind "$queue" py "$start"
        reset
        out=$("$PY" scripts/pgq_bench.py consume --db "$DB" --queue "$queue" --consumer py --write insert "${remote_py[@]}")
        log "  python  run $run: $(tail -n 1 <<<"$out")"
        py=$(best "$(field ev_per_s <<<"$out")" "$py")
    done
    echo "${rs[execute]} ${rs[pipelined]} ${rs[insert]} ${rs[copy]} $py"
}

# produce MODE COUNT: both sides insert COUNT events RUNS times each,
# alternating; prints "RS PY".
produce_both() {
    local mode=$1 count=$2 rs="" py="" out
    for run in $(seq "$RUNS"); do
        out=$("$BENCH" produce --db "$DB" --queue prod --events "$count" --mode "$mode")
        log "  pgq-rs  run $run: $(tail -n 1 <<<"$out")"
        rs=$(best "$(field ev_per_s <<<"$out")" "$rs")
        out=$("$PY" scripts/pgq_bench.py produce --db "$DB" --queue prod --events "$count" --mode "$mode")
        log "  python  run $run: $(tail -n 1 <<<"$out")"
        py=$(best "$(field ev_per_s <<<"$out")" "$py")
    done
    echo "$rs $py"
}

# cascade_both: the branches rs1.. (our worker, `pgq-bench cascade`) and
# py1.. (Skytools' CascadedWorker, `pgq_bench.py cascade`) of one root each
# copy what the root has ticked since they last did, once per run (a branch
# per side and run, all made before the data); prints "RS PY" (best events
# per second of each).
cascade_both() {
    local rs="" py="" out
    for run in $(seq "$RUNS"); do
        out=$("$BENCH" cascade --db "$(node_db "rs$run")" --queue cq)
        log "  pgq-rs  run $run: $(tail -n 1 <<<"$out")"
        rs=$(best "$(field ev_per_s <<<"$out")" "$rs")
        out=$("$PY" scripts/pgq_bench.py cascade --db "$(node_db "py$run")" --queue cq --worker "py${run}_w")
        log "  python  run $run: $(tail -n 1 <<<"$out")"
        py=$(best "$(field ev_per_s <<<"$out")" "$py")
    done
    echo "$rs $py"
}
node_db() { printf '%s dbname=%s_c%s' "$ADMIN" "$NAME" "$1"; }
# new_node NAME: a database with pgq and pgq_node, and its pgq-cascade config.
new_node() {
    "$PSQL" "$ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "create database ${NAME}_c$1"
    CASCADE_DBS+=("${NAME}_c$1")
    "$PSQL" "$(node_db "$1")" -qAtX -v ON_ERROR_STOP=1 -c "create extension pgq; create extension pgq_node" >/dev/null
    printf 'queue = "cq"\ndb = "%s"\nworker = "%s_w"\n' "$(node_db "$1")" "$1" >"$CASCADE_DIR/$1.toml"
}

BIG=$(scaled 800000)
BATCHES=$(scaled 1000)
HUGE=$(scaled 1000000)
WRITES=$(scaled 300)
# What a part left out shows.
BIG_RS=- BIG_PY=- SMALL_RS=- SMALL_PY=- SINGLE_RS=- SINGLE_PY=- BULK_RS=- BULK_PY=-
W_EXEC=- W_PIPE=- W_INS=- W_COPY=- W_PY=- R_EXEC=- R_PIPE=- R_INS=- R_COPY=- R_PY=-
CASCADE_ONE=$(scaled 200000)
CASCADE_TX=$(scaled 10000)
C1_RS=- C1_PY=- C20_RS=- C20_PY=-
P50=- P99=- RSS_MIB=- MEM_RATE=- IDLE1= IDLE2= IDLE3=
D_BENCH=- D_CUR=- D_MULTI=- D_METRICS=- C_CUR=- C_MULTI=- C_METRICS=-

if want consume; then
    log "consume: one batch of $BIG events"
    sql "select pgq.create_queue('big')" >/dev/null
    sql "select pgq.register_consumer('big', 'rs')" >/dev/null
    sql "select pgq.register_consumer('big', 'py')" >/dev/null
    "$BENCH" produce --db "$DB" --queue big --events "$BIG" --mode bulk >/dev/null
    tick big
    read -r BIG_RS BIG_PY < <(consume_both big)

    log "consume: $BATCHES batches of 100 events"
    sql "select pgq.create_queue('small')" >/dev/null
    sql "select pgq.register_consumer('small', 'rs')" >/dev/null
    sql "select pgq.register_consumer('small', 'py')" >/dev/null
    sql "do \$\$ begin
           for i in 1..$BATCHES loop
             perform pgq.insert_event('small', 'bench', repeat('x', 100)) from generate_series(1, 100);
             commit;
             perform pgq.force_tick('small');
             perform pgq.ticker('small');
             commit;
           end loop;
         end \$\$"
    read -r SMALL_RS SMALL_PY < <(consume_both small)
fi

# The seconds between the daemon's `started` and `stopped` lines in its log
# (after it connected, until its last round and its shutdown).
daemon_secs() {
    awk '/ started, pid / { a = $2 } / stopped, pid / { b = $2 }
         function s(t,  p) { split(t, p, ":"); return p[1] * 3600 + p[2] * 60 + p[3] }
         END { d = s(b) - s(a); if (d < 0) d += 86400; printf "%.3f", d }' "$1"
}

# daemon_run CONFIG EVENTS: `testq run --once` with that config; prints its events per
# second, and the CPU time it used (user + system) in ms per 1000 events: the CPU time
# is what other jobs on the machine disturb least.
daemon_run() {
    local conf=$1 events=$2 log secs cpu
    log=$(sed -n 's/^logfile = "\(.*\)"$/\1/p' "$conf")
    : >"$log"
    cpu=$( { TIMEFORMAT='%U %S'; time "$TESTQ" -c "$conf" run --once; } 2>&1 | tail -n 1)
    secs=$(daemon_secs "$log")
    awk -v n="$events" -v s="$secs" -v c="$cpu" 'BEGIN {
        split(c, t, " ");
        printf "%s %.2f\n", (s > 0 ? sprintf("%.0f", n / s) : "-"), (t[1] + t[2]) * 1000000 / n
    }'
}
# The smaller of two numbers (the first when the second is empty).
least() { awk -v a="$1" -v b="${2:-}" 'BEGIN { if (b == "" || a + 0 <= b + 0) print a; else print b }'; }

if want daemon; then
    log "daemon: the real testq daemon against pgq-bench, $BATCHES batches of 100 events"
    sql "select pgq.create_queue('dsmall')" >/dev/null
    sql "select pgq.register_consumer('dsmall', 'rs')" >/dev/null
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgq-bench-daemon.XXXXXX")
    # testq with `write = "none"`: the handler does nothing, as pgq-bench's.
    for kind in current multi metrics; do
        {
            printf 'db = "%s"\nqueue = "dsmall"\nconsumer = "dq"\n' "$DB"
            printf 'logfile = "%s/%s.log"\nloglevel = "notice"\n' "$DIR" "$kind"
            [ "$kind" = multi ] && printf 'runtime = "multi_thread"\n'
            [ "$kind" = metrics ] && printf '[http]\nlisten = "127.0.0.1:0"\n'
            printf '[settings]\nwrite = "none"\n'
        } >"$DIR/$kind.toml"
    done
    "$TESTQ" -c "$DIR/current.toml" install >/dev/null
    sql "do \$\$ begin
           for i in 1..$BATCHES loop
             perform pgq.insert_event('dsmall', 'bench', repeat('x', 100)) from generate_series(1, 100);
             commit;
             perform pgq.force_tick('dsmall');
             perform pgq.ticker('dsmall');
             commit;
           end loop;
         end \$\$"
    DSTART=$(last_tick_of dsmall dq)
    for run in $(seq "$RUNS"); do
        rewind dsmall rs "$DSTART"
        out=$("$BENCH" consume --db "$DB" --queue dsmall --consumer rs)
        log "  pgq-bench run $run: $(tail -n 1 <<<"$out")"
        D_BENCH=$(best "$(field ev_per_s <<<"$out")" "${D_BENCH#-}")
        for kind in current multi metrics; do
            rewind dsmall dq "$DSTART"
            read -r rate cpu < <(daemon_run "$DIR/$kind.toml" $((BATCHES * 100)))
            log "  testq ($kind) run $run: ev_per_s=$rate cpu_ms_per_1000=$cpu"
            case $kind in
                current) D_CUR=$(best "$rate" "${D_CUR#-}"); C_CUR=$(least "$cpu" "${C_CUR#-}") ;;
                multi) D_MULTI=$(best "$rate" "${D_MULTI#-}"); C_MULTI=$(least "$cpu" "${C_MULTI#-}") ;;
                metrics) D_METRICS=$(best "$rate" "${D_METRICS#-}"); C_METRICS=$(least "$cpu" "${C_METRICS#-}") ;;
            esac
        done
    done
    rm -rf "$DIR"
fi

if want writes; then
    log "consume with a real handler: $WRITES batches of 100 events, a row written per event"
    sql "select pgq.create_queue('writes')" >/dev/null
    sql "select pgq.register_consumer('writes', 'rs')" >/dev/null
    sql "select pgq.register_consumer('writes', 'py')" >/dev/null
    sql "do \$\$ begin
           for i in 1..$WRITES loop
             perform pgq.insert_event('writes', 'bench', repeat('x', 100)) from generate_series(1, 100);
             commit;
             perform pgq.force_tick('writes');
             perform pgq.ticker('writes');
             commit;
           end loop;
         end \$\$"
    sql "create table bench_rows (ev_id bigint, data text)"
    # The remote side: the table, and the two functions of pgq_ext (not packaged
    # in Debian) that Python's RemoteConsumer calls, over a table of the last
    # batch applied per consumer.
    rsql "create table bench_rows (ev_id bigint, data text);
          create schema pgq_ext;
          create table pgq_ext.batch_done (consumer text primary key, batch_id bigint not null);
          create function pgq_ext.is_batch_done(c text, b bigint) returns boolean language sql as
            \$\$ select exists (select 1 from pgq_ext.batch_done where consumer = c and batch_id = b) \$\$;
          create function pgq_ext.set_batch_done(c text, b bigint) returns boolean language sql as
            \$\$ insert into pgq_ext.batch_done values (c, b)
               on conflict (consumer) do update set batch_id = excluded.batch_id; select true \$\$;"
    start=$(last_tick_of writes rs)
    log "  local: the queue database's transaction"
    read -r W_EXEC W_PIPE W_INS W_COPY W_PY < <(consume_writes writes "$start" local)
    log "  remote: a second database, committed before the batch is finished"
    read -r R_EXEC R_PIPE R_INS R_COPY R_PY < <(consume_writes writes "$start" remote)
fi

if want produce; then
    sql "select pgq.create_queue('prod')" >/dev/null
    PER_EVENT=$(scaled 100000)
    log "produce: $PER_EVENT events, one call each (pgq.Producer::send / pgq.insert_event)"
    read -r SINGLE_RS SINGLE_PY < <(produce_both single "$PER_EVENT")
    log "produce: $HUGE events in bulk (pgq.Producer::copy_in / pgq.bulk_insert_events)"
    read -r BULK_RS BULK_PY < <(produce_both bulk "$HUGE")
fi

if want cascade; then
    log "cascade: a root and, per run, a branch for each side (pgq-cascade create-root, create-branch)"
    new_node root
    "$CASCADE" -c "$CASCADE_DIR/root.toml" create-root root "$(node_db root)" >/dev/null
    for run in $(seq "$RUNS"); do
        for side in rs py; do
            new_node "$side$run"
            "$CASCADE" -c "$CASCADE_DIR/$side$run.toml" create-branch "$side$run" "$(node_db "$side$run")" \
                --provider "$(node_db root)" >/dev/null
        done
    done
    rootsql() { "$PSQL" "$(node_db root)" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
    log "cascade: copy one batch of $CASCADE_ONE events from the root to a branch"
    "$BENCH" produce --db "$(node_db root)" --queue cq --events "$CASCADE_ONE" --mode bulk >/dev/null
    rootsql "select pgq.force_tick('cq')" >/dev/null
    rootsql "select pgq.ticker('cq')" >/dev/null
    read -r C1_RS C1_PY < <(cascade_both)
    log "cascade: copy 20 batches (transactions) of $CASCADE_TX events"
    rootsql "do \$\$ begin
           for i in 1..20 loop
             perform pgq.insert_event('cq', 'bench', repeat('x', 100)) from generate_series(1, $CASCADE_TX);
             commit;
             perform pgq.force_tick('cq');
             perform pgq.ticker('cq');
             commit;
           end loop;
         end \$\$"
    read -r C20_RS C20_PY < <(cascade_both)
fi

if want latency; then
    log "latency: commit to handler, embedded ticker at its defaults, a fresh database"
    LAT=$("$BENCH" latency --db "$ADMIN" --samples 500)
    log "  $LAT"
    P50=$(field p50_ms <<<"$LAT")
    P99=$(field p99_ms <<<"$LAT")
fi

if want memory; then
    log "memory: one batch of $HUGE events of 1 KiB"
    sql "select pgq.create_queue('mem')" >/dev/null
    sql "select pgq.register_consumer('mem', 'rs')" >/dev/null
    "$BENCH" produce --db "$DB" --queue mem --events "$HUGE" --mode bulk --size 1024 >/dev/null
    tick mem
    MEM_OUT=$("$BENCH" consume --db "$DB" --queue mem --consumer rs)
    log "  $(tail -n 1 <<<"$MEM_OUT")"
    RSS_MIB=$(grep '^peak_rss_kib=' <<<"$MEM_OUT" | sed 's/peak_rss_kib=//' | awk '{ printf "%.1f", $1 / 1024 }')
    MEM_RATE=$(field ev_per_s <<<"$MEM_OUT")
fi

if want idle; then
    log "idle cost: no traffic, ${IDLE_SECONDS}s counted after 70s (pg_stat_database)"
    # One at a time: each in a database of its own, but a busy server counts
    # slower statements, and autovacuum visits more often.
    IDLE1=$("$BENCH" idle --db "$ADMIN" --seconds "$IDLE_SECONDS" --daemons 1)
    log "  $IDLE1"
    IDLE2=$("$BENCH" idle --db "$ADMIN" --seconds "$IDLE_SECONDS" --daemons 2)
    log "  $IDLE2"
    IDLE3=$("$BENCH" idle --db "$ADMIN" --seconds "$IDLE_SECONDS" --daemons 1 --delay 10)
    log "  $IDLE3"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.1fx", a / b; else print "-" }'; }
row() { printf '| %-42s | %12s | %12s | %7s | %-10s |\n' "$@"; }

echo
echo "pgq-bench against Skytools' python3-pgq, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PSQL" "$ADMIN" -qAtX -c 'show server_version'), sslmode=$SSL, best of $RUNS"
echo
row "benchmark (events per second)" "pgq-rs" "python3-pgq" "ratio" "target"
row "------------------------------------------" "------------" "------------" "-------" "----------"
row "consume one batch of $BIG events" "$BIG_RS" "$BIG_PY" "$(ratio "$BIG_RS" "$BIG_PY")" ">= 5x"
row "consume $BATCHES batches of 100 events" "$SMALL_RS" "$SMALL_PY" "$(ratio "$SMALL_RS" "$SMALL_PY")" ">= 3x"
row "produce, one call per event" "$SINGLE_RS" "$SINGLE_PY" "$(ratio "$SINGLE_RS" "$SINGLE_PY")" ">= 10x"
row "produce in bulk (COPY)" "$BULK_RS" "$BULK_PY" "$(ratio "$BULK_RS" "$BULK_PY")" ">= 2x"
row "cascade copy, one batch of $CASCADE_ONE" "$C1_RS" "$C1_PY" "$(ratio "$C1_RS" "$C1_PY")" ">= 3x"
row "cascade copy, 20 batches of $CASCADE_TX" "$C20_RS" "$C20_PY" "$(ratio "$C20_RS" "$C20_PY")" ">= 3x"
echo
cost() { awk -v on="$1" -v off="$2" 'BEGIN { if (off + 0 > 0 && on + 0 > 0) printf "%+.1f%%", (on - off) * 100 / off; else print "-" }'; }
row "the daemon, $BATCHES x 100 (events per second)" "rate" "against" "" "target"
row "------------------------------------------" "------------" "------------" "-------" "----------"
row "pgq-bench consume (BatchLoop alone)" "$D_BENCH" "" "" ""
row "testq run --once (current-thread runtime)" "$D_CUR" "pgq-bench" "$(cost "$D_CUR" "$D_BENCH")" ">= -5%"
row "testq run --once, runtime = multi_thread" "$D_MULTI" "pgq-bench" "$(cost "$D_MULTI" "$D_BENCH")" ""
row "testq run --once, metrics on ([http])" "$D_METRICS" "metrics off" "$(cost "$D_METRICS" "$D_CUR")" ">= -3%"
row "testq CPU ms per 1000 events" "$C_CUR" "" "" ""
row "  runtime = multi_thread" "$C_MULTI" "current" "$(cost "$C_MULTI" "$C_CUR")" ""
row "  metrics on ([http])" "$C_METRICS" "metrics off" "$(cost "$C_METRICS" "$C_CUR")" "<= +3%"
echo
row "consume $WRITES x 100, a row per event" "pgq-rs" "python3-pgq" "ratio" "target"
row "------------------------------------------" "------------" "------------" "-------" "----------"
row "local: execute (the README's way)" "$W_EXEC" "$W_PY" "$(ratio "$W_EXEC" "$W_PY")" ">= 1.5x"
row "local: execute_pipelined" "$W_PIPE" "$W_PY" "$(ratio "$W_PIPE" "$W_PY")" ">= 5x"
row "local: insert_row (batched, one INSERT)" "$W_INS" "$W_PY" "$(ratio "$W_INS" "$W_PY")" ">= 10x"
row "local: copy_row (batched, binary COPY)" "$W_COPY" "$W_PY" "$(ratio "$W_COPY" "$W_PY")" ""
row "remote: execute (the README's way)" "$R_EXEC" "$R_PY" "$(ratio "$R_EXEC" "$R_PY")" ">= 1.5x"
row "remote: execute_pipelined" "$R_PIPE" "$R_PY" "$(ratio "$R_PIPE" "$R_PY")" ">= 5x"
row "remote: insert_row (batched, one INSERT)" "$R_INS" "$R_PY" "$(ratio "$R_INS" "$R_PY")" ">= 10x"
row "remote: copy_row (batched, binary COPY)" "$R_COPY" "$R_PY" "$(ratio "$R_COPY" "$R_PY")" ""
echo
row "other measurements" "pgq-rs" "" "" "target"
row "------------------------------------------" "------------" "------------" "-------" "----------"
row "latency commit to handler, p50 (ms)" "$P50" "" "" "<= 20"
row "latency commit to handler, p99 (ms)" "$P99" "" "" "<= 100"
row "peak RSS, batch of $HUGE x 1 KiB (MiB)" "$RSS_MIB" "" "" "<= 64"
row "  (its rate, events per second)" "$MEM_RATE" "" "" ""
row "idle, 1 daemon: transactions per second" "$(field per_s <<<"$IDLE1")" "" "" ""
row "idle, 2 daemons: transactions per second" "$(field per_s <<<"$IDLE2")" "" "" ""
row "idle, 1 daemon, delay 10 s: per second" "$(field per_s <<<"$IDLE3")" "" "" ""
