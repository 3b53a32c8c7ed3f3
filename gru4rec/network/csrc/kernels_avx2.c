/* The loops for x86-64-v3 CPUs (AVX2, FMA, BMI2; Haswell, Zen 1 and later). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("arch=x86-64-v3")
#define KERNEL(name) name##_avx2
#include "kernels.inc"
#endif
