"""The cffi builder (API mode) for libcore: compiled at install time through setup.py's `cffi_modules`."""

from cffi import FFI

# The declarations Python sees: libcore.h without its preprocessor lines and comments.
CDEF = """
uint64_t lc_xxh64(const uint8_t *data, size_t len, uint64_t seed);
int64_t lc_shingles(const uint8_t *text, size_t len, int ngram, uint64_t *out, size_t cap);
int lc_minhash_batch(const uint8_t *buf, const int64_t *offsets, size_t n, int ngram, const uint32_t *a,
                     const uint32_t *b, int num_perm, uint32_t *sigs);
int lc_band_keys(const uint32_t *sigs, size_t n, int num_perm, int bands, int rows, uint64_t *keys);
int lc_exact_batch(const uint8_t *buf, const int64_t *offsets, size_t n, uint64_t *out);
typedef struct lc_lsh lc_lsh;
lc_lsh *lc_lsh_new(int num_perm, int bands, int rows, int min_equal);
void lc_lsh_free(lc_lsh *index);
size_t lc_lsh_size(const lc_lsh *index);
int lc_lsh_dedupe(lc_lsh *index, const uint32_t *sigs, const int64_t *ids, size_t n, int64_t *match,
                  int32_t *equal);
#define LC_OK 0
#define LC_EINVAL -1
#define LC_ENOMEM -2
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "assistant.libcore._libcore",
    '#include "libcore.h"',
    sources=["libcore/libcore.c"],  # relative to the project root, where setup.py runs
    include_dirs=["libcore"],
    depends=["libcore/libcore.h"],  # rebuilt when it changes, and shipped in the sdist (MANIFEST.in too)
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":  # a build by hand from the project root, for trying changes: python libcore/_build.py
    ffibuilder.compile(tmpdir="build/libcore", verbose=True)
