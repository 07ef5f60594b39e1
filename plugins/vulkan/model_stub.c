/* Temporary: model and context arrive with the Llama slice. */
#include "error.h"
#include "plugin.h"

#define NOT_YET(what) vk_fail(VKLLM_ERR_NOT_IMPLEMENTED, "%s is not supported yet", what)

vkllm_status model_load(vkllm_instance inst, const vkllm_model_params *params, vkllm_model *out)
{
    (void)inst; (void)params; (void)out;
    return NOT_YET("model_load");
}
void model_free(vkllm_model model) { (void)model; }
handle_error *model_error_of(vkllm_model model) { (void)model; return NULL; }
vkllm_status model_info(vkllm_model m, vkllm_model_info *i) { (void)m; (void)i; return NOT_YET("model_info"); }
vkllm_status model_meta_count(vkllm_model m, uint32_t *o) { (void)m; (void)o; return NOT_YET("meta"); }
vkllm_status model_meta_key(vkllm_model m, uint32_t i, const char **k) { (void)m; (void)i; (void)k; return NOT_YET("meta"); }
vkllm_status model_meta_type(vkllm_model m, const char *k, int32_t *t, int32_t *e, uint64_t *l) { (void)m; (void)k; (void)t; (void)e; (void)l; return NOT_YET("meta"); }
vkllm_status model_meta_uint(vkllm_model m, const char *k, uint64_t *o) { (void)m; (void)k; (void)o; return NOT_YET("meta"); }
vkllm_status model_meta_int(vkllm_model m, const char *k, int64_t *o) { (void)m; (void)k; (void)o; return NOT_YET("meta"); }
vkllm_status model_meta_float(vkllm_model m, const char *k, double *o) { (void)m; (void)k; (void)o; return NOT_YET("meta"); }
vkllm_status model_meta_string(vkllm_model m, const char *k, const char **o) { (void)m; (void)k; (void)o; return NOT_YET("meta"); }
vkllm_status model_tokenize(vkllm_model m, const char *t, size_t l, int32_t a, int32_t p, vkllm_token *tk, size_t c, size_t *n) { (void)m; (void)t; (void)l; (void)a; (void)p; (void)tk; (void)c; (void)n; return NOT_YET("tokenize"); }
vkllm_status model_detokenize(vkllm_model m, const vkllm_token *t, size_t n, char *x, size_t c, size_t *o) { (void)m; (void)t; (void)n; (void)x; (void)c; (void)o; return NOT_YET("detokenize"); }
vkllm_status model_token_text(vkllm_model m, vkllm_token t, const char **o) { (void)m; (void)t; (void)o; return NOT_YET("token_text"); }
int model_context_count(vkllm_model m) { (void)m; return 0; }
vkllm_status context_create(vkllm_model m, const vkllm_context_params *p, vkllm_context *o) { (void)m; (void)p; (void)o; return NOT_YET("context_create"); }
void context_free(vkllm_context c) { (void)c; }
handle_error *context_error_of(vkllm_context c) { (void)c; return NULL; }
vkllm_status context_decode(vkllm_context c, const vkllm_token *t, size_t n, int32_t a) { (void)c; (void)t; (void)n; (void)a; return NOT_YET("decode"); }
vkllm_status context_logits(vkllm_context c, const float **o, uint32_t *r, uint32_t *v) { (void)c; (void)o; (void)r; (void)v; return NOT_YET("logits"); }
vkllm_status context_sample(vkllm_context c, const vkllm_sampler_params *p, vkllm_token *o) { (void)c; (void)p; (void)o; return NOT_YET("sample"); }
vkllm_status context_token_to_text_stream(vkllm_context c, vkllm_token t, char *x, size_t n, size_t *o) { (void)c; (void)t; (void)x; (void)n; (void)o; return NOT_YET("token_to_text_stream"); }
vkllm_status context_kv_truncate(vkllm_context c, uint32_t n) { (void)c; (void)n; return NOT_YET("kv_truncate"); }
vkllm_status context_stats(vkllm_context c, vkllm_context_stats *s) { (void)c; (void)s; return NOT_YET("context_stats"); }
