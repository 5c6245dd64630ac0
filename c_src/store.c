/* store.c: the SQLite event store behind aion_store_sqlite.
 *
 * One open database is one resource (db_res). It owns:
 *   - a writer connection used only by its writer thread. store_append parses and
 *     copies a request on the caller's (normal) scheduler, queues it and returns; the
 *     writer drains everything queued into ONE transaction (group commit), each request
 *     inside its own SAVEPOINT so a failing request is rolled back alone, and answers
 *     every caller with enif_send only after COMMIT returned (record, then acknowledge);
 *   - a pool of reader connections used by the read NIFs on dirty IO schedulers (WAL:
 *     readers never block the writer, nor the writer them);
 *   - a checkpoint connection and thread: the writer's auto-checkpoint is replaced by a
 *     WAL hook that only counts; the checkpoint thread runs wal_checkpoint(PASSIVE) every
 *     checkpoint_interval ms (when something was committed) or when the WAL grew past
 *     CKPT_WAL_PAGES, so an append never pays for a checkpoint.
 * Close drains the queue, joins both threads, waits for running reads and closes every
 * connection; the destructor does the same for a handle that was never closed.
 * Nothing here is a mutable global: atoms and the resource type live in the module's
 * private data, and a copy of the atoms lives in each resource (the threads have no env). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sqlite3.h>

#include "store.h"

#define SCHEMA_VERSION  1
#define MAX_BATCH       4096 /* requests per group-commit transaction */
#define READER_POOL_MAX 8    /* idle reader connections kept per database */
#define CKPT_WAL_PAGES  4000 /* WAL size (pages) that wakes the checkpoint thread */
#define REQ_INLINE      1024 /* bytes of a request's parse arena held inline */
#define WAL_SIZE_LIMIT  "67108864" /* journal_size_limit: WAL truncated to this on reset */

/* ------------------------------------------------------------------------- atoms */

#define STORE_ATOMS(X)                                                                   \
    X(ok) X(error) X(closed) X(null) X(true) X(false) X(all) X(infinity) X(full)         \
    X(normal) X(enomem) X(not_found) X(already_exists) X(already_started)                \
    X(sequence_conflict) X(timer_gone) X(task_gone) X(sqlite) X(schema_too_new)          \
    X(allow_duplicate) X(allow_duplicate_failed_only) X(reject_duplicate) X(run_id)      \
    X(events) X(expected_seq) X(create) X(workflow_id) X(type) X(status) X(started_at)   \
    X(parent) X(continued_from) X(search_attributes) X(data) X(id_reuse_policy) X(set)   \
    X(closed_at) X(stuck_reason) X(allow_closed) X(timers_put) X(timers_take)            \
    X(timers_del) X(tasks_put) X(tasks_take) X(tasks_del) X(clear_rows) X(next_seq)      \
    X(started_after) X(started_before) X(closed_after) X(closed_before) X(limit)         \
    X(cursor)

typedef struct {
#define X(n) ERL_NIF_TERM a_##n;
    STORE_ATOMS(X)
#undef X
} store_atoms;

struct aion_store_priv {
    ErlNifResourceType *db_type;
    store_atoms atoms;
};

/* ------------------------------------------------------------------ SQL and schema */

