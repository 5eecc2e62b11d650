/* A virtual key's counters, and the common case of its admission and settlement, compiled.
 *
 * The reference is the Python: gateway/tenancy/limits.py (LocalLimiter.admit and .settle) and
 * gateway/tenancy/admission.py (Tenant.admit, Tenant.rate_lines, Ticket.settle). This module
 * decides only what it can decide exactly as they do, with the same float operations in the
 * same order, and otherwise answers None having changed nothing, so that the Python runs on
 * the same counters:
 *
 *   - KeyState and Budget are the counters themselves, for both: LocalLimiter keeps these
 *     objects in its tables when the module is built, and the Python reads and writes their
 *     fields as attributes.
 *   - admit() admits a request whose every check passes, with its x-ratelimit-* lines. A
 *     refusal, a request too large for the key, a model without a price, a due sweep, a
 *     budget not read yet, an integer out of range: None, and the Python decides.
 *   - Ticket.settle() charges the real usage once, as Ticket.settle and LocalLimiter.settle do.
 *
 * Built by setup.py as an optional extension: without a compiler the Python does everything.
 * Compile with -ffp-contract=off: a fused multiply-add would round differently from Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <structmember.h>

#define MINUTE 60.0
#define MICRO 1000000LL
#define NONE (-1LL) /* a limit that is not set */

/* ---- the counters -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    double rpm_tat;
    double tpm_tat;
    long long in_flight; /* admitted requests of the key not settled yet */
} KeyState;

static PyMemberDef KeyState_members[] = {
    {"rpm_tat", T_DOUBLE, offsetof(KeyState, rpm_tat), 0, "RPM's theoretical arrival time"},
    {"tpm_tat", T_DOUBLE, offsetof(KeyState, tpm_tat), 0, "TPM's theoretical arrival time"},
    {"in_flight", T_LONGLONG, offsetof(KeyState, in_flight), 0, "requests not settled"},
    {NULL}};

static int
KeyState_init(KeyState *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"rpm_tat", "tpm_tat", "in_flight", NULL};
    self->rpm_tat = self->tpm_tat = 0.0;
    self->in_flight = 0;
    return PyArg_ParseTupleAndKeywords(args, kw, "|ddL:KeyState", names, &self->rpm_tat,
                                       &self->tpm_tat, &self->in_flight)
               ? 0
               : -1;
}

static PyTypeObject KeyStateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.tenancy._counters.KeyState",
    .tp_doc = "A key's rate counters: both TATs and its requests in flight.",
    .tp_basicsize = sizeof(KeyState),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)KeyState_init,
    .tp_members = KeyState_members,
};

typedef struct {
    PyObject_HEAD
    long long spent_micro, spent_tokens, reserved_micro, reserved_tokens;
    long long held; /* admitted requests that will settle into this budget */
} Budget;

static PyMemberDef Budget_members[] = {
    {"spent_micro", T_LONGLONG, offsetof(Budget, spent_micro), 0, NULL},
    {"spent_tokens", T_LONGLONG, offsetof(Budget, spent_tokens), 0, NULL},
    {"reserved_micro", T_LONGLONG, offsetof(Budget, reserved_micro), 0, NULL},
    {"reserved_tokens", T_LONGLONG, offsetof(Budget, reserved_tokens), 0, NULL},
    {"held", T_LONGLONG, offsetof(Budget, held), 0, NULL},
    {NULL}};

static int
Budget_init(Budget *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"spent_micro",     "spent_tokens", "reserved_micro",
                            "reserved_tokens", "held",         NULL};
    self->spent_micro = self->spent_tokens = self->reserved_micro = self->reserved_tokens = 0;
    self->held = 0;
    return PyArg_ParseTupleAndKeywords(args, kw, "|LLLLL:Budget", names, &self->spent_micro,
                                       &self->spent_tokens, &self->reserved_micro,
                                       &self->reserved_tokens, &self->held)
               ? 0
               : -1;
}

static PyTypeObject BudgetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.tenancy._counters.Budget",
    .tp_doc = "A key's budget in one window: spent and reserved, micro-USD and tokens.",
    .tp_basicsize = sizeof(Budget),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Budget_init,
    .tp_members = Budget_members,
};

