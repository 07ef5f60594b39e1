/* Model loading: parse the GGUF file, build the vocabulary, check the architecture's graph
 * against the tensors, and stream every weight the graph uses to the device. */
#include "model.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "chat.h"
#include "error.h"
#include "hf_model.h"
#include "quant.h"

const model_weight *model_weight_find(const struct vkllm_model_t *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_weights; i++)
        if (!strcmp(m->weights[i].tensor->name, name))
            return &m->weights[i];
    return NULL;
}

/* Lets the kernel drop the file pages of an uploaded tensor, so peak RSS while loading stays
 * near one copy of the weights (the device's) instead of two. */
static void release_pages(const gguf_file *f, const gguf_tensor *t)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !f->owns_map)
        return;
    uintptr_t begin = ((uintptr_t)t->data + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t end = ((uintptr_t)t->data + t->size) / (uintptr_t)page * (uintptr_t)page;
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

/* Matrices never converted: mixture-of-experts routers (llama.cpp's quantizer keeps them too),
 * whose rounding could change which experts a token gets. */
static bool keep_as_stored(const char *name)
{
    size_t n = strlen(name), k = strlen("ffn_gate_inp.weight");
    return n >= k && !strcmp(name + n - k, "ffn_gate_inp.weight");
}

/* A LoRA adapter's change to one weight: scale * B A, with A [rank][cols] and B [rows][rank]
 * as floats. */
typedef struct lora_delta {
    float *a, *b;
    uint64_t rank;
    float scale;
} lora_delta;

/* Row r of the matrix plus every delta's row r. */
static void add_lora_rows(const lora_delta *d, uint32_t n, uint64_t r, float *row, uint64_t cols)
{
    for (uint32_t k = 0; k < n; k++)
        for (uint64_t j = 0; j < d[k].rank; j++) {
            float c = d[k].scale * d[k].b[r * d[k].rank + j];
            const float *a = d[k].a + j * cols;
            for (uint64_t i = 0; i < cols; i++)
                row[i] += c * a[i];
        }
}

/* Rows [first, end) of a matrix conversion, run by one thread. */
typedef struct convert_job {
    const gguf_tensor *t;
    const lora_delta *loras;
    uint32_t n_loras;
    uint32_t type;
    uint8_t *out;
    uint64_t first, end;
    int failed;          /* 1: a row does not convert (bad_row), 2: out of memory */
    uint64_t bad_row;
    pthread_t thread;
} convert_job;

static void *convert_rows(void *arg)
{
    convert_job *j = arg;
    uint64_t cols = j->t->ne[0];
    uint64_t src_row = ggml_row_bytes(j->t->type, cols), dst_row = ggml_row_bytes(j->type, cols);
    float *tmp = malloc(2 * cols * sizeof *tmp), *row = tmp + cols;
    j->failed = tmp ? 0 : 2;
    for (uint64_t r = j->first; r < j->end && !j->failed; r++) {
        const uint8_t *src = j->t->data + r * src_row;
        uint64_t written = 0;
        if (!j->n_loras) {
            written = vk_convert_row(j->t->type, src, j->type, j->out + r * dst_row, cols, tmp);
        } else if (vk_dequantize_row(j->t->type, src, row, cols) == 0) { /* adapters' rows added as floats */
            add_lora_rows(j->loras, j->n_loras, r, row, cols);
            written = vk_convert_row(GGML_F32, row, j->type, j->out + r * dst_row, cols, tmp);
        }
        if (written != dst_row) {
            j->failed = 1;
            j->bad_row = r;
        }
    }
    free(tmp);
    return NULL;
}

/* Re-encodes a matrix as `type` (vk_convert_row) into a new allocation. Large ones are
 * split over the CPU's cores: requantizing a 7B model's q6_K matrices to q8_0 takes
 * seconds on one core (~120 MB/s). */
static vkllm_status convert_matrix(const gguf_tensor *t, uint32_t type, const lora_delta *loras, uint32_t n_loras,
                                   void **converted, uint64_t *bytes)
{
    enum { MAX_THREADS = 16, MIN_WEIGHTS_PER_THREAD = 1 << 20 };
    uint64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2]; /* 3-D: stacked experts */
    uint64_t dst_row = ggml_row_bytes(type, cols);
    uint8_t *out = malloc(dst_row * rows);
    if (!out)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory converting %s", t->name);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t n = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (uint64_t)cpus;
    if (n > rows * cols / MIN_WEIGHTS_PER_THREAD)
        n = rows * cols / MIN_WEIGHTS_PER_THREAD > 0 ? rows * cols / MIN_WEIGHTS_PER_THREAD : 1;
    convert_job jobs[MAX_THREADS];
    uint64_t started = 0;
    for (uint64_t i = 0; i < n; i++) {
        jobs[i] = (convert_job){t, loras, n_loras, type, out, rows * i / n, rows * (i + 1) / n, 0, 0, 0};
        /* job 0 runs on this thread, after the others are started; a thread that cannot be
         * started leaves its rows to this thread too */
        if (i > 0 && pthread_create(&jobs[i].thread, NULL, convert_rows, &jobs[i]) == 0)
            started |= 1ull << i;
        else if (i > 0)
            convert_rows(&jobs[i]);
    }
    convert_rows(&jobs[0]);
    const convert_job *failed = NULL;
    for (uint64_t i = 0; i < n; i++) {
        if (i > 0 && (started >> i & 1))
            pthread_join(jobs[i].thread, NULL);
        if (jobs[i].failed && (!failed || jobs[i].failed > failed->failed))
            failed = &jobs[i];
    }
    if (failed) {
        free(out);
        if (failed->failed == 2)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory converting %s", t->name);
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "cannot convert %s from %s to %s: row %llu has NaN or infinite "
                       "weights, or scales that do not fit %s's fp16 fields", t->name, ggml_traits(t->type).name,
                       ggml_traits(type).name, (unsigned long long)failed->bad_row, ggml_traits(type).name);
    }
    *converted = out;
    *bytes = dst_row * rows;
    return VKLLM_OK;
}

