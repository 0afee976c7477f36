/* The rewriter's inner loop, and the link codec's plain cases (sign_click, plain_url, unsign, read_token), in C:
 * optional, with rewrite.py's, links.py's and tokens.py's pure-Python code as the reference. With OpenSSL's
 * headers it also has the codec's HMAC state (_hmac_sha256.h), which it reads without a call. new_slotted()
 * makes the event of each tracked request (events.py's tracking_event).
 *
 * scan() reads HTML from a position exactly as rewrite.py's _STEP pattern does: it skips text, comments
 * and every tag that changes nothing (their attributes read as the HTML tokenizer reads them, so a quoted
 * ">" never ends a tag), and it rewrites the href of <a> and <area> in place. It stops at anything else of
 * interest (<script>, </body>, <svg>, CDATA, a DOCTYPE...), at a construct not yet whole, and at a link
 * that names data-trackgate: rewrite.py takes over there, and calls scan() again after it.
 *
 * An href value is looked up in the rewriter's cache first. A plain absolute http(s) URL (printable ASCII
 * with "&amp;" the only character reference, UTF-8 in a UTF-8 document, a host name without port) is signed
 * here when the rewriter passes a ClickSigning (links.py): the same JSON, zlib, base64 and HMAC as links.py's
 * click maker, through the zlib module and the HMAC state it hands over (base64 here, as binascii writes it).
 * Every other value is the rewriter's _link_value() to decide. A tag longer than max_held (rewrite.py's
 * MAX_HELD) is never rewritten; in the outbound scope a link to the page's own host (own_host) stays.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>  /* PyMember_SetOne (in Python.h itself from 3.12) */

#include "_hmac_sha256.h"

#define COMPRESS_FROM 200        /* tokens.py's _COMPRESS_FROM: longer payloads may be zlib'd */
#define COMPRESS_WBITS 9         /* tokens.py's _COMPRESS_WBITS */
#define MAX_PAYLOAD_BYTES 65536  /* tokens.py's _MAX_PAYLOAD_BYTES */
#define MAX_TOKEN_CHARS 16384    /* tokens.MAX_TOKEN_CHARS */
#define MAX_URL_CHARS 4096       /* links.MAX_URL_CHARS */

static PyObject *zlib_compress;  /* zlib.compress */
static PyObject *str_copy, *str_update, *str_digest;

