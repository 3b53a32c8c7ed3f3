/* gru4rec.network._kernels: the compiled loops, built with the package (setup.py).

   A Python extension module only so that the import system finds it next to the package
   (and nowhere else); the loops themselves are plain C functions that gru4rec/network/kernels.py
   binds with ctypes from this same file. gru4rec_isa_level says which of the builds in
   kernels_<isa>.c this CPU can run. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* 2: x86-64-v4 (AVX-512), 1: x86-64-v3 (AVX2), 0: the baseline. Only levels that were
   compiled are reported (GCC on x86-64 compiles all three). */
int64_t gru4rec_isa_level(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("avx");
    const int v4 = v3 && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return v4 ? 2 : v3 ? 1 : 0;
#else
    return 0;
#endif
}

/* Whether the loops were built with OpenMP (they then run on torch's thread pool). */
int64_t gru4rec_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "The fused CPU loops of gru4rec's training step, bound through gru4rec.network.kernels.", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
