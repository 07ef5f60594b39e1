/* The exported entry and the ABI table. Each function checks its arguments, reconciles
 * size-prefixed structs with the caller's version of them, calls the implementation and
 * records any failure on the handle involved. */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "error.h"
#include "merge.h"
#include "plugin.h"

#define PLUGIN_MIN_ABI 1u

/* ---- handle errors ----------------------------------------------------------------- */

void handle_error_init(handle_error *e)
{
    mtx_init(&e->lock, mtx_plain);
    e->message[0] = '\0';
}

void handle_error_destroy(handle_error *e) { mtx_destroy(&e->lock); }

vkllm_status handle_error_record(handle_error *e, vkllm_status status)
{
    if (status != VKLLM_OK && e) {
        mtx_lock(&e->lock);
        strncpy(e->message, vk_error_message(), sizeof e->message - 1);
        e->message[sizeof e->message - 1] = '\0';
        mtx_unlock(&e->lock);
    }
    return status;
}

const char *handle_error_get(handle_error *e)
{
    /* The pointer stays valid; its text changes only on the next failure of this handle. */
    return e ? e->message : "";
}

/* ---- size-prefixed structs ----------------------------------------------------------- */

/* Copies the caller's (possibly older, smaller) struct over a defaults-filled one. */
static vkllm_status read_sized(void *dst, size_t dst_size, const void *src, const char *what)
{
    uint32_t size;
    memcpy(&size, src, sizeof size);
    if (size < sizeof(uint32_t) * 2)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s.size is %u: set it to sizeof(%s)", what, size,
                       what);
    memcpy(dst, src, size < dst_size ? size : dst_size);
    memcpy(dst, &dst_size, sizeof size); /* from here on, the full struct */
    return VKLLM_OK;
}

/* Writes a filled struct back in the caller's size. */
static vkllm_status write_sized(void *dst, const void *src, size_t src_size, const char *what)
{
    uint32_t size;
    memcpy(&size, dst, sizeof size);
    if (size < sizeof(uint32_t) * 2)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s.size is %u: set it to sizeof(%s)", what, size,
                       what);
    memcpy(dst, src, size < src_size ? size : src_size);
    memcpy(dst, &size, sizeof size);
    return VKLLM_OK;
}

/* Writes the defaults in `full` into the caller's struct of `size` bytes: fields the
 * plugin does not know (a newer host) are zeroed, fields it has beyond `size` (an older
 * host) are left out. */
static void write_defaults(void *dst, uint32_t size, void *full, size_t full_size)
{
    if (!dst || size < sizeof(uint32_t))
        return;
    memset(dst, 0, size);
    memcpy(dst, full, size < full_size ? size : full_size);
    memcpy(dst, &size, sizeof size);
}

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond))                                                                        \
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, __VA_ARGS__);                         \
    } while (0)

/* ---- instance ---------------------------------------------------------------------- */

static const char *api_status_string(vkllm_status s) { return vk_status_string(s); }
static const char *api_last_error(void) { return vk_error_message(); }

static void default_instance_desc(vkllm_instance_desc *out)
{
    vkllm_instance_desc d = {.size = sizeof d};
    d.device_index = -1;
    d.log_level = VKLLM_LOG_WARN;
    *out = d;
}

static void api_instance_desc_defaults(vkllm_instance_desc *d, uint32_t size)
{
    vkllm_instance_desc full;
    default_instance_desc(&full);
    write_defaults(d, size, &full, sizeof full);
}

static vkllm_status api_instance_create(const vkllm_instance_desc *desc_in, vkllm_instance *out)
{
    vk_error_clear();
    REQUIRE(desc_in && out, "instance_create: desc and out must not be NULL");
    *out = NULL;
    vkllm_instance_desc desc;
    default_instance_desc(&desc);
    vkllm_status s = read_sized(&desc, sizeof desc, desc_in, "vkllm_instance_desc");
    if (s)
        return s;
    vkllm_instance inst = calloc(1, sizeof *inst);
    if (!inst)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    handle_error_init(&inst->error);
    vkr_device_desc dd = {
        .device_name = desc.device_name,
        .device_index = desc.device_index,
        .validation = desc.enable_validation != 0,
        .log_fn = desc.log_fn,
        .log_user = desc.log_user,
        .log_level = desc.log_level,
    };
    s = vkr_device_create(&dd, &inst->dev);
    if (s) {
        handle_error_destroy(&inst->error);
        free(inst);
        return s;
    }
    *out = inst;
    return VKLLM_OK;
}

