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

/* The hash is cheap, not keyed: key shapes crafted to collide could make probing quadratic. A probe
 * longer than this (never seen with real keys: the table is at most half full) gives up instead,
 * and the caller plans key by key, with Python's keyed string hashing. */
#define MAX_PROBES 64

/* The slot of the shape bytes, or the empty slot where it goes; NULL past MAX_PROBES. */
static Slot *table_find(Table *table, uint64_t hash, const char *bytes, Py_ssize_t len) {
    Py_ssize_t mask = table->capacity - 1;
    Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)mask);
    for (int probes = 0; probes < MAX_PROBES; probes++, i = (i + 1) & mask) {
        Slot *slot = &table->slots[i];
        if (slot->bytes == NULL) return slot;
        if (slot->hash == hash && slot->len == len && memcmp(slot->bytes, bytes, (size_t)len) == 0) return slot;
    }
    return NULL;
}

/* Twice the slots; 0 done, 1 gave up (a probe too long; the table is left as it was), -1 no memory. */
static int table_grow(Table *table) {
    Table bigger = {PyMem_Calloc((size_t)table->capacity * 2, sizeof(Slot)), table->capacity * 2, table->used};
    if (bigger.slots == NULL) return -1;
    for (Py_ssize_t i = 0; i < table->capacity; i++) {
        Slot *old = &table->slots[i];
        if (old->bytes == NULL) continue;
        Slot *slot = table_find(&bigger, old->hash, old->bytes, old->len);
        if (slot == NULL) {
            PyMem_Free(bigger.slots); /* the old table still owns every entry */
            return 1;
        }
        *slot = *old;
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

static void prefetch_str(PyObject *key) {
    __builtin_prefetch(key);
    __builtin_prefetch((const char *)key + 64);
}

#define AHEAD 16

/* entry's hash, its slot fetched early. */
static uint64_t index_prefetch(const TargetIndex *index, Py_ssize_t entry) {
    PyObject *key = index->entries[entry].key;
    uint64_t hash = hash_bytes((const char *)PyUnicode_1BYTE_DATA(key), PyUnicode_GET_LENGTH(key));
    __builtin_prefetch(&index->slots[hash & (uint64_t)index->mask], 1);
    return hash;
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
    /* Keys and slots are scattered in memory: each key's bytes are fetched 2 * AHEAD entries, and its
     * slot AHEAD entries, before its insertion, so that the cache misses overlap instead of adding up. */
    uint64_t ahead[AHEAD];
    for (Py_ssize_t entry = 0; entry < 2 * AHEAD && entry < index->count; entry++)
        prefetch_str(index->entries[entry].key);
    for (Py_ssize_t entry = 0; entry < AHEAD && entry < index->count; entry++) ahead[entry] = index_prefetch(index, entry);
    for (Py_ssize_t entry = 0; entry < index->count; entry++) {
        uint64_t hash = ahead[entry % AHEAD];
        if (entry + AHEAD < index->count) {
            if (entry + 2 * AHEAD < index->count) prefetch_str(index->entries[entry + 2 * AHEAD].key);
            ahead[entry % AHEAD] = index_prefetch(index, entry + AHEAD);
        }
        Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)index->mask);
        while (index->slots[i] != 0) i = (i + 1) & index->mask;
        index->slots[i] = (hash & 0xFFFFFFFF00000000ULL) | (uint64_t)(entry + 1);
    }
    return 0;
}

static int named_is(const Named *named, const char *bytes, Py_ssize_t len) {
    return PyUnicode_GET_LENGTH(named->key) == len && memcmp(PyUnicode_1BYTE_DATA(named->key), bytes, (size_t)len) == 0;
}

/* The entry whose key is bytes (the slow, exact probe), or -1. */
static Py_ssize_t index_probe(const TargetIndex *index, uint64_t hash, const char *bytes, Py_ssize_t len) {
    uint64_t tag = hash & 0xFFFFFFFF00000000ULL;
    for (Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)index->mask); index->slots[i] != 0; i = (i + 1) & index->mask) {
        if ((index->slots[i] & 0xFFFFFFFF00000000ULL) != tag) continue;
        Py_ssize_t entry = (Py_ssize_t)(index->slots[i] & 0xFFFFFFFFULL) - 1;
        if (named_is(&index->entries[entry], bytes, len)) return entry;
    }
    return -1;
}

/* The first entry whose hash tag matches (almost always the one), or -1: reads the slots only. */
static Py_ssize_t index_candidate(const TargetIndex *index, uint64_t hash) {
    uint64_t tag = hash & 0xFFFFFFFF00000000ULL;
    for (Py_ssize_t i = (Py_ssize_t)(hash & (uint64_t)index->mask); index->slots[i] != 0; i = (i + 1) & index->mask) {
        if ((index->slots[i] & 0xFFFFFFFF00000000ULL) == tag) return (Py_ssize_t)(index->slots[i] & 0xFFFFFFFFULL) - 1;
    }
    return -1;
}

/* Mapped keys wait in batches for their target entry, so that a batch's lookups can overlap.
 *
 * Source and target layouts usually list their keys in the same order: the entry after the last
 * one found is tried first (the *guess*), which walks the target's keys sequentially in memory.
 * Where the orders differ, each lookup is a few cache misses (slot, entry, key) that, one after
 * the other, dominate the time of a large layout; in *hashing* mode a batch's names are hashed
 * and its slots, entries, keys and shapes fetched in three overlapping rounds before they are compared.
 * While guessing, each key is resolved at once (a batch of one); a failed guess switches to hashing
 * in batches, and a hashing batch whose guesses would mostly have been right switches back. The
 * hash slots are made on the first failed guess. */
#define BATCH 16

