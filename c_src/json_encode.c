/* json_encode.c: the payload encoder (json_encode/2) of the json module; see the
 * header comment of json.c for the mapping and the scheduling. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"

/* ---------------------------------------------------------------------------
 * Encode
 *
 * The output grows in one ErlNifBinary (doubling), handed to the caller without
 * a copy. `work` counts output bytes plus bignum conversion work; on a normal
 * scheduler the walk gives up (E_ABORT) as soon as it exceeds the budget and
 * json_encode starts again on a dirty CPU scheduler.
 * ------------------------------------------------------------------------- */

enum { E_OK = 0, E_PAYLOAD, E_ABORT, E_NOMEM };

typedef struct {
    ErlNifEnv *env;
    struct aion_json_priv *p;
    ErlNifBinary buf;
    int have_buf;
    size_t len;
    size_t work;
    size_t budget; /* SIZE_MAX when dirty */
    int why;       /* reason of E_PAYLOAD */
} encoder;

/* Room for n more bytes. */
static int reserve(encoder *e, size_t n)
{
    if (e->len + n <= e->buf.size)
        return E_OK;
    size_t cap = e->buf.size ? e->buf.size : 256;
    while (cap < e->len + n) {
        if (cap > SIZE_MAX / 2)
            return E_NOMEM;
        cap *= 2;
    }
    if (!enif_realloc_binary(&e->buf, cap))
        return E_NOMEM;
    return E_OK;
}

/* Accounts for n bytes of work; E_ABORT once over budget. */
static int spend(encoder *e, size_t n)
{
    e->work += n;
    return e->work > e->budget ? E_ABORT : E_OK;
}

static int put(encoder *e, const void *data, size_t n)
{
    int rc = spend(e, n);
    if (rc == E_OK)
        rc = reserve(e, n);
    if (rc != E_OK)
        return rc;
    memcpy(e->buf.data + e->len, data, n);
    e->len += n;
    return E_OK;
}

static int put_char(encoder *e, char c)
{
    return put(e, &c, 1);
}

/* A quoted, escaped JSON string from n bytes that must be UTF-8. */
static int put_string(encoder *e, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = spend(e, n + 2);
    if (rc == E_OK)
        rc = reserve(e, 6 * n + 2); /* worst case: every byte \u00XX */
    if (rc != E_OK)
        return rc;
    unsigned char *o = e->buf.data + e->len;
    const unsigned char *end = s + n;
    *o++ = '"';
    while (s < end) {
        unsigned char c = *s;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = c;
            s++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = json_utf8_seq(s, end);
            if (k == 0) {
                e->why = R_INVALID_UTF8;
                return E_PAYLOAD;
            }
            memcpy(o, s, k);
            o += k;
            s += k;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = (unsigned char)hex[c >> 4];
            *o++ = (unsigned char)hex[c & 15];
        }
        s++;
    }
    *o++ = '"';
    e->len = (size_t)(o - e->buf.data);
    return E_OK;
}

/* The UTF-8 text of an atom into buf (at least 4 * 255 bytes); its length, or
 * (size_t)-1. Latin-1 atoms directly; others (Unicode atoms, which OTP 25's
 * enif_get_atom cannot return) from their external format. */
#define ATOM_TEXT_MAX ((size_t)4 * 255)
static size_t atom_text(ErlNifEnv *env, ERL_NIF_TERM atom, unsigned char *buf)
{
    char l1[256];
    int n = enif_get_atom(env, atom, l1, sizeof l1, ERL_NIF_LATIN1);
    if (n > 0) {
        unsigned char *o = buf;
        for (int i = 0; i < n - 1; i++)
            o = json_utf8_put(o, (unsigned char)l1[i]);
        return (size_t)(o - buf);
    }
    ErlNifBinary etf;
    if (!enif_term_to_binary(env, atom, &etf))
        return (size_t)-1;
    size_t len = (size_t)-1, off = 0;
    if (etf.size >= 3 && etf.data[1] == 119) { /* SMALL_ATOM_UTF8_EXT */
        len = etf.data[2];
        off = 3;
    } else if (etf.size >= 4 && etf.data[1] == 118) { /* ATOM_UTF8_EXT */
        len = ((size_t)etf.data[2] << 8) | etf.data[3];
        off = 4;
    }
    if (len != (size_t)-1 && (len > ATOM_TEXT_MAX || off + len > etf.size))
        len = (size_t)-1;
    if (len != (size_t)-1)
        memcpy(buf, etf.data + off, len);
    enif_release_binary(&etf);
    return len;
}

