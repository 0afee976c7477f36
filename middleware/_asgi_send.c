/* The shells' per-request work in C: optional, with asgi.py's and wsgi.py's pure-Python code as the reference.
 *
 * request_headers() is asgi.py's _identity_headers: the Cookie (lines joined) and Sec-GPC headers of a scope.
 *
 * prepare() is the start of ASGIMiddleware.__call__ for the two commonest requests of an app's own pages in
 * the default set-up: a first visit (no cookie) and a returning visitor whose Cookie header identity.py has
 * read before. It stores the visitor in the scope's state and returns the Responder; for any other request
 * (tracking paths, a mount, Sec-GPC, a query string that may name the visitor, a header not read before,
 * anything unexpected) it returns None and asgi.py decides, so it never raises.
 *
 * Call is ASGIMiddleware.__call__: it calls prepare()'s work and hands the app the Responder, or leaves the
 * request to asgi.py's _serve.
 *
 * Responder is the ``send`` the app gets (asgi.py's _responder). Most responses are not HTML and change
 * nothing but a new visitor's cookie: for those the start message is read here and the server's own send
 * returned, so that each message costs one C call and no coroutine of ours. Any start it does not handle
 * whole (an HTML type, the opt-out header, a 304 to revalidate, a cookie to delete, headers that are not a
 * list of byte pairs) goes to asgi.py's _start, and a body being rewritten to its _Rewriting.
 *
 * WSGICall is WSGIMiddleware.__call__, wsgi_prepare() its start and WSGIStart the start_response the app
 * gets: the same visits, for wsgi.py (see "The WSGI shell" below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <string.h>

static PyObject *str_type, *str_headers, *str_status, *str_scheme, *str_https, *str_start_type, *str_store;
static PyObject *str_cookie_action, *str_visitor, *str_set_cookie_name;
static PyObject *str_query_string, *str_root_path, *str_path, *str_state;
static PyObject *str_http;
static PyObject *str_path_info, *str_query_upper, *str_http_cookie, *str_http_sec_gpc, *str_url_scheme;
static PyObject *str_set_cookie_title, *str_empty, *str_on_start, *str_after_app;
static destructor class_dealloc;  /* what a class statement's classes free their instances with */

/* a == b for two exact str objects: identity, else (both ASCII) length and bytes, else the general compare,
 * which costs more than the rest of a type check. */
static int same_text(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    if (PyUnicode_IS_ASCII(a) && PyUnicode_IS_ASCII(b)) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(a);
        return len == PyUnicode_GET_LENGTH(b) && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len) == 0;
    }
    return PyUnicode_Compare(a, b) == 0;  /* (never an error for two str) */
}

/* True when the n characters at s, any case, are the lowercase word of len bytes. */
static int is_word(const char *s, Py_ssize_t n, const char *word, Py_ssize_t len) {
    if (n != len) return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != word[i]) return 0;
    }
    return 1;
}

static int names(PyObject *name, const char *word, Py_ssize_t len) {
    return is_word(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), word, len);
}

static int says_html(const char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        if ((s[i] | 32) == 'h' && (s[i + 1] | 32) == 't' && (s[i + 2] | 32) == 'm' && (s[i + 3] | 32) == 'l') return 1;
    }
    return 0;
}

static int mentions_html(PyObject *value) {
    return says_html(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
}

/* A (bytes, bytes) tuple's parts, or 0 for anything else. */
static int byte_pair(PyObject *item, PyObject **name, PyObject **value) {
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) return 0;
    *name = PyTuple_GET_ITEM(item, 0);
    *value = PyTuple_GET_ITEM(item, 1);
    return PyBytes_CheckExact(*name) && PyBytes_CheckExact(*value);
}

/* The Cookie and Sec-GPC headers' text (new references, NULL when absent): 1, or 0 for headers asgi.py must
 * read (it says what is wrong), or -1 with an error set. */
static int identity_headers(PyObject *headers, PyObject **found_cookie, PyObject **found_gpc) {
    if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)) return 0;
    PyObject *cookie = NULL, *gpc = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *value;
        if (!byte_pair(PySequence_Fast_GET_ITEM(headers, i), &name, &value)) {
            Py_XDECREF(cookie);
            Py_XDECREF(gpc);
            return 0;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(name);
        const char *s = PyBytes_AS_STRING(name);
        PyObject **slot = len == 6 && memcmp(s, "cookie", 6) == 0 ? &cookie
                        : len == 7 && memcmp(s, "sec-gpc", 7) == 0 ? &gpc : NULL;
        if (!slot) continue;
        PyObject *text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL);
        if (!text) goto fail;
        if (slot == &cookie && cookie) {  /* HTTP/2 may split cookies over several lines; they form one list */
            PyObject *joined = PyUnicode_FromFormat("%U; %U", cookie, text);
            Py_DECREF(text);
            if (!joined) goto fail;
            text = joined;
        }
        Py_XSETREF(*slot, text);
    }
    *found_cookie = cookie;
    *found_gpc = gpc;
    return 1;
fail:
    Py_XDECREF(cookie);
    Py_XDECREF(gpc);
    return -1;
}

static PyObject *request_headers(PyObject *module, PyObject *headers) {
    PyObject *cookie, *gpc;
    int found = identity_headers(headers, &cookie, &gpc);
    if (found <= 0) {
        if (found < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *pair = PyTuple_Pack(2, cookie ? cookie : Py_None, gpc ? gpc : Py_None);
    Py_XDECREF(cookie);
    Py_XDECREF(gpc);
    return pair;
}

/* What every response of one middleware shares (asgi.py's _send_config):
 * (gate, start, nothing, opt_out, rewrites, cookie_start, suffix_http, suffix_https), the cookie's parts as
 * bytes: "name=", then the attributes for a plain and an https request. */
enum { C_GATE, C_START, C_NOTHING, C_OPT_OUT, C_REWRITES, C_COOKIE_START, C_SUFFIX_HTTP, C_SUFFIX_HTTPS, C_SIZE };

typedef struct {
    PyObject_HEAD
    PyObject *config, *scope, *state, *send;
    PyObject *rewriting;  /* the _Rewriting's send once the start said the body is HTML to rewrite */
    vectorcallfunc vectorcall;
    int started;  /* (WSGI's start: the response was started here, not by wsgi.py's _Responder) */
} Responder;

static PyTypeObject ResponderType;
static PyObject *Responder_create(PyObject *config, PyObject *scope, PyObject *state, PyObject *send);

static int Responder_traverse(Responder *self, visitproc visit, void *arg) {
    Py_VISIT(self->config);
    Py_VISIT(self->scope);
    Py_VISIT(self->state);
    Py_VISIT(self->send);
    Py_VISIT(self->rewriting);
    return 0;
}

static int Responder_clear(Responder *self) {
    Py_CLEAR(self->config);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->state);
    Py_CLEAR(self->send);
    Py_CLEAR(self->rewriting);
    return 0;
}

static void Responder_dealloc(Responder *self) {
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, Responder_dealloc)
    Responder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

/* asgi.py's _start for this message: send what it returns, or hold the start back for its _Rewriting. */
static PyObject *slow_start(Responder *self, PyObject *message) {
    PyObject *done = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(self->config, C_START),
                                                  PyTuple_GET_ITEM(self->config, C_GATE), self->scope, self->state,
                                                  message, self->send, NULL);
    if (!done) return NULL;
    if (!PyTuple_CheckExact(done) || PyTuple_GET_SIZE(done) != 2) {
        Py_DECREF(done);
        PyErr_SetString(PyExc_TypeError, "_start returns (message, rewriting)");
        return NULL;
    }
    PyObject *start = PyTuple_GET_ITEM(done, 0), *rewriting = PyTuple_GET_ITEM(done, 1);
    PyObject *awaitable;
    if (rewriting != Py_None) {
        Py_XSETREF(self->rewriting, PyObject_GetAttrString(rewriting, "send"));
        awaitable = self->rewriting ? PyObject_CallNoArgs(PyTuple_GET_ITEM(self->config, C_NOTHING)) : NULL;
    } else {
        awaitable = PyObject_CallOneArg(self->send, start);
    }
    Py_DECREF(done);
    return awaitable;
}

