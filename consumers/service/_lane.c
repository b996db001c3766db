/* The batch lane's decoder in C: a thin accelerator for the bytes of the common record.
 *
 * consumers/service/lane.py builds a Decoder from the one Avro layout of the Event schema
 * (the pinned single-object prefix, per union branch of `kind` its tag and field reads)
 * and lane.canonical_payload (serde.loads of a text that is canonical JSON).
 * `Decoder.read(msgs)` returns, per consumed message, either the plain values of a record
 * that the general decoder certainly reads the same way:
 *
 *     (partition, key, offset, seq, timestamp, tag, digest)
 *
 * or None: an error, a record of another framing, version or kind, a value outside what
 * is checked below, any doubt. It folds nothing and knows no rule: the service hands the
 * values to consumers.next_event.fold_next (the one next-event rule) and takes the general
 * path (decode with the codec, apply_event) for every None. Refusing is always safe; the
 * differential tests check that every record read here decodes with schemas.codec to the
 * same values (tests/consumers/service/test_lane.py).
 *
 * What "certainly" covers: single-object framing with the pinned fingerprint, or a
 * Confluent header the service learned names that version (learn); run_id
 * text equal to the record key and a UUID as str(uuid.UUID) writes it; every varint
 * within 64 bits (seq, timestamp, lengths, counts, kind fields); seq >= 1 (so within
 * 1 ..= 2**63 - 1, the codec's range); a kind of COUNTED_KINDS whose fields read as
 * schemas.avro_binary reads them (UTF-8 strings, u32 in range, u64 not negative); the
 * payload string is the rest of the record (no trailing bytes) and is JSON as
 * serde.loads reads it (which refuses nesting deeper than serde_json's limit). `digest` is
 * consumers.digest.content_digest of the event: digest_bytes of what follows the seq
 * (timestamp, kind, payload), read only when those bytes are the canonical form that
 * function digests: minimal varints, string arrays in the writer's one block, a payload
 * text that is its own serde.canonical_dumps (json_simple below, else the Python check
 * the decoder is given as `loads`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Field codes of a kind's record, as consumers/service/lane.py's FIELD_READS lists them. */
enum { F_STRING = 0, F_U32 = 1, F_U64 = 2, F_OPTIONAL_STRING = 3, F_STRING_ARRAY = 4 };

#define MAX_FIELDS 32
#define MAX_BRANCHES 63 /* branch b is the single byte 2b < 0x80 */
#define UUID_TEXT 36
#define CONFLUENT_HEADER 5 /* 00 + a 4-byte schema id */
#define MAX_CONFLUENT 8

typedef struct {
    PyObject *tag;                    /* str, or NULL: not a counted kind, never read here */
    int n_fields;
    unsigned char fields[MAX_FIELDS];
} Branch;

/* The Message methods the decoder calls. */
enum { M_ERROR, M_PARTITION, M_KEY, M_VALUE, M_OFFSET, N_METHODS };

typedef struct {
    uint64_t hash;
    PyObject *bytes; /* NULL: free */
} PayloadEntry;

typedef struct {
    PyObject_HEAD
    PyObject *prefix;        /* bytes: magic + fingerprint + zigzag(36) */
    unsigned char confluent[MAX_CONFLUENT][CONFLUENT_HEADER]; /* learned Confluent headers */
    int n_confluent;
    Py_ssize_t header;       /* the single-object header's size */
    PyObject *loads;         /* lane.canonical_payload: serde.loads of a canonical text */
    int n_branches;
    Branch branches[MAX_BRANCHES];
    PayloadEntry *payloads;  /* payloads already parsed by loads: open addressing */
    Py_ssize_t payload_mask; /* table size - 1 (a power of two, twice cache_size at least) */
    Py_ssize_t payloads_used;
    Py_ssize_t cache_size;
    PyTypeObject *msg_type;  /* the messages' type whose methods are called directly */
    unsigned int msg_version_tag;
    PyCFunction msg_method[N_METHODS];
} Decoder;

