/* store.c: the SQLite event store behind aion_store_sqlite: resource lifecycle
 * (open, close, destructor), checkpoints, load. store_int.h says how the three files
 * divide the work.
 *
 * One open database is one resource (db_res). It owns:
 *   - a writer connection used only by its writer thread (store_write.c): store_append
 *     parses and copies a request on the caller's (normal) scheduler, queues it and
 *     returns; the writer drains everything queued into ONE transaction (group commit),
 *     each request isolated by a savepoint when it needs one, so a failing request is
 *     rolled back alone; a reply thread answers every caller with enif_send once the
 *     COMMIT holding its request returned (record, then acknowledge);
 *   - a pool of reader connections used by the read NIFs on dirty IO schedulers
 *     (store_read.c; WAL: readers never block the writer, nor the writer them);
 *   - a checkpoint connection and thread: the writer's auto-checkpoint is replaced by a
 *     WAL hook that only counts; the checkpoint thread runs wal_checkpoint(PASSIVE) every
 *     checkpoint_interval ms (when something was committed) or when the WAL grew past
 *     CKPT_WAL_PAGES, so an append never pays for a checkpoint.
 * Close drains the queue, joins the three threads, waits for running reads and closes
 * every connection; the destructor does the same for a handle that was never closed.
 * Nothing here is a mutable global: atoms and the resource type live in the module's
 * private data, and a copy of the atoms lives in each resource (the threads have no env). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

#define SCHEMA_VERSION  3
#define CKPT_WAL_PAGES  8192 /* WAL size (pages) that wakes the checkpoint thread */
#define WAL_SIZE_LIMIT  "67108864" /* journal_size_limit: WAL truncated to this on reset */
#define WAL_TAIL_PAGES  512  /* a WAL tail the writer backfills itself (wal_hook) */
#define CKPT_CATCH_UP   4    /* passes run back to back before the writer takes the rest */

/* Read queries repeat the WHERE of these partial indexes word for word (SQLite uses a
 * partial index only for a query whose WHERE contains that term): store_read.c. */
#define STATUS_INDEXES \
    "CREATE INDEX IF NOT EXISTS runs_open ON runs (status, started_at, run_id)" \
    " WHERE status NOT IN " TERMINAL_SQL ";" \
    "CREATE INDEX IF NOT EXISTS runs_closed ON runs (status, closed_at)" \
    " WHERE status IN " TERMINAL_SQL ";"

