/* The fold's fast lane in C: consumers/fastlane.py's `fold`, and the loop of the
 * service that feeds it, for a batch of consumed records at a time.
 *
 * Nothing here knows the Event schema by heart. consumers/fastlane.py builds a Lane
 * from the same sources its Python lane is compiled from (the pinned single-object
 * prefix, per union branch of `kind` the field layout and the counter from
 * COUNTED_KINDS, serde.loads, RunStatus.RUNNING, the RunState class), and the C code
 * only reads bytes the way schemas/fastpath.py reads them.
 *
 * The rule is the Python lane's: a record is folded here only when the Python lane
 * would fold it, with the same effect; any doubt (a value outside what is checked
 * below, an object of an unexpected type) stops the batch at that record, and the
 * service gives it to its general path, which decides precisely. Stopping is always
 * safe: the general path folds whatever the lane folds to the same state (the
 * Python differential tests prove that), so the C lane may refuse more, never less.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifdef Py_T_OBJECT_EX
#define LANE_T_OBJECT_EX Py_T_OBJECT_EX
#define LANE_READONLY Py_READONLY
#else
#define LANE_T_OBJECT_EX T_OBJECT_EX
#define LANE_READONLY READONLY
#endif

/* Field codes of a kind's record, as consumers/fastlane.py's _FIELD_CODES lists them. */
enum { F_STRING = 0, F_U32 = 1, F_U64 = 2, F_OPTIONAL_STRING = 3, F_STRING_ARRAY = 4 };

#define MAX_FIELDS 32
#define MAX_BRANCHES 63 /* branch b is the single byte 2b < 0x80 */
#define UUID_TEXT 36

/* The RunState slots the lane reads or writes (besides the per-kind counters). */
enum {
    S_PENDING_EVENTS,
    S_STATUS,
    S_EVENTS_APPLIED,
    S_SOURCE_OFFSET,
    S_LAST_SEQ,
    S_STREAM_TIME,
    S_DIGESTS,
    N_SLOTS
};
static const char *const slot_names[N_SLOTS] = {
    "pending_events", "status", "events_applied", "source_offset",
    "last_seq", "stream_time", "digests",
};

typedef struct {
    int counted;                      /* 0: not a counted kind, never fast */
    int n_fields;
    unsigned char fields[MAX_FIELDS];
    PyObject *counter_name;           /* str */
    PyObject *counter_descr;          /* the member descriptor of RunState.<counter> */
    Py_ssize_t counter_offset;
} Branch;

/* The Message methods the service calls, in this order. */
enum { M_ERROR, M_PARTITION, M_KEY, M_VALUE, M_OFFSET, N_METHODS };

typedef struct {
    uint64_t hash;
    PyObject *bytes; /* NULL: free */
} PayloadEntry;

typedef struct {
    PyObject_HEAD
    PyObject *prefix;        /* bytes: magic + fingerprint + zigzag(36) */
    Py_ssize_t header;       /* the single-object header's size: the digest covers what follows */
    PyObject *running;       /* RunStatus.RUNNING */
    PyObject *loads;         /* serde.loads */
    PyTypeObject *state_type;
    PyObject *slot_descr[N_SLOTS];
    Py_ssize_t slot_offset[N_SLOTS];
    unsigned int version_tag; /* state_type's tp_version_tag when the slots were checked */
    int n_branches;
    Branch branches[MAX_BRANCHES];
    PayloadEntry *payloads;  /* payloads already parsed by loads: open addressing */
    Py_ssize_t payload_mask; /* table size - 1 (a power of two, twice cache_size at least) */
    Py_ssize_t payloads_used;
    Py_ssize_t cache_size;
    PyTypeObject *msg_type;  /* the messages' type whose methods are called directly */
    unsigned int msg_version_tag;
    PyCFunction msg_method[N_METHODS];
} Lane;

static const char *const method_names[N_METHODS] = {"error", "partition", "key", "value", "offset"};
static PyObject *method_str[N_METHODS];
static PyObject *str_add;
static PyObject *one;

/* --- reading bytes as schemas/fastpath.py does --------------------------------------- */

/* An Avro long's varint as fastpath._read_long reads it: at most 10 bytes, the tenth
 * below 0x80. Returns the position after it, or -1 where _read_long would raise (past
 * the end, over 10 bytes). *raw is the zigzag value's low 64 bits; *wide holds its
 * bits 64..69 (Python reads a tenth byte above 1 into a big int), 0 when it has none. */
static inline Py_ssize_t
read_varint(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t size, uint64_t *raw,
            unsigned int *wide)
{
    uint64_t n = 0;
    for (int i = 0; i < 9; i++) {
        if (pos >= size)
            return -1;
        unsigned char byte = buf[pos++];
        n |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *raw = n;
            *wide = 0;
            return pos;
        }
    }
    if (pos >= size)
        return -1;
    unsigned char byte = buf[pos++];
    if (byte >= 0x80)
        return -1;
    *raw = n | ((uint64_t)(byte & 1) << 63);
    *wide = byte >> 1;
    return pos;
}