static const char *const method_names[N_METHODS] = {"error", "partition", "key", "value", "offset"};
static PyObject *method_str[N_METHODS];

/* --- reading bytes as schemas/avro_binary reads them --------------------------------------- */

/* An Avro long's varint: at most 10 bytes, the tenth below 0x80. Returns the position
 * after it, or -1 (past the end, over 10 bytes, or not minimal: a last byte 0 after
 * others, which the general reader accepts but the writer never writes, so the bytes
 * would not be the canonical body the content digest is defined on). *raw is the zigzag value's low 64 bits;
 * *wide holds its bits 64..69, 0 when it has none. avro_binary.read_long refuses a varint
 * with *wide set (past 64 bits), so every caller here refuses it too. */
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
            if (byte == 0 && i > 0)
                return -1;
            *raw = n;
            *wide = 0;
            return pos;
        }
    }
    if (pos >= size)
        return -1;
    unsigned char byte = buf[pos++];
    if (byte >= 0x80 || byte == 0)
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

/* Whether 36 bytes are a UUID as str(uuid.UUID) writes it: 8-4-4-4-12 lower-case hex
 * digits. The codec also reads upper case (and then the key, compared with str(run_id),
 * does not match): only the canonical text can be the key of a run the lane folds. */
static unsigned char uuid_class[256]; /* 1: a lower-case hex digit, 2: '-', 0: anything else */

static void
uuid_init(void)
{
    for (int c = '0'; c <= '9'; c++)
        uuid_class[c] = 1;
    for (int c = 'a'; c <= 'f'; c++)
        uuid_class[c] = 1;
    uuid_class['-'] = 2;
}

static inline int
uuid_canonical(const unsigned char *s)
{
    /* Branch-free over the 36 bytes: every record the lane reads pays for this. */
    static const unsigned char want[UUID_TEXT] = {
        1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1,
        2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    };
    unsigned int wrong = 0;
    for (int i = 0; i < UUID_TEXT; i++)
        wrong |= uuid_class[s[i]] ^ want[i];
    return wrong == 0;
}

/* An Avro string as avro_binary.read_string reads it; -1 where it would raise. */
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

/* One kind's fields as consumers/service/lane.py's compiled scanner checks them. */
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
        case F_U64: /* 0 <= v, within 64 bits (the sign is bit 0) */
            pos = read_varint(buf, pos, size, &raw, &wide);
            if (pos >= 0 && (wide || raw & 1))
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
        case F_STRING_ARRAY:
            /* As avro_binary.write_string_array writes it (the canonical body): one block
             * of a positive count, then 0; or 0 alone. Other blockings: the general path. */
            pos = read_varint(buf, pos, size, &raw, &wide);
            if (pos < 0 || wide || raw & 1)
                return -1;
            if (raw == 0)
                break;
            /* A count beyond the bytes left cannot be followed by that many strings. */
            if ((raw >> 1) > (uint64_t)(size - pos))
                return -1;
            for (uint64_t item = 0; item < (raw >> 1); item++) {
                pos = scan_string(buf, pos, size);
                if (pos < 0)
                    return -1;
            }
            if (pos >= size || buf[pos] != 0)
                return -1;
            pos++;
            break;
        default:
            return -1;
        }
    }
    return pos;
}

/* --- payload JSON that is certainly valid ---------------------------------------------------- */

