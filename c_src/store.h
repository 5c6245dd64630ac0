/* store: see store.c. */
#ifndef AION_STORE_H
#define AION_STORE_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_store_load(ErlNifEnv *env, struct aion_store_priv **out);
void aion_store_unload(struct aion_store_priv *priv);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * Each entry names its scheduler in a comment. */
#define AION_STORE_NIFS /* none yet */

#endif
