/* libcore: see libcore.h for the definitions every function here implements. */
#define _DEFAULT_SOURCE /* madvise */
#include "libcore.h"

#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define TOKEN_SEED 0xA4093822299F31D0ULL
#define SHINGLE_SEED 0x243F6A8885A308D3ULL
#define BAND_SEED 0x13198A2E03707344ULL
#define EXACT_SEED2 0x9E3779B97F4A7C15ULL

#define P1 11400714785074694791ULL
#define P2 14029467366897019727ULL
#define P3 1609587929392839161ULL
#define P4 9650029242287828579ULL
#define P5 2870177450012600261ULL

/* The MinHash inner loop is compiled for several instruction sets and the best one is picked at load time
 * (GCC's function multiversioning, an ifunc: glibc only, musl has none). Elsewhere it is plain C the compiler
 * vectorises as it can. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && __GNUC__ >= 6
#define LC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LC_CLONES
#endif

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t read64(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline uint64_t read32(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input) {
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

uint64_t lc_xxh64(const uint8_t *p, size_t len, uint64_t seed) {
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = xxh_round(v1, read64(p));
            v2 = xxh_round(v2, read64(p + 8));
            v3 = xxh_round(v3, read64(p + 16));
            v4 = xxh_round(v4, read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= xxh_round(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}

/* 0: separator; otherwise the byte as it goes into a token (ASCII letters lowercased; digits, '_' and bytes >= 0x80
 * as they are). A constant, so threads share it without any initialisation race. */
static const uint8_t word_byte[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x5f,
    0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
    0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f,
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
    0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
    0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};

/* Token hashes of text into *tokens (grown as needed); returns the count, or -1 when out of memory. One pass:
 * each byte is lowercased and packed into a 64-bit word, and each full word is mixed into the token's state. */
static int64_t token_hashes(const uint8_t *text, size_t len, uint64_t **tokens, size_t *tokens_cap) {
    int64_t n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && !word_byte[text[i]]) i++;
        if (i >= len) break;
        size_t start = i;
        uint64_t state = TOKEN_SEED, word = 0;
        unsigned shift = 0;
        uint8_t c;
        while (i < len && (c = word_byte[text[i]]) != 0) {
            word |= (uint64_t)c << shift;
            shift += 8;
            i++;
            if (shift == 64) {
                state = fmix64(state ^ word);
                word = 0;
                shift = 0;
            }
        }
        if ((size_t)n >= *tokens_cap) {
            size_t cap = *tokens_cap ? *tokens_cap * 2 : 256;
            uint64_t *grown = realloc(*tokens, cap * sizeof(uint64_t));
            if (!grown) return -1;
            *tokens = grown;
            *tokens_cap = cap;
        }
        (*tokens)[n++] = fmix64(state ^ word ^ (uint64_t)(i - start) * P5);
    }
    return n;
}

/* Shingle hashes from token hashes, written over the token array's prefix (shingle s only reads tokens >= s).
 * Each position has its own odd multiplier, so the products are independent (they pipeline) and order counts. */
static int64_t shingles_in_place(uint64_t *tokens, int64_t n, int ngram) {
    if (n == 0) return 0;
    int64_t width = n < ngram ? n : ngram;
    int64_t count = n - width + 1;
    uint64_t mult[64];
    for (int64_t t = 0; t < width; t++) mult[t] = fmix64(SHINGLE_SEED + (uint64_t)t) | 1;
    for (int64_t s = 0; s < count; s++) {
        uint64_t sum = 0;
        for (int64_t t = 0; t < width; t++) sum += tokens[s + t] * mult[t];
        tokens[s] = fmix64(SHINGLE_SEED ^ sum);
    }
    return count;
}

int64_t lc_shingles(const uint8_t *text, size_t len, int ngram, uint64_t *out, size_t cap) {
    if (ngram < 1 || ngram > LC_MAX_NGRAM) return LC_EINVAL;
    uint64_t *tokens = NULL;
    size_t tokens_cap = 0;
    int64_t n = token_hashes(text, len, &tokens, &tokens_cap);
    if (n >= 0) {
        n = shingles_in_place(tokens, n, ngram);
        for (int64_t s = 0; s < n && (size_t)s < cap; s++) out[s] = tokens[s];
    }
    free(tokens);
    return n < 0 ? LC_ENOMEM : n;
}

