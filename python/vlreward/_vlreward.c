/* _vlreward.c: the CPython extension under the `vlreward` package, written against the public
 * header (include/vlreward.h) only. It holds a loaded model and a pool of sessions; the package's
 * Python code turns request dicts and images into the plain tuples scored here.
 *
 * Requests reach score() as (requests, base_dir, interruptible): requests is a list of requests
 * (one, or the answers of a group, scored in order on one session so that their shared prompt runs
 * once), each a list of (role, items), each item a tuple (kind, payload, width, height, stride,
 * min_pixels, max_pixels, resized_height, resized_width) with kind a vlr_item_kind; payload is a str
 * (text, image reference) or a bytes-like object (encoded file, RGB8 pixels). score() returns a list
 * of (status, score or None, message) and raises only for a malformed tuple, a closed model or a
 * signal: the package maps statuses to exceptions.
 *
 * Ctrl-C: Python runs signal handlers in the main thread only, between bytecodes, so a long call
 * would otherwise hold KeyboardInterrupt back until it ends. With interruptible (the package sets it
 * in the main thread), a helper thread scores while the calling thread waits on it, waking every
 * 50 ms to run PyErr_CheckSignals; when a handler raises, the session's cancel flag stops the call
 * at its next check (between vision blocks, decoder layers and 512-token chunks) and the exception
 * propagates. The session stays usable (vlr_session_set_cancel_flag).
 *
 * Threads: the GIL is released while a request is scored. Each call takes a session from the
 * model's pool (creating one when all are busy) and gives it back afterwards; the pool is touched
 * only with the GIL held, so it needs no lock of its own. Consecutive calls from one thread
 * usually get the same session back, and with it the prefix reuse and the vision cache. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vlreward.h"

typedef struct {
    PyObject_HEAD
    vlr_model *model;
    vlr_session **idle; /* sessions not in use */
    size_t n_idle, cap_idle;
    size_t busy;        /* sessions lent out to calls under way */
    vlr_cache *cache;   /* the vision cache all its sessions share (NULL: vision_cache_mb=0) */
} ModelObject;

/* Everything one call keeps alive while the GIL is released. */
typedef struct {
    vlr_message *messages;
    vlr_content_item *items;
    PyObject **held;  /* payload objects, referenced until the call ends */
    Py_buffer *views; /* buffers of bytes-like payloads */
    size_t n_held, n_views;
} call_args;

static void call_args_free(call_args *a) {
    for (size_t i = 0; i < a->n_views; i++) PyBuffer_Release(&a->views[i]);
    for (size_t i = 0; i < a->n_held; i++) Py_DECREF(a->held[i]);
    PyMem_Free(a->messages);
    PyMem_Free(a->items);
    PyMem_Free(a->held);
    PyMem_Free(a->views);
    memset(a, 0, sizeof *a);
}

