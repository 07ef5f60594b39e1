/* A Hugging Face folder as an in-memory gguf_file; see hf_model.h.
 *
 * Tensors keep their bytes where they are: safetensors stores an nn.Linear weight as
 * [out][in] row-major, which is exactly ggml's [ne0 = in, ne1 = out], so a shape only
 * needs its order reversed. F32, F16 and BF16 become ggml types 0, 1 and 30. Everything
 * the folder says is checked: config values by type and range, shard names, every
 * tensor's name (an unknown one fails rather than being dropped), dtype and rank, and
 * that the index, the shards and the config agree. */
#include "hf_model.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "hf_tokenizer.h"
#include "json.h"
#include "quant.h"
#include "safetensors.h"

#define NAME_SHOWN 96

/* ---- what the gguf_file points into -------------------------------------------------- */

typedef struct hf_owner {
    st_file **shards;
    char **shard_names;
    uint32_t n_shards;
    char **strings; /* string metadata values */
    uint32_t n_strings;
    hf_tokenizer *tokenizer; /* what the tokenizer.ggml.* keys point into */
    void **blobs;            /* tensors converted at load (GPTQ) */
    uint32_t n_blobs;
} hf_owner;

static void owner_release(void *p)
{
    hf_owner *o = p;
    if (!o)
        return;
    for (uint32_t i = 0; i < o->n_shards; i++) {
        st_close(o->shards[i]);
        free(o->shard_names[i]);
    }
    free(o->shards);
    free(o->shard_names);
    for (uint32_t i = 0; i < o->n_strings; i++)
        free(o->strings[i]);
    free(o->strings);
    hf_tokenizer_free(o->tokenizer);
    for (uint32_t i = 0; i < o->n_blobs; i++)
        free(o->blobs[i]);
    free(o->blobs);
    free(o);
}

typedef struct builder {
    const char *dir;
    const json_value *cfg;
    gguf_file *f;
    hf_owner *own;
    uint64_t cap_kv;
    const char *arch;
    uint32_t n_layer;
    int quant;   /* quantization_config: QUANT_GPTQ or QUANT_AWQ (4 bits), else 0 */
    int gptq_v2; /* checkpoint_format "gptq_v2": zero points stored as they are (v1: minus 1) */
} builder;

enum { QUANT_GPTQ = 1, QUANT_AWQ = 2 };

static vkllm_status no_memory(void) { return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory"); }

/* ---- files --------------------------------------------------------------------------- */

static vkllm_status join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "path %s/%s is too long", dir, name);
    return VKLLM_OK;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int hf_is_folder(const char *path)
{
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Reads and parses a JSON file of at most HF_MAX_JSON_BYTES. */
static vkllm_status read_json(const char *path, json_doc **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return vk_fail(VKLLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || sb.st_size < 0 || (uint64_t)sb.st_size > HF_MAX_JSON_BYTES) {
        fclose(fp);
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s is not a readable file of at most %u bytes", path, HF_MAX_JSON_BYTES);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        fclose(fp);
        return no_memory();
    }
    size_t n = fread(buf, 1, size + 1, fp); /* a file that grew meanwhile reads size + 1 */
    int err = ferror(fp);
    fclose(fp);
    vkllm_status s;
    if (err || n > size)
        s = vk_fail(VKLLM_ERR_IO, "cannot read %s (or it changed while being read)", path);
    else if ((s = json_parse(buf, n, out)))
        vk_fail_prefix(s, "%s", path);
    free(buf);
    return s;
}

/* ---- config.json values -------------------------------------------------------------- */

/* A key that is absent or null counts as absent. */
static const json_value *cfg_get(const json_value *cfg, const char *key)
{
    const json_value *v = json_get(cfg, key);
    return v && v->type != JSON_NULL ? v : NULL;
}

static vkllm_status cfg_u32(const json_value *cfg, const char *key, int required, uint32_t fallback, uint32_t *out)
{
    const json_value *v = cfg_get(cfg, key);
    if (!v) {
        if (required)
            return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"%s\" is missing", key);
        *out = fallback;
        return VKLLM_OK;
    }
    if (v->type != JSON_NUMBER || !v->u.num.is_int || v->u.num.i < 0 || v->u.num.i > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"%s\" is %s, expected an integer in [0, 2^31)", key,
                       v->type == JSON_NUMBER ? "out of range" : json_type_name(v->type));
    *out = (uint32_t)v->u.num.i;
    return VKLLM_OK;
}

static vkllm_status cfg_f64(const json_value *cfg, const char *key, double fallback, double *out)
{
    const json_value *v = cfg_get(cfg, key);
    if (!v) {
        *out = fallback;
        return VKLLM_OK;
    }
    if (v->type != JSON_NUMBER)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"%s\" is %s, expected a number", key,
                       json_type_name(v->type));
    *out = v->u.num.d;
    return VKLLM_OK;
}

static vkllm_status cfg_bool(const json_value *cfg, const char *key, bool fallback, bool *out)
{
    const json_value *v = cfg_get(cfg, key);
    if (!v) {
        *out = fallback;
        return VKLLM_OK;
    }
    if (v->type != JSON_BOOL)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"%s\" is %s, expected true or false", key,
                       json_type_name(v->type));
    *out = v->u.boolean != 0;
    return VKLLM_OK;
}

