/*
 * Every reserved selector and protocol constant of Moat, in one place.
 * The public selectors (the runtime's services) are defined in
 * include/moat/common.h, because enclaves and applications use them; they
 * are listed here too so that this header is the whole picture. What a
 * host in another language needs is in docs/protocol.md.
 */
#ifndef MOAT_CODEC_PROTOCOL_H
#define MOAT_CODEC_PROTOCOL_H

#include <stdint.h>

#include <moat/common.h>

/*
 * Selectors below MOAT_SELECTOR_USER (1024) belong to the runtime:
 *   exit calls  MOAT_SELECTOR_LOG (1), MOAT_SELECTOR_TIME (2), MOAT_SELECTOR_SPAWN (3),
 *               MOAT_SELECTOR_SPAWN_STATUS (5): answered by the host;
 *   entry call  MOAT_SELECTOR_DONATE (4): a host thread donated to the enclave;
 *   and the private ones below, which applications never see.
 */

/* Attach stream: a Call with this selector destroys the session (target.proto). */
#define MOAT_PROTOCOL_SELECTOR_DESTROY ((uint64_t)0)
/*
 * Attach stream and proc channel: run the enclave's init, after a load
 * that deferred it (LoadRequest.defer_init; the proc LOAD's
 * MOAT_PROC_LOAD_DEFER_INIT). No items; the Return is init's result, with
 * the code, origin and message a load that ran init would have failed
 * with. The enclave's exit calls come back on the same stream meanwhile.
 */
#define MOAT_PROTOCOL_SELECTOR_START ((uint64_t)1002)
/*
 * proc channel: load the image. Items: image name (for messages), image
 * bytes, pin (0 or 32 bytes), config, and optionally a u64 of
 * MOAT_PROC_LOAD_* flags.
 */
#define MOAT_PROC_SELECTOR_LOAD ((uint64_t)1000)
/* MOAT_PROC_SELECTOR_LOAD's flags: load only; init runs at MOAT_PROTOCOL_SELECTOR_START. */
#define MOAT_PROC_LOAD_DEFER_INIT ((uint64_t)1)
/* proc channel: run the enclave's finalizer (only when init has run and succeeded). */
#define MOAT_PROC_SELECTOR_STOP ((uint64_t)1001)

/* moat.v1 protocol version this code speaks (LoadRequest/LoadResponse protocol_major.minor). */
#define MOAT_PROTOCOL_MAJOR 1
#define MOAT_PROTOCOL_MINOR 0

/* Call metadata keys of the target service. */
#define MOAT_MD_SESSION "moat-session" /* the session id */
#define MOAT_MD_TOKEN   "moat-token"   /* hex of the 32-byte session token */
#define MOAT_MD_STREAM  "moat-stream"  /* "lease" on a session's lease stream */
#define MOAT_MD_LEASE   "lease"
/* Trailing metadata of a refused call: the Moat error code, in decimal. */
#define MOAT_MD_ERROR "moat-error"

/* LoadReport.format of moatd's simulated attestation. */
#define MOAT_REPORT_FORMAT "moat-simulated-attestation-v1"

/*
 * LoadResponse.target_endorsement is a CA's Ed25519 signature over this
 * string with its NUL (19 bytes) followed by the target's 32-byte key; the
 * prefix keeps a CA key's endorsements apart from anything else it signs.
 */
#define MOAT_ENDORSE_DOMAIN     "moat target key v1"
#define MOAT_ENDORSE_DOMAIN_LEN 19

#endif
