/* wmap._bulk_native: the per-key loop of bulk planning (wmap.bulk), in C.
 *
 * The pure-Python kernel spends its time creating, hashing and looking up
 * Python strings for every key's shape and target name. Here a key's shape
 * (its free numeric segments replaced by '\0') is found by one scan of its
 * bytes and looked up in a C hash table; the target name is spliced into a
 * buffer and found in an index of the target layout's keys, so the plan holds
 * the layout's own key objects: no Python object is made per key. Decisions
 * stay in Python: the first key of each new shape is passed to `learn`, whose
 * answer is kept for the shape.
 *
 * plan_keys(source, excluded, learn, target) ->
 *     (sources, targets, shapes, rules, other_keys, other_outcomes) or None
 *
 *   source    dict[str, object]  the source layout: keys and tensor shapes, in order
 *   excluded  tuple[str, ...]    numeric segments that rules name literally (never free)
 *   learn     callable(key) -> (holes, rules) | (None, outcome) | None
 *             holes: the target name with '\0' where the key's free values go, in order, each once
 *   target    dict[str, object]  the target layout
 *
 * None means "plan key by key": a key that is not ASCII or holds '\0', a shape
 * `learn` cannot template, a target name the layout lacks or whose shape
 * differs. The caller then reports those problems in detail.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t hash;
    Py_ssize_t len;
    char *bytes;           /* the shape; NULL marks an empty slot */
    PyObject *answer;      /* learn's answer, owned */
    const char *holes;     /* the holes template when mapped (inside answer), else NULL */
    Py_ssize_t holes_len;
    PyObject *payload;     /* rules when mapped, outcome otherwise (borrowed from answer) */
} Slot;

typedef struct {
    Slot *slots;
    Py_ssize_t capacity; /* a power of two */
    Py_ssize_t used;
} Table;

/* A multiply-xorshift hash over 8-byte words: cheap, and good enough for a table of key shapes. */
static uint64_t hash_bytes(const char *bytes, Py_ssize_t len) {
    uint64_t hash = 0x9E3779B97F4A7C15ULL ^ (uint64_t)len, word;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&word, bytes + i, 8);
        hash = (hash ^ word) * 0xFF51AFD7ED558CCDULL;
        hash ^= hash >> 32;
    }
    word = 0;
    memcpy(&word, bytes + i, (size_t)(len - i));
    hash = (hash ^ word) * 0xC4CEB9FE1A85EC53ULL;
    return hash ^ (hash >> 29);
}

static int table_init(Table *table) {
    table->capacity = 64;
    table->used = 0;
    table->slots = PyMem_Calloc((size_t)table->capacity, sizeof(Slot));
    return table->slots == NULL ? -1 : 0;
}

static void table_free(Table *table) {
    if (table->slots == NULL) return;
    for (Py_ssize_t i = 0; i < table->capacity; i++) {
        if (table->slots[i].bytes != NULL) {
            PyMem_Free(table->slots[i].bytes);
            Py_XDECREF(table->slots[i].answer);
        }
    }
    PyMem_Free(table->slots);
    table->slots = NULL;
}

static Slot *table_find(Table *table, uint64_t hash, const char *bytes, Py_ssize_t len) {
    Py_ssize_t mask = table->capacity - 1;
    for (Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)mask);; i = (i + 1) & mask) {
        Slot *slot = &table->slots[i];
        if (slot->bytes == NULL) return slot;
        if (slot->hash == hash && slot->len == len && memcmp(slot->bytes, bytes, (size_t)len) == 0) return slot;
    }
}

static int table_grow(Table *table) {
    Table bigger = {PyMem_Calloc((size_t)table->capacity * 2, sizeof(Slot)), table->capacity * 2, table->used};
    if (bigger.slots == NULL) return -1;
    for (Py_ssize_t i = 0; i < table->capacity; i++) {
        Slot *old = &table->slots[i];
        if (old->bytes != NULL) *table_find(&bigger, old->hash, old->bytes, old->len) = *old;
    }
    PyMem_Free(table->slots);
    *table = bigger;
    return 0;
}

typedef struct {
    const char *bytes;
    Py_ssize_t len;
} Span;

typedef struct {
    char *shape;
    Span *values;
    Py_ssize_t capacity; /* bytes of shape; values has capacity / 2 + 1 entries */
    char *name;
    Py_ssize_t name_capacity;
} Scratch;