/* Most payloads are small objects of strings and integers, and many are seen once
 * (token counts differ), so the cache below misses often. json_simple recognises a
 * subset of JSON that serde.loads certainly accepts *and* that is already canonical
 * (serde.canonical_dumps of what it reads is the text itself, so the digest of the
 * record's body is consumers.digest.content_digest of its event), and says "not sure"
 * for anything else, which then goes to the Python check the decoder was given:
 *   - no whitespace outside strings (serde and runfold write compact JSON);
 *   - strings: no control characters, escapes only \" \\ \b \f \n \r \t (no \u:
 *     serde.loads checks those for lone surrogates; no \/, which the writer never
 *     writes); the bytes are valid UTF-8 (checked by the caller);
 *   - object keys: no escapes, each after the one before in byte order (UTF-8 byte
 *     order is code point order, the canonical key order), so no key twice;
 *   - numbers: -?(0|[1-9][0-9]{0,17}) but not -0 (an integer within i64, written as
 *     the writer writes it); floats are left to the Python check (shortest round-trip
 *     digits are not proved here);
 *   - true, false, null; objects and arrays nested at most MAX_JSON_DEPTH deep
 *     (Python's C scanner recurses per level).
 * Tests check json_simple(text) implies serde.canonical_dumps(serde.loads(text)) == text
 * on generated texts. */
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
            if (i + 1 >= n || !strchr("\"\\bfnrt", p[i + 1]) || p[i + 1] == '\0')
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
        if (i > *at) /* -0: a float to serde.loads, written -0.0 */
            return 0;
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
    if (i < n && (p[i] == '.' || p[i] == 'e' || p[i] == 'E'))
        return 0; /* a float: its canonical digits are the Python check's to prove */
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
    const unsigned char *last_key = NULL;
    Py_ssize_t last_size = 0;
    for (;;) {
        if (close == '}') {
            Py_ssize_t start = i;
            if (i >= n || p[i] != '"' || !json_string(p, n, &i) || i >= n || p[i] != ':')
                return 0;
            /* The key's bytes between the quotes: no escape, after the previous key. */
            const unsigned char *key = p + start + 1;
            Py_ssize_t size = i - start - 2;
            if (memchr(key, '\\', (size_t)size) != NULL)
                return 0;
            if (last_key != NULL) {
                Py_ssize_t common = size < last_size ? size : last_size;
                int order = memcmp(last_key, key, (size_t)common);
                if (order > 0 || (order == 0 && last_size >= size))
                    return 0;
            }
            last_key = key;
            last_size = size;
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
payloads_clear(Decoder *self)
{
    if (self->payloads == NULL)
        return;
    for (Py_ssize_t i = 0; i <= self->payload_mask; i++)
        Py_CLEAR(self->payloads[i].bytes);
    self->payloads_used = 0;
}

/* The slot holding the payload (1), or a free slot for it (0), or none (-1: give up). */
static int
payload_slot(Decoder *self, const unsigned char *payload, Py_ssize_t size, uint64_t hash,
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
payload_ok(Decoder *self, const unsigned char *payload, Py_ssize_t size)
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
resolve_message_type(Decoder *self, PyTypeObject *type)
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
message_type_current(Decoder *self, PyTypeObject *type)
{
    return type == self->msg_type && self->msg_version_tag != 0 &&
           type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG &&
           type->tp_version_tag == self->msg_version_tag;
}

static inline PyObject *
call_method(Decoder *self, PyObject *msg, int method)
{
    if (Py_TYPE(msg) == self->msg_type)
        return self->msg_method[method](msg, NULL);
    return PyObject_CallMethodNoArgs(msg, method_str[method]);
}

/* --- one record ------------------------------------------------------------------------------ */

/* The values of one record's bytes: a new tuple (seq, timestamp, tag, digest), Py_None
 * (new reference) when it is not certainly the common case, NULL on error. */
static PyObject *
read_record(Decoder *self, PyObject *key, PyObject *value)
{
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(value);
    const Py_ssize_t total = PyBytes_GET_SIZE(value);
    /* The framing: single-object with the pinned fingerprint, or a Confluent header the
     * service learned is the same Event version (Decoder.learn). The body is the same. */
    Py_ssize_t header = -1;
    if (total > CONFLUENT_HEADER && buf[0] == 0) {
        for (int c = 0; c < self->n_confluent; c++)
            if (memcmp(buf, self->confluent[c], CONFLUENT_HEADER) == 0)
                header = CONFLUENT_HEADER;
    } else if (total > self->header &&
               memcmp(buf, PyBytes_AS_STRING(self->prefix), self->header) == 0) {
        header = self->header;
    }
    if (header < 0)
        Py_RETURN_NONE;
    /* Then the run_id string: its length byte (the prefix's last byte) and the key. */
    const Py_ssize_t prefix_size = header + 1;
    if (total < prefix_size + UUID_TEXT || PyBytes_GET_SIZE(key) != UUID_TEXT ||
        buf[header] != (unsigned char)PyBytes_AS_STRING(self->prefix)[self->header] ||
        memcmp(buf + prefix_size, PyBytes_AS_STRING(key), UUID_TEXT) != 0 ||
        !uuid_canonical(buf + prefix_size))
        Py_RETURN_NONE;
    uint64_t raw, seq_raw, time_raw;
    unsigned int wide, seq_wide, time_wide;
    Py_ssize_t pos = read_varint(buf, prefix_size + UUID_TEXT, total, &seq_raw, &seq_wide);
    if (pos < 0 || seq_wide)
        Py_RETURN_NONE;
    const int64_t seq = unzigzag(seq_raw);
    if (seq < 1)
        Py_RETURN_NONE;
    const Py_ssize_t content_start = pos;
    pos = read_varint(buf, pos, total, &time_raw, &time_wide);
    if (pos < 0 || time_wide || pos >= total)
        Py_RETURN_NONE;
    const unsigned char branch_byte = buf[pos];
    if (branch_byte & 1 || branch_byte >= 2 * self->n_branches)
        Py_RETURN_NONE;
    const Branch *branch = &self->branches[branch_byte >> 1];
    if (branch->tag == NULL)
        Py_RETURN_NONE;
    pos = scan_fields(branch, buf, pos + 1, total);
    if (pos < 0)
        Py_RETURN_NONE;
    pos = read_varint(buf, pos, total, &raw, &wide);
    if (pos < 0 || wide || raw & 1 || (raw >> 1) != (uint64_t)(total - pos))
        Py_RETURN_NONE;
    int ok = payload_ok(self, buf + pos, total - pos);
    if (ok < 0)
        return NULL;
    if (ok == 0)
        Py_RETURN_NONE;
    /* consumers.digest.content_digest: digest_bytes of the content (what follows the
     * seq: timestamp, kind, payload), canonical as proved above. */
    const Py_ssize_t content = total - content_start;
    uint64_t digest = ((uint64_t)(content & 0xFFFFFFFF) << 32) |
                      crc32_ieee(buf + content_start, (size_t)content);
    if (digest == 0)
        digest = 1;
    return Py_BuildValue("(LLOK)", (long long)seq, (long long)unzigzag(time_raw), branch->tag,
                         (unsigned long long)digest);
}

/* One message: a new tuple (partition, key, offset, seq, timestamp, tag, digest), a new
 * reference to None, or NULL on error. */
static PyObject *
read_message(Decoder *self, PyObject *msg)
{
    PyObject *result = NULL, *partition = NULL, *key = NULL, *value = NULL, *offset = NULL;
    PyObject *values = NULL;
    PyObject *error = call_method(self, msg, M_ERROR);
    if (error == NULL)
        return NULL;
    int is_error = error != Py_None;
    Py_DECREF(error);
    if (is_error)
        Py_RETURN_NONE;
    if ((partition = call_method(self, msg, M_PARTITION)) == NULL ||
        (key = call_method(self, msg, M_KEY)) == NULL ||
        (value = call_method(self, msg, M_VALUE)) == NULL ||
        (offset = call_method(self, msg, M_OFFSET)) == NULL)
        goto done;
    if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) || !PyLong_CheckExact(offset) ||
        !PyLong_CheckExact(partition)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    values = read_record(self, key, value);
    if (values == NULL || values == Py_None) {
        result = values;
        values = NULL;
        goto done;
    }
    result = PyTuple_Pack(7, partition, key, offset, PyTuple_GET_ITEM(values, 0),
                          PyTuple_GET_ITEM(values, 1), PyTuple_GET_ITEM(values, 2),
                          PyTuple_GET_ITEM(values, 3));
done:
    Py_XDECREF(partition);
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(offset);
    Py_XDECREF(values);
    return result;
}

/* --- the Decoder type ------------------------------------------------------------------------ */

PyDoc_STRVAR(read_doc,
"read(msgs) -> list\n\n"
"Per message of the list msgs: (partition, key, offset, seq, timestamp, tag, digest) when\n"
"it is certainly the common record, else None (see the module docstring).");

static PyObject *
decoder_read(Decoder *self, PyObject *msgs)
{
    if (!PyList_Check(msgs)) {
        PyErr_SetString(PyExc_TypeError, "read(msgs: list)");
        return NULL;
    }
    if (self->prefix == NULL || self->payloads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is not initialised");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(msgs);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t index = 0; index < count && index < PyList_GET_SIZE(msgs); index++) {
        PyObject *msg = Py_NewRef(PyList_GET_ITEM(msgs, index));
        if (!message_type_current(self, Py_TYPE(msg)))
            resolve_message_type(self, Py_TYPE(msg));
        PyObject *item = read_message(self, msg);
        Py_DECREF(msg);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, index, item);
    }
    for (Py_ssize_t index = PyList_GET_SIZE(msgs); index < count; index++)
        PyList_SET_ITEM(out, index, Py_NewRef(Py_None)); /* the list shrank under us */
    return out;
}

PyDoc_STRVAR(read_value_doc,
"read_value(key, value) -> (seq, timestamp, tag, digest) | None\n\n"
"The values of one record's bytes, or None (what read() does per message).");

static PyObject *
decoder_read_value(Decoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_value(key: bytes, value: bytes)");
        return NULL;
    }
    if (self->prefix == NULL || self->payloads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is not initialised");
        return NULL;
    }
    return read_record(self, args[0], args[1]);
}