static inline int is_ws(unsigned char c) {
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

static inline int is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int same_lower(const unsigned char *s, const char *word, Py_ssize_t len) {
    for (Py_ssize_t k = 0; k < len; k++) {
        if (lower(s[k]) != (unsigned char)word[k]) return 0;
    }
    return 1;
}

static Py_ssize_t find_byte(const unsigned char *s, Py_ssize_t from, Py_ssize_t n, unsigned char byte) {
    if (from >= n) return -1;
    const unsigned char *found = memchr(s + from, byte, (size_t)(n - from));
    return found ? found - s : -1;
}

/* _VALUE from p: the end of an attribute value, or -1 for an unclosed quote. */
static Py_ssize_t value_end(const unsigned char *s, Py_ssize_t p, Py_ssize_t n) {
    if (p < n && (s[p] == '"' || s[p] == '\'')) {
        Py_ssize_t close = find_byte(s, p + 1, n, s[p]);
        return close < 0 ? -1 : close + 1;
    }
    while (p < n && !is_ws(s[p]) && s[p] != '>') p++;
    return p;
}

/* _ASSIGN after an attribute's name: "= value", or nothing when no "=" follows (-1: an unclosed quote). */
static Py_ssize_t assign_end(const unsigned char *s, Py_ssize_t p, Py_ssize_t n) {
    Py_ssize_t q = p;
    while (q < n && is_ws(s[q])) q++;
    if (q < n && s[q] == '=') {
        q++;
        while (q < n && is_ws(s[q])) q++;
        return value_end(s, q, n);
    }
    return p;
}

/* One attribute from its first byte (not whitespace, "/" or ">"): the name, then _ASSIGN. */
static Py_ssize_t attribute_end(const unsigned char *s, Py_ssize_t p, Py_ssize_t n) {
    p++;
    while (p < n && !is_ws(s[p]) && s[p] != '/' && s[p] != '>' && s[p] != '=') p++;
    return assign_end(s, p, n);
}

/* _TAG_TAIL from p: just past the tag's ">", or -1 when the tag is not whole. */
static Py_ssize_t tag_tail_end(const unsigned char *s, Py_ssize_t p, Py_ssize_t n) {
    for (;;) {
        if (p >= n) return -1;
        unsigned char c = s[p];
        if (is_ws(c) || c == '/') {
            p++;
        } else if (c == '>') {
            return p + 1;
        } else {
            p = attribute_end(s, p, n);
            if (p < 0) return -1;
        }
    }
}

/* The end of a comment starting at "<!--" (s[i] == '<'): the first "--!?>" from its own dashes, or -1. */
static Py_ssize_t comment_end(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    Py_ssize_t j = i + 2;
    for (;;) {
        j = find_byte(s, j, n, '-');
        if (j < 0 || j + 2 >= n) return -1;
        if (s[j + 1] == '-') {
            if (s[j + 2] == '>') return j + 3;
            if (s[j + 2] == '!' && j + 3 < n && s[j + 3] == '>') return j + 4;
        }
        j++;
    }
}

enum { PLAIN_TAG, LINK, INTERESTING };

/* rewrite.py's _BREAKOUT_NAMES, font, </br> and </p>: in SVG or MathML the tags that end them, which
 * rewrite.py must see (_FOREIGN_STEP). */
static int ends_foreign_content(const unsigned char *s, Py_ssize_t start, Py_ssize_t n, int end_tag) {
    Py_ssize_t j = start;
    while (j < n && j - start < 11 && (is_alpha(s[j]) || (s[j] >= '0' && s[j] <= '9'))) j++;
    if (j >= n || !(is_ws(s[j]) || s[j] == '/' || s[j] == '>')) return 0;
    Py_ssize_t len = j - start;
    const unsigned char *name = s + start;
    if (end_tag) return (len == 2 && same_lower(name, "br", 2)) || (len == 1 && lower(name[0]) == 'p');
    static const char *const names[] = {
        "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em", "embed", "h1",
        "h2", "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing", "menu", "meta", "nobr", "ol",
        "p", "pre", "ruby", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tt", "u", "ul",
        "var", "font", NULL,
    };
    for (const char *const *other = names; *other; other++) {
        Py_ssize_t other_len = (Py_ssize_t)strlen(*other);
        if (len == other_len && same_lower(name, *other, len)) return 1;
    }
    return 0;
}

/* What the tag name at s[i + 1] (a letter, or "/" and a letter) is to _INTERESTING (to _FOREIGN_STEP's in
 * SVG or MathML, ``foreign``). */
static int tag_kind(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, int foreign) {
    Py_ssize_t start = i + 1;
    int end_tag = s[start] == '/';
    if (end_tag) start++;
    if (foreign && ends_foreign_content(s, start, n, end_tag)) return INTERESTING;
    Py_ssize_t j = start;
    while (j < n && j - start < 10 && is_alpha(s[j])) j++;
    if (j >= n || !(is_ws(s[j]) || s[j] == '/' || s[j] == '>')) return PLAIN_TAG;
    Py_ssize_t len = j - start;
    const unsigned char *name = s + start;
    if (len == 4 && same_lower(name, "body", 4)) return INTERESTING;
    if (len == 3 && (same_lower(name, "svg", 3))) return INTERESTING;
    if (len == 4 && same_lower(name, "math", 4)) return INTERESTING;
    if (end_tag) return PLAIN_TAG;
    if ((len == 1 && lower(name[0]) == 'a') || (len == 4 && same_lower(name, "area", 4))) return LINK;
    static const char *const others[] = {
        "html", "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext", NULL,
    };
    for (const char *const *other = others; *other; other++) {
        Py_ssize_t other_len = (Py_ssize_t)strlen(*other);
        if (len == other_len && same_lower(name, *other, len)) return INTERESTING;
    }
    return PLAIN_TAG;
}

/* A link tag from its "<" (at i; name ends at name_end): where it ends (-1: not whole) and its first
 * href's value span (*value_start = -1 when it has none), as _LINK reads it. */
static Py_ssize_t link_end(const unsigned char *s, Py_ssize_t name_end, Py_ssize_t n, Py_ssize_t *value_start,
                           Py_ssize_t *value_stop) {
    Py_ssize_t p = name_end;
    *value_start = *value_stop = -1;
    for (;;) {
        if (p >= n) return -1;
        unsigned char c = s[p];
        if (is_ws(c) || c == '/') {
            p++;
            continue;
        }
        if (c == '>') return p + 1;
        if (p + 4 < n && same_lower(s + p, "href", 4) &&
            (is_ws(s[p + 4]) || s[p + 4] == '/' || s[p + 4] == '>' || s[p + 4] == '=')) {
            break;
        }
        p = attribute_end(s, p, n);
        if (p < 0) return -1;
    }
    /* An href: its value when "=" and a whole value follow; else the tag goes on from the name. */
    Py_ssize_t q = p + 4;
    while (q < n && is_ws(s[q])) q++;
    if (q < n && s[q] == '=') {
        q++;
        while (q < n && is_ws(s[q])) q++;
        Py_ssize_t end = value_end(s, q, n);
        if (end >= 0) {
            *value_start = q;
            *value_stop = end;
            p = end;
        }
    }
    Py_ssize_t end = tag_tail_end(s, p, n);
    if (end < 0) *value_start = *value_stop = -1;
    return end;
}

/* _OPT_OUT_HINT: "-trackgate" in any case within the tag. */
static int names_opt_out(const unsigned char *s, Py_ssize_t from, Py_ssize_t to) {
    for (Py_ssize_t k = from; k + 10 <= to; k++) {
        if (s[k] == '-' && same_lower(s + k + 1, "trackgate", 9)) return 1;
    }
    return 0;
}

/* --- signing plain links ------------------------------------------------------------------------------ */

typedef struct {
    const char *start;
    Py_ssize_t start_len;
    const char *tail;
    Py_ssize_t tail_len;
    PyObject *mac;    /* an HMAC state: copy(), update(), digest() */
    PyObject *marks;  /* tuple of bytes: prefixes of our own tracking URLs */
    const char *own_host;  /* outbound scope: the page's own host, in lower case (its links stay); or NULL */
    Py_ssize_t own_host_len;
} Signing;

/* URL-safe base64 without padding (tokens.py's base64_encode, there through binascii), appended to out. */
static const char BASE64_DIGITS[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int put_base64_of(const unsigned char *in, Py_ssize_t n, char *out, Py_ssize_t *used, Py_ssize_t room) {
    Py_ssize_t len = (n * 4 + 2) / 3;
    if (*used + len > room) {
        PyErr_SetString(PyExc_OverflowError, "token buffer");
        return -1;
    }
    char *o = out + *used;
    Py_ssize_t k = 0;
    for (; k + 3 <= n; k += 3) {
        unsigned int group = (unsigned int)in[k] << 16 | (unsigned int)in[k + 1] << 8 | in[k + 2];
        *o++ = BASE64_DIGITS[group >> 18];
        *o++ = BASE64_DIGITS[(group >> 12) & 63];
        *o++ = BASE64_DIGITS[(group >> 6) & 63];
        *o++ = BASE64_DIGITS[group & 63];
    }
    if (k < n) {  /* one or two bytes left: two or three digits, no "=" */
        unsigned int group = (unsigned int)in[k] << 16 | (k + 1 < n ? (unsigned int)in[k + 1] << 8 : 0);
        *o++ = BASE64_DIGITS[group >> 18];
        *o++ = BASE64_DIGITS[(group >> 12) & 63];
        if (k + 1 < n) *o++ = BASE64_DIGITS[(group >> 6) & 63];
    }
    *used += len;
    return 0;
}

static int put_base64(PyObject *data, char *out, Py_ssize_t *used, Py_ssize_t room) {
    if (!PyBytes_Check(data)) {  /* (what zlib gives is bytes; anything else is a fault here) */
        PyErr_Format(PyExc_TypeError, "a bytes object is required, not '%.100s'", Py_TYPE(data)->tp_name);
        return -1;
    }
    return put_base64_of((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out, used, room);
}

/* The bytes of URL-safe base64 without padding as binascii reads it there (tokens.py's _b64decode): NULL, no
 * error set, for text it would read otherwise (a character out of the alphabet, which it skips, or a length
 * it refuses). Bits past the last byte are ignored, as binascii ignores them. */
static signed char base64_values[256];  /* a digit's value, -1 for other bytes (filled by the module's init) */

static PyObject *read_base64(const char *text, Py_ssize_t n) {
    if (n % 4 == 1) return NULL;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, n * 3 / 4);
    if (!bytes) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(bytes);
    unsigned int group = 0;
    int bits = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        int value = base64_values[(unsigned char)text[k]];
        if (value < 0) {
            Py_DECREF(bytes);
            return NULL;
        }
        group = (group << 6 | (unsigned int)value) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(group >> bits);
        }
    }
    return bytes;
}