/* A stored visitor cookie's value, start + code + suffix, into out: the code an ASCII str, the others of a and c
 * bytes. */
static void put_cookie(char *out, const char *start, Py_ssize_t a, PyObject *code, const char *suffix, Py_ssize_t c) {
    Py_ssize_t b = PyUnicode_GET_LENGTH(code);
    memcpy(out, start, (size_t)a);
    memcpy(out + a, PyUnicode_DATA(code), (size_t)b);
    memcpy(out + a + b, suffix, (size_t)c);
}

/* (name, value), the value's reference taken over; NULL when value is. */
static PyObject *header_pair(PyObject *name, PyObject *value) {
    if (!value) return NULL;
    PyObject *pair = PyTuple_Pack(2, name, value);
    Py_DECREF(value);
    return pair;
}

/* What a new visitor's cookie is made of, as Identity.set_cookie_header reads it: the visitor (a new
 * reference in *visitor), its code (an ASCII str, borrowed from it) and whether the request's scheme, under
 * key in the scope or environ, is "https". 1; 0, nothing held, when the Python code must make the cookie (a
 * code that is not ASCII text, a scheme that is not text: its own __eq__ may say "https"); -1 with an error
 * set. */
static int cookie_facts(Responder *self, PyObject *key, PyObject **visitor, PyObject **code, int *https) {
    if (!PyDict_CheckExact(self->scope)) return 0;
    PyObject *made = PyObject_GetAttr(self->state, str_visitor);
    if (!made) return -1;
    PyObject *text = PyTuple_Check(made) && PyTuple_GET_SIZE(made) > 0 ? PyTuple_GET_ITEM(made, 0) : NULL;
    PyObject *scheme = NULL;
    if (text && PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text)) {
        scheme = PyDict_GetItemWithError(self->scope, key);
        if (!scheme && PyErr_Occurred()) {
            Py_DECREF(made);
            return -1;
        }
        if (!scheme) scheme = str_empty;
    }
    if (!scheme || !PyUnicode_CheckExact(scheme)) {
        Py_DECREF(made);
        return 0;
    }
    *visitor = made;
    *code = text;
    *https = same_text(scheme, str_https);
    return 1;
}

/* The visitor cookie's header for a new code ("store"), as Identity.set_cookie_header makes it; None when
 * asgi.py's _start must make it. */
static PyObject *store_cookie(Responder *self) {
    PyObject *visitor, *code;
    int https;
    int known = cookie_facts(self, str_scheme, &visitor, &code, &https);
    if (known <= 0) return known < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *start = PyTuple_GET_ITEM(self->config, C_COOKIE_START);
    PyObject *suffix = PyTuple_GET_ITEM(self->config, https ? C_SUFFIX_HTTPS : C_SUFFIX_HTTP);
    Py_ssize_t a = PyBytes_GET_SIZE(start), c = PyBytes_GET_SIZE(suffix);
    PyObject *value = PyBytes_FromStringAndSize(NULL, a + PyUnicode_GET_LENGTH(code) + c);
    if (value) put_cookie(PyBytes_AS_STRING(value), PyBytes_AS_STRING(start), a, code, PyBytes_AS_STRING(suffix), c);
    Py_DECREF(visitor);
    return header_pair(str_set_cookie_name, value);
}

/* A tuple of a list's items, or NULL (no error set when the list changed while the tuple was made). Anything
 * that allocates may run Python code (a collection's finalizers and callbacks) that changes the app's list,
 * and what is sent must be what was read; PyList_AsTuple itself reads the items after allocating. */
static PyObject *snapshot(PyObject *list) {
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject *items = PyTuple_New(n);
    if (!items) return NULL;
    if (PyList_GET_SIZE(list) != n) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(items, i, Py_NewRef(PyList_GET_ITEM(list, i)));
    return items;
}

/* The start message when C can send it whole: the app's own, or a copy with the cookie; NULL with no error
 * set when asgi.py's _start must decide. */
static PyObject *plain_start(Responder *self, PyObject *message) {
    PyObject *headers = PyDict_GetItemWithError(message, str_headers);
    if (!headers) {
        if (PyErr_Occurred()) return NULL;
        headers = PyTuple_New(0);  /* no headers at all: ASGI allows it */
    } else if (PyList_CheckExact(headers)) {
        /* Held while the snapshot is made: a collection it starts may replace the message's list. */
        Py_INCREF(headers);
        PyObject *items = snapshot(headers);
        Py_DECREF(headers);
        headers = items;
    } else if (PyTuple_CheckExact(headers)) {
        Py_INCREF(headers);
    } else {
        return NULL;  /* another iterable: asgi.py reads it */
    }
    if (!headers) return NULL;
    PyObject *result = NULL;
    PyObject *opt_out = PyTuple_GET_ITEM(self->config, C_OPT_OUT);
    Py_ssize_t n = PyTuple_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *value;
        if (!byte_pair(PyTuple_GET_ITEM(headers, i), &name, &value)) goto done;
        if (names(name, "content-type", 12) && mentions_html(value)) goto done;
        if (names(name, PyBytes_AS_STRING(opt_out), PyBytes_GET_SIZE(opt_out))) goto done;
    }
    if (PyTuple_GET_ITEM(self->config, C_REWRITES) == Py_True) {
        /* A 304 may confirm a rewritten copy: asgi.py's _revalidated. Any status but a plain int is its too. */
        PyObject *status = PyDict_GetItemWithError(message, str_status);
        if (!status && PyErr_Occurred()) goto done;
        if (status && !PyLong_CheckExact(status)) goto done;
        int overflow = 0;
        if (status && (PyLong_AsLongAndOverflow(status, &overflow) == 304 || overflow)) goto done;
    }
    PyObject *action = PyObject_GetAttr(self->state, str_cookie_action);
    if (!action) goto done;
    if (action == Py_None) {
        Py_DECREF(action);
        result = Py_NewRef(message);
        goto done;
    }
    int store = PyUnicode_CheckExact(action) ? same_text(action, str_store)
                                             : PyUnicode_Check(action) && PyUnicode_Compare(action, str_store) == 0;
    Py_DECREF(action);
    if (!store) goto done;  /* a cookie to delete */
    PyObject *cookie = store_cookie(self);
    if (!cookie && !PyErr_ExceptionMatches(PyExc_Exception)) goto done;  /* KeyboardInterrupt goes on */
    if (!cookie || cookie == Py_None) {
        PyErr_Clear();  /* _start makes the cookie again, and swallows what fails ("visitor cookie") */
        Py_XDECREF(cookie);
        goto done;
    }
    /* A new message and list: an app may send the same constant start for every response. */
    PyObject *edited = PyList_New(n + 1);
    if (!edited) {
        Py_DECREF(cookie);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(edited, i, Py_NewRef(PyTuple_GET_ITEM(headers, i)));
    PyList_SET_ITEM(edited, n, cookie);
    PyObject *copy = PyDict_Copy(message);
    if (copy && PyDict_SetItem(copy, str_headers, edited) < 0) Py_CLEAR(copy);
    Py_DECREF(edited);
    result = copy;
done:
    Py_DECREF(headers);
    return result;
}

