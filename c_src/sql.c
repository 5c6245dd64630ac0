/* sql: a small generic SQLite handle for the examples and tools; not the event store.
 *
 * One resource per open database (a connection and a mutex). Every call runs on a
 * dirty IO scheduler and holds the handle's mutex for its whole unit of work, so one
 * handle may be shared by several processes (calls are serialised). Statements are
 * prepared, stepped to the end and finalised inside one call: no statement outlives
 * a call and every path finalises. Close sets the connection to NULL under the lock;
 * later calls raise `closed'; the destructor closes a handle that was never closed.
 *
 * Values: integer <-> INTEGER (64-bit), float <-> REAL, binary <-> TEXT,
 * {blob, Binary} -> BLOB (read back as a binary), null <-> NULL. */
#include <string.h>
#include <sqlite3.h>

#include "sql.h"

struct aion_sql_priv {
    ErlNifResourceType *db_type;
    ERL_NIF_TERM atom_ok, atom_error, atom_null, atom_blob, atom_sqlite, atom_closed,
        atom_read_only, atom_read_write, atom_read_write_create, atom_empty_sql,
        atom_trailing_sql, atom_true, atom_false;
};

typedef struct {
    ErlNifMutex *lock;
    sqlite3 *db; /* NULL once closed */
} sql_db;

#define MAX_PATH_BYTES 4096
#define MAX_BUSY_TIMEOUT 60000

static void db_dtor(ErlNifEnv *env, void *obj)
{
    sql_db *h = obj;
    if (h->db != NULL) {
        sqlite3_close_v2(h->db);
        h->db = NULL;
    }
    if (h->lock != NULL) {
        enif_mutex_destroy(h->lock);
        h->lock = NULL;
    }
}

int aion_sql_load(ErlNifEnv *env, struct aion_sql_priv **out)
{
    struct aion_sql_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    memset(p, 0, sizeof *p);
    p->db_type = enif_open_resource_type(env, NULL, "aion_sql_db", db_dtor,
                                         ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (p->db_type == NULL) {
        enif_free(p);
        return 1;
    }
    p->atom_ok = enif_make_atom(env, "ok");
    p->atom_error = enif_make_atom(env, "error");
    p->atom_null = enif_make_atom(env, "null");
    p->atom_blob = enif_make_atom(env, "blob");
    p->atom_sqlite = enif_make_atom(env, "sqlite");
    p->atom_closed = enif_make_atom(env, "closed");
    p->atom_read_only = enif_make_atom(env, "read_only");
    p->atom_read_write = enif_make_atom(env, "read_write");
    p->atom_read_write_create = enif_make_atom(env, "read_write_create");
    p->atom_empty_sql = enif_make_atom(env, "empty_sql");
    p->atom_trailing_sql = enif_make_atom(env, "trailing_sql");
    p->atom_true = enif_make_atom(env, "true");
    p->atom_false = enif_make_atom(env, "false");
    *out = p;
    return 0;
}

void aion_sql_unload(struct aion_sql_priv *priv)
{
    enif_free(priv);
}

static struct aion_sql_priv *priv_of(ErlNifEnv *env)
{
    return aion_priv_of(env)->sql;
}

static ERL_NIF_TERM make_text(ErlNifEnv *env, const void *data, size_t n)
{
    ERL_NIF_TERM bin;
    unsigned char *buf = enif_make_new_binary(env, n, &bin);
    if (buf == NULL)
        return enif_make_badarg(env);
    if (n > 0)
        memcpy(buf, data, n);
    return bin;
}

/* {error, {sqlite, Code, Message}}; call with the lock held (errmsg is per connection). */
static ERL_NIF_TERM sqlite_error(ErlNifEnv *env, sqlite3 *db, int code)
{
    struct aion_sql_priv *p = priv_of(env);
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    if (msg == NULL)
        msg = "unknown";
    return enif_make_tuple2(env, p->atom_error,
                            enif_make_tuple3(env, p->atom_sqlite, enif_make_int(env, code),
                                             make_text(env, msg, strlen(msg))));
}

static int get_db(ErlNifEnv *env, ERL_NIF_TERM term, sql_db **out)
{
    return enif_get_resource(env, term, priv_of(env)->db_type, (void **)out);
}

/* sql_open(Path :: iodata(), Mode, BusyTimeoutMs) -> {ok, Ref} | {error, _}. */
ERL_NIF_TERM nif_sql_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_sql_priv *p = priv_of(env);
    ErlNifBinary path;
    int busy, flags;
    char cpath[MAX_PATH_BYTES + 1];

    if (!enif_inspect_iolist_as_binary(env, argv[0], &path) || path.size == 0 ||
        path.size > MAX_PATH_BYTES || memchr(path.data, 0, path.size) != NULL)
        return enif_make_badarg(env);
    if (enif_is_identical(argv[1], p->atom_read_only))
        flags = SQLITE_OPEN_READONLY;
    else if (enif_is_identical(argv[1], p->atom_read_write))
        flags = SQLITE_OPEN_READWRITE;
    else if (enif_is_identical(argv[1], p->atom_read_write_create))
        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    else
        return enif_make_badarg(env);
    if (!enif_get_int(env, argv[2], &busy) || busy < 0 || busy > MAX_BUSY_TIMEOUT)
        return enif_make_badarg(env);
    memcpy(cpath, path.data, path.size);
    cpath[path.size] = '\0';

    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(cpath, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ERL_NIF_TERM err = sqlite_error(env, db, rc);
        sqlite3_close_v2(db); /* NULL-safe */
        return err;
    }
    sqlite3_busy_timeout(db, busy);
    sqlite3_extended_result_codes(db, 1);

    sql_db *h = enif_alloc_resource(p->db_type, sizeof *h);
    if (h == NULL) {
        sqlite3_close_v2(db);
        return enif_make_badarg(env);
    }
    h->db = NULL;
    h->lock = enif_mutex_create("aion_sql_db");
    if (h->lock == NULL) {
        enif_release_resource(h); /* dtor: nothing open */
        sqlite3_close_v2(db);
        return enif_make_badarg(env);
    }
    h->db = db;
    ERL_NIF_TERM ref = enif_make_resource(env, h);
    enif_release_resource(h);
    return enif_make_tuple2(env, p->atom_ok, ref);
}