/* NULL when absent. */
static vkllm_status cfg_str(const json_value *cfg, const char *key, const char **out)
{
    const json_value *v = cfg_get(cfg, key);
    *out = NULL;
    if (!v)
        return VKLLM_OK;
    if (v->type != JSON_STRING)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"%s\" is %s, expected a string", key,
                       json_type_name(v->type));
    *out = v->u.str;
    return VKLLM_OK;
}

/* ---- metadata of the gguf_file ------------------------------------------------------- */

static vkllm_status kv_new(builder *b, const char *key, uint32_t type, gguf_kv **out)
{
    gguf_file *f = b->f;
    if (f->n_kv == b->cap_kv) {
        uint64_t cap = b->cap_kv ? b->cap_kv * 2 : 32;
        gguf_kv *grown = realloc(f->kv, cap * sizeof *grown);
        if (!grown)
            return no_memory();
        f->kv = grown;
        b->cap_kv = cap;
    }
    gguf_kv *kv = &f->kv[f->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key)))
        return no_memory();
    kv->type = type;
    f->n_kv++;
    *out = kv;
    return VKLLM_OK;
}

/* "<arch>.<suffix>" */
static const char *akey(const builder *b, const char *suffix)
{
    static _Thread_local char key[128];
    snprintf(key, sizeof key, "%s.%s", b->arch, suffix);
    return key;
}

static vkllm_status put_u32(builder *b, const char *key, uint32_t v)
{
    gguf_kv *kv = NULL;
    vkllm_status s = kv_new(b, key, GGUF_UINT32, &kv);
    if (!s)
        kv->v.u = v;
    return s;
}

static vkllm_status put_f32(builder *b, const char *key, double v)
{
    gguf_kv *kv = NULL;
    vkllm_status s = kv_new(b, key, GGUF_FLOAT32, &kv);
    if (!s)
        kv->v.f = (double)(float)v;
    return s;
}

static vkllm_status put_bool(builder *b, const char *key, bool v)
{
    gguf_kv *kv = NULL;
    vkllm_status s = kv_new(b, key, GGUF_BOOL, &kv);
    if (!s)
        kv->v.u = v;
    return s;
}

static vkllm_status put_str(builder *b, const char *key, const char *v)
{
    hf_owner *o = b->own;
    char **grown = realloc(o->strings, (o->n_strings + 1) * sizeof *grown);
    if (!grown)
        return no_memory();
    o->strings = grown;
    char *copy = strdup(v);
    if (!copy)
        return no_memory();
    o->strings[o->n_strings++] = copy;
    gguf_kv *kv = NULL;
    vkllm_status s = kv_new(b, key, GGUF_STRING, &kv);
    if (!s)
        kv->v.s = (gguf_str){copy, strlen(copy)};
    return s;
}

/* ---- families ------------------------------------------------------------------------ */

typedef struct name_map {
    const char *hf, *gguf;
} name_map;

typedef struct family {
    const char *model_type; /* config.json */
    const char *arch;       /* general.architecture */
    const name_map *global; /* whole names, after an optional "model." prefix */
    const char *layer_prefix;
    const name_map *layer;  /* modules of a layer; ".weight" / ".bias" follow */
    const char *const *ignored; /* modules of a layer whose tensors are not weights */
    vkllm_status (*metadata)(builder *b);
} family;

static const name_map llama_global[] = {
    {"embed_tokens.weight", "token_embd.weight"},
    {"norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {NULL, NULL},
};
static const name_map llama_layer[] = {
    {"input_layernorm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {NULL, NULL},
};
/* Old llama checkpoints saved the rotary table as a buffer. */
static const char *const llama_ignored[] = {"self_attn.rotary_emb", NULL};

static const name_map opt_global[] = {
    {"decoder.embed_tokens.weight", "token_embd.weight"},
    {"decoder.embed_positions.weight", "position_embd.weight"},
    {"decoder.final_layer_norm.weight", "output_norm.weight"},
    {"decoder.final_layer_norm.bias", "output_norm.bias"},
    {"lm_head.weight", "output.weight"},
    {NULL, NULL},
};
static const name_map opt_layer[] = {
    {"self_attn_layer_norm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.out_proj", "attn_output"},
    {"final_layer_norm", "ffn_norm"},
    {"fc1", "ffn_up"},
    {"fc2", "ffn_down"},
    {NULL, NULL},
};
static const char *const no_ignored[] = {NULL};

/* Linear RoPE scaling is the one kind the builder has; others are refused by name. */
static vkllm_status rope_scaling(builder *b)
{
    const json_value *rs = cfg_get(b->cfg, "rope_scaling");
    if (!rs)
        return VKLLM_OK;
    if (rs->type != JSON_OBJECT)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: \"rope_scaling\" is %s, expected an object",
                       json_type_name(rs->type));
    const char *type;
    vkllm_status s = cfg_str(rs, "rope_type", &type);
    if (!s && !type)
        s = cfg_str(rs, "type", &type);
    if (s)
        return vk_fail_prefix(s, "rope_scaling");
    if (!type || !strcmp(type, "default"))
        return VKLLM_OK;
    if (strcmp(type, "linear"))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "config.json: rope_scaling type \"%.40s\" is not supported (only linear)",
                       type);
    double factor = 0;
    if ((s = cfg_f64(rs, "factor", 0, &factor)))
        return vk_fail_prefix(s, "rope_scaling");
    if (!(factor > 0))
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: rope_scaling factor %g is not positive", factor);
    if ((s = put_str(b, akey(b, "rope.scaling.type"), "linear")) ||
        (s = put_f32(b, akey(b, "rope.scaling.factor"), factor)))
        return s;
    return VKLLM_OK;
}

