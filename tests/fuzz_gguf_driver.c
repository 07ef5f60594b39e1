/* A libFuzzer-free driver for fuzz_gguf.c, so the fuzz check also runs in gcc builds:
 * runs the target over each file of a corpus directory, every truncation of it, every
 * single-bit flip of its first 2 KiB, and then N random mutations (fixed seed: the same
 * inputs every run). Each input sits in its own exact-size allocation so that, under
 * -Db_sanitize=address, reading past the end is caught.
 *
 *     fuzz_gguf_driver <corpus dir> [iterations=20000] [seed=1]
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    uint8_t *p;
    size_t n;
} input;

static uint64_t rng_state;

static uint64_t next_rand(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t n_runs, n_accepted;

static void run(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    gguf_file *f = NULL;
    /* count acceptances separately; the target does the checking */
    if (gguf_parse(copy, n, &f) == VKLLM_OK)
        n_accepted++;
    gguf_close(f);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    n_runs++;
}

/* Values that sit on the edges of the checks. */
static const uint64_t interesting[] = {0, 1, 2, 3, 4, 5, 8, 12, 13, 24, 31, 32, 33, 63, 64,
                                       127, 128, 255, 256, 0x7fffffff, 0x80000000u,
                                       0xffffffffu, 1ull << 32, 1ull << 60, 1ull << 62,
                                       (1ull << 63) - 1, 1ull << 63, UINT64_MAX - 63,
                                       UINT64_MAX};

static void mutate(uint8_t *p, size_t *n, size_t cap)
{
    int k = 1 + (int)(next_rand() % 6);
    for (int m = 0; m < k && *n; m++) {
        size_t at = (size_t)(next_rand() % *n);
        switch (next_rand() % 6) {
        case 0: p[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;
        case 1: p[at] = (uint8_t)next_rand(); break;
        case 2: { /* an interesting value as a little-endian u32 or u64 */
            uint64_t v = interesting[next_rand() % (sizeof interesting / sizeof interesting[0])];
            size_t w = next_rand() % 2 ? 4 : 8;
            for (size_t i = 0; i < w && at + i < *n; i++)
                p[at + i] = (uint8_t)(v >> (8 * i));
            break;
        }
        case 3: *n = at; break; /* truncate */
        case 4: { /* copy a chunk over another place */
            size_t from = (size_t)(next_rand() % *n), len = 1 + (size_t)(next_rand() % 32);
            if (from + len > *n)
                len = *n - from;
            if (at + len > *n)
                len = *n - at;
            memmove(p + at, p + from, len);
            break;
        }
        default: { /* insert a few random bytes */
            size_t len = 1 + (size_t)(next_rand() % 8);
            if (*n + len > cap)
                break;
            memmove(p + at + len, p + at, *n - at);
            for (size_t i = 0; i < len; i++)
                p[at + i] = (uint8_t)next_rand();
            *n += len;
            break;
        }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s corpus_dir [iterations] [seed]\n", argv[0]);
        return 1;
    }
    long iterations = argc > 2 ? atol(argv[2]) : 20000;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 0) : 1;
    if (!rng_state)
        rng_state = 1;

    input corpus[64];
    int n_corpus = 0;
    DIR *dir = opendir(argv[1]);
    if (!dir) {
        printf("FAIL: cannot open corpus %s\n", argv[1]);
        return 1;
    }
    struct dirent *de;
    while ((de = readdir(dir)) && n_corpus < 64) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], de->d_name);
        FILE *fp = fopen(path, "rb");
        if (!fp)
            continue;
        uint8_t *buf = malloc(1 << 20);
        size_t n = fread(buf, 1, 1 << 20, fp);
        fclose(fp);
        gguf_file *f = NULL;
        if (gguf_parse(buf, n, &f) != VKLLM_OK) {
            printf("FAIL: corpus file %s does not parse: %s\n", path, vk_error_message());
            return 1;
        }
        gguf_close(f);
        corpus[n_corpus++] = (input){buf, n};
    }
    closedir(dir);
    if (n_corpus == 0) {
        printf("FAIL: empty corpus %s\n", argv[1]);
        return 1;
    }

    uint64_t det_runs, det_accepted;
    for (int c = 0; c < n_corpus; c++) {
        input in = corpus[c];
        run(in.p, in.n);
        for (size_t len = 0; len < in.n; len++)
            run(in.p, len);
        size_t flip_bytes = in.n < 2048 ? in.n : 2048;
        uint8_t *tmp = malloc(in.n);
        for (size_t i = 0; i < flip_bytes * 8; i++) {
            memcpy(tmp, in.p, in.n);
            tmp[i / 8] ^= (uint8_t)(1u << (i % 8));
            run(tmp, in.n);
        }
        free(tmp);
    }
    det_runs = n_runs;
    det_accepted = n_accepted;

    size_t cap = 1 << 16;
    uint8_t *work = malloc(cap);
    for (long it = 0; it < iterations; it++) {
        input in = corpus[next_rand() % (uint64_t)n_corpus];
        size_t n = in.n < cap ? in.n : cap;
        memcpy(work, in.p, n);
        mutate(work, &n, cap);
        run(work, n);
    }
    free(work);
    printf("corpus: %d files; deterministic: %llu inputs (%llu accepted); random: %ld mutated"
           " inputs (%llu accepted)\n",
           n_corpus, (unsigned long long)det_runs, (unsigned long long)det_accepted, iterations,
           (unsigned long long)(n_accepted - det_accepted));
    for (int c = 0; c < n_corpus; c++)
        free(corpus[c].p);
    /* Mutations that keep a file valid (flips inside tensor data, in string bytes) must be
     * accepted and the rest rejected; if either count is zero the run tested little. */
    if (n_accepted == 0 || n_accepted == n_runs) {
        printf("FAIL: %llu of %llu inputs accepted\n", (unsigned long long)n_accepted,
               (unsigned long long)n_runs);
        return 1;
    }
    printf("no invariant violated\n");
    return 0;
}