static const char SCHEMA_DDL[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs ("
    " run_id TEXT NOT NULL PRIMARY KEY, workflow_id TEXT NOT NULL, type TEXT NOT NULL,"
    " status TEXT NOT NULL, started_at INTEGER NOT NULL, closed_at INTEGER, parent TEXT,"
    " continued_from TEXT, search_attributes TEXT, stuck_reason TEXT, data TEXT,"
    " next_seq INTEGER NOT NULL DEFAULT 1, create_seq INTEGER NOT NULL UNIQUE);"
    "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow_id, create_seq);"
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, started_at, run_id);"
    "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at, run_id);"
    "CREATE TABLE IF NOT EXISTS events (run_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " type TEXT NOT NULL, recorded_at INTEGER NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (run_id, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS timers (run_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
    " fire_at INTEGER NOT NULL, PRIMARY KEY (run_id, timer_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS timers_fire_at ON timers (fire_at);"
    "CREATE TABLE IF NOT EXISTS activity_tasks (run_id TEXT NOT NULL,"
    " activity_id TEXT NOT NULL, attempt INTEGER NOT NULL, task_queue TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (run_id, activity_id)) WITHOUT ROWID;"
    "INSERT INTO schema_version (version) SELECT 1"
    " WHERE NOT EXISTS (SELECT 1 FROM schema_version);";

#define TERMINAL_SQL "('completed','failed','cancelled','terminated','timed_out','continued_as_new')"
#define RUN_COLS                                                                          \
    "run_id, workflow_id, type, status, started_at, closed_at, parent, continued_from,"  \
    " search_attributes, stuck_reason, data, next_seq"
#define RUN_NCOLS 12

enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO, W_RUN_GET,
    W_WF_OPEN, W_WF_LATEST, W_RUN_INSERT, W_EV_INSERT, W_RUN_UPDATE, W_TIMER_PUT,
    W_TIMER_DEL, W_TIMERS_CLEAR, W_TASK_PUT, W_TASK_DEL, W_TASKS_CLEAR, W_COUNT
};

static const char *const W_SQL[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT req",
    [W_RELEASE] = "RELEASE req",
    [W_ROLLBACK_TO] = "ROLLBACK TO req",
    [W_RUN_GET] = "SELECT status, next_seq FROM runs WHERE run_id = ?1",
    [W_WF_OPEN] = "SELECT run_id FROM runs WHERE workflow_id = ?1 AND status NOT IN "
                  TERMINAL_SQL " ORDER BY create_seq DESC LIMIT 1",
    [W_WF_LATEST] = "SELECT run_id, status FROM runs WHERE workflow_id = ?1"
                    " ORDER BY create_seq DESC LIMIT 1",
    [W_RUN_INSERT] = "INSERT INTO runs (run_id, workflow_id, type, status, started_at, parent,"
                     " continued_from, search_attributes, data, next_seq, create_seq)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1,"
                     " (SELECT coalesce(max(create_seq), 0) + 1 FROM runs))",
    [W_EV_INSERT] = "INSERT INTO events (run_id, seq, type, recorded_at, data)"
                    " VALUES (?1, ?2, ?3, ?4, ?5)",
    [W_RUN_UPDATE] = "UPDATE runs SET next_seq = ?2,"
                     " status = CASE WHEN ?3 THEN ?4 ELSE status END,"
                     " closed_at = CASE WHEN ?5 THEN ?6 ELSE closed_at END,"
                     " search_attributes = CASE WHEN ?7 THEN ?8 ELSE search_attributes END,"
                     " stuck_reason = CASE WHEN ?9 THEN ?10 ELSE stuck_reason END,"
                     " data = CASE WHEN ?11 THEN ?12 ELSE data END WHERE run_id = ?1",
    [W_TIMER_PUT] = "INSERT INTO timers (run_id, timer_id, fire_at) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (run_id, timer_id) DO UPDATE SET fire_at = excluded.fire_at",
    [W_TIMER_DEL] = "DELETE FROM timers WHERE run_id = ?1 AND timer_id = ?2",
    [W_TIMERS_CLEAR] = "DELETE FROM timers WHERE run_id = ?1",
    [W_TASK_PUT] = "INSERT INTO activity_tasks (run_id, activity_id, attempt, task_queue, data)"
                   " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id, activity_id) DO UPDATE"
                   " SET attempt = excluded.attempt, task_queue = excluded.task_queue,"
                   " data = excluded.data",
    [W_TASK_DEL] = "DELETE FROM activity_tasks WHERE run_id = ?1 AND activity_id = ?2",
    [W_TASKS_CLEAR] = "DELETE FROM activity_tasks WHERE run_id = ?1",
};

enum { R_HISTORY, R_GET_RUN, R_CURRENT_RUN, R_DUE_TIMERS, R_TASKS_RUN, R_TASKS_ALL, R_COUNT };

static const char *const R_SQL[R_COUNT] = {
    [R_HISTORY] = "SELECT seq, type, recorded_at, data FROM events"
                  " WHERE run_id = ?1 AND seq >= ?2 ORDER BY seq",
    [R_GET_RUN] = "SELECT " RUN_COLS " FROM runs WHERE run_id = ?1",
    [R_CURRENT_RUN] = "SELECT " RUN_COLS " FROM runs WHERE workflow_id = ?1"
                      " ORDER BY create_seq DESC LIMIT 1",
    [R_DUE_TIMERS] = "SELECT run_id, timer_id, fire_at FROM timers WHERE fire_at <= ?1"
                     " ORDER BY fire_at, run_id, timer_id LIMIT ?2",
    [R_TASKS_RUN] = "SELECT run_id, activity_id, attempt, task_queue, data FROM activity_tasks"
                    " WHERE run_id = ?1 ORDER BY activity_id",
    [R_TASKS_ALL] = "SELECT run_id, activity_id, attempt, task_queue, data FROM activity_tasks"
                    " ORDER BY run_id, activity_id",
};

/* ------------------------------------------------------------------ parsed requests */

typedef struct {
    const unsigned char *p;
    size_t n;
} bytes_t;

typedef enum { F_ABSENT = 0, F_NULL, F_VALUE } fstate;

typedef struct {
    fstate st;
    bytes_t v;
} opt_bytes;

typedef struct {
    bytes_t type;
    ErlNifSInt64 at;
    bytes_t data;
} ev_in;

typedef struct {
    bytes_t id;
    ErlNifSInt64 fire_at;
} timer_in;

typedef struct {
    bytes_t id;
    ErlNifSInt64 attempt;
    bytes_t queue;
    bytes_t data;
} task_in;

enum { POLICY_ALLOW = 0, POLICY_FAILED_ONLY, POLICY_REJECT };

typedef struct {
    bytes_t run_id;
    ev_in *ev;
    unsigned n_ev;
    int has_expected;
    ErlNifSInt64 expected;
    int has_create;
    bytes_t c_wid, c_type, c_status;
    ErlNifSInt64 c_started;
    opt_bytes c_parent, c_cont, c_sa, c_data;
    int c_policy;
    opt_bytes s_status, s_sa, s_stuck, s_data;
    fstate s_closed_st;
    ErlNifSInt64 s_closed;
    int has_set, allow_closed, clear_rows;
    timer_in *tput;
    unsigned n_tput;
    bytes_t *ttake, *tdel, *ktake, *kdel;
    unsigned n_ttake, n_tdel, n_ktake, n_kdel;
    task_in *kput;
    unsigned n_kput;
    ErlNifSInt64 first_seq; /* result: the seq of the op's first event */
} op_in;

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    uint64_t mem[]; /* 8-byte aligned */
} chunk;

typedef struct req {
    struct req *next;
    ErlNifEnv *env; /* holds the copied ops, the tag and the reply */
    ErlNifPid pid;
    ERL_NIF_TERM tag;
    ERL_NIF_TERM reason; /* the error reason when !ok */
    int ok;
    op_in *ops;
    unsigned n_ops;
    chunk *extra;
    size_t used;
    uint64_t inl[REQ_INLINE / 8];
} req_t;

static void *req_alloc(req_t *r, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (r->used + n <= sizeof r->inl) {
        void *p = (unsigned char *)r->inl + r->used;
        r->used += n;
        return p;
    }
    if (r->extra == NULL || r->extra->cap - r->extra->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        chunk *c = enif_alloc(sizeof *c + cap);
        if (c == NULL)
            return NULL;
        c->next = r->extra;
        c->cap = cap;
        c->used = 0;
        r->extra = c;
    }
    void *p = (unsigned char *)r->extra->mem + r->extra->used;
    r->extra->used += n;
    return p;
}

static void req_free(req_t *r)
{
    while (r->extra) {
        chunk *c = r->extra;
        r->extra = c->next;
        enif_free(c);
    }
    if (r->env)
        enif_free_env(r->env);
    enif_free(r);
}

/* ------------------------------------------------------------------------ resource */

typedef enum { ST_OPEN = 0, ST_CLOSING, ST_CLOSED } db_state;

typedef struct reader {
    struct reader *next;
    sqlite3 *c;
    sqlite3_stmt *st[R_COUNT];
} reader;

typedef struct {
    store_atoms atoms; /* a copy: the threads have no env to reach the priv data */
    char *path;
    int sync_full, busy_ms, ckpt_ms;

    ErlNifMutex *mu;      /* guards state, queue, active, pool */
    ErlNifCond *q_cv;     /* the writer waits for requests or close */
    ErlNifCond *idle_cv;  /* close waits for reads to end; a 2nd close for the 1st */
    db_state state;
    req_t *q_head, *q_tail;
    unsigned q_len;
    unsigned active; /* reads and checkpoints in progress */
    reader *pool;
    unsigned pool_n;

    sqlite3 *w; /* writer connection: only the writer thread uses it once open */
    sqlite3_stmt *wst[W_COUNT];
    int writer_started;
    ErlNifTid writer_tid;
    int err_code; /* the writer's last SQLite failure */
    char err_msg[256];

    sqlite3 *ck; /* checkpoint connection, guarded by ck_run */
    int ck_init;
    pthread_mutex_t ck_run;
    pthread_mutex_t ck_mu; /* guards the ck_ fields below */
    pthread_cond_t ck_cv;
    int ck_stop, ck_pending;
    uint64_t ck_commits, ck_seen;
    int ck_started;
    ErlNifTid ck_tid;
} db_res;

/* ------------------------------------------------------------------ small helpers */

static ERL_NIF_TERM make_bin(ErlNifEnv *env, const void *p, size_t n)
{
    ERL_NIF_TERM t;
    unsigned char *d = enif_make_new_binary(env, n, &t);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return t;
}

static ERL_NIF_TERM sqlite_reason(ErlNifEnv *env, const store_atoms *a, int code, const char *msg)
{
    return enif_make_tuple3(env, a->a_sqlite, enif_make_int(env, code),
                            make_bin(env, msg, strlen(msg)));
}

static ERL_NIF_TERM conn_error(ErlNifEnv *env, const store_atoms *a, sqlite3 *c, int rc)
{
    int code = c ? sqlite3_extended_errcode(c) : rc;
    const char *msg = c ? sqlite3_errmsg(c) : sqlite3_errstr(rc);
    if (code == SQLITE_OK)
        code = rc;
    return enif_make_tuple2(env, a->a_error, sqlite_reason(env, a, code, msg));
}

static int bind_bytes(sqlite3_stmt *st, int i, bytes_t b)
{
    return sqlite3_bind_text64(st, i, b.n ? (const char *)b.p : "", b.n, SQLITE_STATIC,
                               SQLITE_UTF8);
}

static int bind_opt(sqlite3_stmt *st, int i, const opt_bytes *o)
{
    return o->st == F_VALUE ? bind_bytes(st, i, o->v) : sqlite3_bind_null(st, i);
}

static int bytes_eq(const void *p, int n, const char *s)
{
    size_t l = strlen(s);
    return n >= 0 && (size_t)n == l && (l == 0 || memcmp(p, s, l) == 0);
}

static int status_terminal(const void *p, int n)
{
    return bytes_eq(p, n, "completed") || bytes_eq(p, n, "failed") ||
           bytes_eq(p, n, "cancelled") || bytes_eq(p, n, "terminated") ||
           bytes_eq(p, n, "timed_out") || bytes_eq(p, n, "continued_as_new");
}

static int status_failed(const void *p, int n)
{
    return bytes_eq(p, n, "failed") || bytes_eq(p, n, "cancelled") ||
           bytes_eq(p, n, "terminated") || bytes_eq(p, n, "timed_out");
}

static ERL_NIF_TERM col_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st, int i)
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
        return make_bin(env, p, n > 0 ? (size_t)n : 0);
    }
    }
}