/* The ggml type a matrix is uploaded as: convert_to (-1 = as stored) where its rows allow it,
 * else the type the device computes with for its stored type (K-quants are converted). */
static uint32_t upload_type(const gguf_tensor *t, int32_t convert_to)
{
    if (convert_to >= 0 && (uint32_t)convert_to != t->type && ggml_row_bytes((uint32_t)convert_to, t->ne[0]) != 0 &&
        !keep_as_stored(t->name))
        return (uint32_t)convert_to;
    return vk_compute_type(t->type);
}

/* 1-D tensors (and `flat` ones, whatever their shape) become f32 vectors; matrices are
 * uploaded as upload_type says, into a buffer of their own, or (`shared`, for the members of
 * a weight group) at byte `offset` of the group's buffer. */
static vkllm_status upload_weight(vkr_device *dev, const gguf_file *f, model_weight *w, int32_t convert_to,
                                  const lora_delta *loras, uint32_t n_loras, bool flat, vkr_buffer *shared,
                                  VkDeviceSize offset)
{
    const gguf_tensor *t = w->tensor;
    ggml_type_traits tr = ggml_traits(t->type);
    if (vk_compute_type(t->type) == GGML_TYPE_COUNT)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %s has type %s (%u), which vkllm cannot compute with yet",
                       t->name, tr.name ? tr.name : "unknown", t->type);
    w->is_vector = t->n_dims == 1 || flat;
    if (n_loras && (w->is_vector || t->ne[2] != 1))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "a LoRA adapter changes %s, which is not a plain matrix (a vector, "
                       "an array or stacked experts)", t->name);
    vkllm_status s;
    if (w->is_vector) {
        uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        float *tmp = malloc(n * sizeof *tmp);
        if (!tmp)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory converting %s", t->name);
        if (vk_dequantize_row(t->type, t->data, tmp, n) != 0) {
            free(tmp);
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %s: cannot convert type %s", t->name, tr.name);
        }
        s = vkr_buffer_create(dev, n * sizeof(float), VKR_MEMORY_DEVICE, &w->buffer);
        if (!s)
            s = vkr_buffer_write(dev, &w->buffer, 0, tmp, n * sizeof(float));
        free(tmp);
        w->vector = (op_tensor){&w->buffer, 0, n * sizeof(float)};
        return s ? vk_fail_prefix(s, "uploading %s", t->name) : VKLLM_OK;
    }
    /* A 3-D tensor is a stack of expert matrices [cols, rows, n_expert]: one matrix of
     * rows * n_expert rows (op_moe_matmul finds each expert's rows). */
    if (t->ne[3] != 1 || t->ne[1] * t->ne[2] > 0xffffffffu || t->ne[0] > 0xffffffffu)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %s: only 1-D, 2-D and 3-D (stacked experts) weights "
                       "are supported", t->name);
    uint32_t type = upload_type(t, convert_to);
    const void *data = t->data;
    uint64_t bytes = t->size;
    void *converted = NULL;
    if (type != t->type || n_loras) {
        if ((s = convert_matrix(t, type, loras, n_loras, &converted, &bytes)))
            return s;
        data = converted;
    }
    vkr_buffer *dst = shared ? shared : &w->buffer;
    if ((!shared && (s = vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &w->buffer))) ||
        (s = vkr_buffer_write(dev, dst, offset, data, bytes)) ||
        (s = op_weight_init(dev, type, (uint32_t)(t->ne[1] * t->ne[2]), (uint32_t)t->ne[0], dst, offset,
                            &w->matrix))) {
        free(converted);
        return vk_fail_prefix(s, "uploading %s", t->name);
    }
    free(converted);
    return VKLLM_OK;
}