/* llama, mistral, qwen2: keys as llama.cpp's converter writes them. */
static vkllm_status llama_metadata(builder *b)
{
    const json_value *c = b->cfg;
    uint32_t hidden = 0, layers = 0, heads = 0, heads_kv = 0, ff = 0, ctx = 0, head_dim = 0, window = 0;
    double eps = 0, theta = 0;
    bool swa = false;
    const char *act;
    vkllm_status s;
    if ((s = cfg_u32(c, "hidden_size", 1, 0, &hidden)) || (s = cfg_u32(c, "num_hidden_layers", 1, 0, &layers)) ||
        (s = cfg_u32(c, "num_attention_heads", 1, 0, &heads)) ||
        (s = cfg_u32(c, "num_key_value_heads", 0, heads, &heads_kv)) ||
        (s = cfg_u32(c, "intermediate_size", 1, 0, &ff)) ||
        (s = cfg_u32(c, "max_position_embeddings", 0, 2048, &ctx)) ||
        (s = cfg_f64(c, "rms_norm_eps", 1e-6, &eps)) || (s = cfg_f64(c, "rope_theta", 10000.0, &theta)) ||
        (s = cfg_str(c, "hidden_act", &act)))
        return s;
    if (heads == 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "config.json: num_attention_heads is 0");
    if ((s = cfg_u32(c, "head_dim", 0, hidden / heads, &head_dim)))
        return s;
    if (act && strcmp(act, "silu"))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "config.json: hidden_act \"%.40s\" is not supported for %s (only silu)",
                       act, b->arch);
    if (!strcmp(b->arch, "qwen2") && (s = cfg_bool(c, "use_sliding_window", false, &swa)))
        return s;
    if (swa)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "config.json: qwen2 with use_sliding_window is not supported");
    const char *type;
    if ((s = cfg_str(c, "model_type", &type)))
        return s;
    if (type && !strcmp(type, "mistral") && (s = cfg_u32(c, "sliding_window", 0, 0, &window)))
        return s;
    b->n_layer = layers;
    if ((s = put_u32(b, akey(b, "context_length"), ctx)) || (s = put_u32(b, akey(b, "embedding_length"), hidden)) ||
        (s = put_u32(b, akey(b, "block_count"), layers)) || (s = put_u32(b, akey(b, "feed_forward_length"), ff)) ||
        (s = put_u32(b, akey(b, "attention.head_count"), heads)) ||
        (s = put_u32(b, akey(b, "attention.head_count_kv"), heads_kv)) ||
        (s = put_f32(b, akey(b, "attention.layer_norm_rms_epsilon"), eps)) ||
        (s = put_f32(b, akey(b, "rope.freq_base"), theta)) ||
        (s = put_u32(b, akey(b, "rope.dimension_count"), head_dim)) ||
        (s = put_bool(b, "vkllm.rope.half", true)))
        return s;
    if (head_dim != hidden / heads &&
        ((s = put_u32(b, akey(b, "attention.key_length"), head_dim)) ||
         (s = put_u32(b, akey(b, "attention.value_length"), head_dim))))
        return s;
    if (window && (s = put_u32(b, akey(b, "attention.sliding_window"), window)))
        return s;
    return rope_scaling(b);
}

/* OPT and Galactica: pre-LayerNorm with biases, learned positions, ReLU (OPT) or GELU
 * (Galactica). Variants the graph does not build are refused by what they need. */
static vkllm_status opt_metadata(builder *b)
{
    const json_value *c = b->cfg;
    uint32_t hidden = 0, layers = 0, heads = 0, ff = 0, ctx = 0, proj = 0;
    bool ln_before = true, remove_final = false, affine = true;
    const char *act;
    vkllm_status s;
    if ((s = cfg_u32(c, "hidden_size", 1, 0, &hidden)) || (s = cfg_u32(c, "num_hidden_layers", 1, 0, &layers)) ||
        (s = cfg_u32(c, "num_attention_heads", 1, 0, &heads)) || (s = cfg_u32(c, "ffn_dim", 1, 0, &ff)) ||
        (s = cfg_u32(c, "max_position_embeddings", 1, 0, &ctx)) ||
        (s = cfg_u32(c, "word_embed_proj_dim", 0, hidden, &proj)) ||
        (s = cfg_bool(c, "do_layer_norm_before", true, &ln_before)) ||
        (s = cfg_bool(c, "_remove_final_layer_norm", false, &remove_final)) ||
        (s = cfg_bool(c, "layer_norm_elementwise_affine", true, &affine)) ||
        (s = cfg_str(c, "activation_function", &act)))
        return s;
    if (proj != hidden)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "config.json: OPT with word_embed_proj_dim %u != hidden_size %u (project_in/project_out, "
                       "as in opt-350m) is not supported", proj, hidden);
    if (!ln_before)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "config.json: OPT with do_layer_norm_before = false (post-LayerNorm, as in opt-350m) is not "
                       "supported");
    if (remove_final)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "config.json: OPT with _remove_final_layer_norm = true is not supported");
    if (!affine)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "config.json: OPT with layer_norm_elementwise_affine = false is not supported");
    const char *ffn_act;
    if (!act || !strcmp(act, "relu"))
        ffn_act = "relu";
    else if (!strcmp(act, "gelu"))
        ffn_act = "gelu_erf"; /* transformers' "gelu" is the exact form */
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
        ffn_act = "gelu";
    else
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "config.json: OPT activation_function \"%.40s\" is not supported (relu, gelu, gelu_new)", act);
    b->n_layer = layers;
    if ((s = put_u32(b, akey(b, "context_length"), ctx)) || (s = put_u32(b, akey(b, "embedding_length"), hidden)) ||
        (s = put_u32(b, akey(b, "block_count"), layers)) || (s = put_u32(b, akey(b, "feed_forward_length"), ff)) ||
        (s = put_u32(b, akey(b, "attention.head_count"), heads)) ||
        (s = put_u32(b, akey(b, "attention.head_count_kv"), heads)) ||
        (s = put_f32(b, akey(b, "attention.layer_norm_epsilon"), 1e-5)) || /* nn.LayerNorm's default */
        (s = put_str(b, "vkllm.ffn_activation", ffn_act)))
        return s;
    return VKLLM_OK;
}