/* ---- a key's limits, once per key ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    long long rpm, tpm, parallel, budget_micro, budget_tokens, reserve_max;
    int caps_output;
    PyObject *rpm_line, *tpm_line; /* bytes: the x-ratelimit-limit-* lines, or None */
    PyObject *estimated;           /* (input, output) -> an estimated Usage */
    PyObject *cost_of;             /* call -> (micro-USD, priced), request_cost */
    PyObject *clock;               /* time.time */
} Plan;

static int
limit_arg(PyObject *value, long long *out)
{
    if (value == Py_None) {
        *out = NONE;
        return 1;
    }
    *out = PyLong_AsLongLong(value);
    if (*out == -1 && PyErr_Occurred())
        return 0;
    if (*out < 0) {
        PyErr_SetString(PyExc_ValueError, "a limit is never negative");
        return 0;
    }
    return 1;
}

static int
Plan_init(Plan *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"rpm",      "tpm",      "max_parallel", "budget_micro_usd",
                            "budget_tokens", "reserve_max", "caps_output", "rpm_line",
                            "tpm_line", "estimated", "cost_of",  "clock", NULL};
    PyObject *rpm, *tpm, *parallel, *micro, *tokens, *rpm_line, *tpm_line, *estimated, *cost_of,
        *clock;
    int caps;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOLpOOOOO:Plan", names, &rpm, &tpm, &parallel,
                                     &micro, &tokens, &self->reserve_max, &caps, &rpm_line,
                                     &tpm_line, &estimated, &cost_of, &clock))
        return -1;
    if (!limit_arg(rpm, &self->rpm) || !limit_arg(tpm, &self->tpm) ||
        !limit_arg(parallel, &self->parallel) || !limit_arg(micro, &self->budget_micro) ||
        !limit_arg(tokens, &self->budget_tokens))
        return -1;
    if (self->rpm == 0 || self->tpm == 0) {
        PyErr_SetString(PyExc_ValueError, "a rate limit is at least 1");
        return -1;
    }
    if ((rpm_line != Py_None && !PyBytes_Check(rpm_line)) ||
        (tpm_line != Py_None && !PyBytes_Check(tpm_line))) {
        PyErr_SetString(PyExc_TypeError, "the limit lines are bytes or None");
        return -1;
    }
    self->caps_output = caps;
    Py_INCREF(rpm_line);
    Py_XSETREF(self->rpm_line, rpm_line);
    Py_INCREF(tpm_line);
    Py_XSETREF(self->tpm_line, tpm_line);
    Py_INCREF(estimated);
    Py_XSETREF(self->estimated, estimated);
    Py_INCREF(cost_of);
    Py_XSETREF(self->cost_of, cost_of);
    Py_INCREF(clock);
    Py_XSETREF(self->clock, clock);
    return 0;
}

static void
Plan_dealloc(Plan *self)
{
    Py_XDECREF(self->rpm_line);
    Py_XDECREF(self->tpm_line);
    Py_XDECREF(self->estimated);
    Py_XDECREF(self->cost_of);
    Py_XDECREF(self->clock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.tenancy._counters.Plan",
    .tp_doc = "A key's limits as admit() reads them, made once per key record.",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Plan_init,
    .tp_dealloc = (destructor)Plan_dealloc,
};

/* ---- the ticket of an admitted request ------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Plan *plan;
    KeyState *state;
    Budget *budget; /* NULL: the key has no budget */
    long long tokens, tokens_in, tokens_out, micro_usd;
    char settled; /* T_BOOL */
} Ticket;

static PyMemberDef Ticket_members[] = {
    {"tokens", T_LONGLONG, offsetof(Ticket, tokens), READONLY, "reserved: input + output"},
    {"tokens_in", T_LONGLONG, offsetof(Ticket, tokens_in), READONLY, NULL},
    {"tokens_out", T_LONGLONG, offsetof(Ticket, tokens_out), READONLY, NULL},
    {"micro_usd", T_LONGLONG, offsetof(Ticket, micro_usd), READONLY, "reserved cost"},
    {"settled", T_BOOL, offsetof(Ticket, settled), READONLY, NULL},
    {NULL}};

