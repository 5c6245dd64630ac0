/* mailbox: see mailbox.c. */
#ifndef AION_MAILBOX_H
#define AION_MAILBOX_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_mailbox_load(ErlNifEnv *env, struct aion_mailbox_priv **out);
void aion_mailbox_unload(struct aion_mailbox_priv *priv);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * Each entry names its scheduler in a comment. */
#define AION_MAILBOX_NIFS /* none yet */

#endif
