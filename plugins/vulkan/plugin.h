/* The plugin's handle types and the functions behind the ABI table (entry.c). */
#ifndef VKLLM_PLUGIN_H
#define VKLLM_PLUGIN_H

#include <stdatomic.h>
#include <threads.h>

#include "vkr.h"

/* A handle's last failure, readable from any thread. */
typedef struct handle_error {
    mtx_t lock;
    char message[1024];
} handle_error;

void handle_error_init(handle_error *e);
void handle_error_destroy(handle_error *e);
/* Copies the calling thread's message into the handle when status != OK; returns status. */
vkllm_status handle_error_record(handle_error *e, vkllm_status status);
const char *handle_error_get(handle_error *e);

struct vkllm_instance_t {
    vkr_device *dev;
    handle_error error;
    atomic_int n_models;
};

/* Model and context live in model.c and context.c. model_load/model_free keep the
 * instance's n_models count. */
vkllm_status model_load(vkllm_instance inst, const vkllm_model_params *params, const vkllm_lora *loras,
                        uint32_t n_loras, vkllm_model *out);
void model_free(vkllm_model model);
handle_error *model_error_of(vkllm_model model);
vkllm_status model_info(vkllm_model model, vkllm_model_info *info);
vkllm_status model_meta_count(vkllm_model model, uint32_t *out);
vkllm_status model_meta_key(vkllm_model model, uint32_t index, const char **key);
vkllm_status model_meta_type(vkllm_model model, const char *key, int32_t *type,
                             int32_t *array_elem_type, uint64_t *array_len);
vkllm_status model_meta_uint(vkllm_model model, const char *key, uint64_t *out);
vkllm_status model_meta_int(vkllm_model model, const char *key, int64_t *out);
vkllm_status model_meta_float(vkllm_model model, const char *key, double *out);
vkllm_status model_meta_string(vkllm_model model, const char *key, const char **out);
vkllm_status model_token_is_eog(vkllm_model model, vkllm_token token, int32_t *out);
/* The conversation in the format `tmpl` names or writes; NULL: the model's chat template. */
vkllm_status model_chat_apply(vkllm_model model, const char *tmpl, const vkllm_chat_message *messages, size_t n,
                              int32_t add_assistant, char *text, size_t capacity, size_t *n_out);
vkllm_status model_tokenize(vkllm_model model, const char *text, size_t len, int32_t add_special,
                            int32_t parse_special, vkllm_token *tokens, size_t capacity,
                            size_t *n_out);
vkllm_status model_detokenize(vkllm_model model, const vkllm_token *tokens, size_t n, char *text,
                              size_t capacity, size_t *n_out);
vkllm_status model_token_text(vkllm_model model, vkllm_token token, const char **out);
int model_context_count(vkllm_model model);

vkllm_status context_create(vkllm_model model, const vkllm_context_params *params,
                            vkllm_context *out);
void context_free(vkllm_context ctx);
handle_error *context_error_of(vkllm_context ctx);
vkllm_status context_decode(vkllm_context ctx, const vkllm_token *tokens, size_t n, int32_t all);
vkllm_status context_logits(vkllm_context ctx, const float **out, uint32_t *n_rows,
                            uint32_t *n_vocab);
vkllm_status context_sample(vkllm_context ctx, const vkllm_sampler_params *params,
                            vkllm_token *out);
vkllm_status context_token_to_text_stream(vkllm_context ctx, vkllm_token token, char *text,
                                          size_t capacity, size_t *n_out);
vkllm_status context_kv_truncate(vkllm_context ctx, uint32_t n_keep);
vkllm_status context_stats(vkllm_context ctx, vkllm_context_stats *stats);
vkllm_status context_profile_entry(vkllm_context ctx, uint32_t index, const char **label, double *ms,
                                   uint32_t *count);

#endif