/* message["type"] == "http.response.start", as send_wrapper asks it: 1, 0, or -1 with an error set. */
static int is_start(PyObject *type) {
    if (type == str_start_type) return 1;
    if (PyUnicode_CheckExact(type)) return same_text(type, str_start_type);
    Py_INCREF(type);  /* its __eq__ may drop it from the message */
    int start = PyObject_RichCompareBool(type, str_start_type, Py_EQ);
    Py_DECREF(type);
    return start;
}

static PyObject *Responder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Responder *self = (Responder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw != 1 || (nkw && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "message"))) {
        PyErr_SetString(PyExc_TypeError, "send(message) takes one message");
        return NULL;
    }
    PyObject *message = args[0];
    if (self->rewriting) return PyObject_CallOneArg(self->rewriting, message);
    if (!PyDict_CheckExact(message)) {  /* another mapping: asgi.py's reading of it */
        PyObject *type = PyObject_GetItem(message, str_type);
        if (!type) return NULL;
        int start = is_start(type);
        Py_DECREF(type);
        if (start < 0) return NULL;
        return start ? slow_start(self, message) : PyObject_CallOneArg(self->send, message);
    }
    PyObject *type = PyDict_GetItemWithError(message, str_type);
    if (!type) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, str_type);
        return NULL;
    }
    int start_type = is_start(type);
    if (start_type < 0) return NULL;
    if (!start_type) return PyObject_CallOneArg(self->send, message);
    PyObject *start = plain_start(self, message);
    if (start) {
        PyObject *awaitable = PyObject_CallOneArg(self->send, start);
        Py_DECREF(start);
        return awaitable;
    }
    if (PyErr_Occurred()) return NULL;
    return slow_start(self, message);
}

static int valid_send_config(PyObject *config) {
    if (PyTuple_CheckExact(config) && PyTuple_GET_SIZE(config) == C_SIZE
        && PyBytes_Check(PyTuple_GET_ITEM(config, C_OPT_OUT)) && PyBytes_Check(PyTuple_GET_ITEM(config, C_COOKIE_START))
        && PyBytes_Check(PyTuple_GET_ITEM(config, C_SUFFIX_HTTP))
        && PyBytes_Check(PyTuple_GET_ITEM(config, C_SUFFIX_HTTPS))) {
        return 1;
    }
    PyErr_SetString(PyExc_TypeError, "config is asgi.py's _send_config");
    return 0;
}

static PyObject *Responder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *config, *scope, *state, *send;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Responder(config, scope, state, send) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!OOO:Responder", &PyTuple_Type, &config, &scope, &state, &send)) return NULL;
    if (!valid_send_config(config)) return NULL;
    return Responder_create(config, scope, state, send);
}

static PyTypeObject ResponderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trackgate._asgi_send.Responder",
    .tp_doc = "Responder(config, scope, state, send): the send an app gets; see asgi.py's _responder.",
    .tp_basicsize = sizeof(Responder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Responder_new,
    .tp_traverse = (traverseproc)Responder_traverse,
    .tp_clear = (inquiry)Responder_clear,
    .tp_dealloc = (destructor)Responder_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Responder, vectorcall),
};

/* shell_common.compiled_visit_config (asgi.py's _visit_config): (prefix_slash, prefix, implicit,
 * always_consents, param_marker, code_digits, refill_code_digits, returning, max_cookie_chars, VisitorState,
 * its slots, Visitor, state_key, visitor_key, emit_key, emit, send_config); the slots are VisitorState's
 * member descriptors, in the order of its __init__'s arguments. */
enum {
    V_PREFIX_SLASH, V_PREFIX, V_IMPLICIT, V_ALWAYS, V_PARAM_MARKER, V_CODE_DIGITS, V_REFILL_DIGITS, V_RETURNING,
    V_MAX_CHARS, V_STATE_TYPE, V_STATE_SLOTS, V_VISITOR_TYPE, V_STATE_KEY, V_VISITOR_KEY, V_EMIT_KEY, V_EMIT,
    V_SEND_CONFIG, V_SIZE
};

/* VisitorState(visitor, action, known, cookie_code), its slots set as its __init__ sets them, without running
 * Python code (VisitorState.slots() names them; its __init__ does nothing else). */
static PyObject *visitor_state(PyObject *config, PyObject *visitor, PyObject *action, PyObject *known,
                               PyObject *cookie_code) {
    PyObject *type = PyTuple_GET_ITEM(config, V_STATE_TYPE), *slots = PyTuple_GET_ITEM(config, V_STATE_SLOTS);
    if (!PyType_Check(type) || !PyTuple_CheckExact(slots) || PyTuple_GET_SIZE(slots) != 4) return NULL;
    /* tp_alloc and the slots' setters stand for object.__new__ and __init__: only for a plain class whose
     * __slots__ these are (anything else may need its own __new__ to be usable) */
    PyTypeObject *t = (PyTypeObject *)type;
    if (t->tp_base != &PyBaseObject_Type || t->tp_new != PyBaseObject_Type.tp_new) return NULL;
    Py_ssize_t offsets[4];
    for (int i = 0; i < 4; i++) {
        PyObject *slot = PyTuple_GET_ITEM(slots, i);
        if (!Py_IS_TYPE(slot, &PyMemberDescr_Type) || PyDescr_TYPE(slot) != t) return NULL;
        /* what a class statement's __slots__ makes: a writable object reference at an offset (member_set's
         * work, without its call) */
        PyMemberDef *member = ((PyMemberDescrObject *)slot)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY) || member->offset < (Py_ssize_t)sizeof(PyObject)
            || member->offset + (Py_ssize_t)sizeof(PyObject *) > t->tp_basicsize) {
            return NULL;
        }
        offsets[i] = member->offset;
    }
    PyObject *state = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    if (!state) return NULL;
    PyObject *values[4] = {visitor, action, known, cookie_code};
    for (int i = 0; i < 4; i++) {
        PyObject **place = (PyObject **)((char *)state + offsets[i]);
        Py_XSETREF(*place, Py_NewRef(values[i]));
    }
    return state;
}