/* A binary term with the atom's text (for error paths). */
static ERL_NIF_TERM atom_to_binary_term(ErlNifEnv *env, ERL_NIF_TERM atom)
{
    unsigned char text[ATOM_TEXT_MAX];
    size_t n = atom_text(env, atom, text);
    ERL_NIF_TERM bin;
    if (n == (size_t)-1)
        n = 0;
    unsigned char *o = enif_make_new_binary(env, n, &bin);
    if (o == NULL)
        return enif_make_atom(env, "undefined");
    memcpy(o, text, n);
    return bin;
}

static int put_double(encoder *e, double x)
{
    char b[40];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(b, sizeof b - 2, "%.*g", prec, x);
        if (strtod(b, NULL) == x)
            break;
    }
    if (n <= 0 || (size_t)n >= sizeof b - 2)
        return E_NOMEM;
    if (strpbrk(b, ".e") == NULL) { /* "1" would decode as an integer */
        b[n++] = '.';
        b[n++] = '0';
    }
    return put(e, b, (size_t)n);
}

/* An integer beyond 64 bits, from its external format (SMALL_/LARGE_BIG_EXT). */
static int put_bignum(encoder *e, ERL_NIF_TERM t)
{
    ErlNifBinary etf;
    if (!enif_term_to_binary(e->env, t, &etf))
        return E_NOMEM;
    size_t n = 0, off = 0;
    int neg = 0, rc = E_OK;
    if (etf.size >= 4 && etf.data[1] == 110) {
        n = etf.data[2];
        neg = etf.data[3] != 0;
        off = 4;
    } else if (etf.size >= 7 && etf.data[1] == 111) {
        n = ((size_t)etf.data[2] << 24) | ((size_t)etf.data[3] << 16) |
            ((size_t)etf.data[4] << 8) | etf.data[5];
        neg = etf.data[6] != 0;
        off = 7;
    }
    if (off == 0 || off + n > etf.size) {
        enif_release_binary(&etf);
        e->why = R_UNSUPPORTED_TYPE;
        return E_PAYLOAD;
    }
    /* 4,300 decimal digits need 1,786 bytes; the digit count is checked below. */
    if (n > 1800) {
        enif_release_binary(&etf);
        e->why = R_NUMBER_OUT_OF_RANGE;
        return E_PAYLOAD;
    }
    rc = spend(e, n * n); /* ~ n^2/15 64-bit divisions */
    size_t nl = (n + 3) / 4, nc = 0;
    uint32_t *limb = NULL, *chunk = NULL;
    char *text = NULL;
    if (rc == E_OK) {
        limb = enif_alloc((nl + 1) * sizeof *limb);
        chunk = enif_alloc((2 * nl + 2) * sizeof *chunk);
        text = enif_alloc(9 * (2 * nl + 2) + 2);
        if (limb == NULL || chunk == NULL || text == NULL)
            rc = E_NOMEM;
    }
    if (rc == E_OK) {
        memset(limb, 0, (nl + 1) * sizeof *limb);
        for (size_t b = 0; b < n; b++)
            limb[b / 4] |= (uint32_t)etf.data[off + b] << (8 * (b % 4));
        while (nl > 0 && limb[nl - 1] == 0)
            nl--;
        while (nl > 0) { /* repeated division by 10^9, least significant first */
            uint64_t rem = 0;
            for (size_t i = nl; i-- > 0;) {
                uint64_t cur = (rem << 32) | limb[i];
                limb[i] = (uint32_t)(cur / 1000000000u);
                rem = cur % 1000000000u;
            }
            chunk[nc++] = (uint32_t)rem;
            while (nl > 0 && limb[nl - 1] == 0)
                nl--;
        }
        if (nc == 0)
            chunk[nc++] = 0;
        size_t len = 0;
        if (neg)
            text[len++] = '-';
        len += (size_t)sprintf(text + len, "%" PRIu32, chunk[nc - 1]);
        for (size_t i = nc - 1; i-- > 0;)
            len += (size_t)sprintf(text + len, "%09" PRIu32, chunk[i]);
        if (len - (size_t)neg > AION_JSON_MAX_INT_DIGITS) {
            e->why = R_NUMBER_OUT_OF_RANGE;
            rc = E_PAYLOAD;
        } else {
            rc = put(e, text, len);
        }
    }
    if (text != NULL)
        enif_free(text);
    if (chunk != NULL)
        enif_free(chunk);
    if (limb != NULL)
        enif_free(limb);
    enif_release_binary(&etf);
    return rc;
}