static const family families[] = {
    {"llama", "llama", llama_global, "layers.", llama_layer, llama_ignored, llama_metadata},
    {"mistral", "llama", llama_global, "layers.", llama_layer, llama_ignored, llama_metadata},
    {"qwen2", "qwen2", llama_global, "layers.", llama_layer, llama_ignored, llama_metadata},
    {"opt", "opt", opt_global, "decoder.layers.", opt_layer, no_ignored, opt_metadata},
};

/* ---- tensor names -------------------------------------------------------------------- */

/* The GGUF name of HF tensor `name` into out: 1 mapped, 0 ignored; an error for a name
 * the family does not know. */
static vkllm_status map_name(const builder *b, const family *fam, const char *name, char *out, size_t cap,
                             int *mapped)
{
    const char *n = name;
    *mapped = 0;
    if (!strncmp(n, "model.", 6))
        n += 6;
    for (const name_map *m = fam->global; m->hf; m++)
        if (!strcmp(n, m->hf)) {
            snprintf(out, cap, "%s", m->gguf);
            *mapped = 1;
            return VKLLM_OK;
        }
    size_t pl = strlen(fam->layer_prefix);
    if (!strncmp(n, fam->layer_prefix, pl)) {
        const char *p = n + pl;
        uint64_t layer = 0;
        const char *digits = p;
        while (*p >= '0' && *p <= '9' && layer <= 0xffffffffu)
            layer = layer * 10 + (uint64_t)(*p++ - '0');
        const char *dot = strrchr(p, '.');
        if (p > digits && *p == '.' && dot && dot > p) {
            if (layer >= b->n_layer)
                return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %.*s: layer %llu, but config.json has %u layers",
                               NAME_SHOWN, name, (unsigned long long)layer, b->n_layer);
            size_t mod_len = (size_t)(dot - (p + 1));
            const char *param = dot + 1;
            for (const char *const *ig = fam->ignored; *ig; ig++)
                if (strlen(*ig) == mod_len && !strncmp(p + 1, *ig, mod_len))
                    return VKLLM_OK;
            if (!strcmp(param, "weight") || !strcmp(param, "bias"))
                for (const name_map *m = fam->layer; m->hf; m++)
                    if (strlen(m->hf) == mod_len && !strncmp(p + 1, m->hf, mod_len)) {
                        snprintf(out, cap, "blk.%u.%s.%s", (unsigned)layer, m->gguf, param);
                        *mapped = 1;
                        return VKLLM_OK;
                    }
        }
    }
    return vk_fail(VKLLM_ERR_UNSUPPORTED,
                   "tensor %.*s: not a weight vkllm knows for model_type %s (a variant it does not build?)", NAME_SHOWN,
                   name, fam->model_type);
}

/* Adds HF tensor t as GGUF tensor `name`, pointing at its bytes. */
static vkllm_status add_tensor(builder *b, const st_tensor *t, const char *name)
{
    uint32_t type;
    switch (t->dtype) {
    case ST_F32: type = GGML_F32; break;
    case ST_F16: type = GGML_F16; break;
    case ST_BF16: type = GGML_BF16; break;
    default:
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %.*s has dtype %s; only F32, F16 and BF16 are supported",
                       NAME_SHOWN, t->name, st_dtype_name(t->dtype));
    }
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %.*s has %u dimensions; 1 to %d are supported", NAME_SHOWN,
                       t->name, t->n_dims, GGUF_MAX_DIMS);
    gguf_tensor *g = &b->f->tensors[b->f->n_tensors];
    memset(g, 0, sizeof *g);
    if (!(g->name = strdup(name)))
        return no_memory();
    b->f->n_tensors++;
    g->n_dims = t->n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        g->ne[d] = d < t->n_dims ? t->shape[t->n_dims - 1 - d] : 1;
    g->type = type;
    g->offset = t->begin;
    g->size = t->size;
    g->data = t->data;
    return VKLLM_OK;
}

/* ---- GPTQ and AWQ ------------------------------------------------------------------------ */

/* The tensors of a quantized linear layer NAME, in each format. */
static const char *const gptq_parts[] = {".qweight", ".qzeros", ".scales", ".g_idx", NULL};
static const char *const awq_parts[] = {".qweight", ".qzeros", ".scales", NULL};