static inline int64_t
unzigzag(uint64_t raw)
{
    return (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
}

/* CRC-32 as zlib.crc32 computes it (IEEE 802.3, reflected, polynomial 0xEDB88320),
 * sliced by 8: three times zlib 1.2's speed on the ~60-byte bodies of most events.
 * Tests compare it with zlib.crc32 (module function crc32). */
static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t
crc32_ieee(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
#if PY_BIG_ENDIAN
        a = __builtin_bswap32(a);
        b = __builtin_bswap32(b);
#endif
        a ^= c;
        c = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF] ^
            crc_table[5][(a >> 16) & 0xFF] ^ crc_table[4][a >> 24] ^ crc_table[3][b & 0xFF] ^
            crc_table[2][(b >> 8) & 0xFF] ^ crc_table[1][(b >> 16) & 0xFF] ^ crc_table[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Whether bytes.decode() (strict UTF-8) accepts these bytes: well-formed UTF-8 as
 * Unicode's Table 3-7 has it, which is what CPython's decoder accepts (no overlongs,
 * no surrogates, nothing above U+10FFFF). */
static int
utf8_valid(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        /* ASCII runs 8 bytes at a time: most strings are ASCII. */
        while (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c < 0xC2)
            return 0;
        if (c < 0xE0) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
            continue;
        }
        if (c < 0xF0) {
            unsigned char low = c == 0xE0 ? 0xA0 : 0x80, high = c == 0xED ? 0x9F : 0xBF;
            if (i + 2 >= n || s[i + 1] < low || s[i + 1] > high || (s[i + 2] & 0xC0) != 0x80)
                return 0;
            i += 3;
            continue;
        }
        if (c < 0xF5) {
            unsigned char low = c == 0xF0 ? 0x90 : 0x80, high = c == 0xF4 ? 0x8F : 0xBF;
            if (i + 3 >= n || s[i + 1] < low || s[i + 1] > high || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            i += 4;
            continue;
        }
        return 0;
    }
    return 1;
}

/* An Avro string as fastpath._read_string reads it; -1 where it would raise. */
static inline Py_ssize_t
scan_string(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t size)
{
    uint64_t raw;
    unsigned int wide;
    pos = read_varint(buf, pos, size, &raw, &wide);
    if (pos < 0 || wide || raw & 1) /* a negative or too long length */
        return -1;
    uint64_t length = raw >> 1;
    if (length > (uint64_t)(size - pos) || !utf8_valid(buf + pos, (Py_ssize_t)length))
        return -1;
    return pos + (Py_ssize_t)length;
}

/* One kind's fields as consumers/fastlane.py's compiled scanner checks them. */
static Py_ssize_t
scan_fields(const Branch *branch, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t size)
{
    uint64_t raw;
    unsigned int wide;
    for (int f = 0; f < branch->n_fields && pos >= 0; f++) {
        switch (branch->fields[f]) {
        case F_STRING:
            pos = scan_string(buf, pos, size);
            break;
        case F_U32: /* 0 <= v <= 2**32 - 1 */
            pos = read_varint(buf, pos, size, &raw, &wide);
            if (pos >= 0 && (wide || raw & 1 || (raw >> 1) > UINT32_MAX))
                pos = -1;
            break;
        case F_U64: /* 0 <= v: any width, Python's ints have none (the sign is bit 0) */
            pos = read_varint(buf, pos, size, &raw, &wide);
            if (pos >= 0 && raw & 1)
                pos = -1;
            break;
        case F_OPTIONAL_STRING:
            if (pos >= size)
                return -1;
            if (buf[pos] == 2)
                pos = scan_string(buf, pos + 1, size);
            else if (buf[pos] == 0)
                pos += 1;
            else
                pos = -1;
            break;
        case F_STRING_ARRAY: /* fastpath._read_string_array: blocks until a zero count */
            for (;;) {
                pos = read_varint(buf, pos, size, &raw, &wide);
                /* A count outside 64 bits cannot be followed by that many strings
                 * (each is a byte at least): Python fails on it too. */
                if (pos < 0 || wide)
                    return -1;
                int64_t count = unzigzag(raw);
                if (count == 0)
                    break;
                if (count < 0) { /* a block with its byte size, which is not needed */
                    if (count == INT64_MIN)
                        return -1;
                    count = -count;
                    pos = read_varint(buf, pos, size, &raw, &wide);
                    if (pos < 0)
                        return -1;
                }
                for (int64_t item = 0; item < count; item++) {
                    pos = scan_string(buf, pos, size);
                    if (pos < 0)
                        return -1;
                }
            }
            break;
        default:
            return -1;
        }
    }
    return pos;
}

/* --- RunState slots ---------------------------------------------------------------------- */

/* The member descriptor behind RunState.<name>, if it is a plain writable object slot
 * (what __slots__ makes); new reference, or NULL with an exception set. */
static PyObject *
object_slot(PyTypeObject *type, PyObject *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL)
        return NULL;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a __slots__ member", type->tp_name, name);
        Py_DECREF(descr);
        return NULL;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != LANE_T_OBJECT_EX || member->flags & LANE_READONLY) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a writable object slot", type->tp_name, name);
        Py_DECREF(descr);
        return NULL;
    }
    *offset = member->offset;
    return descr;
}

/* Whether RunState's attributes are still the slots seen at construction: 1 yes,
 * 0 no (the lane then takes nothing), -1 error. Cheap while the type is unchanged:
 * any change to a type resets its version tag. */
