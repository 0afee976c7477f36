/* HMAC-SHA-256 states for the token codec (tokens.py's _mac), part of _speedups.c.
 *
 * hashlib's HMAC object costs a token 1.3 µs: every copy() and digest() duplicates an OpenSSL 3 MAC context
 * (allocations and a provider look-up), and each step is a method call. Here the key's two padded blocks are
 * hashed once (RFC 2104's precomputed inner and outer states, as Python's own hmac module keeps them when
 * it cannot use OpenSSL's), so a copy is a struct copy and a MAC is OpenSSL's SHA-256 over the message and
 * over the inner digest: 0.4 µs. Built only where OpenSSL's headers are (setup.py defines TRACKGATE_OPENSSL);
 * without it tokens.py keeps hashlib's HMAC.
 */
#ifdef TRACKGATE_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED  /* SHA256_Init and kin: the EVP calls allocate on every use */
#include <openssl/crypto.h>
#include <openssl/sha.h>

#define HMAC_BLOCK 64  /* SHA-256's block size */

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner;  /* after the key XOR ipad block, and what update() was given */
    SHA256_CTX outer;  /* after the key XOR opad block */
} HmacSha256;

static PyTypeObject HmacSha256_Type;

/* The MAC of what the state holds followed by n more bytes. */
static void hmac_finish(const HmacSha256 *mac, const void *more, size_t n, unsigned char out[SHA256_DIGEST_LENGTH]) {
    SHA256_CTX ctx = mac->inner;
    if (n) SHA256_Update(&ctx, more, n);
    SHA256_Final(out, &ctx);
    ctx = mac->outer;
    SHA256_Update(&ctx, out, SHA256_DIGEST_LENGTH);
    SHA256_Final(out, &ctx);
}

static PyObject *HmacSha256_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*:HmacSha256", &key)) return NULL;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_TypeError, "HmacSha256() takes no keyword arguments");
        return NULL;
    }
    unsigned char block[HMAC_BLOCK] = {0}, pad[HMAC_BLOCK];
    if (key.len > HMAC_BLOCK) {  /* a long key is hashed first (RFC 2104) */
        SHA256_CTX ctx;          /* (not the one-shot SHA256(): on OpenSSL 3 it may fail, through EVP) */
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, key.buf, (size_t)key.len);
        SHA256_Final(block, &ctx);
        OPENSSL_cleanse(&ctx, sizeof ctx);
    } else {
        memcpy(block, key.buf, (size_t)key.len);
    }
    PyBuffer_Release(&key);
    HmacSha256 *mac = (HmacSha256 *)type->tp_alloc(type, 0);
    if (mac) {
        for (int k = 0; k < HMAC_BLOCK; k++) pad[k] = block[k] ^ 0x36;
        SHA256_Init(&mac->inner);
        SHA256_Update(&mac->inner, pad, HMAC_BLOCK);
        for (int k = 0; k < HMAC_BLOCK; k++) pad[k] = block[k] ^ 0x5c;
        SHA256_Init(&mac->outer);
        SHA256_Update(&mac->outer, pad, HMAC_BLOCK);
    }
    OPENSSL_cleanse(block, sizeof block);  /* no copy of the key left on the stack */
    OPENSSL_cleanse(pad, sizeof pad);
    return (PyObject *)mac;
}

static PyObject *HmacSha256_copy(PyObject *self, PyObject *unused) {
    HmacSha256 *copy = PyObject_New(HmacSha256, Py_TYPE(self));
    if (!copy) return NULL;
    copy->inner = ((HmacSha256 *)self)->inner;
    copy->outer = ((HmacSha256 *)self)->outer;
    return (PyObject *)copy;
}

static PyObject *HmacSha256_update(PyObject *self, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    SHA256_Update(&((HmacSha256 *)self)->inner, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *HmacSha256_digest(PyObject *self, PyObject *unused) {
    unsigned char out[SHA256_DIGEST_LENGTH];
    hmac_finish((HmacSha256 *)self, NULL, 0, out);
    return PyBytes_FromStringAndSize((const char *)out, SHA256_DIGEST_LENGTH);
}

static PyMethodDef HmacSha256_methods[] = {
    {"copy", HmacSha256_copy, METH_NOARGS, "copy() -> HmacSha256\n\nAn independent state holding the same input."},
    {"update", HmacSha256_update, METH_O, "update(data)\n\nAdd bytes to the message."},
    {"digest", HmacSha256_digest, METH_NOARGS, "digest() -> bytes\n\nThe 32-byte MAC of the message so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HmacSha256_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trackgate._speedups.HmacSha256",
    .tp_basicsize = sizeof(HmacSha256),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "HmacSha256(key)\n\nAn HMAC-SHA-256 state, as hmac.new(key, digestmod=hashlib.sha256) makes, "
              "with copy(), update() and digest().",
    .tp_new = HmacSha256_new,
    .tp_methods = HmacSha256_methods,
};

/* Adds the type to the module; 0, or -1 with an error set. */
static int add_hmac_type(PyObject *module) {
    if (PyType_Ready(&HmacSha256_Type) < 0) return -1;
    Py_INCREF(&HmacSha256_Type);
    if (PyModule_AddObject(module, "HmacSha256", (PyObject *)&HmacSha256_Type) < 0) {
        Py_DECREF(&HmacSha256_Type);
        return -1;
    }
    return 0;
}

#define IS_HMAC_SHA256(state) Py_IS_TYPE((state), &HmacSha256_Type)
#else
#define IS_HMAC_SHA256(state) 0
#endif
