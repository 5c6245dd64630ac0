/* aion_nif: library entry. ERL_NIF_INIT, the function table, load/upgrade/unload.
 * The NIFs themselves live in store.c (SQLite event store), json.c (payload codec)
 * and mailbox.c (marker delivery, completion retention, wake epochs); sql.c is a
 * small generic SQLite handle for the examples and tools. */
#include <string.h>
#include <sqlite3.h>

#include "aion_nif.h"
#include "store.h"
#include "json.h"
#include "mailbox.h"
#include "sql.h"

/* build_info() -> #{sqlite_version => binary(), nif_version => {Major, Minor}}.
 * Normal scheduler: constant work. */
static ERL_NIF_TERM nif_build_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    const char *v = sqlite3_libversion();
    ERL_NIF_TERM bin;
    size_t n = strlen(v);
    unsigned char *buf = enif_make_new_binary(env, n, &bin);
    if (buf == NULL)
        return enif_make_badarg(env);
    memcpy(buf, v, n); /* NOLINT(bugprone-not-null-terminated-result): a binary, not a C string */
    ERL_NIF_TERM keys[2] = {enif_make_atom(env, "sqlite_version"),
                            enif_make_atom(env, "nif_version")};
    ERL_NIF_TERM vals[2] = {bin, enif_make_tuple2(env, enif_make_int(env, ERL_NIF_MAJOR_VERSION),
                                                  enif_make_int(env, ERL_NIF_MINOR_VERSION))};
    ERL_NIF_TERM map;
    if (!enif_make_map_from_arrays(env, keys, vals, 2, &map))
        return enif_make_badarg(env);
    return map;
}

static ErlNifFunc nif_funcs[] = {
    {"build_info", 0, nif_build_info, 0}, /* normal */
    AION_STORE_NIFS
    AION_JSON_NIFS
    AION_MAILBOX_NIFS
    AION_SQL_NIFS
};

static void free_priv(aion_priv *p)
{
    if (p == NULL)
        return;
    if (p->store)
        aion_store_unload(p->store);
    if (p->json)
        aion_json_unload(p->json);
    if (p->mailbox)
        aion_mailbox_unload(p->mailbox);
    if (p->sql)
        aion_sql_unload(p->sql);
    enif_free(p);
}

static int load(ErlNifEnv *env, void **priv_data, ERL_NIF_TERM load_info)
{
    aion_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    memset(p, 0, sizeof *p);
    if (aion_store_load(env, &p->store) != 0 || aion_json_load(env, &p->json) != 0 ||
        aion_mailbox_load(env, &p->mailbox) != 0 || aion_sql_load(env, &p->sql) != 0) {
        free_priv(p);
        return 1;
    }
    *priv_data = p;
    return 0;
}

/* Upgrade is "load again": resource types are reopened with ERL_NIF_RT_TAKEOVER. */
static int upgrade(ErlNifEnv *env, void **priv_data, void **old_priv_data, ERL_NIF_TERM load_info)
{
    return load(env, priv_data, load_info);
}

static void unload(ErlNifEnv *env, void *priv_data)
{
    free_priv((aion_priv *)priv_data);
}

ERL_NIF_INIT(aion_nif, nif_funcs, load, NULL, upgrade, unload)