/* hmac.compare_digest of two byte strings: the time taken depends on their lengths only. */
static int same_bytes(const char *a, Py_ssize_t a_len, const char *b, Py_ssize_t b_len) {
    if (a_len != b_len) return 0;
    unsigned char differ = 0;
    for (Py_ssize_t k = 0; k < a_len; k++) differ |= (unsigned char)(a[k] ^ b[k]);
    return differ == 0;
}

/* The HMAC-SHA-256 of data[:n] under a state tokens.py hands over, into out: 0; -1 with an error set when a
 * call fails; 1, with none, when the state's digest is not SHA-256's (a link source's own state: the Python
 * code decides). Our own HmacSha256 is read directly; any other state through copy(), update(), digest(). */
#define MAC_BYTES 32

static int mac_digest(PyObject *state, const char *data, Py_ssize_t n, unsigned char out[MAC_BYTES]) {
#ifdef TRACKGATE_OPENSSL
    if (IS_HMAC_SHA256(state)) {
        hmac_finish((const HmacSha256 *)state, data, (size_t)n, out);
        return 0;
    }
#endif
    PyObject *body = PyBytes_FromStringAndSize(data, n);
    PyObject *mac = body ? PyObject_CallMethodNoArgs(state, str_copy) : NULL;
    PyObject *done = mac ? PyObject_CallMethodOneArg(mac, str_update, body) : NULL;
    PyObject *digest = done ? PyObject_CallMethodNoArgs(mac, str_digest) : NULL;
    Py_XDECREF(body);
    Py_XDECREF(mac);
    Py_XDECREF(done);
    if (!digest) return -1;
    int sha256 = PyBytes_Check(digest) && PyBytes_GET_SIZE(digest) == MAC_BYTES;
    if (sha256) memcpy(out, PyBytes_AS_STRING(digest), MAC_BYTES);
    Py_DECREF(digest);
    return sha256 ? 0 : 1;
}

/* Whether rewrite.py would leave an href alone, track it, or must look closer. */
enum { LEAVE, SIGN, ASK };

/* The href's text as rewrite.py reads it, into url (room for raw_len bytes): the value with "&amp;" decoded
 * (unless literal: a URL given as text), UTF-8 kept as it is in a UTF-8 document. ASK for anything else that needs reading: another character
 * reference, whitespace or controls (stripped or dropped there), backslashes and quotes (escaped in JSON),
 * merge tags, bytes of another charset. */
static unsigned char href_plain[256];  /* 1: a byte read_href copies with nothing to check (filled at init) */