static const char *const *parts_of(const builder *b) { return b->quant == QUANT_GPTQ ? gptq_parts : awq_parts; }

/* Which part of a quantized layer `name` is (its index in parts_of), or -1. */
static int quant_part(const builder *b, const char *name)
{
    size_t n = strlen(name);
    const char *const *parts = parts_of(b);
    for (int i = 0; b->quant && parts[i]; i++) {
        size_t k = strlen(parts[i]);
        if (n > k && !strcmp(name + n - k, parts[i]))
            return i;
    }
    return -1;
}

static const st_tensor *find_in_shards(const builder *b, const char *name)
{
    for (uint32_t i = 0; i < b->own->n_shards; i++) {
        const st_tensor *t = st_find(b->own->shards[i], name);
        if (t)
            return t;
    }
    return NULL;
}

static uint32_t rd_i32(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* A 4-bit linear layer as its packed tensors hold it: w[o][i] = scale[g][o] * (q[i][o] -
 * zero[g][o]) with g = group(i).
 *   GPTQ: qweight int32 [in/8, out] (input 8r+j in bits 4j of row r), qzeros int32
 *         [groups, out/8] (output 8c+j in bits 4j; stored minus one in format v1), g_idx
 *         int32 [in] the group of each input (act-order spreads a group over the inputs).
 *   AWQ (AutoAWQ's GEMM layout): qweight int32 [in, out/8] and qzeros int32 [groups, out/8],
 *         8 outputs a word in the order 0 2 4 6 1 3 5 7; groups of in/groups inputs.
 *   Both: scales fp16 [groups, out]. */
typedef struct packed_linear {
    const uint8_t *q, *z, *s, *g_idx;
    uint64_t in, out, group_size;
    int awq, zero_plus_one;
} packed_linear;

static const unsigned awq_shift[8] = {0, 16, 4, 20, 8, 24, 12, 28}; /* output 8c+j's bits */

static uint32_t pl_q(const packed_linear *l, uint64_t i, uint64_t o)
{
    if (l->awq)
        return (rd_i32(l->q + 4 * (i * (l->out / 8) + o / 8)) >> awq_shift[o % 8]) & 15u;
    return (rd_i32(l->q + 4 * (i / 8 * l->out + o)) >> (4 * (i % 8))) & 15u;
}

static uint32_t pl_group(const packed_linear *l, uint64_t i)
{
    return l->awq ? (uint32_t)(i / l->group_size) : rd_i32(l->g_idx + 4 * i);
}

static float pl_zero(const packed_linear *l, uint32_t g, uint64_t o)
{
    uint32_t word = rd_i32(l->z + 4 * (g * (l->out / 8) + o / 8));
    return (float)(((word >> (l->awq ? awq_shift[o % 8] : 4 * (o % 8))) & 15u) + (uint32_t)l->zero_plus_one);
}

static float pl_scale(const packed_linear *l, uint32_t g, uint64_t o)
{
    const uint8_t *p = l->s + 2 * (g * l->out + o);
    return vk_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8));
}

/* Quantized layer `base` as a ggml matrix of `out` rows of `in`: Q4_1 when each block of 32
 * inputs lies in one group (the quants as they are, d = the scale, m = -scale * zero),
 * else F16 (act-order GPTQ). */