static const char SCHEMA_DDL[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs ("
    " run_id TEXT NOT NULL PRIMARY KEY, workflow_id TEXT NOT NULL, type TEXT NOT NULL,"
    " status TEXT NOT NULL, started_at INTEGER NOT NULL, closed_at INTEGER, parent TEXT,"
    " continued_from TEXT, search_attributes TEXT, stuck_reason TEXT, data TEXT,"
    " next_seq INTEGER NOT NULL DEFAULT 1, last_event INTEGER,"
    " create_seq INTEGER NOT NULL UNIQUE, parked_seq INTEGER);"
    "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow_id, create_seq);"
    "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at, run_id);"
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, type TEXT NOT NULL, recorded_at INTEGER NOT NULL,"
    " data TEXT NOT NULL, prev INTEGER);"
    "CREATE TABLE IF NOT EXISTS timers (run_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
    " fire_at INTEGER NOT NULL, PRIMARY KEY (run_id, timer_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS timers_fire_at ON timers (fire_at);"
    "CREATE TABLE IF NOT EXISTS activity_tasks (run_id TEXT NOT NULL,"
    " activity_id TEXT NOT NULL, attempt INTEGER NOT NULL, task_queue TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (run_id, activity_id)) WITHOUT ROWID;"
    STATUS_INDEXES
    "INSERT INTO schema_version (version) SELECT 3"
    " WHERE NOT EXISTS (SELECT 1 FROM schema_version);";

/* Upgrades a version-1 database in place (inside the same transaction as the check);
 * it is then a version-2 one (MIGRATE_V2_V3 follows). */
static const char MIGRATE_V1_V2[] =
    "ALTER TABLE runs ADD COLUMN parked_seq INTEGER;"
    "UPDATE schema_version SET version = 2;";

/* Version 3: the status index of version 2, runs_status (status, started_at, run_id),
 * moved an entry to a random page at every close. It is split: a partial index of the
 * open runs (a close only deletes from it) and one of the closed runs by close time
 * (entries append at the end of their status). Created last, in the same order as a
 * new database's DDL, so both schemas read the same. */
static const char MIGRATE_V2_V3[] =
    "DROP INDEX IF EXISTS runs_status;"
    STATUS_INDEXES
    "UPDATE schema_version SET version = 3;";

/* ------------------------------------------------------------------ shared helpers */

ERL_NIF_TERM store_make_bin(ErlNifEnv *env, const void *p, size_t n)
{
    ERL_NIF_TERM t;
    unsigned char *d = enif_make_new_binary(env, n, &t);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return t;
}

ERL_NIF_TERM store_sqlite_reason(ErlNifEnv *env, const store_atoms *a, int code, const char *msg)
{
    return enif_make_tuple3(env, a->a_sqlite, enif_make_int(env, code),
                            store_make_bin(env, msg, strlen(msg)));
}

ERL_NIF_TERM store_conn_error(ErlNifEnv *env, const store_atoms *a, sqlite3 *c, int rc)
{
    int code = c ? sqlite3_extended_errcode(c) : rc;
    const char *msg = c ? sqlite3_errmsg(c) : sqlite3_errstr(rc);
    if (code == SQLITE_OK)
        code = rc;
    return enif_make_tuple2(env, a->a_error, store_sqlite_reason(env, a, code, msg));
}

int store_bind_bytes(sqlite3_stmt *st, int i, bytes_t b)
{
    return sqlite3_bind_text64(st, i, b.n ? (const char *)b.p : "", b.n, SQLITE_STATIC,
                               SQLITE_UTF8);
}

ERL_NIF_TERM store_col_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
        return a->a_null;
    case SQLITE_INTEGER:
        return enif_make_int64(env, sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return enif_make_double(env, sqlite3_column_double(st, i));
    default: {
        const void *p = sqlite3_column_blob(st, i);
        int n = sqlite3_column_bytes(st, i);
        return store_make_bin(env, p, n > 0 ? (size_t)n : 0);
    }
    }
}

static int exec_sql(sqlite3 *c, const char *sql)
{
    return sqlite3_exec(c, sql, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ checkpoints */

/* Called on the writer thread after each commit: counts, and wakes the checkpoint
 * thread when the WAL grew past the threshold. Replaces SQLite's auto-checkpoint.
 *
 * Ending the WAL: SQLite rewrites the WAL from its start (in place: no new file blocks,
 * a small WAL index) only if the whole WAL is backfilled when the writer begins a
 * transaction. A checkpoint thread alone never gets there under a steady stream of
 * commits (each pass ends behind the frames committed during it), and the WAL then
 * grows without bound (700+ MB in a minute of timer fires, every frame a new file
 * block that the kernel zeroes). So once the thread's passes have caught up to within
 * WAL_TAIL_PAGES of the writer (or does not gain on it, or after CKPT_CATCH_UP passes
 * back to back), it hands the rest to the writer (ck_handoff; the next commit turns
 * ck_reset into w_reset):
 * the writer backfills the tail itself between two batches and its next transaction
 * restarts the WAL. During the hand-off the WAL size does not wake the thread (a
 * pass would hold ck_run and delay the writer); its periodic pass still runs. */
static int wal_hook(void *arg, sqlite3 *c, const char *name, int pages)
{
    db_res *db = arg;
    pthread_mutex_lock(&db->ck_mu);
    db->ck_commits++;
    db->ck_wal_pages = pages > 0 ? (uint64_t)pages : 0;
    if (db->ck_reset) {
        db->ck_reset = 0;
        db->w_reset = 1;
    }
    if (pages >= CKPT_WAL_PAGES && !db->ck_pending && !db->ck_handoff) {
        db->ck_pending = 1;
        pthread_cond_signal(&db->ck_cv);
    }
    pthread_mutex_unlock(&db->ck_mu);
    return SQLITE_OK;
}

/* Flushes the database file of connection c to disk. SQLite syncs it only after a
 * checkpoint that reached the end of the WAL as the WAL is when the pass ends; under
 * steady load the writer has committed more frames by then, so a pass leaves every page
 * it copied dirty in the OS cache, and the writer's next complete checkpoint (the WAL
 * hand-off) then paid for flushing all of them: 10-50 ms with 8-16 MB copied, with every
 * commit waiting. The frame counts a pass returns are those of the WAL it started from
 * (log = done after a pass that copied all of it), so they cannot tell whether SQLite
 * synced: the caller syncs after every pass that backfilled frames unless the WAL, as
 * the writer's hook last saw it, ends where the pass stopped (SQLite synced then). */
static void sync_db_file(sqlite3 *c)
{
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(c, "main", SQLITE_FCNTL_FILE_POINTER, &f) == SQLITE_OK &&
        f != NULL && f->pMethods != NULL)
        (void)f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
}

static int run_checkpoint(db_res *db, int *code, char *msg, size_t msg_sz, int *n_log,
                          int *n_ckpt)
{
    int log = -1, done = -1;
    pthread_mutex_lock(&db->ck_run);
    int rc = sqlite3_wal_checkpoint_v2(db->ck, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc == SQLITE_OK && done > 0) {
        /* SQLite synced the file itself if no commit came after the frames the pass
         * copied (the WAL then ends at done); the hook may lag a commit that SQLite
         * saw, which only skips one sync: the hand-off's own checkpoint reaches the
         * end and syncs before the WAL restarts, whatever this thread did. */
        pthread_mutex_lock(&db->ck_mu);
        uint64_t wal = db->ck_wal_pages;
        pthread_mutex_unlock(&db->ck_mu);
        if (wal > (uint64_t)done)
            sync_db_file(db->ck);
    }
    if (n_log != NULL)
        *n_log = log;
    if (n_ckpt != NULL)
        *n_ckpt = done;
    if (rc != SQLITE_OK && code != NULL) {
        *code = sqlite3_extended_errcode(db->ck);
        const char *m = sqlite3_errmsg(db->ck);
        size_t n = strlen(m);
        if (n >= msg_sz)
            n = msg_sz - 1;
        memcpy(msg, m, n);
        msg[n] = '\0';
    }
    pthread_mutex_unlock(&db->ck_run);
    return rc;
}

/* Called by the checkpoint thread (holding ck_mu) after a pass that backfilled the
 * WAL up to frame n_ckpt: decides whether the writer ends the WAL, another pass
 * runs at once, or the thread waits. */
static void after_pass(db_res *db, int rc, int n_log, int n_ckpt)
{
    if (rc != SQLITE_OK || n_log < CKPT_WAL_PAGES || n_ckpt < 0) {
        db->ck_passes = 0;
        return;
    }
    uint64_t done = (uint64_t)n_ckpt;
    uint64_t tail = db->ck_wal_pages > done ? db->ck_wal_pages - done : 0;
    /* what this pass had to copy: the previous pass's tail, or the whole WAL */
    uint64_t before = db->ck_passes > 0 ? db->ck_tail : done;
    db->ck_tail = tail;
    if (tail == 0) { /* all backfilled: the next transaction restarts the WAL */
        db->ck_passes = 0;
    } else if (tail <= WAL_TAIL_PAGES || tail >= before || db->ck_passes >= CKPT_CATCH_UP) {
        /* near the end, not gaining on the writer, or enough passes */
        db->ck_reset = 1;
        db->ck_handoff = 1;
        db->ck_passes = 0;
    } else {
        db->ck_passes++;
        db->ck_pending = 1;
    }
}

/* Writer thread, between batches: backfills the WAL's tail on the writer connection
 * (the checkpoint thread handed it over), so that the next transaction restarts the
 * WAL. If a checkpoint is running elsewhere (a periodic pass or checkpoint/1), it
 * does not wait (that held every commit for up to the length of a pass): w_reset
 * stays set and the writer tries again after its next batch. */
void store_wal_finish(db_res *db)
{
    if (pthread_mutex_trylock(&db->ck_run) != 0)
        return; /* a pass is running: w_reset stays set, try after the next batch */
    db->w_reset = 0;
    (void)sqlite3_wal_checkpoint_v2(db->w, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_unlock(&db->ck_run);
    pthread_mutex_lock(&db->ck_mu);
    db->ck_handoff = 0;
    pthread_mutex_unlock(&db->ck_mu);
}

static void *ckpt_main(void *arg)
{
    db_res *db = arg;
    pthread_mutex_lock(&db->ck_mu);
    while (!db->ck_stop) {
        if (!db->ck_pending) {
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            dl.tv_sec += db->ckpt_ms / 1000;
            dl.tv_nsec += (long)(db->ckpt_ms % 1000) * 1000000L;
            if (dl.tv_nsec >= 1000000000L) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000L;
            }
            int rc = 0;
            while (!db->ck_stop && !db->ck_pending && rc != ETIMEDOUT)
                rc = pthread_cond_timedwait(&db->ck_cv, &db->ck_mu, &dl);
            if (db->ck_stop)
                break;
            if (!db->ck_pending && db->ck_commits == db->ck_seen)
                continue; /* nothing committed during this interval */
        }
        db->ck_pending = 0;
        db->ck_seen = db->ck_commits;
        pthread_mutex_unlock(&db->ck_mu);
        int n_log = -1, n_ckpt = -1;
        int rc = run_checkpoint(db, NULL, NULL, 0, &n_log, &n_ckpt);
        pthread_mutex_lock(&db->ck_mu);
        after_pass(db, rc, n_log, n_ckpt);
    }
    pthread_mutex_unlock(&db->ck_mu);
    return NULL;
}

/* ------------------------------------------------------------ open, close, destroy */

void store_reader_close(reader *rd)
{
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(rd->st[i]);
    sqlite3_close_v2(rd->c);
    enif_free(rd);
}

/* Opens a connection with the database's settings. */
static int conn_open(db_res *db, sqlite3 **out, int create, const char *vfs)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(db->path, out, flags, vfs);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_extended_result_codes(*out, 1);
    sqlite3_busy_timeout(*out, db->busy_ms);
    return exec_sql(*out, db->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
}

reader *store_reader_open(db_res *db, int *code, char *msg, size_t msg_sz)
{
    reader *rd = enif_alloc(sizeof *rd);
    if (rd == NULL) {
        *code = SQLITE_NOMEM;
        snprintf(msg, msg_sz, "%s", sqlite3_errstr(SQLITE_NOMEM));
        return NULL;
    }
    memset(rd, 0, sizeof *rd);
    int rc = conn_open(db, &rd->c, 0, NULL);
    if (rc == SQLITE_OK)
        rc = exec_sql(rd->c, "PRAGMA query_only=1");
    if (rc != SQLITE_OK) {
        *code = rd->c ? sqlite3_extended_errcode(rd->c) : rc;
        snprintf(msg, msg_sz, "%s", rd->c ? sqlite3_errmsg(rd->c) : sqlite3_errstr(rc));
        store_reader_close(rd);
        return NULL;
    }
    return rd;
}

static void db_stop_threads(db_res *db)
{
    if (db->writer_started) { /* state is ST_CLOSING: the writer drains and exits */
        enif_thread_join(db->writer_tid, NULL);
        db->writer_started = 0;
    } else {
        enif_mutex_lock(db->mu);
        db->writer_done = 1;
        enif_cond_signal(db->r_cv);
        enif_mutex_unlock(db->mu);
    }
    if (db->reply_started) { /* it exits once the writer is done and all replies went */
        enif_thread_join(db->reply_tid, NULL);
        db->reply_started = 0;
    }
    if (db->ck_started) {
        pthread_mutex_lock(&db->ck_mu);
        db->ck_stop = 1;
        pthread_cond_signal(&db->ck_cv);
        pthread_mutex_unlock(&db->ck_mu);
        enif_thread_join(db->ck_tid, NULL);
        db->ck_started = 0;
    }
}

static void db_close_conns(db_res *db)
{
    while (db->pool) {
        reader *rd = db->pool;
        db->pool = rd->next;
        store_reader_close(rd);
    }
    db->pool_n = 0;
    if (db->ck) {
        sqlite3_close_v2(db->ck);
        db->ck = NULL;
    }
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(db->wst[i]);
        db->wst[i] = NULL;
    }
    if (db->w) { /* the last connection: SQLite checkpoints and removes the WAL */
        sqlite3_close_v2(db->w);
        db->w = NULL;
    }
    store_vfs_unregister(&db->vfs);
}

static void db_dtor(ErlNifEnv *env, void *obj)
{
    db_res *db = obj;
    if (db->mu != NULL && db->state == ST_OPEN) {
        /* Never closed: no call can be running (none holds a reference). */
        enif_mutex_lock(db->mu);
        db->state = ST_CLOSING;
        enif_cond_broadcast(db->q_cv);
        enif_mutex_unlock(db->mu);
        db_stop_threads(db);
    }
    db_close_conns(db);
    if (db->ck_init) {
        pthread_cond_destroy(&db->ck_cv);
        pthread_mutex_destroy(&db->ck_mu);
        pthread_mutex_destroy(&db->ck_run);
    }
    if (db->idle_cv)
        enif_cond_destroy(db->idle_cv);
    if (db->r_cv)
        enif_cond_destroy(db->r_cv);
    if (db->q_cv)
        enif_cond_destroy(db->q_cv);
    if (db->mu)
        enif_mutex_destroy(db->mu);
    if (db->path)
        enif_free(db->path);
}

static int sync_init(db_res *db)
{
    db->mu = enif_mutex_create("aion_store_db");
    db->q_cv = enif_cond_create("aion_store_queue");
    db->idle_cv = enif_cond_create("aion_store_idle");
    db->r_cv = enif_cond_create("aion_store_reply");
    if (db->mu == NULL || db->q_cv == NULL || db->idle_cv == NULL || db->r_cv == NULL)
        return 0;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return 0;
    int ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&db->ck_cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok)
        return 0;
    if (pthread_mutex_init(&db->ck_mu, NULL) != 0) {
        pthread_cond_destroy(&db->ck_cv);
        return 0;
    }
    if (pthread_mutex_init(&db->ck_run, NULL) != 0) {
        pthread_mutex_destroy(&db->ck_mu);
        pthread_cond_destroy(&db->ck_cv);
        return 0;
    }
    db->ck_init = 1;
    return 1;
}

