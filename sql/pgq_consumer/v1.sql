-- ----------------------------------------------------------------------
-- pgq_consumer, version 1: the consumer framework's own SQL.
--
--   * failed-event store      (PgQ 3 removed the one libphp-pgq used)
--   * remote batch tracking   (installed in the remote database too)
--   * cooperative consumers   (sub-consumers sharing one consumer's batches;
--                              Debian's PgQ has no pgq_coop)
--
-- Rules for every file in this folder:
--   * Apply the files in order (v1, v2, ...), each inside one transaction.
--     Every file is idempotent: running it twice is harmless.  Running an
--     older file again after a newer one is not supported (a newer file may
--     replace functions of an older one); the Rust installer
--     (pgq_consumers::install_schema) only applies files newer than the
--     installed version, under an advisory lock.
--   * Nothing here may need PgQ at creation time: the same file is installed
--     in a consumer's remote database, which has no pgq extension.  So no
--     foreign keys to pgq tables, no SQL-language functions touching pgq,
--     and grants to PgQ's roles only when those roles exist.  Functions that
--     use pgq are PL/pgSQL, resolved when called.
--   * Security definer functions set search_path and qualify every name.
-- ----------------------------------------------------------------------

create schema if not exists pgq_consumer;

comment on schema pgq_consumer is
    'PgQ consumer framework: failed events, remote batch tracking, cooperative sub-consumers';

-- ----------------------------------------------------------------------
-- Table: pgq_consumer.schema_version
--
--      One row per applied version of these files; the installed version
--      is the highest.
-- ----------------------------------------------------------------------
create table if not exists pgq_consumer.schema_version (
    version         integer     not null,
    installed_at    timestamptz not null default now(),
    constraint schema_version_pkey primary key (version)
);

create or replace function pgq_consumer.version()
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.version(0)
--
--      The installed version of the pgq_consumer schema.
-- ----------------------------------------------------------------------
    select max(v.version) from pgq_consumer.schema_version v;
$$ language sql stable;


-- ======================================================================
-- Section: Failed events
--
-- A consumer that gives up on an event stores it here, with the reason,
-- inside the batch's transaction, and finishes the batch.  An operator then
-- lists, deletes or retries it.  Retrying puts the event back into the
-- queue for this consumer only (pgq.event_retry_raw: the event is owned by
-- the consumer's subscription, other consumers of the queue never see it
-- again); it is delivered after pgq.maint_retry_events() moved it back and
-- the ticker ticked.
--
-- Rows are keyed by names, not PgQ ids: the store outlives a queue that is
-- dropped and created again, so nothing is silently lost.
-- ======================================================================

create table if not exists pgq_consumer.failed_event (
    queue_name      text        not null,
    consumer_name   text        not null,
    ev_id           bigint      not null,
    ev_time         timestamptz not null,
    ev_txid         bigint,
    ev_retry        integer,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text,
    failed_time     timestamptz not null default now(),
    failed_reason   text        not null default '',
    constraint failed_event_pkey primary key (queue_name, consumer_name, ev_id)
);

comment on table pgq_consumer.failed_event is
    'Events a consumer gave up on, with the reason; see pgq_consumer.failed_event_retry()';


create or replace function pgq_consumer.batch_consumer(
    in  i_batch_id          bigint,
    out queue_name          text,
    out consumer_name       text,
    out subconsumer_name    text)
as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.batch_consumer(1)
--
--      Who owns an active batch.  For a batch held by a cooperative
--      sub-consumer, consumer_name is the group's (main) consumer and
--      subconsumer_name the sub-consumer; otherwise subconsumer_name is NULL.
--      All columns are NULL when the batch is not active.
--
--      A sub-consumer is the pgq.consumer named '<consumer>.<subconsumer>'
--      whose subscription shares the sub_id of '<consumer>'s subscription
--      on the same queue (see the cooperative section below).
-- ----------------------------------------------------------------------
declare
    v_sub   record;
    v_main  text;
begin
    select q.queue_name as qname, c.co_name, s.sub_id, s.sub_queue, s.sub_consumer
      into v_sub
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_batch = i_batch_id;
    if not found then
        return;
    end if;

    select mc.co_name into v_main
      from pgq.subscription m
      join pgq.consumer mc on mc.co_id = m.sub_consumer
     where m.sub_queue = v_sub.sub_queue
       and m.sub_id = v_sub.sub_id
       and m.sub_consumer <> v_sub.sub_consumer
       and left(v_sub.co_name, length(mc.co_name) + 1) = mc.co_name || '.'
     order by length(mc.co_name) desc
     limit 1;

    queue_name := v_sub.qname;
    if v_main is null then
        consumer_name := v_sub.co_name;
    else
        consumer_name := v_main;
        subconsumer_name := substr(v_sub.co_name, length(v_main) + 2);
    end if;
    return;
end;
$$ language plpgsql stable
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_add(
    i_queue         text,
    i_consumer      text,
    i_ev_id         bigint,
    i_ev_time       timestamptz,
    i_ev_txid       bigint,
    i_ev_retry      integer,
    i_ev_type       text,
    i_ev_data       text,
    i_ev_extra1     text,
    i_ev_extra2     text,
    i_ev_extra3     text,
    i_ev_extra4     text,
    i_reason        text)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_add(13)
--
--      Stores a failed event, given whole.  Call it inside the batch's
--      transaction, before pgq.finish_batch(), so the event is either
--      stored and the batch finished, or neither.  For a cooperative
--      group, pass the group's (main) consumer name.
--
--      Storing an event that is already stored replaces the stored copy,
--      its reason and failed_time.
--
-- Returns:
--      1
-- ----------------------------------------------------------------------
begin
    if i_queue is null or i_consumer is null or i_ev_id is null or i_ev_time is null then
        raise exception 'pgq_consumer.failed_event_add: queue, consumer, ev_id and ev_time must not be NULL'
            using errcode = 'null_value_not_allowed';
    end if;
    insert into pgq_consumer.failed_event as f
           (queue_name, consumer_name, ev_id, ev_time, ev_txid, ev_retry,
            ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4,
            failed_time, failed_reason)
    values (i_queue, i_consumer, i_ev_id, i_ev_time, i_ev_txid, i_ev_retry,
            i_ev_type, i_ev_data, i_ev_extra1, i_ev_extra2, i_ev_extra3, i_ev_extra4,
            now(), coalesce(i_reason, ''))
    on conflict (queue_name, consumer_name, ev_id) do update
       set ev_time = excluded.ev_time,
           ev_txid = excluded.ev_txid,
           ev_retry = excluded.ev_retry,
           ev_type = excluded.ev_type,
           ev_data = excluded.ev_data,
           ev_extra1 = excluded.ev_extra1,
           ev_extra2 = excluded.ev_extra2,
           ev_extra3 = excluded.ev_extra3,
           ev_extra4 = excluded.ev_extra4,
           failed_time = excluded.failed_time,
           failed_reason = excluded.failed_reason;
    return 1;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_add(
    i_batch_id      bigint,
    i_ev_id         bigint,
    i_reason        text)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_add(3)
--
--      Stores event i_ev_id of the active batch i_batch_id as failed, for
--      the batch's consumer (the group's consumer for a cooperative
--      sub-consumer).  Reads the batch's events once more to find the
--      event: prefer failed_event_add(13) when the event is at hand.
--
-- Returns:
--      1; raises no_data_found when the batch is not active, and
--      invalid_parameter_value when the event is not in the batch.
-- ----------------------------------------------------------------------
declare
    v_owner record;
    v_ev    record;