static int
layout_unchanged(Lane *self)
{
    PyTypeObject *type = self->state_type;
    if (self->version_tag != 0 && type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG &&
        type->tp_version_tag == self->version_tag)
        return 1;
    if (type->tp_getattro != PyObject_GenericGetAttr ||
        type->tp_setattro != PyObject_GenericSetAttr)
        return 0;
    for (int s = 0; s < N_SLOTS + self->n_branches; s++) {
        PyObject *name, *expected;
        if (s < N_SLOTS) {
            name = PyUnicode_FromString(slot_names[s]);
            if (name == NULL)
                return -1;
            expected = self->slot_descr[s];
        } else {
            Branch *branch = &self->branches[s - N_SLOTS];
            if (!branch->counted)
                continue;
            name = Py_NewRef(branch->counter_name);
            expected = branch->counter_descr;
        }
        PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
        Py_DECREF(name);
        if (descr == NULL) {
            PyErr_Clear();
            return 0;
        }
        Py_DECREF(descr);
        if (descr != expected)
            return 0;
    }
    /* The lookups above gave the type a version tag if it had none. */
    self->version_tag =
        type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG ? type->tp_version_tag : 0;
    return 1;
}

#define SLOT(state, offset) (*(PyObject **)((char *)(state) + (offset)))

/* What T_OBJECT_EX's setter does (PyMember_SetOne): the new value in, the old one out. */
static inline void
set_slot(PyObject *state, Py_ssize_t offset, PyObject *value /* stolen */)
{
    PyObject *old = SLOT(state, offset);
    SLOT(state, offset) = value;
    Py_XDECREF(old);
}

/* An int that fits 64 bits: 1 and *out, 0 (not an int, or wider), -1 error. */
static inline int
as_int64(PyObject *obj, int64_t *out)
{
    if (obj == NULL || !PyLong_Check(obj))
        return 0;
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return 0;
    *out = (int64_t)value;
    return 1;
}

/* --- one record ---------------------------------------------------------------------------- */

/* --- payload JSON that is certainly valid ---------------------------------------------------- */

/* Most payloads are small objects of strings and integers, and many are seen once
 * (token counts differ), so the cache below misses often. json_simple recognises a
 * subset of JSON that serde.loads certainly accepts, and says "not sure" for
 * anything else, which then goes to serde.loads itself:
 *   - no whitespace outside strings (serde and runfold write compact JSON);
 *   - strings: no control characters, escapes only \" \\ \/ \b \f \n \r \t (no \u:
 *     serde.loads checks those for lone surrogates); the bytes are valid UTF-8
 *     (checked by the caller);
 *   - numbers: -?(0|[1-9][0-9]{0,17})(\.[0-9]+)? (an integer within i64, or a
 *     float without exponent, which cannot overflow an f64), never NaN/Infinity;
 *   - true, false, null; objects and arrays nested at most MAX_JSON_DEPTH deep
 *     (Python's C scanner recurses per level).
 * Tests check json_simple(text) implies serde.loads(text) succeeds on generated texts. */
#define MAX_JSON_DEPTH 16

static int json_value(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, int depth);

static int
json_string(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at)
{
    Py_ssize_t i = *at + 1; /* past the opening quote */
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"') {
            *at = i + 1;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (i + 1 >= n || !strchr("\"\\/bfnrt", p[i + 1]) || p[i + 1] == '\0')
                return 0;
            i += 2;
            continue;
        }
        i++;
    }
    return 0;
}

static int
json_number(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at)
{
    Py_ssize_t i = *at;
    if (p[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (p[i] == '0') {
        i++;
    } else if (p[i] >= '1' && p[i] <= '9') {
        Py_ssize_t first = i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i - first > 18)
            return 0;
    } else {
        return 0;
    }
    if (i < n && p[i] == '.') {
        Py_ssize_t first = ++i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == first)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E'))
        return 0;
    *at = i;
    return 1;
}

static int
json_literal(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, const char *word, size_t size)
{
    if ((size_t)(n - *at) < size || memcmp(p + *at, word, size) != 0)
        return 0;
    *at += (Py_ssize_t)size;
    return 1;
}

/* Objects and arrays: members until the closing bracket. */
static int
json_container(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, int depth)
{
    const unsigned char close = p[*at] == '{' ? '}' : ']';
    Py_ssize_t i = *at + 1;
    if (depth >= MAX_JSON_DEPTH)
        return 0;
    if (i < n && p[i] == close) {
        *at = i + 1;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (i >= n || p[i] != '"' || !json_string(p, n, &i) || i >= n || p[i] != ':')
                return 0;
            i++;
        }
        if (!json_value(p, n, &i, depth + 1) || i >= n)
            return 0;
        if (p[i] == close) {
            *at = i + 1;
            return 1;
        }
        if (p[i] != ',')
            return 0;
        i++;
    }
}

static int
json_value(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, int depth)
{
    if (*at >= n)
        return 0;
    switch (p[*at]) {
    case '{':
    case '[':
        return json_container(p, n, at, depth);
    case '"':
        return json_string(p, n, at);
    case 't':
        return json_literal(p, n, at, "true", 4);
    case 'f':
        return json_literal(p, n, at, "false", 5);
    case 'n':
        return json_literal(p, n, at, "null", 4);
    default:
        return json_number(p, n, at);
    }
}

