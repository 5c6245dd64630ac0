/* json: see json.c. */
#ifndef AION_JSON_H
#define AION_JSON_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_json_load(ErlNifEnv *env, struct aion_json_priv **out);
void aion_json_unload(struct aion_json_priv *priv);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * Each entry names its scheduler in a comment. */
#define AION_JSON_NIFS /* none yet */

#endif