static vkllm_status api_instance_destroy(vkllm_instance inst)
{
    if (!inst)
        return VKLLM_OK;
    if (atomic_load(&inst->n_models) != 0)
        return handle_error_record(
            &inst->error, vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                  "instance_destroy: %d models are still loaded; free them first",
                                  atomic_load(&inst->n_models)));
    vkllm_status s = vkr_device_destroy(inst->dev);
    handle_error_destroy(&inst->error);
    free(inst);
    return s;
}

static const char *api_instance_error(vkllm_instance inst)
{
    return inst ? handle_error_get(&inst->error) : "";
}

static vkllm_status api_device_count(vkllm_instance inst, uint32_t *out)
{
    REQUIRE(inst && out, "device_count: NULL argument");
    *out = inst->dev->n_physical;
    return VKLLM_OK;
}

static vkllm_status api_device_info(vkllm_instance inst, uint32_t index, vkllm_device_info *info)
{
    REQUIRE(inst && info, "device_info: NULL argument");
    if (index >= inst->dev->n_physical)
        return handle_error_record(&inst->error,
                                   vk_fail(VKLLM_ERR_NOT_FOUND, "device_info: index %u out of range (%u devices)",
                                           index, inst->dev->n_physical));
    return handle_error_record(&inst->error, write_sized(info, &inst->dev->infos[index],
                                                         sizeof *info, "vkllm_device_info"));
}

static vkllm_status api_selected_device(vkllm_instance inst, uint32_t *out)
{
    REQUIRE(inst && out, "selected_device: NULL argument");
    *out = inst->dev->selected;
    return VKLLM_OK;
}

static vkllm_status api_instance_stats(vkllm_instance inst, vkllm_instance_stats *stats)
{
    REQUIRE(inst && stats, "instance_stats: NULL argument");
    vkllm_instance_stats st = {
        .size = sizeof st,
        .validation_messages = atomic_load(&inst->dev->validation_messages),
        .live_vulkan_objects = (uint64_t)atomic_load(&inst->dev->live_objects),
        .device_bytes_allocated = inst->dev->bytes_allocated,
    };
    return write_sized(stats, &st, sizeof st, "vkllm_instance_stats");
}

/* ---- model ------------------------------------------------------------------------- */

static void default_model_params(vkllm_model_params *out)
{
    *out = (vkllm_model_params){.size = sizeof *out};
}

static vkllm_status load_with(vkllm_instance inst, const vkllm_model_params *params_in, const vkllm_lora *loras,
                              uint32_t n_loras, vkllm_model *out)
{
    vk_error_clear();
    REQUIRE(inst && params_in && out, "model_load: NULL argument");
    *out = NULL;
    vkllm_model_params params;
    default_model_params(&params);
    vkllm_status s = read_sized(&params, sizeof params, params_in, "vkllm_model_params");
    if (!s && !params.path)
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "model_load: params.path is NULL");
    if (!s && n_loras && !loras)
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "model_load_lora: NULL adapters");
    if (!s)
        s = model_load(inst, &params, loras, n_loras, out);
    return handle_error_record(&inst->error, s);
}

static vkllm_status api_model_load(vkllm_instance inst, const vkllm_model_params *params, vkllm_model *out)
{
    return load_with(inst, params, NULL, 0, out);
}

static vkllm_status api_model_load_lora(vkllm_instance inst, const vkllm_model_params *params,
                                        const vkllm_lora *loras, uint32_t n_loras, vkllm_model *out)
{
    return load_with(inst, params, loras, n_loras, out);
}

static void api_model_params_defaults(vkllm_model_params *p, uint32_t size)
{
    vkllm_model_params full;
    default_model_params(&full);
    write_defaults(p, size, &full, sizeof full);
}