/* Mamba's conv kernel and A are matrices the SSM ops read as plain f32 arrays: they are
 * uploaded like vectors (never converted to another weight type). So are StripedHyena's FIR
 * taps, poles and residues. */
static bool used_as_array(const g_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const g_node *n = &g->nodes[i];
        if ((n->op == G_SSM_CONV || n->op == G_SSM_SCAN) && n->weight[0] && !strcmp(n->weight[0], name))
            return true;
        for (int j = 0; j < G_MAX_WEIGHTS && (n->op == G_HYENA_FIR || n->op == G_HYENA_IIR); j++)
            if (n->weight[j] && !strcmp(n->weight[j], name))
                return true;
    }
    return false;
}

/* ---- weight groups ------------------------------------------------------------------ */

/* Matrices the recorder multiplies with the same x in one dispatch when decoding (a layer's
 * Q, K and V; a SwiGLU MLP's up and gate: dispatch.c) are uploaded end to end into one buffer,
 * so that together they are one matrix. A group is a run of consecutive MATMUL nodes reading
 * the same input, none accumulating, each using all of a 2-D tensor that no other node uses,
 * all uploaded as the same type with the same row length; or two consecutive expert products
 * (MOE_MATMUL, not summed) of one input and route whose 3-D stacks have one shape (a
 * mixture-of-experts MLP's gate and up). */
#define GROUP_MAX OP_MATVEC_MAX_PARTS

typedef struct weight_group {
    const char *names[GROUP_MAX];
    uint32_t n;
    uint64_t bytes;     /* all members */
    vkr_buffer *buffer; /* the first uploaded member's, once created */
    uint64_t next;      /* offset of the next member to upload */
} weight_group;

static uint32_t weight_uses(const g_graph *g, const char *name)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < G_MAX_WEIGHTS; j++)
            n += g->nodes[i].weight[j] && !strcmp(g->nodes[i].weight[j], name);
    return n;
}

/* Whether node n can join a group started by node `first` (n == first: can start one). */
static bool groupable(const g_graph *g, const gguf_file *f, const g_node *first, const g_node *n,
                      int32_t convert_to)
{
    if (!n->weight[0] || !first->weight[0] || n->in[0] != first->in[0] || n->op != first->op)
        return false;
    const gguf_tensor *t = gguf_find_tensor(f, n->weight[0]), *t0 = gguf_find_tensor(f, first->weight[0]);
    if (!t || !t0 || weight_uses(g, n->weight[0]) != 1)
        return false;
    if (n->op == G_MOE_MATMUL) {
        if (n->moe.weighted_sum || n->in[1] != first->in[1] || n - first > 1 || t->n_dims != 3 ||
            t->ne[1] != t0->ne[1] || t->ne[2] != t0->ne[2])
            return false;
    } else if (n->op != G_MATMUL || n->accumulate || t->n_dims != 2 || t->ne[2] != 1 || t->ne[3] != 1 ||
               n->rows.begin != 0 || (n->rows.count && n->rows.count != t->ne[1])) {
        return false;
    }
    uint32_t type = upload_type(t, convert_to);
    return type == upload_type(t0, convert_to) && t->ne[0] == t0->ne[0] &&
           ggml_row_bytes(type, t->ne[0]) % 2 == 0;
}

