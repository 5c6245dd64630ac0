/* json: the payload codec (SPEC 1 "Payload", 5.3 "JSON").
 *
 * Decoding (json_decode/2) runs in three passes over the input binary:
 *   1. scan: our own RFC 8259 validator. jsmn is deliberately permissive (it skips
 *      commas and colons it does not need, accepts any unquoted text as a primitive,
 *      stops at NUL, does not check UTF-8), so every byte is checked here first:
 *      grammar, number syntax, literal spelling, string escapes (\u surrogate
 *      pairs; lone surrogates rejected), raw control characters, UTF-8 (overlongs,
 *      encoded surrogates, > U+10FFFF, truncation), the four RFC whitespace bytes,
 *      trailing data and the nesting limit. It is iterative (an explicit container
 *      stack of AION_JSON_MAX_DEPTH entries) and yields the exact byte offset and
 *      reason of the first error.
 *   2. tokenise: jsmn (JSMN_PARENT_LINKS; not JSMN_STRICT, whose primitive rule
 *      rejects a top-level scalar at the end of the input). The validator
 *      counts the tokens, so one jsmn pass fills an array of exactly that size
 *      (enif_alloc'ed, freed on every path). On validated input jsmn's tokens are
 *      exact.
 *   3. build: the tokens are in pre-order; walking them backwards with a value
 *      stack builds every container from its already built children, so there is
 *      no C recursion at all.
 *
 * Decoding decisions:
 *   - objects become maps with binary keys; a duplicate key: the last one wins;
 *   - integers are exact: int64 when they fit, otherwise a bignum built from the
 *     decimal digits (as an external-format big integer, enif_binary_to_term);
 *     integers with more than AION_JSON_MAX_INT_DIGITS digits are rejected with
 *     number_out_of_range (decimal <-> binary conversion is quadratic; the limit,
 *     the same as CPython's int_max_str_digits, bounds the work per number);
 *   - a number with a fraction or an exponent is a float (strtod; the BEAM runs C
 *     code in the "C" numeric locale); one that overflows a double is
 *     number_out_of_range; underflow gives the nearest double (0.0 or subnormal);
 *   - "-0" is the integer 0, "-0.0" the float -0.0.
 *
 * Encoding (json_encode/2) walks the term with an explicit stack (depth limit
 * AION_JSON_MAX_DEPTH, the decoder's, so everything encoded can be decoded) and
 * writes into one growing binary; see json_encode.c (shared
 * definitions in json_int.h).
 *
 * json_decode_events/2 (for aion_event) decodes a list of stored history rows in one
 * call: each row's object becomes the event map directly (top-level keys as existing
 * atoms, plus seq/type/recorded_at), in a single pass that validates and builds at
 * once with the validator's own token checks (build_event_pass: no jsmn pass);
 * nested objects and arrays whose exact text recurs in the call are built once and
 * shared. Rows it cannot take are returned as they are for the Erlang decoder. See
 * the section "Decode a history" below.
 *
 * Scheduling: all NIFs start on a normal scheduler. Decode moves to a dirty CPU
 * scheduler (enif_schedule_nif) when the input plus a bignum work estimate exceeds
 * the budget (2nd argument; aion_json passes 64 KiB); json_decode_events the same
 * for the sum of its rows. Encode gives up as soon as its output would exceed the
 * budget and starts again on a dirty CPU scheduler, so the wasted work is bounded
 * by the budget. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json_int.h"

static const char *const reason_names[R_COUNT] = {
    "empty",         "unexpected_end",      "invalid_token",  "invalid_string",
    "invalid_escape", "lone_surrogate",     "invalid_utf8",   "invalid_number",
    "number_out_of_range", "trailing_data", "too_deep",       "too_large",
    "unsupported_type", "invalid_key",
};

int aion_json_load(ErlNifEnv *env, struct aion_json_priv **out)
{
    struct aion_json_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    for (int i = 0; i < R_COUNT; i++)
        p->reasons[i] = enif_make_atom(env, reason_names[i]);
    p->atom_ok = enif_make_atom(env, "ok");
    p->atom_error = enif_make_atom(env, "error");
    p->atom_invalid_json = enif_make_atom(env, "invalid_json");
    p->atom_invalid_payload = enif_make_atom(env, "invalid_payload");
    p->atom_true = enif_make_atom(env, "true");
    p->atom_false = enif_make_atom(env, "false");
    p->atom_null = enif_make_atom(env, "null");
    p->atom_reason = enif_make_atom(env, "reason");
    p->atom_seq = enif_make_atom(env, "seq");
    p->atom_type = enif_make_atom(env, "type");
    p->atom_recorded_at = enif_make_atom(env, "recorded_at");
    p->atom_mixed = enif_make_atom(env, "mixed");
    *out = p;
    return 0;
}

void aion_json_unload(struct aion_json_priv *priv)
{
    enif_free(priv);
}

/* ---------------------------------------------------------------------------
 * UTF-8
 * ------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (RFC 3629 table: no overlongs,
 * no encoded surrogates, nothing above U+10FFFF), or 0 if it is not one. */
size_t json_utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Whole buffer is UTF-8? */
int json_utf8_valid(const unsigned char *p, size_t len)
{
    const unsigned char *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t n = json_utf8_seq(p, end);
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Value of the 4 hex digits at p (caller checked they exist), or -1. */
static long hex4(const unsigned char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | h;
    }
    return v;
}

/* ---------------------------------------------------------------------------
 * Pass 1: the validator
 * ------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *in;
    size_t len;
    size_t pos;      /* current offset; the error offset on failure */
    int why;         /* enum json_reason on failure */
    size_t ntokens;  /* jsmn tokens expected: values + keys */
    size_t work;     /* len + an estimate of the bignum conversion work, in bytes */
} scanner;