static ERL_NIF_TERM run_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st)
{
    ERL_NIF_TERM keys[RUN_NCOLS] = {a->a_run_id, a->a_workflow_id, a->a_type, a->a_status,
                                    a->a_started_at, a->a_closed_at, a->a_parent,
                                    a->a_continued_from, a->a_search_attributes,
                                    a->a_stuck_reason, a->a_data, a->a_next_seq};
    ERL_NIF_TERM vals[RUN_NCOLS], map;
    for (int i = 0; i < RUN_NCOLS; i++)
        vals[i] = col_term(env, a, st, i);
    if (!enif_make_map_from_arrays(env, keys, vals, RUN_NCOLS, &map))
        return a->a_null; /* unreachable: the keys are distinct */
    return map;
}

static int exec_sql(sqlite3 *c, const char *sql)
{
    return sqlite3_exec(c, sql, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------------ parsing */

typedef struct {
    ErlNifEnv *env;
    const store_atoms *a;
    req_t *r;
    int oom;
} pctx;

static int p_bin(pctx *c, ERL_NIF_TERM t, bytes_t *out)
{
    ErlNifBinary b;
    if (!enif_inspect_binary(c->env, t, &b))
        return 0;
    out->p = b.data;
    out->n = b.size;
    return 1;
}

static int p_iodata(pctx *c, ERL_NIF_TERM t, bytes_t *out)
{
    ErlNifBinary b;
    if (!enif_inspect_iolist_as_binary(c->env, t, &b))
        return 0;
    out->p = b.data;
    out->n = b.size;
    return 1;
}

/* binary (or iodata) | null */
static int p_opt(pctx *c, ERL_NIF_TERM t, opt_bytes *o, int iodata)
{
    if (enif_is_identical(t, c->a->a_null)) {
        o->st = F_NULL;
        return 1;
    }
    o->st = F_VALUE;
    return iodata ? p_iodata(c, t, &o->v) : p_bin(c, t, &o->v);
}

static int p_bool(pctx *c, ERL_NIF_TERM t, int *out)
{
    if (enif_is_identical(t, c->a->a_true))
        *out = 1;
    else if (enif_is_identical(t, c->a->a_false))
        *out = 0;
    else
        return 0;
    return 1;
}

/* Validates a proper list and allocates an array of its length. */
static void *p_array(pctx *c, ERL_NIF_TERM list, size_t elem, unsigned *n)
{
    if (!enif_get_list_length(c->env, list, n))
        return NULL;
    if (*n == 0)
        return c->r->inl; /* any non-NULL address: an empty array is never read */
    void *p = req_alloc(c->r, (size_t)*n * elem);
    if (p == NULL)
        c->oom = 1;
    return p;
}

static int p_ids(pctx *c, ERL_NIF_TERM list, bytes_t **out, unsigned *n)
{
    ERL_NIF_TERM h;
    bytes_t *arr = p_array(c, list, sizeof *arr, n);
    if (arr == NULL)
        return 0;
    for (unsigned i = 0; i < *n; i++) {
        if (!enif_get_list_cell(c->env, list, &h, &list) || !p_bin(c, h, &arr[i]))
            return 0;
    }
    *out = arr;
    return 1;
}

static int p_events(pctx *c, ERL_NIF_TERM list, op_in *op)
{
    ERL_NIF_TERM h;
    const ERL_NIF_TERM *el;
    int ar;
    op->ev = p_array(c, list, sizeof *op->ev, &op->n_ev);
    if (op->ev == NULL)
        return 0;
    for (unsigned i = 0; i < op->n_ev; i++) {
        ev_in *e = &op->ev[i];
        if (!enif_get_list_cell(c->env, list, &h, &list) || !enif_get_tuple(c->env, h, &ar, &el) ||
            ar != 3 || !p_bin(c, el[0], &e->type) || !enif_get_int64(c->env, el[1], &e->at) ||
            !p_iodata(c, el[2], &e->data))
            return 0;
    }
    return 1;
}

static int p_timers(pctx *c, ERL_NIF_TERM list, op_in *op)
{
    ERL_NIF_TERM h;
    const ERL_NIF_TERM *el;
    int ar;
    op->tput = p_array(c, list, sizeof *op->tput, &op->n_tput);
    if (op->tput == NULL)
        return 0;
    for (unsigned i = 0; i < op->n_tput; i++) {
        if (!enif_get_list_cell(c->env, list, &h, &list) || !enif_get_tuple(c->env, h, &ar, &el) ||
            ar != 2 || !p_bin(c, el[0], &op->tput[i].id) ||
            !enif_get_int64(c->env, el[1], &op->tput[i].fire_at))
            return 0;
    }
    return 1;
}

static int p_tasks(pctx *c, ERL_NIF_TERM list, op_in *op)
{
    ERL_NIF_TERM h;
    const ERL_NIF_TERM *el;
    int ar;
    op->kput = p_array(c, list, sizeof *op->kput, &op->n_kput);
    if (op->kput == NULL)
        return 0;
    for (unsigned i = 0; i < op->n_kput; i++) {
        task_in *k = &op->kput[i];
        if (!enif_get_list_cell(c->env, list, &h, &list) || !enif_get_tuple(c->env, h, &ar, &el) ||
            ar != 4 || !p_bin(c, el[0], &k->id) || !enif_get_int64(c->env, el[1], &k->attempt) ||
            !p_bin(c, el[2], &k->queue) || !p_iodata(c, el[3], &k->data))
            return 0;
    }
    return 1;
}

/* Looks up an optional key; counts it in *known when present. */
static int opt_key(pctx *c, ERL_NIF_TERM map, ERL_NIF_TERM key, ERL_NIF_TERM *v, size_t *known)
{
    if (!enif_get_map_value(c->env, map, key, v))
        return 0;
    (*known)++;
    return 1;
}

static int p_create(pctx *c, ERL_NIF_TERM m, op_in *op)
{
    const store_atoms *a = c->a;
    size_t size, known = 0;
    ERL_NIF_TERM v;
    if (!enif_get_map_size(c->env, m, &size))
        return 0;
    if (!opt_key(c, m, a->a_workflow_id, &v, &known) || !p_bin(c, v, &op->c_wid) ||
        !opt_key(c, m, a->a_type, &v, &known) || !p_bin(c, v, &op->c_type) ||
        !opt_key(c, m, a->a_status, &v, &known) || !p_bin(c, v, &op->c_status) ||
        !opt_key(c, m, a->a_started_at, &v, &known) || !enif_get_int64(c->env, v, &op->c_started))
        return 0;
    if (opt_key(c, m, a->a_parent, &v, &known) && !p_opt(c, v, &op->c_parent, 0))
        return 0;
    if (opt_key(c, m, a->a_continued_from, &v, &known) && !p_opt(c, v, &op->c_cont, 0))
        return 0;
    if (opt_key(c, m, a->a_search_attributes, &v, &known) && !p_opt(c, v, &op->c_sa, 1))
        return 0;
    if (opt_key(c, m, a->a_data, &v, &known) && !p_opt(c, v, &op->c_data, 1))
        return 0;
    if (opt_key(c, m, a->a_id_reuse_policy, &v, &known)) {
        if (enif_is_identical(v, a->a_allow_duplicate))
            op->c_policy = POLICY_ALLOW;
        else if (enif_is_identical(v, a->a_allow_duplicate_failed_only))
            op->c_policy = POLICY_FAILED_ONLY;
        else if (enif_is_identical(v, a->a_reject_duplicate))
            op->c_policy = POLICY_REJECT;
        else
            return 0;
    }
    op->has_create = 1;
    return known == size;
}

static int p_set(pctx *c, ERL_NIF_TERM m, op_in *op)
{
    const store_atoms *a = c->a;
    size_t size, known = 0;
    ERL_NIF_TERM v;
    if (!enif_get_map_size(c->env, m, &size))
        return 0;
    if (opt_key(c, m, a->a_status, &v, &known)) {
        op->s_status.st = F_VALUE;
        if (!p_bin(c, v, &op->s_status.v))
            return 0;
    }
    if (opt_key(c, m, a->a_closed_at, &v, &known)) {
        if (enif_is_identical(v, a->a_null))
            op->s_closed_st = F_NULL;
        else if (enif_get_int64(c->env, v, &op->s_closed))
            op->s_closed_st = F_VALUE;
        else
            return 0;
    }
    if (opt_key(c, m, a->a_search_attributes, &v, &known) && !p_opt(c, v, &op->s_sa, 1))
        return 0;
    if (opt_key(c, m, a->a_stuck_reason, &v, &known) && !p_opt(c, v, &op->s_stuck, 1))
        return 0;
    if (opt_key(c, m, a->a_data, &v, &known) && !p_opt(c, v, &op->s_data, 1))
        return 0;
    op->has_set = 1;
    return known == size;
}

static int p_op(pctx *c, ERL_NIF_TERM m, op_in *op)
{
    const store_atoms *a = c->a;
    size_t size, known = 0;
    ERL_NIF_TERM v;
    memset(op, 0, sizeof *op);
    if (!enif_get_map_size(c->env, m, &size))
        return 0;
    if (!opt_key(c, m, a->a_run_id, &v, &known) || !p_bin(c, v, &op->run_id))
        return 0;
    if (opt_key(c, m, a->a_events, &v, &known) && !p_events(c, v, op))
        return 0;
    if (opt_key(c, m, a->a_expected_seq, &v, &known)) {
        if (!enif_get_int64(c->env, v, &op->expected) || op->expected < 1)
            return 0;
        op->has_expected = 1;
    }
    if (opt_key(c, m, a->a_create, &v, &known) && !p_create(c, v, op))
        return 0;
    if (opt_key(c, m, a->a_set, &v, &known) && !p_set(c, v, op))
        return 0;
    if (opt_key(c, m, a->a_allow_closed, &v, &known) && !p_bool(c, v, &op->allow_closed))
        return 0;
    if (opt_key(c, m, a->a_clear_rows, &v, &known) && !p_bool(c, v, &op->clear_rows))
        return 0;
    if (opt_key(c, m, a->a_timers_put, &v, &known) && !p_timers(c, v, op))
        return 0;
    if (opt_key(c, m, a->a_timers_take, &v, &known) && !p_ids(c, v, &op->ttake, &op->n_ttake))
        return 0;
    if (opt_key(c, m, a->a_timers_del, &v, &known) && !p_ids(c, v, &op->tdel, &op->n_tdel))
        return 0;
    if (opt_key(c, m, a->a_tasks_put, &v, &known) && !p_tasks(c, v, op))
        return 0;
    if (opt_key(c, m, a->a_tasks_take, &v, &known) && !p_ids(c, v, &op->ktake, &op->n_ktake))
        return 0;
    if (opt_key(c, m, a->a_tasks_del, &v, &known) && !p_ids(c, v, &op->kdel, &op->n_kdel))
        return 0;
    return known == size; /* an unknown key is a badarg */
}

static int p_ops(pctx *c, ERL_NIF_TERM list)
{
    ERL_NIF_TERM h;
    req_t *r = c->r;
    r->ops = p_array(c, list, sizeof *r->ops, &r->n_ops);
    if (r->ops == NULL)
        return 0;
    for (unsigned i = 0; i < r->n_ops; i++) {
        if (!enif_get_list_cell(c->env, list, &h, &list) || !p_op(c, h, &r->ops[i]))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------- the writer */

static void record_err(db_res *db, int rc)
{
    int code = sqlite3_extended_errcode(db->w);
    db->err_code = code != SQLITE_OK ? code : rc;
    const char *m = code != SQLITE_OK ? sqlite3_errmsg(db->w) : sqlite3_errstr(rc);
    size_t n = strlen(m);
    if (n >= sizeof db->err_msg)
        n = sizeof db->err_msg - 1;
    memcpy(db->err_msg, m, n);
    db->err_msg[n] = '\0';
}

static ERL_NIF_TERM last_err_reason(db_res *db, ErlNifEnv *env)
{
    return sqlite_reason(env, &db->atoms, db->err_code, db->err_msg);
}

/* Fails request r with the writer's current SQLite error; resets st. */
static int fail_sql(db_res *db, req_t *r, sqlite3_stmt *st, int rc)
{
    record_err(db, rc);
    if (st)
        sqlite3_reset(st);
    r->reason = last_err_reason(db, r->env);
    return -1;
}

static int fail_reason(req_t *r, ERL_NIF_TERM reason)
{
    r->reason = reason;
    return -1;
}

/* Steps a statement that returns no row; resets it. */
static int step_done(db_res *db, req_t *r, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return fail_sql(db, r, st, rc);
    sqlite3_reset(st);
    return 0;
}

#define BIND(expr)                                                                        \
    do {                                                                                  \
        int brc_ = (expr);                                                                \
        if (brc_ != SQLITE_OK)                                                            \
            return fail_sql(db, r, st, brc_);                                             \
    } while (0)

/* Checks the workflow id's runs against the id reuse policy and inserts the run row. */
static int create_run(db_res *db, req_t *r, const op_in *op)
{
    const store_atoms *a = &db->atoms;
    sqlite3_stmt *st = db->wst[W_WF_OPEN];
    BIND(bind_bytes(st, 1, op->c_wid));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ERL_NIF_TERM id = col_term(r->env, a, st, 0);
        sqlite3_reset(st);
        return fail_reason(r, enif_make_tuple2(r->env, a->a_already_started, id));
    }
    if (rc != SQLITE_DONE)
        return fail_sql(db, r, st, rc);
    sqlite3_reset(st);
    if (op->c_policy != POLICY_ALLOW) {
        st = db->wst[W_WF_LATEST];
        BIND(bind_bytes(st, 1, op->c_wid));
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int refuse = op->c_policy == POLICY_REJECT ||
                         !status_failed(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1));
            ERL_NIF_TERM id = col_term(r->env, a, st, 0);
            sqlite3_reset(st);
            if (refuse)
                return fail_reason(r, enif_make_tuple2(r->env, a->a_already_started, id));
        } else if (rc != SQLITE_DONE) {
            return fail_sql(db, r, st, rc);
        } else {
            sqlite3_reset(st);
        }
    }
    st = db->wst[W_RUN_INSERT];
    BIND(bind_bytes(st, 1, op->run_id));
    BIND(bind_bytes(st, 2, op->c_wid));
    BIND(bind_bytes(st, 3, op->c_type));
    BIND(bind_bytes(st, 4, op->c_status));
    BIND(sqlite3_bind_int64(st, 5, op->c_started));
    BIND(bind_opt(st, 6, &op->c_parent));
    BIND(bind_opt(st, 7, &op->c_cont));
    BIND(bind_opt(st, 8, &op->c_sa));
    BIND(bind_opt(st, 9, &op->c_data));
    return step_done(db, r, st);
}

/* Deletes rows by id with a (run_id, id) statement; a missing row fails the request
 * with {GoneTag, Id} when must_exist. */
static int delete_ids(db_res *db, req_t *r, int which, bytes_t run, const bytes_t *ids,
                      unsigned n, int must_exist, ERL_NIF_TERM gone_tag)
{
    sqlite3_stmt *st = db->wst[which];
    BIND(bind_bytes(st, 1, run));
    for (unsigned i = 0; i < n; i++) {
        BIND(bind_bytes(st, 2, ids[i]));
        if (step_done(db, r, st) != 0)
            return -1;
        if (must_exist && sqlite3_changes(db->w) == 0)
            return fail_reason(r, enif_make_tuple2(r->env, gone_tag,
                                                   make_bin(r->env, ids[i].p, ids[i].n)));
    }
    return 0;
}

static int apply_op(db_res *db, req_t *r, op_in *op)
{
    const store_atoms *a = &db->atoms;
    ErlNifSInt64 next = 1;
    int exists = 0, terminal = 0;
    sqlite3_stmt *st = db->wst[W_RUN_GET];
    BIND(bind_bytes(st, 1, op->run_id));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        exists = 1;
        terminal = status_terminal(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0));
        next = sqlite3_column_int64(st, 1);
    } else if (rc != SQLITE_DONE) {
        return fail_sql(db, r, st, rc);
    }
    sqlite3_reset(st);

    if (op->has_create) {
        if (exists)
            return fail_reason(r, enif_make_tuple2(r->env, a->a_already_exists,
                                                   make_bin(r->env, op->run_id.p, op->run_id.n)));
        if (create_run(db, r, op) != 0)
            return -1;
        next = 1;
    } else if (!exists) {
        return fail_reason(r, enif_make_tuple2(r->env, a->a_not_found,
                                               make_bin(r->env, op->run_id.p, op->run_id.n)));
    } else if (terminal && !op->allow_closed) {
        return fail_reason(r, a->a_closed);
    }
    if (op->has_expected && op->expected != next)
        return fail_reason(r, enif_make_tuple3(r->env, a->a_sequence_conflict,
                                               enif_make_int64(r->env, op->expected),
                                               enif_make_int64(r->env, next)));
    op->first_seq = next;

    if (op->n_ev > 0) {
        st = db->wst[W_EV_INSERT];
        BIND(bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_ev; i++) {
            BIND(sqlite3_bind_int64(st, 2, next + (ErlNifSInt64)i));
            BIND(bind_bytes(st, 3, op->ev[i].type));
            BIND(sqlite3_bind_int64(st, 4, op->ev[i].at));
            BIND(bind_bytes(st, 5, op->ev[i].data));
            if (step_done(db, r, st) != 0)
                return -1;
        }
    }

    /* Rows: takes (must exist), deletes, clear_rows, then puts (upserts). */
    if (delete_ids(db, r, W_TIMER_DEL, op->run_id, op->ttake, op->n_ttake, 1, a->a_timer_gone) ||
        delete_ids(db, r, W_TASK_DEL, op->run_id, op->ktake, op->n_ktake, 1, a->a_task_gone) ||
        delete_ids(db, r, W_TIMER_DEL, op->run_id, op->tdel, op->n_tdel, 0, a->a_null) ||
        delete_ids(db, r, W_TASK_DEL, op->run_id, op->kdel, op->n_kdel, 0, a->a_null))
        return -1;
    if (op->clear_rows) {
        st = db->wst[W_TIMERS_CLEAR];
        BIND(bind_bytes(st, 1, op->run_id));
        if (step_done(db, r, st) != 0)
            return -1;
        st = db->wst[W_TASKS_CLEAR];
        BIND(bind_bytes(st, 1, op->run_id));
        if (step_done(db, r, st) != 0)
            return -1;
    }
    if (op->n_tput > 0) {
        st = db->wst[W_TIMER_PUT];
        BIND(bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_tput; i++) {
            BIND(bind_bytes(st, 2, op->tput[i].id));
            BIND(sqlite3_bind_int64(st, 3, op->tput[i].fire_at));
            if (step_done(db, r, st) != 0)
                return -1;
        }
    }
    if (op->n_kput > 0) {
        st = db->wst[W_TASK_PUT];
        BIND(bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_kput; i++) {
            BIND(bind_bytes(st, 2, op->kput[i].id));
            BIND(sqlite3_bind_int64(st, 3, op->kput[i].attempt));
            BIND(bind_bytes(st, 4, op->kput[i].queue));
            BIND(bind_bytes(st, 5, op->kput[i].data));
            if (step_done(db, r, st) != 0)
                return -1;
        }
    }

    if (op->n_ev > 0 || op->has_set) {
        st = db->wst[W_RUN_UPDATE];
        BIND(bind_bytes(st, 1, op->run_id));
        BIND(sqlite3_bind_int64(st, 2, next + (ErlNifSInt64)op->n_ev));
        BIND(sqlite3_bind_int(st, 3, op->s_status.st == F_VALUE));
        BIND(bind_opt(st, 4, &op->s_status));
        BIND(sqlite3_bind_int(st, 5, op->s_closed_st != F_ABSENT));
        BIND(op->s_closed_st == F_VALUE ? sqlite3_bind_int64(st, 6, op->s_closed)
                                        : sqlite3_bind_null(st, 6));
        BIND(sqlite3_bind_int(st, 7, op->s_sa.st != F_ABSENT));
        BIND(bind_opt(st, 8, &op->s_sa));
        BIND(sqlite3_bind_int(st, 9, op->s_stuck.st != F_ABSENT));
        BIND(bind_opt(st, 10, &op->s_stuck));
        BIND(sqlite3_bind_int(st, 11, op->s_data.st != F_ABSENT));
        BIND(bind_opt(st, 12, &op->s_data));
        if (step_done(db, r, st) != 0)
            return -1;
    }
    return 0;
}

