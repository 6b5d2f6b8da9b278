/*
 * Repeated keys in a JSON object, found in one pass over its bytes (streamflow_jobs.jsonkeys).
 *
 * Every event is checked, so this is C: the same check as a handful of bytes.find/count calls
 * cost ~10,000 instructions an event (their argument parsing), a mypyc byte loop ~50,000; this
 * scan costs a few instructions a byte. It is built by `make compile` next to the mypyc modules;
 * without it, jsonkeys falls back to the Python implementation of the same answer.
 *
 * top_level_repeats(raw) -> int, for raw bytes the caller already decoded as a valid JSON object:
 *   0  no key of the top-level object appears twice (exact);
 *   1  a key appears twice, byte for byte;
 *   2  cannot tell cheaply (an escape inside a key, e.g. "\u0061mount", or over 64 keys):
 *      the caller parses again to know.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_KEYS 64

static PyObject *top_level_repeats(PyObject *self, PyObject *arg) {
    const unsigned char *s;
    Py_ssize_t n;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "top_level_repeats() expects bytes");
        return NULL;
    }
    s = (const unsigned char *)PyBytes_AS_STRING(arg);
    n = PyBytes_GET_SIZE(arg);

    Py_ssize_t key_at[MAX_KEYS], key_len[MAX_KEYS];
    int keys = 0, depth = 0, expect_key = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"') {
            int is_key = depth == 1 && expect_key;
            Py_ssize_t start = ++i;
            /* The closing quote: the next quote not escaped (preceded by an even number of
               backslashes). memchr, as strings are most of the bytes. */
            for (;;) {
                const unsigned char *q = memchr(s + i, '"', (size_t)(n - i));
                if (q == NULL) return PyLong_FromLong(2); /* not valid JSON after all */
                Py_ssize_t end = q - s, b = end;
                while (b > start && s[b - 1] == '\\') b--;
                i = end;
                if ((end - b) % 2 == 0) break;
                i++;
            }
            if (is_key && memchr(s + start, '\\', (size_t)(i - start)) != NULL)
                return PyLong_FromLong(2);
            if (is_key) {
                Py_ssize_t len = i - start;
                expect_key = 0;
                for (int k = 0; k < keys; k++) {
                    if (key_len[k] == len && memcmp(s + key_at[k], s + start, (size_t)len) == 0)
                        return PyLong_FromLong(1);
                }
                if (keys == MAX_KEYS) return PyLong_FromLong(2);
                key_at[keys] = start;
                key_len[keys] = len;
                keys++;
            }
        } else if (c == '{' || c == '[') {
            depth++;
            if (c == '{' && depth == 1) expect_key = 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = 1;
        }
    }
    return PyLong_FromLong(0);
}

static PyMethodDef methods[] = {
    {"top_level_repeats", top_level_repeats, METH_O,
     "0: no repeated top-level key; 1: a key repeated; 2: cannot tell cheaply."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jsonkeys", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jsonkeys(void) { return PyModule_Create(&module); }