static vkllm_status add_packed_linear(builder *b, const char *base, const char *name)
{
    const char *const *parts = parts_of(b);
    const st_tensor *t[4] = {0};
    char part[300];
    for (int i = 0; parts[i]; i++) {
        snprintf(part, sizeof part, "%.255s%s", base, parts[i]);
        if (!(t[i] = find_in_shards(b, part)))
            return vk_fail(VKLLM_ERR_BAD_FILE, "%s layer %.*s has no %s tensor", b->quant == QUANT_GPTQ ? "GPTQ" : "AWQ",
                           NAME_SHOWN, base, parts[i]);
    }
    const st_tensor *qw = t[0], *qz = t[1], *sc = t[2], *gi = t[3];
    packed_linear l = {qw->data, qz->data, sc->data, gi ? gi->data : NULL, 0, 0, 0, b->quant == QUANT_AWQ,
                       b->quant == QUANT_GPTQ && !b->gptq_v2};
    if (qw->dtype != ST_I32 || qz->dtype != ST_I32 || sc->dtype != ST_F16 || (gi && gi->dtype != ST_I32) ||
        qw->n_dims != 2 || qz->n_dims != 2 || sc->n_dims != 2 || (gi && gi->n_dims != 1))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "quantized layer %.*s: expected qweight, qzeros int32 [2-D], scales fp16 "
                       "[2-D]%s", NAME_SHOWN, base, gi ? " and g_idx int32 [1-D]" : "");
    uint64_t groups = sc->shape[0];
    l.in = l.awq ? qw->shape[0] : qw->shape[0] * 8;
    l.out = l.awq ? qw->shape[1] * 8 : qw->shape[1];
    l.group_size = groups ? l.in / groups : 0;
    if (!l.in || !l.out || !groups || sc->shape[1] != l.out || qz->shape[0] != groups || qz->shape[1] * 8 != l.out ||
        (gi && gi->shape[0] != l.in) || (l.awq && l.in % groups) || l.in > 1u << 20 || l.out > 1u << 20 ||
        groups > l.in)
        return vk_fail(VKLLM_ERR_BAD_FILE, "quantized layer %.*s: shapes qweight [%llu, %llu], qzeros [%llu, %llu], "
                       "scales [%llu, %llu] do not fit together", NAME_SHOWN, base,
                       (unsigned long long)qw->shape[0], (unsigned long long)qw->shape[1],
                       (unsigned long long)qz->shape[0], (unsigned long long)qz->shape[1],
                       (unsigned long long)sc->shape[0], (unsigned long long)sc->shape[1]);
    int blocks_share = l.in % 32 == 0;
    for (uint64_t i = 0; i < l.in; i++) {
        uint32_t g = pl_group(&l, i);
        if (g >= groups)
            return vk_fail(VKLLM_ERR_BAD_FILE, "GPTQ layer %.*s: g_idx[%llu] = %u, but there are %llu groups",
                           NAME_SHOWN, base, (unsigned long long)i, g, (unsigned long long)groups);
        blocks_share &= i % 32 == 0 || g == pl_group(&l, i - i % 32);
    }
    uint32_t type = blocks_share ? GGML_Q4_1 : GGML_F16;
    uint64_t row = ggml_row_bytes(type, l.in);
    uint8_t *data = malloc(row * l.out);
    float *w = type == GGML_F16 ? malloc(l.in * sizeof *w) : NULL;
    void **blobs = realloc(b->own->blobs, (b->own->n_blobs + 1) * sizeof *blobs);
    if (blobs)
        b->own->blobs = blobs;
    if (!data || !blobs || (type == GGML_F16 && !w)) {
        free(data);
        free(w);
        return no_memory();
    }
    b->own->blobs[b->own->n_blobs++] = data;
    for (uint64_t o = 0; o < l.out; o++) {
        uint8_t *r = data + o * row;
        if (type == GGML_Q4_1) {
            for (uint64_t blk = 0; blk < l.in / 32; blk++) {
                uint32_t g = pl_group(&l, 32 * blk);
                float d = pl_scale(&l, g, o);
                uint8_t q[32];
                for (int k = 0; k < 32; k++)
                    q[k] = (uint8_t)pl_q(&l, 32 * blk + (uint64_t)k, o);
                vk_pack_q_1(GGML_Q4_1, r + blk * ggml_traits(GGML_Q4_1).block_bytes, d, -(d * pl_zero(&l, g, o)), q);
            }
        } else {
            for (uint64_t i = 0; i < l.in; i++) {
                uint32_t g = pl_group(&l, i);
                w[i] = pl_scale(&l, g, o) * ((float)pl_q(&l, i, o) - pl_zero(&l, g, o));
            }
            vk_quantize_row(GGML_F16, w, r, l.in);
        }
    }
    free(w);
    gguf_tensor *gt = &b->f->tensors[b->f->n_tensors];
    memset(gt, 0, sizeof *gt);
    if (!(gt->name = strdup(name)))
        return no_memory();
    b->f->n_tensors++;
    gt->n_dims = 2;
    gt->ne[0] = l.in, gt->ne[1] = l.out, gt->ne[2] = gt->ne[3] = 1;
    gt->type = type;
    gt->size = row * l.out;
    gt->data = data;
    return VKLLM_OK;
}

/* config.json's quantization_config: none, GPTQ with 4 bits (formats gptq, gptq_v2), or AWQ
 * with 4 bits in the GEMM layout with zero points. */
static vkllm_status read_quantization(builder *b)
{
    const json_value *qc = cfg_get(b->cfg, "quantization_config");
    if (!qc)
        return VKLLM_OK;
    const char *method = NULL, *format = NULL, *version = NULL;
    uint32_t bits = 0;
    bool zero_point = true;
    const json_value *m = json_get(qc, "quant_method"), *f = json_get(qc, "checkpoint_format"),
                     *v = json_get(qc, "version");
    if (m && m->type == JSON_STRING)
        method = m->u.str;
    if (f && f->type == JSON_STRING)
        format = f->u.str;
    if (v && v->type == JSON_STRING)
        version = v->u.str;
    vkllm_status s = cfg_u32(qc, "bits", 0, 0, &bits);
    if (!s)
        s = cfg_bool(qc, "zero_point", true, &zero_point);
    if (s)
        return vk_fail_prefix(s, "quantization_config");
    int gptq = method && !strcmp(method, "gptq") && (!format || !strcmp(format, "gptq") || !strcmp(format, "gptq_v2"));
    int awq = method && !strcmp(method, "awq") && (!version || !strcmp(version, "gemm") || !strcmp(version, "GEMM")) &&
              zero_point;
    if (bits != 4 || (!gptq && !awq))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "quantization_config: quant_method \"%.20s\", %u bits, format \"%.20s\": "
                       "only GPTQ (formats gptq, gptq_v2) and AWQ (GEMM, with zero points) with 4 bits are supported",
                       method ? method : "?", bits, format ? format : version ? version : "-");
    b->quant = gptq ? QUANT_GPTQ : QUANT_AWQ;
    b->gptq_v2 = gptq && format && !strcmp(format, "gptq_v2");
    return VKLLM_OK;
}

typedef struct name_ref {
    const char *name;
    uint64_t index;
} name_ref;

