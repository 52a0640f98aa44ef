-- ----------------------------------------------------------------------
-- pgq_consumer, version 2 (upgrade from version 1; apply v1.sql first).
--
-- Remote batch tracking also remembers the time of the batch's end tick.
-- Tick ids start again at 1 when a queue is dropped and created again, so
-- with ids alone every batch of the new queue up to the old watermark
-- looks applied and would be skipped.  A tick keeps its time forever, and
-- a queue's tick times grow with its tick ids, so a batch ending at or
-- before the watermark whose end tick is younger than the recorded one
-- cannot be a replay: applied_batch_state() reports it as 'inconsistent'
-- instead of 'applied'.  Rows recorded by version 1 have no time and are
-- checked by ids only, as before.
--
-- Idempotent like every file here: safe to run twice.
-- ----------------------------------------------------------------------

alter table pgq_consumer.applied_batch
    add column if not exists tick_time timestamptz;

comment on column pgq_consumer.applied_batch.tick_time is
    'Time of the end tick of the batch (NULL when recorded by version 1)';


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
--      comment of v1.sql.  Locks the (sub)consumer's row until the end of
--      the transaction.
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

    select a.prev_tick_id, a.tick_id, a.tick_time into v_last
      from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name = v_sub
       for update;

    if v_sub = '' then
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

    select a.tick_time into v_last
      from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name <> ''
       and a.prev_tick_id = i_prev_tick_id
       and a.tick_id = i_tick_id
     order by a.applied_at desc
     limit 1;
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


create or replace function pgq_consumer.applied_batch_state(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_prev_tick_id  bigint,
    i_tick_id       bigint)
returns text as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.applied_batch_state(5)
--
--      applied_batch_state(6) without the end tick's time.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.applied_batch_state(i_queue, i_consumer, i_subconsumer,
                                            i_prev_tick_id, i_tick_id, null);
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
--
-- Returns:
--      1
-- ----------------------------------------------------------------------
declare
    v_sub   text := coalesce(i_subconsumer, '');
    v_last  bigint;
begin
    if i_queue is null or i_consumer is null or i_batch_id is null then
        raise exception 'pgq_consumer.record_applied_batch: queue, consumer and batch id must not be NULL'
            using errcode = 'null_value_not_allowed';
    end if;
    if i_prev_tick_id is null or i_tick_id is null or i_prev_tick_id >= i_tick_id then
        raise exception 'pgq_consumer: invalid batch tick range (%, %]', i_prev_tick_id, i_tick_id
            using errcode = 'invalid_parameter_value';
    end if;

    select a.tick_id into v_last
      from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name = v_sub
       for update;
    if found then
        if v_sub = '' and i_tick_id < v_last then
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
           and a.subconsumer_name = v_sub;
    else
        insert into pgq_consumer.applied_batch
               (queue_name, consumer_name, subconsumer_name,
                batch_id, prev_tick_id, tick_id, tick_time, applied_at)
        values (i_queue, i_consumer, v_sub,
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


create or replace function pgq_consumer.record_applied_batch(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text,
    i_batch_id      bigint,
    i_prev_tick_id  bigint,
    i_tick_id       bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.record_applied_batch(6)
--
--      record_applied_batch(7) without the end tick's time.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.record_applied_batch(i_queue, i_consumer, i_subconsumer,
                                             i_batch_id, i_prev_tick_id, i_tick_id, null);
end;
$$ language plpgsql;


insert into pgq_consumer.schema_version (version) values (2)
    on conflict (version) do nothing;
