/* json_int.h: what json.c (decoder, module load) and json_encode.c (encoder)
 * share. Private to the json module. */
#ifndef AION_JSON_INT_H
#define AION_JSON_INT_H

#include <stddef.h>

#include "json.h"

/* Maximum nesting of arrays and objects (decode and encode). */
#define AION_JSON_MAX_DEPTH 512
/* Maximum number of decimal digits of an integer (decode and encode). */
#define AION_JSON_MAX_INT_DIGITS 4300

/* Error reasons. The decoder's are the Why of {invalid_json, Offset, Why}, the
 * encoder's the Why of {invalid_payload, Path, Why}. Order matches reason_names. */
enum json_reason {
    R_EMPTY,
    R_UNEXPECTED_END,
    R_INVALID_TOKEN,
    R_INVALID_STRING,
    R_INVALID_ESCAPE,
    R_LONE_SURROGATE,
    R_INVALID_UTF8,
    R_INVALID_NUMBER,
    R_NUMBER_OUT_OF_RANGE,
    R_TRAILING_DATA,
    R_TOO_DEEP,
    R_TOO_LARGE,
    R_UNSUPPORTED_TYPE,
    R_INVALID_KEY,
    R_COUNT
};


struct aion_json_priv {
    ERL_NIF_TERM reasons[R_COUNT];
    ERL_NIF_TERM atom_ok;
    ERL_NIF_TERM atom_error;
    ERL_NIF_TERM atom_invalid_json;
    ERL_NIF_TERM atom_invalid_payload;
    ERL_NIF_TERM atom_true;
    ERL_NIF_TERM atom_false;
    ERL_NIF_TERM atom_null;
    ERL_NIF_TERM atom_reason;      /* `error' (atom_error) and `reason': term fields */
    ERL_NIF_TERM atom_seq;
    ERL_NIF_TERM atom_type;
    ERL_NIF_TERM atom_recorded_at;
    ERL_NIF_TERM atom_mixed;
};

static inline struct aion_json_priv *json_priv(ErlNifEnv *env)
{
    return aion_priv_of(env)->json;
}

/* UTF-8 helpers (json.c). */
size_t json_utf8_seq(const unsigned char *p, const unsigned char *end);
int json_utf8_valid(const unsigned char *p, size_t len);
unsigned char *json_utf8_put(unsigned char *o, unsigned long cp);

#endif