static PyObject *s_head_lines, *s_usage, *s_first_token_at, *s_input_tokens, *s_output_tokens,
    *s_cost, *s_input, *s_output;

static void
Ticket_dealloc(Ticket *self)
{
    Py_XDECREF(self->plan);
    Py_XDECREF(self->state);
    Py_XDECREF(self->budget);
    PyObject_Free(self);
}

/* An int attribute as a long long; 0 and an exception when it is not one. */
static int
attr_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return 0;
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return !(*out == -1 && PyErr_Occurred());
}

/* settle(call): None. Ticket.settle and LocalLimiter.settle of the Python, at once. */
static PyObject *
Ticket_settle(Ticket *self, PyObject *call)
{
    if (self->settled)
        Py_RETURN_NONE;
    self->settled = 1;
    Plan *plan = self->plan;
    long long used_in = 0, used_out = 0, micro = 0;
    PyObject *usage = PyObject_GetAttr(call, s_usage);
    if (usage == NULL)
        return NULL;
    if (usage == Py_None) {
        PyObject *first = PyObject_GetAttr(call, s_first_token_at);
        if (first == NULL)
            goto fail;
        int started = first != Py_None;
        Py_DECREF(first);
        if (started) { /* output without the provider's usage: the whole reservation */
            Py_DECREF(usage);
            usage = PyObject_CallFunction(plan->estimated, "LL", self->tokens_in,
                                          self->tokens_out);
            if (usage == NULL)
                return NULL;
            if (PyObject_SetAttr(call, s_usage, usage) < 0)
                goto fail;
        }
    }
    if (usage != Py_None) {
        if (!attr_ll(usage, s_input_tokens, &used_in) ||
            !attr_ll(usage, s_output_tokens, &used_out))
            goto fail;
    }
    Py_CLEAR(usage);
    PyObject *cost = PyObject_CallOneArg(plan->cost_of, call);
    if (cost == NULL)
        return NULL;
    int ok = PyObject_SetAttr(call, s_cost, cost) == 0 && PyTuple_Check(cost) &&
             PyTuple_GET_SIZE(cost) == 2;
    if (ok) {
        micro = PyLong_AsLongLong(PyTuple_GET_ITEM(cost, 0));
        ok = !(micro == -1 && PyErr_Occurred());
    }
    Py_DECREF(cost);
    if (!ok) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cost_of answers (micro-USD, priced)");
        return NULL;
    }
    long long tokens = used_in + used_out;
    KeyState *state = self->state;
    state->in_flight -= 1;
    if (plan->tpm != NONE && tokens < self->tokens) {
        double tat =
            state->tpm_tat - (double)(self->tokens - tokens) * MINUTE / (double)plan->tpm;
        PyObject *clock = PyObject_CallNoArgs(plan->clock);
        if (clock == NULL)
            return NULL;
        double now = PyFloat_AsDouble(clock);
        Py_DECREF(clock);
        if (now == -1.0 && PyErr_Occurred())
            return NULL;
        state->tpm_tat = tat > now ? tat : now;
    }
    Budget *budget = self->budget;
    if (budget != NULL) {
        budget->reserved_micro -= self->micro_usd;
        budget->reserved_tokens -= self->tokens;
        budget->spent_micro += micro;
        budget->spent_tokens += tokens;
        budget->held -= 1;
    }
    Py_RETURN_NONE;
fail:
    Py_DECREF(usage);
    return NULL;
}

static PyMethodDef Ticket_methods[] = {
    {"settle", (PyCFunction)Ticket_settle, METH_O,
     "settle(call): charge what the request used, once; answers None (done at once)."},
    {NULL}};

static PyTypeObject TicketType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.tenancy._counters.Ticket",
    .tp_doc = "A request admitted by admit(): its reservation, settled once.",
    .tp_basicsize = sizeof(Ticket),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Ticket_dealloc,
    .tp_members = Ticket_members,
    .tp_methods = Ticket_methods,
};

/* ---- admission -------------------------------------------------------------------------- */