#define CODE_LENGTH 16

/* A first visit's code, as identity.new_code() draws one: the last 16 of identity.code_digits (a bytearray of
 * random [a-z0-9], refilled by refill_code_digits when short), taken and cut off with no Python code run in
 * between, so that no two threads take the same. NULL, no error set: asgi.py draws the code. */
static PyObject *new_code(PyObject *config) {
    PyObject *digits = PyTuple_GET_ITEM(config, V_CODE_DIGITS);
    if (!PyByteArray_CheckExact(digits)) return NULL;
    if (PyByteArray_GET_SIZE(digits) < CODE_LENGTH) {
        PyObject *done = PyObject_CallNoArgs(PyTuple_GET_ITEM(config, V_REFILL_DIGITS));
        if (!done) return NULL;
        Py_DECREF(done);
        if (PyByteArray_GET_SIZE(digits) < CODE_LENGTH) return NULL;
    }
    Py_ssize_t left = PyByteArray_GET_SIZE(digits) - CODE_LENGTH;
    char taken[CODE_LENGTH];
    memcpy(taken, PyByteArray_AS_STRING(digits) + left, CODE_LENGTH);
    for (int i = 0; i < CODE_LENGTH; i++) {
        char c = taken[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return NULL;
    }
    if (PyByteArray_Resize(digits, left) < 0) return NULL;  /* (a buffer held on it: asgi.py draws) */
    PyObject *code = PyUnicode_New(CODE_LENGTH, 127);
    if (code) memcpy(PyUnicode_DATA(code), taken, CODE_LENGTH);
    return code;
}

/* Visitor(code, True, True), as tuple.__new__ makes it (the named tuple's own __new__ is Python code): the
 * type's allocation, then the items. Only for a class statement's subclass of tuple with no fields of its own
 * (a named tuple); tuple.__new__ refuses the types it cannot make this way (a struct sequence). */
static PyObject *new_visitor(PyObject *config, PyObject *code) {
    PyObject *visitor_type = PyTuple_GET_ITEM(config, V_VISITOR_TYPE);
    PyTypeObject *vt = (PyTypeObject *)visitor_type;
    if (!PyType_Check(visitor_type) || vt->tp_base != &PyTuple_Type || vt->tp_dealloc != class_dealloc
        || vt->tp_basicsize != PyTuple_Type.tp_basicsize || vt->tp_itemsize != PyTuple_Type.tp_itemsize) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030E0000
    PyObject *visitor = vt->tp_alloc(vt, 3);
    if (!visitor) return NULL;
    PyTuple_SET_ITEM(visitor, 0, Py_NewRef(code));
    PyTuple_SET_ITEM(visitor, 1, Py_NewRef(Py_True));
    PyTuple_SET_ITEM(visitor, 2, Py_NewRef(Py_True));
    return visitor;
#else  /* tuples may hold more than their items from 3.14 on (a cached hash): tuple.__new__ knows */
    PyObject *fields = PyTuple_Pack(3, code, Py_True, Py_True);
    PyObject *args = fields ? PyTuple_Pack(1, fields) : NULL;
    Py_XDECREF(fields);
    if (!args) return NULL;
    PyObject *visitor = PyTuple_Type.tp_new(vt, args, NULL);
    Py_DECREF(args);
    return visitor;
#endif
}

static int contains(PyObject *haystack, PyObject *needle) {
    const char *h = PyBytes_AS_STRING(haystack), *n = PyBytes_AS_STRING(needle);
    Py_ssize_t hn = PyBytes_GET_SIZE(haystack), nn = PyBytes_GET_SIZE(needle);
    for (Py_ssize_t i = 0; i + nn <= hn; i++) {
        if (memcmp(h + i, n, (size_t)nn) == 0) return 1;
    }
    return 0;
}

/* What a request's query string says to identity.py's resolve(). */
enum query_kind { NO_QUERY, QUERY, QUERY_NAMING_VISITOR };

/* The VisitorState identity.py's resolve() would give, for the two requests it decides without reading
 * anything (cookie: the Cookie header's text, or NULL), and its visitor in *visitor; NULL for the others. */
static PyObject *known_state(PyObject *config, enum query_kind query, PyObject *cookie, PyObject **visitor) {
    int no_query = query == NO_QUERY;
    if (!cookie || PyUnicode_GET_LENGTH(cookie) == 0) {
        if (PyTuple_GET_ITEM(config, V_IMPLICIT) != Py_True) return NULL;
        if (query == QUERY_NAMING_VISITOR) return NULL;
        PyObject *code = new_code(config);
        if (!code) return NULL;
        PyObject *made = new_visitor(config, code);
        Py_DECREF(code);
        if (!made) return NULL;
        PyObject *state = visitor_state(config, made, str_store, Py_None, Py_None);
        if (!state) {
            Py_DECREF(made);
            return NULL;
        }
        *visitor = made;
        return state;
    }
    if (PyTuple_GET_ITEM(config, V_ALWAYS) != Py_True || !no_query) return NULL;
    if (PyUnicode_GET_LENGTH(cookie) > PyLong_AsSsize_t(PyTuple_GET_ITEM(config, V_MAX_CHARS))) return NULL;
    PyObject *known = PyObject_CallOneArg(PyTuple_GET_ITEM(config, V_RETURNING), cookie);
    if (!known || known == Py_None) {
        Py_XDECREF(known);
        return NULL;
    }
    if (!PyTuple_Check(known) || PyTuple_GET_SIZE(known) < 1) {
        Py_DECREF(known);
        return NULL;
    }
    PyObject *code = PyTuple_GET_ITEM(known, 0);
    PyObject *state = visitor_state(config, known, Py_None, code, code);
    if (!state) {
        Py_DECREF(known);
        return NULL;
    }
    *visitor = known;
    return state;
}

/* 1 when the path (an exact str) is the app's, as Gate.owns sees it; 0 when it is trackgate's, or on an error. */
static int apps_path(PyObject *config, PyObject *path) {
    PyObject *prefix = PyTuple_GET_ITEM(config, V_PREFIX);
    PyObject *prefix_slash = PyTuple_GET_ITEM(config, V_PREFIX_SLASH);
    if (PyUnicode_Tailmatch(path, prefix_slash, 0, PY_SSIZE_T_MAX, -1) != 0) return 0;  /* ours (or an error) */
    if (PyUnicode_CheckExact(prefix) ? same_text(path, prefix) : PyUnicode_Compare(path, prefix) == 0) return 0;
    return !PyErr_Occurred();
}

static PyObject *prepared(PyObject *config, PyObject *scope, PyObject *send) {
    if (!PyDict_CheckExact(scope)) return NULL;
    PyObject *type = PyDict_GetItemWithError(scope, str_type);
    if (!type || !PyUnicode_CheckExact(type) || !same_text(type, str_http)) return NULL;
    PyObject *root = PyDict_GetItemWithError(scope, str_root_path);
    if (!root && PyErr_Occurred()) return NULL;
    /* mounted: asgi.py finds the path below the mount */
    if (root && (PyUnicode_CheckExact(root) ? PyUnicode_GET_LENGTH(root) != 0 : PyObject_IsTrue(root) != 0)) return NULL;
    PyObject *path = PyDict_GetItemWithError(scope, str_path);
    if (!path || !PyUnicode_CheckExact(path) || !apps_path(config, path)) return NULL;
    PyObject *query = PyDict_GetItemWithError(scope, str_query_string);
    if (!query && PyErr_Occurred()) return NULL;
    if (query && query != Py_None && !PyBytes_CheckExact(query)) return NULL;
    enum query_kind query_kind = !query || query == Py_None || PyBytes_GET_SIZE(query) == 0 ? NO_QUERY
                               : contains(query, PyTuple_GET_ITEM(config, V_PARAM_MARKER)) ? QUERY_NAMING_VISITOR
                               : QUERY;
    PyObject *headers = PyDict_GetItemWithError(scope, str_headers);
    if (!headers) return NULL;
    PyObject *cookie, *gpc;
    if (identity_headers(headers, &cookie, &gpc) <= 0) return NULL;
    PyObject *visitor = NULL;
    PyObject *state = gpc ? NULL : known_state(config, query_kind, cookie, &visitor);
    Py_XDECREF(cookie);
    Py_XDECREF(gpc);
    if (!state) return NULL;
    PyObject *holder = PyDict_GetItemWithError(scope, str_state);
    if (holder && !PyDict_CheckExact(holder)) goto fail;  /* a server's own state object: asgi.py writes to it */
    if (holder) {
        Py_INCREF(holder);  /* setting an item may run a finalizer that drops it from the scope */
    } else {
        if (PyErr_Occurred()) goto fail;
        holder = PyDict_New();
        if (!holder || PyDict_SetItem(scope, str_state, holder) < 0) {
            Py_XDECREF(holder);
            goto fail;
        }
    }
    int stored = PyDict_SetItem(holder, PyTuple_GET_ITEM(config, V_STATE_KEY), state) == 0
                 && PyDict_SetItem(holder, PyTuple_GET_ITEM(config, V_VISITOR_KEY), visitor) == 0
                 && PyDict_SetItem(holder, PyTuple_GET_ITEM(config, V_EMIT_KEY), PyTuple_GET_ITEM(config, V_EMIT)) == 0;
    Py_DECREF(holder);
    if (!stored) goto fail;
    PyObject *responder = Responder_create(PyTuple_GET_ITEM(config, V_SEND_CONFIG), scope, state, send);
    Py_DECREF(visitor);
    Py_DECREF(state);
    return responder;
fail:
    Py_DECREF(visitor);
    Py_DECREF(state);
    return NULL;
}

static int valid_visit_config(PyObject *config) {
    if (!PyTuple_CheckExact(config) || PyTuple_GET_SIZE(config) != V_SIZE
        || !PyUnicode_Check(PyTuple_GET_ITEM(config, V_PREFIX)) || !PyUnicode_Check(PyTuple_GET_ITEM(config, V_PREFIX_SLASH))
        || !PyBytes_Check(PyTuple_GET_ITEM(config, V_PARAM_MARKER))) {
        PyErr_SetString(PyExc_TypeError, "prepare(config, scope, send): config is asgi.py's _visit_config");
        return 0;
    }
    return valid_send_config(PyTuple_GET_ITEM(config, V_SEND_CONFIG));
}

/* What a compiled start made, or NULL with no error set for the Python code to decide: it meets the same
 * fault, and deals with it. What is not an Exception (KeyboardInterrupt) goes on, set. */
static PyObject *for_python(PyObject *made) {
    if (!made && PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear();
    return made;
}

static PyObject *prepare(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !valid_visit_config(args[0])) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "prepare(config, scope, send) takes three arguments");
        return NULL;
    }
    PyObject *responder = for_python(prepared(args[0], args[1], args[2]));
    if (responder || PyErr_Occurred()) return responder;
    Py_RETURN_NONE;
}