/* 1: serde.loads certainly accepts the text; 0: not sure. */
static int
json_simple(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t at = 0;
    return json_value(p, n, &at, 0) && at == n;
}

/* --- payloads already parsed ----------------------------------------------------------------- */

/* A payload text parsed once needs not be parsed again: a bounded cache of a pure
 * check, as the Python lane keeps (it changes no result, only the cost). Kept as an
 * open-addressing table of the payload bytes, so a hit allocates nothing. Probing is
 * bounded: colliding payloads are treated as unknown (parsed again, as the Python lane
 * does on a miss), so no input makes a lookup cost more than a few comparisons. */
#define MAX_PROBES 8

static uint64_t
payload_hash(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15u ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        h = (h ^ word) * 0xBF58476D1CE4E5B9u;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, (size_t)n);
    h = (h ^ tail) * 0x94D049BB133111EBu;
    return h ^ (h >> 29);
}

static void
payloads_clear(Lane *self)
{
    if (self->payloads == NULL)
        return;
    for (Py_ssize_t i = 0; i <= self->payload_mask; i++)
        Py_CLEAR(self->payloads[i].bytes);
    self->payloads_used = 0;
}

/* The slot holding the payload (1), or a free slot for it (0), or none (-1: give up). */
static int
payload_slot(Lane *self, const unsigned char *payload, Py_ssize_t size, uint64_t hash,
             PayloadEntry **slot)
{
    for (Py_ssize_t probe = 0; probe < MAX_PROBES; probe++) {
        PayloadEntry *entry = &self->payloads[(hash + (uint64_t)probe) & self->payload_mask];
        if (entry->bytes == NULL) {
            *slot = entry;
            return 0;
        }
        if (entry->hash == hash && PyBytes_GET_SIZE(entry->bytes) == size &&
            memcmp(PyBytes_AS_STRING(entry->bytes), payload, (size_t)size) == 0) {
            *slot = entry;
            return 1;
        }
    }
    return -1;
}

/* Whether the payload is JSON as serde.loads reads it: 1 yes, 0 no, -1 error. */
static int
payload_ok(Lane *self, const unsigned char *payload, Py_ssize_t size)
{
    if (size == 2 && payload[0] == '{' && payload[1] == '}')
        return 1; /* half of all events; serde.loads("{}") is {} */
    if (utf8_valid(payload, size) && json_simple(payload, size))
        return 1;
    uint64_t hash = payload_hash(payload, size);
    PayloadEntry *slot = NULL;
    int known = payload_slot(self, payload, size, hash, &slot);
    if (known == 1)
        return 1;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)payload, size, NULL);
    PyObject *parsed = text == NULL ? NULL : PyObject_CallOneArg(self->loads, text);
    Py_XDECREF(text);
    if (parsed == NULL) {
        /* The Python lane's `except Exception`: any failure is "not fast". */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(parsed);
    /* loads ran Python code: look again rather than trust the slot found before. */
    if (self->payloads_used >= self->cache_size)
        payloads_clear(self);
    if (payload_slot(self, payload, size, hash, &slot) == 0) {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)payload, size);
        if (bytes == NULL)
            return -1;
        slot->hash = hash;
        slot->bytes = bytes;
        self->payloads_used++;
    }
    return 1;
}

/* --- Message methods ------------------------------------------------------------------------ */

/* Call the messages' METH_NOARGS methods directly when their type is a plain one
 * (confluent_kafka.Message is): what msg.key() does once the attribute lookup found
 * the method descriptor, without the lookup. Any other type: the generic call. */
static void
resolve_message_type(Lane *self, PyTypeObject *type)
{
    Py_CLEAR(self->msg_type);
    if (type->tp_getattro != PyObject_GenericGetAttr || type->tp_dictoffset != 0)
        return;
    PyCFunction found[N_METHODS];
    for (int m = 0; m < N_METHODS; m++) {
        PyObject *descr = PyObject_GetAttr((PyObject *)type, method_str[m]);
        if (descr == NULL) {
            PyErr_Clear();
            return;
        }
        int plain = Py_IS_TYPE(descr, &PyMethodDescr_Type) &&
                    (((PyMethodDescrObject *)descr)->d_method->ml_flags &
                     (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O | METH_FASTCALL |
                      METH_METHOD | METH_CLASS | METH_STATIC)) == METH_NOARGS &&
                    PyType_IsSubtype(type, PyDescr_TYPE(descr));
        found[m] = plain ? ((PyMethodDescrObject *)descr)->d_method->ml_meth : NULL;
        Py_DECREF(descr);
        if (!plain)
            return;
    }
    memcpy(self->msg_method, found, sizeof found);
    self->msg_type = (PyTypeObject *)Py_NewRef(type);
    self->msg_version_tag =
        type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG ? type->tp_version_tag : 0;
}

/* Whether the messages' methods resolved before still hold for ``type``. */
static inline int
message_type_current(Lane *self, PyTypeObject *type)
{
    return type == self->msg_type && self->msg_version_tag != 0 &&
           type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG &&
           type->tp_version_tag == self->msg_version_tag;
}

static inline PyObject *
call_method(Lane *self, PyObject *msg, int method)
{
    if (Py_TYPE(msg) == self->msg_type)
        return self->msg_method[method](msg, NULL);
    return PyObject_CallMethodNoArgs(msg, method_str[method]);
}

