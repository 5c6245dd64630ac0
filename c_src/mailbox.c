/* mailbox: placeholder until the module lands. */
#include "mailbox.h"

struct aion_mailbox_priv {
    int unused;
};

int aion_mailbox_load(ErlNifEnv *env, struct aion_mailbox_priv **out)
{
    struct aion_mailbox_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    p->unused = 0;
    *out = p;
    return 0;
}

void aion_mailbox_unload(struct aion_mailbox_priv *priv)
{
    enif_free(priv);
}