/* One open list or map of the walk. `cur` is the path element of the member
 * being written (list index, or map key term). */
typedef struct {
    int is_map;
    ERL_NIF_TERM tail; /* list: the rest */
    size_t index;      /* members written so far */
    ErlNifMapIterator it;
    ERL_NIF_TERM cur_key;
} frame;

/* Frames in fixed blocks allocated on demand (a frame never moves: it holds a
 * live map iterator); a flat term needs no allocation beyond the first block. */
#define FRAMES_PER_BLOCK 32
typedef struct {
    frame *block[AION_JSON_MAX_DEPTH / FRAMES_PER_BLOCK];
} frame_stack;

/* Frame d, allocating its block when needed; NULL if that fails. */
static frame *frame_at(frame_stack *fs, size_t d)
{
    frame **b = &fs->block[d / FRAMES_PER_BLOCK];
    if (*b == NULL)
        *b = enif_alloc(FRAMES_PER_BLOCK * sizeof **b);
    return *b == NULL ? NULL : &(*b)[d % FRAMES_PER_BLOCK];
}

static void frames_free(frame_stack *fs)
{
    for (size_t i = 0; i < AION_JSON_MAX_DEPTH / FRAMES_PER_BLOCK; i++)
        if (fs->block[i] != NULL)
            enif_free(fs->block[i]);
}

/* A scalar, or E_OK with *open set when t is a list or map to descend into. */
static int put_scalar(encoder *e, ERL_NIF_TERM t)
{
    ErlNifEnv *env = e->env;
    ErlNifSInt64 i;
    ErlNifUInt64 u;
    double d;
    ErlNifBinary b;
    char num[24];
    switch (enif_term_type(env, t)) {
    case ERL_NIF_TERM_TYPE_ATOM: {
        if (enif_is_identical(t, e->p->atom_true))
            return put(e, "true", 4);
        if (enif_is_identical(t, e->p->atom_false))
            return put(e, "false", 5);
        if (enif_is_identical(t, e->p->atom_null))
            return put(e, "null", 4);
        unsigned char text[ATOM_TEXT_MAX];
        size_t n = atom_text(env, t, text);
        if (n == (size_t)-1) {
            e->why = R_UNSUPPORTED_TYPE;
            return E_PAYLOAD;
        }
        return put_string(e, text, n);
    }
    case ERL_NIF_TERM_TYPE_INTEGER:
        if (enif_get_int64(env, t, &i))
            return put(e, num, (size_t)snprintf(num, sizeof num, "%" PRId64, (int64_t)i));
        if (enif_get_uint64(env, t, &u))
            return put(e, num, (size_t)snprintf(num, sizeof num, "%" PRIu64, (uint64_t)u));
        return put_bignum(e, t);
    case ERL_NIF_TERM_TYPE_FLOAT:
        if (!enif_get_double(env, t, &d))
            break;
        return put_double(e, d);
    case ERL_NIF_TERM_TYPE_BITSTRING:
        if (!enif_inspect_binary(env, t, &b))
            break; /* not a whole number of bytes */
        return put_string(e, b.data, b.size);
    default:
        break;
    }
    e->why = R_UNSUPPORTED_TYPE;
    return E_PAYLOAD;
}

