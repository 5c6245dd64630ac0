/* json: placeholder until the module lands. */
#include "json.h"

struct aion_json_priv {
    int unused;
};

int aion_json_load(ErlNifEnv *env, struct aion_json_priv **out)
{
    struct aion_json_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    p->unused = 0;
    *out = p;
    return 0;
}

void aion_json_unload(struct aion_json_priv *priv)
{
    enif_free(priv);
}