static int read_href(const unsigned char *raw, Py_ssize_t raw_len, int utf8, int literal, unsigned char *url,
                     Py_ssize_t *len) {
    Py_ssize_t used = 0;
    int wide = 0, maybe_merge_tag = 0;
    for (Py_ssize_t k = 0; k < raw_len; k++) {
        unsigned char c = raw[k];
        if (href_plain[c]) {
            url[used++] = c;
            continue;
        }
        if (c == '{' || c == '*' || c == '%' || c == '[') {
            maybe_merge_tag = 1;
        } else if (c == '&' && !literal) {
            if (k + 5 > raw_len || memcmp(raw + k, "&amp;", 5) != 0) return ASK;
            k += 4;
        } else if (c < 0x21 || c == 0x7f || c == '\\' || c == '"' || c == '\'') {
            return ASK;
        } else if (c >= 0x80) {
            /* C1 controls (U+0080-U+009F) are no part of a destination */
            if (!utf8 || (c == 0xc2 && k + 1 < raw_len && raw[k + 1] < 0xa0)) return ASK;
            wide = 1;
        }
        url[used++] = c;
    }
    for (Py_ssize_t k = 0; maybe_merge_tag && k + 1 < used; k++) {
        unsigned char c = url[k], d = url[k + 1];
        if ((c == '{' && (d == '{' || d == '%')) || (c == '*' && d == '|') || (c == '%' && d == '%') ||
            (c == '[' && d == '[')) {
            return ASK;  /* a merge tag */
        }
    }
    if (wide) {  /* only valid UTF-8 reads as it is (the rest gets windows-1252's reading there) */
        PyObject *text = PyUnicode_DecodeUTF8((const char *)url, used, NULL);
        if (!text) {
            PyErr_Clear();
            return ASK;
        }
        Py_DECREF(text);
    }
    *len = used;
    if (used == 0 || used > MAX_URL_CHARS) return ASK;
    Py_ssize_t host;
    if (used >= 8 && memcmp(url, "https://", 8) == 0) {
        host = 8;
    } else if (used >= 7 && memcmp(url, "http://", 7) == 0) {
        host = 7;
    } else if ((used >= 2 && url[0] == '/' && url[1] == '/') || (used >= 7 && same_lower(url, "http://", 7)) ||
               (used >= 8 && same_lower(url, "https://", 8))) {
        return ASK;  /* protocol-relative, or a scheme in capitals */
    } else {
        return LEAVE;  /* relative, a fragment, mailto:, javascript:... */
    }
    /* A host name without port, user or IP literal: what links.check_url passes by its pattern alone. */
    Py_ssize_t k = host;
    while (k < used && (is_alpha(url[k]) || (url[k] >= '0' && url[k] <= '9') || url[k] == '.' || url[k] == '_' ||
                        url[k] == '-')) {
        k++;
    }
    if (k == host || (k < used && url[k] != '/' && url[k] != '?' && url[k] != '#')) return ASK;
    return SIGN;
}

/* The value to write for a plain link: quote, origin and prefix, token, quote; as tokens.py makes a token
 * (compact JSON, zlib'd when that is shorter, base64, HMAC). NULL with no exception set: rewrite.py must
 * decide (*leave: it would leave the link as it is). */
static PyObject *signed_value(const Signing *signing, const unsigned char *raw, Py_ssize_t raw_len, int utf8,
                              int literal, int *leave) {
    unsigned char mark = literal ? 0 : '"';  /* the quotes around the value written (none for a URL as text) */
    *leave = 0;
    if (!literal && raw_len >= 2 && (raw[0] == '"' || raw[0] == '\'')) {
        mark = raw[0];
        raw += 1;
        raw_len -= 2;
    }
    if (raw_len > MAX_URL_CHARS * 5) return NULL;
    Py_ssize_t len = 0;
    PyObject *payload = PyBytes_FromStringAndSize(NULL, 7 + raw_len + signing->tail_len);
    if (!payload) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(payload);
    int kind = read_href(raw, raw_len, utf8, literal, p + 6, &len);
    if (kind != SIGN) {
        Py_DECREF(payload);
        *leave = kind == LEAVE;
        return NULL;
    }
    const unsigned char *url = p + 6;
    Py_ssize_t marks = PyTuple_GET_SIZE(signing->marks);
    for (Py_ssize_t m = 0; m < marks; m++) {
        PyObject *prefix = PyTuple_GET_ITEM(signing->marks, m);
        Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
        if (prefix_len <= len && memcmp(url, PyBytes_AS_STRING(prefix), (size_t)prefix_len) == 0) {
            Py_DECREF(payload);
            *leave = 1;  /* already one of our links */
            return NULL;
        }
    }
    if (signing->own_host) {  /* rewrite.py's outbound scope: a link to the page's own host stays */
        Py_ssize_t start = url[4] == 's' ? 8 : 7, end = start;
        while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#') end++;
        if (end - start == signing->own_host_len && same_lower(url + start, signing->own_host, end - start)) {
            Py_DECREF(payload);
            *leave = 1;
            return NULL;
        }
    }
    memcpy(p, "{\"u\":\"", 6);
    p[6 + len] = '"';
    memcpy(p + 7 + len, signing->tail, (size_t)signing->tail_len);
    Py_ssize_t payload_len = 7 + len + signing->tail_len;
    if (payload_len > MAX_PAYLOAD_BYTES || _PyBytes_Resize(&payload, payload_len) < 0) {
        Py_XDECREF(payload);
        return NULL;  /* (tokens.py refuses it: the link stays as it is, which rewrite.py decides) */
    }
    PyObject *packed = NULL;
    if (payload_len >= COMPRESS_FROM) {
        packed = PyObject_CallFunction(zlib_compress, "Oii", payload, 9, COMPRESS_WBITS);
        if (!packed) {
            Py_DECREF(payload);
            return NULL;
        }
        if (PyBytes_GET_SIZE(packed) >= payload_len - 1) Py_CLEAR(packed);  /* it does not pay */
    }
    PyObject *data = packed ? packed : payload;

    /* mark, start, ".", base64 body, ".", 43 signature characters, mark */
    Py_ssize_t room = 1 + signing->start_len + 1 + (PyBytes_GET_SIZE(data) * 4) / 3 + 4 + 1 + 44 + 1;
    PyObject *value = PyBytes_FromStringAndSize(NULL, room);
    if (!value) goto fail;
    char *out = PyBytes_AS_STRING(value);
    Py_ssize_t used = 0;
    if (mark) out[used++] = (char)mark;
    memcpy(out + used, signing->start, (size_t)signing->start_len);
    used += signing->start_len;
    Py_ssize_t body_at = used;
    if (packed) out[used++] = '.';  /* a zlib payload, as in itsdangerous's URLSafeSerializer */
    if (put_base64(data, out, &used, room) < 0) goto fail;
    unsigned char digest[MAC_BYTES];
    int unread = mac_digest(signing->mac, out + body_at, used - body_at, digest);
    if (unread) goto fail;  /* (no error set for a digest not SHA-256's: the Python code decides) */
    if (used + 1 > room) goto overflow;
    out[used++] = '.';
    if (put_base64_of(digest, MAC_BYTES, out, &used, room) < 0) goto fail;
    if (used + 1 > room) goto overflow;
    if (mark) out[used++] = (char)mark;
    Py_DECREF(payload);
    Py_XDECREF(packed);
    if (used - (mark ? 2 : 0) - signing->start_len > MAX_TOKEN_CHARS) {  /* tokens.py refuses it */
        Py_DECREF(value);
        return NULL;
    }
    if (_PyBytes_Resize(&value, used) < 0) return NULL;
    return value;
overflow:
    PyErr_SetString(PyExc_OverflowError, "token buffer");
fail:
    Py_DECREF(payload);
    Py_XDECREF(packed);
    Py_XDECREF(value);
    return NULL;
}