/* Runs one control statement (BEGIN, COMMIT, SAVEPOINT...) on the writer. */
static int wexec(db_res *db, int which)
{
    sqlite3_stmt *st = db->wst[which];
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        record_err(db, rc);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Marks every request from first up to (not including) stop that had succeeded as
 * failed with the writer's last error: their share of the transaction is gone. */
static void fail_committed(db_res *db, req_t *first, const req_t *stop)
{
    for (req_t *q = first; q != stop; q = q->next) {
        if (q->ok) {
            q->ok = 0;
            q->reason = last_err_reason(db, q->env);
        }
    }
}

static ERL_NIF_TERM ok_reply(const store_atoms *a, req_t *r)
{
    ERL_NIF_TERM lists = enif_make_list(r->env, 0);
    for (unsigned i = r->n_ops; i-- > 0;) {
        const op_in *op = &r->ops[i];
        ERL_NIF_TERM seqs = enif_make_list(r->env, 0);
        for (unsigned k = op->n_ev; k-- > 0;)
            seqs = enif_make_list_cell(r->env, enif_make_int64(r->env, op->first_seq + k), seqs);
        lists = enif_make_list_cell(r->env, seqs, lists);
    }
    return enif_make_tuple2(r->env, a->a_ok, lists);
}

static void process_batch(db_res *db, req_t *batch)
{
    const store_atoms *a = &db->atoms;
    req_t *txn_first = batch;
    int in_txn = 0;
    for (req_t *r = batch; r != NULL; r = r->next) {
        r->ok = 0;
        if (!in_txn) {
            if (wexec(db, W_BEGIN) != SQLITE_OK) {
                r->reason = last_err_reason(db, r->env);
                continue;
            }
            in_txn = 1;
            txn_first = r;
        }
        if (wexec(db, W_SAVEPOINT) != SQLITE_OK) {
            r->reason = last_err_reason(db, r->env);
        } else {
            int failed = 0;
            for (unsigned i = 0; i < r->n_ops && !failed; i++)
                failed = apply_op(db, r, &r->ops[i]) != 0;
            if (!failed && wexec(db, W_RELEASE) == SQLITE_OK) {
                r->ok = 1;
            } else {
                if (!failed)
                    r->reason = last_err_reason(db, r->env);
                if (!sqlite3_get_autocommit(db->w)) {
                    (void)wexec(db, W_ROLLBACK_TO);
                    (void)wexec(db, W_RELEASE);
                }
            }
        }
        if (sqlite3_get_autocommit(db->w)) {
            /* SQLite rolled the whole transaction back (I/O error, disk full...). */
            fail_committed(db, txn_first, r);
            in_txn = 0;
        }
    }
    if (in_txn && wexec(db, W_COMMIT) != SQLITE_OK) {
        if (!sqlite3_get_autocommit(db->w))
            (void)wexec(db, W_ROLLBACK);
        fail_committed(db, txn_first, NULL);
    }
    /* Record, then acknowledge: replies go out only after COMMIT returned. */
    while (batch != NULL) {
        req_t *r = batch;
        batch = r->next;
        ERL_NIF_TERM reply = r->ok ? ok_reply(a, r) : enif_make_tuple2(r->env, a->a_error, r->reason);
        (void)enif_send(NULL, &r->pid, r->env, enif_make_tuple2(r->env, r->tag, reply));
        req_free(r);
    }
}

static void *writer_main(void *arg)
{
    db_res *db = arg;
    for (;;) {
        enif_mutex_lock(db->mu);
        while (db->q_head == NULL && db->state == ST_OPEN)
            enif_cond_wait(db->q_cv, db->mu);
        req_t *batch = db->q_head;
        if (batch == NULL) { /* closing and drained */
            enif_mutex_unlock(db->mu);
            break;
        }
        if (db->q_len <= MAX_BATCH) {
            db->q_head = db->q_tail = NULL;
            db->q_len = 0;
        } else {
            req_t *last = batch;
            for (unsigned i = 1; i < MAX_BATCH; i++)
                last = last->next;
            db->q_head = last->next;
            db->q_len -= MAX_BATCH;
            last->next = NULL;
        }
        enif_mutex_unlock(db->mu);
        process_batch(db, batch);
    }
    return NULL;
}

/* ------------------------------------------------------------------ checkpoints */

/* Called on the writer thread after each commit: counts, and wakes the checkpoint
 * thread when the WAL grew past the threshold. Replaces SQLite's auto-checkpoint. */
static int wal_hook(void *arg, sqlite3 *c, const char *name, int pages)
{
    db_res *db = arg;
    pthread_mutex_lock(&db->ck_mu);
    db->ck_commits++;
    if (pages >= CKPT_WAL_PAGES && !db->ck_pending) {
        db->ck_pending = 1;
        pthread_cond_signal(&db->ck_cv);
    }
    pthread_mutex_unlock(&db->ck_mu);
    return SQLITE_OK;
}

static int run_checkpoint(db_res *db, int *code, char *msg, size_t msg_sz)
{
    pthread_mutex_lock(&db->ck_run);
    int rc = sqlite3_wal_checkpoint_v2(db->ck, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
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
        (void)run_checkpoint(db, NULL, NULL, 0);
        pthread_mutex_lock(&db->ck_mu);
    }
    pthread_mutex_unlock(&db->ck_mu);
    return NULL;
}

/* ------------------------------------------------------------ open, close, destroy */

static void reader_close(reader *rd)
{
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(rd->st[i]);
    sqlite3_close_v2(rd->c);
    enif_free(rd);
}

/* Opens a connection with the database's settings. */
static int conn_open(db_res *db, sqlite3 **out, int create)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(db->path, out, flags, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_extended_result_codes(*out, 1);
    sqlite3_busy_timeout(*out, db->busy_ms);
    return exec_sql(*out, db->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
}

static reader *reader_open(db_res *db, int *code, char *msg, size_t msg_sz)
{
    reader *rd = enif_alloc(sizeof *rd);
    if (rd == NULL) {
        *code = SQLITE_NOMEM;
        snprintf(msg, msg_sz, "%s", sqlite3_errstr(SQLITE_NOMEM));
        return NULL;
    }
    memset(rd, 0, sizeof *rd);
    int rc = conn_open(db, &rd->c, 0);
    if (rc == SQLITE_OK)
        rc = exec_sql(rd->c, "PRAGMA query_only=1");
    if (rc != SQLITE_OK) {
        *code = rd->c ? sqlite3_extended_errcode(rd->c) : rc;
        snprintf(msg, msg_sz, "%s", rd->c ? sqlite3_errmsg(rd->c) : sqlite3_errstr(rc));
        reader_close(rd);
        return NULL;
    }
    return rd;
}

static void db_stop_threads(db_res *db)
{
    if (db->writer_started) { /* state is ST_CLOSING: the writer drains and exits */
        enif_thread_join(db->writer_tid, NULL);
        db->writer_started = 0;
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
        reader_close(rd);
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
    if (db->mu == NULL || db->q_cv == NULL || db->idle_cv == NULL)
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
    int rc = conn_open(db, &db->w, 1);
    if (rc == SQLITE_OK)
        rc = read_version(db->w, &found);
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (found > SCHEMA_VERSION)
        goto too_new;
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
                                sqlite_reason(env, a, SQLITE_ERROR, "cannot enable WAL mode"));
        return 0;
    }
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
            rc = exec_sql(db->w, SCHEMA_DDL);
        if (rc == SQLITE_OK)
            rc = exec_sql(db->w, "COMMIT");
        if (rc != SQLITE_OK) {
            *err = conn_error(env, a, db->w, rc);
            if (!sqlite3_get_autocommit(db->w))
                (void)exec_sql(db->w, "ROLLBACK");
            return 0;
        }
    }
    for (int i = 0; i < W_COUNT; i++) {
        rc = sqlite3_prepare_v3(db->w, W_SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &db->wst[i], NULL);
        if (rc != SQLITE_OK)
            goto sql_fail;
    }
    sqlite3_wal_hook(db->w, wal_hook, db); /* after the pragma: it would replace the hook */
    rc = conn_open(db, &db->ck, 0);
    if (rc == SQLITE_OK)
        rc = exec_sql(db->ck, "PRAGMA wal_autocheckpoint=0");
    if (rc != SQLITE_OK) {
        *err = conn_error(env, a, db->ck, rc);
        return 0;
    }
    return 1;
sql_fail:
    *err = conn_error(env, a, db->w, rc);
    return 0;
too_new:
    *err = enif_make_tuple2(env, a->a_error,
                            enif_make_tuple3(env, a->a_schema_too_new, enif_make_int64(env, found),
                                             enif_make_int(env, SCHEMA_VERSION)));
    return 0;
}

