-- ----------------------------------------------------------------------
-- pgq_consumer, version 5 (upgrade from version 4; apply v1.sql to v4.sql
-- first).
--
-- Fencing of cooperative batches in remote databases.
--
-- A sub-consumer that stalls (stopped, or cut off from the queue
-- database) while it holds a batch loses it to another member of its
-- group after the dead interval.  In the queue database that is safe: the
-- stalled holder's finish_batch fails, and its queue transaction rolls
-- back.  But a remote consumer commits its remote transaction FIRST.
-- Up to version 4 each sub-consumer recorded the batches it applied in
-- a row of its own (applied_batch, keyed by sub-consumer), so the taker
-- and the woken holder both recorded the same batch, both remote commits
-- succeeded, and the batch was applied twice.
--
-- Now a cooperative group records every batch it applies in
-- applied_group_batch, keyed by the group and the batch's tick range,
-- which a take-over keeps.  The second sub-consumer to record a range
-- fails (SQLSTATE unique_violation), so its remote transaction rolls
-- back: at most one remote commit succeeds per batch.  A sub-consumer
-- recording while another's record of the same range is not committed
-- yet waits for it, then fails or goes on.  A sub-consumer that finds the
-- range recorded (applied_batch_state) finishes the batch without
-- applying it, and stores and retries again the events the first attempt
-- failed or retried (applied_outcomes), as after a crash between the two
-- commits.
--
-- The rows of batches that are finished in the queue database are of no
-- more use: the queue database tells which (group_finished_tick, there)
-- and prune_applied_group_batches drops them here.
--
-- In the queue database, touch_subconsumer(4) marks a sub-consumer as
-- seen and says whether it still holds a given batch: its heartbeat uses
-- it to learn at once that its batch was taken over.  And the errors that
-- are about a sub-consumer, not its group, say so in their COLUMN field.
--
-- The rows that version 4 recorded per sub-consumer in applied_batch move
-- to applied_group_batch; applied_batch keeps plain consumers only.
--
-- Idempotent like every file here: safe to run twice.
-- ----------------------------------------------------------------------

create table if not exists pgq_consumer.applied_group_batch (
    queue_name          text        not null,
    consumer_name       text        not null,
    prev_tick_id        bigint      not null,
    tick_id             bigint      not null,
    tick_time           timestamptz,
    subconsumer_name    text        not null,
    batch_id            bigint      not null,
    outcomes            jsonb,
    applied_at          timestamptz not null default now(),
    constraint applied_group_batch_pkey primary key (queue_name, consumer_name, prev_tick_id, tick_id)
);

comment on table pgq_consumer.applied_group_batch is
    'Batches a cooperative group applied in this database, one row per tick range: the second record of a range fails';


-- Version 4's per-member records become the group's (the most recent
-- record of a range wins; they are of the same batch).
insert into pgq_consumer.applied_group_batch as g
       (queue_name, consumer_name, prev_tick_id, tick_id, tick_time,
        subconsumer_name, batch_id, outcomes, applied_at)
select distinct on (a.queue_name, a.consumer_name, a.prev_tick_id, a.tick_id)
       a.queue_name, a.consumer_name, a.prev_tick_id, a.tick_id, a.tick_time,
       a.subconsumer_name, a.batch_id, a.outcomes, a.applied_at
  from pgq_consumer.applied_batch a
 where a.subconsumer_name <> ''
 order by a.queue_name, a.consumer_name, a.prev_tick_id, a.tick_id, a.applied_at desc
    on conflict (queue_name, consumer_name, prev_tick_id, tick_id) do nothing;

delete from pgq_consumer.applied_batch a where a.subconsumer_name <> '';