/* --- ASGIMiddleware.__call__ ----------------------------------------------------------------------------
 * For the requests prepare() decides, the app's own awaitable with the Responder as its send (self._fast holds
 * the visit config once the compiled start is in use); else self._serve(...), asgi.py's coroutine. An object
 * of its own type in the class, called as a method is (the type is a method descriptor), so that a request
 * costs no Python frame or coroutine of ours.
 *
 * Looked up on an instance, it gives the instance's _serve: servers and adapters choose ASGI 3 by asking
 * whether app.__call__ is a coroutine function (hypercorn, uvicorn, asgiref), and _serve is one, serving a
 * request the same way. It has a method's name, signature and coroutine marks, for the tools that wrap or
 * inspect middleware classes' __call__ (sentry-sdk reads its __name__). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} Call;

static PyObject *str_fast, *str_app, *str_serve;

/* What a shell's compiled start makes of a request (prepared's Responder, or wsgi_prepared's WSGIStart), read
 * with self._fast, the shell's configuration once the compiled start is in use; NULL with no error set when
 * self._serve serves it (no configuration, one valid() refuses, or a request prepared() leaves). */
static PyObject *fast_start(PyObject *self, int (*valid)(PyObject *),
                            PyObject *(*prepared)(PyObject *, PyObject *, PyObject *), PyObject *scope,
                            PyObject *send) {
    PyObject *config = PyObject_GetAttr(self, str_fast);
    if (!config) return NULL;
    PyObject *made = NULL;
    if (config != Py_None) {
        if (valid(config)) {
            made = for_python(prepared(config, scope, send));
        } else {
            PyErr_Clear();  /* not one the compiled start reads: _serve's */
        }
    }
    Py_DECREF(config);
    return made;
}

/* self.app(*app_args). */
static PyObject *call_app(PyObject *self, PyObject *const *app_args, size_t count) {
    PyObject *app = PyObject_GetAttr(self, str_app);
    if (!app) return NULL;
    PyObject *result = PyObject_Vectorcall(app, app_args, count, NULL);
    Py_DECREF(app);
    return result;
}

static PyObject *Call_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "ASGIMiddleware.__call__ needs the middleware");
        return NULL;
    }
    if (nargs == 4 && !kwnames) {
        PyObject *responder = fast_start(args[0], valid_visit_config, prepared, args[1], args[3]);
        if (responder) {
            PyObject *app_args[3] = {args[1], args[2], responder};
            PyObject *awaitable = call_app(args[0], app_args, 3);
            Py_DECREF(responder);
            return awaitable;
        }
        if (PyErr_Occurred()) return NULL;
    }
    return PyObject_VectorcallMethod(str_serve, args, (size_t)nargs, kwnames);
}

static PyObject *Call_get(PyObject *self, PyObject *instance, PyObject *owner) {
    if (!instance || instance == Py_None) return Py_NewRef(self);
    return PyObject_GetAttr(instance, str_serve);
}

