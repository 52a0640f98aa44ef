-- ----------------------------------------------------------------------
-- pgq_consumer, version 3 (upgrade from version 2; apply v1.sql and
-- v2.sql first).
--
-- Remote batch tracking also keeps the queue-side outcomes of the batch it
-- records.  A remote consumer commits the remote transaction first, then
-- the queue transaction; the queue transaction holds more than
-- finish_batch: the events the handler failed (the failed-event store) and
-- the events it asked to retry (pgq.event_retry).  A crash between the two
-- commits loses them, and the batch, found applied when it comes again, is
-- just finished: those events would be lost.  So the remote transaction
-- also records them, next to the batch (set_applied_outcomes), and the
-- replay of an applied batch stores and retries them again in the queue
-- transaction that finishes it (applied_outcomes).
--
-- The outcomes are kept with the batch id they belong to, so a later
-- record of another batch (record_applied_batch) makes them stale without
-- touching them: applied_outcomes returns only those of the recorded
-- batch.  Only failed and retried events are kept: an event that was done
-- needs nothing in the queue database.
--
-- Idempotent like every file here: safe to run twice.
-- ----------------------------------------------------------------------

alter table pgq_consumer.applied_batch
    add column if not exists outcomes jsonb;

comment on column pgq_consumer.applied_batch.outcomes is
    'Queue-side outcomes of the recorded batch: {"batch_id": N, "events": [{"ev_id": N, "failed": reason} | {"ev_id": N, "retry_seconds": N}]}; stale when batch_id is not the row''s';


create or replace function pgq_consumer.set_applied_outcomes(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_batch_id      bigint,
    i_events        jsonb)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.set_applied_outcomes(5)
--
--      Keeps the queue-side outcomes of batch i_batch_id, which the
--      (sub)consumer recorded with record_applied_batch() in this
--      transaction: a JSON array of {"ev_id": N, "failed": "reason"} and
--      {"ev_id": N, "retry_seconds": N}.
--
-- Returns:
--      1; raises when the batch is not the one recorded.
-- ----------------------------------------------------------------------
declare
    v_sub   text := coalesce(i_subconsumer, '');
begin
    if i_events is null or jsonb_typeof(i_events) <> 'array' then
        raise exception 'pgq_consumer.set_applied_outcomes: the outcomes must be a JSON array'
            using errcode = 'invalid_parameter_value';
    end if;
    update pgq_consumer.applied_batch a
       set outcomes = jsonb_build_object('batch_id', i_batch_id, 'events', i_events)
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name = v_sub
       and a.batch_id = i_batch_id;
    if not found then
        raise exception 'pgq_consumer: % on queue % has not recorded batch % as applied',
                coalesce(nullif(v_sub, ''), i_consumer), i_queue, i_batch_id
            using errcode = 'invalid_parameter_value';
    end if;
    return 1;
end;
$$ language plpgsql;


create or replace function pgq_consumer.applied_outcomes(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_prev_tick_id  bigint,
    i_tick_id       bigint)
returns jsonb as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.applied_outcomes(5)
--
--      The queue-side outcomes kept for the applied batch covering
--      (i_prev_tick_id, i_tick_id], as set_applied_outcomes() got them:
--      for a plain consumer, those of its last recorded batch (a replay
--      cut shorter or longer than it still overlaps it; the caller keeps
--      the events of its batch); for a cooperative group, those of the
--      member that recorded exactly that range.
--
-- Returns:
--      A JSON array, empty when nothing was kept.
-- ----------------------------------------------------------------------
    select coalesce(
             (select a.outcomes -> 'events'
                from pgq_consumer.applied_batch a
               where a.queue_name = i_queue
                 and a.consumer_name = i_consumer
                 and (case when coalesce(i_subconsumer, '') = ''
                           then a.subconsumer_name = ''
                           else a.subconsumer_name <> ''
                                and a.prev_tick_id = i_prev_tick_id
                                and a.tick_id = i_tick_id
                      end)
                 and (a.outcomes ->> 'batch_id')::bigint = a.batch_id
               order by a.applied_at desc
               limit 1),
             '[]'::jsonb);
$$ language sql stable;


insert into pgq_consumer.schema_version (version) values (3)
    on conflict (version) do nothing;
