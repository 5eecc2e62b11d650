/* The usage ledger's row of a finished request, compiled.
 *
 * The reference is usage_row() in gateway/tenancy/ledger.py: RowMaker(call, now, end) makes
 * the same tuple (tests/test_ledger_rows.py compares the two on random requests). Every
 * request of the gateway ends here, and the Python spends ~13 k instructions on it.
 *
 * What it keeps between calls is what would otherwise be made again for each row: the id's
 * prefix and counter, the last day's date and the last deployment's provider and upstream
 * model. Values it cannot compute exactly as the Python does (a float too large for a whole
 * number of microseconds) go through the same Python operations.
 *
 * Built by setup.py as an optional extension, with -ffp-contract=off (as _counters.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define DAY 86400.0
#define COLUMNS 23
#define EXACT 9007199254740992.0 /* 2**53: below it a double holds every whole number */

static PyObject *s_request_id, *s_key_id, *s_surface, *s_model, *s_deployment, *s_stream,
    *s_attempts, *s_status, *s_error_code, *s_usage, *s_cost, *s_first_token_at, *s_started,
    *s_client_left, *s_input_tokens, *s_output_tokens, *s_cached_tokens, *s_reasoning_tokens,
    *s_source, *s_partition, *s_slash, *s_dash, *s_none, *s_thousand, *s_day_seconds;

typedef struct {
    PyObject_HEAD
    PyObject *prefix;     /* str: the ids' prefix, unique to this maker */
    unsigned long long counter;
    PyObject *cost_of;    /* call -> (micro-USD, priced): request_cost */
    PyObject *day_of;     /* days since the epoch -> "YYYY-MM-DD" */
    PyObject *no_usage;   /* the Usage of a request without one */
    double day_start, day_end; /* the last day's bounds, epoch seconds */
    PyObject *day;        /* its date, or NULL */
    PyObject *deployment; /* the last deployment split, or NULL */
    PyObject *provider, *upstream;
} RowMaker;

static int
RowMaker_init(RowMaker *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"prefix", "cost_of", "day_of", "no_usage", NULL};
    PyObject *prefix, *cost_of, *day_of, *no_usage;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UOOO:RowMaker", names, &prefix, &cost_of,
                                     &day_of, &no_usage))
        return -1;
    if (!PyUnicode_IS_ASCII(prefix)) {
        PyErr_SetString(PyExc_ValueError, "the prefix is ASCII");
        return -1;
    }
    Py_INCREF(prefix);
    Py_XSETREF(self->prefix, prefix);
    Py_INCREF(cost_of);
    Py_XSETREF(self->cost_of, cost_of);
    Py_INCREF(day_of);
    Py_XSETREF(self->day_of, day_of);
    Py_INCREF(no_usage);
    Py_XSETREF(self->no_usage, no_usage);
    self->counter = 0;
    Py_CLEAR(self->day);
    Py_CLEAR(self->deployment);
    Py_CLEAR(self->provider);
    Py_CLEAR(self->upstream);
    return 0;
}

static void
RowMaker_dealloc(RowMaker *self)
{
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->cost_of);
    Py_XDECREF(self->day_of);
    Py_XDECREF(self->no_usage);
    Py_XDECREF(self->day);
    Py_XDECREF(self->deployment);
    Py_XDECREF(self->provider);
    Py_XDECREF(self->upstream);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* f"{prefix}{counter:012x}" */
static PyObject *
row_id(RowMaker *self)
{
    char digits[16];
    int n = 0;
    unsigned long long rest = self->counter++;
    do {
        digits[n++] = "0123456789abcdef"[rest & 15];
        rest >>= 4;
    } while (rest != 0);
    int width = n > 12 ? n : 12;
    Py_ssize_t head = PyUnicode_GET_LENGTH(self->prefix);
    PyObject *id = PyUnicode_New(head + width, 127);
    if (id == NULL)
        return NULL;
    char *at = (char *)PyUnicode_1BYTE_DATA(id);
    memcpy(at, PyUnicode_1BYTE_DATA(self->prefix), (size_t)head);
    at += head;
    for (int pad = width - n; pad > 0; pad--)
        *at++ = '0';
    while (n > 0)
        *at++ = digits[--n];
    return id;
}

/* int(number), giving up the reference to number (NULL passes through). */
static PyObject *
whole(PyObject *number)
{
    if (number == NULL)
        return NULL;
    PyObject *result = PyNumber_Long(number);
    Py_DECREF(number);
    return result;
}

/* _day(int(now // 86_400)), the same day's date kept until it ends. */
static PyObject *
date_of(RowMaker *self, PyObject *now_obj, double now)
{
    if (self->day == NULL || !(self->day_start <= now && now < self->day_end)) {
        PyObject *days = whole(PyNumber_FloorDivide(now_obj, s_day_seconds));
        if (days == NULL)
            return NULL;
        double number = PyLong_AsDouble(days);
        if (number == -1.0 && PyErr_Occurred()) {
            Py_DECREF(days);
            return NULL;
        }
        PyObject *date = PyObject_CallOneArg(self->day_of, days);
        Py_DECREF(days);
        if (date == NULL)
            return NULL;
        if (fabs(number) >= EXACT / DAY) /* bounds not exact: not kept */
            return date;
        Py_XSETREF(self->day, date);
        self->day_start = number * DAY;
        self->day_end = (number + 1) * DAY;
    }
    Py_INCREF(self->day);
    return self->day;
}