static PyObject *Call_name(PyObject *self, void *closure) {
    return PyUnicode_FromString((const char *)closure);
}

static PyGetSetDef Call_getset[] = {
    {"__name__", Call_name, NULL, NULL, "__call__"},
    {"__qualname__", Call_name, NULL, NULL, "ASGIMiddleware.__call__"},
    {"__module__", Call_name, NULL, NULL, "trackgate.asgi"},
    {"__text_signature__", Call_name, NULL, NULL, "($self, scope, receive, send, /)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Call_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Call() takes no arguments");
        return NULL;
    }
    Call *self = (Call *)type->tp_alloc(type, 0);
    if (self) self->vectorcall = Call_vectorcall;
    return (PyObject *)self;
}

static PyTypeObject CallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trackgate._asgi_send.Call",
    .tp_doc = "ASGIMiddleware.__call__ in C: the compiled start for the requests it decides, else self._serve.",
    .tp_basicsize = sizeof(Call),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = Call_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Call, vectorcall),
    .tp_descr_get = Call_get,
    .tp_getset = Call_getset,
};

/* A Responder, or (type WSGIStartType) a WSGIStart: one response's config, scope or environ, state and send. */
static PyObject *responder_of(PyTypeObject *type, vectorcallfunc call, PyObject *config, PyObject *scope,
                              PyObject *state, PyObject *send) {
    Responder *self = PyObject_GC_New(Responder, type);
    if (!self) return NULL;
    self->config = Py_NewRef(config);
    self->scope = Py_NewRef(scope);
    self->state = Py_NewRef(state);
    self->send = Py_NewRef(send);
    self->rewriting = NULL;
    self->vectorcall = call;
    self->started = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *Responder_create(PyObject *config, PyObject *scope, PyObject *state, PyObject *send) {
    return responder_of(&ResponderType, Responder_vectorcall, config, scope, state, send);
}

/* --- The WSGI shell --------------------------------------------------------------------------------------
 * WSGICall is WSGIMiddleware.__call__, as Call is ASGIMiddleware's: for a first visit and a known returning
 * visitor (the visits prepare() decides, read from the environ), the visitor goes into the environ and the
 * app is called with a start_response of ours, a WSGIStart; every other request goes to wsgi.py's _serve.
 *
 * A WSGIStart starts the responses that change nothing but a new visitor's cookie itself: a str status and a
 * list of str pairs, no HTML type, no opt-out header, no 304 to revalidate, no exc_info. On any other call it
 * makes wsgi.py's _Responder for the response (the one _serve would have made) and hands it this call and
 * every later one, and what the app returns. */

/* The send config in wsgi.py's _wsgi_config: (gate, _Responder, opt_out, rewrites, cookie_start,
 * suffix_http, suffix_https), the opt-out header's name and the cookie's parts ASCII str. */
enum { W_GATE, W_RESPONDER, W_OPT_OUT, W_REWRITES, W_COOKIE_START, W_SUFFIX_HTTP, W_SUFFIX_HTTPS, W_SIZE };

static PyTypeObject WSGIStartType;

static int ascii_text(PyObject *text) {
    return PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text);
}

/* wsgi.py's _wsgi_config: compiled_visit_config's layout, with the parameter's marker as str and the send config
 * above. */
static int valid_wsgi_config(PyObject *config) {
    if (PyTuple_CheckExact(config) && PyTuple_GET_SIZE(config) == V_SIZE
        && PyUnicode_Check(PyTuple_GET_ITEM(config, V_PREFIX)) && PyUnicode_Check(PyTuple_GET_ITEM(config, V_PREFIX_SLASH))
        && PyUnicode_CheckExact(PyTuple_GET_ITEM(config, V_PARAM_MARKER))) {
        PyObject *send = PyTuple_GET_ITEM(config, V_SEND_CONFIG);
        if (PyTuple_CheckExact(send) && PyTuple_GET_SIZE(send) == W_SIZE && ascii_text(PyTuple_GET_ITEM(send, W_OPT_OUT))
            && ascii_text(PyTuple_GET_ITEM(send, W_COOKIE_START)) && ascii_text(PyTuple_GET_ITEM(send, W_SUFFIX_HTTP))
            && ascii_text(PyTuple_GET_ITEM(send, W_SUFFIX_HTTPS))) {
            return 1;
        }
    }
    PyErr_SetString(PyExc_TypeError, "config is wsgi.py's _wsgi_config");
    return 0;
}

/* ("Set-Cookie", the visitor cookie) for a new code, as Identity.set_cookie_header makes it; NULL, no error
 * set, when _Responder must make it. */
static PyObject *wsgi_cookie(Responder *self) {
    PyObject *visitor, *code;
    int https;
    if (cookie_facts(self, str_url_scheme, &visitor, &code, &https) <= 0) return NULL;
    PyObject *start = PyTuple_GET_ITEM(self->config, W_COOKIE_START);
    PyObject *suffix = PyTuple_GET_ITEM(self->config, https ? W_SUFFIX_HTTPS : W_SUFFIX_HTTP);
    Py_ssize_t a = PyUnicode_GET_LENGTH(start), c = PyUnicode_GET_LENGTH(suffix);
    PyObject *value = PyUnicode_New(a + PyUnicode_GET_LENGTH(code) + c, 127);
    if (value) put_cookie(PyUnicode_DATA(value), PyUnicode_DATA(start), a, code, PyUnicode_DATA(suffix), c);
    Py_DECREF(visitor);
    return header_pair(str_set_cookie_title, value);
}

/* True for a header _Responder must see: not a pair of ASCII str, an HTML type, or the opt-out header. */
static int wsgi_header_for_python(PyObject *item, PyObject *opt_out) {
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) return 1;
    PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
    if (!ascii_text(name) || !PyUnicode_CheckExact(value)) return 1;  /* (a non-ASCII name may lower() to ours) */
    const char *s = PyUnicode_DATA(name);
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (is_word(s, n, "content-type", 12)) {
        if (!PyUnicode_IS_ASCII(value)) return 1;
        if (says_html(PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value))) return 1;
    }
    return is_word(s, n, PyUnicode_DATA(opt_out), PyUnicode_GET_LENGTH(opt_out));
}

/* The headers to start the response with when C starts it: a copy of the app's list, with a new visitor's
 * cookie; NULL with no error set when _Responder must. */