/* --- the scan ----------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *buffer;
    const unsigned char *s;
    PyObject *out;
    Py_ssize_t emitted;  /* s[:emitted] is in out */
} Output;

static int emit_to(Output *o, Py_ssize_t to) {
    if (to <= o->emitted) return 0;
    PyObject *piece = PyBytes_FromStringAndSize((const char *)o->s + o->emitted, to - o->emitted);
    if (!piece) return -1;
    int failed = PyList_Append(o->out, piece);
    Py_DECREF(piece);
    o->emitted = to;
    return failed;
}

/* The value written for an href (a new reference; b"" leaves it), as rewrite.py's _link_value gives it. */
static PyObject *link_value(PyObject *values, PyObject *value_for, const Signing *signing, Py_ssize_t cache_limit,
                            const unsigned char *raw, Py_ssize_t raw_len, int utf8) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)raw, raw_len);
    if (!key) return NULL;
    PyObject *known = PyDict_GetItemWithError(values, key);
    if (known) {
        Py_INCREF(known);
        Py_DECREF(key);
        return known;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *value = NULL;
    if (signing) {
        int leave;
        value = signed_value(signing, raw, raw_len, utf8, 0, &leave);
        if (!value && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {  /* KeyboardInterrupt, SystemExit... */
                Py_DECREF(key);
                return NULL;
            }
            /* The Python maker meets the same error and decides: it leaves the link on ValueError and
             * TrackgateError, and raises anything else itself. */
            PyErr_Clear();
            leave = 0;
        }
        if (!value && leave) value = PyBytes_FromStringAndSize("", 0);
        if (value && PyDict_GET_SIZE(values) < cache_limit && PyDict_SetItem(values, key, value) < 0) {
            Py_DECREF(value);
            value = NULL;
        }
        if (value || PyErr_Occurred()) {
            Py_DECREF(key);
            return value;
        }
    }
    value = PyObject_CallOneArg(value_for, key);  /* (it keeps what it decides in the cache itself) */
    Py_DECREF(key);
    if (value && !PyBytes_Check(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "_link_value must return bytes");
        return NULL;
    }
    return value;
}

static int read_signing(PyObject *fast, Signing *signing) {
    PyObject *start, *tail, *mac, *marks;
    if (!PyArg_ParseTuple(fast, "SSOO!", &start, &tail, &mac, &PyTuple_Type, &marks)) return -1;
    Py_ssize_t count = PyTuple_GET_SIZE(marks);
    for (Py_ssize_t m = 0; m < count; m++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(marks, m))) {
            PyErr_SetString(PyExc_TypeError, "marks must be bytes");
            return -1;
        }
    }
    signing->start = PyBytes_AS_STRING(start);
    signing->start_len = PyBytes_GET_SIZE(start);
    signing->tail = PyBytes_AS_STRING(tail);
    signing->tail_len = PyBytes_GET_SIZE(tail);
    signing->mac = mac;
    signing->marks = marks;
    signing->own_host = NULL;
    signing->own_host_len = 0;
    return 0;
}

