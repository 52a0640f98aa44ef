-- ----------------------------------------------------------------------
-- pgq_consumer, version 6 (upgrade from version 5; apply v1.sql to v5.sql
-- first).
--
-- Cascaded consumers (pgq_node).
--
-- A cascaded consumer reads its batches from a provider node and records
-- the tick it completed on its target node (pgq_node.local_state), in the
-- transaction of its work there.  pgq_node.set_consumer_completed sets it
-- whatever it was, so two processes of one consumer (started twice by
-- mistake, or one stalled and woken up) could both commit the same batch.
-- complete_cascade_batch moves the position only from the batch's start
-- tick and fails otherwise, so the transaction rolls back: at most one
-- commit per batch, whatever the processes do.
--
-- Only databases that are nodes of a cascade (pgq_node installed) call it;
-- elsewhere it is never called.
-- ----------------------------------------------------------------------

create or replace function pgq_consumer.complete_cascade_batch(
    i_queue_name text,
    i_consumer_name text,
    i_prev_tick_id bigint,
    i_tick_id bigint)
returns void as $$
declare
    _cur bigint;
begin
    update pgq_node.local_state
       set last_tick_id = i_tick_id,
           cur_error = null
     where queue_name = i_queue_name
       and consumer_name = i_consumer_name
       and last_tick_id = i_prev_tick_id;
    if found then
        return;
    end if;
    select last_tick_id into _cur
      from pgq_node.local_state
     where queue_name = i_queue_name
       and consumer_name = i_consumer_name;
    if not found then
        raise exception 'cascaded consumer % is not registered on this node for queue %',
            i_consumer_name, i_queue_name
            using errcode = 'no_data_found', column = 'consumer_name';
    end if;
    raise exception 'cascaded consumer % of queue % is at tick %, not at the batch''s start tick % (batch up to tick %)',
        i_consumer_name, i_queue_name, _cur, i_prev_tick_id, i_tick_id
        using errcode = 'object_not_in_prerequisite_state';
end;
$$ language plpgsql;

revoke all on function pgq_consumer.complete_cascade_batch(text, text, bigint, bigint) from public;

insert into pgq_consumer.schema_version (version) values (6)
    on conflict (version) do nothing;