/* The Python int of a zigzag varint: its low 64 bits and the bits above them. */
static PyObject *
varint_long(uint64_t raw, unsigned int wide)
{
    if (!wide)
        return PyLong_FromLongLong(unzigzag(raw));
    /* n >> 1 == wide << 63 | raw >> 1; the sign is n's bit 0. */
    PyObject *high = PyLong_FromUnsignedLong(wide), *shift = PyLong_FromLong(63);
    PyObject *shifted = high && shift ? PyNumber_Lshift(high, shift) : NULL;
    PyObject *low = PyLong_FromUnsignedLongLong(raw >> 1);
    PyObject *half = shifted && low ? PyNumber_Or(shifted, low) : NULL;
    PyObject *value = half && raw & 1 ? PyNumber_Invert(half) : Py_XNewRef(half); /* -h - 1 */
    Py_XDECREF(high);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    Py_XDECREF(low);
    Py_XDECREF(half);
    return value;
}

/* consumers/fastlane.py's fold(state, key, value, offset): 1 folded, 0 not (nothing
 * changed), -1 error. ``state`` is exactly of state_type; key and value are bytes.
 * Integers within 64 bits are compared in C; wider ones (a 10-byte varint, a state
 * holding a big int) with Python's own operators, as the Python lane does. */