static PyObject *scan(PyObject *module, PyObject *args) {
    PyObject *buffer, *out, *values, *value_for, *fast, *own_host;
    Py_ssize_t position, cache_limit, max_held;
    int click, utf8, foreign = 0;
    if (!PyArg_ParseTuple(args, "SnO!O!OOpnnpO|p", &buffer, &position, &PyList_Type, &out, &PyDict_Type, &values,
                          &value_for, &fast, &click, &cache_limit, &max_held, &utf8, &own_host, &foreign)) {
        return NULL;
    }
    Signing signing_storage;
    const Signing *signing = NULL;
    if (fast != Py_None) {
        if (read_signing(fast, &signing_storage) < 0) return NULL;
        if (own_host != Py_None) {
            if (!PyBytes_Check(own_host)) {
                PyErr_SetString(PyExc_TypeError, "own_host must be bytes or None");
                return NULL;
            }
            signing_storage.own_host = PyBytes_AS_STRING(own_host);
            signing_storage.own_host_len = PyBytes_GET_SIZE(own_host);
        }
        signing = &signing_storage;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(buffer);
    Py_ssize_t n = PyBytes_GET_SIZE(buffer);
    if (position < 0 || position > n) {
        PyErr_SetString(PyExc_ValueError, "position out of range");
        return NULL;
    }
    Output o = {buffer, s, out, position};
    Py_ssize_t i = position;
    for (;;) {
        i = find_byte(s, i, n, '<');
        if (i < 0) {
            i = n;
            break;
        }
        if (i + 1 >= n) break;  /* a "<" at the end: what follows decides */
        unsigned char c = s[i + 1];
        Py_ssize_t end;
        if (c == '!') {
            if (i + 3 < n && s[i + 2] == '-' && s[i + 3] == '-') {
                end = comment_end(s, i, n);
            } else if ((n - i >= 9 && memcmp(s + i + 1, "![CDATA[", 8) == 0) ||
                       (n - i >= 9 && same_lower(s + i + 1, "!doctype", 8))) {
                break;  /* rewrite.py's to handle */
            } else {
                end = find_byte(s, i + 2, n, '>');
                if (end >= 0) end++;
            }
        } else if (c == '?') {
            end = find_byte(s, i + 2, n, '>');
            if (end >= 0) end++;
        } else if (c == '/' && !(i + 2 < n && is_alpha(s[i + 2]))) {
            if (i + 2 >= n) break;
            end = find_byte(s, i + 2, n, '>');
            if (end >= 0) end++;
        } else if (c == '/' || is_alpha(c)) {
            int kind = tag_kind(s, i, n, foreign);
            if (kind == INTERESTING) break;
            Py_ssize_t name_end = i + (c == '/' ? 2 : 1);
            while (name_end < n && !is_ws(s[name_end]) && s[name_end] != '/' && s[name_end] != '>') name_end++;
            if (kind == PLAIN_TAG) {
                end = tag_tail_end(s, name_end, n);
            } else {
                Py_ssize_t value_start, value_stop;
                end = link_end(s, name_end, n, &value_start, &value_stop);
                if (end >= 0 && value_start >= 0 && click && end - i <= max_held) {
                    if (names_opt_out(s, i, end)) break;  /* rewrite.py reads data-trackgate */
                    PyObject *value = link_value(values, value_for, signing, cache_limit, s + value_start,
                                                 value_stop - value_start, utf8);
                    if (!value) return NULL;
                    if (PyBytes_GET_SIZE(value) > 0) {
                        if (emit_to(&o, value_start) < 0 || PyList_Append(out, value) < 0) {
                            Py_DECREF(value);
                            return NULL;
                        }
                        o.emitted = value_stop;
                    }
                    Py_DECREF(value);
                }
            }
        } else {
            i += 1;  /* a "<" that starts nothing: text */
            continue;
        }
        if (end < 0) break;  /* not whole yet, or unreadable: rewrite.py decides */
        i = end;
    }
    if (emit_to(&o, i) < 0) return NULL;
    return PyLong_FromSsize_t(i);
}

/* A str's UTF-8: its own bytes when it is ASCII, else a new bytes object in *encoded (PyUnicode_AsUTF8 would
 * keep a copy on the string for its lifetime). -1, no exception set, for lone surrogates. */
static int utf8_of(PyObject *text, PyObject **encoded, const char **data, Py_ssize_t *len) {
    if (PyUnicode_IS_ASCII(text)) {
        *data = (const char *)PyUnicode_DATA(text);
        *len = PyUnicode_GET_LENGTH(text);
        return 0;
    }
    *encoded = PyUnicode_AsUTF8String(text);
    if (!*encoded) {
        PyErr_Clear();
        return -1;
    }
    *data = PyBytes_AS_STRING(*encoded);
    *len = PyBytes_GET_SIZE(*encoded);
    return 0;
}

/* links.py's click_url for a plain URL, as text: origin, prefix and token, or None (links.py decides). */
static PyObject *sign_click(PyObject *module, PyObject *args) {
    PyObject *url, *fast;
    if (!PyArg_ParseTuple(args, "UO!", &url, &PyTuple_Type, &fast)) return NULL;
    Signing signing;
    if (read_signing(fast, &signing) < 0) return NULL;
    PyObject *encoded = NULL;
    const char *text;
    Py_ssize_t len;
    if (utf8_of(url, &encoded, &text, &len) < 0) Py_RETURN_NONE;  /* lone surrogates: links.py says so */
    int leave;
    PyObject *value = signed_value(&signing, (const unsigned char *)text, len, 1, 1, &leave);
    Py_XDECREF(encoded);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *link = PyUnicode_FromStringAndSize(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    Py_DECREF(value);
    return link;
}

/* Whether links.check_url passes a URL by its patterns alone (a plain http(s) URL with a host name): 1; 0 for
 * every URL that needs its closer look, or is refused; -1 with an error set. */
static int is_plain_url(PyObject *url) {
    if (!PyUnicode_Check(url) || PyUnicode_GET_LENGTH(url) > MAX_URL_CHARS) return 0;
    PyObject *encoded = NULL;
    const char *text;
    Py_ssize_t len;
    if (utf8_of(url, &encoded, &text, &len) < 0) return 0;
    unsigned char small[512];
    unsigned char *copy = len <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)len + 1);
    if (!copy) {
        Py_XDECREF(encoded);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t used;
    int kind = read_href((const unsigned char *)text, len, 1, 1, copy, &used);
    if (copy != small) PyMem_Free(copy);
    Py_XDECREF(encoded);
    return kind == SIGN;
}

static PyObject *plain_url(PyObject *module, PyObject *url) {
    int plain = is_plain_url(url);
    if (plain < 0) return NULL;
    return PyBool_FromLong(plain);
}

/* tokens.py's reading of a signed token whose payload is not compressed: the payload when one of the keys'
 * HMAC states (newest first) signed it, False when none did, else None (tokens.py then reads it and says
 * what is wrong). */
static PyObject *verified_payload(PyObject *token, PyObject *macs) {
    if (!PyUnicode_IS_ASCII(token)) Py_RETURN_NONE;
    const char *text = (const char *)PyUnicode_DATA(token);
    Py_ssize_t len = PyUnicode_GET_LENGTH(token);
    if (len > MAX_TOKEN_CHARS) Py_RETURN_NONE;
    const char *dot = NULL;
    for (Py_ssize_t k = len - 1; k >= 0; k--) {
        if (text[k] == '.') {
            dot = text + k;
            break;
        }
    }
    if (!dot || dot == text || dot == text + len - 1 || text[0] == '.') Py_RETURN_NONE;  /* none, or zlib'd */
    Py_ssize_t body_len = dot - text, signature_len = len - body_len - 1;
    int verified = 0;
    for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(macs) && !verified; m++) {
        unsigned char digest[MAC_BYTES];
        int unread = mac_digest(PyTuple_GET_ITEM(macs, m), text, body_len, digest);
        if (unread < 0) return NULL;
        if (unread) Py_RETURN_NONE;  /* not SHA-256: tokens.py reads it */
        /* The base64 text is compared, not decoded bytes (see tokens.py's _unsign). */
        char signature[44];
        Py_ssize_t signature_used = 0;
        if (put_base64_of(digest, MAC_BYTES, signature, &signature_used, (Py_ssize_t)sizeof signature) < 0) return NULL;
        verified = same_bytes(signature, signature_used, dot + 1, signature_len);
    }
    if (!verified) Py_RETURN_FALSE;  /* every key tried: tokens.py says so without trying them all again */
    PyObject *payload = read_base64(text, body_len);
    if (payload || PyErr_Occurred()) return payload;
    Py_RETURN_NONE;  /* base64 binascii reads otherwise: tokens.py reads it */
}