static db_res *get_db(ErlNifEnv *env, ERL_NIF_TERM t)
{
    db_res *db;
    if (!enif_get_resource(env, t, aion_priv_of(env)->store->db_type, (void **)&db))
        return NULL;
    return db;
}

/* store_open(Path :: binary(), Sync :: full | normal, BusyTimeoutMs, CheckpointIntervalMs) */
ERL_NIF_TERM aion_store_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_store_priv *priv = aion_priv_of(env)->store;
    const store_atoms *a = &priv->atoms;
    ErlNifBinary path;
    int sync_full, busy, ckpt;
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
        ckpt < 1)
        return enif_make_badarg(env);

    db_res *db = enif_alloc_resource(priv->db_type, sizeof *db);
    if (db == NULL)
        return enif_raise_exception(env, a->a_enomem);
    memset(db, 0, sizeof *db);
    db->atoms = *a;
    db->sync_full = sync_full;
    db->busy_ms = busy;
    db->ckpt_ms = ckpt;
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
    db->state = ST_OPEN;
    if (enif_thread_create("aion_store_writer", &db->writer_tid, writer_main, db, NULL) != 0) {
        db->state = ST_CLOSED;
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
    db_res *db = get_db(env, argv[0]);
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
        db_close_conns(db);
        db->state = ST_CLOSED;
        enif_cond_broadcast(db->idle_cv);
    } else {
        while (db->state != ST_CLOSED)
            enif_cond_wait(db->idle_cv, db->mu);
    }
    enif_mutex_unlock(db->mu);
    return db->atoms.a_ok;
}

