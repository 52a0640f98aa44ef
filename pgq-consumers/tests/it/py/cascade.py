"""Skytools' own cascade parts (python3-pgq) for the mixed cascade tests.

Run with Debian's Python, isolated (the repository's pgq/ folder would
shadow Debian's module otherwise):

    /usr/bin/python3 -I cascade.py admin INI COMMAND [ARGS...]
        pgq.cascade.admin.CascadeAdmin: create-root, create-branch, ...
    /usr/bin/python3 -I cascade.py worker INI
        a CascadedWorker keeping the node of INI's db
    /usr/bin/python3 -I cascade.py consumer INI [--register --provider=LOC]
        a CascadedConsumer writing each event into the table `seen`
        (ev_id, data) of its target node (INI's db), in the transaction that
        records its position there

Each INI has the section of its role: [cascade_admin], [cascade_worker] or
[cascade_consumer].
"""

import sys

from pgq.cascade.admin import CascadeAdmin
from pgq.cascade.consumer import CascadedConsumer
from pgq.cascade.worker import CascadedWorker


class Worker(CascadedWorker):
    """A generic node worker: copies every event, handles the cascade's own."""

    def process_remote_batch(self, src_db, tick_id, event_list, dst_db):
        # A branch's queue takes copied events only in a replica session
        # (Londiste's worker sets it too); the transaction is the one that
        # records the node's position.
        dst_db.cursor().execute("set local session_replication_role = 'replica'")
        super().process_remote_batch(src_db, tick_id, event_list, dst_db)

    def process_remote_event(self, src_curs, dst_curs, ev):
        # Other events were copied by copy_event; only the cascade's own
        # events need handling (the base class refuses any other type).
        if ev.ev_type.startswith("pgq."):
            super().process_remote_event(src_curs, dst_curs, ev)


class Consumer(CascadedConsumer):
    """Records every event it gets on its target node."""

    def process_remote_event(self, src_curs, dst_curs, ev):
        if not ev.ev_type.startswith("pgq."):
            dst_curs.execute(
                "insert into seen (ev_id, data) values (%s, %s)",
                [ev.ev_id, ev.ev_data],
            )


def main():
    role, args = sys.argv[1], sys.argv[2:]
    if role == "admin":
        CascadeAdmin("cascade_admin", "db", args).start()
    elif role == "worker":
        Worker("cascade_worker", "db", args).start()
    elif role == "consumer":
        Consumer("cascade_consumer", "db", args).start()
    else:
        sys.exit("unknown role %r: admin, worker or consumer" % role)


if __name__ == "__main__":
    main()
