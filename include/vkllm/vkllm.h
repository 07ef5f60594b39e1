/*
 * vkllm.h: the stable C ABI of a vkllm backend plugin.
 *
 * A plugin is a shared library exporting exactly one symbol, vkllm_entry. The host
 * calls it with the range of ABI versions it understands and receives a const function
 * table (vkllm_api). The table's first field is its own size in bytes and the table only
 * ever grows by appending: a host compiled against an older header reads only the fields
 * it knows, and a host compiled against a newer header checks `struct_size` (see
 * VKLLM_API_HAS) before calling a field that an older plugin may lack.
 *
 * Conventions (they hold for every function below unless its comment says otherwise):
 *  - Every function returns a vkllm_status. VKLLM_OK is 0. On failure a message
 *    describing the problem is available from api->last_error() on the failing thread,
 *    and from the *_error() function of the handle involved.
 *  - Parameter structs start with `size`. Fill one with its *_defaults(&s, sizeof s)
 *    function, which writes exactly `sizeof s` bytes (the struct as the host compiled it,
 *    older or newer than the plugin's), sets `size`, and gives every field its default.
 *  - Handles are opaque. Memory behind any pointer the plugin returns is owned by the
 *    plugin and stays valid for the lifetime stated at the function; the host never
 *    frees it.
 *  - Threading: an instance and a model may be used from several threads at once; a
 *    context is used by one thread at a time (the host serialises calls on it).
 */
#ifndef VKLLM_H
#define VKLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI versions. A plugin serves every version in [its minimum, VKLLM_ABI_VERSION]. */
#define VKLLM_ABI_VERSION 1u

/* Name of the single exported symbol. */
#define VKLLM_ENTRY_SYMBOL "vkllm_entry"

#if defined(_WIN32)
#define VKLLM_EXPORT __declspec(dllexport)
#else
#define VKLLM_EXPORT __attribute__((visibility("default")))
#endif

/* ---- status codes ------------------------------------------------------------------ */

typedef int32_t vkllm_status;
enum {
    VKLLM_OK = 0,
    VKLLM_ERR_INVALID_ARGUMENT = 1,    /* a NULL handle, a bad size, a value out of range */
    VKLLM_ERR_ABI_VERSION = 2,         /* no ABI version in common with the host */
    VKLLM_ERR_NO_VULKAN_LOADER = 3,    /* libvulkan could not be loaded */
    VKLLM_ERR_NO_DEVICE = 4,           /* no Vulkan device, or the requested one is absent */
    VKLLM_ERR_VULKAN = 5,              /* a Vulkan call failed (the message names it) */
    VKLLM_ERR_OUT_OF_HOST_MEMORY = 6,
    VKLLM_ERR_OUT_OF_DEVICE_MEMORY = 7,
    VKLLM_ERR_IO = 8,                  /* a file could not be opened, mapped or read */
    VKLLM_ERR_BAD_FILE = 9,            /* malformed, truncated or hostile model file */
    VKLLM_ERR_UNSUPPORTED = 10,        /* unknown architecture, tensor type, feature */
    VKLLM_ERR_NOT_IMPLEMENTED = 11,    /* part of the ABI whose implementation is not there yet */
    VKLLM_ERR_TOKEN_OUT_OF_RANGE = 12, /* a token id outside the vocabulary */
    VKLLM_ERR_CONTEXT_FULL = 13,       /* the sequence would exceed the context length */
    VKLLM_ERR_NOT_FOUND = 14,          /* a metadata key or an index that does not exist */
    VKLLM_ERR_BUFFER_TOO_SMALL = 15,   /* the caller's output buffer is too small */
    VKLLM_ERR_INTERNAL = 16            /* a bug in vkllm: please report the message */
};

/* ---- handles ----------------------------------------------------------------------- */