/* store_append(Db, Tag :: reference(), Ops) -> ok. Normal scheduler: parses and
 * copies the request, queues it for the writer, which later sends {Tag, Reply}. */
ERL_NIF_TERM aion_store_append(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = get_db(env, argv[0]);
    if (db == NULL || !enif_is_ref(env, argv[1]) || !enif_is_list(env, argv[2]))
        return enif_make_badarg(env);
    const store_atoms *a = &db->atoms;
    req_t *r = enif_alloc(sizeof *r);
    if (r == NULL)
        return enif_raise_exception(env, a->a_enomem);
    r->next = NULL;
    r->extra = NULL;
    r->used = 0;
    r->ok = 0;
    r->env = enif_alloc_env();
    if (r->env == NULL) {
        req_free(r);
        return enif_raise_exception(env, a->a_enomem);
    }
    r->tag = enif_make_copy(r->env, argv[1]);
    r->reason = a->a_null;
    pctx c = {r->env, a, r, 0};
    if (!p_ops(&c, enif_make_copy(r->env, argv[2]))) {
        int oom = c.oom;
        req_free(r);
        return oom ? enif_raise_exception(env, a->a_enomem) : enif_make_badarg(env);
    }
    if (enif_self(env, &r->pid) == NULL) {
        req_free(r);
        return enif_make_badarg(env);
    }
    enif_mutex_lock(db->mu);
    if (db->state != ST_OPEN) {
        enif_mutex_unlock(db->mu);
        req_free(r);
        return enif_raise_exception(env, a->a_closed);
    }
    if (db->q_tail)
        db->q_tail->next = r;
    else
        db->q_head = r;
    db->q_tail = r;
    db->q_len++;
    enif_cond_signal(db->q_cv);
    enif_mutex_unlock(db->mu);
    return a->a_ok;
}

