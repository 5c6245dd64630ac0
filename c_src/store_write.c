/* store_write.c: the write side of the store. store_append (a normal-scheduler NIF)
 * parses and copies a request and queues it; the writer thread drains the queue into
 * one transaction per batch (group commit), each request isolated by a savepoint
 * when it needs one, and hands each committed batch to the reply thread, which
 * answers every caller with enif_send (record, then acknowledge). */
#include <string.h>

#include "store_int.h"

#define APPEND_DIRTY_ITEMS 256 /* see aion_store_append */

static const char *const W_SQL[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT req",
    [W_RELEASE] = "RELEASE req",
    [W_ROLLBACK_TO] = "ROLLBACK TO req",
    [W_RUN_GET] = "SELECT status, next_seq, last_event, rowid FROM runs WHERE run_id = ?1",
    [W_WF_OPEN] = "SELECT run_id FROM runs WHERE workflow_id = ?1 AND status NOT IN "
                  TERMINAL_SQL " ORDER BY create_seq DESC LIMIT 1",
    [W_WF_LATEST] = "SELECT run_id, status FROM runs WHERE workflow_id = ?1"
                    " ORDER BY create_seq DESC LIMIT 1",
    [W_RUN_INSERT] = "INSERT INTO runs (run_id, workflow_id, type, status, started_at, parent,"
                     " continued_from, search_attributes, data, next_seq, create_seq)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1,"
                     " (SELECT coalesce(max(create_seq), 0) + 1 FROM runs))",
    [W_EV_INSERT] = "INSERT INTO events (run_id, seq, type, recorded_at, data, prev)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [W_RUN_SEQ] = "UPDATE runs SET next_seq = ?2, last_event = ?3 WHERE rowid = ?1",
    [W_RUN_UPDATE] = "UPDATE runs SET next_seq = ?2, last_event = ?13,"
                     " status = CASE WHEN ?3 THEN ?4 ELSE status END,"
                     " closed_at = CASE WHEN ?5 THEN ?6 ELSE closed_at END,"
                     " search_attributes = CASE WHEN ?7 THEN ?8 ELSE search_attributes END,"
                     " stuck_reason = CASE WHEN ?9 THEN ?10 ELSE stuck_reason END,"
                     " data = CASE WHEN ?11 THEN ?12 ELSE data END,"
                     " parked_seq = CASE WHEN ?14 THEN ?15 ELSE parked_seq END WHERE rowid = ?1",
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

/* ------------------------------------------------------------------ small helpers */

static int bind_opt(sqlite3_stmt *st, int i, const opt_bytes *o)
{
    return o->st == F_VALUE ? store_bind_bytes(st, i, o->v) : sqlite3_bind_null(st, i);
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
    if (opt_key(c, m, a->a_parked_seq, &v, &known)) {
        if (enif_is_identical(v, a->a_null))
            op->s_parked_st = F_NULL;
        else if (enif_get_int64(c->env, v, &op->s_parked))
            op->s_parked_st = F_VALUE;
        else
            return 0;
    }
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
    return store_sqlite_reason(env, &db->atoms, db->err_code, db->err_msg);
}

/* Fails request r with the writer's current SQLite error; resets st. */
static int fail_sql(db_res *db, req_t *r, sqlite3_stmt *st, int rc)
{
    record_err(db, rc);
    if (st)
        sqlite3_reset(st);
    r->reason = last_err_reason(db, r->env);
    r->sql_failed = 1;
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
    BIND(store_bind_bytes(st, 1, op->c_wid));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ERL_NIF_TERM id = store_col_term(r->env, a, st, 0);
        sqlite3_reset(st);
        return fail_reason(r, enif_make_tuple2(r->env, a->a_already_started, id));
    }
    if (rc != SQLITE_DONE)
        return fail_sql(db, r, st, rc);
    sqlite3_reset(st);
    if (op->c_policy != POLICY_ALLOW) {
        st = db->wst[W_WF_LATEST];
        BIND(store_bind_bytes(st, 1, op->c_wid));
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int refuse = op->c_policy == POLICY_REJECT ||
                         !status_failed(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1));
            ERL_NIF_TERM id = store_col_term(r->env, a, st, 0);
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
    BIND(store_bind_bytes(st, 1, op->run_id));
    BIND(store_bind_bytes(st, 2, op->c_wid));
    BIND(store_bind_bytes(st, 3, op->c_type));
    BIND(store_bind_bytes(st, 4, op->c_status));
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
    BIND(store_bind_bytes(st, 1, run));
    for (unsigned i = 0; i < n; i++) {
        BIND(store_bind_bytes(st, 2, ids[i]));
        if (step_done(db, r, st) != 0)
            return -1;
        if (must_exist && sqlite3_changes(db->w) == 0)
            return fail_reason(r, enif_make_tuple2(r->env, gone_tag,
                                                   store_make_bin(r->env, ids[i].p, ids[i].n)));
    }
    return 0;
}