/* Finds the groups of the graph; *out (freed by the caller) gets *n_out of them. */
static vkllm_status find_groups(const g_graph *g, const gguf_file *f, int32_t convert_to, weight_group **out,
                                uint32_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    weight_group *groups = NULL;
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes;) {
        const g_node *first = &g->nodes[i];
        uint32_t len = 0;
        while (len < GROUP_MAX && i + len < g->n_nodes && groupable(g, f, first, &g->nodes[i + len], convert_to))
            len++;
        if (len < 2) {
            i++;
            continue;
        }
        weight_group *grown = realloc(groups, (n + 1) * sizeof *groups);
        if (!grown) {
            free(groups);
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        }
        groups = grown;
        weight_group *gr = &groups[n++];
        memset(gr, 0, sizeof *gr);
        for (uint32_t k = 0; k < len; k++) {
            const gguf_tensor *t = gguf_find_tensor(f, g->nodes[i + k].weight[0]);
            gr->names[gr->n++] = t->name;
            gr->bytes += t->ne[1] * t->ne[2] * ggml_row_bytes(upload_type(t, convert_to), t->ne[0]);
        }
        i += len;
    }
    *out = groups;
    *n_out = n;
    return VKLLM_OK;
}

static weight_group *group_of(weight_group *groups, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < groups[i].n; k++)
            if (!strcmp(groups[i].names[k], name))
                return &groups[i];
    return NULL;
}

static bool name_listed(const char **names, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return true;
    return false;
}

void model_free(vkllm_model m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_weights; i++)
        vkr_buffer_destroy(m->inst->dev, &m->weights[i].buffer);
    free(m->weights);
    for (uint32_t i = 0; i < m->n_cstrings; i++)
        free(m->cstrings[i].text);
    free(m->cstrings);
    mtx_destroy(&m->strings_lock);
    vk_vocab_free(m->vocab);
    gguf_close(m->gguf);
    if (m->inst)
        atomic_fetch_sub(&m->inst->n_models, 1);
    handle_error_destroy(&m->error);
    free(m);
}

static void free_loras(lora_delta *d, uint64_t n)
{
    for (uint64_t i = 0; d && i < n; i++) {
        free(d[i].a);
        free(d[i].b);
    }
    free(d);
}

/* Adapter k's pairs NAME.lora_a / NAME.lora_b, for weights the model uses, as floats:
 * deltas[i * n + k] for used[i] (rank 0 where the adapter leaves it alone). The file is
 * llama.cpp's adapter GGUF: general.type "adapter", adapter.type "lora", the model's
 * architecture; A is [rank][cols] (ne = cols, rank), B [rows][rank]; the scale is
 * scale * alpha / rank, or scale without alpha, as llama.cpp's. */
