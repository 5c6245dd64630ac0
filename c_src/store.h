/* store: the SQLite event store (store.c, store_write.c, store_read.c; store_int.h). */
#ifndef AION_STORE_H
#define AION_STORE_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_store_load(ErlNifEnv *env, struct aion_store_priv **out);
void aion_store_unload(struct aion_store_priv *priv);

ERL_NIF_TERM aion_store_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_append(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_history(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_get_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_current_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_runs_by_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_list(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_due_timers(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_activity_tasks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_checkpoint(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_store_runs_to_resume(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * Each entry names its scheduler in a comment. Everything that touches SQLite runs
 * on a dirty IO scheduler; store_append only parses, copies and enqueues (the
 * writer thread does the SQLite work) so it runs on a normal scheduler. */
#define AION_STORE_NIFS                                                                     \
    {"store_open", 5, aion_store_open, ERL_NIF_DIRTY_JOB_IO_BOUND},         /* dirty IO */  \
    {"store_close", 1, aion_store_close, ERL_NIF_DIRTY_JOB_IO_BOUND},       /* dirty IO */  \
    {"store_append", 4, aion_store_append, 0},                              /* normal */    \
    {"store_history", 3, aion_store_history, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* dirty IO */  \
    {"store_get_run", 2, aion_store_get_run, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* dirty IO */  \
    {"store_current_run", 2, aion_store_current_run, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"store_runs_by_status", 2, aion_store_runs_by_status, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"store_list", 2, aion_store_list, ERL_NIF_DIRTY_JOB_IO_BOUND},         /* dirty IO */  \
    {"store_count", 2, aion_store_count, ERL_NIF_DIRTY_JOB_IO_BOUND},       /* dirty IO */  \
    {"store_due_timers", 4, aion_store_due_timers, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"store_activity_tasks", 2, aion_store_activity_tasks, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"store_checkpoint", 1, aion_store_checkpoint, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */ \
    {"store_runs_to_resume", 1, aion_store_runs_to_resume, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* dirty IO */

#endif