typedef struct vkllm_instance_t *vkllm_instance; /* Vulkan instance + the chosen device */
typedef struct vkllm_model_t *vkllm_model;       /* weights on the device, tokenizer, metadata */
typedef struct vkllm_context_t *vkllm_context;   /* one sequence: KV cache, logits, sampler */

typedef int32_t vkllm_token;

/* ---- logging ----------------------------------------------------------------------- */

typedef enum vkllm_log_level {
    VKLLM_LOG_ERROR = 0,
    VKLLM_LOG_WARN = 1,
    VKLLM_LOG_INFO = 2,
    VKLLM_LOG_DEBUG = 3
} vkllm_log_level;

/* Called from whichever thread logs; `message` is valid only during the call. */
typedef void (*vkllm_log_fn)(void *user, int32_t level, const char *message);

/* Load progress in [0, 1]; return 0 to go on, non-zero to cancel the load. */
typedef int32_t (*vkllm_progress_fn)(void *user, float progress);

/* ---- instance and devices ---------------------------------------------------------- */

typedef enum vkllm_device_type {
    VKLLM_DEVICE_OTHER = 0,
    VKLLM_DEVICE_INTEGRATED = 1,
    VKLLM_DEVICE_DISCRETE = 2,
    VKLLM_DEVICE_VIRTUAL = 3,
    VKLLM_DEVICE_CPU = 4
} vkllm_device_type;

/* Feature bits of vkllm_device_info.features. */
#define VKLLM_FEATURE_FP16_ARITHMETIC (1u << 0)
#define VKLLM_FEATURE_STORAGE_16BIT (1u << 1)
#define VKLLM_FEATURE_STORAGE_8BIT (1u << 2)
#define VKLLM_FEATURE_INT8_ARITHMETIC (1u << 3)
#define VKLLM_FEATURE_SUBGROUP_ARITHMETIC (1u << 4)
#define VKLLM_FEATURE_SUBGROUP_SHUFFLE (1u << 5)
#define VKLLM_FEATURE_COOPERATIVE_MATRIX (1u << 6)
#define VKLLM_FEATURE_INTEGER_DOT_PRODUCT (1u << 7)
#define VKLLM_FEATURE_SUBGROUP_SIZE_CONTROL (1u << 8)

typedef struct vkllm_device_info {
    uint32_t size; /* set by the caller to sizeof(vkllm_device_info) */
    uint32_t index;
    char name[256];
    int32_t type; /* vkllm_device_type */
    uint32_t vendor_id;
    uint32_t device_id;
    uint32_t api_version;    /* VK_MAKE_API_VERSION encoding */
    uint32_t driver_version; /* vendor encoding */
    uint64_t device_local_memory; /* bytes in the largest device-local heap */
    uint64_t max_storage_buffer_range;
    uint32_t subgroup_size;
    uint32_t shared_memory_size; /* maxComputeSharedMemorySize */
    uint32_t features;           /* VKLLM_FEATURE_* as the runtime will use them */
} vkllm_device_info;

typedef struct vkllm_instance_desc {
    uint32_t size;
    /* Device choice: by name substring if `device_name` is non-NULL, else by index if
     * `device_index` >= 0, else the environment variable VKLLM_DEVICE (index or name
     * substring), else the best device: discrete > integrated > virtual > CPU. */
    const char *device_name;
    int32_t device_index;
    /* Enable VK_LAYER_KHRONOS_validation; its messages go to the log as errors and are
     * counted (vkllm_instance_stats.validation_messages). */
    int32_t enable_validation;
    vkllm_log_fn log_fn; /* NULL: log to stderr at WARN and above */
    void *log_user;
    int32_t log_level; /* messages above this level are dropped */
} vkllm_instance_desc;

typedef struct vkllm_instance_stats {
    uint32_t size;
    uint64_t validation_messages;   /* messages from the validation layer so far */
    uint64_t live_vulkan_objects;   /* buffers, memory blocks, pipelines... still alive */
    uint64_t device_bytes_allocated;
} vkllm_instance_stats;

/* ---- models ------------------------------------------------------------------------ */