static int fill_item(PyObject *tuple, vlr_content_item *it, call_args *a, size_t mi, size_t ii) {
    int kind, width, height;
    PyObject *payload;
    Py_ssize_t stride;
    long long min_px, max_px, rh, rw;
    if (!PyTuple_Check(tuple) ||
        !PyArg_ParseTuple(tuple, "iOiinLLLL", &kind, &payload, &width, &height, &stride, &min_px, &max_px, &rh, &rw)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "messages[%zu].content[%zu]: expected an item tuple", mi, ii);
        return -1;
    }
    Py_INCREF(payload);
    a->held[a->n_held++] = payload;
    memset(it, 0, sizeof *it);
    it->kind = (vlr_item_kind)kind;
    it->min_pixels = min_px, it->max_pixels = max_px, it->resized_height = rh, it->resized_width = rw;
    if (kind == VLR_ITEM_TEXT || kind == VLR_ITEM_IMAGE) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(payload, &len);
        if (!s) return -1;
        if (kind == VLR_ITEM_TEXT) {
            it->text = s, it->text_len = (size_t)len;
        } else {
            if (strlen(s) != (size_t)len) {
                PyErr_Format(PyExc_ValueError, "messages[%zu].content[%zu]: NUL character in an image reference",
                             mi, ii);
                return -1;
            }
            it->image = s;
        }
        return 0;
    }
    if (kind != VLR_ITEM_IMAGE_BYTES && kind != VLR_ITEM_IMAGE_PIXELS) {
        PyErr_Format(PyExc_ValueError, "messages[%zu].content[%zu]: unknown item kind %d", mi, ii, kind);
        return -1;
    }
    Py_buffer *view = &a->views[a->n_views];
    if (PyObject_GetBuffer(payload, view, PyBUF_SIMPLE) != 0) return -1;
    a->n_views++;
    const uint8_t *data = view->buf;
    size_t len = (size_t)view->len;
    if (kind == VLR_ITEM_IMAGE_BYTES) {
        it->image_bytes = data, it->image_len = len;
        return 0;
    }
    /* The library cannot know the buffer's length: the rows must fit in it. */
    if (width <= 0 || height <= 0 || stride < 0 || (stride && (size_t)stride / 3 < (size_t)width)) {
        PyErr_Format(PyExc_ValueError, "messages[%zu].content[%zu]: pixels %dx%d with stride %zd", mi, ii, width,
                     height, stride);
        return -1;
    }
    size_t row = (size_t)width * 3, step = stride ? (size_t)stride : row;
    if ((size_t)height - 1 > (SIZE_MAX - row) / step || (size_t)(height - 1) * step + row > len) {
        PyErr_Format(PyExc_ValueError, "messages[%zu].content[%zu]: %zu bytes of pixels, too few for %dx%d RGB "
                     "with stride %zu", mi, ii, len, width, height, step);
        return -1;
    }
    it->pixels = data, it->width = width, it->height = height, it->stride = step;
    return 0;
}

/* Builds the vlr_message array from the Python list; -1 with an exception set on failure. */
static int build_request(PyObject *messages, call_args *a) {
    if (!PyList_Check(messages)) {
        PyErr_SetString(PyExc_TypeError, "messages: expected a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(messages), n_items = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(messages, i);
        if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != 2 || !PyList_Check(PyTuple_GET_ITEM(m, 1))) {
            PyErr_Format(PyExc_TypeError, "messages[%zd]: expected (role, [items])", i);
            return -1;
        }
        n_items += PyList_GET_SIZE(PyTuple_GET_ITEM(m, 1));
    }
    a->messages = PyMem_Calloc((size_t)n + 1, sizeof *a->messages);
    a->items = PyMem_Calloc((size_t)n_items + 1, sizeof *a->items);
    a->held = PyMem_Calloc((size_t)n_items + (size_t)n + 1, sizeof *a->held); /* payloads and roles */
    a->views = PyMem_Calloc((size_t)n_items + 1, sizeof *a->views);
    if (!a->messages || !a->items || !a->held || !a->views) {
        PyErr_NoMemory();
        return -1;
    }
    size_t next = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(messages, i), *items = PyTuple_GET_ITEM(m, 1);
        PyObject *role = PyTuple_GET_ITEM(m, 0);
        Py_INCREF(role);
        a->held[a->n_held++] = role;
        const char *r = PyUnicode_Check(role) ? PyUnicode_AsUTF8(role) : NULL;
        if (!r) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "messages[%zd].role: expected a str", i);
            return -1;
        }
        a->messages[i] = (vlr_message){.role = r, .items = a->items + next, .n_items = (size_t)PyList_GET_SIZE(items)};
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(items); j++)
            if (fill_item(PyList_GET_ITEM(items, j), &a->items[next++], a, (size_t)i, (size_t)j) != 0) return -1;
    }
    return 0;
}

static vlr_session *take_session(ModelObject *self, vlr_status *rc) {
    *rc = VLR_OK;
    if (self->n_idle) return self->idle[--self->n_idle];
    vlr_session *s = NULL;
    if ((*rc = vlr_session_init(self->model, &s)) != VLR_OK) return NULL;
    if (self->cache) vlr_session_set_cache(s, self->cache);
    return s;
}