create or replace function pgq_consumer.last_applied_batch(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text)
returns setof pgq_consumer.applied_batch as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.last_applied_batch(3)
--
--      The last batch the (sub)consumer recorded as applied, or no row.
--      i_subconsumer NULL or '' means a plain consumer.
-- ----------------------------------------------------------------------
begin
    if coalesce(i_subconsumer, '') = '' then
        return query
            select a.*
              from pgq_consumer.applied_batch a
             where a.queue_name = i_queue
               and a.consumer_name = i_consumer
               and a.subconsumer_name = '';
    else
        return query
            select g.queue_name, g.consumer_name, g.subconsumer_name, g.batch_id,
                   g.prev_tick_id, g.tick_id, g.applied_at, g.tick_time, g.outcomes
              from pgq_consumer.applied_group_batch g
             where g.queue_name = i_queue
               and g.consumer_name = i_consumer
               and g.subconsumer_name = i_subconsumer
             order by g.applied_at desc, g.tick_id desc
             limit 1;
    end if;
end;
$$ language plpgsql stable;


create or replace function pgq_consumer.applied_batch_state(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_prev_tick_id  bigint,
    i_tick_id       bigint,
    i_tick_time     timestamptz)
returns text as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.applied_batch_state(6)
--
--      Whether batch (i_prev_tick_id, i_tick_id], whose end tick has time
--      i_tick_time (NULL: unknown), was applied here; see the section
--      comment of v1.sql.  A plain consumer's row is locked until the end
--      of the transaction.  For a cooperative group, the batch is applied
--      when the group recorded its range.
--
-- Returns:
--      'new', 'applied', 'partial', or 'inconsistent' when the tick times
--      contradict the tick ids (the queue was created again: forget the
--      consumer's rows with forget_applied_batches once that is checked).
-- ----------------------------------------------------------------------
declare
    v_sub   text := coalesce(i_subconsumer, '');
    v_last  record;
begin
    if i_prev_tick_id is null or i_tick_id is null or i_prev_tick_id >= i_tick_id then
        raise exception 'pgq_consumer: invalid batch tick range (%, %]', i_prev_tick_id, i_tick_id
            using errcode = 'invalid_parameter_value';
    end if;

    if v_sub = '' then
        select a.prev_tick_id, a.tick_id, a.tick_time into v_last
          from pgq_consumer.applied_batch a
         where a.queue_name = i_queue
           and a.consumer_name = i_consumer
           and a.subconsumer_name = ''
           for update;
        if not found then
            return 'new';
        elsif i_tick_id <= v_last.tick_id then
            if i_tick_time is not null and v_last.tick_time is not null
               and (i_tick_time > v_last.tick_time
                    or (i_tick_id = v_last.tick_id and i_tick_time <> v_last.tick_time))
            then
                return 'inconsistent';
            end if;
            return 'applied';
        elsif i_prev_tick_id >= v_last.tick_id then
            return 'new';
        else
            return 'partial';
        end if;
    end if;

    select g.tick_time into v_last
      from pgq_consumer.applied_group_batch g
     where g.queue_name = i_queue
       and g.consumer_name = i_consumer
       and g.prev_tick_id = i_prev_tick_id
       and g.tick_id = i_tick_id;
    if found then
        if i_tick_time is not null and v_last.tick_time is not null
           and i_tick_time <> v_last.tick_time
        then
            return 'inconsistent';
        end if;
        return 'applied';
    end if;
    return 'new';
end;
$$ language plpgsql;


create or replace function pgq_consumer.record_applied_batch(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_batch_id      bigint,
    i_prev_tick_id  bigint,
    i_tick_id       bigint,
    i_tick_time     timestamptz)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.record_applied_batch(7)
--
--      Records batch i_batch_id = (i_prev_tick_id, i_tick_id], whose end
--      tick has time i_tick_time (NULL: unknown), as applied by the
--      (sub)consumer.  Call it inside the remote transaction that applies
--      the batch.  A plain consumer's watermark never moves back:
--      recording a batch that ends before the last recorded one raises.
--      A cooperative group records each tick range once, in
--      applied_group_batch: when another member recorded it (committed,
--      or committing now), this raises unique_violation and the
--      transaction must roll back.
--
-- Returns:
--      1
-- ----------------------------------------------------------------------
declare
    v_sub   text := coalesce(i_subconsumer, '');
    v_last  bigint;
    v_by    text;
begin
    if i_queue is null or i_consumer is null or i_batch_id is null then
        raise exception 'pgq_consumer.record_applied_batch: queue, consumer and batch id must not be NULL'
            using errcode = 'null_value_not_allowed';
    end if;
    if i_prev_tick_id is null or i_tick_id is null or i_prev_tick_id >= i_tick_id then
        raise exception 'pgq_consumer: invalid batch tick range (%, %]', i_prev_tick_id, i_tick_id
            using errcode = 'invalid_parameter_value';
    end if;

    if v_sub <> '' then
        insert into pgq_consumer.applied_group_batch as g
               (queue_name, consumer_name, prev_tick_id, tick_id, tick_time,
                subconsumer_name, batch_id, applied_at)
        values (i_queue, i_consumer, i_prev_tick_id, i_tick_id, i_tick_time,
                v_sub, i_batch_id, now())
        on conflict (queue_name, consumer_name, prev_tick_id, tick_id) do nothing;
        if not found then
            select g.subconsumer_name into v_by
              from pgq_consumer.applied_group_batch g
             where g.queue_name = i_queue
               and g.consumer_name = i_consumer
               and g.prev_tick_id = i_prev_tick_id
               and g.tick_id = i_tick_id;
            raise exception 'pgq_consumer: batch % (ticks % to %) of % on queue % was applied already by sub-consumer %',
                    i_batch_id, i_prev_tick_id, i_tick_id, i_consumer, i_queue, coalesce(v_by, '?')
                using errcode = 'unique_violation';
        end if;
        return 1;
    end if;

    select a.tick_id into v_last
      from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name = ''
       for update;
    if found then
        if i_tick_id < v_last then
            raise exception 'pgq_consumer: % on queue % already applied up to tick %, cannot record batch % ending at tick %',
                    i_consumer, i_queue, v_last, i_batch_id, i_tick_id
                using errcode = 'invalid_parameter_value';
        end if;
        update pgq_consumer.applied_batch a
           set batch_id = i_batch_id,
               prev_tick_id = i_prev_tick_id,
               tick_id = i_tick_id,
               tick_time = i_tick_time,
               applied_at = now()
         where a.queue_name = i_queue
           and a.consumer_name = i_consumer
           and a.subconsumer_name = '';
    else
        insert into pgq_consumer.applied_batch
               (queue_name, consumer_name, subconsumer_name,
                batch_id, prev_tick_id, tick_id, tick_time, applied_at)
        values (i_queue, i_consumer, '',
                i_batch_id, i_prev_tick_id, i_tick_id, i_tick_time, now())
        on conflict (queue_name, consumer_name, subconsumer_name) do update
           set batch_id = excluded.batch_id,
               prev_tick_id = excluded.prev_tick_id,
               tick_id = excluded.tick_id,
               tick_time = excluded.tick_time,
               applied_at = excluded.applied_at;
    end if;
    return 1;
end;
$$ language plpgsql;


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
--      {"ev_id": N, "retry_seconds": N}.  A cooperative group keeps them
--      with the group's record of the batch.
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
    if v_sub = '' then
        update pgq_consumer.applied_batch a
           set outcomes = jsonb_build_object('batch_id', i_batch_id, 'events', i_events)
         where a.queue_name = i_queue
           and a.consumer_name = i_consumer
           and a.subconsumer_name = ''
           and a.batch_id = i_batch_id;
    else
        update pgq_consumer.applied_group_batch g
           set outcomes = jsonb_build_object('batch_id', i_batch_id, 'events', i_events)
         where g.queue_name = i_queue
           and g.consumer_name = i_consumer
           and g.subconsumer_name = v_sub
           and g.batch_id = i_batch_id;
    end if;
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
--      group's record of that range.
--
-- Returns:
--      A JSON array, empty when nothing was kept.
-- ----------------------------------------------------------------------
    select coalesce(
             case when coalesce(i_subconsumer, '') = '' then
                 (select a.outcomes -> 'events'
                    from pgq_consumer.applied_batch a
                   where a.queue_name = i_queue
                     and a.consumer_name = i_consumer
                     and a.subconsumer_name = ''
                     and (a.outcomes ->> 'batch_id')::bigint = a.batch_id)
             else
                 (select g.outcomes -> 'events'
                    from pgq_consumer.applied_group_batch g
                   where g.queue_name = i_queue
                     and g.consumer_name = i_consumer
                     and g.prev_tick_id = i_prev_tick_id
                     and g.tick_id = i_tick_id
                     and (g.outcomes ->> 'batch_id')::bigint = g.batch_id)
             end,
             '[]'::jsonb);
$$ language sql stable;


create or replace function pgq_consumer.forget_applied_batches(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.forget_applied_batches(3)
--
--      Forgets what the (sub)consumer applied; i_subconsumer NULL forgets
--      the plain consumer and every sub-consumer of the group, the group's
--      records included.  Needed after the queue was dropped and created
--      again, or the consumer repositioned on purpose.
--
-- Returns:
--      How many rows were forgotten.
-- ----------------------------------------------------------------------
declare
    v_cnt   bigint;
    v_grp   bigint;
begin
    delete from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and (i_subconsumer is null or a.subconsumer_name = i_subconsumer);
    get diagnostics v_cnt = row_count;
    delete from pgq_consumer.applied_group_batch g
     where g.queue_name = i_queue
       and g.consumer_name = i_consumer
       and (i_subconsumer is null or g.subconsumer_name = i_subconsumer);
    get diagnostics v_grp = row_count;
    return v_cnt + v_grp;
end;
$$ language plpgsql;


create or replace function pgq_consumer.prune_applied_group_batches(
    i_queue         text,
    i_consumer      text,
    i_finished_tick bigint)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.prune_applied_group_batches(3)
--
--      Drops the group's records of batches ending at or before
--      i_finished_tick, which the queue database reported as the tick up
--      to which every batch of the group is finished
--      (group_finished_tick): such a batch is never delivered again.
--
-- Returns:
--      How many rows were dropped.
-- ----------------------------------------------------------------------
declare
    v_cnt bigint;
begin
    if i_finished_tick is null then
        return 0;
    end if;
    delete from pgq_consumer.applied_group_batch g
     where g.queue_name = i_queue
       and g.consumer_name = i_consumer
       and g.tick_id <= i_finished_tick;
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql;


create or replace function pgq_consumer.group_finished_tick(
    i_queue         text,
    i_consumer      text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.group_finished_tick(2)
--
--      The tick up to which every batch of the cooperative group
--      i_consumer is finished: the end of the last batch the group handed
--      out, or the start of the earliest batch a member still holds.  A
--      batch ending at or before it will not be delivered again (unless
--      the consumer is repositioned by hand).  Runs in the queue database.
--
-- Returns:
--      The tick id, or NULL when the group is not registered.
-- ----------------------------------------------------------------------
declare
    v_main  record;
    v_held  bigint;
begin
    select s.sub_queue, s.sub_id, s.sub_consumer, s.sub_last_tick into v_main
      from pgq.queue q
      join pgq.subscription s on s.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue
       and c.co_name = i_consumer;
    if not found then
        return null;
    end if;
    select min(s.sub_last_tick) into v_held
      from pgq.subscription s
     where s.sub_queue = v_main.sub_queue
       and s.sub_id = v_main.sub_id
       and s.sub_consumer <> v_main.sub_consumer
       and s.sub_batch is not null;
    return least(v_main.sub_last_tick, v_held);
end;
$$ language plpgsql stable security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.touch_subconsumer(
    i_queue             text,
    i_consumer          text,
    i_subconsumer       text,
    i_batch_id          bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.touch_subconsumer(4)
--
--      Marks a sub-consumer as seen while it holds batch i_batch_id, so
--      the batch is not taken over as dead.  Call it from a connection
--      other than the one processing the batch, committed on its own.
--
-- Returns:
--      1 while the sub-consumer holds the batch; 0 when it does not (the
--      batch was taken over, or finished) or is not registered: the
--      holder must stop working on the batch and roll back.
-- ----------------------------------------------------------------------
declare
    v_cnt integer;
begin
    update pgq.subscription s
       set sub_active = now()
      from pgq.queue q, pgq.consumer c, pgq.subscription m, pgq.consumer mc
     where q.queue_name = i_queue
       and mc.co_name = i_consumer
       and m.sub_queue = q.queue_id
       and m.sub_consumer = mc.co_id
       and c.co_name = pgq_consumer.subconsumer_pgq_name(i_consumer, i_subconsumer)
       and s.sub_queue = q.queue_id
       and s.sub_consumer = c.co_id
       and s.sub_id = m.sub_id
       and s.sub_active > timestamptz 'epoch'
       and s.sub_batch = i_batch_id;
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


-- The errors about a sub-consumer (not registered, holding a batch) name
-- it in their COLUMN field ('subconsumer_name'), so a caller tells them
-- from the same errors about the group's consumer by the error's
-- structure, not its text.  The functions are as in version 1 otherwise.

create or replace function pgq_consumer.unregister_subconsumer(
    i_queue             text,
    i_consumer          text,
    i_subconsumer       text,
    i_batch_handling    text)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.unregister_subconsumer(4)
--
--      Unregisters a sub-consumer.  What happens to a batch it holds is
--      i_batch_handling:
--          'refuse'    (or NULL) raise object_in_use, change nothing
--          'hand_back' the batch stays, and the next sub-consumer calling
--                      next_batch takes it over (no dead interval needed)
--          'drop'      the batch is dropped: its events are never
--                      delivered to the group
--      The group's consumer stays registered with pgq.
--
-- Returns:
--      1 if unregistered, 0 if it was not registered.
-- ----------------------------------------------------------------------
declare
    v_main      record;
    v_sub       record;
    v_handling  text := lower(coalesce(i_batch_handling, 'refuse'));
begin
    if v_handling not in ('refuse', 'hand_back', 'drop') then
        raise exception 'pgq_consumer.unregister_subconsumer: batch handling must be refuse, hand_back or drop, not %', i_batch_handling
            using errcode = 'invalid_parameter_value';
    end if;

    select s.sub_queue, s.sub_id into v_main
      from pgq.queue q
      join pgq.subscription s on s.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue
       and c.co_name = i_consumer
       for update of s;
    if not found then
        return 0;
    end if;

    select s.sub_consumer, s.sub_batch, s.sub_active into v_sub
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_main.sub_queue
       and s.sub_id = v_main.sub_id
       and c.co_name = pgq_consumer.subconsumer_pgq_name(i_consumer, i_subconsumer)
       for update of s;
    if not found or v_sub.sub_active <= timestamptz 'epoch' then
        return 0;
    end if;

    if v_sub.sub_batch is not null then
        if v_handling = 'refuse' then
            raise exception 'pgq_consumer: sub-consumer % of % on queue % holds batch %; finish it, or unregister with hand_back or drop',
                    i_subconsumer, i_consumer, i_queue, v_sub.sub_batch
                using errcode = 'object_in_use', column = 'subconsumer_name';
        elsif v_handling = 'hand_back' then
            update pgq.subscription s
               set sub_active = timestamptz 'epoch'
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_sub.sub_consumer;
            return 1;
        end if;
        raise notice 'pgq_consumer: dropping batch % of sub-consumer % of % on queue %',
                v_sub.sub_batch, i_subconsumer, i_consumer, i_queue;
    end if;

    perform pgq_consumer.drop_subconsumer_row(v_main.sub_queue, v_sub.sub_consumer);
    return 1;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;




create or replace function pgq_consumer.next_batch_custom(
    in  i_queue             text,
    in  i_consumer          text,
    in  i_subconsumer       text,
    in  i_dead_interval     interval,
    in  i_min_lag           interval,
    in  i_min_count         integer,
    in  i_min_interval      interval,
    out batch_id            bigint,
    out cur_tick_id         bigint,
    out prev_tick_id        bigint,
    out cur_tick_time       timestamptz,
    out prev_tick_time      timestamptz,
    out cur_tick_event_seq  bigint,
    out prev_tick_event_seq bigint,
    out taken_from          text)
as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.next_batch_custom(7)
--
--      The batch a sub-consumer should work on, in this order:
--        1. the batch it already holds (a restarted process resumes it);
--        2. a batch handed back by an unregistered sub-consumer, or held by
--           one not seen for longer than i_dead_interval (NULL: never take
--           over from the living or dead), under a new batch id;
--        3. the group's next batch, cut with pgq.next_batch_custom() for
--           the group's consumer (i_min_lag, i_min_count, i_min_interval as
--           there) and moved onto this sub-consumer.
--      Calls of the group are serialized on the group's subscription row.
--      Every call marks the sub-consumer as seen.
--
-- Returns:
--      As pgq.next_batch_custom (all NULL when there is no batch), plus
--      taken_from: the sub-consumer whose batch was taken over, else NULL.
-- ----------------------------------------------------------------------
declare
    v_main      record;
    v_sub       record;
    v_dead      record;
    v_next      record;
    v_name      text;
    v_new_id    bigint;
begin
    select s.sub_queue, s.sub_id, s.sub_consumer, s.sub_batch into v_main
      from pgq.queue q
      join pgq.subscription s on s.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue
       and c.co_name = i_consumer
       for update of s;
    if not found then
        raise exception 'pgq_consumer: consumer % is not registered on queue %', i_consumer, i_queue
            using errcode = 'undefined_object';
    end if;

    v_name := pgq_consumer.subconsumer_pgq_name(i_consumer, i_subconsumer);
    select s.sub_consumer, s.sub_batch, s.sub_last_tick, s.sub_next_tick, s.sub_active into v_sub
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_main.sub_queue
       and s.sub_id = v_main.sub_id
       and c.co_name = v_name
       for update of s;
    if not found or v_sub.sub_active <= timestamptz 'epoch' then
        raise exception 'pgq_consumer: sub-consumer % of % is not registered on queue %', i_subconsumer, i_consumer, i_queue
            using errcode = 'undefined_object', column = 'subconsumer_name';
    end if;

    if v_sub.sub_batch is null then
        -- an idle sub-consumer has no ticks (pgq.finish_batch leaves one)
        if v_sub.sub_last_tick is not null or v_sub.sub_next_tick is not null then
            update pgq.subscription s
               set sub_last_tick = null, sub_next_tick = null
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_sub.sub_consumer;
        end if;

        -- 2. take over a handed-back or dead sub-consumer's batch
        select s.sub_consumer, s.sub_batch, s.sub_last_tick, s.sub_next_tick,
               s.sub_active <= timestamptz 'epoch' as released, c.co_name
          into v_dead
          from pgq.subscription s
          join pgq.consumer c on c.co_id = s.sub_consumer
         where s.sub_queue = v_main.sub_queue
           and s.sub_id = v_main.sub_id
           and s.sub_consumer <> v_main.sub_consumer
           and s.sub_consumer <> v_sub.sub_consumer
           and s.sub_batch is not null
           and (s.sub_active <= timestamptz 'epoch'
                or (i_dead_interval is not null and s.sub_active < now() - i_dead_interval))
         order by s.sub_next_tick, s.sub_consumer
         limit 1
           for update of s skip locked;
        if found then
            v_new_id := nextval('pgq.batch_id_seq');
            if v_dead.released then
                perform pgq_consumer.drop_subconsumer_row(v_main.sub_queue, v_dead.sub_consumer);
            else
                update pgq.subscription s
                   set sub_batch = null, sub_last_tick = null, sub_next_tick = null
                 where s.sub_queue = v_main.sub_queue
                   and s.sub_consumer = v_dead.sub_consumer;
            end if;
            update pgq.subscription s
               set sub_batch = v_new_id,
                   sub_last_tick = v_dead.sub_last_tick,
                   sub_next_tick = v_dead.sub_next_tick
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_sub.sub_consumer;
            taken_from := substr(v_dead.co_name, length(i_consumer) + 2);
            raise notice 'pgq_consumer: sub-consumer % of % on queue % took over batch % (now %) from %',
                    i_subconsumer, i_consumer, i_queue, v_dead.sub_batch, v_new_id, taken_from;
        else
            -- 3. the group's next batch
            if v_main.sub_batch is not null then
                raise exception 'pgq_consumer: consumer % on queue % has an open batch % of its own (a plain consumer of that name is running?); its sub-consumers cannot take batches',
                        i_consumer, i_queue, v_main.sub_batch
                    using errcode = 'object_in_use';
            end if;
            select f.batch_id, f.prev_tick_id, f.cur_tick_id into v_next
              from pgq.next_batch_custom(i_queue, i_consumer, i_min_lag, i_min_count, i_min_interval) f;
            if v_next.batch_id is null then
                update pgq.subscription s
                   set sub_active = now()
                 where s.sub_queue = v_main.sub_queue
                   and s.sub_consumer = v_sub.sub_consumer;
                return;
            end if;
            update pgq.subscription s
               set sub_batch = null,
                   sub_last_tick = v_next.cur_tick_id,
                   sub_next_tick = null,
                   sub_active = now()
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_main.sub_consumer;
            update pgq.subscription s
               set sub_batch = v_next.batch_id,
                   sub_last_tick = v_next.prev_tick_id,
                   sub_next_tick = v_next.cur_tick_id
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_sub.sub_consumer;
        end if;
    end if;

    update pgq.subscription s
       set sub_active = now()
     where s.sub_queue = v_main.sub_queue
       and s.sub_consumer = v_sub.sub_consumer;

    select s.sub_batch, s.sub_next_tick, s.sub_last_tick,
           cur.tick_time, prev.tick_time, cur.tick_event_seq, prev.tick_event_seq
      into batch_id, cur_tick_id, prev_tick_id,
           cur_tick_time, prev_tick_time, cur_tick_event_seq, prev_tick_event_seq
      from pgq.subscription s
      left join pgq.tick prev on prev.tick_queue = s.sub_queue and prev.tick_id = s.sub_last_tick
      left join pgq.tick cur on cur.tick_queue = s.sub_queue and cur.tick_id = s.sub_next_tick
     where s.sub_queue = v_main.sub_queue
       and s.sub_consumer = v_sub.sub_consumer;
    return;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;




revoke all on function
    pgq_consumer.group_finished_tick(text, text),
    pgq_consumer.touch_subconsumer(text, text, text, bigint)
  from public;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader') then
        grant select, insert, update, delete on pgq_consumer.applied_group_batch to pgq_reader;
        grant execute on function
            pgq_consumer.group_finished_tick(text, text),
            pgq_consumer.touch_subconsumer(text, text, text, bigint)
          to pgq_reader;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_admin') then
        grant select, insert, update, delete on pgq_consumer.applied_group_batch to pgq_admin;
    end if;
end;
$$;


insert into pgq_consumer.schema_version (version) values (5)
    on conflict (version) do nothing;