/* What weight matrices become on the device (vkllm_model_params.weight_type). */
typedef enum vkllm_weight_type {
    VKLLM_WEIGHTS_AS_STORED = 0, /* as in the file */
    VKLLM_WEIGHTS_F32 = 1,       /* dequantized at load: exact, 4 bytes per weight */
    VKLLM_WEIGHTS_F16 = 2,
    VKLLM_WEIGHTS_Q8_0 = 3,      /* quantized at load (rows whose length is a multiple of 32) */
    VKLLM_WEIGHTS_Q4_0 = 4
} vkllm_weight_type;

typedef struct vkllm_model_params {
    uint32_t size;
    const char *path; /* a GGUF file, or a Hugging Face model folder (config.json + *.safetensors) */
    vkllm_progress_fn progress_fn;
    void *progress_user;
    int32_t weight_type; /* vkllm_weight_type; 0 = as stored */
} vkllm_model_params;

/* A LoRA adapter for model_load_lora: a GGUF file in llama.cpp's adapter format (as its
 * convert_lora_to_gguf.py writes it), and the strength it is applied with (1: as trained). */
typedef struct vkllm_lora {
    const char *path;
    float scale;
} vkllm_lora;

typedef struct vkllm_model_info {
    uint32_t size;
    char architecture[64]; /* GGUF general.architecture, e.g. "llama" */
    char name[256];        /* general.name, or empty */
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint64_t n_params;
    uint64_t weight_bytes; /* bytes of weights on the device */
    vkllm_token bos;       /* -1 when absent */
    vkllm_token eos;       /* -1 when absent */
} vkllm_model_info;

typedef enum vkllm_meta_type {
    VKLLM_META_UINT = 0,   /* any unsigned GGUF integer, and bool */
    VKLLM_META_INT = 1,    /* any signed GGUF integer */
    VKLLM_META_FLOAT = 2,  /* f32 or f64 */
    VKLLM_META_STRING = 3,
    VKLLM_META_ARRAY = 4
} vkllm_meta_type;

/* ---- contexts ---------------------------------------------------------------------- */

typedef struct vkllm_context_params {
    uint32_t size;
    uint32_t n_ctx;   /* maximum sequence length; 0 = the model's training context */
    uint32_t n_batch; /* tokens per prompt-processing submit; 0 = 512 */
    uint64_t seed;    /* sampler seed */
} vkllm_context_params;

/* One turn of a conversation, for chat_apply: role "system", "user" or "assistant" (others
 * pass through where a format writes roles by name), content as UTF-8. */
typedef struct vkllm_chat_message {
    const char *role;
    const char *content;
} vkllm_chat_message;

/* ---- merging ----------------------------------------------------------------------- */

typedef enum vkllm_merge_method {
    VKLLM_MERGE_LINEAR = 0, /* weighted average of the models (mergekit's "linear") */
    VKLLM_MERGE_TIES = 1    /* TIES-merging of their task vectors against a base (mergekit's "ties") */
} vkllm_merge_method;

typedef struct vkllm_merge_desc {
    uint32_t size;
    int32_t method;            /* vkllm_merge_method (default linear) */
    const char *const *models; /* GGUF files of one architecture, with the same tensors */
    uint32_t n_models;
    const float *weights;      /* one a model; NULL: 1 each */
    const float *densities;    /* TIES: the fraction of each task vector kept; NULL: `density` */
    float density;             /* TIES (default 1: nothing trimmed) */
    float lambda;              /* TIES: scale of the merged task vector (default 1) */
    int32_t normalize;         /* divide by the weights' sum (default 1) */
    const char *base;          /* TIES: the base model the task vectors are taken from */
    const char *out_path;      /* the merged GGUF, written whole or not at all */
    int32_t weight_type;       /* vkllm_weight_type of the merged matrices; as stored: the first
                                  model's type, F16 where that is a K-quant */
    vkllm_progress_fn progress_fn; /* called per tensor with the fraction done */
    void *progress_user;
} vkllm_merge_desc;