/* ------------------------------------------------------------------------- reads */

/* Enters a read: raises closed after close; takes a pooled reader or opens one. */
static int read_enter(ErlNifEnv *env, db_res *db, reader **out, ERL_NIF_TERM *err)
{
    enif_mutex_lock(db->mu);
    if (db->state != ST_OPEN) {
        enif_mutex_unlock(db->mu);
        *err = enif_raise_exception(env, db->atoms.a_closed);
        return 0;
    }
    db->active++;
    reader *rd = out != NULL ? db->pool : NULL;
    if (rd != NULL) {
        db->pool = rd->next;
        db->pool_n--;
    }
    enif_mutex_unlock(db->mu);
    if (rd == NULL && out != NULL) {
        int code;
        char msg[256];
        rd = reader_open(db, &code, msg, sizeof msg);
        if (rd == NULL) {
            *err = enif_make_tuple2(env, db->atoms.a_error, sqlite_reason(env, &db->atoms, code, msg));
            enif_mutex_lock(db->mu);
            if (--db->active == 0)
                enif_cond_broadcast(db->idle_cv);
            enif_mutex_unlock(db->mu);
            return 0;
        }
    }
    if (out != NULL)
        *out = rd;
    return 1;
}

static void read_leave(db_res *db, reader *rd)
{
    reader *drop = NULL;
    enif_mutex_lock(db->mu);
    if (rd != NULL) {
        if (db->pool_n < READER_POOL_MAX) {
            rd->next = db->pool;
            db->pool = rd;
            db->pool_n++;
        } else {
            drop = rd;
        }
    }
    if (--db->active == 0)
        enif_cond_broadcast(db->idle_cv);
    enif_mutex_unlock(db->mu);
    if (drop)
        reader_close(drop);
}

static sqlite3_stmt *reader_stmt(reader *rd, int which)
{
    if (rd->st[which] == NULL &&
        sqlite3_prepare_v3(rd->c, R_SQL[which], -1, SQLITE_PREPARE_PERSISTENT, &rd->st[which],
                           NULL) != SQLITE_OK)
        return NULL;
    return rd->st[which];
}

typedef enum { ROW_EVENT, ROW_RUN, ROW_TIMER, ROW_TASK } row_kind;

static ERL_NIF_TERM row_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st, row_kind k)
{
    switch (k) {
    case ROW_EVENT:
        return enif_make_tuple4(env, col_term(env, a, st, 0), col_term(env, a, st, 1),
                                col_term(env, a, st, 2), col_term(env, a, st, 3));
    case ROW_RUN:
        return run_term(env, a, st);
    case ROW_TIMER:
        return enif_make_tuple3(env, col_term(env, a, st, 0), col_term(env, a, st, 1),
                                col_term(env, a, st, 2));
    default:
        return enif_make_tuple5(env, col_term(env, a, st, 0), col_term(env, a, st, 1),
                                col_term(env, a, st, 2), col_term(env, a, st, 3),
                                col_term(env, a, st, 4));
    }
}

/* Steps a bound statement to the end: {ok, [Row]} or {ok, Row} / {error, not_found}
 * when single. Resets the statement. */
static ERL_NIF_TERM collect(ErlNifEnv *env, const store_atoms *a, sqlite3 *c, sqlite3_stmt *st,
                            row_kind k, int single)
{
    ERL_NIF_TERM list = enif_make_list(env, 0), out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ERL_NIF_TERM row = row_term(env, a, st, k);
        if (single) {
            sqlite3_reset(st);
            return aion_ok(env, row);
        }
        list = enif_make_list_cell(env, row, list);
    }
    if (rc != SQLITE_DONE) {
        out = conn_error(env, a, c, rc);
        sqlite3_reset(st);
        return out;
    }
    sqlite3_reset(st);
    if (single)
        return enif_make_tuple2(env, a->a_error, a->a_not_found);
    if (!enif_make_reverse_list(env, list, &out))
        return enif_make_badarg(env);
    return aion_ok(env, out);
}

typedef struct {
    int is_int;
    ErlNifSInt64 i;
    bytes_t b;
} bindv;

/* Runs a cached reader query whose parameters are given in binds. */
static ERL_NIF_TERM cached_query(ErlNifEnv *env, db_res *db, int which, const bindv *binds,
                                 int nb, row_kind k, int single)
{
    reader *rd;
    ERL_NIF_TERM out;
    if (!read_enter(env, db, &rd, &out))
        return out;
    sqlite3_stmt *st = reader_stmt(rd, which);
    int rc = st == NULL ? SQLITE_ERROR : SQLITE_OK;
    for (int i = 0; i < nb && rc == SQLITE_OK; i++)
        rc = binds[i].is_int ? sqlite3_bind_int64(st, i + 1, binds[i].i)
                             : bind_bytes(st, i + 1, binds[i].b);
    out = rc == SQLITE_OK ? collect(env, &db->atoms, rd->c, st, k, single)
                          : conn_error(env, &db->atoms, rd->c, rc);
    read_leave(db, rd);
    return out;
}

static int arg_bin(ErlNifEnv *env, ERL_NIF_TERM t, bindv *b)
{
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, t, &bin))
        return 0;
    b->is_int = 0;
    b->b.p = bin.data;
    b->b.n = bin.size;
    return 1;
}

static int arg_int(ErlNifEnv *env, ERL_NIF_TERM t, bindv *b)
{
    b->is_int = 1;
    return enif_get_int64(env, t, &b->i);
}

/* store_history(Db, RunId, FromSeq) -> {ok, [{Seq, Type, RecordedAt, Data}]} */
ERL_NIF_TERM aion_store_history(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[2];
    db_res *db = get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]) || !arg_int(env, argv[2], &b[1]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_HISTORY, b, 2, ROW_EVENT, 0);
}

/* store_get_run(Db, RunId) -> {ok, Run} | {error, not_found} */
ERL_NIF_TERM aion_store_get_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1];
    db_res *db = get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_GET_RUN, b, 1, ROW_RUN, 1);
}

/* store_current_run(Db, WorkflowId) -> {ok, Run} | {error, not_found} */
ERL_NIF_TERM aion_store_current_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1];
    db_res *db = get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_CURRENT_RUN, b, 1, ROW_RUN, 1);
}

/* store_due_timers(Db, UpTo, Limit :: non_neg_integer() | infinity) */
ERL_NIF_TERM aion_store_due_timers(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[2];
    db_res *db = get_db(env, argv[0]);
    if (db == NULL || !arg_int(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    if (enif_is_identical(argv[2], db->atoms.a_infinity)) {
        b[1].is_int = 1;
        b[1].i = -1;
    } else if (!arg_int(env, argv[2], &b[1]) || b[1].i < 0) {
        return enif_make_badarg(env);
    }
    return cached_query(env, db, R_DUE_TIMERS, b, 2, ROW_TIMER, 0);
}

/* store_activity_tasks(Db, RunId | all) */
ERL_NIF_TERM aion_store_activity_tasks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1] = {{0, 0, {NULL, 0}}};
    db_res *db = get_db(env, argv[0]);
    if (db == NULL)
        return enif_make_badarg(env);
    if (enif_is_identical(argv[1], db->atoms.a_all))
        return cached_query(env, db, R_TASKS_ALL, b, 0, ROW_TASK, 0);
    if (!arg_bin(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_TASKS_RUN, b, 1, ROW_TASK, 0);
}

/* ------------------------------------------------------- list, count, by status */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *t)
{
    size_t l = strlen(t);
    if (b->oom)
        return;
    if (b->n + l + 1 > b->cap) {
        size_t cap = (b->n + l + 1) * 2;
        char *s = enif_realloc(b->s, cap);
        if (s == NULL) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, t, l + 1);
    b->n += l;
}