static vkllm_status load_loras(vkllm_model m, const char **used, uint32_t n_used, const vkllm_lora *loras,
                               uint32_t n, lora_delta **out)
{
    lora_delta *d = calloc((size_t)n_used * n + 1, sizeof *d);
    if (!d)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s = VKLLM_OK;
    gguf_str arch = {0}, got;
    gguf_get_str(m->gguf, "general.architecture", &arch);
    for (uint32_t k = 0; k < n && !s; k++) {
        const char *path = loras[k].path;
        gguf_file *f = NULL;
        if (!path) {
            s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "LoRA adapter %u: NULL path", k);
            break;
        }
        if ((s = gguf_open(path, &f))) {
            vk_fail_prefix(s, "LoRA adapter");
            break;
        }
        double alpha = 0.0;
        uint32_t pairs = 0;
        if (gguf_get_str(f, "general.type", &got) || got.len != 7 || memcmp(got.data, "adapter", 7) ||
            gguf_get_str(f, "adapter.type", &got) || got.len != 4 || memcmp(got.data, "lora", 4))
            s = vk_fail(VKLLM_ERR_BAD_FILE, "%s is not a LoRA adapter (general.type \"adapter\", adapter.type "
                        "\"lora\")", path);
        else if (gguf_get_str(f, "general.architecture", &got) || got.len != arch.len ||
                 memcmp(got.data, arch.data, arch.len))
            s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "LoRA adapter %s is for another architecture than the model's "
                        "%.*s", path, (int)arch.len, arch.data);
        if (!s && gguf_find(f, "adapter.lora.alpha") && (s = gguf_get_f64(f, "adapter.lora.alpha", &alpha)))
            vk_fail_prefix(s, "LoRA adapter %s", path);
        for (uint64_t t = 0; t < f->n_tensors && !s; t++) {
            const gguf_tensor *ta = &f->tensors[t], *tb;
            size_t len = strlen(ta->name);
            char base[256], bname[264];
            int is_b = len > 7 && !strcmp(ta->name + len - 7, ".lora_b");
            if (is_b || len <= 7 || strcmp(ta->name + len - 7, ".lora_a") || len - 7 >= sizeof base) {
                if (!is_b) {
                    s = vk_fail(VKLLM_ERR_BAD_FILE, "LoRA adapter %s: tensor %s is neither NAME.lora_a nor NAME.lora_b",
                                path, ta->name);
                } else {
                    snprintf(bname, sizeof bname, "%.*s.lora_a", (int)(len - 7), ta->name);
                    if (!gguf_find_tensor(f, bname))
                        s = vk_fail(VKLLM_ERR_BAD_FILE, "LoRA adapter %s: %s has no %s", path, ta->name, bname);
                }
                continue;
            }
            snprintf(base, sizeof base, "%.*s", (int)(len - 7), ta->name);
            snprintf(bname, sizeof bname, "%s.lora_b", base);
            /* The token embedding's pair is the other way round (llama.cpp's
             * llm_build_inp_embd): A [rows][rank] and B [cols][rank]. */
            int embd = !strcmp(base, "token_embd.weight");
            uint32_t i = 0;
            while (i < n_used && strcmp(used[i], base))
                i++;
            const gguf_tensor *w = gguf_find_tensor(m->gguf, base);
            if (!(tb = gguf_find_tensor(f, bname))) {
                s = vk_fail(VKLLM_ERR_BAD_FILE, "LoRA adapter %s: %s has no %s", path, ta->name, bname);
            } else if (i == n_used || !w) {
                s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "LoRA adapter %s changes %s, which the model does not use",
                            path, base);
            } else if (w->n_dims != 2 || ta->n_dims != 2 || tb->n_dims != 2 || tb->ne[0] == 0 || tb->ne[0] > 65536 ||
                       (embd ? ta->ne[0] != tb->ne[0] || ta->ne[1] != w->ne[1] || tb->ne[1] != w->ne[0]
                             : ta->ne[1] != tb->ne[0] || ta->ne[0] != w->ne[0] || tb->ne[1] != w->ne[1])) {
                s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "LoRA adapter %s: %s [%llu, %llu] and %s [%llu, %llu] do not "
                            "fit %s [%llu, %llu] (another base model?)", path, ta->name,
                            (unsigned long long)ta->ne[0], (unsigned long long)ta->ne[1], tb->name,
                            (unsigned long long)tb->ne[0], (unsigned long long)tb->ne[1], base,
                            (unsigned long long)w->ne[0], (unsigned long long)w->ne[1]);
            } else {
                lora_delta *ld = &d[(uint64_t)i * n + k];
                uint64_t rank = tb->ne[0], na = ta->ne[0] * ta->ne[1], nb = tb->ne[0] * tb->ne[1];
                ld->rank = rank;
                ld->scale = (float)(alpha != 0.0 ? loras[k].scale * alpha / (double)rank : loras[k].scale);
                float *fa = malloc(na * sizeof(float)), *fb = malloc(nb * sizeof(float));
                if (!fa || !fb)
                    s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory reading LoRA adapter %s", path);
                else if (vk_dequantize_row(ta->type, ta->data, fa, na) || vk_dequantize_row(tb->type, tb->data, fb, nb))
                    s = vk_fail(VKLLM_ERR_UNSUPPORTED, "LoRA adapter %s: %s or %s has a type vkllm cannot decode", path,
                                ta->name, tb->name);
                if (!s && !embd) {
                    ld->a = fa, ld->b = fb;
                    fa = fb = NULL;
                } else if (!s && (ld->a = malloc(nb * sizeof(float)))) {
                    /* B^T is the [rank][cols] factor, A the [rows][rank] one */
                    for (uint64_t c = 0; c < w->ne[0]; c++)
                        for (uint64_t j = 0; j < rank; j++)
                            ld->a[j * w->ne[0] + c] = fb[c * rank + j];
                    ld->b = fa, fa = NULL;
                } else if (!s) {
                    s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory reading LoRA adapter %s", path);
                }
                free(fa);
                free(fb);
                pairs++;
            }
        }
        if (!s && pairs == 0)
            s = vk_fail(VKLLM_ERR_BAD_FILE, "LoRA adapter %s has no NAME.lora_a / NAME.lora_b pairs", path);
        gguf_close(f);
    }
    if (s) {
        free_loras(d, (uint64_t)n_used * n);
        return s;
    }
    *out = d;
    return VKLLM_OK;
}