/* The schema version stored in the file: 0 for a database without a schema. */
static int read_version(sqlite3 *c, ErlNifSInt64 *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                   " AND name = 'schema_version'", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    int has = rc == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return rc;
    *out = 0;
    if (!has)
        return SQLITE_OK;
    rc = sqlite3_prepare_v2(c, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Opens the writer and checkpoint connections, checks and creates the schema and
 * prepares the writer's statements. Returns 1, or 0 with *err = {error, Reason}. */
static int db_open_conns(ErlNifEnv *env, db_res *db, ERL_NIF_TERM *err)
{
    const store_atoms *a = &db->atoms;
    ErlNifSInt64 found = 0;
    char mode[16] = "";
    sqlite3_stmt *st;
    /* With synchronous=FULL every commit syncs the WAL before it is published, so
     * the writer may gather a commit's WAL writes until then (store_vfs.c). */
    int rc = SQLITE_OK;
    if (db->sync_full)
        rc = store_vfs_register(&db->vfs);
    if (rc == SQLITE_OK)
        rc = conn_open(db, &db->w, 1, db->vfs.registered ? db->vfs.name : NULL);
    if (rc == SQLITE_OK)
        rc = read_version(db->w, &found);
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (found > SCHEMA_VERSION)
        goto too_new;
    if (found == 0) {
        /* A new file (no schema yet): the page size must be set before the first
         * write and cannot change later in WAL mode. Small pages cut what a commit
         * of scattered single-row updates writes (bench/RESULTS.md, "page size"). */
        char pragma[40];
        snprintf(pragma, sizeof pragma, "PRAGMA page_size=%d", db->page_size);
        rc = exec_sql(db->w, pragma);
        if (rc != SQLITE_OK)
            goto sql_fail;
    }
    rc = sqlite3_prepare_v2(db->w, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(st, 0));
    rc = sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (strcmp(mode, "wal") != 0) {
        *err = enif_make_tuple2(env, a->a_error,
                                store_sqlite_reason(env, a, SQLITE_ERROR, "cannot enable WAL mode"));
        return 0;
    }
    /* The writer's page cache: 16 MB. SQLite's B-tree balance renumbers pages through
     * a temporary page number past the 1 GiB mark, and the next COMMIT then walks the
     * whole cache's hash table to drop pages past the end of the file: ~10% of the
     * writer's CPU during a timer storm at 16 MB, less with a smaller cache, but a 4 MB
     * cache made bulk run creation 17-25% dearer (bench/RESULTS.md, fifth pass). */
    rc = exec_sql(db->w, "PRAGMA journal_size_limit=" WAL_SIZE_LIMIT ";"
                         "PRAGMA cache_size=-16000; PRAGMA temp_store=MEMORY;"
                         "PRAGMA wal_autocheckpoint=0");
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (found < SCHEMA_VERSION) {
        rc = exec_sql(db->w, "BEGIN IMMEDIATE");
        if (rc == SQLITE_OK)
            rc = read_version(db->w, &found);
        if (rc == SQLITE_OK && found > SCHEMA_VERSION) {
            (void)exec_sql(db->w, "ROLLBACK");
            goto too_new;
        }
        if (rc == SQLITE_OK)
            rc = exec_sql(db->w, found == 0 ? SCHEMA_DDL : found == 1 ? MIGRATE_V1_V2 : MIGRATE_V2_V3);
        if (rc == SQLITE_OK && found == 1)
            rc = exec_sql(db->w, MIGRATE_V2_V3);
        if (rc == SQLITE_OK)
            rc = exec_sql(db->w, "COMMIT");
        if (rc != SQLITE_OK) {
            *err = store_conn_error(env, a, db->w, rc);
            if (!sqlite3_get_autocommit(db->w))
                (void)exec_sql(db->w, "ROLLBACK");
            return 0;
        }
    }
    rc = store_writer_prepare(db);
    if (rc != SQLITE_OK)
        goto sql_fail;
    sqlite3_wal_hook(db->w, wal_hook, db); /* after the pragma: it would replace the hook */
    rc = conn_open(db, &db->ck, 0, NULL);
    if (rc == SQLITE_OK)
        rc = exec_sql(db->ck, "PRAGMA wal_autocheckpoint=0");
    if (rc != SQLITE_OK) {
        *err = store_conn_error(env, a, db->ck, rc);
        return 0;
    }
    return 1;
sql_fail:
    *err = store_conn_error(env, a, db->w, rc);
    return 0;
too_new:
    *err = enif_make_tuple2(env, a->a_error,
                            enif_make_tuple3(env, a->a_schema_too_new, enif_make_int64(env, found),
                                             enif_make_int(env, SCHEMA_VERSION)));
    return 0;
}

db_res *store_get_db(ErlNifEnv *env, ERL_NIF_TERM t)
{
    db_res *db;
    if (!enif_get_resource(env, t, aion_priv_of(env)->store->db_type, (void **)&db))
        return NULL;
    return db;
}

/* store_open(Path :: binary(), Sync :: full | normal, BusyTimeoutMs, CheckpointIntervalMs,
 *            PageSize :: 512..65536, a power of two; used only for a new file) */
ERL_NIF_TERM aion_store_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_store_priv *priv = aion_priv_of(env)->store;
    const store_atoms *a = &priv->atoms;
    ErlNifBinary path;
    int sync_full, busy, ckpt, page;
    if (!enif_inspect_binary(env, argv[0], &path) || path.size == 0 ||
        memchr(path.data, 0, path.size) != NULL)
        return enif_make_badarg(env);
    if (enif_is_identical(argv[1], a->a_full))
        sync_full = 1;
    else if (enif_is_identical(argv[1], a->a_normal))
        sync_full = 0;
    else
        return enif_make_badarg(env);
    if (!enif_get_int(env, argv[2], &busy) || busy < 0 || !enif_get_int(env, argv[3], &ckpt) ||
        ckpt < 1 || !enif_get_int(env, argv[4], &page) || page < 512 || page > 65536 ||
        (page & (page - 1)) != 0)
        return enif_make_badarg(env);

    db_res *db = enif_alloc_resource(priv->db_type, sizeof *db);
    if (db == NULL)
        return enif_raise_exception(env, a->a_enomem);
    memset(db, 0, sizeof *db);
    atomic_init(&db->urgent, 0);
    db->atoms = *a;
    db->sync_full = sync_full;
    db->busy_ms = busy;
    db->ckpt_ms = ckpt;
    db->page_size = page;
    db->state = ST_CLOSED; /* until the threads run: the destructor then only frees */
    db->path = enif_alloc(path.size + 1);
    if (db->path == NULL || !sync_init(db)) {
        enif_release_resource(db);
        return enif_raise_exception(env, a->a_enomem);
    }
    memcpy(db->path, path.data, path.size);
    db->path[path.size] = '\0';

    ERL_NIF_TERM err;
    if (!db_open_conns(env, db, &err)) {
        enif_release_resource(db);
        return err;
    }
    db->state = ST_OPEN; /* from here the destructor stops whatever thread started */
    if (enif_thread_create("aion_store_reply", &db->reply_tid, store_reply_main, db, NULL) != 0) {
        enif_release_resource(db);
        return enif_raise_exception(env, a->a_enomem);
    }
    db->reply_started = 1;
    if (enif_thread_create("aion_store_writer", &db->writer_tid, store_writer_main, db, NULL) != 0) {
        enif_release_resource(db);
        return enif_raise_exception(env, a->a_enomem);
    }
    db->writer_started = 1;
    if (enif_thread_create("aion_store_ckpt", &db->ck_tid, ckpt_main, db, NULL) != 0) {
        enif_release_resource(db); /* the destructor stops the writer */
        return enif_raise_exception(env, a->a_enomem);
    }
    db->ck_started = 1;
    ERL_NIF_TERM t = enif_make_resource(env, db);
    enif_release_resource(db);
    return aion_ok(env, t);
}

/* store_close(Db) -> ok. Drains the writer, joins the threads, waits for running
 * reads, closes the connections. A second close waits for the first to finish. */
ERL_NIF_TERM aion_store_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(db->mu);
    if (db->state == ST_OPEN) {
        db->state = ST_CLOSING;
        enif_cond_broadcast(db->q_cv);
        enif_mutex_unlock(db->mu);
        db_stop_threads(db);
        enif_mutex_lock(db->mu);
        while (db->active > 0)
            enif_cond_wait(db->idle_cv, db->mu);
        /* Still ST_CLOSING: every call is refused, so the connections are ours; close
         * them (the last one checkpoints) without holding the lock appenders take. */
        enif_mutex_unlock(db->mu);
        db_close_conns(db);
        enif_mutex_lock(db->mu);
        db->state = ST_CLOSED;
        enif_cond_broadcast(db->idle_cv);
    } else {
        while (db->state != ST_CLOSED)
            enif_cond_wait(db->idle_cv, db->mu);
    }
    enif_mutex_unlock(db->mu);
    return db->atoms.a_ok;
}