static int scan_fail(scanner *s, size_t pos, int why)
{
    s->pos = pos;
    s->why = why;
    return -1;
}

static void skip_ws(scanner *s)
{
    while (s->pos < s->len) {
        unsigned char c = s->in[s->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        s->pos++;
    }
}

/* \uXXXX at s->pos (the backslash); on success s->pos is past it (and past the
 * low half of a surrogate pair). */
static int scan_u_escape(scanner *s)
{
    size_t bs = s->pos;
    if (s->len - bs < 6) {
        /* Too short for \uXXXX: an error at the first non-hex digit, else the end. */
        for (size_t i = bs + 2; i < s->len; i++)
            if (hexval(s->in[i]) < 0)
                return scan_fail(s, bs, R_INVALID_ESCAPE);
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    }
    long u = hex4(s->in + bs + 2);
    if (u < 0)
        return scan_fail(s, bs, R_INVALID_ESCAPE);
    s->pos = bs + 6;
    if (u >= 0xDC00 && u <= 0xDFFF)
        return scan_fail(s, bs, R_LONE_SURROGATE);
    if (u < 0xD800 || u > 0xDBFF)
        return 0;
    /* High surrogate: a \u low surrogate must follow. */
    size_t lo = s->pos;
    if (lo >= s->len)
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    if (s->in[lo] != '\\')
        return scan_fail(s, bs, R_LONE_SURROGATE);
    if (lo + 1 >= s->len)
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    if (s->in[lo + 1] != 'u')
        return scan_fail(s, bs, R_LONE_SURROGATE);
    s->pos = lo;
    if (s->len - lo < 6) {
        for (size_t i = lo + 2; i < s->len; i++)
            if (hexval(s->in[i]) < 0)
                return scan_fail(s, lo, R_INVALID_ESCAPE);
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    }
    long v = hex4(s->in + lo + 2);
    if (v < 0)
        return scan_fail(s, lo, R_INVALID_ESCAPE);
    if (v < 0xDC00 || v > 0xDFFF)
        return scan_fail(s, bs, R_LONE_SURROGATE);
    s->pos = lo + 6;
    return 0;
}

/* A string starting at the quote at s->pos; s->pos ends past the closing quote. */
static int scan_string(scanner *s)
{
    const unsigned char *in = s->in;
    size_t len = s->len;
    size_t i = s->pos + 1;
    for (;;) {
        while (i < len && in[i] >= 0x20 && in[i] < 0x80 && in[i] != '"' && in[i] != '\\')
            i++;
        if (i >= len)
            return scan_fail(s, len, R_UNEXPECTED_END);
        unsigned char c = in[i];
        if (c == '"') {
            s->pos = i + 1;
            s->ntokens++;
            return 0;
        }
        if (c < 0x20)
            return scan_fail(s, i, R_INVALID_STRING);
        if (c >= 0x80) {
            size_t n = json_utf8_seq(in + i, in + len);
            if (n == 0)
                return scan_fail(s, i, R_INVALID_UTF8);
            i += n;
            continue;
        }
        /* backslash */
        if (i + 1 >= len)
            return scan_fail(s, len, R_UNEXPECTED_END);
        switch (in[i + 1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            break;
        case 'u':
            s->pos = i;
            if (scan_u_escape(s) != 0)
                return -1;
            i = s->pos;
            break;
        default:
            return scan_fail(s, i, R_INVALID_ESCAPE);
        }
    }
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* At least one digit at i, else an error (unexpected_end at the end). */
static int need_digit(scanner *s, size_t i)
{
    if (i >= s->len)
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    if (!is_digit(s->in[i]))
        return scan_fail(s, i, R_INVALID_NUMBER);
    return 0;
}

/* number = [ minus ] int [ frac ] [ exp ]; int = zero / ( digit1-9 *DIGIT ) */
static int scan_number(scanner *s)
{
    const unsigned char *in = s->in;
    size_t len = s->len;
    size_t start = s->pos, i = start;
    int is_int = 1;
    if (in[i] == '-')
        i++;
    if (need_digit(s, i) != 0)
        return -1;
    size_t int_start = i;
    if (in[i] == '0') {
        i++;
        if (i < len && is_digit(in[i]))
            return scan_fail(s, i, R_INVALID_NUMBER);
    } else {
        while (i < len && is_digit(in[i]))
            i++;
    }
    size_t ndigits = i - int_start;
    if (i < len && in[i] == '.') {
        is_int = 0;
        i++;
        if (need_digit(s, i) != 0)
            return -1;
        while (i < len && is_digit(in[i]))
            i++;
    }
    if (i < len && (in[i] == 'e' || in[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < len && (in[i] == '+' || in[i] == '-'))
            i++;
        if (need_digit(s, i) != 0)
            return -1;
        while (i < len && is_digit(in[i]))
            i++;
    }
    if (is_int && ndigits > AION_JSON_MAX_INT_DIGITS)
        return scan_fail(s, start, R_NUMBER_OUT_OF_RANGE);
    if (is_int && ndigits > 18)
        s->work += ndigits * ndigits / 64; /* ~ d^2/86 limb multiply-adds */
    s->pos = i;
    s->ntokens++;
    return 0;
}

static int scan_literal(scanner *s, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t k = 0; k < n; k++) {
        size_t i = s->pos + k;
        if (i >= s->len)
            return scan_fail(s, s->len, R_UNEXPECTED_END);
        if (s->in[i] != (unsigned char)lit[k])
            return scan_fail(s, i, R_INVALID_TOKEN);
    }
    s->pos += n;
    s->ntokens++;
    return 0;
}

/* An object key and its colon, at s->pos (whitespace skipped); leaves s->pos at
 * the value (whitespace skipped). */
static int scan_key(scanner *s)
{
    if (s->pos >= s->len)
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    if (s->in[s->pos] != '"')
        return scan_fail(s, s->pos, R_INVALID_TOKEN);
    if (scan_string(s) != 0)
        return -1;
    skip_ws(s);
    if (s->pos >= s->len)
        return scan_fail(s, s->len, R_UNEXPECTED_END);
    if (s->in[s->pos] != ':')
        return scan_fail(s, s->pos, R_INVALID_TOKEN);
    s->pos++;
    skip_ws(s);
    return 0;
}

/* Validates the whole input. 0 if it is one RFC 8259 JSON text. */
static int scan(scanner *s)
{
    unsigned char stack[AION_JSON_MAX_DEPTH]; /* '[' or '{' per open container */
    size_t depth = 0;
    s->pos = 0;
    s->ntokens = 0;
    s->work = s->len;
    skip_ws(s);
    if (s->pos >= s->len)
        return scan_fail(s, s->len, R_EMPTY);
    for (;;) {
        /* A value at s->pos (whitespace skipped). */
        if (s->pos >= s->len)
            return scan_fail(s, s->len, R_UNEXPECTED_END);
        unsigned char c = s->in[s->pos];
        int rc = 0;
        switch (c) {
        case '{':
        case '[':
            if (depth >= AION_JSON_MAX_DEPTH)
                return scan_fail(s, s->pos, R_TOO_DEEP);
            stack[depth++] = c;
            s->ntokens++;
            s->pos++;
            skip_ws(s);
            if (s->pos < s->len && s->in[s->pos] == (c == '{' ? '}' : ']')) {
                depth--;
                s->pos++;
                break; /* an empty container is a complete value */
            }
            if (c == '{' && scan_key(s) != 0)
                return -1;
            continue; /* the first element or member value */
        case '"':
            rc = scan_string(s);
            break;
        case '-': case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            rc = scan_number(s);
            break;
        case 't':
            rc = scan_literal(s, "true");
            break;
        case 'f':
            rc = scan_literal(s, "false");
            break;
        case 'n':
            rc = scan_literal(s, "null");
            break;
        default:
            return scan_fail(s, s->pos, R_INVALID_TOKEN);
        }
        if (rc != 0)
            return -1;
        /* After a complete value: close containers, or a comma, or the end. */
        for (;;) {
            skip_ws(s);
            if (depth == 0) {
                if (s->pos < s->len)
                    return scan_fail(s, s->pos, R_TRAILING_DATA);
                return 0;
            }
            if (s->pos >= s->len)
                return scan_fail(s, s->len, R_UNEXPECTED_END);
            c = s->in[s->pos];
            unsigned char top = stack[depth - 1];
            if ((top == '[' && c == ']') || (top == '{' && c == '}')) {
                depth--;
                s->pos++;
                continue;
            }
            if (c != ',')
                return scan_fail(s, s->pos, R_INVALID_TOKEN);
            s->pos++;
            skip_ws(s);
            if (top == '{' && scan_key(s) != 0)
                return -1;
            break; /* next value */
        }
    }
}

/* ---------------------------------------------------------------------------
 * Pass 3 helpers: strings and numbers of validated input
 * ------------------------------------------------------------------------- */

static size_t utf8_len(unsigned long cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

unsigned char *json_utf8_put(unsigned char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *o++ = (unsigned char)(0xC0 | (cp >> 6));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (unsigned char)(0xE0 | (cp >> 12));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (unsigned char)(0xF0 | (cp >> 18));
        *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* The escape at p (a backslash) of validated input: its code point and length. */
static unsigned long read_escape(const unsigned char *p, size_t *adv)
{
    switch (p[1]) {
    case 'b': *adv = 2; return '\b';
    case 'f': *adv = 2; return '\f';
    case 'n': *adv = 2; return '\n';
    case 'r': *adv = 2; return '\r';
    case 't': *adv = 2; return '\t';
    case 'u': {
        unsigned long u = (unsigned long)hex4(p + 2);
        if (u >= 0xD800 && u <= 0xDBFF) {
            unsigned long v = (unsigned long)hex4(p + 8);
            *adv = 12;
            return 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00);
        }
        *adv = 6;
        return u;
    }
    default: *adv = 2; return p[1]; /* " \ / */
    }
}

/* The string content in[start, end) of validated input, unescaped. */
static int make_string(ErlNifEnv *env, const unsigned char *in, size_t start, size_t end,
                       ERL_NIF_TERM *out)
{
    size_t n = 0, adv;
    int escaped = 0;
    for (size_t i = start; i < end;) {
        if (in[i] == '\\') {
            n += utf8_len(read_escape(in + i, &adv));
            i += adv;
            escaped = 1;
        } else {
            n++;
            i++;
        }
    }
    unsigned char *o = enif_make_new_binary(env, n, out);
    if (o == NULL)
        return -1;
    if (!escaped) {
        memcpy(o, in + start, n);
        return 0;
    }
    for (size_t i = start; i < end;) {
        if (in[i] == '\\') {
            o = json_utf8_put(o, read_escape(in + i, &adv));
            i += adv;
        } else {
            *o++ = in[i++];
        }
    }
    return 0;
}

/* An integer of more than 64 bits from its decimal digits (validated, at most
 * AION_JSON_MAX_INT_DIGITS), via the external term format (LARGE_BIG_EXT). */
static int make_bignum(ErlNifEnv *env, int neg, const unsigned char *d, size_t nd,
                       ERL_NIF_TERM *out)
{
    size_t cap = nd / 9 + 2, nl = 0;
    uint32_t *limb = enif_alloc(cap * sizeof *limb);
    if (limb == NULL)
        return -1;
    size_t i = 0, first = nd % 9 ? nd % 9 : 9;
    while (i < nd) {
        size_t k = i == 0 ? first : 9;
        uint64_t carry = 0;
        for (size_t j = 0; j < k; j++)
            carry = carry * 10 + (uint64_t)(d[i + j] - '0');
        i += k;
        for (size_t j = 0; j < nl; j++) {
            uint64_t t = (uint64_t)limb[j] * 1000000000u + carry;
            limb[j] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry != 0 && nl < cap)
            limb[nl++] = (uint32_t)carry;
    }
    size_t nbytes = nl * 4;
    while (nbytes > 0 && ((limb[(nbytes - 1) / 4] >> (8 * ((nbytes - 1) % 4))) & 0xFF) == 0)
        nbytes--;
    size_t size = 7 + nbytes;
    unsigned char *ext = enif_alloc(size);
    if (ext == NULL) {
        enif_free(limb);
        return -1;
    }
    ext[0] = 131;
    ext[1] = 111; /* LARGE_BIG_EXT: 4-byte length, sign, little-endian digits */
    ext[2] = (unsigned char)(nbytes >> 24);
    ext[3] = (unsigned char)(nbytes >> 16);
    ext[4] = (unsigned char)(nbytes >> 8);
    ext[5] = (unsigned char)nbytes;
    ext[6] = (unsigned char)(neg ? 1 : 0);
    for (size_t b = 0; b < nbytes; b++)
        ext[7 + b] = (unsigned char)(limb[b / 4] >> (8 * (b % 4)));
    int ok = enif_binary_to_term(env, ext, size, out, 0) == size;
    enif_free(ext);
    enif_free(limb);
    return ok ? 0 : -1;
}

/* A number token p[0, n) of validated input. 0, or -1 (allocation failed), or
 * R_NUMBER_OUT_OF_RANGE. */
static int make_number(ErlNifEnv *env, const unsigned char *p, size_t n, ERL_NIF_TERM *out)
{
    int is_float = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '.' || p[i] == 'e' || p[i] == 'E')
            is_float = 1;
    if (is_float) {
        char small[64];
        char *buf = n < sizeof small ? small : enif_alloc(n + 1);
        if (buf == NULL)
            return -1;
        memcpy(buf, p, n);
        buf[n] = '\0';
        double x = strtod(buf, NULL);
        if (buf != small)
            enif_free(buf);
        if (!isfinite(x))
            return R_NUMBER_OUT_OF_RANGE;
        *out = enif_make_double(env, x);
        return 0;
    }
    int neg = p[0] == '-';
    const unsigned char *d = p + neg;
    size_t nd = n - (size_t)neg;
    uint64_t v = 0;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t digit = (uint64_t)(d[i] - '0');
        if (v > (UINT64_MAX - digit) / 10) {
            overflow = 1;
            break;
        }
        v = v * 10 + digit;
    }
    if (!overflow) {
        if (!neg && v <= (uint64_t)INT64_MAX) {
            *out = enif_make_int64(env, (int64_t)v);
            return 0;
        }
        if (!neg) {
            *out = enif_make_uint64(env, v);
            return 0;
        }
        if (v <= (uint64_t)INT64_MAX) {
            *out = enif_make_int64(env, -(int64_t)v);
            return 0;
        }
        if (v == (uint64_t)INT64_MAX + 1) {
            *out = enif_make_int64(env, INT64_MIN);
            return 0;
        }
    }
    return make_bignum(env, neg, d, nd, out);
}

/* ---------------------------------------------------------------------------
 * Decode
 * ------------------------------------------------------------------------- */

/* {error, {invalid_json, Offset, Why}} */
static ERL_NIF_TERM invalid_json(ErlNifEnv *env, size_t offset, int why)
{
    struct aion_json_priv *p = json_priv(env);
    return enif_make_tuple2(env, p->atom_error,
                            enif_make_tuple3(env, p->atom_invalid_json,
                                             enif_make_uint64(env, offset), p->reasons[why]));
}

static ERL_NIF_TERM decode_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Outcome of build() and decode_text(). */
enum build_rc { B_OK = 0, B_INVALID, B_ENOMEM, B_INTERNAL, B_FALLBACK };

/* Event mode (json_decode_events, build_event()): the root must be an object whose
 * keys become existing atoms (never created here), merged with three header pairs.
 * Anything else (a key that is not an existing atom, escaped or non-ASCII key text,
 * a duplicate key, a header key in the data, invalid JSON) is B_FALLBACK: the
 * caller leaves that row to the Erlang decoder, which gives the exact same result
 * or error. */
typedef struct {
    ERL_NIF_TERM keys[3], vals[3]; /* seq, type, recorded_at */
    int term_field;                /* out: an `error' or `reason' key is present */
    void *cache;                   /* key_cache of the call */
} ev_mode;

/* Per-call scratch shared by the rows of one call: tokens and the value stack
 * (2 * tokens + 6 terms). Grown on demand, freed by the caller. */
typedef struct {
    jsmntok_t *tok;
    ERL_NIF_TERM *vals;
    size_t cap; /* tokens */
} dec_buf;

static int dec_buf_reserve(dec_buf *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    size_t cap = b->cap == 0 ? 64 : b->cap;
    while (cap < n)
        cap *= 2;
    jsmntok_t *tok = enif_realloc(b->tok, cap * sizeof *tok);
    if (tok == NULL)
        return -1;
    b->tok = tok;
    ERL_NIF_TERM *vals = enif_realloc(b->vals, (2 * cap + 6) * sizeof *vals);
    if (vals == NULL)
        return -1;
    b->vals = vals;
    b->cap = cap;
    return 0;
}

static void dec_buf_free(dec_buf *b)
{
    if (b->tok != NULL)
        enif_free(b->tok);
    if (b->vals != NULL)
        enif_free(b->vals);
}

/* Per-call cache of root keys already turned into atoms (json_decode_events):
 * direct-mapped by a hash of the key text; keys up to KEY_CACHE_TEXT bytes. */
#define KEY_CACHE_SIZE 128 /* 64 sets of 2 */
#define KEY_CACHE_TEXT 31
#define STR_CACHE_SIZE 256
typedef struct {
    unsigned char len; /* 0: empty slot (the empty text is never cached) */
    char text[KEY_CACHE_TEXT];
    ERL_NIF_TERM term;
} text_entry;
/* Nested containers built in this call, by their text (build_event()): direct-mapped
 * by a hash of the first CT_PREFIX bytes; texts of CT_PREFIX..CT_MAX bytes. The
 * text points into a row of the call (alive for the whole call). */
#define CT_CACHE_SIZE 64
#define CT_PREFIX 16
#define CT_MAX 4096
typedef struct {
    const unsigned char *text;
    size_t len; /* 0: empty slot */
    ERL_NIF_TERM term;
} ct_entry;
typedef struct {
    text_entry e[KEY_CACHE_SIZE];   /* root keys -> atoms */
    text_entry s[STR_CACHE_SIZE];   /* short unescaped strings -> one shared binary */
    ct_entry c[CT_CACHE_SIZE];      /* nested objects and arrays -> one shared term */
} key_cache;

static unsigned text_hash(const unsigned char *p, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h ^ (h >> 16);
}

/* A string token of validated input; with a cache, short unescaped strings seen
 * before in this call are the same binary term (they repeat across events: keys
 * of nested objects, ids, names), which saves building and copying them. */
static int cached_string(ErlNifEnv *env, key_cache *kc, const unsigned char *in, size_t start,
                         size_t end, ERL_NIF_TERM *out)
{
    size_t len = end - start;
    if (kc == NULL || len == 0 || len > KEY_CACHE_TEXT ||
        memchr(in + start, '\\', len) != NULL)
        return make_string(env, in, start, end, out);
    text_entry *e = &kc->s[text_hash(in + start, len) % STR_CACHE_SIZE];
    if (e->len == len && memcmp(e->text, in + start, len) == 0) {
        *out = e->term;
        return 0;
    }
    if (make_string(env, in, start, end, out) != 0)
        return -1;
    e->len = (unsigned char)len;
    memcpy(e->text, in + start, len);
    e->term = *out;
    return 0;
}

/* A root-object key as an existing atom (event mode). 0, or -1: fall back. */
static int key_atom(ErlNifEnv *env, key_cache *kc, const unsigned char *in, size_t start,
                    size_t end, ERL_NIF_TERM *out)
{
    size_t len = end - start;
    const unsigned char *t = in + start;
    text_entry *set = NULL;
    if (kc != NULL && len > 0 && len <= KEY_CACHE_TEXT) {
        /* Two ways per set, so two keys that hash alike (options and attempt do)
         * do not evict each other on every row. A cached text passed the checks
         * below when it was entered. */
        set = &kc->e[(size_t)(text_hash(t, len) % (KEY_CACHE_SIZE / 2)) * 2];
        for (int w = 0; w < 2; w++) {
            if (set[w].len == len && memcmp(set[w].text, t, len) == 0) {
                *out = set[w].term;
                return 0;
            }
        }
    }
    if (len > 255)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (t[i] == '\\' || t[i] >= 0x80)
            return -1;
    if (!enif_make_existing_atom_len(env, (const char *)t, len, out, ERL_NIF_LATIN1))
        return -1;
    if (set != NULL) {
        set[1] = set[0];
        set[0].len = (unsigned char)len;
        memcpy(set[0].text, t, len);
        set[0].term = *out;
    }
    return 0;
}

/* Pass 3: terms from the tokens, last token first. vals is the value stack,
 * scratch holds one object's keys and values for enif_make_map_from_arrays
 * (room for 2 * n + 6 terms from vals). On B_INVALID *err_off / *why are set. */
static int build(ErlNifEnv *env, const unsigned char *in, const jsmntok_t *tok, size_t n,
                 ERL_NIF_TERM *vals, ERL_NIF_TERM *scratch, ERL_NIF_TERM *out,
                 size_t *err_off, int *why)
{
    struct aion_json_priv *p = json_priv(env);
    size_t top = 0;
    for (size_t i = n; i-- > 0;) {
        const jsmntok_t *t = &tok[i];
        size_t start = (size_t)t->start, end = (size_t)t->end;
        size_t k = (size_t)t->size;
        ERL_NIF_TERM v;
        switch (t->type) {
        case JSMN_STRING:
            if (make_string(env, in, start, end, &v) != 0)
                return B_ENOMEM;
            break;
        case JSMN_PRIMITIVE:
            if (in[start] == 't') {
                v = p->atom_true;
            } else if (in[start] == 'f') {
                v = p->atom_false;
            } else if (in[start] == 'n') {
                v = p->atom_null;
            } else {
                int rc = make_number(env, in + start, end - start, &v);
                if (rc == R_NUMBER_OUT_OF_RANGE) {
                    *err_off = start;
                    *why = rc;
                    return B_INVALID;
                }
                if (rc != 0)
                    return B_ENOMEM;
            }
            break;
        case JSMN_ARRAY:
            v = enif_make_list(env, 0);
            for (size_t j = top - k; j < top; j++)
                v = enif_make_list_cell(env, vals[j], v);
            top -= k;
            break;
        case JSMN_OBJECT:
            /* vals[top-1] is the first key, vals[top-2] its value, and so on. */
            for (size_t j = 0; j < k; j++) {
                scratch[j] = vals[top - 1 - 2 * j];
                scratch[k + j] = vals[top - 2 - 2 * j];
            }
            top -= 2 * k;
            if (!enif_make_map_from_arrays(env, scratch, scratch + k, k, &v)) {
                /* Duplicate keys: insert in order, so the last one wins. */
                v = enif_make_new_map(env);
                for (size_t j = 0; j < k; j++)
                    enif_make_map_put(env, v, scratch[j], scratch[k + j], &v);
            }
            break;
        default:
            return B_INTERNAL;
        }
        vals[top++] = v;
    }
    if (top != 1)
        return B_INTERNAL;
    *out = vals[0];
    return B_OK;
}

/* Passes 1 and 2 over one JSON text: validate, then tokenise into b->tok (*ntok
 * tokens). B_INVALID with s->pos / s->why set on invalid input. s->work is the
 * work estimate the caller compares with its budget before building. */
static int parse_text(const unsigned char *in, size_t len, dec_buf *b, scanner *s,
                      size_t *ntok)
{
    if (len >= (size_t)INT_MAX) { /* jsmn keeps offsets in int */
        s->pos = 0;
        s->why = R_TOO_LARGE;
        return B_INVALID;
    }
    s->in = in;
    s->len = len;
    if (scan(s) != 0)
        return B_INVALID;
    /* The scanner counted the tokens exactly: one jsmn pass into that array. */
    if (s->ntokens == 0 || dec_buf_reserve(b, s->ntokens) != 0)
        return s->ntokens == 0 ? B_INTERNAL : B_ENOMEM;
    jsmn_parser jp;
    jsmn_init(&jp);
    int count = jsmn_parse(&jp, (const char *)in, len, b->tok, (unsigned)s->ntokens);
    if (count <= 0 || (size_t)count != s->ntokens)
        return B_INTERNAL;
    *ntok = s->ntokens;
    return B_OK;
}

static ERL_NIF_TERM build_error(ErlNifEnv *env, int rc)
{
    return enif_raise_exception(env, enif_make_atom(env, rc == B_ENOMEM ? "enomem"
                                                                        : "json_internal"));
}

static ERL_NIF_TERM decode_run(ErlNifEnv *env, const ERL_NIF_TERM argv[], int dirty)
{
    ErlNifBinary bin;
    ErlNifUInt64 budget;
    if (!enif_inspect_binary(env, argv[0], &bin) || !enif_get_uint64(env, argv[1], &budget))
        return enif_make_badarg(env);
    if (!dirty && bin.size > budget)
        return enif_schedule_nif(env, "json_decode", ERL_NIF_DIRTY_JOB_CPU_BOUND, decode_dirty,
                                 2, argv);
    dec_buf b = {NULL, NULL, 0};
    scanner s = {bin.data, bin.size, 0, 0, 0, 0};
    size_t n = 0;
    ERL_NIF_TERM result, v;
    size_t off;
    int why;
    int rc = parse_text(bin.data, bin.size, &b, &s, &n);
    if (rc == B_INVALID) {
        result = invalid_json(env, s.pos, s.why);
    } else if (rc != B_OK) {
        result = build_error(env, rc);
    } else if (!dirty && s.work > budget) { /* long bignums: conversion work */
        result = enif_schedule_nif(env, "json_decode", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                   decode_dirty, 2, argv);
    } else {
        rc = build(env, bin.data, b.tok, n, b.vals, b.vals + n, &v, &off, &why);
        result = rc == B_OK        ? enif_make_tuple2(env, json_priv(env)->atom_ok, v)
                 : rc == B_INVALID ? invalid_json(env, off, why)
                                   : build_error(env, rc);
    }
    dec_buf_free(&b);
    return result;
}

static ERL_NIF_TERM decode_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return decode_run(env, argv, 1);
}

/* ---------------------------------------------------------------------------
 * Decode a history (json_decode_events/2)
 * ------------------------------------------------------------------------- */

static ERL_NIF_TERM decode_events_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Single pass for one row (event mode): validates and builds at once. The token
 * checks are the scanner's own (scan_string, scan_number, scan_literal, skip_ws), so
 * a text it accepts is one scan() accepts, and the terms are build()'s: nested maps
 * with binary keys (duplicates: the last wins), lists, numbers by make_number. A
 * nested object or array whose exact text was built before in this call (ct_entry)
 * is that term again: a JSON value's extent is fixed by its own bytes, so equal
 * text at the position is an equal value; it is neither scanned nor built again
 * (repeated activity options, retry policies). Keys and values wait on two stacks
 * until their container closes. */
#define EV_MAX_DEPTH 64

typedef struct {
    ERL_NIF_TERM *v;
    size_t n, cap;
} term_stack;

/* Per-call scratch of json_decode_events: the key and value stacks. */
typedef struct {
    term_stack ks, vs;
} ev_buf;

static int ts_push(term_stack *t, ERL_NIF_TERM x)
{
    if (t->n == t->cap) {
        size_t cap = t->cap == 0 ? 256 : 2 * t->cap;
        ERL_NIF_TERM *v = enif_realloc(t->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = x;
    return 0;
}

static void ev_buf_free(ev_buf *b)
{
    if (b->ks.v != NULL)
        enif_free(b->ks.v);
    if (b->vs.v != NULL)
        enif_free(b->vs.v);
}

static ct_entry *ct_slot(key_cache *kc, const unsigned char *p)
{
    return &kc->c[text_hash(p, CT_PREFIX) % CT_CACHE_SIZE];
}

/* A cached container whose text starts at p (avail bytes left): its length, or 0. */
static size_t ct_lookup(key_cache *kc, const unsigned char *p, size_t avail, ERL_NIF_TERM *out)
{
    if (avail < CT_PREFIX)
        return 0;
    const ct_entry *e = ct_slot(kc, p);
    if (e->len == 0 || e->len > avail || memcmp(e->text, p, e->len) != 0)
        return 0;
    *out = e->term;
    return e->len;
}

static void ct_store(key_cache *kc, const unsigned char *p, size_t len, ERL_NIF_TERM term)
{
    if (len < CT_PREFIX || len > CT_MAX)
        return;
    ct_entry *e = ct_slot(kc, p);
    e->text = p;
    e->len = len;
    e->term = term;
}

typedef struct {
    size_t kbase, vbase, start; /* stack heights and text offset at the opening */
    int obj;
} ev_frame;

/* An object key at s->pos and its colon; leaves s->pos at the value. Root keys are
 * existing atoms (term fields noted), nested ones binaries. */
static int ev_key(ErlNifEnv *env, scanner *s, ev_buf *b, ev_mode *ev, int root)
{
    struct aion_json_priv *p = json_priv(env);
    ERL_NIF_TERM k;
    if (s->pos >= s->len || s->in[s->pos] != '"')
        return B_FALLBACK;
    size_t start = s->pos + 1;
    if (scan_string(s) != 0)
        return B_FALLBACK;
    if (root) {
        if (key_atom(env, ev->cache, s->in, start, s->pos - 1, &k) != 0)
            return B_FALLBACK;
        if (k == p->atom_error || k == p->atom_reason)
            ev->term_field = 1;
    } else if (cached_string(env, ev->cache, s->in, start, s->pos - 1, &k) != 0) {
        return B_ENOMEM;
    }
    if (ts_push(&b->ks, k) != 0)
        return B_ENOMEM;
    skip_ws(s);
    if (s->pos >= s->len || s->in[s->pos] != ':')
        return B_FALLBACK;
    s->pos++;
    skip_ws(s);
    return B_OK;
}

/* A string, number or literal at s->pos. */
static int ev_scalar(ErlNifEnv *env, scanner *s, ev_mode *ev, ERL_NIF_TERM *v)
{
    struct aion_json_priv *p = json_priv(env);
    size_t start = s->pos;
    int rc;
    switch (s->in[start]) {
    case '"':
        if (scan_string(s) != 0)
            return B_FALLBACK;
        return cached_string(env, ev->cache, s->in, start + 1, s->pos - 1, v) != 0 ? B_ENOMEM
                                                                                 : B_OK;
    case 't':
        *v = p->atom_true;
        return scan_literal(s, "true") != 0 ? B_FALLBACK : B_OK;
    case 'f':
        *v = p->atom_false;
        return scan_literal(s, "false") != 0 ? B_FALLBACK : B_OK;
    case 'n':
        *v = p->atom_null;
        return scan_literal(s, "null") != 0 ? B_FALLBACK : B_OK;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if (scan_number(s) != 0)
            return B_FALLBACK;
        rc = make_number(env, s->in + start, s->pos - start, v);
        return rc == R_NUMBER_OUT_OF_RANGE ? B_FALLBACK : rc != 0 ? B_ENOMEM : B_OK;
    default:
        return B_FALLBACK;
    }
}

/* Closes the container of frame f: its members are on the stacks above f's bases. */
static int ev_close(ErlNifEnv *env, ev_buf *b, const ev_frame *f, ev_mode *ev, int root,
                    ERL_NIF_TERM *v)
{
    size_t n = b->vs.n - f->vbase;
    if (!f->obj) {
        *v = enif_make_list_from_array(env, b->vs.v + f->vbase, (unsigned)n);
    } else if (root) {
        for (size_t j = 0; j < 3; j++)
            if (ts_push(&b->ks, ev->keys[j]) != 0 || ts_push(&b->vs, ev->vals[j]) != 0)
                return B_ENOMEM;
        if (!enif_make_map_from_arrays(env, b->ks.v + f->kbase, b->vs.v + f->vbase, n + 3, v))
            return B_FALLBACK; /* duplicate keys */
    } else if (!enif_make_map_from_arrays(env, b->ks.v + f->kbase, b->vs.v + f->vbase, n, v)) {
        /* Duplicate keys: insert in order, so the last one wins. */
        *v = enif_make_new_map(env);
        for (size_t j = 0; j < n; j++)
            enif_make_map_put(env, *v, b->ks.v[f->kbase + j], b->vs.v[f->vbase + j], v);
    }
    b->ks.n = f->kbase;
    b->vs.n = f->vbase;
    return B_OK;
}

static int build_event_pass(ErlNifEnv *env, scanner *s, ev_buf *b, ev_mode *ev,
                            ERL_NIF_TERM *out)
{
    const unsigned char *in = s->in;
    size_t len = s->len, depth = 0, hit;
    ev_frame fr[EV_MAX_DEPTH];
    ERL_NIF_TERM v;
    int rc;
    b->ks.n = b->vs.n = 0;
    skip_ws(s);
    if (s->pos >= len || in[s->pos] != '{')
        return B_FALLBACK;
    for (;;) {
        /* A value at s->pos (whitespace skipped). */
        if (s->pos >= len)
            return B_FALLBACK;
        unsigned char c = in[s->pos];
        if (c != '{' && c != '[') {
            if ((rc = ev_scalar(env, s, ev, &v)) != B_OK)
                return rc;
        } else if (depth > 0 && (hit = ct_lookup(ev->cache, in + s->pos, len - s->pos, &v))) {
            s->pos += hit;
        } else {
            if (depth == EV_MAX_DEPTH)
                return B_FALLBACK;
            ev_frame *f = &fr[depth++];
            f->kbase = b->ks.n;
            f->vbase = b->vs.n;
            f->start = s->pos;
            f->obj = c == '{';
            s->pos++;
            skip_ws(s);
            if (s->pos >= len || in[s->pos] != (c == '{' ? '}' : ']')) {
                if (f->obj && (rc = ev_key(env, s, b, ev, depth == 1)) != B_OK)
                    return rc;
                continue; /* the first member */
            }
            s->pos++; /* empty */
            depth--;
            if ((rc = ev_close(env, b, f, ev, depth == 0, &v)) != B_OK)
                return rc;
        }
        /* After a complete value v: close containers, or a comma, or the end. */
        for (;;) {
            if (depth == 0) {
                skip_ws(s);
                if (s->pos != len)
                    return B_FALLBACK;
                *out = v;
                return B_OK;
            }
            if (ts_push(&b->vs, v) != 0)
                return B_ENOMEM;
            skip_ws(s);
            if (s->pos >= len)
                return B_FALLBACK;
            ev_frame *f = &fr[depth - 1];
            c = in[s->pos];
            if (c == (f->obj ? '}' : ']')) {
                s->pos++;
                depth--;
                if ((rc = ev_close(env, b, f, ev, depth == 0, &v)) != B_OK)
                    return rc;
                if (depth > 0)
                    ct_store(ev->cache, in + f->start, s->pos - f->start, v);
                continue;
            }
            if (c != ',')
                return B_FALLBACK;
            s->pos++;
            skip_ws(s);
            if (f->obj && (rc = ev_key(env, s, b, ev, depth == 1)) != B_OK)
                return rc;
            break; /* the next member */
        }
    }
}

/* One stored row {Seq, Type, RecordedAt, Data} to its event map (see ev_mode).
 * B_OK with *out the map; B_FALLBACK (the row goes back unchanged); B_ENOMEM
 * (raise). *work accumulates the data size plus the bignum work estimate. */
static int decode_row(ErlNifEnv *env, ERL_NIF_TERM row, ev_buf *b, key_cache *kc,
                      size_t *work, ERL_NIF_TERM *out, int *term_field)
{
    struct aion_json_priv *p = json_priv(env);
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary type, data;
    if (!enif_get_tuple(env, row, &arity, &el) || arity != 4 ||
        !enif_inspect_binary(env, el[1], &type) || !enif_inspect_binary(env, el[3], &data))
        return B_FALLBACK;
    ev_mode ev = {{p->atom_seq, p->atom_type, p->atom_recorded_at}, {el[0], 0, el[2]}, 0, kc};
    if (key_atom(env, kc, type.data, 0, type.size, &ev.vals[1]) != 0)
        return B_FALLBACK;
    scanner s = {data.data, data.size, 0, 0, 0, 0};
    int rc = build_event_pass(env, &s, b, &ev, out);
    *work += data.size + s.work;
    *term_field = ev.term_field;
    return rc;
}

/* Sum of the Data sizes of a list of rows (malformed rows count 0). */
static size_t rows_size(ErlNifEnv *env, ERL_NIF_TERM list)
{
    size_t total = 0;
    ERL_NIF_TERM head;
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary data;
    while (enif_get_list_cell(env, list, &head, &list))
        if (enif_get_tuple(env, head, &arity, &el) && arity == 4 &&
            enif_inspect_binary(env, el[3], &data))
            total += data.size;
    return total;
}

static ERL_NIF_TERM decode_events_run(ErlNifEnv *env, const ERL_NIF_TERM argv[], int dirty)
{
    struct aion_json_priv *p = json_priv(env);
    unsigned len;
    ErlNifUInt64 budget;
    if (!enif_get_list_length(env, argv[0], &len) || !enif_get_uint64(env, argv[1], &budget))
        return enif_make_badarg(env);
    if (!dirty && rows_size(env, argv[0]) > budget)
        return enif_schedule_nif(env, "json_decode_events", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 decode_events_dirty, 2, argv);
    ERL_NIF_TERM *outs = enif_alloc((len > 0 ? len : 1) * sizeof *outs);
    if (outs == NULL)
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    key_cache *kc = enif_alloc(sizeof *kc);
    if (kc == NULL) {
        enif_free(outs);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    memset(kc, 0, sizeof *kc);
    ev_buf b = {{NULL, 0, 0}, {NULL, 0, 0}};
    ERL_NIF_TERM list = argv[0], row, result;
    size_t work = 0;
    int mixed = 0, rc = B_OK;
    for (unsigned i = 0; i < len && enif_get_list_cell(env, list, &row, &list); i++) {
        int term_field = 0;
        rc = decode_row(env, row, &b, kc, &work, &outs[i], &term_field);
        if (rc == B_FALLBACK) {
            outs[i] = row; /* the 4-tuple: aion_event decodes it in Erlang */
            mixed = 1;
            rc = B_OK;
        } else if (rc != B_OK) {
            break;
        } else if (term_field) {
            outs[i] = enif_make_tuple1(env, outs[i]);
            mixed = 1;
        }
        if (!dirty && work > budget) /* long bignums: conversion work */
            break;
    }
    if (rc != B_OK)
        result = build_error(env, rc);
    else if (!dirty && work > budget)
        result = enif_schedule_nif(env, "json_decode_events", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                   decode_events_dirty, 2, argv);
    else
        result = enif_make_tuple2(env, mixed ? p->atom_mixed : p->atom_ok,
                                  enif_make_list_from_array(env, outs, len));
    ev_buf_free(&b);
    enif_free(kc);
    enif_free(outs);
    return result;
}

static ERL_NIF_TERM decode_events_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return decode_events_run(env, argv, 1);
}

/* json_decode_events([{Seq, Type, RecordedAt, Data}], Budget) -> {ok | mixed, Out}.
 * Out has one element per row: the event map (atom keys), or {Map} when it has an
 * `error'/`reason' field (term fields: the caller unwraps them), or the row itself
 * when the fast path does not apply (mixed). Starts on a normal scheduler; rows
 * with more than Budget bytes of Data (plus bignum work) -> dirty CPU. */
ERL_NIF_TERM aion_nif_json_decode_events(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return decode_events_run(env, argv, 0);
}

/* json_decode(Binary, Budget) -> {ok, Term} | {error, {invalid_json, Offset, Why}}.
 * Starts on a normal scheduler; more than Budget bytes of work -> dirty CPU. */
ERL_NIF_TERM aion_nif_json_decode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return decode_run(env, argv, 0);
}
