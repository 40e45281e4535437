-- Partitioned history, step 2 of 3: prove the legacy rows fit their partition. VALIDATE CONSTRAINT reads each
-- table once under a SHARE UPDATE EXCLUSIVE lock: inserts, updates and reads go on meanwhile (only other DDL
-- waits). The time it takes is the time of one sequential read of events, spans and step_logs.
ALTER TABLE events VALIDATE CONSTRAINT events_legacy_history;
ALTER TABLE spans VALIDATE CONSTRAINT spans_legacy_bound;
ALTER TABLE step_logs VALIDATE CONSTRAINT step_logs_legacy_bound;
