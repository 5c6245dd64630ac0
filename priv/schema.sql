-- aion event store schema, version 3 (documentation copy: c_src/store.c embeds the
-- same DDL and applies it when it opens a database without a schema; a version-1
-- database is upgraded in place by ALTER TABLE runs ADD COLUMN parked_seq INTEGER,
-- a version-2 one by dropping runs_status and creating runs_open and runs_closed).
--
-- Every id, type, status and JSON column holds the raw bytes it was given (bound as
-- TEXT); the store never parses JSON. Times are integer milliseconds since the Unix epoch.

CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER NOT NULL
);

-- One row per run. next_seq is the seq the run's next event gets (history length =
-- next_seq - 1); last_event is the id of the run's latest event (NULL before the
-- first). create_seq orders runs by creation (current_run, latest run of a workflow
-- id); the writer assigns it as max(create_seq) + 1 inside its transaction.
-- parked_seq (version 2) is the history length (the seq of the run's last event) at
-- the moment the run's process was evicted (parked); NULL if never parked. A run in
-- status running or paused with parked_seq = next_seq - 1 needs no process at engine
-- start (runs_to_resume); any later event makes it differ again.
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
  last_event        INTEGER,
  create_seq        INTEGER NOT NULL UNIQUE,
  parked_seq        INTEGER
);
CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow_id, create_seq);
CREATE INDEX IF NOT EXISTS runs_started  ON runs (started_at, run_id);

-- The append-only history. Seqs per run are contiguous from 1: the single writer
-- thread assigns them from runs.next_seq inside the transaction that inserts the
-- events, so (run_id, seq) is unique by construction.
--
-- Rows are stored in commit order (id) and each run's events form a chain through
-- prev (the id of the run's previous event; NULL for seq 1), entered from
-- runs.last_event. A history read walks the chain backwards from the newest event
-- (one rowid lookup per event, as an index range scan plus table lookups would do).
-- There is deliberately no (run_id, seq) index, and the table is not clustered by
-- run (WITHOUT ROWID): either puts one page per run touched into every group
-- commit, i.e. about one 4 KB WAL frame per event when many runs append at once.
-- Measured at 256 concurrent runs (bench/RESULTS.md): the writer's CPU per event
-- fell from ~15 us to ~4.5 us and the checkpointer's from ~6 us to ~0.5 us.
CREATE TABLE IF NOT EXISTS events (
  id          INTEGER PRIMARY KEY, -- an alias of the rowid: stable across VACUUM
  run_id      TEXT    NOT NULL,
  seq         INTEGER NOT NULL,
  type        TEXT    NOT NULL,
  recorded_at INTEGER NOT NULL,
  data        TEXT    NOT NULL,
  prev        INTEGER
);

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

-- Runs by status (version 3; created last, where a version-2 file gets them). Version 2
-- had one index (status, started_at, run_id): every close moved the run's entry to a
-- random page of it. runs_open holds open runs only (a close just deletes the entry);
-- runs_closed holds closed runs by close time, so a close appends at the end of its
-- status. Queries repeat an index's WHERE word for word to use it (SQLite's rule for
-- partial indexes); a list of closed runs walks runs_started in its order.
CREATE INDEX IF NOT EXISTS runs_open ON runs (status, started_at, run_id)
  WHERE status NOT IN ('completed','failed','cancelled','terminated','timed_out','continued_as_new');
CREATE INDEX IF NOT EXISTS runs_closed ON runs (status, closed_at)
  WHERE status IN ('completed','failed','cancelled','terminated','timed_out','continued_as_new');

INSERT INTO schema_version (version) SELECT 3 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