/* sql_close(Ref) -> ok (double close ok). */
ERL_NIF_TERM nif_sql_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    sql_db *h;
    if (!get_db(env, argv[0], &h))
        return enif_make_badarg(env);
    enif_mutex_lock(h->lock);
    if (h->db != NULL) {
        sqlite3_close_v2(h->db);
        h->db = NULL;
    }
    enif_mutex_unlock(h->lock);
    return priv_of(env)->atom_ok;
}

/* Copies iodata SQL into a NUL-terminated buffer (enif_alloc); NULL on bad input. */
static char *sql_text(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary bin;
    if (!enif_inspect_iolist_as_binary(env, term, &bin) || memchr(bin.data, 0, bin.size) != NULL)
        return NULL;
    char *s = enif_alloc(bin.size + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, bin.data, bin.size);
    s[bin.size] = '\0';
    return s;
}

/* sql_exec(Ref, Sql :: iodata()) -> ok | {error, _}: one or more statements, no
 * parameters, no rows (schema set-up, BEGIN/COMMIT). */
ERL_NIF_TERM nif_sql_exec(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    sql_db *h;
    if (!get_db(env, argv[0], &h))
        return enif_make_badarg(env);
    char *s = sql_text(env, argv[1]);
    if (s == NULL)
        return enif_make_badarg(env);
    ERL_NIF_TERM res;
    enif_mutex_lock(h->lock);
    if (h->db == NULL) {
        enif_mutex_unlock(h->lock);
        enif_free(s);
        return enif_raise_exception(env, priv_of(env)->atom_closed);
    }
    int rc = sqlite3_exec(h->db, s, NULL, NULL, NULL);
    res = rc == SQLITE_OK ? priv_of(env)->atom_ok : sqlite_error(env, h->db, rc);
    enif_mutex_unlock(h->lock);
    enif_free(s);
    return res;
}

/* Binds Params (a proper list) to Stmt. Returns 1, or 0 on a bad term. */
static int bind_params(ErlNifEnv *env, sqlite3_stmt *stmt, ERL_NIF_TERM list)
{
    struct aion_sql_priv *p = priv_of(env);
    unsigned len;
    if (!enif_get_list_length(env, list, &len) || (int)len != sqlite3_bind_parameter_count(stmt))
        return 0;
    ERL_NIF_TERM head, tail = list;
    int i = 1;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        ErlNifSInt64 iv;
        double dv;
        ErlNifBinary bin;
        const ERL_NIF_TERM *tup;
        int arity, rc;
        if (enif_get_int64(env, head, &iv))
            rc = sqlite3_bind_int64(stmt, i, iv);
        else if (enif_get_double(env, head, &dv))
            rc = sqlite3_bind_double(stmt, i, dv);
        else if (enif_inspect_binary(env, head, &bin))
            rc = sqlite3_bind_text64(stmt, i, (const char *)bin.data, bin.size, SQLITE_TRANSIENT,
                                     SQLITE_UTF8);
        else if (enif_is_identical(head, p->atom_null))
            rc = sqlite3_bind_null(stmt, i);
        else if (enif_get_tuple(env, head, &arity, &tup) && arity == 2 &&
                 enif_is_identical(tup[0], p->atom_blob) && enif_inspect_binary(env, tup[1], &bin))
            rc = sqlite3_bind_blob64(stmt, i, bin.data, bin.size, SQLITE_TRANSIENT);
        else
            return 0;
        if (rc != SQLITE_OK)
            return 0;
        i++;
    }
    return 1;
}

