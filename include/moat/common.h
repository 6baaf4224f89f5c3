/*
 * Moat: shared definitions for the public headers.
 */
#ifndef MOAT_COMMON_H
#define MOAT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define MOAT_BEGIN_DECL extern "C" {
#define MOAT_END_DECL }
#else
#define MOAT_BEGIN_DECL
#define MOAT_END_DECL
#endif

/*
 * Symbols of libmoat are exported; the enclave runtime (libmoat_enclave) is
 * built with MOAT_ENCLAVE_RUNTIME defined so that its copies of the message
 * functions stay private to each enclave image.
 */
#if defined(MOAT_ENCLAVE_RUNTIME)
#define MOAT_EXTERN(type) __attribute__((visibility("hidden"))) type
#elif defined(__GNUC__)
#define MOAT_EXTERN(type) __attribute__((visibility("default"))) type
#else
#define MOAT_EXTERN(type) type
#endif

#define MOAT_VERSION_MAJOR 0
#define MOAT_VERSION_MINOR 1
#define MOAT_VERSION_PATCH 0
#define MOAT_VERSION_STRING "0.1.0"

/** Length in bytes of a measurement (SHA-256 of the enclave image). */
#define MOAT_MEASUREMENT_LEN 32
/** Length in bytes of a target server's Ed25519 public key. */
#define MOAT_TARGET_KEY_LEN 32

#endif