begin
    select * into v_owner from pgq_consumer.batch_consumer(i_batch_id);
    if v_owner.queue_name is null then
        raise exception 'pgq_consumer: batch % is not active', i_batch_id
            using errcode = 'no_data_found';
    end if;
    select * into v_ev
      from pgq.get_batch_events(i_batch_id) e
     where e.ev_id = i_ev_id;
    if not found then
        raise exception 'pgq_consumer: event % is not in batch %', i_ev_id, i_batch_id
            using errcode = 'invalid_parameter_value';
    end if;
    return pgq_consumer.failed_event_add(
        v_owner.queue_name, v_owner.consumer_name,
        v_ev.ev_id, v_ev.ev_time, v_ev.ev_txid, v_ev.ev_retry,
        v_ev.ev_type, v_ev.ev_data,
        v_ev.ev_extra1, v_ev.ev_extra2, v_ev.ev_extra3, v_ev.ev_extra4,
        i_reason);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_list(
    i_queue         text,
    i_consumer      text,
    i_limit         bigint,
    i_offset        bigint)
returns table (
    ev_id           bigint,
    ev_time         timestamptz,
    ev_txid         bigint,
    ev_retry        integer,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text,
    failed_time     timestamptz,
    failed_reason   text)
as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_list(4)
--
--      The failed events of a consumer, in event id order, i_limit of them
--      (NULL: all) after skipping i_offset.
-- ----------------------------------------------------------------------
begin
    return query
        select f.ev_id, f.ev_time, f.ev_txid, f.ev_retry, f.ev_type, f.ev_data,
               f.ev_extra1, f.ev_extra2, f.ev_extra3, f.ev_extra4,
               f.failed_time, f.failed_reason
          from pgq_consumer.failed_event f
         where f.queue_name = i_queue
           and f.consumer_name = i_consumer
         order by f.ev_id
         limit i_limit
        offset coalesce(i_offset, 0);
