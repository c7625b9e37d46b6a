/* libcore: the hot paths of dedupe (tokens, shingles, 64-bit hashes, MinHash, LSH banding, exact hashes).
 *
 * The functions share no mutable state (an lc_lsh belongs to one caller at a time), so the Python wrapper can
 * call them from several threads with the GIL released. libcore/reference.py computes the same values in pure Python; the tests compare the two.
 *
 * Definitions (the reference follows them byte for byte):
 *  - token: a maximal run of bytes that are ASCII letters, digits, '_' or any byte >= 0x80 (so UTF-8 letters
 *    stay inside words); ASCII letters are lowercased.
 *  - token hash: s = TOKEN_SEED; for each full 8 bytes w of the (lowercased) token, read little-endian:
 *    s = fmix64(s ^ w); then fmix64(s ^ w' ^ len * P5), w' the 0-7 bytes left (little-endian, zero-padded),
 *    len the token's length in bytes. (One pass over the text, no copy: XXH64 per token cost twice as much.)
 *  - shingle: `ngram` (1..64) consecutive tokens; a text with fewer tokens (but at least one) has one shingle of
 *    all its tokens, an empty text none. Its hash: fmix64(SHINGLE_SEED ^ sum over positions p of t[p] * m[p]),
 *    where t[p] is the token hash at position p, m[p] = fmix64(SHINGLE_SEED + p) | 1, arithmetic mod 2^64.
 *  - MinHash value i: min over shingles of (a[i] * x + b[i]) mod 2^32, where x = (uint32)(h ^ (h >> 32)) and
 *    a[i] is odd (a permutation of 32-bit values). No shingle: 0xFFFFFFFF.
 *  - band key j (rows r): fmix64(sum ^ fmix64(BAND_SEED ^ (j + 1))), where sum = sum over the band's values v[i]
 *    (i = 0..r-1) of v[i] * (fmix64(BAND_SEED + i) | 1), mod 2^64.
 *  - exact hash: XXH64(text, 0) and XXH64(text, EXACT_SEED2): 128 bits of the raw bytes.
 */
#ifndef LIBCORE_H
#define LIBCORE_H

#include <stddef.h>
#include <stdint.h>

#define LC_OK 0
#define LC_EINVAL (-1) /* an argument is out of range */
#define LC_ENOMEM (-2) /* an allocation failed */
#define LC_MAX_NGRAM 64

uint64_t lc_xxh64(const uint8_t *data, size_t len, uint64_t seed);

/* Shingle hashes of one text, in order (duplicates kept). Returns how many there are; only the first `cap` are
 * written, so a caller with a short buffer can call again with one of the returned size. */
int64_t lc_shingles(const uint8_t *text, size_t len, int ngram, uint64_t *out, size_t cap);

/* MinHash signatures of n texts: text d is buf[offsets[d] .. offsets[d+1]); sigs holds n * num_perm values. */
int lc_minhash_batch(const uint8_t *buf, const int64_t *offsets, size_t n, int ngram, const uint32_t *a,
                     const uint32_t *b, int num_perm, uint32_t *sigs);

/* Band keys of n signatures: keys holds n * bands values (band j of signature d at keys[d * bands + j]). */
int lc_band_keys(const uint32_t *sigs, size_t n, int num_perm, int bands, int rows, uint64_t *keys);

/* Exact hashes of n texts: out holds 2 * n values. */
int lc_exact_batch(const uint8_t *buf, const int64_t *offsets, size_t n, uint64_t *out);

/* A streaming near-duplicate index: kept signatures, bucketed by band key. */
typedef struct lc_lsh lc_lsh;

lc_lsh *lc_lsh_new(int num_perm, int bands, int rows, int min_equal);
void lc_lsh_free(lc_lsh *index);
size_t lc_lsh_size(const lc_lsh *index);

/* For each of n signatures in order: the kept signature sharing a band that agrees with it in the most
 * positions (ties: the earliest kept), if it agrees in at least min_equal positions. Then match[d] is that kept
 * signature's id and equal[d] the agreeing positions; otherwise match[d] = -1 and the signature is kept with id
 * ids[d]. Signatures kept earlier in the same call are candidates for later ones. */
int lc_lsh_dedupe(lc_lsh *index, const uint32_t *sigs, const int64_t *ids, size_t n, int64_t *match,
                  int32_t *equal);

#endif