/* Python's floor division, for a positive divisor. */
static long long
floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* An argument as a long long; 0 (and no exception) when it does not fit: the Python decides. */
static int
arg_ll(PyObject *value, long long *out)
{
    if (!PyLong_Check(value))
        return 0;
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow && !(*out == -1 && PyErr_Occurred());
}

#define FALL_BACK()                                                                            \
    do {                                                                                       \
        PyErr_Clear();                                                                         \
        Py_RETURN_NONE;                                                                        \
    } while (0)

/* Text and whole numbers into a header line, without printf (whose parsing of the format
 * cost more than the rest of an admission). */
static char *
put_text(char *at, const char *text)
{
    size_t n = strlen(text);
    memcpy(at, text, n);
    return at + n;
}

static char *
put_ll(char *at, long long value)
{
    char digits[24];
    int n = 0;
    unsigned long long rest = (unsigned long long)value;
    if (value < 0)
        rest = 0ULL - rest;
    do {
        digits[n++] = (char)('0' + rest % 10);
        rest /= 10;
    } while (rest != 0);
    if (value < 0)
        *at++ = '-';
    while (n > 0)
        *at++ = digits[--n];
    return at;
}

/* OpenAI's reset format, as duration() in admission.py writes it: "17ms", "1.5s", "1m0s";
 * NULL and an exception when out of memory. admit() writes resets under two minutes only (a
 * GCRA reset is at most one). */
static char *
put_reset(char *at, double seconds)
{
    if (seconds < 1) {
        double ms = ceil(seconds * 1000);
        return put_text(put_ll(at, (long long)(ms > 0 ? ms : 0)), "ms");
    }
    if (seconds < 60) { /* Python's own format(seconds, ".3g"): no locale, same rounding */
        char *text = PyOS_double_to_string(seconds, 'g', 3, 0, NULL);
        if (text == NULL)
            return NULL;
        at = put_text(put_text(at, text), "s");
        PyMem_Free(text);
        return at;
    }
    if (seconds < 120) /* divmod(seconds, 60): 1 and seconds - 60, exact; round(): half-even */
        return put_text(put_ll(put_text(at, "1m"), (long long)nearbyint(seconds - 60)), "s");
    return at;
}

/* The lines of one limit: "x-ratelimit-limit-*" (made once per key), then what remains and
 * the reset, as Tenant.rate_lines writes them; NULL and an exception when out of memory. */
static char *
put_lines(char *at, PyObject *limit_line, const char *what, long long left, double reset)
{
    Py_ssize_t n = PyBytes_GET_SIZE(limit_line);
    memcpy(at, PyBytes_AS_STRING(limit_line), (size_t)n);
    at = put_text(at + n, "x-ratelimit-remaining-");
    at = put_ll(put_text(put_text(at, what), ": "), left);
    at = put_text(put_text(put_text(at, "\r\nx-ratelimit-reset-"), what), ": ");
    at = put_reset(at, reset);
    return at == NULL ? NULL : put_text(at, "\r\n");
}

/* admit(plan, state, budget, call, tokens_in, output_cap, choices, cap_output, now,
 *       next_sweep, rate) -> Ticket | None
 *
 * Tenant.admit from the input estimate on, and LocalLimiter.admit, for a request they would
 * admit; None, having changed nothing, for anything else. */
