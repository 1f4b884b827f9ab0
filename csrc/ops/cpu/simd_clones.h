#pragma once

// The wheel is built for baseline x86-64 (two doubles per SSE2 register).
// The CPU kernels whose loops are SIMD (sym_eig_ql, small_gemm) run several
// times faster in AVX2 or AVX-512 registers, so each is compiled for those
// too and the loader picks the machine's version. Helpers they call are
// always_inline: an inlined body is compiled for the caller's target.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define MATBP_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MATBP_SIMD_CLONES
#endif
