/*
 * A fleet of three moatd on loopback, named by one URI
 * (grpc://A,B,C): sessions spread over the targets that take them (gRPC's
 * round_robin with client-side health checks; a full target reports
 * NOT_SERVING and is skipped), and when a target dies only its sessions
 * fail while new loads go to the others; a drained target takes no new
 * sessions and stops once its last one ended; a target listed before it
 * runs is taken once it starts. Which target hosts a session is told by
 * the identity key in the session's identity, and its address by
 * moat_enclave_target().
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "rpc/rpc.h"
#include "test_enclave.h"

#define N_TARGETS  3
#define N_SESSIONS 60
#define C_MAX      4 /* --max-sessions of the third target */

static test_moatd targets[N_TARGETS];
static uint8_t keys[N_TARGETS][MOAT_TARGET_KEY_LEN];
static char fleet[1024];

/* Load on uri; NULL when it failed (the error printed). */
static moat_enclave *load(const char *uri)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = uri;
	if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o) < 0) {
		print_message("load on %s: %s\n", uri, moat_error_last()->message);
		return NULL;
	}
	return e;
}

/* Load on uri with a set of acceptable target keys; NULL when it failed. */
static moat_enclave *load_pinned(const char *uri, const uint8_t *set, size_t n)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = uri;
	o.target_keys = set;
	o.n_target_keys = n;
	return moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o) == 0 ? e : NULL;
}

/*
 * Which target hosts e, by its identity key; -1 when none. The address the
 * handle names (moat_enclave_target) must be that target's.
 */
static int target_of(const moat_enclave *e)
{
	const char *addr = moat_enclave_target(e);
	moat_identity id;
	int i;

	if (moat_enclave_identity(e, &id) < 0 || !id.has_target_key)
		return -1;
	for (i = 0; i < N_TARGETS; i++)
		if (memcmp(id.target_key, keys[i], MOAT_TARGET_KEY_LEN) == 0)
			break;
	if (i == N_TARGETS || !addr || strcmp(addr, targets[i].addr) != 0) {
		print_message("key of target %d, address %s\n", i, addr ? addr : "(none)");
		return -1;
	}
	return i;
}

static int echo_works(moat_enclave *e)
{
	moat_msg *in = NULL, *out = NULL;
	int rc;

	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, "fleet");
	rc = moat_enclave_call(e, T_ECHO, in, out);
	moat_msg_free(in);
	moat_msg_free(out);
	return rc;
}

static int setup(void **state)
{
	size_t off = 0;
	int i;

	(void)state;
	off = (size_t)snprintf(fleet, sizeof(fleet), "grpc://");
	for (i = 0; i < N_TARGETS; i++) {
		moat_identity id;
		moat_enclave *e;
		int rc = i < N_TARGETS - 1
		             ? test_moatd_start(&targets[i], "grpc", "--allow-upload", "--backend=sim", NULL)
		             : test_moatd_start(&targets[i], "grpc", "--allow-upload", "--backend=sim",
		                                "--max-sessions=4", NULL);

		if (rc < 0)
			return -1;
		/* Learn the target's identity key from a session of its own. */
		e = load(targets[i].uri);
		if (!e || moat_enclave_identity(e, &id) < 0)
			return -1;
		/* One target named alone: the handle names the URI's address. */
		if (!moat_enclave_target(e) || strcmp(moat_enclave_target(e), targets[i].addr) != 0)
			return -1;
		memcpy(keys[i], id.target_key, MOAT_TARGET_KEY_LEN);
		moat_enclave_destroy(e);
		off +=
		    (size_t)snprintf(fleet + off, sizeof(fleet) - off, "%s%s", i ? "," : "", targets[i].addr);
	}
	print_message("fleet: %s\n", fleet);
	return 0;
}

static int teardown(void **state)
{
	int i, rc = 0;

	(void)state;
	/* A target killed or drained is gone, but its directory is still to remove. */
	for (i = 0; i < N_TARGETS; i++)
		if ((targets[i].pid || targets[i].dir[0]) && test_moatd_stop(&targets[i]) < 0)
			rc = -1;
	return rc;
}

/* The next HealthCheckResponse status on a Watch stream (1 SERVING, 2 NOT_SERVING), or -1. */
static int next_status(moat_rpc_call *watch, const void *req, size_t req_len)
{
	moat_rpc_status st;
	uint8_t *msg = NULL;
	size_t len = 0;
	int status = -1;

	int rc = moat__rpc_exchange(watch, req, req_len, &msg, &len, 10000, &st);

	if (rc == 0 && len == 2 && msg[0] == 0x08)
		status = msg[1];
	else
		print_message("Watch: %d, %zu bytes, status %d: %s\n", rc, len, rc ? st.code : 0,
		              rc ? st.message : "");
	free(msg);
	return status;
}