typedef struct {
    PyObject *key, *shape, *rules; /* borrowed: from source, and from the shape table */
    Py_ssize_t name_at, name_len;  /* the target name, in the batch's names */
    uint64_t hash;                 /* in hashing mode */
    Py_ssize_t candidate;          /* in hashing mode: the first entry whose hash tag matches, or -1 */
} Pending;

typedef struct {
    Pending items[BATCH];
    int count;
    int hashing;
    char *names;
    Py_ssize_t used, capacity;
} Batch;

/* Room for a name of len bytes at the end of the batch's names; NULL when out of memory. */
static char *batch_room(Batch *batch, Py_ssize_t len) {
    if (batch->used + len > batch->capacity) {
        Py_ssize_t capacity = (batch->used + len) * 2 + 256;
        char *names = PyMem_Realloc(batch->names, (size_t)capacity);
        if (names == NULL) return NULL;
        batch->names = names;
        batch->capacity = capacity;
    }
    return batch->names + batch->used;
}

/* Find every pending name's entry, check shapes, append to the plan's columns. 0 done, 1 not plannable
 * here (a name the target lacks, a shape that differs), -1 error. `*next`: the guess. */
static int batch_resolve(Batch *batch, TargetIndex *index, Py_ssize_t *next, PyObject *const *columns) {
    if (batch->hashing) {
        for (int i = 0; i < batch->count; i++) {
            Pending *item = &batch->items[i];
            item->hash = hash_bytes(batch->names + item->name_at, item->name_len);
            __builtin_prefetch(&index->slots[item->hash & (uint64_t)index->mask]);
        }
        for (int i = 0; i < batch->count; i++) {
            Py_ssize_t candidate = batch->items[i].candidate = index_candidate(index, batch->items[i].hash);
            if (candidate >= 0) __builtin_prefetch(&index->entries[candidate]);
        }
        for (int i = 0; i < batch->count; i++) {
            if (batch->items[i].candidate < 0) continue;
            prefetch_str(index->entries[batch->items[i].candidate].key);
            __builtin_prefetch(index->entries[batch->items[i].candidate].shape);
        }
    }
    int guessed = 0;
    for (int i = 0; i < batch->count; i++) {
        Pending *item = &batch->items[i];
        const char *name = batch->names + item->name_at;
        Py_ssize_t entry = -1;
        if (batch->hashing) {
            if (item->candidate >= 0 && named_is(&index->entries[item->candidate], name, item->name_len))
                entry = item->candidate;
            else
                entry = index_probe(index, item->hash, name, item->name_len);
        } else if (*next < index->count && named_is(&index->entries[*next], name, item->name_len)) {
            entry = *next;
        } else {
            if (index->slots == NULL && index_hash(index) < 0) return -1;
            entry = index_probe(index, hash_bytes(name, item->name_len), name, item->name_len);
        }
        if (entry < 0) return 1;
        guessed += entry == *next;
        *next = entry + 1;
        const Named *found = &index->entries[entry];
        int same = PyObject_RichCompareBool(found->shape, item->shape, Py_EQ);
        if (same <= 0) return same < 0 ? -1 : 1;
        if (PyList_Append(columns[0], item->key) < 0 || PyList_Append(columns[1], found->key) < 0 ||
            PyList_Append(columns[2], item->shape) < 0 || PyList_Append(columns[3], item->rules) < 0)
            return -1;
    }
    batch->hashing = index->slots != NULL && guessed * 4 < batch->count * 3;
    batch->count = 0;
    batch->used = 0;
    return 0;
}

/* The target name, at out: slot's holes with the key's free values spliced in, in order. */
static void splice(const Slot *slot, const Scratch *scratch, Py_ssize_t value_count, char *out) {
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
}

static Py_ssize_t spliced_len(const Slot *slot, const Scratch *scratch, Py_ssize_t value_count) {
    Py_ssize_t len = slot->holes_len - value_count;
    for (Py_ssize_t i = 0; i < value_count; i++) len += scratch->values[i].len;
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
    Scratch scratch = {NULL, NULL, 0};
    Batch batch = {.count = 0, .hashing = 0, .names = NULL, .used = 0, .capacity = 0};
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
    PyObject *other_keys = outputs[4], *other_outcomes = outputs[5]; /* 0-3: sources, targets, shapes, rules */

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
        if (slot == NULL) goto fall_back;
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
                int grown = table_grow(&table);
                if (grown < 0) {
                    PyErr_NoMemory();
                    goto done;
                }
                if (grown > 0) goto fall_back;
                if ((slot = table_find(&table, hash, scratch.shape, shape_len)) == NULL) goto fall_back;
            }
        }
        if (slot->holes == NULL) {
            if (PyList_Append(other_keys, key) < 0 || PyList_Append(other_outcomes, slot->payload) < 0) goto done;
            continue;
        }
        Py_ssize_t name_len = spliced_len(slot, &scratch, value_count);
        char *name = batch_room(&batch, name_len);
        if (name == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        splice(slot, &scratch, value_count, name);
        batch.items[batch.count] = (Pending){key, shape, slot->payload, batch.used, name_len, 0, -1};
        batch.used += name_len;
        if (++batch.count == BATCH || !batch.hashing) { /* while guessing, each key is resolved at once */
            int resolved = batch_resolve(&batch, &index, &next_entry, outputs);
            if (resolved < 0) goto done;
            if (resolved > 0) goto fall_back;
        }
    }
    if (batch.count > 0) {
        int resolved = batch_resolve(&batch, &index, &next_entry, outputs);
        if (resolved < 0) goto done;
        if (resolved > 0) goto fall_back;
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
    PyMem_Free(batch.names);
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