PyDoc_STRVAR(learn_doc,
"learn(header) -> bool\n\n"
"Read records with this 5-byte Confluent header (00 + schema id) too: the caller vouches\n"
"that the id names the pinned Event version. False when it holds no more of them.");

static PyObject *
decoder_learn(Decoder *self, PyObject *header)
{
    if (!PyBytes_Check(header) || PyBytes_GET_SIZE(header) != CONFLUENT_HEADER ||
        PyBytes_AS_STRING(header)[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "learn(header): 5 bytes, 00 and a schema id");
        return NULL;
    }
    for (int c = 0; c < self->n_confluent; c++)
        if (memcmp(self->confluent[c], PyBytes_AS_STRING(header), CONFLUENT_HEADER) == 0)
            Py_RETURN_TRUE;
    if (self->n_confluent == MAX_CONFLUENT)
        Py_RETURN_FALSE;
    memcpy(self->confluent[self->n_confluent++], PyBytes_AS_STRING(header), CONFLUENT_HEADER);
    Py_RETURN_TRUE;
}

static int
decoder_init(Decoder *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"prefix", "header", "branches", "loads", "cache_size", NULL};
    PyObject *prefix, *branches, *loads;
    Py_ssize_t header, cache_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SnO!On:Decoder", keywords, &prefix, &header,
                                     &PyList_Type, &branches, &loads, &cache_size))
        return -1;
    if (self->prefix != NULL) {
        PyErr_SetString(PyExc_TypeError, "Decoder is initialised once");
        return -1;
    }
    if (header < 0 || header > PyBytes_GET_SIZE(prefix) || cache_size < 1) {
        PyErr_SetString(PyExc_ValueError, "Decoder: header must be within prefix, cache_size >= 1");
        return -1;
    }
    Py_ssize_t n_branches = PyList_GET_SIZE(branches);
    if (n_branches > MAX_BRANCHES) {
        PyErr_Format(PyExc_ValueError, "Decoder: at most %d branches", MAX_BRANCHES);
        return -1;
    }
    Py_ssize_t capacity = 16;
    while (capacity < 2 * cache_size) {
        if (capacity > PY_SSIZE_T_MAX / 4) {
            PyErr_SetString(PyExc_ValueError, "Decoder: cache_size too large");
            return -1;
        }
        capacity *= 2;
    }
    for (Py_ssize_t b = 0; b < n_branches; b++) {
        PyObject *item = PyList_GET_ITEM(branches, b);
        Branch *branch = &self->branches[b];
        if (item == Py_None)
            continue;
        PyObject *tag, *fields;
        if (!PyArg_ParseTuple(item, "US:branch", &tag, &fields))
            return -1;
        Py_ssize_t n_fields = PyBytes_GET_SIZE(fields);
        if (n_fields > MAX_FIELDS) {
            PyErr_Format(PyExc_ValueError, "Decoder: branch %zd has over %d fields", b,
                         MAX_FIELDS);
            return -1;
        }
        for (Py_ssize_t f = 0; f < n_fields; f++) {
            unsigned char code = (unsigned char)PyBytes_AS_STRING(fields)[f];
            if (code > F_STRING_ARRAY) {
                PyErr_Format(PyExc_ValueError, "Decoder: branch %zd: unknown field code %d", b,
                             code);
                return -1;
            }
            branch->fields[f] = code;
        }
        branch->n_fields = (int)n_fields;
        Py_XSETREF(branch->tag, Py_NewRef(tag));
    }
    self->payloads = PyMem_Calloc((size_t)capacity, sizeof(PayloadEntry));
    if (self->payloads == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->payload_mask = capacity - 1;
    self->n_branches = (int)n_branches;
    self->header = header;
    self->cache_size = cache_size;
    self->loads = Py_NewRef(loads);
    self->prefix = Py_NewRef(prefix);
    return 0;
}