static int compare_refs(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

static vkllm_status check_unique(const gguf_file *f)
{
    name_ref *refs = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *refs);
    if (!refs)
        return no_memory();
    for (uint64_t i = 0; i < f->n_tensors; i++)
        refs[i] = (name_ref){f->tensors[i].name, i};
    qsort(refs, f->n_tensors, sizeof *refs, compare_refs);
    vkllm_status s = VKLLM_OK;
    for (uint64_t i = 1; i < f->n_tensors && !s; i++)
        if (!strcmp(refs[i].name, refs[i - 1].name))
            s = vk_fail(VKLLM_ERR_BAD_FILE, "two tensors of the folder map to %s (one under a \"model.\" prefix, one "
                        "without?)", refs[i].name);
    free(refs);
    return s;
}

/* ---- shards -------------------------------------------------------------------------- */

static int shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    static const char ext[] = ".safetensors";
    return n > sizeof ext - 1 && n < 256 && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\') &&
           !strcmp(s + n - (sizeof ext - 1), ext);
}

static vkllm_status add_shard(builder *b, const char *file)
{
    hf_owner *o = b->own;
    for (uint32_t i = 0; i < o->n_shards; i++)
        if (!strcmp(o->shard_names[i], file))
            return VKLLM_OK;
    if (o->n_shards >= HF_MAX_SHARDS)
        return vk_fail(VKLLM_ERR_BAD_FILE, "the index names more than %u shards", HF_MAX_SHARDS);
    st_file **shards = realloc(o->shards, (o->n_shards + 1) * sizeof *shards);
    if (shards)
        o->shards = shards;
    char **names = realloc(o->shard_names, (o->n_shards + 1) * sizeof *names);
    if (names)
        o->shard_names = names;
    char *copy = strdup(file);
    if (!shards || !names || !copy) {
        free(copy);
        return no_memory();
    }
    char path[4096];
    vkllm_status s = join(path, sizeof path, b->dir, file);
    st_file *st = NULL;
    if (!s)
        s = st_open(path, &st);
    if (s) {
        free(copy);
        return s;
    }
    o->shards[o->n_shards] = st;
    o->shard_names[o->n_shards] = copy;
    o->n_shards++;
    return VKLLM_OK;
}

/* The index's weight_map: every value a valid shard file name; each shard opened once. */
static vkllm_status open_indexed(builder *b, const char *index_path, json_doc **index_out,
                                 const json_value **map_out)
{
    vkllm_status s = read_json(index_path, index_out);
    if (s)
        return s;
    const json_value *map = json_get(json_root(*index_out), "weight_map");
    if (!map || map->type != JSON_OBJECT)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: no \"weight_map\" object", index_path);
    for (uint32_t i = 0; i < map->n; i++) {
        const json_member *m = &map->u.members[i];
        if (m->value.type != JSON_STRING || !shard_name_ok(m->value.u.str) || strlen(m->value.u.str) != m->value.n)
            return vk_fail(VKLLM_ERR_BAD_FILE,
                           "%s: weight_map entry %.*s does not name a .safetensors file in the folder", index_path,
                           NAME_SHOWN, m->key);
        if ((s = add_shard(b, m->value.u.str)))
            return s;
    }
    *map_out = map;
    return VKLLM_OK;
}

/* ---- the folder ---------------------------------------------------------------------- */

