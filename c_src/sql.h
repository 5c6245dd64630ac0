/* sql: a small generic SQLite handle for the examples and tools (not the event store).
 * See sql.c. */
#ifndef AION_SQL_H
#define AION_SQL_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_sql_load(ErlNifEnv *env, struct aion_sql_priv **out);
void aion_sql_unload(struct aion_sql_priv *priv);

ERL_NIF_TERM nif_sql_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_sql_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_sql_exec(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_sql_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * Every call may touch disk or wait on the handle's lock: all on dirty IO. */
#define AION_SQL_NIFS \
    {"sql_open", 3, nif_sql_open, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* dirty IO */ \
    {"sql_close", 1, nif_sql_close, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"sql_exec", 2, nif_sql_exec, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* dirty IO */ \
    {"sql_query", 3, nif_sql_query, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */

#endif
