/* The loops for x86-64-v4 CPUs (AVX-512 F/BW/CD/DQ/VL; Skylake-X, Zen 4 and later), with
   512-bit vectors preferred (what the loops were tuned for). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define KERNEL(name) name##_avx512
#include "kernels.inc"
#endif
