/* A real shared library that is not a vkllm plugin: it exports a symbol, but not
 * vkllm_entry. test_host checks that the loader names the missing symbol. */
__attribute__((visibility("default"))) int not_a_plugin_answer(void);

__attribute__((visibility("default"))) int not_a_plugin_answer(void) { return 42; }