static void give_back(ModelObject *self, vlr_session *s) {
    if (self->n_idle == self->cap_idle) {
        size_t cap = self->cap_idle ? 2 * self->cap_idle : 4;
        vlr_session **grown = PyMem_Realloc(self->idle, cap * sizeof *grown);
        if (!grown) {
            vlr_session_free(s);
            return;
        }
        self->idle = grown, self->cap_idle = cap;
    }
    self->idle[self->n_idle++] = s;
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"path", "threads", "precision", "vision_cache_mb", "max_tokens", "max_image_pixels",
                            "max_download_bytes", "download_timeout_s", NULL};
    const char *path, *precision = "auto";
    int threads = 0, max_tokens = 0, timeout_s = 0;
    long long cache_mb = 0;
    unsigned long long max_pixels = 0, max_download = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|isLiKKi", names, &path, &threads, &precision, &cache_mb,
                                     &max_tokens, &max_pixels, &max_download, &timeout_s))
        return -1;
    if (self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        return -1;
    }
    vlr_params p = vlr_default_params();
    if (!vlr_precision_parse(precision, &p.precision)) {
        PyErr_Format(PyExc_ValueError, "precision: expected \"auto\", \"f32\", \"bf16\" or \"int8\", got \"%s\"",
                     precision);
        return -1;
    }
    if (threads < 0 || max_tokens < 0 || cache_mb < 0 || timeout_s < 0) {
        PyErr_SetString(PyExc_ValueError, "threads, max_tokens, vision_cache_mb and download_timeout_s must be >= 0");
        return -1;
    }
    p.n_threads = threads, p.max_tokens = max_tokens, p.max_image_pixels = max_pixels;
    p.max_download_bytes = max_download, p.download_timeout_s = timeout_s;
    char err[1024] = "";
    vlr_model *m = NULL;
    vlr_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vlr_model_load(path, &p, &m, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != VLR_OK) {
        /* (status, message): the package raises its own exception class from it */
        PyObject *e = Py_BuildValue("(is)", (int)rc, err);
        if (e) PyErr_SetObject(PyExc_OSError, e);
        Py_XDECREF(e);
        return -1;
    }
    if (cache_mb && (rc = vlr_cache_new(m, (size_t)cache_mb << 20, 0, &self->cache)) != VLR_OK) {
        vlr_model_free(m);
        PyObject *e = Py_BuildValue("(is)", (int)rc, "cannot create the vision cache");
        if (e) PyErr_SetObject(PyExc_OSError, e);
        Py_XDECREF(e);
        return -1;
    }
    self->model = m;
    return 0;
}

static void Model_release(ModelObject *self) {
    for (size_t i = 0; i < self->n_idle; i++) vlr_session_free(self->idle[i]);
    PyMem_Free(self->idle);
    self->idle = NULL, self->n_idle = self->cap_idle = 0;
    vlr_cache_free(self->cache);
    self->cache = NULL;
    vlr_model_free(self->model);
    self->model = NULL;
}

static void Model_dealloc(ModelObject *self) {
    Model_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(ModelObject *self) {
    if (self->model) return 0;
    PyErr_SetString(PyExc_ValueError, "the model is closed");
    return -1;
}

static PyObject *Model_close(ModelObject *self, PyObject *unused) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the model is scoring in another thread: close it after those calls");
        return NULL;
    }
    Model_release(self);
    Py_RETURN_NONE;
}

/* One vlr_score_batch call handed to the helper thread of an interruptible score(). */
typedef struct {
    vlr_session *s;
    const vlr_request *reqs;
    size_t n;
    vlr_batch_result *results;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} score_job;

static void *score_worker(void *arg) {
    score_job *job = arg;
    vlr_score_batch(job->s, job->reqs, job->n, job->results);
    pthread_mutex_lock(&job->mu);
    job->done = 1;
    pthread_cond_signal(&job->cv);
    pthread_mutex_unlock(&job->mu);
    return NULL;
}

/* Scores job on a helper thread, running Python's signal handlers every 50 ms meanwhile; a handler
 * that raises sets *cancel (the session's flag). Returns -1 with that exception set, else 0. Called
 * with the GIL; falls back to scoring here when no thread can be started. */
