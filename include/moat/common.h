/*
 * Moat: shared definitions for the public headers.
 */
#ifndef MOAT_COMMON_H
#define MOAT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define MOAT_BEGIN_DECL extern "C" {
#define MOAT_END_DECL   }
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

#define MOAT_VERSION_MAJOR  0
#define MOAT_VERSION_MINOR  1
#define MOAT_VERSION_PATCH  0
#define MOAT_VERSION_STRING "0.1.0"

/*
 * Selectors below MOAT_SELECTOR_USER are reserved for the runtime. Entry and
 * exit handlers registered by users must use MOAT_SELECTOR_USER or above.
 */
#define MOAT_SELECTOR_USER UINT64_C(1024)
/** Exit call: write item 0 as a log line on the host's stderr. */
#define MOAT_SELECTOR_LOG UINT64_C(1)
/** Exit call: host wall-clock time, returned as one u64 item (ns since the epoch). */
#define MOAT_SELECTOR_TIME UINT64_C(2)
/** Exit call: ask the host to start a thread that enters by MOAT_SELECTOR_DONATE. */
#define MOAT_SELECTOR_SPAWN UINT64_C(3)
/** Entry call: a host thread donated to the enclave runs the item-0 task. */
#define MOAT_SELECTOR_DONATE UINT64_C(4)
/**
 * Exit call: item 0 is a task queued with MOAT_SELECTOR_SPAWN; the reply is one
 * u64 item, 0 while the host has nothing to report, or the negative Moat code
 * (two's complement) with which the donated thread failed to enter.
 */
#define MOAT_SELECTOR_SPAWN_STATUS UINT64_C(5)
/** Conventional entry selector of `moat run`: items are the command's arguments. */
#define MOAT_SELECTOR_RUN MOAT_SELECTOR_USER

/** Sandbox layers a backend applied (bits of moat_identity.isolation and moat_host_info.isolation). */
#define MOAT_ISOLATION_PROCESS 0x01u  /**< separate address space */
#define MOAT_ISOLATION_SECCOMP 0x02u  /**< seccomp system call allow-list */
#define MOAT_ISOLATION_USERNS  0x04u  /**< new user namespace */
#define MOAT_ISOLATION_MOUNTNS 0x08u  /**< new mount namespace */
#define MOAT_ISOLATION_NETNS   0x10u  /**< new network namespace */
#define MOAT_ISOLATION_RLIMITS 0x20u  /**< resource limits, no core dumps */
#define MOAT_ISOLATION_REMOTE  0x40u  /**< runs on a target server */
#define MOAT_ISOLATION_PIDNS   0x80u  /**< own PID, IPC and UTS namespaces: no other process can be named */
#define MOAT_ISOLATION_TASKS   0x100u /**< kernel-enforced limit on the enclave's threads */
#define MOAT_ISOLATION_WXORX   0x200u /**< no writable+executable memory; only the image's code runs */

/** Length in bytes of a measurement (SHA-256 of the enclave image). */
#define MOAT_MEASUREMENT_LEN 32
/** Length in bytes of a target server's Ed25519 public key. */
#define MOAT_TARGET_KEY_LEN 32

#endif