/* A full target says NOT_SERVING on its Watch streams, and SERVING as soon as a session ends. */
static void full_target_watch(moat_enclave **e, const int *where, int n)
{
	static const uint8_t req[] = {0x0a, 14,  'm', 'o', 'a', 't', '.', 'v',
	                              '1',  '.', 'T', 'a', 'r', 'g', 'e', 't'};
	moat_rpc_channel_opts co = {0};
	moat_rpc_channel *ch = NULL;
	moat_rpc_call *watch = NULL;
	moat_enclave *extra[C_MAX];
	int n_extra = 0, i;

	/* Fill the third target up (its sessions from the fleet count too). */
	while (n_extra < C_MAX && (extra[n_extra] = load(targets[2].uri)) != NULL)
		n_extra++;
	moat__rpc_init();
	co.target = targets[2].addr;
	co.max_receive_bytes = -1;
	assert_int_equal(moat__rpc_channel_open(&ch, &co), 0);
	assert_int_equal(moat__rpc_stream_open(&watch, ch, "/grpc.health.v1.Health/Watch", NULL), 0);
	assert_int_equal(next_status(watch, req, sizeof(req)), 2);
	if (n_extra > 0) {
		moat_enclave_destroy(extra[--n_extra]);
	} else {
		for (i = 0; i < n && (!e[i] || where[i] != 2); i++)
			;
		assert_true(i < n);
		moat_enclave_destroy(e[i]);
		e[i] = NULL;
	}
	assert_int_equal(next_status(watch, NULL, 0), 1);
	print_message("the full target's Watch said NOT_SERVING, then SERVING once a session ended\n");
	while (n_extra > 0)
		moat_enclave_destroy(extra[--n_extra]);
	moat__rpc_call_free(watch);
	moat__rpc_channel_close(ch);
	moat__rpc_shutdown();
}

static void test_fleet_spreads_and_survives(void **state)
{
	static moat_enclave *e[N_SESSIONS + 6];
	int count[N_TARGETS] = {0}, where[N_SESSIONS + 6], i, lost = 0, fine = 0;

	(void)state;
	for (i = 0; i < N_SESSIONS; i++) {
		e[i] = load(fleet);
		assert_non_null(e[i]);
		where[i] = target_of(e[i]);
		assert_true(where[i] >= 0);
		count[where[i]]++;
		assert_int_equal(echo_works(e[i]), 0);
	}
	print_message("%d sessions: %d, %d and %d (the last target takes at most %d)\n", N_SESSIONS, count[0],
	              count[1], count[2], C_MAX);
	/* The full target is skipped; the others share the rest, none with less than half its share. */
	assert_true(count[2] <= C_MAX);
	assert_true(count[0] >= (N_SESSIONS - C_MAX) / 4);
	assert_true(count[1] >= (N_SESSIONS - C_MAX) / 4);
	full_target_watch(e, where, N_SESSIONS);

	/* The first target dies: only its sessions fail, and new loads go to the others. */
	test_moatd_kill(&targets[0], SIGKILL);
	for (i = 0; i < N_SESSIONS; i++) {
		int rc;

		if (!e[i])
			continue;
		rc = echo_works(e[i]);
		if (where[i] == 0) {
			assert_int_not_equal(rc, 0);
			lost++;
		} else {
			assert_int_equal(rc, 0);
			fine++;
		}
	}
	print_message("after the first target died: %d sessions lost with it, %d fine\n", lost, fine);
	for (i = N_SESSIONS; i < N_SESSIONS + 6; i++) {
		e[i] = load(fleet);
		assert_non_null(e[i]);
		where[i] = target_of(e[i]);
		assert_true(where[i] == 1 || where[i] == 2);
		assert_int_equal(echo_works(e[i]), 0);
	}
	for (i = 0; i < N_SESSIONS + 6; i++)
		moat_enclave_destroy(e[i]);
}

/*
 * A drained target (SIGUSR2) takes no new sessions (the fleet's loads go
 * elsewhere), keeps serving the ones it has, and stops by itself once the
 * last one ended. Runs after the first test: the first target is dead.
 */
