/* json: see json.c. */
#ifndef AION_JSON_H
#define AION_JSON_H

#include "aion_nif.h"

/* Called from the library's load (and upgrade): make atoms and resource types.
 * Returns 0 on success. */
int aion_json_load(ErlNifEnv *env, struct aion_json_priv **out);
void aion_json_unload(struct aion_json_priv *priv);

ERL_NIF_TERM aion_nif_json_decode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_json_encode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM aion_nif_json_decode_events(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Function-table entries of this module, spliced into aion_nif.c's table.
 * All start on a normal scheduler and move themselves to a dirty CPU scheduler
 * (enif_schedule_nif) when the work exceeds the byte budget given as 2nd argument. */
#define AION_JSON_NIFS                                                         \
    {"json_decode", 2, aion_nif_json_decode, 0}, /* normal; dirty CPU > budget */ \
    {"json_encode", 2, aion_nif_json_encode, 0}, /* normal; dirty CPU > budget */ \
    {"json_decode_events", 2, aion_nif_json_decode_events, 0}, /* same */

#endif