/* The key text of a map member into buf; E_PAYLOAD (invalid_key) if the key is
 * not an atom or UTF-8 binary, or an atom whose text is also a key of the map. */
static int key_text(encoder *e, ERL_NIF_TERM map, ERL_NIF_TERM k, const unsigned char **text,
                    size_t *n, unsigned char *buf)
{
    ErlNifBinary b;
    e->why = R_INVALID_KEY;
    if (enif_inspect_binary(e->env, k, &b)) {
        int rc = spend(e, b.size); /* validating a long key is work too */
        if (rc != E_OK)
            return rc;
        if (!json_utf8_valid(b.data, b.size))
            return E_PAYLOAD;
        *text = b.data;
        *n = b.size;
        return E_OK;
    }
    if (!enif_is_atom(e->env, k))
        return E_PAYLOAD;
    *n = atom_text(e->env, k, buf);
    if (*n == (size_t)-1)
        return E_PAYLOAD;
    *text = buf;
    size_t size;
    if (enif_get_map_size(e->env, map, &size) && size > 1) {
        ERL_NIF_TERM bin, v;
        unsigned char *o = enif_make_new_binary(e->env, *n, &bin);
        if (o == NULL)
            return E_NOMEM;
        memcpy(o, buf, *n);
        if (enif_get_map_value(e->env, map, bin, &v))
            return E_PAYLOAD; /* both a and <<"a">>: one JSON name */
    }
    return E_OK;
}

/* {error, {invalid_payload, Path, Why}} with the path of the first n frames. */
static ERL_NIF_TERM invalid_payload(encoder *e, frame_stack *st, size_t n)
{
    ErlNifEnv *env = e->env;
    ERL_NIF_TERM path = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;) {
        const frame *f = frame_at(st, i); /* allocated: i < depth */
        ERL_NIF_TERM el;
        if (f == NULL)
            continue;
        if (!f->is_map)
            el = enif_make_uint64(env, f->index - 1);
        else if (enif_is_atom(env, f->cur_key))
            el = atom_to_binary_term(env, f->cur_key);
        else
            el = f->cur_key;
        path = enif_make_list_cell(env, el, path);
    }
    return enif_make_tuple2(env, e->p->atom_error,
                            enif_make_tuple3(env, e->p->atom_invalid_payload, path,
                                             e->p->reasons[e->why]));
}

