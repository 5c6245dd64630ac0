/* store_read.c: the read NIFs. Each runs on a dirty IO scheduler and does one whole
 * unit of work (all rows in one call) on a pooled reader connection; in WAL mode a
 * reader never blocks the writer, nor the writer it. */
#include <string.h>

#include "store_int.h"

static const char *const R_SQL[R_COUNT] = {
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_ROLLBACK] = "ROLLBACK",
    [R_HEAD] = "SELECT last_event, next_seq FROM runs WHERE run_id = ?1",
    /* From event ?1 down: walk_history steps on while the chain is contiguous. */
    [R_EVENT] = "SELECT seq, type, recorded_at, data, prev, id FROM events WHERE id <= ?1"
                " ORDER BY id DESC",
    [R_GET_RUN] = "SELECT " RUN_COLS " FROM runs WHERE run_id = ?1",
    [R_CURRENT_RUN] = "SELECT " RUN_COLS " FROM runs WHERE workflow_id = ?1"
                      " ORDER BY create_seq DESC LIMIT 1",
    [R_DUE_TIMERS] = "SELECT run_id, timer_id, fire_at FROM timers WHERE fire_at <= ?1 AND fire_at > ?3"
                     " ORDER BY fire_at, run_id, timer_id LIMIT ?2",
    [R_TASKS_RUN] = "SELECT run_id, activity_id, attempt, task_queue, data FROM activity_tasks"
                    " WHERE run_id = ?1 ORDER BY activity_id",
    [R_TASKS_ALL] = "SELECT run_id, activity_id, attempt, task_queue, data FROM activity_tasks"
                    " ORDER BY run_id, activity_id",
    /* Seeks the three statuses in runs_open (the partial index of open runs; its
     * WHERE is repeated so that SQLite may use it) and reads each of their rows; no index covers parked_seq or next_seq, since one on next_seq would cost
     * every append an index update (docs/internals/store.md). */
    [R_RESUME] = "SELECT " RUN_COLS " FROM runs WHERE status IN ('stuck', 'running', 'paused')"
                 " AND status NOT IN " TERMINAL_SQL
                 " AND (status = 'stuck' OR parked_seq IS NULL OR parked_seq <> next_seq - 1)"
                 " ORDER BY started_at, run_id",
};

static ERL_NIF_TERM run_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st)
{
    ERL_NIF_TERM keys[RUN_NCOLS] = {a->a_run_id, a->a_workflow_id, a->a_type, a->a_status,
                                    a->a_started_at, a->a_closed_at, a->a_parent,
                                    a->a_continued_from, a->a_search_attributes,
                                    a->a_stuck_reason, a->a_data, a->a_next_seq,
                                    a->a_parked_seq};
    ERL_NIF_TERM vals[RUN_NCOLS], map;
    for (int i = 0; i < RUN_NCOLS; i++)
        vals[i] = store_col_term(env, a, st, i);
    if (!enif_make_map_from_arrays(env, keys, vals, RUN_NCOLS, &map))
        return a->a_null; /* unreachable: the keys are distinct */
    return map;
}

/* Enters a read: raises closed after close; takes a pooled reader or opens one. */
int store_read_enter(ErlNifEnv *env, db_res *db, reader **out, ERL_NIF_TERM *err)
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
        rd = store_reader_open(db, &code, msg, sizeof msg);
        if (rd == NULL) {
            *err = enif_make_tuple2(env, db->atoms.a_error,
                                    store_sqlite_reason(env, &db->atoms, code, msg));
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

void store_read_leave(db_res *db, reader *rd)
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
        store_reader_close(drop);
}

static sqlite3_stmt *reader_stmt(reader *rd, int which)
{
    if (rd->st[which] == NULL &&
        sqlite3_prepare_v3(rd->c, R_SQL[which], -1, SQLITE_PREPARE_PERSISTENT, &rd->st[which],
                           NULL) != SQLITE_OK)
        return NULL;
    return rd->st[which];
}

/* Rows of the cached queries (history rows: walk_history). */
typedef enum { ROW_RUN, ROW_TIMER, ROW_TASK } row_kind;

