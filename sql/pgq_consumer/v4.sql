-- ----------------------------------------------------------------------
-- pgq_consumer, version 4 (upgrade from version 3; apply v1.sql to v3.sql
-- first).
--
-- register_subconsumer takes the group's locks in the order
-- next_batch_custom takes them, so sub-consumers registering while others
-- take batches can no longer deadlock.
--
-- next_batch_custom locks the group's subscription row first (FOR UPDATE:
-- that row serializes every call of the group).  When it cuts a new batch
-- it updates that row twice in its transaction (pgq.next_batch_custom,
-- then itself); the second update of a row the transaction already
-- updated re-checks the row's foreign keys, which takes FOR KEY SHARE on
-- the group's pgq.consumer row.  So: subscription row, then consumer row.
--
-- Version 1's register_subconsumer called pgq.register_consumer first,
-- which locks the group's pgq.consumer row FOR UPDATE (even when the group
-- is registered already, and until the end of the transaction), and only
-- then locked the group's subscription row: the opposite order.  A
-- registration holding the consumer row and waiting for the subscription
-- row, and a batch taker holding the subscription row and waiting for the
-- consumer row, deadlocked, and PostgreSQL aborted one of them.
--
-- Now register_subconsumer locks the group's subscription row first and
-- calls pgq.register_consumer only when the group is not registered on
-- the queue yet (then there is no subscription row that anybody could
-- hold, and the row it creates is its own).  Every function that locks
-- more than one row of a group (register_subconsumer,
-- unregister_subconsumer, next_batch_custom) now takes the group's
-- subscription row first; finish_batch and touch_subconsumer lock one
-- member's row only.
--
-- Idempotent like every file here: safe to run twice.
-- ----------------------------------------------------------------------

create or replace function pgq_consumer.register_subconsumer(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.register_subconsumer(3)
--
--      Registers a sub-consumer of the group i_consumer on i_queue,
--      registering the group's consumer with pgq first when needed (the
--      queue must have ticked once).  Re-registering a sub-consumer that
--      was unregistered with 'hand_back' gives it its batch back, if nobody
--      took it yet.
--
--      Lock order (see the header of v4.sql): the group's subscription
--      row first, as next_batch_custom; pgq.register_consumer (which locks
--      the group's pgq.consumer row) only when that row does not exist.
--
-- Returns:
--      1 if newly registered, 0 if it already was.
-- ----------------------------------------------------------------------
declare
    v_main      record;
    v_name      text;
    v_co_id     integer;
    v_sub       record;
begin
    if i_queue is null or i_consumer is null or coalesce(i_subconsumer, '') = '' then
        raise exception 'pgq_consumer.register_subconsumer: queue, consumer and subconsumer must be given'
            using errcode = 'invalid_parameter_value';
    end if;

    -- Sub-consumers starting together would race in pgq.register_consumer
    -- (both inserting the same pgq.consumer row): one registration of a
    -- group at a time.  Batch takers never take this lock.
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('pgq_consumer.register_subconsumer'),
        pg_catalog.hashtext(i_queue || '/' || i_consumer));

    select s.sub_queue, s.sub_id, s.sub_consumer, s.sub_batch into v_main
      from pgq.queue q
      join pgq.subscription s on s.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue
       and c.co_name = i_consumer
       for update of s;
    if not found then
        perform pgq.register_consumer(i_queue, i_consumer);
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
    end if;
    if v_main.sub_batch is not null then
        raise exception 'pgq_consumer: consumer % on queue % has an open batch % of its own (a plain consumer of that name is running?); finish it before using it as a cooperative group',
                i_consumer, i_queue, v_main.sub_batch
            using errcode = 'object_in_use';
    end if;

    v_name := pgq_consumer.subconsumer_pgq_name(i_consumer, i_subconsumer);
    select c.co_id into v_co_id from pgq.consumer c where c.co_name = v_name;
    if not found then
        insert into pgq.consumer (co_name) values (v_name) returning co_id into v_co_id;
    end if;

    select s.sub_id, s.sub_active into v_sub
      from pgq.subscription s
     where s.sub_queue = v_main.sub_queue
       and s.sub_consumer = v_co_id
       for update;
    if found then
        if v_sub.sub_id <> v_main.sub_id then
            raise exception 'pgq_consumer: % is registered on queue % as a consumer of its own, not as a sub-consumer of %',
                    v_name, i_queue, i_consumer
                using errcode = 'duplicate_object';
        end if;
        if v_sub.sub_active <= timestamptz 'epoch' then
            update pgq.subscription s
               set sub_active = now()
             where s.sub_queue = v_main.sub_queue
               and s.sub_consumer = v_co_id;
            return 1;
        end if;
        return 0;
    end if;

    insert into pgq.subscription
           (sub_id, sub_queue, sub_consumer, sub_last_tick, sub_next_tick, sub_batch, sub_active)
    values (v_main.sub_id, v_main.sub_queue, v_co_id, null, null, null, now());
    return 1;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;

-- create or replace keeps the function's owner and privileges (version 1
-- revoked it from PUBLIC and granted it to pgq_reader); said again so this
-- file stands on its own.
revoke all on function pgq_consumer.register_subconsumer(text, text, text) from public;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader') then
        grant execute on function pgq_consumer.register_subconsumer(text, text, text) to pgq_reader;
    end if;
end;
$$;


insert into pgq_consumer.schema_version (version) values (4)
    on conflict (version) do nothing;