static vkllm_status build(builder *b)
{
    char path[4096];
    json_doc *cfg_doc = NULL, *index_doc = NULL;
    const json_value *weight_map = NULL;
    vkllm_status s;

    if ((s = join(path, sizeof path, b->dir, "config.json")))
        return s;
    if (!file_exists(path))
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: no config.json: not a Hugging Face model folder", b->dir);
    if ((s = read_json(path, &cfg_doc)))
        return s;
    b->cfg = json_root(cfg_doc);
    if (b->cfg->type != JSON_OBJECT) {
        s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: the config is %s, expected an object", path, json_type_name(b->cfg->type));
        goto done;
    }
    const char *model_type;
    if ((s = cfg_str(b->cfg, "model_type", &model_type))) {
        vk_fail_prefix(s, "%s", b->dir);
        goto done;
    }
    if (!model_type) {
        s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: no \"model_type\"", path);
        goto done;
    }
    const family *fam = NULL;
    for (size_t i = 0; i < sizeof families / sizeof *families; i++)
        if (!strcmp(families[i].model_type, model_type))
            fam = &families[i];
    if (!fam) {
        s = vk_fail(VKLLM_ERR_UNSUPPORTED,
                    "%s: model_type \"%.40s\" is not supported from a Hugging Face folder (supported: llama, mistral, "
                    "qwen2, opt)", path, model_type);
        goto done;
    }
    b->arch = fam->arch;
    const char *slash = strrchr(b->dir, '/');
    const char *base = slash && slash[1] ? slash + 1 : b->dir;
    if ((s = put_str(b, "general.architecture", fam->arch)) || (s = put_str(b, "general.name", base)) ||
        (s = put_str(b, "vkllm.hf.model_type", model_type)))
        goto done;
    if ((s = fam->metadata(b)) || (s = read_quantization(b))) {
        vk_fail_prefix(s, "%s", b->dir);
        goto done;
    }

    /* The shards: listed by the index, or the single file. */
    if ((s = join(path, sizeof path, b->dir, "model.safetensors.index.json")))
        goto done;
    if (file_exists(path)) {
        if ((s = open_indexed(b, path, &index_doc, &weight_map)))
            goto done;
    } else {
        if ((s = join(path, sizeof path, b->dir, "model.safetensors")))
            goto done;
        if (!file_exists(path)) {
            s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: neither model.safetensors nor model.safetensors.index.json", b->dir);
            goto done;
        }
        if ((s = add_shard(b, "model.safetensors")))
            goto done;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < b->own->n_shards; i++)
        total += b->own->shards[i]->n_tensors;
    b->f->tensors = calloc(total ? total : 1, sizeof *b->f->tensors);
    if (!b->f->tensors) {
        s = no_memory();
        goto done;
    }
    for (uint32_t i = 0; i < b->own->n_shards && !s; i++) {
        const st_file *st = b->own->shards[i];
        const char *file = b->own->shard_names[i];
        for (uint64_t j = 0; j < st->n_tensors && !s; j++) {
            const st_tensor *t = &st->tensors[j];
            if (weight_map) {
                const json_value *listed = json_get(weight_map, t->name);
                if (!listed || strcmp(listed->u.str, file)) {
                    s = vk_fail(VKLLM_ERR_BAD_FILE, "%s/%s holds tensor %.*s, which the index %s", b->dir, file,
                                NAME_SHOWN, t->name, listed ? "places in another shard" : "does not list");
                    break;
                }
            }
            char name[128];
            int mapped, part = quant_part(b, t->name);
            if (part >= 0) {
                /* A quantized layer becomes one matrix, made when its qweight comes. */
                char layer[256], weight[300], base_q[320];
                snprintf(layer, sizeof layer, "%.*s", (int)(strlen(t->name) - strlen(parts_of(b)[part])), t->name);
                snprintf(weight, sizeof weight, "%s.weight", layer);
                snprintf(base_q, sizeof base_q, "%s.qweight", layer);
                if (!(s = map_name(b, fam, weight, name, sizeof name, &mapped)) && mapped) {
                    if (part == 0)
                        s = add_packed_linear(b, layer, name);
                    else if (!find_in_shards(b, base_q))
                        s = vk_fail(VKLLM_ERR_BAD_FILE, "tensor %.*s: no %s beside it in this %s checkpoint",
                                    NAME_SHOWN, t->name, base_q, b->quant == QUANT_GPTQ ? "GPTQ" : "AWQ");
                }
            } else if (!(s = map_name(b, fam, t->name, name, sizeof name, &mapped)) && mapped) {
                s = add_tensor(b, t, name);
            }
            if (s)
                vk_fail_prefix(s, "%s/%s", b->dir, file);
        }
    }
    if (s)
        goto done;
    /* Every tensor the index lists must be in its shard. */
    for (uint32_t i = 0; weight_map && i < weight_map->n; i++) {
        const json_member *m = &weight_map->u.members[i];
        for (uint32_t k = 0; k < b->own->n_shards; k++)
            if (!strcmp(b->own->shard_names[k], m->value.u.str) && !st_find(b->own->shards[k], m->key)) {
                s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: the index places tensor %.*s in %s, which does not hold it",
                            b->dir, NAME_SHOWN, m->key, m->value.u.str);
                goto done;
            }
    }
    if ((s = check_unique(b->f))) {
        vk_fail_prefix(s, "%s", b->dir);
        goto done;
    }

    /* The config against the tensors. */
    const gguf_tensor *embd = gguf_find_tensor(b->f, "token_embd.weight");
    uint32_t vocab;
    if (!embd) {
        s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: no token embedding (embed_tokens.weight)", b->dir);
        goto done;
    }
    bool tied;
    if ((s = cfg_u32(b->cfg, "vocab_size", 0, (uint32_t)embd->ne[1], &vocab)) ||
        (s = cfg_bool(b->cfg, "tie_word_embeddings", !strcmp(fam->arch, "opt"), &tied))) {
        vk_fail_prefix(s, "%s", b->dir);
        goto done;
    }
    if (vocab != embd->ne[1]) {
        s = vk_fail(VKLLM_ERR_BAD_FILE, "%s: config.json: vocab_size %u, but the token embedding has %llu rows", b->dir,
                    vocab, (unsigned long long)embd->ne[1]);
        goto done;
    }
    if (!tied && !gguf_find_tensor(b->f, "output.weight")) {
        s = vk_fail(VKLLM_ERR_BAD_FILE,
                    "%s: lm_head.weight is missing and config.json does not tie it to the embedding", b->dir);
        goto done;
    }
    /* tokenizer.json, when the folder has one, as tokenizer.ggml.* keys */
    s = hf_tokenizer_add(b->dir, b->cfg, vocab, b->f, &b->cap_kv, &b->own->tokenizer);
done:
    json_free(cfg_doc);
    json_free(index_doc);
    return s;
}

vkllm_status hf_open(const char *dir, gguf_file **out)
{
    *out = NULL;
    if (!hf_is_folder(dir))
        return vk_fail(VKLLM_ERR_IO, "%s is not a directory", dir ? dir : "(null)");
    gguf_file *f = calloc(1, sizeof *f);
    hf_owner *own = calloc(1, sizeof *own);
    if (!f || !own) {
        free(f);
        free(own);
        return no_memory();
    }
    f->version = 3;
    f->alignment = 32;
    f->release = owner_release;
    f->owner = own;
    builder b = {.dir = dir, .f = f, .own = own};
    vkllm_status s = build(&b);
    if (s) {
        gguf_close(f);
        return s;
    }
    *out = f;
    return VKLLM_OK;
}