static ERL_NIF_TERM row_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st, row_kind k)
{
    switch (k) {
    case ROW_RUN:
        return run_term(env, a, st);
    case ROW_TIMER:
        return enif_make_tuple3(env, store_col_term(env, a, st, 0), store_col_term(env, a, st, 1),
                                store_col_term(env, a, st, 2));
    default:
        return enif_make_tuple5(env, store_col_term(env, a, st, 0), store_col_term(env, a, st, 1),
                                store_col_term(env, a, st, 2), store_col_term(env, a, st, 3),
                                store_col_term(env, a, st, 4));
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
        out = store_conn_error(env, a, c, rc);
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
    if (!store_read_enter(env, db, &rd, &out))
        return out;
    sqlite3_stmt *st = reader_stmt(rd, which);
    int rc = st == NULL ? SQLITE_ERROR : SQLITE_OK;
    for (int i = 0; i < nb && rc == SQLITE_OK; i++)
        rc = binds[i].is_int ? sqlite3_bind_int64(st, i + 1, binds[i].i)
                             : store_bind_bytes(st, i + 1, binds[i].b);
    out = rc == SQLITE_OK ? collect(env, &db->atoms, rd->c, st, k, single)
                          : store_conn_error(env, &db->atoms, rd->c, rc);
    store_read_leave(db, rd);
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

/* Steps a cached reader statement that returns no row (BEGIN, COMMIT, ROLLBACK). */
static int reader_exec(reader *rd, int which)
{
    sqlite3_stmt *st = reader_stmt(rd, which);
    if (st == NULL)
        return SQLITE_ERROR;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The type column of a history repeats a few texts: one binary per distinct text
 * (TYPE_SLOTS most recent ones) instead of one per row. */
#define TYPE_SLOTS 4
#define TYPE_TEXT 40
typedef struct {
    size_t len[TYPE_SLOTS]; /* 0: empty */
    unsigned char text[TYPE_SLOTS][TYPE_TEXT];
    ERL_NIF_TERM term[TYPE_SLOTS];
    unsigned next; /* the slot to replace */
} type_cache;

static ERL_NIF_TERM type_term(ErlNifEnv *env, const store_atoms *a, type_cache *tc,
                              sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) != SQLITE_TEXT)
        return store_col_term(env, a, st, i);
    const unsigned char *p = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (p == NULL || n <= 0 || n > TYPE_TEXT)
        return store_col_term(env, a, st, i);
    size_t len = (size_t)n;
    for (unsigned k = 0; k < TYPE_SLOTS; k++)
        if (tc->len[k] == len && memcmp(tc->text[k], p, len) == 0)
            return tc->term[k];
    unsigned k = tc->next;
    tc->next = (k + 1) % TYPE_SLOTS;
    tc->len[k] = len;
    memcpy(tc->text[k], p, len);
    tc->term[k] = store_make_bin(env, p, len);
    return tc->term[k];
}

/* Walks the run's event chain from its latest event back to FromSeq inside one read
 * transaction; consing while walking backwards yields ascending order. Returns
 * {ok, Events}, or {error, Reason} with the transaction rolled back. */
static ERL_NIF_TERM walk_history(ErlNifEnv *env, const store_atoms *a, reader *rd, bytes_t run,
                                 ErlNifSInt64 from)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    sqlite3_stmt *head = reader_stmt(rd, R_HEAD), *ev = reader_stmt(rd, R_EVENT);
    int rc = head == NULL || ev == NULL ? SQLITE_ERROR : reader_exec(rd, R_BEGIN);
    if (rc != SQLITE_OK)
        return store_conn_error(env, a, rd->c, rc);
    ErlNifSInt64 id = 0, expect = 0;
    type_cache tc;
    memset(&tc, 0, sizeof tc);
    rc = store_bind_bytes(head, 1, run);
    if (rc == SQLITE_OK && (rc = sqlite3_step(head)) == SQLITE_ROW) {
        id = sqlite3_column_int64(head, 0);
        expect = sqlite3_column_int64(head, 1) - 1; /* the seq of the latest event */
        rc = SQLITE_DONE;
    }
    sqlite3_reset(head);
    if (from < 1)
        from = 1;
    /* ev scans rowids downwards from a seek. A run's events are usually stored
     * in runs of consecutive rowids (a batch of appends, or no other run writing
     * meanwhile): while prev is the rowid just below, the next step of the scan is
     * the wanted event; otherwise (or if it is not) the scan seeks again. */
    int positioned = 0;
    while (rc == SQLITE_DONE && expect >= from) {
        if (id <= 0)
            break;
        rc = SQLITE_DONE;
        if (positioned) {
            rc = sqlite3_step(ev);
            if (rc != SQLITE_ROW || sqlite3_column_int64(ev, 5) != id)
                rc = SQLITE_DONE; /* not the wanted row after all: seek */
        }
        if (rc != SQLITE_ROW) {
            sqlite3_reset(ev);
            if ((rc = sqlite3_bind_int64(ev, 1, id)) != SQLITE_OK)
                break;
            rc = sqlite3_step(ev);
        }
        if (rc != SQLITE_ROW || sqlite3_column_int64(ev, 5) != id ||
            sqlite3_column_int64(ev, 0) != expect) {
            if (rc == SQLITE_ROW)
                rc = SQLITE_DONE; /* a missing event: broken chain */
            break;
        }
        list = enif_make_list_cell(
            env,
            enif_make_tuple4(env, store_col_term(env, a, ev, 0), type_term(env, a, &tc, ev, 1),
                             store_col_term(env, a, ev, 2), store_col_term(env, a, ev, 3)),
            list);
        ErlNifSInt64 prev = sqlite3_column_int64(ev, 4);
        positioned = prev == id - 1;
        id = prev;
        expect--;
        rc = SQLITE_DONE;
    }
    sqlite3_reset(ev);
    ERL_NIF_TERM out;
    if (rc == SQLITE_DONE && expect < from) {
        out = aion_ok(env, list);
        rc = reader_exec(rd, R_COMMIT);
        if (rc == SQLITE_OK)
            return out;
    }
    out = rc == SQLITE_DONE || rc == SQLITE_ROW || rc == SQLITE_OK
              ? enif_make_tuple2(env, a->a_error,
                                 store_sqlite_reason(env, a, SQLITE_CORRUPT, "broken event chain"))
              : store_conn_error(env, a, rd->c, rc);
    if (!sqlite3_get_autocommit(rd->c))
        (void)reader_exec(rd, R_ROLLBACK);
    return out;
}