static PyObject *wsgi_plain_headers(Responder *self, PyObject *status, PyObject *headers) {
    if (!PyUnicode_CheckExact(status) || !PyList_CheckExact(headers)) return NULL;
    if (PyTuple_GET_ITEM(self->config, W_REWRITES) == Py_True && PyUnicode_GET_LENGTH(status) >= 3
        && PyUnicode_READ_CHAR(status, 0) == '3' && PyUnicode_READ_CHAR(status, 1) == '0'
        && PyUnicode_READ_CHAR(status, 2) == '4') {
        return NULL;  /* a 304 may confirm a rewritten copy */
    }
    PyObject *action = PyObject_GetAttr(self->state, str_cookie_action);
    if (!action) return NULL;
    int store = action != Py_None && PyUnicode_CheckExact(action) && same_text(action, str_store);
    int plain = action == Py_None || store;  /* (else a cookie to delete) */
    Py_DECREF(action);
    if (!plain) return NULL;
    PyObject *cookie = NULL;
    if (store && !(cookie = wsgi_cookie(self))) return NULL;
    /* Copied before it is read, and nothing allocated between the copy's allocation and the copy: a collection
     * may run Python code that changes the app's list, and what is sent must be what was read. */
    Py_ssize_t n = PyList_GET_SIZE(headers);
    PyObject *edited = PyList_New(n + (cookie != NULL));
    if (!edited || PyList_GET_SIZE(headers) != n) {
        Py_XDECREF(edited);
        Py_XDECREF(cookie);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(edited, i, Py_NewRef(PyList_GET_ITEM(headers, i)));
    if (cookie) PyList_SET_ITEM(edited, n, cookie);
    PyObject *opt_out = PyTuple_GET_ITEM(self->config, W_OPT_OUT);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (wsgi_header_for_python(PyList_GET_ITEM(edited, i), opt_out)) {
            Py_DECREF(edited);
            return NULL;
        }
    }
    return edited;
}

/* The response's _Responder (borrowed), made on first use. */
static PyObject *wsgi_responder(Responder *self) {
    if (!self->rewriting) {
        PyObject *config = self->config;
        PyObject *made = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(config, W_RESPONDER),
                                                      PyTuple_GET_ITEM(config, W_GATE), self->scope, self->state,
                                                      self->send, NULL);
        if (!made) return NULL;
        if (self->rewriting) {
            Py_DECREF(made);  /* another thread made one meanwhile (the call ran Python code): one a response */
        } else {
            self->rewriting = made;
        }
    }
    return self->rewriting;
}

static PyObject *WSGIStart_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Responder *self = (Responder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!self->rewriting && !kwnames && (nargs == 2 || (nargs == 3 && args[2] == Py_None))) {
        PyObject *headers = wsgi_plain_headers(self, args[0], args[1]);
        if (headers) {
            self->started = 1;
            PyObject *start_args[2] = {args[0], headers};
            PyObject *write = PyObject_Vectorcall(self->send, start_args, 2, NULL);
            Py_DECREF(headers);
            return write;
        }
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;  /* KeyboardInterrupt goes on */
            PyErr_Clear();  /* _Responder meets the same fault, and deals with it */
        }
    }
    PyObject *responder = wsgi_responder(self);
    PyObject *on_start = responder ? PyObject_GetAttr(responder, str_on_start) : NULL;
    if (!on_start) return NULL;
    PyObject *write = PyObject_Vectorcall(on_start, args, nargsf, kwnames);
    Py_DECREF(on_start);
    return write;
}

static PyTypeObject WSGIStartType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trackgate._asgi_send.WSGIStart",
    .tp_doc = "The start_response a WSGI app gets from the compiled start (see wsgi.py's _Responder).",
    .tp_basicsize = sizeof(Responder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_traverse = (traverseproc)Responder_traverse,
    .tp_clear = (inquiry)Responder_clear,
    .tp_dealloc = (destructor)Responder_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Responder, vectorcall),
};

/* What the app returned, as the server gets it: itself when C started the response, else what _Responder
 * makes of it (the app started its response through _Responder, or has not started it yet). */
static PyObject *wsgi_after_app(Responder *starter, PyObject *result) {
    if (!starter->rewriting && starter->started) return result;
    PyObject *responder = wsgi_responder(starter);
    PyObject *body = responder ? PyObject_CallMethodOneArg(responder, str_after_app, result) : NULL;
    Py_DECREF(result);
    return body;
}

/* The visitor in the environ and the WSGIStart for a first or known returning visit (see prepared()), else
 * NULL. */
static PyObject *wsgi_prepared(PyObject *config, PyObject *environ, PyObject *start_response) {
    if (!PyDict_CheckExact(environ)) return NULL;
    PyObject *path = PyDict_GetItemWithError(environ, str_path_info);
    if (!path && PyErr_Occurred()) return NULL;
    if (path && !PyUnicode_CheckExact(path)) return NULL;
    if (!apps_path(config, path ? path : str_empty)) return NULL;
    if (PyDict_GetItemWithError(environ, str_http_sec_gpc) || PyErr_Occurred()) return NULL;
    /* Each value read before the next look-up: a key of another type in the environ may run its __eq__ in any
     * look-up, and drop what an earlier one returned (borrowed). */
    PyObject *query = PyDict_GetItemWithError(environ, str_query_upper);
    if (query ? !PyUnicode_CheckExact(query) : PyErr_Occurred() != NULL) return NULL;
    enum query_kind query_kind = NO_QUERY;
    if (query && PyUnicode_GET_LENGTH(query)) {
        Py_ssize_t at = PyUnicode_Find(query, PyTuple_GET_ITEM(config, V_PARAM_MARKER), 0, PY_SSIZE_T_MAX, 1);
        if (at == -2) return NULL;
        query_kind = at >= 0 ? QUERY_NAMING_VISITOR : QUERY;
    }
    PyObject *cookie = PyDict_GetItemWithError(environ, str_http_cookie);
    if (cookie ? !PyUnicode_CheckExact(cookie) : PyErr_Occurred() != NULL) return NULL;
    PyObject *visitor = NULL;
    Py_XINCREF(cookie);  /* (known_state runs Python code, which may change the environ) */
    PyObject *state = known_state(config, query_kind, cookie, &visitor);
    Py_XDECREF(cookie);
    if (!state) return NULL;
    PyObject *starter = NULL;
    if (PyDict_SetItem(environ, PyTuple_GET_ITEM(config, V_STATE_KEY), state) == 0
        && PyDict_SetItem(environ, PyTuple_GET_ITEM(config, V_VISITOR_KEY), visitor) == 0
        && PyDict_SetItem(environ, PyTuple_GET_ITEM(config, V_EMIT_KEY), PyTuple_GET_ITEM(config, V_EMIT)) == 0) {
        starter = responder_of(&WSGIStartType, WSGIStart_vectorcall, PyTuple_GET_ITEM(config, V_SEND_CONFIG),
                               environ, state, start_response);
    }
    Py_DECREF(visitor);
    Py_DECREF(state);
    return starter;
}

static PyObject *wsgi_prepare(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !valid_wsgi_config(args[0])) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "wsgi_prepare(config, environ, start_response) takes three arguments");
        }
        return NULL;
    }
    PyObject *starter = for_python(wsgi_prepared(args[0], args[1], args[2]));
    if (starter || PyErr_Occurred()) return starter;
    Py_RETURN_NONE;
}

static PyObject *WSGICall_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "WSGIMiddleware.__call__ needs the middleware");
        return NULL;
    }
    if (nargs == 3 && !kwnames) {
        PyObject *starter = fast_start(args[0], valid_wsgi_config, wsgi_prepared, args[1], args[2]);
        if (starter) {
            PyObject *app_args[2] = {args[1], starter};
            PyObject *result = call_app(args[0], app_args, 2);
            if (result) result = wsgi_after_app((Responder *)starter, result);
            Py_DECREF(starter);
            return result;
        }
        if (PyErr_Occurred()) return NULL;
    }
    return PyObject_VectorcallMethod(str_serve, args, (size_t)nargs, kwnames);
}