vkllm_status model_load(vkllm_instance inst, const vkllm_model_params *params, const vkllm_lora *loras,
                        uint32_t n_loras, vkllm_model *out)
{
    vkllm_model m = calloc(1, sizeof *m);
    if (!m)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    handle_error_init(&m->error);
    mtx_init(&m->strings_lock, mtx_plain);
    atomic_fetch_add(&inst->n_models, 1);
    m->inst = inst;
    const char **used = NULL;
    weight_group *groups = NULL;
    uint32_t n_groups = 0, n_used = 0;
    lora_delta *deltas = NULL;
    g_graph graph = {0};
    vkllm_status s = VKLLM_OK;
    if (params->weight_type < VKLLM_WEIGHTS_AS_STORED || params->weight_type > VKLLM_WEIGHTS_Q4_0) {
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "model_load: unknown weight_type %d", params->weight_type);
        goto fail;
    }
    /* A directory is a Hugging Face folder (config.json + safetensors), seen as a GGUF. */
    bool from_folder = hf_is_folder(params->path);
    if ((s = from_folder ? hf_open(params->path, &m->gguf) : gguf_open(params->path, &m->gguf)))
        goto fail;
    if ((s = g_build(m->gguf, 1, &graph)))
        goto fail;
    m->hp = graph.hp;
    /* A folder without tokenizer.json carries no vocabulary: the model then runs on token
     * ids only. */
    if ((!from_folder || gguf_find(m->gguf, "tokenizer.ggml.model")) && (s = vk_vocab_load(m->gguf, &m->vocab)))
        goto fail;
    if (m->vocab && vk_vocab_size(m->vocab) != m->hp.n_vocab) {
        s = vk_fail(VKLLM_ERR_BAD_FILE, "the vocabulary has %u tokens but token_embd.weight has %u rows",
                    vk_vocab_size(m->vocab), m->hp.n_vocab);
        goto fail;
    }

    /* The weights are exactly those the graph names. */
    used = calloc(graph.n_nodes * G_MAX_WEIGHTS, sizeof *used);
    if (!used) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto fail;
    }
    uint64_t total_bytes = 0;
    for (uint32_t i = 0; i < graph.n_nodes; i++)
        for (int j = 0; j < G_MAX_WEIGHTS; j++) {
            const char *name = graph.nodes[i].weight[j];
            if (name && !name_listed(used, n_used, name)) {
                const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
                if (!t) {
                    s = vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s is missing", name);
                    goto fail;
                }
                used[n_used++] = t->name;
                total_bytes += t->size;
            }
        }
    m->weights = calloc(n_used ? n_used : 1, sizeof *m->weights);
    if (!m->weights) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto fail;
    }
    int32_t convert_to = vk_weight_type_ggml(params->weight_type);
    if ((s = find_groups(&graph, m->gguf, convert_to, &groups, &n_groups)) ||
        (n_loras && (s = load_loras(m, used, n_used, loras, n_loras, &deltas))))
        goto fail;
    uint64_t done_bytes = 0;
    for (uint32_t i = 0; i < n_used; i++) {
        model_weight *w = &m->weights[m->n_weights];
        w->tensor = gguf_find_tensor(m->gguf, used[i]);
        weight_group *group = group_of(groups, n_groups, used[i]);
        if (group && !group->buffer) { /* the first member uploaded holds the group's buffer */
            if ((s = vkr_buffer_create(inst->dev, group->bytes, VKR_MEMORY_DEVICE, &w->buffer))) {
                vk_fail_prefix(s, "uploading %s", used[i]);
                goto fail;
            }
            group->buffer = &w->buffer;
        }
        uint32_t changed = 0;
        for (uint32_t k = 0; k < n_loras; k++)
            changed += deltas[(uint64_t)i * n_loras + k].rank != 0;
        s = upload_weight(inst->dev, m->gguf, w, convert_to, changed ? deltas + (uint64_t)i * n_loras : NULL,
                          changed ? n_loras : 0, used_as_array(&graph, used[i]),
                          group ? group->buffer : NULL, group ? group->next : 0);
        if (group)
            group->next += w->matrix.rows * w->matrix.row_bytes;
        if (s) {
            vkr_buffer_destroy(inst->dev, &w->buffer);
            goto fail;
        }
        m->n_weights++;
        release_pages(m->gguf, w->tensor);
        m->weight_bytes += w->buffer.size;
        m->n_params += w->tensor->ne[0] * w->tensor->ne[1] * w->tensor->ne[2] * w->tensor->ne[3];
        done_bytes += w->tensor->size;
        if (params->progress_fn &&
            params->progress_fn(params->progress_user, (float)((double)done_bytes / (double)total_bytes))) {
            s = vk_fail(VKLLM_ERR_IO, "model load cancelled by the host");
            goto fail;
        }
    }
    free_loras(deltas, (uint64_t)n_used * n_loras);
    free(used);
    free(groups);
    g_free(&graph);
    vkr_log(inst->dev, VKLLM_LOG_INFO, "loaded %s: %u weights, %.1f MiB on the device", params->path,
            m->n_weights, (double)m->weight_bytes / (1 << 20));
    *out = m;
    return VKLLM_OK;