static PyObject *
admit(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11 || !Py_IS_TYPE(args[0], &PlanType) || !Py_IS_TYPE(args[1], &KeyStateType) ||
        (args[2] != Py_None && !Py_IS_TYPE(args[2], &BudgetType))) {
        PyErr_SetString(PyExc_TypeError, "admit(plan, state, budget, call, tokens_in, "
                                         "output_cap, choices, cap_output, now, next_sweep, rate)");
        return NULL;
    }
    Plan *plan = (Plan *)args[0];
    if (plan->clock == NULL) {
        PyErr_SetString(PyExc_TypeError, "admit: the plan was never initialized");
        return NULL;
    }
    KeyState *state = (KeyState *)args[1];
    Budget *budget = args[2] == Py_None ? NULL : (Budget *)args[2];
    PyObject *call = args[3], *output_cap = args[5], *cap_output = args[7], *rate = args[10];
    long long tokens_in, choices, cap;
    double now = PyFloat_AsDouble(args[8]), next_sweep = PyFloat_AsDouble(args[9]);
    if (PyErr_Occurred())
        return NULL;
    if (!arg_ll(args[4], &tokens_in) || !arg_ll(args[6], &choices) || tokens_in < 0)
        FALL_BACK();
    if (now >= next_sweep || !isfinite(now))
        FALL_BACK(); /* the sweep is the Python's */
    if (budget == NULL && (plan->budget_micro != NONE || plan->budget_tokens != NONE))
        FALL_BACK(); /* the budget is read from the ledger first */
    if (choices < 1)
        choices = 1;
    int capping = 0;
    if (output_cap == Py_None) {
        cap = plan->reserve_max;
        if (plan->tpm != NONE) { /* a reservation must fit the whole minute's allowance */
            long long room = floor_div(plan->tpm - tokens_in, choices);
            if (room < cap)
                cap = room;
        }
        if (plan->caps_output && cap_output != Py_None && cap >= 1)
            capping = 1;
        else if (cap < 1 && plan->tpm != NONE)
            FALL_BACK(); /* the input alone fills the minute: the Python's 400 */
    }
    else if (!arg_ll(output_cap, &cap))
        FALL_BACK();
    long long tokens_out = 0, tokens;
    if (cap > 0 && __builtin_mul_overflow(cap, choices, &tokens_out))
        FALL_BACK();
    if (__builtin_add_overflow(tokens_in, tokens_out, &tokens))
        FALL_BACK();
    if (plan->tpm != NONE && tokens > plan->tpm)
        FALL_BACK(); /* too large for the key: the Python's 400 */
    long long micro = 0;
    if (plan->budget_micro != NONE) {
        if (rate == Py_None)
            FALL_BACK(); /* not priced: the Python's 400 */
        long long rate_in, rate_out, total, part;
        if (!attr_ll(rate, s_input, &rate_in) || !attr_ll(rate, s_output, &rate_out) ||
            __builtin_mul_overflow(tokens_in, rate_in, &total) ||
            __builtin_mul_overflow(tokens_out, rate_out, &part) ||
            __builtin_add_overflow(total, part, &total))
            FALL_BACK();
        micro = -floor_div(-total, MICRO); /* Rate.cost: the ceiling */
    }
    /* GCRA (limits.py): the same operations in the same order as the Python. */
    double requests_reset = 0.0, tokens_reset = 0.0;
    long long requests_left = 0, tokens_left = 0;
    if (plan->rpm != NONE) {
        double interval = MINUTE / (double)plan->rpm;
        double base = state->rpm_tat > now ? state->rpm_tat : now;
        if (base + interval - now - MINUTE > 1e-9)
            FALL_BACK();
        requests_reset = base + interval - now;
        double left = (MINUTE - requests_reset) / interval + 1e-6;
        if (requests_reset >= 120 || !(left < 9.2e18))
            FALL_BACK();
        requests_left = left < 0 ? 0 : (long long)left;
    }
    if (plan->tpm != NONE) {
        double interval = MINUTE / (double)plan->tpm;
        double base = state->tpm_tat > now ? state->tpm_tat : now;
        if (base + (double)tokens * interval - now - MINUTE > 1e-9)
            FALL_BACK();
        tokens_reset = base + (double)tokens * interval - now;
        double left = (MINUTE - tokens_reset) / interval + 1e-6;
        if (tokens_reset >= 120 || !(left < 9.2e18))
            FALL_BACK();
        tokens_left = left < 0 ? 0 : (long long)left;
    }
    if (plan->parallel != NONE && state->in_flight >= plan->parallel)
        FALL_BACK();
    long long reserved_micro = 0, reserved_tokens = 0;
    if (budget != NULL) {
        long long sum;
        if (plan->budget_micro != NONE &&
            (__builtin_add_overflow(budget->spent_micro, budget->reserved_micro, &sum) ||
             __builtin_add_overflow(sum, micro, &sum) || sum > plan->budget_micro))
            FALL_BACK();
        if (plan->budget_tokens != NONE &&
            (__builtin_add_overflow(budget->spent_tokens, budget->reserved_tokens, &sum) ||
             __builtin_add_overflow(sum, tokens, &sum) || sum > plan->budget_tokens))
            FALL_BACK();
        if (__builtin_add_overflow(budget->reserved_micro, micro, &reserved_micro) ||
            __builtin_add_overflow(budget->reserved_tokens, tokens, &reserved_tokens))
            FALL_BACK();
    }
    /* Admitted: the lines, the cap, then the counters (nothing has moved before here). */
    PyObject *lines = NULL;
    if (plan->rpm_line != Py_None || plan->tpm_line != Py_None) {
        char buffer[512], *at = buffer; /* two limit lines of a few dozen bytes, and four */
        Py_ssize_t need = 2 * 128 + (plan->rpm_line == Py_None ? 0 : PyBytes_GET_SIZE(plan->rpm_line)) +
                          (plan->tpm_line == Py_None ? 0 : PyBytes_GET_SIZE(plan->tpm_line));
        if (need > (Py_ssize_t)sizeof(buffer))
            FALL_BACK();
        if (plan->rpm_line != Py_None && plan->rpm != NONE)
            at = put_lines(at, plan->rpm_line, "requests", requests_left, requests_reset);
        if (at != NULL && plan->tpm_line != Py_None && plan->tpm != NONE)
            at = put_lines(at, plan->tpm_line, "tokens", tokens_left, tokens_reset);
        if (at == NULL)
            return NULL;
        lines = PyBytes_FromStringAndSize(buffer, at - buffer);
        if (lines == NULL)
            return NULL;
    }
    Ticket *ticket = PyObject_New(Ticket, &TicketType);
    if (ticket == NULL) {
        Py_XDECREF(lines);
        return NULL;
    }
    ticket->plan = NULL;
    ticket->state = NULL;
    ticket->budget = NULL;
    if (capping) {
        PyObject *done = PyObject_CallFunction(cap_output, "L", cap);
        if (done == NULL)
            goto fail;
        Py_DECREF(done);
    }
    if (lines != NULL && PyObject_SetAttr(call, s_head_lines, lines) < 0)
        goto fail;
    Py_XDECREF(lines);
    if (plan->rpm != NONE)
        state->rpm_tat = now + requests_reset;
    if (plan->tpm != NONE)
        state->tpm_tat = now + tokens_reset;
    state->in_flight += 1;
    if (budget != NULL) {
        budget->reserved_micro = reserved_micro;
        budget->reserved_tokens = reserved_tokens;
        budget->held += 1;
    }
    Py_INCREF(plan);
    ticket->plan = plan;
    Py_INCREF(state);
    ticket->state = state;
    Py_XINCREF(budget);
    ticket->budget = budget;
    ticket->tokens = tokens;
    ticket->tokens_in = tokens_in;
    ticket->tokens_out = tokens_out;
    ticket->micro_usd = micro;
    ticket->settled = 0;
    return (PyObject *)ticket;