static PyObject *unsign(PyObject *module, PyObject *args) {
    PyObject *token, *macs;
    if (!PyArg_ParseTuple(args, "UO!", &token, &PyTuple_Type, &macs)) return NULL;
    return verified_payload(token, macs);
}

/* The JSON object a payload holds, read by the scanner given (fastjson's, json's C scanner): a new dict, or
 * NULL with no error set when fastjson.loads would read the text another way or refuse it (not UTF-8, not
 * one bare object, whitespace around it): tokens.py then reads it and says what is wrong. */
static PyObject *payload_object(PyObject *payload, PyObject *scan) {
    PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), NULL);
    PyObject *found = text ? PyObject_CallFunction(scan, "On", text, (Py_ssize_t)0) : NULL;
    PyObject *object = NULL;
    if (found && PyTuple_Check(found) && PyTuple_GET_SIZE(found) == 2) {
        PyObject *value = PyTuple_GET_ITEM(found, 0), *end = PyTuple_GET_ITEM(found, 1);
        /* one object and nothing after it (fastjson.loads reads trailing whitespace its own way) */
        if (PyDict_CheckExact(value) && PyLong_Check(end) && PyLong_AsSsize_t(end) == PyUnicode_GET_LENGTH(text))
            object = Py_NewRef(value);
    }
    Py_XDECREF(text);
    Py_XDECREF(found);
    if (PyErr_Occurred()) {
        Py_CLEAR(object);
        /* An Exception (MemoryError and RecursionError too): the Python code reads the token again and meets
         * it itself. KeyboardInterrupt and kin go on. */
        if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear();
    }
    return object;
}

static PyObject *str_u, *str_m, *str_t, *str_r, *str_x;  /* a token's keys (links.py's _result) */

/* links.py's reading of a token's fields in the common case: (url, metadata, title, referrer) when the data
 * has no expiry, a plain http(s) destination (or, in an open token, none), metadata that is an object or
 * empty, and a title and referrer that are text or absent; else NULL, no error set (links.py reads it). */
static PyObject *token_fields(PyObject *data, int click) {
    /* an expiry (tokens._EXPIRES): tokens.py checks it */
    if (PyDict_GetItemWithError(data, str_x) || PyErr_Occurred()) return NULL;
    PyObject *url = PyDict_GetItemWithError(data, str_u);
    if (PyErr_Occurred()) return NULL;
    if (url == Py_None) url = NULL;  /* links.py: data.get("u"), then "is not None" */
    if (url ? is_plain_url(url) <= 0 : click) return NULL;  /* a click needs a destination */
    PyObject *metadata = PyDict_GetItemWithError(data, str_m);
    if (PyErr_Occurred()) return NULL;
    int given = metadata ? PyObject_IsTrue(metadata) : 0;  /* links.py: data.get("m") or {} */
    if (given < 0 || (given && !PyDict_CheckExact(metadata))) return NULL;
    PyObject *title = PyDict_GetItemWithError(data, str_t);
    PyObject *referrer = title || !PyErr_Occurred() ? PyDict_GetItemWithError(data, str_r) : NULL;
    if (PyErr_Occurred()) return NULL;
    if ((title && title != Py_None && !PyUnicode_Check(title)) ||
        (referrer && referrer != Py_None && !PyUnicode_Check(referrer)))
        return NULL;
    PyObject *fields = PyTuple_New(4);
    PyObject *object = given ? Py_NewRef(metadata) : PyDict_New();
    if (!fields || !object) {
        Py_XDECREF(fields);
        Py_XDECREF(object);
        return NULL;
    }
    PyTuple_SET_ITEM(fields, 0, Py_NewRef(url ? url : Py_None));
    PyTuple_SET_ITEM(fields, 1, object);
    PyTuple_SET_ITEM(fields, 2, Py_NewRef(title ? title : Py_None));
    PyTuple_SET_ITEM(fields, 3, Py_NewRef(referrer ? referrer : Py_None));
    return fields;
}