/* store_checkpoint(Db) -> ok | {error, Reason}: a PASSIVE checkpoint (never blocks
 * the writer). */
ERL_NIF_TERM aion_store_checkpoint(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = store_get_db(env, argv[0]);
    ERL_NIF_TERM out;
    if (db == NULL)
        return enif_make_badarg(env);
    if (!store_read_enter(env, db, NULL, &out))
        return out;
    int code = SQLITE_OK;
    char msg[256];
    int rc = run_checkpoint(db, &code, msg, sizeof msg, NULL, NULL);
    out = rc == SQLITE_OK ? db->atoms.a_ok
                          : enif_make_tuple2(env, db->atoms.a_error,
                                             store_sqlite_reason(env, &db->atoms, code, msg));
    store_read_leave(db, NULL);
    return out;
}

/* ------------------------------------------------------------------- load/unload */

int aion_store_load(ErlNifEnv *env, struct aion_store_priv **out)
{
    struct aion_store_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
#define X(n) p->atoms.a_##n = enif_make_atom(env, #n);
    STORE_ATOMS(X)
#undef X
    p->db_type = enif_open_resource_type(env, NULL, "aion_store_db", db_dtor,
                                         ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (p->db_type == NULL) {
        enif_free(p);
        return 1;
    }
    *out = p;
    return 0;
}

void aion_store_unload(struct aion_store_priv *priv)
{
    enif_free(priv);
}
