/* mailbox: marker delivery, two-phase completion retention and wake epochs.
 * See mailbox.c for the design. */
#ifndef AION_MAILBOX_H
#define AION_MAILBOX_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_mailbox_load(ErlNifEnv *env, struct aion_mailbox_priv **out);
void aion_mailbox_unload(struct aion_mailbox_priv *priv);

ERL_NIF_TERM aion_nif_mailbox_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_retain(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_take(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_take_all(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_bump_epoch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_epoch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_forget(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_mailbox_release(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * All run on normal schedulers: each holds the mailbox mutex only for a hash
 * lookup and list surgery (O(entries of one pid), plus at most a bounded
 * incremental-rehash step); term copies, env frees and sends happen outside it. */
#define AION_MAILBOX_NIFS                                                      \
    {"mailbox_new", 1, aion_nif_mailbox_new, 0},               /* normal */    \
    {"mailbox_retain", 5, aion_nif_mailbox_retain, 0},         /* normal */    \
    {"mailbox_take", 3, aion_nif_mailbox_take, 0},             /* normal */    \
    {"mailbox_take_all", 2, aion_nif_mailbox_take_all, 0},     /* normal */    \
    {"mailbox_bump_epoch", 2, aion_nif_mailbox_bump_epoch, 0}, /* normal */    \
    {"mailbox_epoch", 2, aion_nif_mailbox_epoch, 0},           /* normal */    \
    {"mailbox_count", 1, aion_nif_mailbox_count, 0},           /* normal */    \
    {"mailbox_forget", 2, aion_nif_mailbox_forget, 0},         /* normal */    \
    {"mailbox_release", 2, aion_nif_mailbox_release, 0},       /* normal */

#endif