typedef struct {
    sbuf sql;
    bindv *binds;
    int nb, cap;
    int nconds;
    ErlNifSInt64 limit;
} query_b;

static void q_cond(query_b *q, const char *cond)
{
    sb_add(&q->sql, q->nconds++ ? " AND " : " WHERE ");
    sb_add(&q->sql, cond);
}

/* Adds "status IN (?, ...)" for a binary or a list of binaries. */
static int q_status(ErlNifEnv *env, query_b *q, ERL_NIF_TERM v)
{
    ERL_NIF_TERM h;
    unsigned n;
    if (!enif_get_list_length(env, v, &n)) {
        if (!arg_bin(env, v, &q->binds[q->nb]))
            return 0;
        q->nb++;
        q_cond(q, "status = ?");
        return 1;
    }
    if (n == 0) {
        q_cond(q, "0");
        return 1;
    }
    q_cond(q, "status IN (?");
    for (unsigned i = 0; i < n; i++) {
        if (!enif_get_list_cell(env, v, &h, &v) || !arg_bin(env, h, &q->binds[q->nb++]))
            return 0;
        if (i > 0)
            sb_add(&q->sql, ", ?");
    }
    sb_add(&q->sql, ")");
    return 1;
}

/* Builds the WHERE clause of a list/count filter map; returns 0 on a bad filter. */
static int q_filter(ErlNifEnv *env, const store_atoms *a, query_b *q, ERL_NIF_TERM m)
{
    static const struct {
        int bin;
        const char *cond;
    } simple[] = {{1, "type = ?"}, {1, "workflow_id = ?"}, {1, "parent = ?"},
                  {0, "started_at > ?"}, {0, "started_at < ?"}, {0, "closed_at > ?"},
                  {0, "closed_at < ?"}};
    const ERL_NIF_TERM keys[] = {a->a_type, a->a_workflow_id, a->a_parent, a->a_started_after,
                                 a->a_started_before, a->a_closed_after, a->a_closed_before};
    size_t size, known = 0;
    ERL_NIF_TERM v;
    const ERL_NIF_TERM *el;
    int ar;
    if (!enif_get_map_size(env, m, &size))
        return 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!enif_get_map_value(env, m, keys[i], &v))
            continue;
        known++;
        if (!(simple[i].bin ? arg_bin(env, v, &q->binds[q->nb]) : arg_int(env, v, &q->binds[q->nb])))
            return 0;
        q->nb++;
        q_cond(q, simple[i].cond);
    }
    if (enif_get_map_value(env, m, a->a_cursor, &v)) {
        known++;
        if (!enif_get_tuple(env, v, &ar, &el) || ar != 2 || !arg_int(env, el[0], &q->binds[q->nb]) ||
            !arg_bin(env, el[1], &q->binds[q->nb + 1]))
            return 0;
        q->nb += 2;
        q_cond(q, "(started_at, run_id) > (?, ?)");
    }
    if (enif_get_map_value(env, m, a->a_limit, &v)) {
        known++;
        if (!enif_get_int64(env, v, &q->limit) || q->limit < 0)
            return 0;
    }
    if (enif_get_map_value(env, m, a->a_status, &v)) {
        known++;
        unsigned n = 0;
        if (enif_get_list_length(env, v, &n) && n > 0) {
            bindv *nbinds = enif_realloc(q->binds, sizeof *q->binds * (size_t)(q->cap + (int)n));
            if (nbinds == NULL) {
                q->sql.oom = 1;
                return 0;
            }
            q->binds = nbinds;
            q->cap += (int)n;
        }
        if (!q_status(env, q, v))
            return 0;
    }
    return known == size;
}

/* kind: 0 list (filter map), 1 count (filter map), 2 runs_by_status (status list) */
static ERL_NIF_TERM run_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], int kind)
{
    db_res *db = get_db(env, argv[0]);
    if (db == NULL)
        return enif_make_badarg(env);
    const store_atoms *a = &db->atoms;
    query_b q;
    memset(&q, 0, sizeof q);
    q.limit = -1;
    q.cap = 12;
    q.binds = enif_alloc(sizeof *q.binds * (size_t)q.cap);
    sb_add(&q.sql, kind == 1 ? "SELECT count(*) FROM runs" : "SELECT " RUN_COLS " FROM runs");
    int ok = q.binds != NULL && !q.sql.oom;
    if (ok && kind == 2) {
        unsigned n = 0;
        ok = enif_get_list_length(env, argv[1], &n);
        if (ok && n + 1 > (unsigned)q.cap) {
            bindv *nb = enif_realloc(q.binds, sizeof *q.binds * (size_t)(n + 1));
            ok = nb != NULL;
            if (ok) {
                q.binds = nb;
                q.cap = (int)n + 1;
            }
        }
        ok = ok && q_status(env, &q, argv[1]);
    } else if (ok) {
        ok = enif_is_map(env, argv[1]) && q_filter(env, a, &q, argv[1]);
    }
    if (kind != 1)
        sb_add(&q.sql, " ORDER BY started_at, run_id LIMIT ?");
    ERL_NIF_TERM out;
    if (!ok || q.sql.oom) {
        out = q.sql.oom || q.binds == NULL ? enif_raise_exception(env, a->a_enomem)
                                           : enif_make_badarg(env);
        goto done;
    }
    reader *rd;
    if (!read_enter(env, db, &rd, &out))
        goto done;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(rd->c, q.sql.s, -1, &st, NULL);
    for (int i = 0; i < q.nb && rc == SQLITE_OK; i++)
        rc = q.binds[i].is_int ? sqlite3_bind_int64(st, i + 1, q.binds[i].i)
                               : bind_bytes(st, i + 1, q.binds[i].b);
    if (rc == SQLITE_OK && kind != 1)
        rc = sqlite3_bind_int64(st, q.nb + 1, q.limit);
    if (rc != SQLITE_OK) {
        out = conn_error(env, a, rd->c, rc);
    } else if (kind == 1) {
        rc = sqlite3_step(st);
        out = rc == SQLITE_ROW ? aion_ok(env, enif_make_int64(env, sqlite3_column_int64(st, 0)))
                               : conn_error(env, a, rd->c, rc);
    } else {
        out = collect(env, a, rd->c, st, ROW_RUN, 0);
    }
    sqlite3_finalize(st);
    read_leave(db, rd);
done:
    enif_free(q.binds);
    enif_free(q.sql.s);
    return out;
}

/* store_list(Db, Filter) -> {ok, [Run]} */
ERL_NIF_TERM aion_store_list(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return run_query(env, argc, argv, 0);
}

/* store_count(Db, Filter) -> {ok, N}; limit is ignored. */
ERL_NIF_TERM aion_store_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return run_query(env, argc, argv, 1);
}

/* store_runs_by_status(Db, [Status]) -> {ok, [Run]} */
ERL_NIF_TERM aion_store_runs_by_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return run_query(env, argc, argv, 2);
}

/* store_checkpoint(Db) -> ok | {error, Reason}: a PASSIVE checkpoint (never blocks
 * the writer). */
ERL_NIF_TERM aion_store_checkpoint(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = get_db(env, argv[0]);
    ERL_NIF_TERM out;
    if (db == NULL)
        return enif_make_badarg(env);
    if (!read_enter(env, db, NULL, &out))
        return out;
    int code = SQLITE_OK;
    char msg[256];
    int rc = run_checkpoint(db, &code, msg, sizeof msg);
    out = rc == SQLITE_OK ? db->atoms.a_ok
                          : enif_make_tuple2(env, db->atoms.a_error,
                                             sqlite_reason(env, &db->atoms, code, msg));
    read_leave(db, NULL);
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
