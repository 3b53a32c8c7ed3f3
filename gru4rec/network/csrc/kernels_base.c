/* The loops for any CPU of the platform (x86-64: SSE2 only). */
#define KERNEL(name) name##_base
#include "kernels.inc"
