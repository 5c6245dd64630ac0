-- aion event store schema, version 1 (documentation copy: c_src/store.c embeds the
-- same DDL and applies it when it opens a database without a schema).
--
-- Every id, type, status and JSON column holds the raw bytes it was given (bound as
-- TEXT); the store never parses JSON. Times are integer milliseconds since the Unix epoch.

CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER NOT NULL
);

-- One row per run. next_seq is the seq the run's next event gets (history length =
-- next_seq - 1). create_seq orders runs by creation (current_run/latest run of a
-- workflow id); it is assigned as max(create_seq) + 1 inside the writer's transaction.
CREATE TABLE IF NOT EXISTS runs (
  run_id            TEXT    NOT NULL PRIMARY KEY,
  workflow_id       TEXT    NOT NULL,
  type              TEXT    NOT NULL,
  status            TEXT    NOT NULL,
  started_at        INTEGER NOT NULL,
  closed_at         INTEGER,
  parent            TEXT,
  continued_from    TEXT,
  search_attributes TEXT,
  stuck_reason      TEXT,
  data              TEXT,
  next_seq          INTEGER NOT NULL DEFAULT 1,
  create_seq        INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow_id, create_seq);
CREATE INDEX IF NOT EXISTS runs_status   ON runs (status, started_at, run_id);
CREATE INDEX IF NOT EXISTS runs_started  ON runs (started_at, run_id);

-- The append-only history: seqs per run are contiguous from 1.
CREATE TABLE IF NOT EXISTS events (
  run_id      TEXT    NOT NULL,
  seq         INTEGER NOT NULL,
  type        TEXT    NOT NULL,
  recorded_at INTEGER NOT NULL,
  data        TEXT    NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Durable timers that have not fired or been cancelled yet.
CREATE TABLE IF NOT EXISTS timers (
  run_id   TEXT    NOT NULL,
  timer_id TEXT    NOT NULL,
  fire_at  INTEGER NOT NULL,
  PRIMARY KEY (run_id, timer_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_fire_at ON timers (fire_at);

-- Outstanding activity attempts (recovery re-dispatches them).
CREATE TABLE IF NOT EXISTS activity_tasks (
  run_id      TEXT    NOT NULL,
  activity_id TEXT    NOT NULL,
  attempt     INTEGER NOT NULL,
  task_queue  TEXT    NOT NULL,
  data        TEXT    NOT NULL,
  PRIMARY KEY (run_id, activity_id)
) WITHOUT ROWID;

INSERT INTO schema_version (version) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