#define BLOCK 64 /* permutations per pass: their running minima stay in registers across all shingles */

LC_CLONES
static void minhash_block(const uint32_t *xs, int64_t n, const uint32_t *a, const uint32_t *b, uint32_t *sig) {
    uint32_t acc[BLOCK], av[BLOCK], bv[BLOCK];
    for (int j = 0; j < BLOCK; j++) {
        acc[j] = 0xFFFFFFFFu;
        av[j] = a[j];
        bv[j] = b[j];
    }
    for (int64_t s = 0; s < n; s++) {
        uint32_t x = xs[s];
        for (int j = 0; j < BLOCK; j++) {
            uint32_t v = av[j] * x + bv[j];
            acc[j] = v < acc[j] ? v : acc[j];
        }
    }
    memcpy(sig, acc, sizeof(acc));
}

static void minhash_tail(const uint32_t *xs, int64_t n, const uint32_t *a, const uint32_t *b, int k,
                         uint32_t *sig) {
    for (int j = 0; j < k; j++) sig[j] = 0xFFFFFFFFu;
    for (int64_t s = 0; s < n; s++) {
        for (int j = 0; j < k; j++) {
            uint32_t v = a[j] * xs[s] + b[j];
            if (v < sig[j]) sig[j] = v;
        }
    }
}

int lc_minhash_batch(const uint8_t *buf, const int64_t *offsets, size_t n, int ngram, const uint32_t *a,
                     const uint32_t *b, int num_perm, uint32_t *sigs) {
    if (ngram < 1 || ngram > LC_MAX_NGRAM || num_perm < 1) return LC_EINVAL;
    uint64_t *tokens = NULL;
    uint32_t *xs = NULL;
    size_t tokens_cap = 0, xs_cap = 0;
    int rc = LC_OK;
    for (size_t d = 0; d < n; d++) {
        int64_t start = offsets[d], stop = offsets[d + 1];
        if (stop < start) {
            rc = LC_EINVAL;
            break;
        }
        int64_t count = token_hashes(buf + start, (size_t)(stop - start), &tokens, &tokens_cap);
        if (count < 0) {
            rc = LC_ENOMEM;
            break;
        }
        count = shingles_in_place(tokens, count, ngram);
        if (count > 0 && (size_t)count > xs_cap) {
            uint32_t *grown = realloc(xs, (size_t)count * sizeof(uint32_t));
            if (!grown) {
                rc = LC_ENOMEM;
                break;
            }
            xs = grown;
            xs_cap = (size_t)count;
        }
        for (int64_t s = 0; s < count; s++) xs[s] = (uint32_t)(tokens[s] ^ (tokens[s] >> 32));
        uint32_t *sig = sigs + d * (size_t)num_perm;
        int j = 0;
        for (; j + BLOCK <= num_perm; j += BLOCK) minhash_block(xs, count, a + j, b + j, sig + j);
        if (j < num_perm) minhash_tail(xs, count, a + j, b + j, num_perm - j, sig + j);
    }
    free(tokens);
    free(xs);
    return rc;
}

/* Band keys: one sum of products and one mix per band (see libcore.h), like the shingles' hashes. */
static int band_keys(const uint32_t *sigs, size_t n, int num_perm, int bands, int rows, uint64_t *keys) {
    if (bands < 1 || rows < 1 || (int64_t)bands * rows > num_perm) return LC_EINVAL;
    uint64_t *mult = malloc((size_t)rows * sizeof(uint64_t)), *salt = malloc((size_t)bands * sizeof(uint64_t));
    if (!mult || !salt) {
        free(mult);
        free(salt);
        return LC_ENOMEM;
    }
    for (int r = 0; r < rows; r++) mult[r] = fmix64(BAND_SEED + (uint64_t)r) | 1;
    for (int j = 0; j < bands; j++) salt[j] = fmix64(BAND_SEED ^ (uint64_t)(j + 1));
    for (size_t d = 0; d < n; d++) {
        const uint32_t *sig = sigs + d * (size_t)num_perm;
        for (int j = 0; j < bands; j++) {
            uint64_t sum = 0;
            for (int r = 0; r < rows; r++) sum += (uint64_t)sig[j * rows + r] * mult[r];
            keys[d * (size_t)bands + j] = fmix64(sum ^ salt[j]);
        }
    }
    free(mult);
    free(salt);
    return LC_OK;
}