static int scratch_fit(Scratch *scratch, Py_ssize_t len) {
    if (len <= scratch->capacity) return 0;
    Py_ssize_t capacity = len * 2 + 64;
    char *shape = PyMem_Realloc(scratch->shape, (size_t)capacity);
    if (shape == NULL) return -1;
    scratch->shape = shape;
    Span *values = PyMem_Realloc(scratch->values, sizeof(Span) * (size_t)(capacity / 2 + 1));
    if (values == NULL) return -1;
    scratch->values = values;
    scratch->capacity = capacity;
    return 0;
}

typedef struct {
    Span *items;
    Py_ssize_t count;
} Excluded;

static int is_excluded(const Excluded *excluded, const char *bytes, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < excluded->count; i++) {
        if (excluded->items[i].len == len && memcmp(excluded->items[i].bytes, bytes, (size_t)len) == 0) return 1;
    }
    return 0;
}

/* The shape of key (written to scratch->shape) and its free values; -1: not plannable here (no error set). */
static Py_ssize_t shape_of(const char *key, Py_ssize_t len, const Excluded *excluded, Scratch *scratch,
                           Py_ssize_t *value_count) {
    if (memchr(key, '\0', (size_t)len) != NULL) return -1; /* '\0' marks the holes */
    Py_ssize_t out = 0, count = 0;
    const char *segment = key, *end = key + len;
    for (;;) {
        const char *dot = memchr(segment, '.', (size_t)(end - segment));
        const char *stop = dot == NULL ? end : dot;
        Py_ssize_t size = stop - segment;
        int numeric = size > 0 && segment[0] >= '0' && segment[0] <= '9';
        for (Py_ssize_t j = 1; j < size && numeric; j++) numeric = segment[j] >= '0' && segment[j] <= '9';
        if (numeric && !is_excluded(excluded, segment, size)) {
            scratch->shape[out++] = '\0';
            scratch->values[count].bytes = segment;
            scratch->values[count].len = size;
            count++;
        } else {
            memcpy(scratch->shape + out, segment, (size_t)size);
            out += size;
        }
        if (dot == NULL) break;
        scratch->shape[out++] = '.';
        segment = dot + 1;
    }
    *value_count = count;
    return out;
}

/* Cache learn(key)'s answer in slot; 0 done, 1 not plannable here, -1 error. */
static int learn_shape(Slot *slot, PyObject *learn, PyObject *key, Py_ssize_t value_count) {
    PyObject *answer = PyObject_CallOneArg(learn, key);
    if (answer == NULL) return -1;
    if (answer == Py_None) {
        Py_DECREF(answer);
        return 1;
    }
    if (!PyTuple_CheckExact(answer) || PyTuple_GET_SIZE(answer) != 2) {
        Py_DECREF(answer);
        PyErr_SetString(PyExc_TypeError, "learn must return (holes, rules), (None, outcome) or None");
        return -1;
    }
    PyObject *holes = PyTuple_GET_ITEM(answer, 0);
    slot->holes = NULL;
    slot->holes_len = 0;
    if (holes != Py_None) {
        if (!PyUnicode_Check(holes) || !PyUnicode_IS_COMPACT_ASCII(holes)) {
            Py_DECREF(answer);
            return 1;
        }
        const char *bytes = (const char *)PyUnicode_1BYTE_DATA(holes);
        Py_ssize_t len = PyUnicode_GET_LENGTH(holes), count = 0;
        for (Py_ssize_t i = 0; i < len; i++) count += bytes[i] == '\0';
        if (count != value_count) {
            Py_DECREF(answer);
            return 1;
        }
        slot->holes = bytes;
        slot->holes_len = len;
    }
    slot->answer = answer;
    slot->payload = PyTuple_GET_ITEM(answer, 1);
    return 0;
}

/* The target index: the target layout's ASCII keys by the same hash, so that a target name is
 * found from its bytes, and the plan holds the layout's own key object instead of a new string. */
typedef struct {
    PyObject *key;   /* borrowed from the target dict, which outlives the call */
    PyObject *shape; /* borrowed */
} Named;

typedef struct {
    uint64_t *slots; /* the hash's high half, then entry index + 1 (a low half of 0 is empty): one load a probe */
    Named *entries;
    Py_ssize_t count;
    Py_ssize_t mask;
} TargetIndex;

static void index_free(TargetIndex *index) {
    PyMem_Free(index->slots);
    PyMem_Free(index->entries);
}

