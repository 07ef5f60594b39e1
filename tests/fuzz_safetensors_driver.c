/* A libFuzzer-free driver for fuzz_safetensors.c, so the fuzz check also runs in gcc
 * builds: runs the target over each file of a corpus directory, every truncation of it,
 * every single-bit flip, and then N random mutations (fixed seed: the same inputs every
 * run). Most random edits of a safetensors file only break the 8-byte length, so half of
 * the mutations edit the JSON header and then rewrite the length to match, to reach the
 * checks behind it. Each input sits in its own exact-size allocation so that, under
 * -Db_sanitize=address, reading past the end is caught.
 *
 *     fuzz_safetensors_driver <corpus dir> [iterations=20000] [seed=1]
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "safetensors.h"

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
    st_file *f = NULL;
    if (st_parse(copy, n, &f) == VKLLM_OK)
        n_accepted++;
    st_close(f);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    n_runs++;
}

/* Pieces of JSON that sit on the edges of the header checks. */
static const char *const tokens[] = {
    "\"F32\"", "\"BF16\"", "\"F64\"", "\"X9\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
    "[", "]", "{", "}", ",", ":", "0", "1", "-1", "4294967296", "9223372036854775807",
    "18446744073709551616", "1e308", "0.5", "[0,0]", "[]", "null", "true", "\"\"", "\"\\u0000\"",
    "\"\\ud800\"", "\"\\ud83d\\ude00\"", "\"a\"", "\xff", " ",
};

static uint64_t header_len(const uint8_t *p, size_t n)
{
    uint64_t h = 0;
    for (int i = 0; i < 8 && (size_t)i < n; i++)
        h |= (uint64_t)p[i] << (8 * i);
    return h;
}

static void set_header_len(uint8_t *p, uint64_t h)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(h >> (8 * i));
}

/* Replaces `del` bytes at `at` with `ins` (len `n_ins`), within cap. */
static int splice(uint8_t *p, size_t *n, size_t cap, size_t at, size_t del, const void *ins, size_t n_ins)
{
    if (at > *n || del > *n - at || *n - del + n_ins > cap)
        return 0;
    memmove(p + at + n_ins, p + at + del, *n - at - del);
    memcpy(p + at, ins, n_ins);
    *n = *n - del + n_ins;
    return 1;
}

/* An edit inside the JSON header; the length prefix follows it. */
static void mutate_header(uint8_t *p, size_t *n, size_t cap)
{
    uint64_t h = header_len(p, *n);
    if (*n < 9 || h == 0 || h > *n - 8)
        return;
    size_t at = 8 + (size_t)(next_rand() % h);
    size_t del = (size_t)(next_rand() % 4);
    if (del > 8 + h - at)
        del = (size_t)(8 + h - at);
    const char *tok = tokens[next_rand() % (sizeof tokens / sizeof *tokens)];
    if (next_rand() % 4 == 0) { /* a digit changed in place: offsets and dims move by small amounts */
        if (p[at] >= '0' && p[at] <= '9')
            p[at] = (uint8_t)('0' + next_rand() % 10);
        return;
    }
    if (splice(p, n, cap, at, del, tok, strlen(tok)))
        set_header_len(p, h - del + strlen(tok));
}

static const uint64_t interesting[] = {0, 1, 2, 7, 8, 9, 63, 64, 255, 256, 0x7fffffff, 0xffffffffu,
                                       1ull << 32, 100000000, 100000001, (1ull << 63) - 1, 1ull << 63,
                                       UINT64_MAX};

static void mutate_bytes(uint8_t *p, size_t *n, size_t cap)
{
    int k = 1 + (int)(next_rand() % 4);
    for (int m = 0; m < k && *n; m++) {
        size_t at = (size_t)(next_rand() % *n);
        switch (next_rand() % 5) {
        case 0: p[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;
        case 1: p[at] = (uint8_t)next_rand(); break;
        case 2: set_header_len(p, interesting[next_rand() % (sizeof interesting / sizeof *interesting)]); break;
        case 3: *n = at; break;
        default: {
            uint8_t b = (uint8_t)next_rand();
            splice(p, n, cap, at, 0, &b, 1);
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
        st_file *f = NULL;
        if (st_parse(buf, n, &f) != VKLLM_OK) {
            printf("FAIL: corpus file %s does not parse: %s\n", path, vk_error_message());
            return 1;
        }
        st_close(f);
        corpus[n_corpus++] = (input){buf, n};
    }
    closedir(dir);
    if (n_corpus == 0) {
        printf("FAIL: empty corpus %s\n", argv[1]);
        return 1;
    }

    for (int c = 0; c < n_corpus; c++) {
        input in = corpus[c];
        run(in.p, in.n);
        for (size_t len = 0; len < in.n; len++)
            run(in.p, len);
        uint8_t *tmp = malloc(in.n);
        for (size_t i = 0; i < in.n * 8; i++) {
            memcpy(tmp, in.p, in.n);
            tmp[i / 8] ^= (uint8_t)(1u << (i % 8));
            run(tmp, in.n);
        }
        free(tmp);
    }
    uint64_t det_runs = n_runs, det_accepted = n_accepted;

    size_t cap = 1 << 16;
    uint8_t *work = malloc(cap);
    uint64_t header_edits = 0, header_accepted = 0;
    for (long it = 0; it < iterations; it++) {
        input in = corpus[next_rand() % (uint64_t)n_corpus];
        size_t n = in.n < cap ? in.n : cap;
        memcpy(work, in.p, n);
        int header = next_rand() % 2 == 0;
        uint64_t before = n_accepted;
        if (header) {
            int k = 1 + (int)(next_rand() % 3);
            for (int m = 0; m < k; m++)
                mutate_header(work, &n, cap);
        } else {
            mutate_bytes(work, &n, cap);
        }
        run(work, n);
        if (header) {
            header_edits++;
            header_accepted += n_accepted - before;
        }
    }
    free(work);
    printf("corpus: %d files; deterministic: %llu inputs (%llu accepted); random: %ld mutated inputs (%llu "
           "accepted; %llu header edits with the length kept consistent, %llu accepted)\n",
           n_corpus, (unsigned long long)det_runs, (unsigned long long)det_accepted, iterations,
           (unsigned long long)(n_accepted - det_accepted), (unsigned long long)header_edits,
           (unsigned long long)header_accepted);
    for (int c = 0; c < n_corpus; c++)
        free(corpus[c].p);
    /* Edits that keep a file valid must be accepted and the rest rejected; if either count
     * is zero the run tested little. */
    if (n_accepted == 0 || n_accepted == n_runs || header_accepted == 0 || header_accepted == header_edits) {
        printf("FAIL: %llu of %llu inputs accepted (%llu of %llu header edits)\n", (unsigned long long)n_accepted,
               (unsigned long long)n_runs, (unsigned long long)header_accepted, (unsigned long long)header_edits);
        return 1;
    }
    printf("no invariant violated\n");
    return 0;
}