int lc_band_keys(const uint32_t *sigs, size_t n, int num_perm, int bands, int rows, uint64_t *keys) {
    return band_keys(sigs, n, num_perm, bands, rows, keys);
}

/* A table of `bytes`: on Linux, big ones ask for transparent huge pages (the LSH table is probed at random, and
 * with 4 KiB pages most probes also missed the TLB). */
static void *table_alloc(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (bytes >= huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, (bytes + huge - 1) / huge * huge)) return NULL;
        madvise(p, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
        return p;
    }
#endif
    return malloc(bytes);
}

int lc_exact_batch(const uint8_t *buf, const int64_t *offsets, size_t n, uint64_t *out) {
    for (size_t d = 0; d < n; d++) {
        if (offsets[d + 1] < offsets[d]) return LC_EINVAL;
        size_t len = (size_t)(offsets[d + 1] - offsets[d]);
        out[2 * d] = lc_xxh64(buf + offsets[d], len, 0);
        out[2 * d + 1] = lc_xxh64(buf + offsets[d], len, EXACT_SEED2);
    }
    return LC_OK;
}

/* --- the LSH index ------------------------------------------------------------------------------------- */

struct slot {
    uint64_t key;
    int32_t head; /* -1: empty */
    int32_t unused;
};

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

struct lc_lsh {
    int num_perm, bands, rows, min_equal;
    /* open addressing: band key -> first node of its bucket (key and head side by side: one cache miss) */
    struct slot *table;
    size_t slots, used;
    /* bucket chains */
    int32_t *node_doc, *node_next;
    size_t nodes, node_doc_cap, node_next_cap;
    /* kept signatures, their ids, and the last query that looked at each */
    uint32_t *sigs, *seen;
    int64_t *ids;
    size_t docs, sigs_cap, ids_cap, seen_cap;
    uint32_t query;
};

static int grow(void **ptr, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 1024;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*ptr, cap2 * item);
    if (!p) return -1;
    *ptr = p;
    *cap = cap2;
    return 0;
}

lc_lsh *lc_lsh_new(int num_perm, int bands, int rows, int min_equal) {
    if (num_perm < 1 || bands < 1 || rows < 1 || (int64_t)bands * rows > num_perm || min_equal < 0 ||
        min_equal > num_perm)
        return NULL;
    lc_lsh *index = calloc(1, sizeof(lc_lsh));
    if (!index) return NULL;
    index->num_perm = num_perm;
    index->bands = bands;
    index->rows = rows;
    index->min_equal = min_equal;
    index->slots = 1024;
    index->table = table_alloc(index->slots * sizeof(struct slot));
    if (!index->table) {
        lc_lsh_free(index);
        return NULL;
    }
    for (size_t i = 0; i < index->slots; i++) index->table[i].head = -1;
    return index;
}

void lc_lsh_free(lc_lsh *index) {
    if (!index) return;
    free(index->table);
    free(index->node_doc);
    free(index->node_next);
    free(index->sigs);
    free(index->seen);
    free(index->ids);
    free(index);
}

size_t lc_lsh_size(const lc_lsh *index) { return index ? index->docs : 0; }

static inline size_t home_of(const lc_lsh *index, uint64_t key) {
    return (size_t)(key * 0x9E3779B97F4A7C15ULL >> 20) & (index->slots - 1);
}

static size_t slot_of(const lc_lsh *index, uint64_t key) {
    size_t mask = index->slots - 1, i = home_of(index, key);
    while (index->table[i].head >= 0 && index->table[i].key != key) i = (i + 1) & mask;
    return i;
}

static int rehash(lc_lsh *index) {
    size_t old_slots = index->slots;
    struct slot *old = index->table;
    struct slot *table = table_alloc(old_slots * 2 * sizeof(struct slot));
    if (!table) return -1;
    index->table = table;
    index->slots = old_slots * 2;
    for (size_t i = 0; i < index->slots; i++) table[i].head = -1;
    for (size_t i = 0; i < old_slots; i++) {
        if (old[i].head < 0) continue;
        table[slot_of(index, old[i].key)] = old[i];
    }
    free(old);
    return 0;
}

