/* volk's implementation, compiled once into the plugin: Vulkan entry points are loaded at
 * run time, so the plugin loads (and reports "no Vulkan loader") without libvulkan. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wcast-function-type"
#endif
#include <volk.c>