fail:
    Py_XDECREF(lines);
    Py_DECREF(ticket);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))admit, METH_FASTCALL,
     "admit(plan, state, budget, call, tokens_in, output_cap, choices, cap_output, now, "
     "next_sweep, rate): a Ticket, or None for the Python to decide."},
    {NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.tenancy._counters",
    .m_doc = "A virtual key's counters, admission and settlement, compiled (see the source).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__counters(void)
{
    s_head_lines = PyUnicode_InternFromString("head_lines");
    s_usage = PyUnicode_InternFromString("usage");
    s_first_token_at = PyUnicode_InternFromString("first_token_at");
    s_input_tokens = PyUnicode_InternFromString("input_tokens");
    s_output_tokens = PyUnicode_InternFromString("output_tokens");
    s_cost = PyUnicode_InternFromString("cost");
    s_input = PyUnicode_InternFromString("input");
    s_output = PyUnicode_InternFromString("output");
    if (!s_head_lines || !s_usage || !s_first_token_at || !s_input_tokens || !s_output_tokens ||
        !s_cost || !s_input || !s_output)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (add_type(module, &KeyStateType, "KeyState") < 0 ||
        add_type(module, &BudgetType, "Budget") < 0 || add_type(module, &PlanType, "Plan") < 0 ||
        add_type(module, &TicketType, "Ticket") < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
