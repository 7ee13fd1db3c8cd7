-- Issue 18: the outbox loses its (tenant_id, created_at) index. Nothing reads the outbox by
-- time: the worker takes a tenant's due rows through outbox_tenant_pending_idx and settles them
-- by primary key, the fan-out and the privacy erasure find rows by id, and a tenant's events in
-- time order are (tenant_id, id) order anyway (UUIDv7 ids, made when the event is written). The
-- index cost every POST an insertion and the worker's settling UPDATE of each event another
-- (that UPDATE changes columns of the pending index's predicate, so it is never HOT and enters
-- the new row version in every index). docs/benchmarks.md, "The write path", has the figures.
DROP INDEX IF EXISTS app.outbox_tenant_created_idx;