static ERL_NIF_TERM column_value(ErlNifEnv *env, sqlite3_stmt *stmt, int col)
{
    switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER:
        return enif_make_int64(env, sqlite3_column_int64(stmt, col));
    case SQLITE_FLOAT:
        return enif_make_double(env, sqlite3_column_double(stmt, col));
    case SQLITE_TEXT: {
        const unsigned char *t = sqlite3_column_text(stmt, col);
        return make_text(env, t, t == NULL ? 0 : (size_t)sqlite3_column_bytes(stmt, col));
    }
    case SQLITE_BLOB: {
        const void *b = sqlite3_column_blob(stmt, col);
        return make_text(env, b, b == NULL ? 0 : (size_t)sqlite3_column_bytes(stmt, col));
    }
    default:
        return priv_of(env)->atom_null;
    }
}

/* sql_query(Ref, Sql :: iodata(), Params :: list()) ->
 *     {ok, Rows :: [tuple()], Changes :: integer()} | {error, _}.
 * Exactly one statement, stepped to completion. Changes is the number of rows the
 * statement inserted, updated or deleted (0 for a read). */
ERL_NIF_TERM nif_sql_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_sql_priv *p = priv_of(env);
    sql_db *h;
    if (!get_db(env, argv[0], &h) || !enif_is_list(env, argv[2]))
        return enif_make_badarg(env);
    char *s = sql_text(env, argv[1]);
    if (s == NULL)
        return enif_make_badarg(env);

    ERL_NIF_TERM res;
    sqlite3_stmt *stmt = NULL;
    const char *rest = NULL;
    enif_mutex_lock(h->lock);
    if (h->db == NULL) {
        enif_mutex_unlock(h->lock);
        enif_free(s);
        return enif_raise_exception(env, p->atom_closed);
    }
    int rc = sqlite3_prepare_v2(h->db, s, -1, &stmt, &rest);
    if (rc != SQLITE_OK) {
        res = sqlite_error(env, h->db, rc);
        goto done;
    }
    if (stmt == NULL) {
        res = enif_make_tuple2(env, p->atom_error, p->atom_empty_sql);
        goto done;
    }
    while (rest != NULL && (*rest == ' ' || *rest == '\n' || *rest == '\t' || *rest == '\r' ||
                            *rest == ';'))
        rest++;
    if (rest != NULL && *rest != '\0') {
        res = enif_make_tuple2(env, p->atom_error, p->atom_trailing_sql);
        goto done;
    }
    if (!bind_params(env, stmt, argv[2])) {
        res = enif_make_badarg(env);
        goto done;
    }
    int ncols = sqlite3_column_count(stmt);
    ERL_NIF_TERM rows = enif_make_list(env, 0);
    ERL_NIF_TERM small[16];
    ERL_NIF_TERM *cells = small;
    if (ncols > 16) {
        cells = enif_alloc(sizeof(ERL_NIF_TERM) * (size_t)ncols);
        if (cells == NULL) {
            res = enif_make_badarg(env);
            goto done;
        }
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        for (int c = 0; c < ncols; c++)
            cells[c] = column_value(env, stmt, c);
        rows = enif_make_list_cell(env, enif_make_tuple_from_array(env, cells, (unsigned)ncols),
                                   rows);
    }
    if (cells != small)
        enif_free(cells);
    if (rc != SQLITE_DONE) {
        res = sqlite_error(env, h->db, rc);
        goto done;
    }
    {
        ERL_NIF_TERM ordered;
        int changes = sqlite3_stmt_readonly(stmt) ? 0 : sqlite3_changes(h->db);
        if (!enif_make_reverse_list(env, rows, &ordered))
            ordered = rows;
        res = enif_make_tuple3(env, p->atom_ok, ordered, enif_make_int(env, changes));
    }
done:
    sqlite3_finalize(stmt); /* NULL-safe */
    enif_mutex_unlock(h->lock);
    enif_free(s);
    return res;
}
