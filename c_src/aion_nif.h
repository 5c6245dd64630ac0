/* Shared declarations of the aion NIF library.
 *
 * The library is split by concern (store.c, json.c, mailbox.c); aion_nif.c holds
 * ERL_NIF_INIT, the function table and load/upgrade/unload. Each module keeps its
 * atoms and resource types in its own private struct, allocated in load and reached
 * through enif_priv_data: there is no mutable C global state, and all per-engine
 * state lives in resources. */
#ifndef AION_NIF_H
#define AION_NIF_H

#include <erl_nif.h>

struct aion_store_priv;
struct aion_json_priv;
struct aion_mailbox_priv;
struct aion_sql_priv;

typedef struct aion_priv {
    struct aion_store_priv   *store;
    struct aion_json_priv    *json;
    struct aion_mailbox_priv *mailbox;
    struct aion_sql_priv     *sql;
} aion_priv;

static inline aion_priv *aion_priv_of(ErlNifEnv *env)
{
    return (aion_priv *)enif_priv_data(env);
}

/* {error, Reason} */
static inline ERL_NIF_TERM aion_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, enif_make_atom(env, "error"), reason);
}

/* {ok, Value} */
static inline ERL_NIF_TERM aion_ok(ErlNifEnv *env, ERL_NIF_TERM value)
{
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), value);
}

#endif
