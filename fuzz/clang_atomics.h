/*
 * Forced into src/backends/proc/proc.c in clang fuzz builds only (see
 * CMakeLists.txt): proc.c applies C11 atomic_load/atomic_store_explicit to
 * the backend's plain int dead, which gcc accepts and clang refuses (it
 * wants an _Atomic object). The GNU builtins that include/moat/sys/backend.h
 * documents for that field do the same on a plain int.
 */
#ifndef MOAT_FUZZ_CLANG_ATOMICS_H
#define MOAT_FUZZ_CLANG_ATOMICS_H

#include <stdatomic.h>

#undef atomic_load
#undef atomic_load_explicit
#undef atomic_store
#undef atomic_store_explicit
#define atomic_load(p)                 __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define atomic_load_explicit(p, o)     __atomic_load_n((p), (o))
#define atomic_store(p, v)             __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define atomic_store_explicit(p, v, o) __atomic_store_n((p), (v), (o))

#endif