static PyGetSetDef WSGICall_getset[] = {
    {"__name__", Call_name, NULL, NULL, "__call__"},
    {"__qualname__", Call_name, NULL, NULL, "WSGIMiddleware.__call__"},
    {"__module__", Call_name, NULL, NULL, "trackgate.wsgi"},
    {"__text_signature__", Call_name, NULL, NULL, "($self, environ, start_response, /)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *WSGICall_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *self = Call_new(type, args, kwargs);
    if (self) ((Call *)self)->vectorcall = WSGICall_vectorcall;
    return self;
}

static PyTypeObject WSGICallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trackgate._asgi_send.WSGICall",
    .tp_doc = "WSGIMiddleware.__call__ in C: the compiled start for the requests it decides, else self._serve.",
    .tp_basicsize = sizeof(Call),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = WSGICall_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Call, vectorcall),
    .tp_descr_get = Call_get,
    .tp_getset = WSGICall_getset,
};

static PyMethodDef methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))prepare, METH_FASTCALL,
     "prepare(config, scope, send) -> Responder | None\n\n"
     "The start of ASGIMiddleware.__call__ for a first or known returning visit; None: asgi.py decides."},
    {"wsgi_prepare", (PyCFunction)(void (*)(void))wsgi_prepare, METH_FASTCALL,
     "wsgi_prepare(config, environ, start_response) -> WSGIStart | None\n\n"
     "The start of WSGIMiddleware.__call__ for a first or known returning visit; None: wsgi.py decides."},
    {"request_headers", request_headers, METH_O,
     "request_headers(headers) -> (cookie, gpc) | None\n\n"
     "asgi.py's _identity_headers for a list or tuple of byte pairs; None for anything else."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "trackgate._asgi_send", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

/* The marks of a coroutine function, as asgi.py marks its Python send (asgiref's WsgiToAsgi and
 * async_to_sync warn on every call otherwise): what inspect.markcoroutinefunction (Python 3.12 and later)
 * sets on a function, and Python 3.11's asyncio mark, to become class attributes. (The same Python code
 * defines a tuple subclass, for class_dealloc.) */
static const char MARKS[] =
    "import asyncio.coroutines, inspect\n"
    "def function(): pass\n"
    "if hasattr(inspect, 'markcoroutinefunction'):\n"
    "    inspect.markcoroutinefunction(function)\n"
    "marks = dict(vars(function))\n"
    "if getattr(asyncio.coroutines, '_is_coroutine', None) is not None:\n"
    "    marks['_is_coroutine'] = asyncio.coroutines._is_coroutine\n"
    "class Pairs(tuple):\n"
    "    __slots__ = ()\n";

/* Gives each type the marks; -1 with an error set. */
static int mark_coroutine_functions(PyTypeObject **types, int count) {
    PyObject *globals = PyDict_New();
    if (!globals || PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_XDECREF(globals);
        return -1;
    }
    PyObject *done = PyRun_String(MARKS, Py_file_input, globals, globals);
    PyObject *marks = done ? PyDict_GetItemString(globals, "marks") : NULL;
    PyObject *pairs = done ? PyDict_GetItemString(globals, "Pairs") : NULL;
    if (pairs && PyType_Check(pairs)) class_dealloc = ((PyTypeObject *)pairs)->tp_dealloc;
    int failed = !marks || !class_dealloc;
    for (int i = 0; i < count && !failed; i++) {
        failed = PyDict_Update(types[i]->tp_dict, marks) < 0;
        PyType_Modified(types[i]);
    }
    Py_XDECREF(done);
    Py_DECREF(globals);
    if (failed && !PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "coroutine marks");
    return failed ? -1 : 0;
}

PyMODINIT_FUNC PyInit__asgi_send(void) {
    str_type = PyUnicode_InternFromString("type");
    str_headers = PyUnicode_InternFromString("headers");
    str_status = PyUnicode_InternFromString("status");
    str_scheme = PyUnicode_InternFromString("scheme");
    str_https = PyUnicode_InternFromString("https");
    str_start_type = PyUnicode_InternFromString("http.response.start");
    str_store = PyUnicode_InternFromString("store");
    str_cookie_action = PyUnicode_InternFromString("cookie_action");
    str_visitor = PyUnicode_InternFromString("visitor");
    str_set_cookie_name = PyBytes_FromString("set-cookie");
    str_query_string = PyUnicode_InternFromString("query_string");
    str_root_path = PyUnicode_InternFromString("root_path");
    str_path = PyUnicode_InternFromString("path");
    str_state = PyUnicode_InternFromString("state");
    str_http = PyUnicode_InternFromString("http");
    str_fast = PyUnicode_InternFromString("_fast");
    str_app = PyUnicode_InternFromString("app");
    str_serve = PyUnicode_InternFromString("_serve");
    str_path_info = PyUnicode_InternFromString("PATH_INFO");
    str_query_upper = PyUnicode_InternFromString("QUERY_STRING");
    str_http_cookie = PyUnicode_InternFromString("HTTP_COOKIE");
    str_http_sec_gpc = PyUnicode_InternFromString("HTTP_SEC_GPC");
    str_url_scheme = PyUnicode_InternFromString("wsgi.url_scheme");
    str_set_cookie_title = PyUnicode_InternFromString("Set-Cookie");
    str_empty = PyUnicode_InternFromString("");
    str_on_start = PyUnicode_InternFromString("_on_start");
    str_after_app = PyUnicode_InternFromString("after_app");
    if (!str_type || !str_headers || !str_status || !str_scheme || !str_https || !str_start_type || !str_store
        || !str_cookie_action || !str_visitor || !str_set_cookie_name || !str_query_string || !str_root_path
        || !str_path || !str_state || !str_http || !str_fast || !str_app || !str_serve || !str_path_info
        || !str_query_upper || !str_http_cookie || !str_http_sec_gpc || !str_url_scheme || !str_set_cookie_title
        || !str_empty || !str_on_start || !str_after_app) {
        return NULL;
    }
    PyTypeObject *marked[] = {&ResponderType, &CallType};
    if (PyType_Ready(&ResponderType) < 0 || PyType_Ready(&CallType) < 0 || PyType_Ready(&WSGIStartType) < 0
        || PyType_Ready(&WSGICallType) < 0 || mark_coroutine_functions(marked, 2) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (!module) return NULL;
    if (PyModule_AddObjectRef(module, "Responder", (PyObject *)&ResponderType) < 0
        || PyModule_AddObjectRef(module, "Call", (PyObject *)&CallType) < 0
        || PyModule_AddObjectRef(module, "WSGIStart", (PyObject *)&WSGIStartType) < 0
        || PyModule_AddObjectRef(module, "WSGICall", (PyObject *)&WSGICallType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