static int
fold_record(Lane *self, PyObject *state, PyObject *key, PyObject *value, PyObject *offset)
{
    const Py_ssize_t *at = self->slot_offset;
    PyObject *pending = SLOT(state, at[S_PENDING_EVENTS]);
    PyObject *applied = SLOT(state, at[S_EVENTS_APPLIED]);
    if (pending == NULL || !PyDict_CheckExact(pending) || PyDict_GET_SIZE(pending) != 0)
        return 0;
    if (SLOT(state, at[S_STATUS]) != self->running)
        return 0;
    if (applied == NULL || !PyLong_CheckExact(applied))
        return 0;
    int ok = PyObject_IsTrue(applied);
    if (ok <= 0)
        return ok;
    int64_t source_offset, record_offset, last_seq, stream_time;
    PyObject *source = SLOT(state, at[S_SOURCE_OFFSET]);
    if (source == NULL)
        return 0;
    if (as_int64(source, &source_offset) == 1 && as_int64(offset, &record_offset) == 1)
        ok = source_offset >= record_offset;
    else
        ok = PyErr_Occurred() ? -1 : PyObject_RichCompareBool(source, offset, Py_GE);
    if (ok != 0)
        return ok < 0 ? -1 : 0;

    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(value);
    const Py_ssize_t total = PyBytes_GET_SIZE(value);
    const Py_ssize_t prefix_size = PyBytes_GET_SIZE(self->prefix);
    if (total < prefix_size + UUID_TEXT || PyBytes_GET_SIZE(key) != UUID_TEXT ||
        memcmp(buf, PyBytes_AS_STRING(self->prefix), prefix_size) != 0 ||
        memcmp(buf + prefix_size, PyBytes_AS_STRING(key), UUID_TEXT) != 0)
        return 0;

    uint64_t raw, seq_raw, time_raw;
    unsigned int wide, seq_wide, time_wide;
    Py_ssize_t pos = read_varint(buf, prefix_size + UUID_TEXT, total, &seq_raw, &seq_wide);
    if (pos < 0)
        return 0;
    PyObject *last = SLOT(state, at[S_LAST_SEQ]);
    if (last == NULL)
        return 0;
    /* seq is then known to be last_seq + 1; seq_in_c says it is the int64 `seq`. */
    int64_t seq = 0;
    int seq_in_c = !seq_wide && as_int64(last, &last_seq) == 1 && last_seq != INT64_MAX;
    if (seq_in_c) {
        seq = unzigzag(seq_raw);
        if (seq != last_seq + 1)
            return 0;
    } else {
        if (PyErr_Occurred())
            return -1;
        PyObject *seq_obj = varint_long(seq_raw, seq_wide);
        PyObject *next = seq_obj ? PyNumber_Add(last, one) : NULL;
        ok = next ? PyObject_RichCompareBool(seq_obj, next, Py_EQ) : -1;
        Py_XDECREF(seq_obj);
        Py_XDECREF(next);
        if (ok <= 0)
            return ok;
    }
    pos = read_varint(buf, pos, total, &time_raw, &time_wide);
    if (pos < 0 || pos >= total)
        return 0;
    const unsigned char branch_byte = buf[pos];
    if (branch_byte & 1 || branch_byte >= 2 * self->n_branches)
        return 0;
    const Branch *branch = &self->branches[branch_byte >> 1];
    if (!branch->counted)
        return 0;
    pos = scan_fields(branch, buf, pos + 1, total);
    if (pos < 0)
        return 0;
    pos = read_varint(buf, pos, total, &raw, &wide);
    if (pos < 0 || wide || raw & 1 || (raw >> 1) != (uint64_t)(total - pos))
        return 0;
    ok = payload_ok(self, buf + pos, total - pos);
    if (ok <= 0)
        return ok;

    /* The state's fields once more: payload_ok may have run Python code. */
    PyObject *counter = SLOT(state, branch->counter_offset);
    applied = SLOT(state, at[S_EVENTS_APPLIED]);
    PyObject *digests = SLOT(state, at[S_DIGESTS]);
    PyObject *old_time = SLOT(state, at[S_STREAM_TIME]);
    if (counter == NULL || !PyLong_CheckExact(counter) || applied == NULL ||
        !PyLong_CheckExact(applied) || digests == NULL || old_time == NULL)
        return 0;
    Py_buffer view;
    if (PyObject_GetBuffer(digests, &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (view.itemsize != 8 || view.format == NULL || strcmp(view.format, "Q") != 0 ||
        view.len < 8) {
        PyBuffer_Release(&view);
        return 0;
    }
    const Py_ssize_t window = view.len / 8;
    /* Every new value first: a failure leaves the state as it was. */
    PyObject *new_seq = NULL, *new_time = NULL, *new_applied = NULL, *new_counter = NULL;
    Py_ssize_t slot = 0;
    int newer = 0;
    if (!time_wide && as_int64(old_time, &stream_time) == 1) {
        int64_t timestamp = unzigzag(time_raw);
        newer = timestamp > stream_time;
        if (newer && (new_time = PyLong_FromLongLong(timestamp)) == NULL)
            goto fail;
    } else {
        if (PyErr_Occurred() || (new_time = varint_long(time_raw, time_wide)) == NULL)
            goto fail;
        newer = PyObject_RichCompareBool(new_time, old_time, Py_GT);
        if (newer < 0)
            goto fail;
    }
    if (seq_in_c) {
        new_seq = PyLong_FromLongLong(seq);
        slot = (Py_ssize_t)(seq % window);
        if (slot < 0) /* Python's % floors */
            slot += window;
    } else {
        PyObject *size = PyLong_FromSsize_t(window);
        new_seq = size ? PyNumber_Add(last, one) : NULL; /* == seq, checked above */
        PyObject *index = new_seq ? PyNumber_Remainder(new_seq, size) : NULL;
        slot = index ? PyLong_AsSsize_t(index) : -1;
        Py_XDECREF(size);
        Py_XDECREF(index);
        if (slot == -1 && PyErr_Occurred())
            goto fail;
    }
    new_applied = PyNumber_Add(applied, one);
    new_counter = PyNumber_Add(counter, one);
    if (new_seq == NULL || new_applied == NULL || new_counter == NULL)
        goto fail;

    /* sequence._step's common case, then the service's set_source_offset; the digest
     * is digest_bytes(body): the body's length above its CRC-32, never 0. */
    if (newer)
        set_slot(state, at[S_STREAM_TIME], Py_NewRef(new_time));
    set_slot(state, at[S_LAST_SEQ], new_seq);
    const unsigned char *body = buf + self->header;
    Py_ssize_t remaining = total - self->header;
    uint64_t digest = ((uint64_t)((total - self->header) & 0xFFFFFFFF) << 32) |
                      crc32_ieee(body, (size_t)remaining);
    if (digest == 0)
        digest = 1;
    memcpy((char *)view.buf + 8 * slot, &digest, 8);
    PyBuffer_Release(&view);
    Py_XDECREF(new_time);
    set_slot(state, at[S_EVENTS_APPLIED], new_applied);
    set_slot(state, branch->counter_offset, new_counter);
    set_slot(state, at[S_SOURCE_OFFSET], Py_NewRef(offset));
    return 1;
fail:
    Py_XDECREF(new_seq);
    Py_XDECREF(new_time);
    Py_XDECREF(new_applied);
    Py_XDECREF(new_counter);
    PyBuffer_Release(&view);
    return -1;
}

/* The service's loop for one message: 1 folded (offsets and dirty set updated),
 * 0 not for the fast lane, -1 error. */
static int
fold_message(Lane *self, PyObject *msg, PyObject *runs_of, PyObject *dirty_of,
             PyObject *next_offsets, PyObject *unchecked)
{
    int result = -1;
    PyObject *partition = NULL, *runs = NULL, *key = NULL, *state = NULL, *value = NULL;
    PyObject *offset = NULL;
    PyObject *error = call_method(self, msg, M_ERROR);
    if (error == NULL)
        return -1;
    int is_error = error != Py_None;
    Py_DECREF(error);
    if (is_error)
        return 0;
    partition = call_method(self, msg, M_PARTITION);
    if (partition == NULL)
        goto done;
    runs = Py_XNewRef(PyDict_GetItemWithError(runs_of, partition));
    if (runs == NULL || !PyDict_Check(runs)) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    key = call_method(self, msg, M_KEY);
    if (key == NULL)
        goto done;
    if (!PyBytes_CheckExact(key)) { /* None: the general path names the missing key */
        result = 0;
        goto done;
    }
    state = Py_XNewRef(PyDict_GetItemWithError(runs, key));
    if (state == NULL || !Py_IS_TYPE(state, self->state_type)) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    value = call_method(self, msg, M_VALUE);
    if (value == NULL)
        goto done;
    offset = call_method(self, msg, M_OFFSET);
    if (offset == NULL)
        goto done;
    if (!PyBytes_CheckExact(value) || !PyLong_CheckExact(offset)) {
        result = 0;
        goto done;
    }
    int held;
    if (PyAnySet_Check(unchecked))
        held = PySet_GET_SIZE(unchecked) ? PySet_Contains(unchecked, key) : 0;
    else
        held = PySequence_Contains(unchecked, key);
    if (held != 0) {
        result = held < 0 ? -1 : 0;
        goto done;
    }
    result = fold_record(self, state, key, value, offset);
    if (result <= 0)
        goto done;
    result = -1;
    PyObject *next = PyNumber_Add(offset, one);
    if (next == NULL)
        goto done;
    int stored = PyDict_SetItem(next_offsets, partition, next);
    Py_DECREF(next);
    if (stored < 0)
        goto done;
    PyObject *dirty = Py_XNewRef(PyDict_GetItemWithError(dirty_of, partition));
    if (dirty == NULL && PyErr_Occurred())
        goto done;
    if (dirty == NULL || dirty == Py_None) {
        Py_XDECREF(dirty);
        dirty = PySet_New(NULL);
        if (dirty == NULL)
            goto done;
        if (PyDict_SetItem(dirty_of, partition, dirty) < 0) {
            Py_DECREF(dirty);
            goto done;
        }
    }
    if (PySet_Check(dirty)) {
        stored = PySet_Add(dirty, key);
    } else {
        PyObject *added = PyObject_CallMethodOneArg(dirty, str_add, key);
        stored = added == NULL ? -1 : 0;
        Py_XDECREF(added);
    }
    Py_DECREF(dirty);
    if (stored < 0)
        goto done;
    result = 1;
done:
    Py_XDECREF(partition);
    Py_XDECREF(runs);
    Py_XDECREF(key);
    Py_XDECREF(state);
    Py_XDECREF(value);
    Py_XDECREF(offset);
    return result;
}

/* --- the Lane type ------------------------------------------------------------------------- */

PyDoc_STRVAR(fold_batch_doc,
"fold_batch(msgs, start, runs_of, dirty_of, next_offsets, unchecked) -> (stop, folded)\n\n"
"Fold msgs[start:] in order while each is for the fast lane; stop at the first that is\n"
"not and return its index (len(msgs) when none) and how many were folded.");

static PyObject *
lane_fold_batch(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "fold_batch() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *msgs = args[0], *runs_of = args[2], *dirty_of = args[3], *next_offsets = args[4];
    if (!PyList_Check(msgs) || !PyDict_Check(runs_of) || !PyDict_Check(dirty_of) ||
        !PyDict_Check(next_offsets)) {
        PyErr_SetString(PyExc_TypeError,
                        "fold_batch(msgs: list, start: int, runs_of: dict, dirty_of: dict, "
                        "next_offsets: dict, unchecked: set)");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (index < 0) {
        PyErr_SetString(PyExc_ValueError, "fold_batch: start must not be negative");
        return NULL;
    }
    Py_ssize_t folded = 0;
    /* A Lane the garbage collector cleared (or never initialised) folds nothing. */
    int layout = self->prefix == NULL || self->payloads == NULL ? 0 : layout_unchanged(self);
    if (layout < 0)
        return NULL;
    if (layout && index < PyList_GET_SIZE(msgs)) {
        PyTypeObject *msg_type = Py_TYPE(PyList_GET_ITEM(msgs, index));
        if (!message_type_current(self, msg_type))
            resolve_message_type(self, msg_type);
    }
    if (layout) {
        for (; index < PyList_GET_SIZE(msgs); index++) {
            PyObject *msg = Py_NewRef(PyList_GET_ITEM(msgs, index));
            int got = fold_message(self, msg, runs_of, dirty_of, next_offsets, args[5]);
            Py_DECREF(msg);
            if (got < 0)
                return NULL;
            if (got == 0)
                break;
            folded++;
        }
    }
    if (index > PyList_GET_SIZE(msgs))
        index = PyList_GET_SIZE(msgs);
    return Py_BuildValue("(nn)", index, folded);
}

static int
lane_init(Lane *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"prefix", "header", "branches", "running", "loads",
                               "state_type", "cache_size", NULL};
    PyObject *prefix, *branches, *running, *loads, *state_type;
    Py_ssize_t header, cache_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SnO!OOO!n:Lane", keywords, &prefix, &header,
                                     &PyList_Type, &branches, &running, &loads, &PyType_Type,
                                     &state_type, &cache_size))
        return -1;
    if (self->state_type != NULL) {
        PyErr_SetString(PyExc_TypeError, "Lane is initialised once");
        return -1;
    }
    if (header < 0 || header > PyBytes_GET_SIZE(prefix) || cache_size < 1) {
        PyErr_SetString(PyExc_ValueError, "Lane: header must be within prefix, cache_size >= 1");
        return -1;
    }
    Py_ssize_t n_branches = PyList_GET_SIZE(branches);
    if (n_branches > MAX_BRANCHES) {
        PyErr_Format(PyExc_ValueError, "Lane: at most %d branches", MAX_BRANCHES);
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)state_type;
    self->state_type = (PyTypeObject *)Py_NewRef(state_type);
    self->prefix = Py_NewRef(prefix);
    self->header = header;
    self->running = Py_NewRef(running);
    self->loads = Py_NewRef(loads);
    self->cache_size = cache_size;
    Py_ssize_t capacity = 16;
    while (capacity < 2 * cache_size) {
        if (capacity > PY_SSIZE_T_MAX / 4) {
            PyErr_SetString(PyExc_ValueError, "Lane: cache_size too large");
            return -1;
        }
        capacity *= 2;
    }
    self->payloads = PyMem_Calloc((size_t)capacity, sizeof(PayloadEntry));
    if (self->payloads == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->payload_mask = capacity - 1;
    for (int s = 0; s < N_SLOTS; s++) {
        PyObject *name = PyUnicode_InternFromString(slot_names[s]);
        if (name == NULL)
            return -1;
        self->slot_descr[s] = object_slot(type, name, &self->slot_offset[s]);
        Py_DECREF(name);
        if (self->slot_descr[s] == NULL)
            return -1;
    }
    for (Py_ssize_t b = 0; b < n_branches; b++) {
        PyObject *item = PyList_GET_ITEM(branches, b);
        Branch *branch = &self->branches[b];
        self->n_branches = (int)b + 1;
        if (item == Py_None)
            continue;
        PyObject *counter, *fields;
        if (!PyArg_ParseTuple(item, "US:branch", &counter, &fields))
            return -1;
        Py_ssize_t n_fields = PyBytes_GET_SIZE(fields);
        if (n_fields > MAX_FIELDS) {
            PyErr_Format(PyExc_ValueError, "Lane: branch %zd has over %d fields", b, MAX_FIELDS);
            return -1;
        }
        for (Py_ssize_t f = 0; f < n_fields; f++) {
            unsigned char code = (unsigned char)PyBytes_AS_STRING(fields)[f];
            if (code > F_STRING_ARRAY) {
                PyErr_Format(PyExc_ValueError, "Lane: branch %zd: unknown field code %d", b, code);
                return -1;
            }
            branch->fields[f] = code;
        }
        branch->n_fields = (int)n_fields;
        branch->counter_name = Py_NewRef(counter);
        branch->counter_descr = object_slot(type, counter, &branch->counter_offset);
        if (branch->counter_descr == NULL)
            return -1;
        branch->counted = 1;
    }
    self->n_branches = (int)n_branches;
    self->version_tag = 0;
    return layout_unchanged(self) < 0 ? -1 : 0;
}

static int
lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->prefix);
    Py_VISIT(self->running);
    Py_VISIT(self->loads);
    Py_VISIT(self->state_type);
    Py_VISIT(self->msg_type);
    for (int s = 0; s < N_SLOTS; s++)
        Py_VISIT(self->slot_descr[s]);
    for (int b = 0; b < self->n_branches; b++) {
        Py_VISIT(self->branches[b].counter_name);
        Py_VISIT(self->branches[b].counter_descr);
    }
    return 0;
}

