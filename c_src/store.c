/* store: placeholder until the module lands. */
#include "store.h"

struct aion_store_priv {
    int unused;
};

int aion_store_load(ErlNifEnv *env, struct aion_store_priv **out)
{
    struct aion_store_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    p->unused = 0;
    *out = p;
    return 0;
}

void aion_store_unload(struct aion_store_priv *priv)
{
    enif_free(priv);
}