/* (Fast-called, its arguments checked here: one call per tracked request, and a tuple of arguments parsed by
 * format was a twentieth of its cost.) */
static PyObject *read_token(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_token(token, macs, scan, click) takes a str and a tuple first");
        return NULL;
    }
    PyObject *token = args[0], *macs = args[1], *scan = args[2];
    int click = PyObject_IsTrue(args[3]);
    if (click < 0) return NULL;
    PyObject *payload = verified_payload(token, macs);
    if (!payload || !PyBytes_Check(payload)) return payload;  /* an error, False or None */
    PyObject *data = payload_object(payload, scan);
    Py_DECREF(payload);
    if (!data) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *fields = token_fields(data, click);
    if (!fields && !PyErr_Occurred()) return data;  /* authentic: links.py checks its fields */
    Py_DECREF(data);
    return fields;
}

/* new_slotted(cls, members, values): a new cls (tp_alloc, as object.__new__ makes it) with the i-th member
 * descriptor of its __slots__ set to the i-th value, as object.__setattr__ sets it for a frozen dataclass's
 * __init__, without a call per field. Each descriptor must belong to cls or a base of it, and cls must be a
 * class object.__new__ makes (no __new__ of its own, not abstract). */
static PyObject *new_slotted(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyTuple_CheckExact(args[1]) || !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "new_slotted(cls, members, values) takes a type and two tuples");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    /* Only what object.__new__ would make: a C type's own tp_new may set up more than its slots. */
    if (cls->tp_new != PyBaseObject_Type.tp_new || (cls->tp_flags & Py_TPFLAGS_IS_ABSTRACT)) {
        PyErr_Format(PyExc_TypeError, "new_slotted: %s is not made by object.__new__", cls->tp_name);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(args[1]);
    if (PyTuple_GET_SIZE(args[2]) != count) {
        PyErr_SetString(PyExc_ValueError, "new_slotted: as many values as members");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *member = PyTuple_GET_ITEM(args[1], i);
        if (!Py_IS_TYPE(member, &PyMemberDescr_Type) || !PyType_IsSubtype(cls, PyDescr_TYPE(member))) {
            PyErr_Format(PyExc_TypeError, "new_slotted: member %zd is not a slot of %s", i, cls->tp_name);
            return NULL;
        }
    }
    PyObject *made = cls->tp_alloc(cls, 0);
    if (!made) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyMemberDescrObject *member = (PyMemberDescrObject *)PyTuple_GET_ITEM(args[1], i);
        if (PyMember_SetOne((char *)made, member->d_member, PyTuple_GET_ITEM(args[2], i)) < 0) {
            Py_DECREF(made);
            return NULL;
        }
    }
    return made;
}

static PyMethodDef methods[] = {
    {"plain_url", plain_url, METH_O,
     "plain_url(url) -> bool\n\nWhether links.check_url passes url by its patterns alone."},
    {"unsign", unsign, METH_VARARGS,
     "unsign(token, macs) -> bytes | bool | None\n\n"
     "The payload of a signed, uncompressed token one of the HMAC states signed; False when none signed it;\n"
     "None for tokens.py to read."},
    {"read_token", (PyCFunction)(void (*)(void))read_token, METH_FASTCALL,
     "read_token(token, macs, scan, click) -> tuple[str | None, dict, str | None, str | None] | dict | bool\n"
     "    | None\n\n"
     "The destination, metadata, title and referrer of a signed click (or open) token in the common case;\n"
     "its data when it is authentic but links.py must check its fields; False when no key signed it; None\n"
     "for links.py to read."},
    {"sign_click", sign_click, METH_VARARGS,
     "sign_click(url, signing) -> str | None\n\n"
     "links.py's click link for a plain http(s) URL (signing: a ClickSigning), or None for links.py to make."},
    {"new_slotted", (PyCFunction)(void (*)(void))new_slotted, METH_FASTCALL,
     "new_slotted(cls, members, values) -> cls instance\n\n"
     "A new cls with each slot member descriptor in members set to the value at its index."},
    {"scan", scan, METH_VARARGS,
     "scan(buffer, position, out, values, value_for, signing, click, cache_limit, max_held, utf8, own_host)"
     " -> position\n\n"
     "Emit buffer[position:] into out up to the first construct rewrite.py must handle; see rewrite.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "trackgate._speedups", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *zlib = PyImport_ImportModule("zlib");
    if (!zlib) return NULL;
    zlib_compress = PyObject_GetAttrString(zlib, "compress");
    Py_DECREF(zlib);
    if (!zlib_compress) return NULL;
    for (int c = 0x21; c < 0x7f; c++) href_plain[c] = strchr("&\\\"'{*%[", c) == NULL;
    memset(base64_values, -1, sizeof base64_values);
    for (int d = 0; d < 64; d++) base64_values[(unsigned char)BASE64_DIGITS[d]] = (signed char)d;
    str_copy = PyUnicode_InternFromString("copy");
    str_update = PyUnicode_InternFromString("update");
    str_digest = PyUnicode_InternFromString("digest");
    if (!str_copy || !str_update || !str_digest) return NULL;
    str_u = PyUnicode_InternFromString("u");
    str_m = PyUnicode_InternFromString("m");
    str_t = PyUnicode_InternFromString("t");
    str_r = PyUnicode_InternFromString("r");
    str_x = PyUnicode_InternFromString("x");
    if (!str_u || !str_m || !str_t || !str_r || !str_x) return NULL;
    PyObject *module = PyModule_Create(&module_def);
#ifdef TRACKGATE_OPENSSL
    if (module && add_hmac_type(module) < 0) Py_CLEAR(module);
#endif
    return module;
}