static int score_interruptible(score_job *job, volatile int *cancel) {
    pthread_condattr_t attr;
    pthread_t tid;
    int started = 0;
    pthread_mutex_init(&job->mu, NULL);
    if (pthread_condattr_init(&attr) == 0) {
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (pthread_cond_init(&job->cv, &attr) == 0) {
            started = pthread_create(&tid, NULL, score_worker, job) == 0;
            if (!started) pthread_cond_destroy(&job->cv);
        }
        pthread_condattr_destroy(&attr);
    }
    if (!started) {
        pthread_mutex_destroy(&job->mu);
        Py_BEGIN_ALLOW_THREADS
        vlr_score_batch(job->s, job->reqs, job->n, job->results);
        Py_END_ALLOW_THREADS
        return 0;
    }
    int raised = 0;
    for (;;) {
        int done;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 50 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_mutex_lock(&job->mu);
        while (!job->done && pthread_cond_timedwait(&job->cv, &job->mu, &until) != ETIMEDOUT) {}
        done = job->done;
        pthread_mutex_unlock(&job->mu);
        Py_END_ALLOW_THREADS
        if (done) break;
        if (!raised && PyErr_CheckSignals() != 0) raised = 1, *cancel = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_join(tid, NULL);
    Py_END_ALLOW_THREADS
    pthread_cond_destroy(&job->cv);
    pthread_mutex_destroy(&job->mu);
    return raised ? -1 : 0;
}

static PyObject *Model_score(ModelObject *self, PyObject *args) {
    PyObject *list;
    const char *base_dir = NULL;
    int interruptible = 0;
    if (!PyArg_ParseTuple(args, "O!|zp", &PyList_Type, &list, &base_dir, &interruptible) || check_open(self) != 0)
        return NULL;
    size_t n = (size_t)PyList_GET_SIZE(list);
    call_args *a = PyMem_Calloc(n + 1, sizeof *a);
    vlr_request *reqs = PyMem_Calloc(n + 1, sizeof *reqs);
    vlr_batch_result *results = PyMem_Calloc(n + 1, sizeof *results);
    PyObject *out = NULL;
    size_t built = 0;
    if (!a || !reqs || !results) {
        PyErr_NoMemory();
        goto done;
    }
    for (; built < n; built++) {
        PyObject *messages = PyList_GET_ITEM(list, (Py_ssize_t)built);
        if (build_request(messages, &a[built]) != 0) {
            built++; /* a[built] holds references to release */
            goto done;
        }
        reqs[built] = (vlr_request){a[built].messages, (size_t)PyList_GET_SIZE(messages), base_dir};
    }
    vlr_status rc;
    vlr_session *s = take_session(self, &rc);
    if (!s) {
        out = PyList_New(0);
        PyObject *item = Py_BuildValue("(iOs)", (int)rc, Py_None, "cannot create a session: out of memory");
        if (!out || !item || PyList_Append(out, item) != 0) Py_CLEAR(out);
        Py_XDECREF(item);
        goto done;
    }
    volatile int cancel = 0;
    vlr_session_set_cancel_flag(s, &cancel);
    score_job job = {.s = s, .reqs = reqs, .n = n, .results = results};
    int raised = 0;
    self->busy++;
    if (interruptible) {
        raised = score_interruptible(&job, &cancel);
    } else {
        Py_BEGIN_ALLOW_THREADS
        vlr_score_batch(s, reqs, n, results);
        Py_END_ALLOW_THREADS
    }
    self->busy--;
    vlr_session_set_cancel_flag(s, NULL);
    give_back(self, s);
    if (raised) goto done;
    out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; out && i < n; i++) {
        const vlr_batch_result *r = &results[i];
        PyObject *item = r->status == VLR_OK ? Py_BuildValue("(ids)", 0, r->score, "")
                                             : Py_BuildValue("(iOs)", (int)r->status, Py_None, r->message);
        if (!item) Py_CLEAR(out);
        else PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
done:
    for (size_t i = 0; a && i < built; i++) call_args_free(&a[i]);
    PyMem_Free(a);
    PyMem_Free(reqs);
    PyMem_Free(results);
    return out;
}

static PyObject *Model_info(ModelObject *self, PyObject *unused) {
    if (check_open(self) != 0) return NULL;
    vlr_model_info in;
    vlr_model_get_info(self->model, &in);
    PyObject *full = PyList_New(in.n_fullatt_block_indexes);
    if (!full) return NULL;
    for (int i = 0; i < in.n_fullatt_block_indexes; i++)
        PyList_SET_ITEM(full, i, PyLong_FromLong(in.fullatt_block_indexes[i]));
    /* the keys and nesting of `vlreward info --json` */
    PyObject *d = Py_BuildValue(
        "{s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:d,s:[i,i,i]},"
        "s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:N},"
        "s:K,s:K,s:s,s:s,s:s,s:s,s:s}",
        "text", "hidden_size", in.text_hidden_size, "intermediate_size", in.text_intermediate_size,
        "num_hidden_layers", in.text_layers, "num_attention_heads", in.text_heads, "num_key_value_heads",
        in.text_kv_heads, "head_dim", in.text_head_dim, "vocab_size", in.vocab_size, "rms_norm_eps", in.rms_norm_eps,
        "rope_theta", in.rope_theta, "mrope_section", in.mrope_section[0], in.mrope_section[1], in.mrope_section[2],
        "vision", "depth", in.vision_depth, "hidden_size", in.vision_hidden_size, "num_heads", in.vision_heads,
        "intermediate_size", in.vision_intermediate_size, "out_hidden_size", in.vision_out_hidden_size,
        "patch_size", in.patch_size, "spatial_merge_size", in.spatial_merge_size, "temporal_patch_size",
        in.temporal_patch_size, "window_size", in.window_size, "fullatt_block_indexes", full,
        "parameters", (unsigned long long)in.parameters, "bytes", (unsigned long long)in.bytes, "dtype", in.dtype,
        "precision", in.precision, "precision_reason", in.precision_reason, "kernels", in.kernels,
        "float_precision", in.float_precision);
    if (d && in.int8_layers) {
        PyObject *layers = PyUnicode_FromString(in.int8_layers);
        PyObject *bytes = PyLong_FromUnsignedLongLong(in.int8_bytes);
        if (!layers || !bytes || PyDict_SetItemString(d, "int8_layers", layers) ||
            PyDict_SetItemString(d, "int8_bytes", bytes))
            Py_CLEAR(d);
        Py_XDECREF(layers);
        Py_XDECREF(bytes);
    }
    return d;
}

static PyMethodDef Model_methods[] = {
    {"score", (PyCFunction)Model_score, METH_VARARGS,
     "score(requests, base_dir=None, interruptible=False) -> [(status, score or None, message), ...]"},
    {"info", (PyCFunction)Model_info, METH_NOARGS, "info() -> the dict of `vlreward info --json`"},
    {"close", (PyCFunction)Model_close, METH_NOARGS, "close(): frees the model and its sessions"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vlreward._vlreward.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A loaded model and its pool of sessions (use vlreward.Model).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
};

static PyObject *mod_version(PyObject *m, PyObject *unused) { return PyUnicode_FromString(vlr_version()); }

static PyObject *mod_status_str(PyObject *m, PyObject *args) {
    int s;
    if (!PyArg_ParseTuple(args, "i", &s)) return NULL;
    return PyUnicode_FromString(vlr_status_str((vlr_status)s));
}

static PyMethodDef module_methods[] = {
    {"version", mod_version, METH_NOARGS, "the library's version"},
    {"status_str", mod_status_str, METH_VARARGS, "the short name of a status code"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_vlreward", "vlreward's C core", -1, module_methods};

PyMODINIT_FUNC PyInit__vlreward(void) {
    if (PyType_Ready(&ModelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        Py_DECREF(m);
        return NULL;
    }
    struct { const char *name; int value; } consts[] = {
        {"ITEM_TEXT", VLR_ITEM_TEXT}, {"ITEM_IMAGE", VLR_ITEM_IMAGE}, {"ITEM_IMAGE_BYTES", VLR_ITEM_IMAGE_BYTES},
        {"ITEM_IMAGE_PIXELS", VLR_ITEM_IMAGE_PIXELS}, {"OK", VLR_OK}, {"ERR_IO", VLR_ERR_IO},
        {"ERR_FORMAT", VLR_ERR_FORMAT}, {"ERR_CONFIG", VLR_ERR_CONFIG}, {"ERR_SHAPE", VLR_ERR_SHAPE},
        {"ERR_INPUT", VLR_ERR_INPUT}, {"ERR_LIMIT", VLR_ERR_LIMIT}, {"ERR_NOMEM", VLR_ERR_NOMEM},
        {"ERR_UNSUPPORTED", VLR_ERR_UNSUPPORTED}, {"ERR_NETWORK", VLR_ERR_NETWORK},
        {"ERR_INTERRUPTED", VLR_ERR_INTERRUPTED}, {"ERR_INTERNAL", VLR_ERR_INTERNAL}, {"ERR_NUMERIC", VLR_ERR_NUMERIC},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