fail:
    free_loras(deltas, (uint64_t)n_used * n_loras);
    free(used);
    free(groups);
    g_free(&graph);
    {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", vk_error_message());
        model_free(m);
        vk_fail(s, "%s", saved);
    }
    return s;
}

handle_error *model_error_of(vkllm_model m) { return &m->error; }
int model_context_count(vkllm_model m) { return atomic_load(&m->n_contexts); }

vkllm_status model_info(vkllm_model m, vkllm_model_info *info)
{
    snprintf(info->architecture, sizeof info->architecture, "%s", m->hp.arch);
    gguf_str name;
    if (gguf_get_str(m->gguf, "general.name", &name) == VKLLM_OK)
        snprintf(info->name, sizeof info->name, "%.*s", (int)(name.len > 255 ? 255 : name.len), name.data);
    info->n_vocab = m->hp.n_vocab;
    info->n_ctx_train = m->hp.n_ctx_train;
    info->n_embd = m->hp.n_embd;
    info->n_layer = m->hp.n_layer;
    info->n_head = m->hp.n_head;
    info->n_head_kv = m->hp.n_head_kv;
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    info->bos = vk_vocab_bos(m->vocab);
    info->eos = vk_vocab_eos(m->vocab);
    return VKLLM_OK;
}

/* ---- metadata ---------------------------------------------------------------------- */

static vkllm_status model_cstring(vkllm_model m, const gguf_kv *kv, const char **out)
{
    vkllm_status s = VKLLM_OK;
    mtx_lock(&m->strings_lock);
    for (uint32_t i = 0; i < m->n_cstrings; i++)
        if (m->cstrings[i].kv == kv) {
            *out = m->cstrings[i].text;
            goto done;
        }
    struct model_cstring *grown = realloc(m->cstrings, (m->n_cstrings + 1) * sizeof *grown);
    char *text = malloc(kv->v.s.len + 1);
    if (grown)
        m->cstrings = grown;
    if (!grown || !text) {
        free(text);
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto done;
    }
    memcpy(text, kv->v.s.data, kv->v.s.len);
    text[kv->v.s.len] = '\0';
    m->cstrings[m->n_cstrings++] = (struct model_cstring){kv, text};
    *out = text;
done:
    mtx_unlock(&m->strings_lock);
    return s;
}

static vkllm_status find_kv(vkllm_model m, const char *key, const gguf_kv **out)
{
    *out = gguf_find(m->gguf, key);
    if (!*out)
        return vk_fail(VKLLM_ERR_NOT_FOUND, "metadata key %s not found", key);
    return VKLLM_OK;
}

vkllm_status model_meta_count(vkllm_model m, uint32_t *out)
{
    *out = (uint32_t)m->gguf->n_kv;
    return VKLLM_OK;
}

vkllm_status model_meta_key(vkllm_model m, uint32_t index, const char **key)
{
    if (index >= m->gguf->n_kv)
        return vk_fail(VKLLM_ERR_NOT_FOUND, "metadata index %u out of range (%llu keys)", index,
                       (unsigned long long)m->gguf->n_kv);
    *key = m->gguf->kv[index].key;
    return VKLLM_OK;
}

