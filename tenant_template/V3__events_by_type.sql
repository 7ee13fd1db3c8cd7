-- Distinct users of one event type (GET /analytics/timeseries?metric=active_users&event_type=)
-- have no rollup: a (user, hour) mask per event type would multiply user_activity by the
-- number of types and the activity writes of every flush with it. They are counted from the
-- raw events instead, and this index makes that an index-only range scan over the events of
-- that type alone. Measured with bench/analytics_store.rs on one tenant holding 10M events
-- (7 days by day, event_type=purchase): p95 630 ms reading the range through the primary key
-- and filtering (~780K rows read for ~78K kept); see bench/results/analytics.md for the figure
-- with this index. One relation more per tenant (13 in all).
--
-- Runs with search_path set to the tenant's schema (names stay unqualified here).

CREATE INDEX events_type_time_idx ON events (tenant_id, event_type, occurred_at) INCLUDE (user_id);