/* deployment.partition("/"): the provider and the upstream model (None for ""), the last
 * deployment's kept; (None, None) without a deployment. 0, or -1 with an exception. */
static int
split(RowMaker *self, PyObject *deployment, PyObject **provider, PyObject **upstream)
{
    int truth = PyObject_IsTrue(deployment);
    if (truth < 0)
        return -1;
    if (!truth) {
        *provider = Py_NewRef(Py_None);
        *upstream = Py_NewRef(Py_None);
        return 0;
    }
    if (self->deployment != deployment) {
        int same = self->deployment != NULL &&
                   PyObject_RichCompareBool(self->deployment, deployment, Py_EQ);
        if (same < 0)
            return -1;
        if (!same) {
            PyObject *parts = PyObject_CallMethodOneArg(deployment, s_partition, s_slash);
            if (parts == NULL)
                return -1;
            if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 3) {
                Py_DECREF(parts);
                PyErr_SetString(PyExc_TypeError, "partition() answers three parts");
                return -1;
            }
            PyObject *up = PyTuple_GET_ITEM(parts, 2);
            int filled = PyObject_IsTrue(up);
            if (filled < 0) {
                Py_DECREF(parts);
                return -1;
            }
            Py_XSETREF(self->provider, Py_NewRef(PyTuple_GET_ITEM(parts, 0)));
            Py_XSETREF(self->upstream, Py_NewRef(filled ? up : Py_None));
            Py_DECREF(parts);
        }
        Py_XSETREF(self->deployment, Py_NewRef(deployment));
    }
    *provider = Py_NewRef(self->provider);
    *upstream = Py_NewRef(self->upstream);
    return 0;
}

/* int((end - started) * 1e6 + 0.5) / 1000: milliseconds to the microsecond. */
static PyObject *
milliseconds(double end, double started)
{
    double micro = (end - started) * 1e6 + 0.5;
    if (isfinite(micro) && fabs(micro) < EXACT)
        return PyFloat_FromDouble((double)(long long)micro / 1000.0);
    PyObject *micros = whole(PyFloat_FromDouble(micro)); /* then a true division */
    if (micros == NULL)
        return NULL;
    PyObject *result = PyNumber_TrueDivide(micros, s_thousand);
    Py_DECREF(micros);
    return result;
}

static int
as_double(PyObject *value, double *out)
{
    *out = PyFloat_AsDouble(value);
    return !(*out == -1.0 && PyErr_Occurred());
}

/* The row: fills items[] with new references; 0, or -1 with an exception. */
static int
fill(RowMaker *self, PyObject *call, PyObject *now_obj, double now, double end,
     PyObject **items)
{
    PyObject *usage = NULL, *cost = NULL, *value = NULL;
    int result = -1;
    double started;
    if ((usage = PyObject_GetAttr(call, s_usage)) == NULL)
        goto done;
    PyObject *counted = usage == Py_None ? self->no_usage : usage;
    if ((cost = PyObject_GetAttr(call, s_cost)) == NULL)
        goto done;
    int known = cost != Py_None ? PyObject_IsTrue(cost) : 0;
    if (known < 0)
        goto done;
    if (!known) { /* call.cost or request_cost(prices, call) */
        Py_SETREF(cost, PyObject_CallOneArg(self->cost_of, call));
        if (cost == NULL)
            goto done;
    }
    if (!PyTuple_Check(cost) || PyTuple_GET_SIZE(cost) != 2) {
        PyErr_SetString(PyExc_TypeError, "a request's cost is (micro-USD, priced)");
        goto done;
    }
    if ((items[0] = row_id(self)) == NULL ||
        (items[1] = PyObject_GetAttr(call, s_request_id)) == NULL)
        goto done;
    items[2] = Py_NewRef(now_obj);
    if ((items[3] = date_of(self, now_obj, now)) == NULL ||
        (items[4] = PyObject_GetAttr(call, s_key_id)) == NULL ||
        (value = PyObject_GetAttr(call, s_surface)) == NULL)
        goto done;
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        goto done;
    items[5] = Py_NewRef(truth ? value : s_dash);
    Py_CLEAR(value);
    if ((items[6] = PyObject_GetAttr(call, s_model)) == NULL ||
        (value = PyObject_GetAttr(call, s_deployment)) == NULL ||
        split(self, value, &items[7], &items[8]) < 0)
        goto done;
    Py_CLEAR(value);
    if ((value = PyObject_GetAttr(call, s_stream)) == NULL ||
        (items[9] = PyNumber_Long(value)) == NULL)
        goto done;
    Py_CLEAR(value);
    if ((items[10] = PyObject_GetAttr(call, s_attempts)) == NULL ||
        (items[11] = PyObject_GetAttr(call, s_status)) == NULL ||
        (items[12] = PyObject_GetAttr(call, s_error_code)) == NULL ||
        (items[13] = PyObject_GetAttr(counted, s_input_tokens)) == NULL ||
        (items[14] = PyObject_GetAttr(counted, s_output_tokens)) == NULL ||
        (items[15] = PyObject_GetAttr(counted, s_cached_tokens)) == NULL ||
        (items[16] = PyObject_GetAttr(counted, s_reasoning_tokens)) == NULL)
        goto done;
    if (usage == Py_None)
        items[17] = Py_NewRef(s_none);
    else if ((items[17] = PyObject_GetAttr(usage, s_source)) == NULL)
        goto done;
    items[18] = Py_NewRef(PyTuple_GET_ITEM(cost, 0));
    if ((items[19] = PyNumber_Long(PyTuple_GET_ITEM(cost, 1))) == NULL ||
        (value = PyObject_GetAttr(call, s_started)) == NULL || !as_double(value, &started))
        goto done;
    Py_CLEAR(value);
    if ((value = PyObject_GetAttr(call, s_first_token_at)) == NULL)
        goto done;
    if (value == Py_None) {
        items[20] = Py_NewRef(Py_None);
    } else {
        double first;
        if (!as_double(value, &first) || (items[20] = milliseconds(first, started)) == NULL)
            goto done;
    }
    Py_CLEAR(value);
    if ((items[21] = milliseconds(end, started)) == NULL ||
        (value = PyObject_GetAttr(call, s_client_left)) == NULL ||
        (items[22] = PyNumber_Long(value)) == NULL)
        goto done;
    result = 0;
done:
    Py_XDECREF(usage);
    Py_XDECREF(cost);
    Py_XDECREF(value);
    return result;
}