static int
lane_clear(Lane *self)
{
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->running);
    Py_CLEAR(self->loads);
    payloads_clear(self);
    Py_CLEAR(self->msg_type);
    for (int s = 0; s < N_SLOTS; s++)
        Py_CLEAR(self->slot_descr[s]);
    for (int b = 0; b < MAX_BRANCHES; b++) {
        Py_CLEAR(self->branches[b].counter_name);
        Py_CLEAR(self->branches[b].counter_descr);
        self->branches[b].counted = 0;
    }
    self->n_branches = 0;
    /* state_type stays set (cleared in dealloc) so that a cleared Lane folds nothing. */
    return 0;
}

static void
lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    lane_clear(self);
    Py_CLEAR(self->state_type);
    PyMem_Free(self->payloads);
    self->payloads = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef lane_methods[] = {
    {"fold_batch", (PyCFunction)(void (*)(void))lane_fold_batch, METH_FASTCALL, fold_batch_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(lane_doc,
"Lane(prefix, header, branches, running, loads, state_type, cache_size)\n\n"
"The fast lane of consumers/fastlane.py in C; build it with consumers.fastlane.batch_lane().");

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "consumers._fastlane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = lane_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lane_init,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_methods = lane_methods,
};

/* --- module -------------------------------------------------------------------------------- */

static PyObject *
module_utf8_valid(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "utf8_valid(bytes)");
        return NULL;
    }
    return PyBool_FromLong(
        utf8_valid((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)));
}

static PyObject *
module_crc32(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "crc32(bytes)");
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        crc32_ieee((const unsigned char *)PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)));
}

static PyObject *
module_json_simple(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "json_simple(bytes)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    return PyBool_FromLong(utf8_valid(p, n) && json_simple(p, n));
}

static PyMethodDef module_methods[] = {
    {"json_simple", module_json_simple, METH_O,
     "json_simple(data) -> bool: True only if serde.loads(data.decode()) certainly succeeds."},
    {"crc32", module_crc32, METH_O,
     "crc32(data) -> int: the lane's CRC-32, equal to zlib.crc32(data)."},
    {"utf8_valid", module_utf8_valid, METH_O,
     "utf8_valid(data) -> bool: whether data.decode() would succeed (the lane's own check)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "consumers._fastlane",
    .m_doc = "The fold's fast lane in C (see consumers/fastlane.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastlane(void)
{
    if (PyType_Ready(&LaneType) < 0)
        return NULL;
    crc_init();
    for (int m = 0; m < N_METHODS; m++)
        if ((method_str[m] = PyUnicode_InternFromString(method_names[m])) == NULL)
            return NULL;
    str_add = PyUnicode_InternFromString("add");
    one = PyLong_FromLong(1);
    if (!str_add || !one)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