end;
$$ language plpgsql stable security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_list(
    i_queue         text,
    i_consumer      text)
returns table (
    ev_id           bigint,
    ev_time         timestamptz,
    ev_txid         bigint,
    ev_retry        integer,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text,
    failed_time     timestamptz,
    failed_reason   text)
as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_list(2)
--
--      All failed events of a consumer, in event id order.
-- ----------------------------------------------------------------------
begin
    return query
        select * from pgq_consumer.failed_event_list(i_queue, i_consumer, null, 0);
end;
$$ language plpgsql stable security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_count(
    i_queue         text,
    i_consumer      text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_count(2)
--
--      How many failed events a consumer has.
-- ----------------------------------------------------------------------
begin
    return (select count(*)
              from pgq_consumer.failed_event f
             where f.queue_name = i_queue
               and f.consumer_name = i_consumer);
end;
$$ language plpgsql stable security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_delete(
    i_queue         text,
    i_consumer      text,
    i_ev_id         bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_delete(3)
--
--      Drops one failed event for good.
--
-- Returns:
--      1 if it was stored, 0 if there is no such failed event.
-- ----------------------------------------------------------------------
declare
    v_cnt integer;
begin
    delete from pgq_consumer.failed_event f
     where f.queue_name = i_queue
       and f.consumer_name = i_consumer
       and f.ev_id = i_ev_id;
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_delete_all(
    i_queue         text,
    i_consumer      text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_delete_all(2)
--
--      Drops all failed events of a consumer for good.
--
-- Returns:
--      How many were dropped.
-- ----------------------------------------------------------------------
declare
    v_cnt bigint;
begin
    delete from pgq_consumer.failed_event f
     where f.queue_name = i_queue
       and f.consumer_name = i_consumer;
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_requeue(
    i_queue         text,
    i_consumer      text,
    i_ev_id         bigint,
    i_retry_after   timestamptz)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_requeue(4)
--
--      Internal: takes one failed event (NULL i_ev_id: all of them) out of
--      the store and hands it to pgq.event_retry_raw() for this consumer
--      only, with ev_retry one higher.  The consumer must be registered.
--      An event already waiting in the consumer's retry queue (it will be
--      delivered anyway) only leaves the store.
--
-- Returns:
--      How many events were put back.
-- ----------------------------------------------------------------------
declare
    v_sub_id    integer;
    v_cnt       integer := 0;
    v_ev        record;
begin
    select s.sub_id into v_sub_id
      from pgq.queue q
      join pgq.subscription s on s.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue
       and c.co_name = i_consumer;
    if not found then
        raise exception 'pgq_consumer: consumer % is not registered on queue %', i_consumer, i_queue
            using errcode = 'undefined_object';
    end if;

    for v_ev in
        with taken as (
            delete from pgq_consumer.failed_event f
             where f.queue_name = i_queue
               and f.consumer_name = i_consumer
               and (i_ev_id is null or f.ev_id = i_ev_id)
            returning f.*)
        select * from taken order by taken.ev_id
    loop
        v_cnt := v_cnt + 1;
        perform 1 from pgq.retry_queue rq
          where rq.ev_owner = v_sub_id
            and rq.ev_id = v_ev.ev_id;
        if found then
            continue;
        end if;
        perform pgq.event_retry_raw(i_queue, i_consumer,
                    coalesce(i_retry_after, now()),
                    v_ev.ev_id, v_ev.ev_time, coalesce(v_ev.ev_retry, 0) + 1,
                    v_ev.ev_type, v_ev.ev_data,
                    v_ev.ev_extra1, v_ev.ev_extra2, v_ev.ev_extra3, v_ev.ev_extra4);
    end loop;
    return v_cnt;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_retry(
    i_queue         text,
    i_consumer      text,
    i_ev_id         bigint,
    i_retry_after   timestamptz)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_retry(4)
--
--      Puts one failed event back into the queue for this consumer only,
--      to be delivered once i_retry_after (NULL: now) has passed, the
--      ticker's pgq.maint_retry_events() moved it back and a tick followed.
--
-- Returns:
--      1 if it was stored, 0 if there is no such failed event.
-- ----------------------------------------------------------------------
begin
    if i_ev_id is null then
        return 0;
    end if;
    return pgq_consumer.failed_event_requeue(i_queue, i_consumer, i_ev_id, i_retry_after);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_retry(
    i_queue         text,
    i_consumer      text,
    i_ev_id         bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_retry(3)
--
--      failed_event_retry(4) with the event due now.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.failed_event_retry(i_queue, i_consumer, i_ev_id, now());
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_retry_all(
    i_queue         text,
    i_consumer      text,
    i_retry_after   timestamptz)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_retry_all(3)
--
--      Puts all failed events of a consumer back into the queue for this
--      consumer only (see failed_event_retry).
--
-- Returns:
--      How many were put back.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.failed_event_requeue(i_queue, i_consumer, null, i_retry_after);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.failed_event_retry_all(
    i_queue         text,
    i_consumer      text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.failed_event_retry_all(2)
--
--      failed_event_retry_all(3) with the events due now.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.failed_event_retry_all(i_queue, i_consumer, now());
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


-- ======================================================================
-- Section: Remote batch tracking
--
-- Installed in the REMOTE database of a remote consumer (no pgq there).
-- The consumer works in two transactions: the remote one, where it applies
-- the batch, and the queue one, where it finishes the batch.  It commits
-- the remote one first.  A crash between the two commits leaves the batch
-- applied remotely but unfinished in the queue, so the batch is delivered
-- again.  To recognise it, the consumer records the batch here inside the
-- remote transaction, and checks a batch here before applying it.
--
-- What identifies a batch: its tick range (prev_tick_id, tick_id].  Batch
-- ids are not stable: a batch whose next_batch() call was rolled back is
-- handed out again under a new id, possibly with a different end tick when
-- min_count/min_interval tuning picks another one.  Tick ids of a queue
-- only grow, and a plain consumer's batches follow each other without gaps
-- or overlaps, so one row per consumer with the last applied range is a
-- watermark: everything up to tick_id is applied.
--
-- So, for a plain consumer (subconsumer ''), a batch (prev, cur] is
--   applied   when cur <= last tick_id      (wholly behind the watermark:
--                                             finish it, apply nothing)
--   new       when prev >= last tick_id     (wholly ahead: apply it)
--   partial   when prev < last < cur        (a replay that was cut longer;
--                                             neither applying nor skipping
--                                             it is right.  Reposition the
--                                             queue consumer at the last
--                                             applied tick with
--                                             pgq.register_consumer_at(),
--                                             then take the next batch.)
-- Recording refuses to move a plain consumer's watermark backwards.
--
-- For a cooperative group (subconsumer <> '') batches are applied out of
-- order by several processes, so there is no watermark.  Each sub-consumer
-- records the last batch it applied; a batch is applied when some member of
-- the group recorded exactly that range.  pgq_consumer.next_batch() hands a
-- batch over (dead holder, hand-back) with its tick range unchanged, so the
-- taker recognises a batch the previous holder applied - unless that
-- holder, since the take-over, already recorded a later batch of its own
-- over it; and a holder that is merely slow, not dead, may still be
-- applying it.  Both windows are bounded by the dead interval; choose it
-- well above the longest batch.
--
-- Check and record inside the remote transaction, before applying: the
-- check locks the consumer's row, so a second process of the same
-- (sub)consumer waits for the first to commit or roll back.
--
-- Caveats:
--   * Queue-side effects of the first attempt (events retried or stored as
--     failed in the queue transaction) are lost with it; in this version a
--     batch found applied is just finished.  v3.sql keeps them with the
--     record (set_applied_outcomes), so a replay does them again.
--   * Tick ids start again when a queue is dropped and created again; then
--     forget the consumer's rows (forget_applied_batches), or its batches
--     look applied (v2.sql adds a check by the end tick's time).
-- ======================================================================

create table if not exists pgq_consumer.applied_batch (
    queue_name          text        not null,
    consumer_name       text        not null,
    subconsumer_name    text        not null default '',
    batch_id            bigint      not null,
    prev_tick_id        bigint      not null,
    tick_id             bigint      not null,
    applied_at          timestamptz not null default now(),
    constraint applied_batch_pkey primary key (queue_name, consumer_name, subconsumer_name)
);

comment on table pgq_consumer.applied_batch is
    'Last batch a remote consumer applied in this database; see pgq_consumer.applied_batch_state()';


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
    return query
        select a.*
          from pgq_consumer.applied_batch a
         where a.queue_name = i_queue
           and a.consumer_name = i_consumer
           and a.subconsumer_name = coalesce(i_subconsumer, '');
end;
$$ language plpgsql stable;


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
--      Whether batch (i_prev_tick_id, i_tick_id] was applied here; see the
--      section comment.  Locks the (sub)consumer's row until the end of
--      the transaction.
--
-- Returns:
--      'new', 'applied' or 'partial'.
-- ----------------------------------------------------------------------
declare
    v_sub   text := coalesce(i_subconsumer, '');
    v_last  record;
begin
    if i_prev_tick_id is null or i_tick_id is null or i_prev_tick_id >= i_tick_id then
        raise exception 'pgq_consumer: invalid batch tick range (%, %]', i_prev_tick_id, i_tick_id
            using errcode = 'invalid_parameter_value';
    end if;

    select a.prev_tick_id, a.tick_id into v_last
      from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and a.subconsumer_name = v_sub
       for update;

    if v_sub = '' then
        if not found then
            return 'new';
        elsif i_tick_id <= v_last.tick_id then
            return 'applied';
        elsif i_prev_tick_id >= v_last.tick_id then
            return 'new';
        else
            return 'partial';
        end if;
    end if;

    perform 1
       from pgq_consumer.applied_batch a
      where a.queue_name = i_queue
        and a.consumer_name = i_consumer
        and a.subconsumer_name <> ''
        and a.prev_tick_id = i_prev_tick_id
        and a.tick_id = i_tick_id;
    if found then
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
    i_tick_id       bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.record_applied_batch(6)
--
--      Records batch i_batch_id = (i_prev_tick_id, i_tick_id] as applied
--      by the (sub)consumer.  Call it inside the remote transaction that
--      applies the batch.  A plain consumer's watermark never moves back:
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
               applied_at = now()
         where a.queue_name = i_queue
           and a.consumer_name = i_consumer
           and a.subconsumer_name = v_sub;
    else
        insert into pgq_consumer.applied_batch
               (queue_name, consumer_name, subconsumer_name,
                batch_id, prev_tick_id, tick_id, applied_at)
        values (i_queue, i_consumer, v_sub,
                i_batch_id, i_prev_tick_id, i_tick_id, now())
        on conflict (queue_name, consumer_name, subconsumer_name) do update
           set batch_id = excluded.batch_id,
               prev_tick_id = excluded.prev_tick_id,
               tick_id = excluded.tick_id,
               applied_at = excluded.applied_at;
    end if;
    return 1;
end;
$$ language plpgsql;


create or replace function pgq_consumer.forget_applied_batches(
    i_queue         text,
    i_consumer      text,
    i_subconsumer   text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.forget_applied_batches(3)
--
--      Forgets what the (sub)consumer applied; i_subconsumer NULL forgets
--      the plain consumer and every sub-consumer of the group.  Needed
--      after the queue was dropped and created again, or the consumer
--      repositioned on purpose.
--
-- Returns:
--      How many rows were forgotten.
-- ----------------------------------------------------------------------
declare
    v_cnt bigint;
begin
    delete from pgq_consumer.applied_batch a
     where a.queue_name = i_queue
       and a.consumer_name = i_consumer
       and (i_subconsumer is null or a.subconsumer_name = i_subconsumer);
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql;


-- ======================================================================
-- Section: Cooperative consumers
--
-- Several processes (sub-consumers) share one consumer's batches; every
-- batch goes to exactly one of them.
--
-- Layout in PgQ's own tables:
--   * The group's consumer <consumer> is registered with pgq as usual.  Its
--     subscription row ("main row") is where batches are cut: its
--     sub_last_tick is the end of the last batch handed out.  It never holds
--     a batch itself.
--   * Each sub-consumer is a pgq.consumer named '<consumer>.<subconsumer>'
--     with a subscription row on the same queue that SHARES the main row's
--     sub_id (sub_id is not unique in pgq.subscription).  An idle
--     sub-consumer has sub_last_tick, sub_next_tick and sub_batch NULL; one
--     holding a batch has them set to the batch's (prev, cur] and id.
--     This is the convention pgq.unregister_consumer() already knows: a
--     sub-consumer row has both ticks NULL or both set.
--
-- Why PgQ keeps working:
--   * pgq.get_batch_events / get_batch_cursor / batch_event_sql find the
--     batch by sub_batch on the sub-consumer's row and read its ticks; the
--     retry filter is ev_owner = sub_id, shared by the group.
--   * pgq.event_retry stores ev_owner = sub_id, so a retried event comes
--     back in a later batch of the group, to whichever member takes it.
--   * Table rotation (pgq.maint_rotate_tables_step1) waits for
--     min(sub_last_tick) of the queue: a held batch's prev tick keeps its
--     events from being truncated; idle rows (NULL) do not hold rotation back.
--   * pgq.unregister_consumer(queue, consumer) drops the whole group.
--
-- Use pgq_consumer.finish_batch, not pgq.finish_batch, for a sub-consumer's
-- batch: pgq.finish_batch leaves sub_last_tick set, which holds table
-- rotation back until that sub-consumer takes its next batch (next_batch
-- cleans it up).
--
-- Liveness: next_batch (and touch_subconsumer) set the sub-consumer's
-- sub_active.  A batch whose holder was not seen for longer than the
-- caller's dead interval is taken over by the next caller, under a NEW
-- batch id, so the old holder's finish_batch / event_retry on the old id
-- fail and its transaction rolls back.
-- A sub-consumer unregistered with 'hand_back' leaves its batch behind
-- (row kept, sub_active set to the epoch as a marker); the next caller of
-- next_batch takes it over whatever its dead interval.
-- ======================================================================

create or replace function pgq_consumer.subconsumer_pgq_name(
    i_consumer      text,
    i_subconsumer   text)
returns text as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.subconsumer_pgq_name(2)
--
--      The pgq.consumer name of a sub-consumer: '<consumer>.<subconsumer>'.
-- ----------------------------------------------------------------------
    select i_consumer || '.' || i_subconsumer;
$$ language sql immutable strict;


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
    -- group at a time.
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('pgq_consumer.register_subconsumer'),
        pg_catalog.hashtext(i_queue || '/' || i_consumer));
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


create or replace function pgq_consumer.drop_subconsumer_row(
    i_queue_id      integer,
    i_co_id         integer)
returns void as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.drop_subconsumer_row(2)
--
--      Internal: deletes a sub-consumer's subscription row, and its
--      pgq.consumer row when nothing else uses it.
-- ----------------------------------------------------------------------
begin
    delete from pgq.subscription s
     where s.sub_queue = i_queue_id
       and s.sub_consumer = i_co_id;
    delete from pgq.consumer c
     where c.co_id = i_co_id
       and not exists (select 1 from pgq.subscription s where s.sub_consumer = i_co_id);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


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
                using errcode = 'object_in_use';
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
            using errcode = 'undefined_object';
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


create or replace function pgq_consumer.next_batch_info(
    in  i_queue             text,
    in  i_consumer          text,
    in  i_subconsumer       text,
    in  i_dead_interval     interval,
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
-- Function: pgq_consumer.next_batch_info(4)
--
--      next_batch_custom(7) without batch tuning.
-- ----------------------------------------------------------------------
begin
    select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
           f.cur_tick_event_seq, f.prev_tick_event_seq, f.taken_from
      into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
           cur_tick_event_seq, prev_tick_event_seq, taken_from
      from pgq_consumer.next_batch_custom(i_queue, i_consumer, i_subconsumer,
                                          i_dead_interval, null, null, null) f;
    return;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.next_batch(
    i_queue             text,
    i_consumer          text,
    i_subconsumer       text,
    i_dead_interval     interval)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.next_batch(4)
--
--      next_batch_custom(7) returning the batch id only (NULL: no batch).
-- ----------------------------------------------------------------------
begin
    return (select f.batch_id
              from pgq_consumer.next_batch_custom(i_queue, i_consumer, i_subconsumer,
                                                  i_dead_interval, null, null, null) f);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.next_batch(
    i_queue             text,
    i_consumer          text,
    i_subconsumer       text)
returns bigint as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.next_batch(3)
--
--      next_batch(4) without taking over from dead sub-consumers.
-- ----------------------------------------------------------------------
begin
    return pgq_consumer.next_batch(i_queue, i_consumer, i_subconsumer, null);
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.finish_batch(
    i_batch_id          bigint)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.finish_batch(1)
--
--      Closes an active batch, of a sub-consumer (which becomes idle) or
--      of a plain consumer (pgq.finish_batch).  Unlike pgq.finish_batch,
--      a batch that is not active is an error (no_data_found), so the
--      work done in the transaction rolls back: that is what happens to a
--      sub-consumer whose batch was taken over meanwhile.
--
-- Returns:
--      1
-- ----------------------------------------------------------------------
declare
    v_owner record;
begin
    select * into v_owner from pgq_consumer.batch_consumer(i_batch_id);
    if v_owner.queue_name is null then
        raise exception 'pgq_consumer: batch % is not active (finished already, or taken over by another sub-consumer)', i_batch_id
            using errcode = 'no_data_found';
    end if;
    if v_owner.subconsumer_name is null then
        return pgq.finish_batch(i_batch_id);
    end if;
    update pgq.subscription s
       set sub_batch = null,
           sub_last_tick = null,
           sub_next_tick = null,
           sub_active = now()
     where s.sub_batch = i_batch_id;
    return 1;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.touch_subconsumer(
    i_queue             text,
    i_consumer          text,
    i_subconsumer       text)
returns integer as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.touch_subconsumer(3)
--
--      Marks a sub-consumer as seen, so a long batch is not taken over as
--      dead.  Call it from a connection other than the one processing the
--      batch, committed on its own.
--
-- Returns:
--      1, or 0 if the sub-consumer is not registered.
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
       and s.sub_active > timestamptz 'epoch';
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql security definer
   set search_path = pg_catalog, pg_temp;


create or replace function pgq_consumer.get_subconsumer_info(
    i_queue             text,
    i_consumer          text)
returns table (
    subconsumer_name    text,
    batch_id            bigint,
    prev_tick_id        bigint,
    cur_tick_id         bigint,
    last_seen           timestamptz,
    handed_back         boolean)
as $$
-- ----------------------------------------------------------------------
-- Function: pgq_consumer.get_subconsumer_info(2)
--
--      The sub-consumers of a group, in name order: the batch each holds
--      and when it was last seen.  A handed_back row is an unregistered
--      sub-consumer's batch waiting to be taken over (last_seen NULL).
-- ----------------------------------------------------------------------
begin
    return query
        select substr(c.co_name, length(i_consumer) + 2),
               s.sub_batch, s.sub_last_tick, s.sub_next_tick,
               case when s.sub_active > timestamptz 'epoch' then s.sub_active end,
               s.sub_active <= timestamptz 'epoch'
          from pgq.queue q
          join pgq.subscription m on m.sub_queue = q.queue_id
          join pgq.consumer mc on mc.co_id = m.sub_consumer
          join pgq.subscription s on s.sub_queue = m.sub_queue and s.sub_id = m.sub_id
                                 and s.sub_consumer <> m.sub_consumer
          join pgq.consumer c on c.co_id = s.sub_consumer
         where q.queue_name = i_queue
           and mc.co_name = i_consumer
           and left(c.co_name, length(i_consumer) + 1) = i_consumer || '.'
         order by 1;
end;
$$ language plpgsql stable security definer
   set search_path = pg_catalog, pg_temp;


-- ======================================================================
-- Section: Privileges
--
-- Security definer functions are not for PUBLIC.  Consumers (pgq_reader,
-- and pgq_admin, which is a member of it) may use all of them; the tables
-- are readable by pgq_reader and writable by pgq_admin.  The remote
-- tracking functions are security invoker: whoever applies batches in the
-- remote database needs rights on pgq_consumer.applied_batch (the role
-- that installed the schema has them).  PgQ's roles are granted only where
-- they exist.
-- ======================================================================

revoke all on function
    pgq_consumer.failed_event_add(text, text, bigint, timestamptz, bigint, integer, text, text, text, text, text, text, text),
    pgq_consumer.failed_event_add(bigint, bigint, text),
    pgq_consumer.failed_event_list(text, text, bigint, bigint),
    pgq_consumer.failed_event_list(text, text),
    pgq_consumer.failed_event_count(text, text),
    pgq_consumer.failed_event_delete(text, text, bigint),
    pgq_consumer.failed_event_delete_all(text, text),
    pgq_consumer.failed_event_requeue(text, text, bigint, timestamptz),
    pgq_consumer.failed_event_retry(text, text, bigint, timestamptz),
    pgq_consumer.failed_event_retry(text, text, bigint),
    pgq_consumer.failed_event_retry_all(text, text, timestamptz),
    pgq_consumer.failed_event_retry_all(text, text),
    pgq_consumer.register_subconsumer(text, text, text),
    pgq_consumer.drop_subconsumer_row(integer, integer),
    pgq_consumer.unregister_subconsumer(text, text, text, text),
    pgq_consumer.next_batch_custom(text, text, text, interval, interval, integer, interval),
    pgq_consumer.next_batch_info(text, text, text, interval),
    pgq_consumer.next_batch(text, text, text, interval),
    pgq_consumer.next_batch(text, text, text),
    pgq_consumer.finish_batch(bigint),
    pgq_consumer.touch_subconsumer(text, text, text),
    pgq_consumer.get_subconsumer_info(text, text)
  from public;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader') then
        grant usage on schema pgq_consumer to pgq_reader;
        grant select on pgq_consumer.schema_version, pgq_consumer.failed_event to pgq_reader;
        grant select, insert, update, delete on pgq_consumer.applied_batch to pgq_reader;
        grant execute on function
            pgq_consumer.failed_event_add(text, text, bigint, timestamptz, bigint, integer, text, text, text, text, text, text, text),
            pgq_consumer.failed_event_add(bigint, bigint, text),
            pgq_consumer.failed_event_list(text, text, bigint, bigint),
            pgq_consumer.failed_event_list(text, text),
            pgq_consumer.failed_event_count(text, text),
            pgq_consumer.failed_event_delete(text, text, bigint),
            pgq_consumer.failed_event_delete_all(text, text),
            pgq_consumer.failed_event_retry(text, text, bigint, timestamptz),
            pgq_consumer.failed_event_retry(text, text, bigint),
            pgq_consumer.failed_event_retry_all(text, text, timestamptz),
            pgq_consumer.failed_event_retry_all(text, text),
            pgq_consumer.register_subconsumer(text, text, text),
            pgq_consumer.unregister_subconsumer(text, text, text, text),
            pgq_consumer.next_batch_custom(text, text, text, interval, interval, integer, interval),
            pgq_consumer.next_batch_info(text, text, text, interval),
            pgq_consumer.next_batch(text, text, text, interval),
            pgq_consumer.next_batch(text, text, text),
            pgq_consumer.finish_batch(bigint),
            pgq_consumer.touch_subconsumer(text, text, text),
            pgq_consumer.get_subconsumer_info(text, text)
          to pgq_reader;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_writer') then
        grant usage on schema pgq_consumer to pgq_writer;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_admin') then
        grant usage on schema pgq_consumer to pgq_admin;
        grant select, insert, update, delete on pgq_consumer.failed_event,
                                                pgq_consumer.applied_batch to pgq_admin;
    end if;
end;
$$;

insert into pgq_consumer.schema_version (version) values (1)
    on conflict (version) do nothing;