static int apply_op(db_res *db, req_t *r, op_in *op)
{
    const store_atoms *a = &db->atoms;
    ErlNifSInt64 next = 1, last = 0; /* last: id of the run's latest event, 0 if none */
    ErlNifSInt64 row = 0; /* the run's rowid: the updates below skip the run_id index */
    int exists = 0, terminal = 0;
    sqlite3_stmt *st = db->wst[W_RUN_GET];
    BIND(store_bind_bytes(st, 1, op->run_id));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        exists = 1;
        terminal = status_terminal(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0));
        next = sqlite3_column_int64(st, 1);
        last = sqlite3_column_int64(st, 2); /* NULL reads as 0 */
        row = sqlite3_column_int64(st, 3);
    } else if (rc != SQLITE_DONE) {
        return fail_sql(db, r, st, rc);
    }
    sqlite3_reset(st);

    /* Every check comes before the op's first write (see batch_apply). */
    if (op->has_create) {
        if (exists)
            return fail_reason(r, enif_make_tuple2(r->env, a->a_already_exists,
                                                   store_make_bin(r->env, op->run_id.p, op->run_id.n)));
        next = 1;
        last = 0;
    } else if (!exists) {
        return fail_reason(r, enif_make_tuple2(r->env, a->a_not_found,
                                               store_make_bin(r->env, op->run_id.p, op->run_id.n)));
    } else if (terminal && !op->allow_closed) {
        return fail_reason(r, a->a_closed);
    }
    if (op->has_expected && op->expected != next)
        return fail_reason(r, enif_make_tuple3(r->env, a->a_sequence_conflict,
                                               enif_make_int64(r->env, op->expected),
                                               enif_make_int64(r->env, next)));
    if (op->has_create) {
        if (create_run(db, r, op) != 0)
            return -1;
        row = sqlite3_last_insert_rowid(db->w);
    }
    op->first_seq = next;

    if (op->n_ev > 0) {
        st = db->wst[W_EV_INSERT];
        BIND(store_bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_ev; i++) {
            BIND(sqlite3_bind_int64(st, 2, next + (ErlNifSInt64)i));
            BIND(store_bind_bytes(st, 3, op->ev[i].type));
            BIND(sqlite3_bind_int64(st, 4, op->ev[i].at));
            BIND(store_bind_bytes(st, 5, op->ev[i].data));
            BIND(last > 0 ? sqlite3_bind_int64(st, 6, last) : sqlite3_bind_null(st, 6));
            if (step_done(db, r, st) != 0)
                return -1;
            last = sqlite3_last_insert_rowid(db->w);
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
        BIND(store_bind_bytes(st, 1, op->run_id));
        if (step_done(db, r, st) != 0)
            return -1;
        st = db->wst[W_TASKS_CLEAR];
        BIND(store_bind_bytes(st, 1, op->run_id));
        if (step_done(db, r, st) != 0)
            return -1;
    }
    if (op->n_tput > 0) {
        st = db->wst[W_TIMER_PUT];
        BIND(store_bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_tput; i++) {
            BIND(store_bind_bytes(st, 2, op->tput[i].id));
            BIND(sqlite3_bind_int64(st, 3, op->tput[i].fire_at));
            if (step_done(db, r, st) != 0)
                return -1;
        }
    }
    if (op->n_kput > 0) {
        st = db->wst[W_TASK_PUT];
        BIND(store_bind_bytes(st, 1, op->run_id));
        for (unsigned i = 0; i < op->n_kput; i++) {
            BIND(store_bind_bytes(st, 2, op->kput[i].id));
            BIND(sqlite3_bind_int64(st, 3, op->kput[i].attempt));
            BIND(store_bind_bytes(st, 4, op->kput[i].queue));
            BIND(store_bind_bytes(st, 5, op->kput[i].data));
            if (step_done(db, r, st) != 0)
                return -1;
        }
    }

    if (op->n_ev > 0 && !op->has_set) { /* touches no index of runs */
        st = db->wst[W_RUN_SEQ];
        BIND(sqlite3_bind_int64(st, 1, row));
        BIND(sqlite3_bind_int64(st, 2, next + (ErlNifSInt64)op->n_ev));
        BIND(sqlite3_bind_int64(st, 3, last));
        if (step_done(db, r, st) != 0)
            return -1;
    } else if (op->has_set) {
        st = db->wst[W_RUN_UPDATE];
        BIND(sqlite3_bind_int64(st, 1, row));
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
        BIND(last > 0 ? sqlite3_bind_int64(st, 13, last) : sqlite3_bind_null(st, 13));
        BIND(sqlite3_bind_int(st, 14, op->s_parked_st != F_ABSENT));
        BIND(op->s_parked_st == F_VALUE ? sqlite3_bind_int64(st, 15, op->s_parked)
                                        : sqlite3_bind_null(st, 15));
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

/* A request whose every failure but an SQLite one comes before its first write (one
 * op without takes, see apply_op) runs without a savepoint: a logical failure left
 * nothing to undo. */
static int req_simple(const req_t *r)
{
    return r->n_ops == 1 && r->ops[0].n_ttake == 0 && r->ops[0].n_ktake == 0;
}

/* Whether an urgent request waits (the writer cuts a normal transaction short). */
static int urgent_waiting(db_res *db)
{
    return atomic_load_explicit(&db->urgent, memory_order_acquire) != 0;
}

/* Applies a batch in one transaction and commits it; a request that fails is
 * rolled back alone (savepoint) and keeps its reason. With safe = 0, simple requests
 * skip the savepoint; if one of them fails inside SQLite (it may have written part
 * of itself), the transaction is rolled back and -1 returned: the caller re-runs the
 * batch with safe = 1. Nothing of the batch is committed before the final COMMIT.
 * The batch ends after MAX_BATCH requests, and with cut = 1 (a normal-lane batch)
 * also once at least one request is applied and an urgent request waits: the
 * requests not started move to *rest (untouched, to be queued again) and what was
 * applied commits. */
static int batch_apply(db_res *db, req_queue *b, int safe, int cut, req_queue *rest)
{
    req_t *batch = b->head, *txn_first = batch;
    int in_txn = 0;
    unsigned taken = 0;
    *rest = (req_queue){NULL, NULL, 0};
    for (req_t *r = batch, *prev = NULL; r != NULL; prev = r, r = r->next, taken++) {
        if (prev != NULL && (taken >= MAX_BATCH || (cut && urgent_waiting(db)))) {
            *rest = (req_queue){r, b->tail, b->len - taken};
            prev->next = NULL;
            b->tail = prev;
            b->len = taken;
            break;
        }
        r->ok = 0;
        r->sql_failed = 0;
        if (!in_txn) {
            if (wexec(db, W_BEGIN) != SQLITE_OK) {
                r->reason = last_err_reason(db, r->env);
                continue;
            }
            in_txn = 1;
            txn_first = r;
        }
        int sp = safe || !req_simple(r);
        if (sp && wexec(db, W_SAVEPOINT) != SQLITE_OK) {
            r->reason = last_err_reason(db, r->env);
        } else {
            int failed = 0;
            for (unsigned i = 0; i < r->n_ops && !failed; i++)
                failed = apply_op(db, r, &r->ops[i]) != 0;
            if (!failed && (!sp || wexec(db, W_RELEASE) == SQLITE_OK)) {
                r->ok = 1;
            } else if (!sp) { /* failed without a savepoint */
                if (r->sql_failed) {
                    if (!sqlite3_get_autocommit(db->w))
                        (void)wexec(db, W_ROLLBACK);
                    return -1;
                }
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
    return 0;
}

/* Sends each request its reply and frees it. Runs on the reply thread. */
static void send_replies(db_res *db, req_t *list)
{
    const store_atoms *a = &db->atoms;
    while (list != NULL) {
        req_t *r = list;
        list = r->next;
        ERL_NIF_TERM reply = r->ok ? ok_reply(a, r) : enif_make_tuple2(r->env, a->a_error, r->reason);
        (void)enif_send(NULL, &r->pid, r->env, enif_make_tuple2(r->env, r->tag, reply));
        req_free(r);
    }
}

/* Takes every request of q, in order (empty if q is): batch_apply stops at MAX_BATCH
 * and hands the rest back, so a long queue is never walked to split it. */
static req_queue queue_take(req_queue *q)
{
    req_queue b = *q;
    *q = (req_queue){NULL, NULL, 0};
    return b;
}

/* Puts l (requests taken from q, in order) back in front of q. */
static void queue_push_front(req_queue *q, const req_queue *l)
{
    l->tail->next = q->head;
    if (q->head == NULL)
        q->tail = l->tail;
    q->head = l->head;
    q->len += l->len;
}

/* The writer: takes everything queued in one lane (the urgent one first), applies and
 * commits up to MAX_BATCH of it (the rest goes back to the front of its lane),
 * and hands the committed batch to the reply thread when it takes the next one
 * (record, then acknowledge; the writer never waits for the replies). A batch of
 * one request is answered by the writer itself: a lone caller (the latency path)
 * saves the wake-up of the reply thread, and one enif_send costs the writer little. */
void *store_writer_main(void *arg)
{
    db_res *db = arg;
    req_t *done = NULL, *done_tail = NULL;
    for (;;) {
        enif_mutex_lock(db->mu);
        if (done != NULL) {
            if (db->r_tail)
                db->r_tail->next = done;
            else
                db->r_head = done;
            db->r_tail = done_tail;
            enif_cond_signal(db->r_cv);
            done = NULL;
        }
        if (db->w_reset) { /* replies handed over first: nobody waits for this */
            enif_mutex_unlock(db->mu);
            store_wal_finish(db);
            enif_mutex_lock(db->mu);
        }
        while (db->q[LANE_NORMAL].head == NULL && db->q[LANE_URGENT].head == NULL &&
               db->state == ST_OPEN)
            enif_cond_wait(db->q_cv, db->mu);
        int lane = db->q[LANE_URGENT].head != NULL ? LANE_URGENT : LANE_NORMAL;
        req_queue b = queue_take(&db->q[lane]);
        if (b.head == NULL) { /* closing and drained */
            db->writer_done = 1;
            enif_cond_signal(db->r_cv);
            enif_mutex_unlock(db->mu);
            break;
        }
        if (lane == LANE_URGENT)
            atomic_store_explicit(&db->urgent, 0, memory_order_release);
        enif_mutex_unlock(db->mu);
        req_queue rest;
        if (batch_apply(db, &b, 0, lane == LANE_NORMAL, &rest) != 0)
            (void)batch_apply(db, &b, 1, lane == LANE_NORMAL, &rest);
        if (rest.head != NULL) { /* MAX_BATCH reached or cut short: back to the front */
            enif_mutex_lock(db->mu);
            queue_push_front(&db->q[lane], &rest);
            if (lane == LANE_URGENT)
                atomic_store_explicit(&db->urgent, 1, memory_order_release);
            enif_mutex_unlock(db->mu);
        }
        req_t *batch = b.head;
        done_tail = b.tail;
        if (batch->next == NULL)
            send_replies(db, batch); /* one caller: answer it now, no thread hop */
        else
            done = batch;
    }
    return NULL;
}

void *store_reply_main(void *arg)
{
    db_res *db = arg;
    for (;;) {
        enif_mutex_lock(db->mu);
        while (db->r_head == NULL && !db->writer_done)
            enif_cond_wait(db->r_cv, db->mu);
        req_t *list = db->r_head;
        db->r_head = db->r_tail = NULL;
        enif_mutex_unlock(db->mu);
        if (list == NULL) /* the writer stopped and every reply went out */
            break;
        send_replies(db, list);
    }
    return NULL;
}

int store_writer_prepare(db_res *db)
{
    for (int i = 0; i < W_COUNT; i++) {
        int rc = sqlite3_prepare_v3(db->w, W_SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &db->wst[i],
                                    NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Parses and copies the request, queues it for the writer, which later sends
 * {Tag, Reply} to the caller. */
static ERL_NIF_TERM append_request(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = store_get_db(env, argv[0]);
    if (db == NULL || !enif_is_ref(env, argv[1]) || !enif_is_list(env, argv[2]))
        return enif_make_badarg(env);
    const store_atoms *a = &db->atoms;
    if (!enif_is_identical(argv[3], a->a_high) && !enif_is_identical(argv[3], a->a_normal))
        return enif_make_badarg(env);
    req_t *r = enif_alloc(sizeof *r);
    if (r == NULL)
        return enif_raise_exception(env, a->a_enomem);
    r->next = NULL;
    r->lane = enif_is_identical(argv[3], a->a_high) ? LANE_URGENT : LANE_NORMAL;
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
    req_queue *q = &db->q[r->lane];
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->len++;
    if (r->lane == LANE_URGENT)
        atomic_store_explicit(&db->urgent, 1, memory_order_release);
    enif_cond_signal(db->q_cv);
    enif_mutex_unlock(db->mu);
    return a->a_ok;
}

/* A bound on the work of parsing a request: its ops plus the elements of their lists
 * (counting stops past limit). */
static size_t request_items(ErlNifEnv *env, const store_atoms *a, ERL_NIF_TERM ops, size_t limit)
{
    const ERL_NIF_TERM lists[] = {a->a_events, a->a_timers_put, a->a_timers_take, a->a_timers_del,
                                  a->a_tasks_put, a->a_tasks_take, a->a_tasks_del};
    ERL_NIF_TERM op, v;
    unsigned len;
    size_t n = 0;
    while (n <= limit && enif_get_list_cell(env, ops, &op, &ops)) {
        n++;
        for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
            if (enif_get_map_value(env, op, lists[i], &v) && enif_get_list_length(env, v, &len))
                n += len;
        }
    }
    return n;
}

/* store_append(Db, Tag :: reference(), Ops, Priority :: normal | high) -> ok.
 * High priority puts the request in the urgent lane. Normal scheduler; a request of
 * more than APPEND_DIRTY_ITEMS ops and list elements is parsed on a dirty CPU
 * scheduler instead, so no call holds a normal scheduler for long. */
ERL_NIF_TERM aion_store_append(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    db_res *db = store_get_db(env, argv[0]);
    if (db != NULL && enif_is_list(env, argv[2]) &&
        request_items(env, &db->atoms, argv[2], APPEND_DIRTY_ITEMS) > APPEND_DIRTY_ITEMS)
        return enif_schedule_nif(env, "store_append", ERL_NIF_DIRTY_JOB_CPU_BOUND, append_request,
                                 argc, argv);
    return append_request(env, argc, argv);
}