static PyObject *
RowMaker_call(RowMaker *self, PyObject *args, PyObject *kw)
{
    PyObject *call, *now_obj;
    double end;
    if (kw != NULL && PyDict_GET_SIZE(kw) != 0) {
        PyErr_SetString(PyExc_TypeError, "RowMaker(call, now, end) takes no keywords");
        return NULL;
    }
    if (self->prefix == NULL) {
        PyErr_SetString(PyExc_TypeError, "the RowMaker was never initialized");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!d:RowMaker", &call, &PyFloat_Type, &now_obj, &end))
        return NULL;
    double now = PyFloat_AS_DOUBLE(now_obj);
    PyObject *items[COLUMNS] = {NULL};
    if (fill(self, call, now_obj, now, end, items) < 0) {
        for (int i = 0; i < COLUMNS; i++)
            Py_XDECREF(items[i]);
        return NULL;
    }
    PyObject *row = PyTuple_New(COLUMNS);
    if (row == NULL) {
        for (int i = 0; i < COLUMNS; i++)
            Py_DECREF(items[i]);
        return NULL;
    }
    for (int i = 0; i < COLUMNS; i++)
        PyTuple_SET_ITEM(row, i, items[i]);
    return row;
}

static PyTypeObject RowMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.tenancy._rows.RowMaker",
    .tp_doc = "RowMaker(prefix, cost_of, day_of, no_usage)(call, now, end): a ledger row.",
    .tp_basicsize = sizeof(RowMaker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowMaker_init,
    .tp_dealloc = (destructor)RowMaker_dealloc,
    .tp_call = (ternaryfunc)RowMaker_call,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.tenancy._rows",
    .m_doc = "The usage ledger's row of a request, compiled (usage_row in ledger.py).",
    .m_size = -1,
};

static PyObject *
intern(const char *text)
{
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC
PyInit__rows(void)
{
    PyObject **names[] = {&s_request_id, &s_key_id, &s_surface, &s_model, &s_deployment,
                          &s_stream, &s_attempts, &s_status, &s_error_code, &s_usage, &s_cost,
                          &s_first_token_at, &s_started, &s_client_left, &s_input_tokens,
                          &s_output_tokens, &s_cached_tokens, &s_reasoning_tokens, &s_source,
                          &s_partition, &s_slash, &s_dash, &s_none};
    const char *texts[] = {"request_id", "key_id", "surface", "model", "deployment", "stream",
                           "attempts", "status", "error_code", "usage", "cost",
                           "first_token_at", "started", "client_left", "input_tokens",
                           "output_tokens", "cached_tokens", "reasoning_tokens", "source",
                           "partition", "/", "-", "none"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i] = intern(texts[i])) == NULL)
            return NULL;
    if ((s_thousand = PyLong_FromLong(1000)) == NULL ||
        (s_day_seconds = PyLong_FromLong(86400)) == NULL)
        return NULL;
    if (PyType_Ready(&RowMakerType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RowMakerType);
    if (PyModule_AddObject(module, "RowMaker", (PyObject *)&RowMakerType) < 0) {
        Py_DECREF(&RowMakerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
