#!/usr/bin/python3
"""The Python side of the benchmark: Skytools' own PgQ framework (python3-pgq).

    pgq_bench.py consume --db DSN --queue Q --consumer C [--write insert [--table T] [--remote-db DSN]]
    pgq_bench.py produce --db DSN --queue Q --events N --mode single|bulk [--size BYTES]
    pgq_bench.py cascade --db DSN --queue Q --worker W

The same subcommands and last lines as `pgq-bench`, so scripts/bench.sh can run
both on the same queue contents and compare:

    events=N secs=S ev_per_s=R

`consume` drains every available batch through `pgq.Consumer` (the class Skytools
consumers derive from) with a no-op `process_event`, calling its `work()` until it
says there is nothing left. With `--write insert`, `process_event` runs one `INSERT`
per event (`ev_id`, the payload) into table T (`bench_rows` unless `--table`) through
its cursor, in the batch's transaction; with `--remote-db` too, the consumer is a
`pgq.RemoteConsumer` writing in that database (whose `pgq_ext.is_batch_done` and
`pgq_ext.set_batch_done` the caller provides), one `INSERT` per event through its
cursor there. `produce --mode single` calls `pgq.insert_event` once
per event in one transaction; `--mode bulk` calls `pgq.bulk_insert_events` (COPY
into the current event table) in chunks of 10,000 rows in one transaction.
`cascade` runs Skytools' `pgq.cascade.worker.CascadedWorker` (a generic
subclass, as a Londiste worker is one: it copies every event and handles only
the cascade's own) as the worker W of the branch node DSN, calling its `work()`
until there is no batch left.
"""

import argparse
import os
import sys
import tempfile
import time

import pgq
import psycopg2
from pgq.cascade.worker import CascadedWorker


class NoopConsumer(pgq.Consumer):
    """A consumer that does nothing with its events."""

    def process_event(self, db, event):
        pass


class InsertConsumer(pgq.Consumer):
    """A consumer that inserts a row per event, in the batch's transaction."""

    insert = None

    def process_event(self, db, event):
        curs = db.cursor()
        curs.execute(self.insert, [event.id, event.data])


class RemoteInsertConsumer(pgq.RemoteConsumer):
    """A remote consumer that inserts a row per event in the remote database."""

    insert = None

    def process_remote_batch(self, db, batch_id, event_list, dst_db):
        curs = dst_db.cursor()
        for event in event_list:
            curs.execute(self.insert, [event.id, event.data])


class BranchWorker(CascadedWorker):
    """A generic node worker: copies every event, handles the cascade's own."""

    copied = 0

    def process_remote_batch(self, src_db, tick_id, event_list, dst_db):
        # A branch's queue takes copied events only in a replica session, as
        # Londiste's worker sets it.
        dst_db.cursor().execute("set local session_replication_role = 'replica'")
        super().process_remote_batch(src_db, tick_id, event_list, dst_db)

    def copy_event(self, dst_curs, ev, filtered_copy):
        # Every event copied, the cascade's own too (as pgq-bench counts).
        self.copied += 1
        super().copy_event(dst_curs, ev, filtered_copy)

    def process_remote_event(self, src_curs, dst_curs, ev):
        if ev.ev_type.startswith("pgq."):
            super().process_remote_event(src_curs, dst_curs, ev)


def cascade(args):
    tmp = tempfile.mkdtemp(prefix="pgq-bench-py-")
    conf = os.path.join(tmp, "worker.ini")
    with open(conf, "w") as f:
        f.write(
            "[pgq_bench_cascade]\n"
            "job_name = %s\n"
            "db = %s\n"
            "queue_name = %s\n"
            "logfile = %s\n"
            "pidfile = %s\n"
            % (
                args.worker,
                args.db.replace("%", "%%"),
                args.queue,
                os.path.join(tmp, "worker.log"),
                os.path.join(tmp, "worker.pid"),
            )
        )
    worker = BranchWorker("pgq_bench_cascade", "db", [conf, "-q"])
    worker.reload()
    start = time.perf_counter()
    while worker.work():
        pass
    secs = time.perf_counter() - start
    report(worker.copied, secs)


def consume(args):
    tmp = tempfile.mkdtemp(prefix="pgq-bench-py-")
    conf = os.path.join(tmp, "consumer.ini")
    with open(conf, "w") as f:
        f.write(
            "[pgq_bench]\n"
            "job_name = pgq_bench_py\n"
            "db = %s\n"
            "queue_name = %s\n"
            "consumer_name = %s\n"
            "logfile = %s\n"
            "pidfile = %s\n"
            "remote_db = %s\n"
            % (
                args.db.replace("%", "%%"),
                args.queue,
                args.consumer,
                os.path.join(tmp, "consumer.log"),
                os.path.join(tmp, "consumer.pid"),
                (args.remote_db or "").replace("%", "%%"),
            )
        )
    if args.write == "none":
        consumer = NoopConsumer("pgq_bench", "db", [conf, "-q"])
    elif args.remote_db:
        consumer = RemoteInsertConsumer("pgq_bench", "db", "remote_db", [conf, "-q"])
    else:
        consumer = InsertConsumer("pgq_bench", "db", [conf, "-q"])
    # The table name is the script's own, never a user's.
    consumer.insert = "insert into %s (ev_id, data) values (%%s, %%s)" % args.table
    consumer.reload()
    # Count events by wrapping the batch walk.
    counted = [0]
    orig = consumer.process_batch

    def process_batch(db, batch_id, event_list):
        orig(db, batch_id, event_list)
        counted[0] += len(event_list)

    consumer.process_batch = process_batch
    start = time.perf_counter()
    while consumer.work():
        pass
    secs = time.perf_counter() - start
    consumer.close_database("db")
    report(counted[0], secs)


def produce(args):
    payload = "x" * args.size
    db = psycopg2.connect(args.db)
    curs = db.cursor()
    start = time.perf_counter()
    if args.mode == "single":
        for i in range(args.events):
            pgq.insert_event(curs, args.queue, "bench", payload)
    else:
        chunk = 10000
        fields = ["time", "type", "data"]
        left = args.events
        while left > 0:
            n = min(chunk, left)
            now = time.strftime("%Y-%m-%d %H:%M:%S%z")
            rows = [(now, "bench", payload)] * n
            pgq.bulk_insert_events(curs, rows, fields, args.queue)
            left -= n
    db.commit()
    secs = time.perf_counter() - start
    db.close()
    report(args.events, secs)


def report(events, secs):
    rate = events / secs if secs > 0 else 0.0
    print("events=%d secs=%.3f ev_per_s=%.0f" % (events, secs, rate))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--db", required=True)
    c.add_argument("--queue", required=True)
    c.add_argument("--consumer", required=True)
    c.add_argument("--write", choices=["none", "insert"], default="none")
    c.add_argument("--table", default="bench_rows")
    c.add_argument("--remote-db", dest="remote_db")
    c.set_defaults(func=consume)
    pr = sub.add_parser("produce")
    pr.add_argument("--db", required=True)
    pr.add_argument("--queue", required=True)
    pr.add_argument("--events", type=int, required=True)
    pr.add_argument("--mode", choices=["single", "bulk"], required=True)
    pr.add_argument("--size", type=int, default=100, help="payload bytes per event")
    pr.set_defaults(func=produce)
    ca = sub.add_parser("cascade")
    ca.add_argument("--db", required=True)
    ca.add_argument("--queue", required=True)
    ca.add_argument("--worker", required=True)
    ca.set_defaults(func=cascade)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