static void test_drain(void **state)
{
	moat_enclave *held[2], *e[2];
	int i, status = -1;

	(void)state;
	for (i = 0; i < 2; i++) {
		held[i] = load(targets[1].uri);
		assert_non_null(held[i]);
	}
	assert_int_equal(kill(targets[1].pid, SIGUSR2), 0);
	test_sleep_ms(100);
	for (i = 0; i < 2; i++) {
		e[i] = load(fleet);
		assert_non_null(e[i]);
		assert_int_equal(target_of(e[i]), 2);
		assert_int_equal(echo_works(held[i]), 0);
	}
	assert_null(load(targets[1].uri));
	assert_int_equal(moat_error_last()->code, MOAT_ELIMIT);
	assert_non_null(strstr(moat_error_last()->message, "draining"));
	for (i = 0; i < 2; i++) {
		moat_enclave_destroy(held[i]);
		moat_enclave_destroy(e[i]);
	}
	/* The last session ended: the drained moatd exits on its own, cleanly. */
	for (i = 0; i < 100 && waitpid(targets[1].pid, &status, WNOHANG) == 0; i++)
		test_sleep_ms(100);
	print_message("the drained target exited with status %d after %d00 ms\n", status, i);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	targets[1].pid = 0;
}

/*
 * A host pins a set of target keys: a fleet's loads land only on targets
 * in the set (a target with another key is skipped), and a set that
 * holds none of the fleet's keys fails with MOAT_EKEY.
 */
static void test_key_set(void **state)
{
	uint8_t set[2 * MOAT_TARGET_KEY_LEN], none[MOAT_TARGET_KEY_LEN];
	moat_enclave *e[3];
	int i;

	(void)state;
	memcpy(set, keys[1], MOAT_TARGET_KEY_LEN);
	memset(set + MOAT_TARGET_KEY_LEN, 0x5a, MOAT_TARGET_KEY_LEN); /* a key no target has */
	memset(none, 0x5a, sizeof(none));
	for (i = 0; i < 3; i++) {
		e[i] = load_pinned(fleet, set, 2);
		assert_non_null(e[i]);
		assert_int_equal(target_of(e[i]), 1);
	}
	for (i = 0; i < 3; i++)
		moat_enclave_destroy(e[i]);
	assert_null(load_pinned(fleet, none, 1));
	assert_int_equal(moat_error_last()->code, MOAT_EKEY);
	print_message("pinned: %s\n", moat_error_last()->message);
	/* One target named alone: its key in the set loads, a set without it does not. */
	e[0] = load_pinned(targets[1].uri, set, 2);
	assert_non_null(e[0]);
	moat_enclave_destroy(e[0]);
	assert_null(load_pinned(targets[0].uri, set, 2));
	assert_int_equal(moat_error_last()->code, MOAT_EKEY);
}

/*
 * A target listed in the fleet but not running yet: loads go to the
 * running one; once it starts, loads of the same process (a session held
 * keeps the balancing channel) reach it after gRPC's reconnect backoff
 * (capped at the 5 s connect timeout). Runs last: only the third target of
 * the first tests is still up.
 */
static void test_late_target(void **state)
{
	moat_enclave *hold, *e;
	test_moatd late;
	char uri[600], listen[300];
	int i, on_late = 0;

	(void)state;
	/* A backend that runs the enclave on this machine names no target. */
	assert_null(moat_enclave_target(NULL));
	e = load("sim");
	assert_non_null(e);
	assert_null(moat_enclave_target(e));
	moat_enclave_destroy(e);
	/* Learn a free port for the late target: start a moatd there and stop it again. */
	assert_int_equal(test_moatd_start(&late, "grpc", "--backend=sim", NULL), 0);
	snprintf(listen, sizeof(listen), "%s", late.addr);
	assert_int_equal(test_moatd_stop(&late), 0);
	snprintf(uri, sizeof(uri), "grpc://%s,%s", targets[2].addr, listen);
	hold = load(uri);
	assert_non_null(hold);
	assert_int_equal(target_of(hold), 2);
	for (i = 0; i < 3; i++) {
		e = load(uri);
		assert_non_null(e);
		assert_int_equal(target_of(e), 2);
		moat_enclave_destroy(e);
	}
	assert_int_equal(
	    test_moatd_start(&late, "grpc", "--allow-upload", "--backend=sim", "--listen", listen, NULL), 0);
	assert_string_equal(late.addr, listen);
	for (i = 1; i <= 300 && !on_late; i++) {
		e = load(uri);
		assert_non_null(e);
		assert_non_null(moat_enclave_target(e));
		on_late = strcmp(moat_enclave_target(e), listen) == 0;
		assert_int_equal(echo_works(e), 0);
		moat_enclave_destroy(e);
		if (!on_late)
			test_sleep_ms(50);
	}
	print_message("the target started late took load %d after it started\n", i - 1);
	assert_true(on_late);
	moat_enclave_destroy(hold);
	assert_int_equal(test_moatd_stop(&late), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_set),
	    cmocka_unit_test(test_fleet_spreads_and_survives),
	    cmocka_unit_test(test_drain),
	    cmocka_unit_test(test_late_target),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