static vkllm_status api_model_free(vkllm_model model)
{
    if (!model)
        return VKLLM_OK;
    if (model_context_count(model) != 0)
        return handle_error_record(model_error_of(model),
                                   vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                           "model_free: %d contexts still use the model; free them first",
                                           model_context_count(model)));
    model_free(model);
    return VKLLM_OK;
}

static const char *api_model_error(vkllm_model m) { return m ? handle_error_get(model_error_of(m)) : ""; }

static vkllm_status api_model_info(vkllm_model m, vkllm_model_info *info)
{
    REQUIRE(m && info, "model_info: NULL argument");
    vkllm_model_info full = {.size = sizeof full};
    vkllm_status s = model_info(m, &full);
    if (!s)
        s = write_sized(info, &full, sizeof full, "vkllm_model_info");
    return handle_error_record(model_error_of(m), s);
}

#define MODEL_CALL(m, call)                                                                 \
    do {                                                                                    \
        REQUIRE((m), "NULL model");                                                         \
        return handle_error_record(model_error_of(m), (call));                              \
    } while (0)

static vkllm_status api_meta_count(vkllm_model m, uint32_t *out)
{
    REQUIRE(out, "meta_count: out is NULL");
    MODEL_CALL(m, model_meta_count(m, out));
}
static vkllm_status api_meta_key(vkllm_model m, uint32_t i, const char **key)
{
    REQUIRE(key, "meta_key: key is NULL");
    MODEL_CALL(m, model_meta_key(m, i, key));
}
static vkllm_status api_meta_type(vkllm_model m, const char *key, int32_t *type, int32_t *elem,
                                  uint64_t *len)
{
    REQUIRE(key && type, "meta_type: NULL argument");
    MODEL_CALL(m, model_meta_type(m, key, type, elem, len));
}
static vkllm_status api_meta_uint(vkllm_model m, const char *key, uint64_t *out)
{
    REQUIRE(key && out, "meta_uint: NULL argument");
    MODEL_CALL(m, model_meta_uint(m, key, out));
}
static vkllm_status api_meta_int(vkllm_model m, const char *key, int64_t *out)
{
    REQUIRE(key && out, "meta_int: NULL argument");
    MODEL_CALL(m, model_meta_int(m, key, out));
}
static vkllm_status api_meta_float(vkllm_model m, const char *key, double *out)
{
    REQUIRE(key && out, "meta_float: NULL argument");
    MODEL_CALL(m, model_meta_float(m, key, out));
}
static vkllm_status api_meta_string(vkllm_model m, const char *key, const char **out)
{
    REQUIRE(key && out, "meta_string: NULL argument");
    MODEL_CALL(m, model_meta_string(m, key, out));
}

static vkllm_status api_tokenize(vkllm_model m, const char *text, size_t len, int32_t add_special,
                                 int32_t parse_special, vkllm_token *tokens, size_t capacity,
                                 size_t *n_out)
{
    REQUIRE(n_out && (text || len == 0) && (tokens || capacity == 0), "tokenize: NULL argument");
    MODEL_CALL(m, model_tokenize(m, text, len, add_special, parse_special, tokens, capacity, n_out));
}

static vkllm_status api_detokenize(vkllm_model m, const vkllm_token *tokens, size_t n, char *text,
                                   size_t capacity, size_t *n_out)
{
    REQUIRE(n_out && (tokens || n == 0) && (text || capacity == 0), "detokenize: NULL argument");
    MODEL_CALL(m, model_detokenize(m, tokens, n, text, capacity, n_out));
}

static vkllm_status api_token_text(vkllm_model m, vkllm_token token, const char **out)
{
    REQUIRE(out, "token_text: out is NULL");
    MODEL_CALL(m, model_token_text(m, token, out));
}

/* ---- context ----------------------------------------------------------------------- */

static void default_context_params(vkllm_context_params *out)
{
    vkllm_context_params d = {.size = sizeof d};
    d.n_batch = 512;
    d.seed = 0x5eed;
    *out = d;
}