/* store_history(Db, RunId, FromSeq) -> {ok, [{Seq, Type, RecordedAt, Data}]} */
ERL_NIF_TERM aion_store_history(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[2];
    reader *rd;
    ERL_NIF_TERM out;
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]) || !arg_int(env, argv[2], &b[1]))
        return enif_make_badarg(env);
    if (!store_read_enter(env, db, &rd, &out))
        return out;
    out = walk_history(env, &db->atoms, rd, b[0].b, b[1].i);
    store_read_leave(db, rd);
    return out;
}

/* store_get_run(Db, RunId) -> {ok, Run} | {error, not_found} */
ERL_NIF_TERM aion_store_get_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1];
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_GET_RUN, b, 1, ROW_RUN, 1);
}

/* store_current_run(Db, WorkflowId) -> {ok, Run} | {error, not_found} */
ERL_NIF_TERM aion_store_current_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1];
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL || !arg_bin(env, argv[1], &b[0]))
        return enif_make_badarg(env);
    return cached_query(env, db, R_CURRENT_RUN, b, 1, ROW_RUN, 1);
}

/* store_runs_to_resume(Db) -> {ok, [Run]}: the runs that need a process at engine
 * start (stuck, or running/paused and not parked at their history's head). */
ERL_NIF_TERM aion_store_runs_to_resume(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL)
        return enif_make_badarg(env);
    return cached_query(env, db, R_RESUME, NULL, 0, ROW_RUN, 0);
}

/* A row limit: a non-negative integer (one beyond 64 bits means no limit, -1) or
 * `infinity' (-1). Returns 0 for anything else. */
static int get_limit(ErlNifEnv *env, const store_atoms *a, ERL_NIF_TERM t, ErlNifSInt64 *out)
{
    if (enif_is_identical(t, a->a_infinity)) {
        *out = -1;
        return 1;
    }
    if (enif_get_int64(env, t, out))
        return *out >= 0;
    if (enif_term_type(env, t) == ERL_NIF_TERM_TYPE_INTEGER &&
        enif_compare(t, enif_make_int(env, 0)) > 0) {
        *out = -1;
        return 1;
    }
    return 0;
}

/* store_due_timers(Db, After, UpTo, Limit :: non_neg_integer() | infinity): the timers
 * with After < fire_at <= UpTo. */