static int
decoder_traverse(Decoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->prefix);
    Py_VISIT(self->loads);
    Py_VISIT(self->msg_type);
    for (int b = 0; b < MAX_BRANCHES; b++)
        Py_VISIT(self->branches[b].tag);
    return 0;
}

static int
decoder_clear(Decoder *self)
{
    Py_CLEAR(self->loads);
    payloads_clear(self);
    Py_CLEAR(self->msg_type);
    for (int b = 0; b < MAX_BRANCHES; b++)
        Py_CLEAR(self->branches[b].tag);
    self->n_branches = 0;
    /* prefix stays set (cleared in dealloc) so that a cleared Decoder is not re-initialised;
     * with no branches it reads nothing. */
    return 0;
}

static void
decoder_dealloc(Decoder *self)
{
    PyObject_GC_UnTrack(self);
    decoder_clear(self);
    Py_CLEAR(self->prefix);
    PyMem_Free(self->payloads);
    self->payloads = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef decoder_methods[] = {
    {"read", (PyCFunction)decoder_read, METH_O, read_doc},
    {"read_value", (PyCFunction)(void (*)(void))decoder_read_value, METH_FASTCALL,
     read_value_doc},
    {"learn", (PyCFunction)decoder_learn, METH_O, learn_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(decoder_doc,
"Decoder(prefix, header, branches, loads, cache_size)\n\n"
"The batch lane's decoder; build it with consumers.service.lane.decoder().");

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "consumers.service._lane.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = decoder_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)decoder_init,
    .tp_dealloc = (destructor)decoder_dealloc,
    .tp_traverse = (traverseproc)decoder_traverse,
    .tp_clear = (inquiry)decoder_clear,
    .tp_methods = decoder_methods,
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
    .m_name = "consumers.service._lane",
    .m_doc = "The batch lane's decoder in C (see consumers/service/lane.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    crc_init();
    uuid_init();
    for (int m = 0; m < N_METHODS; m++)
        if ((method_str[m] = PyUnicode_InternFromString(method_names[m])) == NULL)
            return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