static void api_context_params_defaults(vkllm_context_params *p, uint32_t size)
{
    vkllm_context_params full;
    default_context_params(&full);
    write_defaults(p, size, &full, sizeof full);
}

static vkllm_status api_context_create(vkllm_model m, const vkllm_context_params *params_in,
                                       vkllm_context *out)
{
    vk_error_clear();
    REQUIRE(m && params_in && out, "context_create: NULL argument");
    *out = NULL;
    vkllm_context_params params;
    default_context_params(&params);
    vkllm_status s = read_sized(&params, sizeof params, params_in, "vkllm_context_params");
    if (!s)
        s = context_create(m, &params, out);
    return handle_error_record(model_error_of(m), s);
}

static vkllm_status api_context_free(vkllm_context ctx)
{
    context_free(ctx);
    return VKLLM_OK;
}

static const char *api_context_error(vkllm_context c) { return c ? handle_error_get(context_error_of(c)) : ""; }

#define CONTEXT_CALL(c, call)                                                               \
    do {                                                                                    \
        REQUIRE((c), "NULL context");                                                       \
        return handle_error_record(context_error_of(c), (call));                            \
    } while (0)

static vkllm_status api_decode(vkllm_context c, const vkllm_token *tokens, size_t n, int32_t all)
{
    vk_error_clear();
    REQUIRE(tokens || n == 0, "decode: tokens is NULL");
    CONTEXT_CALL(c, context_decode(c, tokens, n, all));
}

static vkllm_status api_logits(vkllm_context c, const float **out, uint32_t *n_rows, uint32_t *n_vocab)
{
    REQUIRE(out && n_rows && n_vocab, "logits: NULL argument");
    CONTEXT_CALL(c, context_logits(c, out, n_rows, n_vocab));
}

static void default_sampler_params(vkllm_sampler_params *out)
{
    vkllm_sampler_params d = {.size = sizeof d};
    d.temperature = 0.8f;
    d.top_k = 40;
    d.top_p = 0.95f;
    d.min_p = 0.05f;
    d.repeat_penalty = 1.0f;
    d.repeat_last_n = 64;
    *out = d;
}

static void api_sampler_params_defaults(vkllm_sampler_params *p, uint32_t size)
{
    vkllm_sampler_params full;
    default_sampler_params(&full);
    write_defaults(p, size, &full, sizeof full);
}

static vkllm_status api_sample(vkllm_context c, const vkllm_sampler_params *params_in, vkllm_token *out)
{
    REQUIRE(params_in && out, "sample: NULL argument");
    vkllm_sampler_params params;
    default_sampler_params(&params);
    vkllm_status s = read_sized(&params, sizeof params, params_in, "vkllm_sampler_params");
    if (s)
        return s;
    CONTEXT_CALL(c, context_sample(c, &params, out));
}

static vkllm_status api_token_to_text_stream(vkllm_context c, vkllm_token token, char *text,
                                             size_t capacity, size_t *n_out)
{
    REQUIRE(n_out && (text || capacity == 0), "token_to_text_stream: NULL argument");
    CONTEXT_CALL(c, context_token_to_text_stream(c, token, text, capacity, n_out));
}

static vkllm_status api_kv_truncate(vkllm_context c, uint32_t n_keep)
{
    CONTEXT_CALL(c, context_kv_truncate(c, n_keep));
}

static vkllm_status api_context_stats(vkllm_context c, vkllm_context_stats *stats)
{
    REQUIRE(c && stats, "context_stats: NULL argument");
    vkllm_context_stats full = {.size = sizeof full};
    vkllm_status s = context_stats(c, &full);
    if (!s)
        s = write_sized(stats, &full, sizeof full, "vkllm_context_stats");
    return handle_error_record(context_error_of(c), s);
}

static vkllm_status api_measure_bandwidth(vkllm_instance inst, uint64_t bytes, double *gbps)
{
    REQUIRE(inst && gbps, "measure_bandwidth: NULL argument");
    return handle_error_record(&inst->error, vkr_measure_bandwidth(inst->dev, bytes, gbps));
}