/* Walks the term. Returns E_*; on E_PAYLOAD *result is the error term. */
static int walk(encoder *e, ERL_NIF_TERM root, frame_stack *st, ERL_NIF_TERM *result)
{
    ErlNifEnv *env = e->env;
    size_t depth = 0;
    size_t err_depth = 0;
    ERL_NIF_TERM v = root;
    unsigned char keybuf[ATOM_TEXT_MAX];
    int rc;
    for (;;) {
        /* Write v, or open it. */
        int is_list = enif_is_list(env, v), is_map = enif_is_map(env, v);
        if (is_list || is_map) {
            err_depth = depth;
            if (depth >= AION_JSON_MAX_DEPTH) {
                e->why = R_TOO_DEEP;
                rc = E_PAYLOAD;
                goto out;
            }
            frame *f = frame_at(st, depth);
            if (f == NULL) {
                rc = E_NOMEM;
                goto out;
            }
            f->is_map = is_map;
            f->index = 0;
            f->tail = v;
            if (is_map && !enif_map_iterator_create(env, v, &f->it, ERL_NIF_MAP_ITERATOR_FIRST)) {
                rc = E_NOMEM;
                goto out;
            }
            depth++;
            rc = put_char(e, is_map ? '{' : '[');
        } else {
            err_depth = depth;
            rc = put_scalar(e, v);
        }
        if (rc != E_OK)
            goto out;
        /* Next member of the innermost open container, closing finished ones. */
        for (;;) {
            if (depth == 0)
                goto out;
            frame *f = frame_at(st, depth - 1);
            ERL_NIF_TERM k, next;
            if (!f->is_map) {
                if (enif_get_list_cell(env, f->tail, &v, &next)) {
                    f->tail = next;
                    rc = f->index++ ? put_char(e, ',') : E_OK;
                    break;
                }
                if (!enif_is_empty_list(env, f->tail)) { /* improper tail */
                    f->index++;
                    err_depth = depth;
                    e->why = R_UNSUPPORTED_TYPE;
                    rc = E_PAYLOAD;
                    goto out;
                }
                rc = put_char(e, ']');
            } else {
                if (enif_map_iterator_get_pair(env, &f->it, &k, &v)) {
                    const unsigned char *text;
                    size_t n;
                    enif_map_iterator_next(env, &f->it);
                    err_depth = depth - 1;
                    rc = key_text(e, f->tail, k, &text, &n, keybuf);
                    if (rc == E_OK && f->index++)
                        rc = put_char(e, ',');
                    if (rc == E_OK)
                        rc = put_string(e, text, n);
                    if (rc == E_OK)
                        rc = put_char(e, ':');
                    f->cur_key = k;
                    break;
                }
                enif_map_iterator_destroy(env, &f->it);
                rc = put_char(e, '}');
            }
            depth--;
            if (rc != E_OK)
                goto out;
        }
        if (rc != E_OK)
            goto out;
    }
out:
    for (size_t i = depth; i-- > 0;) {
        frame *f = frame_at(st, i);
        if (f != NULL && f->is_map)
            enif_map_iterator_destroy(env, &f->it);
    }
    if (rc == E_PAYLOAD)
        *result = invalid_payload(e, st, err_depth);
    return rc;
}

static ERL_NIF_TERM encode_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

static ERL_NIF_TERM encode_run(ErlNifEnv *env, const ERL_NIF_TERM argv[], int dirty)
{
    ErlNifUInt64 budget;
    if (!enif_get_uint64(env, argv[1], &budget))
        return enif_make_badarg(env);
    encoder e;
    memset(&e, 0, sizeof e);
    e.env = env;
    e.p = json_priv(env);
    e.budget = dirty || budget > SIZE_MAX ? SIZE_MAX : (size_t)budget;
    if (!enif_alloc_binary(256, &e.buf))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    frame_stack st;
    memset(&st, 0, sizeof st);
    ERL_NIF_TERM result = 0;
    int rc = walk(&e, argv[0], &st, &result);
    frames_free(&st);
    if (rc == E_OK && enif_realloc_binary(&e.buf, e.len))
        return enif_make_tuple2(env, e.p->atom_ok, enif_make_binary(env, &e.buf));
    enif_release_binary(&e.buf);
    if (rc == E_PAYLOAD)
        return result;
    if (rc == E_ABORT)
        return enif_schedule_nif(env, "json_encode", ERL_NIF_DIRTY_JOB_CPU_BOUND, encode_dirty,
                                 2, argv);
    return enif_raise_exception(env, enif_make_atom(env, "enomem"));
}

static ERL_NIF_TERM encode_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return encode_run(env, argv, 1);
}

/* json_encode(Term, Budget) -> {ok, Binary} | {error, {invalid_payload, Path, Why}}.
 * Starts on a normal scheduler; more than Budget bytes of work -> restarts dirty. */
ERL_NIF_TERM aion_nif_json_encode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return encode_run(env, argv, 0);
}