/* Keep a signature: slots[j] is where band j's key was looked up (the table is not resized during a call). */
static int insert(lc_lsh *index, const uint32_t *sig, const uint64_t *keys, size_t *slots, int64_t id) {
    size_t doc = index->docs, k = (size_t)index->num_perm, nodes = index->nodes + (size_t)index->bands;
    if (doc >= 0x7FFFFFFF || nodes >= 0x7FFFFFFF) return LC_ENOMEM;
    if (grow((void **)&index->sigs, &index->sigs_cap, (doc + 1) * k, sizeof(uint32_t)) ||
        grow((void **)&index->ids, &index->ids_cap, doc + 1, sizeof(int64_t)) ||
        grow((void **)&index->seen, &index->seen_cap, doc + 1, sizeof(uint32_t)) ||
        grow((void **)&index->node_doc, &index->node_doc_cap, nodes, sizeof(int32_t)) ||
        grow((void **)&index->node_next, &index->node_next_cap, nodes, sizeof(int32_t)))
        return LC_ENOMEM;
    memcpy(index->sigs + doc * k, sig, k * sizeof(uint32_t));
    index->ids[doc] = id;
    index->seen[doc] = 0;
    for (int j = 0; j < index->bands; j++) {
        struct slot *slot = &index->table[slots[j]];
        if (slot->head >= 0 && slot->key != keys[j]) /* taken by another new key since the lookup */
            slot = &index->table[slot_of(index, keys[j])];
        if (slot->head < 0) {
            slot->key = keys[j];
            index->used++;
        }
        size_t node = index->nodes++;
        index->node_doc[node] = (int32_t)doc;
        index->node_next[node] = slot->head;
        slot->head = (int32_t)node;
    }
    index->docs = doc + 1;
    return LC_OK;
}

int lc_lsh_dedupe(lc_lsh *index, const uint32_t *sigs, const int64_t *ids, size_t n, int64_t *match,
                  int32_t *equal) {
    if (!index) return LC_EINVAL;
    int k = index->num_perm;
    /* Room for every band of every signature of this call up front: no resize between a lookup and its insert. */
    while ((index->used + n * (size_t)index->bands) * 2 > index->slots)
        if (rehash(index)) return LC_ENOMEM;
    size_t bands = (size_t)index->bands;
    uint64_t *all = malloc((n ? n : 1) * bands * sizeof(uint64_t));
    size_t *slots = malloc(bands * sizeof(size_t));
    if (!all || !slots) {
        free(all);
        free(slots);
        return LC_ENOMEM;
    }
    if (band_keys(sigs, n, k, index->bands, index->rows, all) != LC_OK) {
        free(all);
        free(slots);
        return LC_ENOMEM;
    }
    for (size_t j = 0; n && j < bands; j++) PREFETCH(&index->table[home_of(index, all[j])]);
    int rc = LC_OK;
    for (size_t d = 0; d < n && rc == LC_OK; d++) {
        const uint32_t *sig = sigs + d * (size_t)k;
        const uint64_t *keys = all + d * bands;
        if (d + 1 < n) /* the next document's slots load while this one is looked up */
            for (size_t j = 0; j < bands; j++) PREFETCH(&index->table[home_of(index, keys[bands + j])]);
        if (++index->query == 0) { /* the marks wrapped around: clear them */
            memset(index->seen, 0, index->docs * sizeof(uint32_t));
            index->query = 1;
        }
        int64_t best = -1;
        int32_t best_equal = -1;
        for (int j = 0; j < index->bands; j++) {
            size_t slot = slots[j] = slot_of(index, keys[j]);
            for (int32_t node = index->table[slot].head; node >= 0; node = index->node_next[node]) {
                int32_t doc = index->node_doc[node];
                if (index->seen[doc] == index->query) continue;
                index->seen[doc] = index->query;
                const uint32_t *other = index->sigs + (size_t)doc * (size_t)k;
                int32_t same = 0;
                for (int i = 0; i < k; i++) same += sig[i] == other[i];
                if (same > best_equal || (same == best_equal && doc < best)) {
                    best = doc;
                    best_equal = same;
                }
            }
        }
        if (best >= 0 && best_equal >= index->min_equal) {
            match[d] = index->ids[best];
            equal[d] = best_equal;
        } else {
            match[d] = -1;
            equal[d] = best_equal < 0 ? 0 : best_equal;
            rc = insert(index, sig, keys, slots, ids[d]);
        }
    }
    free(all);
    free(slots);
    return rc;
}