typedef struct vkllm_sampler_params {
    uint32_t size;
    float temperature;    /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;/* tokens of history the penalty looks at */
} vkllm_sampler_params;

typedef struct vkllm_context_stats {
    uint32_t size;
    uint32_t n_past;           /* tokens in the KV cache */
    uint64_t recordings;       /* command buffers recorded since creation */
    uint64_t submits;          /* queue submits since creation */
    uint64_t tokens_prompt;    /* tokens processed in batches of more than one */
    uint64_t tokens_decoded;   /* tokens processed one at a time */
    double gpu_ms_last;        /* GPU time of the last decode call, from timestamps */
    /* Decode calls whose logits reached the host. Every call's do, except where the GPU
     * picks sampling candidates (GPUs; VKLLM_GPU_SAMPLING): there the last row is read back
     * only when logits() asks for it or sample() needs more than the candidates (top-k off
     * or above 64, a repetition penalty). */
    uint64_t logits_reads;
} vkllm_context_stats;

/* ---- the function table ------------------------------------------------------------ */

typedef struct vkllm_api {
    uint32_t struct_size; /* sizeof the table the plugin filled; fields past it are absent */
    uint32_t abi_version; /* the version negotiated for this host */
    const char *plugin_name;    /* e.g. "vkllm-vulkan" */
    const char *plugin_version; /* e.g. "0.1.0" */

    /* A static English description of a status code. Never NULL. */
    const char *(*status_string)(vkllm_status status);
    /* The message of the last failure on the calling thread; "" if none. Valid until the
     * next call on this thread. */
    const char *(*last_error)(void);

    /* Fills *desc (of `size` bytes: pass sizeof *desc) with defaults and sets desc->size. */
    void (*instance_desc_defaults)(vkllm_instance_desc *desc, uint32_t size);
    /* Loads Vulkan, enumerates devices and opens the chosen one. Without a Vulkan loader
     * this fails with VKLLM_ERR_NO_VULKAN_LOADER; the plugin itself stays usable. */
    vkllm_status (*instance_create)(const vkllm_instance_desc *desc, vkllm_instance *out);
    /* Destroys the instance. Every model on it must have been freed. NULL is allowed. */
    vkllm_status (*instance_destroy)(vkllm_instance instance);
    /* The last failure on this instance (any thread); "" if none. Valid until the next
     * failing call on it. */
    const char *(*instance_error)(vkllm_instance instance);
    /* Number of Vulkan devices seen by the instance. */
    vkllm_status (*device_count)(vkllm_instance instance, uint32_t *out);
    /* Describes device `index`; info->size must be set by the caller. */
    vkllm_status (*device_info)(vkllm_instance instance, uint32_t index, vkllm_device_info *info);
    /* Index of the device the instance opened. */
    vkllm_status (*selected_device)(vkllm_instance instance, uint32_t *out);
    /* Counters for tests and diagnostics; stats->size must be set by the caller. */
    vkllm_status (*instance_stats)(vkllm_instance instance, vkllm_instance_stats *stats);

    /* Fills *params (of `size` bytes) with defaults and sets params->size. */
    void (*model_params_defaults)(vkllm_model_params *params, uint32_t size);
    /* Loads a model onto the instance's device. Thread-safe with respect to the instance. */
    vkllm_status (*model_load)(vkllm_instance instance, const vkllm_model_params *params,
                               vkllm_model *out);
    /* Frees the model. Every context on it must have been freed. NULL is allowed. */
    vkllm_status (*model_free)(vkllm_model model);
    const char *(*model_error)(vkllm_model model);
    vkllm_status (*model_info)(vkllm_model model, vkllm_model_info *info);
    /* Metadata access by key. Strings returned live as long as the model. */
    vkllm_status (*meta_count)(vkllm_model model, uint32_t *out);
    vkllm_status (*meta_key)(vkllm_model model, uint32_t index, const char **key);
    vkllm_status (*meta_type)(vkllm_model model, const char *key, int32_t *type,
                              int32_t *array_elem_type, uint64_t *array_len);
    vkllm_status (*meta_uint)(vkllm_model model, const char *key, uint64_t *out);
    vkllm_status (*meta_int)(vkllm_model model, const char *key, int64_t *out);
    vkllm_status (*meta_float)(vkllm_model model, const char *key, double *out);
    vkllm_status (*meta_string)(vkllm_model model, const char *key, const char **out);

    /* Text -> tokens. Writes at most `capacity` ids; *n_out is the number the full
     * tokenization has (VKLLM_ERR_BUFFER_TOO_SMALL when it exceeds capacity).
     * add_special: BOS/EOS as the model's metadata asks. parse_special: text like "<s>"
     * becomes the special token instead of plain text. */
    vkllm_status (*tokenize)(vkllm_model model, const char *text, size_t text_len,
                             int32_t add_special, int32_t parse_special, vkllm_token *tokens,
                             size_t capacity, size_t *n_out);
    /* Tokens -> UTF-8 text, all at once. *n_out is the full length (no terminator). */
    vkllm_status (*detokenize)(vkllm_model model, const vkllm_token *tokens, size_t n_tokens,
                               char *text, size_t capacity, size_t *n_out);
    /* Id of a token's text as stored in the vocabulary (for display); lives with the model. */
    vkllm_status (*token_text)(vkllm_model model, vkllm_token token, const char **out);

    /* Fills *params (of `size` bytes) with defaults: n_ctx 0 (the model's), n_batch 512. */
    void (*context_params_defaults)(vkllm_context_params *params, uint32_t size);
    vkllm_status (*context_create)(vkllm_model model, const vkllm_context_params *params,
                                   vkllm_context *out);
    vkllm_status (*context_free)(vkllm_context ctx);
    const char *(*context_error)(vkllm_context ctx);
    /* Appends `n_tokens` tokens to the sequence and runs the model over them. The logits
     * of the last one become available; with `all_logits` non-zero those of every token
     * of this call. */
    vkllm_status (*decode)(vkllm_context ctx, const vkllm_token *tokens, size_t n_tokens,
                           int32_t all_logits);
    /* Logits of the last decode: `*n_rows` rows of `*n_vocab` floats, row-major. The
     * pointer is valid until the next decode or free on this context. */
    vkllm_status (*logits)(vkllm_context ctx, const float **out, uint32_t *n_rows,
                           uint32_t *n_vocab);
    /* Fills *params (of `size` bytes) with llama.cpp's defaults: temperature 0.8, top-k 40,
     * top-p 0.95, min-p 0.05, no repetition penalty (1.0) over the last 64 tokens. */
    void (*sampler_params_defaults)(vkllm_sampler_params *params, uint32_t size);
    /* Picks the next token from the last logits row. Randomness comes from the context's
     * generator, seeded by vkllm_context_params.seed: same seed, same inputs, same tokens. */
    vkllm_status (*sample)(vkllm_context ctx, const vkllm_sampler_params *params,
                           vkllm_token *out);
    /* Streaming detokenization: appends the text of `token` to the bytes held back from
     * earlier calls and returns the complete UTF-8 characters among them (*n_out bytes);
     * an incomplete trailing character is held back for the next call. */
    vkllm_status (*token_to_text_stream)(vkllm_context ctx, vkllm_token token, char *text,
                                         size_t capacity, size_t *n_out);
    /* Keeps the first `n_keep` tokens of the sequence and forgets the rest. */
    vkllm_status (*kv_truncate)(vkllm_context ctx, uint32_t n_keep);
    vkllm_status (*context_stats)(vkllm_context ctx, vkllm_context_stats *stats);

    /* Measures the device's streaming read bandwidth with a probe shader that reads a
     * buffer of `bytes` (0: 256 MiB) a few times; *gbytes_per_s is the best run in 1e9
     * bytes/s. Takes a moment; for benchmarks. */
    vkllm_status (*measure_bandwidth)(vkllm_instance instance, uint64_t bytes,
                                      double *gbytes_per_s);
    /* GPU time per dispatch of the context's last submit (from timestamp queries):
     * *count is the number of dispatches; entry `index` gets its op label and time in ms.
     * Labels live as long as the context. VKLLM_ERR_UNSUPPORTED without timestamps. */
    vkllm_status (*profile_entry)(vkllm_context ctx, uint32_t index, const char **label,
                                  double *ms, uint32_t *count);

    /* Writes a conversation as one prompt, in the format of a chat template, as llama.cpp's
     * llama_chat_apply_template does (vkllm does not run Jinja: it recognizes which known
     * format a template writes by the marks in it). `tmpl`: NULL for the model's
     * tokenizer.chat_template, else a format name ("chatml", "llama2", "llama2-sys",
     * "mistral-v1", "mistral-v3", "mistral-v7", "zephyr", "gemma", "vicuna", "openchat",
     * "deepseek", "llama3", "phi3", ...) or a template's text; `model` may be NULL then.
     * add_assistant: end with the opening of an assistant turn, for the model to write. The
     * text is for tokenize with parse_special set; BOS is tokenize's to add. Writes at most
     * `capacity` bytes (no terminator); *n_out is the full length
     * (VKLLM_ERR_BUFFER_TOO_SMALL when it exceeds capacity). VKLLM_ERR_UNSUPPORTED when the
     * model has no template or the template is not one of these formats. */
    vkllm_status (*chat_apply)(vkllm_model model, const char *tmpl, const vkllm_chat_message *messages,
                               size_t n_messages, int32_t add_assistant, char *text, size_t capacity,
                               size_t *n_out);
    /* *out = 1 when `token` ends a generation (EOS, and the end-of-turn tokens the
     * vocabulary has: <|im_end|>, <|eot_id|>, <|end|>, <end_of_turn>, ...), else 0. */
    vkllm_status (*token_is_eog)(vkllm_model model, vkllm_token token, int32_t *out);

    /* Fills *desc (of `size` bytes) with defaults and sets desc->size. */
    void (*merge_desc_defaults)(vkllm_merge_desc *desc, uint32_t size);
    /* Merges GGUF models tensor by tensor on the CPU (no instance needed) and writes the
     * result; the metadata (tokenizer included) is the first model's. Fails naming the
     * file and tensor when the models do not match. */
    vkllm_status (*merge)(const vkllm_merge_desc *desc);
    /* model_load with LoRA adapters: each adapted weight W is uploaded as
     * W + scale * alpha / rank * B A (llama.cpp's scaling), computed in f32 on the CPU and
     * stored in the type W would have (so a quantized W is quantized again; weight_type F32
     * or F16 keeps the sum as it is). Changing an adapter means loading again. */
    vkllm_status (*model_load_lora)(vkllm_instance instance, const vkllm_model_params *params,
                                    const vkllm_lora *adapters, uint32_t n_adapters, vkllm_model *out);
} vkllm_api;

/* True when the table `api` has the field `field` (i.e. the plugin is new enough). */
#define VKLLM_API_HAS(api, field)                                                         \
    ((api)->struct_size >= offsetof(vkllm_api, field) + sizeof((api)->field) &&          \
     (api)->field != NULL)

/* The entry point. The host passes the range of ABI versions it can use; the plugin picks
 * the highest version it serves inside that range and stores its table in *out. Fails with
 * VKLLM_ERR_ABI_VERSION when the ranges do not meet. Safe to call from any thread, any
 * number of times; the table is static. */
typedef vkllm_status (*vkllm_entry_fn)(uint32_t min_version, uint32_t max_version,
                                       const vkllm_api **out);

#ifdef __cplusplus
}
#endif

#endif /* VKLLM_H */
