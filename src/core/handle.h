/*
 * The enclave handle's layout, shared by enclave.c (load, calls, destroy)
 * and exits.c (exit handlers, the runtime's host services). Private to
 * libmoat.
 */
#ifndef MOAT_CORE_HANDLE_H
#define MOAT_CORE_HANDLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <moat/moat.h>
#include <moat/sys/backend.h>

typedef struct exit_entry {
	uint64_t selector;
	moat_exit_handler fn;
	void *payload;
} exit_entry;

typedef struct donated_thread {
	pthread_t thread;
	struct moat_enclave *enclave;
	uint64_t task;
	atomic_int done;
	struct donated_thread *next;
} donated_thread;

struct moat_enclave {
	moat_backend *backend;
	const moat_backend_vtable *vtable;

	pthread_rwlock_t handlers_lock;
	exit_entry *handlers;
	size_t n_handlers;
	moat_exit_handler fallback;
	void *fallback_payload;

	/* Host threads inside the enclave (nested entries on one thread count once). */
	pthread_mutex_t lock;
	pthread_cond_t slot_free;
	unsigned int max_threads;
	int thread_policy;
	unsigned int inside;
	donated_thread *donated;
	/* Tasks whose donated thread could not enter, until the enclave asks (SPAWN_STATUS). */
	struct failed_task {
		uint64_t task;
		int code;
	} * failed;
	size_t n_failed;
	int ready; /* the backend is open and init has run: threads may enter */
	int closing;
	int trace; /* MOAT_LOAD_TRACE: log every entry and exit call */
	/* INIT_*: MOAT_LOAD_DEFER_INIT's state; read on the call path with __atomic_load_n. */
	int init;
};

/* Where the enclave's init is (moat_enclave.init). */
enum { INIT_DONE, INIT_PENDING, INIT_RUNNING, INIT_FAILED };

/*
 * The exit dispatcher handed to the backend (ctx is the handle): the
 * application's handler for the selector, else its fallback, else the
 * runtime's own service.
 */
int moat__enclave_exit_dispatch(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out);

#endif