static int32_t meta_type_of(uint32_t t)
{
    switch (t) {
    case GGUF_UINT8: case GGUF_UINT16: case GGUF_UINT32: case GGUF_UINT64: case GGUF_BOOL:
        return VKLLM_META_UINT;
    case GGUF_INT8: case GGUF_INT16: case GGUF_INT32: case GGUF_INT64:
        return VKLLM_META_INT;
    case GGUF_FLOAT32: case GGUF_FLOAT64:
        return VKLLM_META_FLOAT;
    case GGUF_STRING:
        return VKLLM_META_STRING;
    default:
        return VKLLM_META_ARRAY;
    }
}

vkllm_status model_meta_type(vkllm_model m, const char *key, int32_t *type, int32_t *elem,
                             uint64_t *len)
{
    const gguf_kv *kv;
    vkllm_status s = find_kv(m, key, &kv);
    if (s)
        return s;
    *type = meta_type_of(kv->type);
    if (elem)
        *elem = kv->type == GGUF_ARRAY ? meta_type_of(kv->v.a.elem_type) : -1;
    if (len)
        *len = kv->type == GGUF_ARRAY ? kv->v.a.n : 1;
    return VKLLM_OK;
}

vkllm_status model_meta_uint(vkllm_model m, const char *key, uint64_t *out)
{
    return gguf_get_u64(m->gguf, key, out);
}

vkllm_status model_meta_int(vkllm_model m, const char *key, int64_t *out)
{
    return gguf_get_i64(m->gguf, key, out);
}

vkllm_status model_meta_float(vkllm_model m, const char *key, double *out)
{
    return gguf_get_f64(m->gguf, key, out);
}

vkllm_status model_meta_string(vkllm_model m, const char *key, const char **out)
{
    /* Strings in the file are not terminated: keep a terminated copy per key, lazily. */
    const gguf_kv *kv;
    vkllm_status s = find_kv(m, key, &kv);
    if (s)
        return s;
    if (kv->type != GGUF_STRING)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "metadata %s is a %s, not a string", key,
                       gguf_value_type_name(kv->type));
    return model_cstring(m, kv, out);
}

vkllm_status model_chat_apply(vkllm_model m, const char *tmpl, const vkllm_chat_message *messages, size_t n,
                              int32_t add_assistant, char *text, size_t capacity, size_t *n_out)
{
    if (!tmpl && model_meta_string(m, "tokenizer.chat_template", &tmpl) != VKLLM_OK)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "the model has no tokenizer.chat_template: name a format "
                       "(e.g. \"chatml\")");
    return chat_apply_template(tmpl, messages, n, add_assistant != 0, text, capacity, n_out);
}

/* ---- tokens ------------------------------------------------------------------------ */

vkllm_status model_tokenize(vkllm_model m, const char *text, size_t len, int32_t add_special,
                            int32_t parse_special, vkllm_token *tokens, size_t capacity, size_t *n_out)
{
    if (!m->vocab)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "no tokenizer: the model was loaded without a vocabulary "
                       "(a Hugging Face folder without tokenizer.json); pass token ids");
    return vk_tokenize(m->vocab, text, len, add_special, parse_special, tokens, capacity, n_out);
}

vkllm_status model_detokenize(vkllm_model m, const vkllm_token *tokens, size_t n, char *text,
                              size_t capacity, size_t *n_out)
{
    if (!m->vocab)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "no tokenizer: the model was loaded without a vocabulary");
    return vk_detokenize(m->vocab, tokens, n, text, capacity, n_out);
}

vkllm_status model_token_is_eog(vkllm_model m, vkllm_token token, int32_t *out)
{
    const char *text;
    vkllm_status s = model_token_text(m, token, &text); /* the range check and its message */
    if (s)
        return s;
    *out = vk_vocab_is_eog(m->vocab, token) != 0;
    return VKLLM_OK;
}

vkllm_status model_token_text(vkllm_model m, vkllm_token token, const char **out)
{
    if (!m->vocab)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "no tokenizer: the model was loaded without a vocabulary");
    const char *t = vk_vocab_text(m->vocab, token);
    if (!t)
        return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE, "token %d is outside the vocabulary (0..%u)", token,
                       vk_vocab_size(m->vocab) - 1);
    *out = t;
    return VKLLM_OK;
}