ERL_NIF_TERM aion_store_due_timers(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[3];
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL || !arg_int(env, argv[2], &b[0]) || !arg_int(env, argv[1], &b[2]))
        return enif_make_badarg(env);
    b[1].is_int = 1;
    if (!get_limit(env, &db->atoms, argv[3], &b[1].i))
        return enif_make_badarg(env);
    return cached_query(env, db, R_DUE_TIMERS, b, 3, ROW_TIMER, 0);
}

/* store_activity_tasks(Db, RunId | all) */
ERL_NIF_TERM aion_store_activity_tasks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    bindv b[1] = {{0, 0, {NULL, 0}}};
    db_res *db = store_get_db(env, argv[0]);
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

static int is_terminal(const bindv *b)
{
    static const char *const names[] = {"completed", "failed",     "cancelled",
                                        "terminated", "timed_out", "continued_as_new"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (b->b.n == strlen(names[i]) && memcmp(b->b.p, names[i], b->b.n) == 0)
            return 1;
    return 0;
}

/* Adds "status IN (?, ...)" for a binary or a list of binaries. When every status
 * asked for is open, the WHERE of the partial index runs_open is added too (SQLite
 * only uses a partial index for a query that repeats its WHERE); when every one is
 * closed, a count adds that of runs_closed (a list walks runs_started in its order). */
static int q_status(ErlNifEnv *env, query_b *q, ERL_NIF_TERM v, int kind)
{
    ERL_NIF_TERM h;
    unsigned n;
    int first = q->nb;
    if (!enif_get_list_length(env, v, &n)) {
        if (!arg_bin(env, v, &q->binds[q->nb]))
            return 0;
        q->nb++;
        q_cond(q, "status = ?");
    } else if (n == 0) {
        q_cond(q, "0");
        return 1;
    } else {
        q_cond(q, "status IN (?");
        for (unsigned i = 0; i < n; i++) {
            if (!enif_get_list_cell(env, v, &h, &v) || !arg_bin(env, h, &q->binds[q->nb++]))
                return 0;
            if (i > 0)
                sb_add(&q->sql, ", ?");
        }
        sb_add(&q->sql, ")");
    }
    int open = 0, closed = 0;
    for (int i = first; i < q->nb; i++) {
        if (is_terminal(&q->binds[i]))
            closed++;
        else
            open++;
    }
    if (closed == 0)
        q_cond(q, "status NOT IN " TERMINAL_SQL);
    else if (open == 0 && kind == 1)
        q_cond(q, "status IN " TERMINAL_SQL);
    return 1;
}

/* Builds the WHERE clause of a list/count filter map; returns 0 on a bad filter. */
static int q_filter(ErlNifEnv *env, const store_atoms *a, query_b *q, ERL_NIF_TERM m, int kind)
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
        if (!get_limit(env, a, v, &q->limit))
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
        if (!q_status(env, q, v, kind))
            return 0;
    }
    return known == size;
}

/* kind: 0 list (filter map), 1 count (filter map), 2 runs_by_status (status list) */
static ERL_NIF_TERM run_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], int kind)
{
    db_res *db = store_get_db(env, argv[0]);
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
        ok = ok && q_status(env, &q, argv[1], kind);
    } else if (ok) {
        ok = enif_is_map(env, argv[1]) && q_filter(env, a, &q, argv[1], kind);
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
    if (!store_read_enter(env, db, &rd, &out))
        goto done;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(rd->c, q.sql.s, -1, &st, NULL);
    for (int i = 0; i < q.nb && rc == SQLITE_OK; i++)
        rc = q.binds[i].is_int ? sqlite3_bind_int64(st, i + 1, q.binds[i].i)
                               : store_bind_bytes(st, i + 1, q.binds[i].b);
    if (rc == SQLITE_OK && kind != 1)
        rc = sqlite3_bind_int64(st, q.nb + 1, q.limit);
    if (rc != SQLITE_OK) {
        out = store_conn_error(env, a, rd->c, rc);
    } else if (kind == 1) {
        rc = sqlite3_step(st);
        out = rc == SQLITE_ROW ? aion_ok(env, enif_make_int64(env, sqlite3_column_int64(st, 0)))
                               : store_conn_error(env, a, rd->c, rc);
    } else {
        out = collect(env, a, rd->c, st, ROW_RUN, 0);
    }
    sqlite3_finalize(st);
    store_read_leave(db, rd);
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
