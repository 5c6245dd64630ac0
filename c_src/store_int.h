/* store_int.h: private declarations shared by the store's C files.
 *   store.c        resource lifecycle (open, close, destructor), checkpoints, load
 *   store_write.c  request parsing (store_append) and the writer and reply threads
 *   store_read.c   the read NIFs and the reader connection pool */
#ifndef AION_STORE_INT_H
#define AION_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sqlite3.h>

#include "store.h"
#include "store_vfs.h"

#define MAX_BATCH       4096 /* requests per group-commit transaction */
#define READER_POOL_MAX 8    /* idle reader connections kept per database */
#define REQ_INLINE      512  /* bytes of a request's parse arena held inline: one op
                                * with an event fits (a close, a signal); a queued
                                * request is memory for as long as the writer is behind */

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
    X(cursor) X(parked_seq) X(high)

typedef struct {
#define X(n) ERL_NIF_TERM a_##n;
    STORE_ATOMS(X)
#undef X
} store_atoms;

struct aion_store_priv {
    ErlNifResourceType *db_type;
    store_atoms atoms;
};

#define TERMINAL_SQL "('completed','failed','cancelled','terminated','timed_out','continued_as_new')"
#define RUN_COLS                                                                          \
    "run_id, workflow_id, type, status, started_at, closed_at, parent, continued_from,"  \
    " search_attributes, stuck_reason, data, next_seq, parked_seq"
#define RUN_NCOLS 13

/* The writer's cached statements (SQL in store_write.c). */
enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO, W_RUN_GET,
    W_WF_OPEN, W_WF_LATEST, W_RUN_INSERT, W_EV_INSERT, W_RUN_SEQ, W_RUN_UPDATE, W_TIMER_PUT,
    W_TIMER_DEL, W_TIMERS_CLEAR, W_TASK_PUT, W_TASK_DEL, W_TASKS_CLEAR, W_COUNT
};

/* The readers' cached statements (SQL in store_read.c). */
enum {
    R_BEGIN, R_COMMIT, R_ROLLBACK, R_HEAD, R_EVENT, R_GET_RUN, R_CURRENT_RUN, R_DUE_TIMERS,
    R_TASKS_RUN, R_TASKS_ALL, R_RESUME, R_COUNT
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
    fstate s_closed_st, s_parked_st;
    ErlNifSInt64 s_closed, s_parked;
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
    int lane;       /* LANE_NORMAL or LANE_URGENT */
    ErlNifEnv *env; /* holds the copied ops, the tag and the reply */
    ErlNifPid pid;
    ERL_NIF_TERM tag;
    ERL_NIF_TERM reason; /* the error reason when !ok */
    int ok, sql_failed;
    op_in *ops;
    unsigned n_ops;
    chunk *extra;
    size_t used;
    uint64_t inl[REQ_INLINE / 8];
} req_t;

/* Requests waiting for the writer, in arrival order. The urgent lane (timer fires:
 * someone waits for the wake) goes first: the writer takes it whenever it is not
 * empty and cuts a normal transaction short when an urgent request arrives. */
enum { LANE_NORMAL = 0, LANE_URGENT = 1, LANES = 2 };

typedef struct {
    req_t *head, *tail;
    unsigned len;
} req_queue;

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
    int page_size;           /* bytes; applied when the file has no schema yet */

    ErlNifMutex *mu;      /* guards state, queue, active, pool */
    ErlNifCond *q_cv;     /* the writer waits for requests or close */
    ErlNifCond *r_cv;     /* the reply thread waits for committed requests */
    ErlNifCond *idle_cv;  /* close waits for reads to end; a 2nd close for the 1st */
    db_state state;
    req_queue q[LANES]; /* queued for the writer, per lane */
    atomic_int urgent;  /* q[LANE_URGENT] is not empty: set by appenders, cleared by
                           the writer (both under mu); read by the writer without it */
    req_t *r_head, *r_tail; /* committed (or failed), waiting for their replies */
    int writer_done;
    unsigned active; /* reads and checkpoints in progress */
    reader *pool;
    unsigned pool_n;

    sqlite3 *w; /* writer connection: only the writer thread uses it once open */
    store_vfs vfs; /* the writer's WAL write buffer (synchronous=FULL), store_vfs.c */
    sqlite3_stmt *wst[W_COUNT];
    int writer_started, reply_started;
    ErlNifTid writer_tid, reply_tid;
    int err_code; /* the writer's last SQLite failure */
    char err_msg[256];

    sqlite3 *ck; /* checkpoint connection, guarded by ck_run */
    int ck_init;
    pthread_mutex_t ck_run;
    pthread_mutex_t ck_mu; /* guards the ck_ fields below */
    pthread_cond_t ck_cv;
    int ck_stop, ck_pending;
    int ck_reset;          /* the WAL is big and nearly all backfilled: the writer ends it */
    int ck_handoff;        /* from ck_reset until the writer backfilled the tail */
    int ck_passes;         /* passes run back to back to catch up with the writer */
    uint64_t ck_commits, ck_seen;
    uint64_t ck_wal_pages; /* WAL frames after the latest commit */
    uint64_t ck_tail;      /* frames left behind by the latest pass */
    int w_reset; /* writer thread only: checkpoint the tail before the next batch */
    int ck_started;
    ErlNifTid ck_tid;
} db_res;

/* ------------------------------------------------------------------ shared helpers */

/* A binary holding a copy of n bytes at p. */
ERL_NIF_TERM store_make_bin(ErlNifEnv *env, const void *p, size_t n);
/* {sqlite, Code, Message} */
ERL_NIF_TERM store_sqlite_reason(ErlNifEnv *env, const store_atoms *a, int code, const char *msg);
/* {error, {sqlite, Code, Message}} from a connection's last error (or rc without one). */
ERL_NIF_TERM store_conn_error(ErlNifEnv *env, const store_atoms *a, sqlite3 *c, int rc);
/* Binds raw bytes as TEXT (an empty binary binds "", never NULL). */
int store_bind_bytes(sqlite3_stmt *st, int i, bytes_t b);
/* A column as a term: NULL -> null, integers, text/blob -> binary. */
ERL_NIF_TERM store_col_term(ErlNifEnv *env, const store_atoms *a, sqlite3_stmt *st, int i);
/* Writer thread: backfills the WAL's tail so the next transaction restarts it. */
void store_wal_finish(db_res *db);
/* The db resource of a term, or NULL. */
db_res *store_get_db(ErlNifEnv *env, ERL_NIF_TERM t);

/* Reader connections (store.c). */
reader *store_reader_open(db_res *db, int *code, char *msg, size_t msg_sz);
void store_reader_close(reader *rd);
/* Enters a read (store_read.c): raises closed after close, else counts the read in
 * db->active and, when out != NULL, takes a pooled reader or opens one. Returns 0
 * with *err set on failure. store_read_leave ends it (rd may be NULL). */
int store_read_enter(ErlNifEnv *env, db_res *db, reader **out, ERL_NIF_TERM *err);
void store_read_leave(db_res *db, reader *rd);

/* The writer side (store_write.c). */
int store_writer_prepare(db_res *db); /* prepares the writer's statements: SQLite rc */
void *store_writer_main(void *arg);
void *store_reply_main(void *arg);

#endif