/* The target's ASCII keys in order (a non-ASCII key never equals a spliced name); no hashing yet. */
static int index_build(TargetIndex *index, PyObject *target) {
    Py_ssize_t count = PyDict_GET_SIZE(target), position = 0;
    if (count > (Py_ssize_t)(UINT32_MAX / 4)) {
        PyErr_SetString(PyExc_OverflowError, "target layout too large");
        return -1;
    }
    if ((index->entries = PyMem_Malloc((size_t)(count + 1) * sizeof(Named))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *key, *shape;
    while (PyDict_Next(target, &position, &key, &shape)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_COMPACT_ASCII(key)) continue;
        index->entries[index->count].key = key;
        index->entries[index->count].shape = shape;
        index->count++;
    }
    return 0;
}

/* The hash slots, made the first time a name is not where the order predicts. */
static int index_hash(TargetIndex *index) {
    Py_ssize_t capacity = 16;
    while (capacity < index->count * 2) capacity <<= 1;
    index->mask = capacity - 1;
    if ((index->slots = PyMem_Calloc((size_t)capacity, sizeof(uint64_t))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t entry = 0; entry < index->count; entry++) {
        PyObject *key = index->entries[entry].key;
        uint64_t hash = hash_bytes((const char *)PyUnicode_1BYTE_DATA(key), PyUnicode_GET_LENGTH(key));
        Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)index->mask);
        while (index->slots[i] != 0) i = (i + 1) & index->mask;
        index->slots[i] = (hash & 0xFFFFFFFF00000000ULL) | (uint64_t)(entry + 1);
    }
    return 0;
}

static int named_is(const Named *named, const char *bytes, Py_ssize_t len) {
    return PyUnicode_GET_LENGTH(named->key) == len && memcmp(PyUnicode_1BYTE_DATA(named->key), bytes, (size_t)len) == 0;
}

/* The entry named bytes, or NULL. `*next` is where the previous name was found, plus one: source
 * and target layouts usually list their keys in the same order, and trying that entry first keeps
 * the walk through the target's keys sequential in memory (and linear in time) for large layouts. */
/* The entry named bytes, or NULL (and an error set if hashing failed). `*next` is where the previous
 * name was found, plus one: source and target layouts usually list their keys in the same order, and
 * trying that entry first keeps the walk through the target's keys sequential in memory (and linear
 * in time) for large layouts; the hash slots are only made when that guess fails. */
static const Named *index_find(TargetIndex *index, const char *bytes, Py_ssize_t len, Py_ssize_t *next) {
    if (*next < index->count && named_is(&index->entries[*next], bytes, len)) return &index->entries[(*next)++];
    if (index->slots == NULL && index_hash(index) < 0) return NULL;
    uint64_t hash = hash_bytes(bytes, len);
    uint64_t tag = hash & 0xFFFFFFFF00000000ULL;
    for (Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)index->mask); index->slots[i] != 0; i = (i + 1) & index->mask) {
        if ((index->slots[i] & 0xFFFFFFFF00000000ULL) != tag) continue;
        Py_ssize_t entry = (Py_ssize_t)(index->slots[i] & 0xFFFFFFFFULL) - 1;
        if (named_is(&index->entries[entry], bytes, len)) {
            *next = entry + 1;
            return &index->entries[entry];
        }
    }
    return NULL;
}

/* The target name, in scratch->name: slot's holes with the key's free values spliced in, in order. */
static Py_ssize_t splice(const Slot *slot, Scratch *scratch, Py_ssize_t value_count) {
    Py_ssize_t len = slot->holes_len - value_count;
    for (Py_ssize_t i = 0; i < value_count; i++) len += scratch->values[i].len;
    if (len > scratch->name_capacity) {
        char *name = PyMem_Realloc(scratch->name, (size_t)len * 2);
        if (name == NULL) return -1;
        scratch->name = name;
        scratch->name_capacity = len * 2;
    }
    char *out = scratch->name;
    const char *piece = slot->holes, *end = slot->holes + slot->holes_len;
    for (Py_ssize_t value = 0; value < value_count; value++) {
        const char *hole = memchr(piece, '\0', (size_t)(end - piece));
        memcpy(out, piece, (size_t)(hole - piece));
        out += hole - piece;
        memcpy(out, scratch->values[value].bytes, (size_t)scratch->values[value].len);
        out += scratch->values[value].len;
        piece = hole + 1;
    }
    memcpy(out, piece, (size_t)(end - piece));
    return len;
}

#define OUTPUTS 6