static vkllm_status api_profile_entry(vkllm_context c, uint32_t index, const char **label, double *ms,
                                      uint32_t *count)
{
    REQUIRE(label && ms && count, "profile_entry: NULL argument");
    CONTEXT_CALL(c, context_profile_entry(c, index, label, ms, count));
}

static vkllm_status api_chat_apply(vkllm_model m, const char *tmpl, const vkllm_chat_message *messages,
                                   size_t n, int32_t add_assistant, char *text, size_t capacity, size_t *n_out)
{
    if (!m) {
        REQUIRE(tmpl, "chat_apply: with no model, name a format or pass a template");
        return chat_apply_template(tmpl, messages, n, add_assistant != 0, text, capacity, n_out);
    }
    MODEL_CALL(m, model_chat_apply(m, tmpl, messages, n, add_assistant, text, capacity, n_out));
}

static vkllm_status api_token_is_eog(vkllm_model m, vkllm_token token, int32_t *out)
{
    REQUIRE(out, "token_is_eog: out is NULL");
    MODEL_CALL(m, model_token_is_eog(m, token, out));
}

static void api_merge_desc_defaults(vkllm_merge_desc *d, uint32_t size)
{
    vkllm_merge_desc full = {.size = sizeof full, .method = VKLLM_MERGE_LINEAR, .density = 1.0f, .lambda = 1.0f,
                             .normalize = 1};
    write_defaults(d, size, &full, sizeof full);
}

static vkllm_status api_merge(const vkllm_merge_desc *desc)
{
    return merge_files(desc);
}

/* ---- the table --------------------------------------------------------------------- */

static const vkllm_api api_v1 = {
    .struct_size = sizeof(vkllm_api),
    .abi_version = 1,
    .plugin_name = "vkllm-vulkan",
    .plugin_version = "0.1.0",
    .status_string = api_status_string,
    .last_error = api_last_error,
    .instance_desc_defaults = api_instance_desc_defaults,
    .instance_create = api_instance_create,
    .instance_destroy = api_instance_destroy,
    .instance_error = api_instance_error,
    .device_count = api_device_count,
    .device_info = api_device_info,
    .selected_device = api_selected_device,
    .instance_stats = api_instance_stats,
    .model_params_defaults = api_model_params_defaults,
    .model_load = api_model_load,
    .model_free = api_model_free,
    .model_error = api_model_error,
    .model_info = api_model_info,
    .meta_count = api_meta_count,
    .meta_key = api_meta_key,
    .meta_type = api_meta_type,
    .meta_uint = api_meta_uint,
    .meta_int = api_meta_int,
    .meta_float = api_meta_float,
    .meta_string = api_meta_string,
    .tokenize = api_tokenize,
    .detokenize = api_detokenize,
    .token_text = api_token_text,
    .context_params_defaults = api_context_params_defaults,
    .context_create = api_context_create,
    .context_free = api_context_free,
    .context_error = api_context_error,
    .decode = api_decode,
    .logits = api_logits,
    .sampler_params_defaults = api_sampler_params_defaults,
    .sample = api_sample,
    .token_to_text_stream = api_token_to_text_stream,
    .kv_truncate = api_kv_truncate,
    .context_stats = api_context_stats,
    .measure_bandwidth = api_measure_bandwidth,
    .profile_entry = api_profile_entry,
    .chat_apply = api_chat_apply,
    .token_is_eog = api_token_is_eog,
    .merge_desc_defaults = api_merge_desc_defaults,
    .merge = api_merge,
    .model_load_lora = api_model_load_lora,
};

VKLLM_EXPORT vkllm_status vkllm_entry(uint32_t min_version, uint32_t max_version,
                                      const vkllm_api **out)
{
    if (!out)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_entry: out is NULL");
    *out = NULL;
    if (min_version > max_version || max_version < PLUGIN_MIN_ABI || min_version > VKLLM_ABI_VERSION)
        return vk_fail(VKLLM_ERR_ABI_VERSION,
                       "plugin serves ABI versions %u..%u, host asked for %u..%u", PLUGIN_MIN_ABI,
                       VKLLM_ABI_VERSION, min_version, max_version);
    *out = &api_v1; /* version 1 is the only one so far */
    return VKLLM_OK;
}