static PyObject *plan_keys(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "plan_keys(source, excluded, learn, target)");
        return NULL;
    }
    PyObject *source = args[0], *excluded_strings = args[1], *learn = args[2], *target = args[3];
    if (!PyDict_CheckExact(source) || !PyTuple_CheckExact(excluded_strings) || !PyCallable_Check(learn) ||
        !PyDict_CheckExact(target)) {
        PyErr_SetString(PyExc_TypeError, "plan_keys(dict, tuple, callable, dict)");
        return NULL;
    }

    PyObject *result = NULL, *outputs[OUTPUTS] = {NULL};
    Table table = {NULL, 0, 0};
    Scratch scratch = {NULL, NULL, 0, NULL, 0};
    TargetIndex index = {NULL, NULL, 0, 0};
    Py_ssize_t next_entry = 0;
    Excluded excluded = {PyMem_Calloc((size_t)PyTuple_GET_SIZE(excluded_strings) + 1, sizeof(Span)), 0};
    if (excluded.items == NULL || table_init(&table) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(excluded_strings); i++) {
        PyObject *literal = PyTuple_GET_ITEM(excluded_strings, i);
        if (!PyUnicode_Check(literal) || !PyUnicode_IS_COMPACT_ASCII(literal)) continue; /* never equals an ASCII segment */
        excluded.items[excluded.count].bytes = (const char *)PyUnicode_1BYTE_DATA(literal);
        excluded.items[excluded.count].len = PyUnicode_GET_LENGTH(literal);
        excluded.count++;
    }
    for (int i = 0; i < OUTPUTS; i++) {
        if ((outputs[i] = PyList_New(0)) == NULL) goto done;
    }
    if (index_build(&index, target) < 0) goto done;
    PyObject *sources = outputs[0], *targets = outputs[1], *shapes = outputs[2], *rules = outputs[3],
             *other_keys = outputs[4], *other_outcomes = outputs[5];

    Py_ssize_t position = 0;
    PyObject *key, *shape; /* borrowed from source, which learn leaves alone */
    while (PyDict_Next(source, &position, &key, &shape)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_COMPACT_ASCII(key)) goto fall_back;
        const char *bytes = (const char *)PyUnicode_1BYTE_DATA(key);
        Py_ssize_t len = PyUnicode_GET_LENGTH(key), value_count = 0;
        if (scratch_fit(&scratch, len + 1) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t shape_len = shape_of(bytes, len, &excluded, &scratch, &value_count);
        if (shape_len < 0) goto fall_back;
        uint64_t hash = hash_bytes(scratch.shape, shape_len);
        Slot *slot = table_find(&table, hash, scratch.shape, shape_len);
        if (slot->bytes == NULL) {
            int learnt = learn_shape(slot, learn, key, value_count);
            if (learnt < 0) goto done;
            if (learnt > 0) goto fall_back;
            if ((slot->bytes = PyMem_Malloc((size_t)shape_len + 1)) == NULL) {
                Py_CLEAR(slot->answer);
                PyErr_NoMemory();
                goto done;
            }
            memcpy(slot->bytes, scratch.shape, (size_t)shape_len);
            slot->hash = hash;
            slot->len = shape_len;
            if (++table.used * 2 > table.capacity) {
                if (table_grow(&table) < 0) {
                    PyErr_NoMemory();
                    goto done;
                }
                slot = table_find(&table, hash, scratch.shape, shape_len);
            }
        }
        if (slot->holes == NULL) {
            if (PyList_Append(other_keys, key) < 0 || PyList_Append(other_outcomes, slot->payload) < 0) goto done;
            continue;
        }
        Py_ssize_t name_len = splice(slot, &scratch, value_count);
        if (name_len < 0) {
            PyErr_NoMemory();
            goto done;
        }
        const Named *found = index_find(&index, scratch.name, name_len, &next_entry);
        if (found == NULL) {
            if (PyErr_Occurred()) goto done;
            goto fall_back;
        }
        int same = PyObject_RichCompareBool(found->shape, shape, Py_EQ);
        if (same < 0) goto done;
        if (same == 0) goto fall_back;
        if (PyList_Append(sources, key) < 0 || PyList_Append(targets, found->key) < 0 ||
            PyList_Append(shapes, shape) < 0 || PyList_Append(rules, slot->payload) < 0)
            goto done;
    }
    result = PyTuple_New(OUTPUTS);
    if (result != NULL) {
        for (int i = 0; i < OUTPUTS; i++) {
            PyTuple_SET_ITEM(result, i, outputs[i]);
            outputs[i] = NULL;
        }
    }
    goto done;
fall_back:
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < OUTPUTS; i++) Py_XDECREF(outputs[i]);
    table_free(&table);
    PyMem_Free(scratch.shape);
    PyMem_Free(scratch.values);
    PyMem_Free(scratch.name);
    index_free(&index);
    PyMem_Free(excluded.items);
    return result;
}

static PyMethodDef methods[] = {
    {"plan_keys", (PyCFunction)(void (*)(void))plan_keys, METH_FASTCALL,
     "plan_keys(source, excluded, learn, target): the per-key loop of wmap.bulk, or None to plan key by key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wmap._bulk_native", "The per-key loop of wmap.bulk, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__bulk_native(void) { return PyModule_Create(&module); }
