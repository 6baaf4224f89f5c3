/*
 * A CA that endorses target keys: three moatd on loopback, two of them
 * started with an endorsement of their key by a CA (moat endorse,
 * --identity-endorsement). A host pinned to the CA (target_ca_keys) lands
 * only on the endorsed two, in a fleet and named alone; a host pinned to
 * another CA is refused, saying why; a malformed endorsement keeps moatd
 * from starting; moat endorse says what is wrong with its input.
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
#include <openssl/evp.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "test_enclave.h"
#include "util/util.h"

#define N_TARGETS 3
#define N_LOADS   12

static test_moatd targets[N_TARGETS];
static uint8_t keys[N_TARGETS][MOAT_TARGET_KEY_LEN];
static uint8_t ca[MOAT_TARGET_KEY_LEN], other_ca[MOAT_TARGET_KEY_LEN];
static char work[64] = "/tmp/moat-catest-XXXXXX";
static char fleet[1024];

/*
 * Run a shell command (stderr joined to stdout) into out, NUL-terminated
 * with trailing white space cut. Returns its exit status, or -1.
 */
static int run(char *out, size_t size, const char *fmt, ...)
{
	char cmd[2048];
	size_t n = 0, got;
	va_list ap;
	FILE *p;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	if (!(p = popen(cmd, "r")))
		return -1;
	while (n + 1 < size && (got = fread(out + n, 1, size - n - 1, p)) > 0)
		n += got;
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		n--;
	out[n] = '\0';
	status = pclose(p);
	print_message("$ %s\n%s\n", cmd, out);
	return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A CA's public key, as moat endorse --print-ca-key says it. */
static int ca_public_key(uint8_t key[MOAT_TARGET_KEY_LEN], const char *pem)
{
	char out[512];

	if (run(out, sizeof(out), "%s/moat endorse --ca-key %s/%s --print-ca-key", MOAT_TEST_BINDIR, work,
	        pem) != 0)
		return -1;
	return moat__unhex(key, MOAT_TARGET_KEY_LEN, out);
}

/* Does the endorsement file verify, by the documented message, under the CA key? Plain OpenSSL. */
static int endorsement_verifies(const char *path, const uint8_t ca_key[32], const uint8_t key[32])
{
	uint8_t msg[19 + 32], sig[64];
	char hex[200];
	EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, ca_key, 32);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	FILE *f = fopen(path, "r");
	int ok = 0;

	if (f && fgets(hex, sizeof(hex), f) && strlen(hex) == 129 && hex[128] == '\n') {
		hex[128] = '\0';
		memcpy(msg, "moat target key v1\0", 19);
		memcpy(msg + 19, key, 32);
		ok = moat__unhex(sig, 64, hex) == 0 && pk && c &&
		     EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) > 0 &&
		     EVP_DigestVerify(c, sig, 64, msg, sizeof(msg)) == 1;
	}
	if (f)
		fclose(f);
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(pk);
	return ok;
}

/* Make target i's state directory and key; endorse the first two; start them all. */
static int start_target(int i)
{
	char out[512], state[128], endorsement[128];

	snprintf(state, sizeof(state), "%s/state%d", work, i);
	snprintf(endorsement, sizeof(endorsement), "%s/endorsement%d", work, i);
	if (run(out, sizeof(out), "%s/moatd --state-dir %s --print-key", MOAT_TEST_BINDIR, state) != 0 ||
	    moat__unhex(keys[i], MOAT_TARGET_KEY_LEN, out) < 0)
		return -1;
	if (i == N_TARGETS - 1)
		return test_moatd_start(&targets[i], "grpc", "--allow-upload", "--backend=sim", "--state-dir",
		                        state, NULL);
	if (run(out, sizeof(out), "%s/moat endorse --ca-key %s/ca.pem -o %s ed25519:%s", MOAT_TEST_BINDIR,
	        work, endorsement, out) != 0 ||
	    !endorsement_verifies(endorsement, ca, keys[i]))
		return -1;
	return test_moatd_start(&targets[i], "grpc", "--allow-upload", "--backend=sim", "--state-dir", state,
	                        "--identity-endorsement", endorsement, NULL);
}

static int setup(void **state)
{
	char out[512];
	size_t off;
	int i;

	(void)state;
	if (!mkdtemp(work) ||
	    run(out, sizeof(out), "openssl genpkey -algorithm ed25519 -out %s/ca.pem", work) != 0 ||
	    run(out, sizeof(out), "openssl genpkey -algorithm ed25519 -out %s/other-ca.pem", work) != 0 ||
	    ca_public_key(ca, "ca.pem") < 0 || ca_public_key(other_ca, "other-ca.pem") < 0)
		return -1;
	off = (size_t)snprintf(fleet, sizeof(fleet), "grpc://");
	for (i = 0; i < N_TARGETS; i++) {
		if (start_target(i) < 0)
			return -1;
		off +=
		    (size_t)snprintf(fleet + off, sizeof(fleet) - off, "%s%s", i ? "," : "", targets[i].addr);
	}
	print_message("fleet: %s\n", fleet);
	return 0;
}

static int teardown(void **state)
{
	char out[64];
	int i, rc = 0;

	(void)state;
	for (i = 0; i < N_TARGETS; i++)
		if ((targets[i].pid || targets[i].dir[0]) && test_moatd_stop(&targets[i]) < 0)
			rc = -1;
	if (run(out, sizeof(out), "rm -rf '%s'", work) != 0)
		rc = -1;
	return rc;
}

/* Load on uri pinned to CA key ca_key (and to key, when not NULL); NULL when it failed. */
static moat_enclave *load_ca(const char *uri, const uint8_t *ca_key, const uint8_t *key)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = uri;
	o.target_ca_keys = ca_key;
	o.n_target_ca_keys = 1;
	o.target_key = key;
	if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o) < 0) {
		print_message("load on %s: %s\n", uri, moat_error_last()->message);
		return NULL;
	}
	return e;
}

/* Which target hosts e, by its identity key; -1 when none. */
static int target_of(const moat_enclave *e)
{
	moat_identity id;
	int i;

	if (moat_enclave_identity(e, &id) < 0 || !id.has_target_key)
		return -1;
	for (i = 0; i < N_TARGETS; i++)
		if (memcmp(id.target_key, keys[i], MOAT_TARGET_KEY_LEN) == 0)
			return i;
	return -1;
}

/* The load fails with MOAT_EKEY, saying needle. */
static void refused(const char *uri, const uint8_t *ca_key, const char *needle)
{
	assert_null(load_ca(uri, ca_key, NULL));
	assert_int_equal(moat_error_last()->code, MOAT_EKEY);
	assert_non_null(strstr(moat_error_last()->message, needle));
}

static void test_fleet_lands_on_endorsed(void **state)
{
	moat_enclave *e[N_LOADS];
	int i, on[N_TARGETS + 1] = {0};

	(void)state;
	for (i = 0; i < N_LOADS; i++) {
		e[i] = load_ca(fleet, ca, NULL);
		assert_non_null(e[i]);
		on[target_of(e[i]) + 1]++;
	}
	/* on[] counts target_of() + 1: none on an unknown key, none on the unendorsed third target. */
	print_message("sessions on an unknown key %d, on the targets %d %d %d\n", on[0], on[1], on[2], on[3]);
	assert_int_equal(on[0], 0);
	assert_int_equal(on[3], 0);
	assert_int_equal(on[1] + on[2], N_LOADS);
	assert_true(on[1] > 0 && on[2] > 0);
	for (i = 0; i < N_LOADS; i++)
		moat_enclave_destroy(e[i]);
	/* No target carries an endorsement by the other CA. */
	refused(fleet, other_ca, "not endorsed by a pinned CA");
}

static void test_single_target(void **state)
{
	moat_enclave *e;
	int i;

	(void)state;
	for (i = 0; i < N_TARGETS - 1; i++) {
		e = load_ca(targets[i].uri, ca, NULL);
		assert_non_null(e);
		assert_int_equal(target_of(e), i);
		moat_enclave_destroy(e);
		refused(targets[i].uri, other_ca, "endorsement is by another CA");
	}
	refused(targets[2].uri, ca, "the target sent no endorsement");
	/* A key pinned itself still counts next to a CA (and the target is not asked to check it). */
	e = load_ca(targets[2].uri, ca, keys[2]);
	assert_non_null(e);
	assert_int_equal(target_of(e), 2);
	moat_enclave_destroy(e);
	assert_null(load_ca(targets[2].uri, other_ca, keys[1]));
	assert_int_equal(moat_error_last()->code, MOAT_EKEY);
	assert_non_null(strstr(moat_error_last()->message, "nor pinned itself"));
}

/* moat run --target-ca-key: the CLI passes the pin on, repeatable. */
static void test_cli_run(void **state)
{
	char out[1024], hex[2][2 * MOAT_TARGET_KEY_LEN + 1];
	const char *moat = MOAT_TEST_BINDIR "/moat", *image = TEST_ENCLAVE("hello_enclave");

	(void)state;
	moat__hex(hex[0], ca, sizeof(ca));
	moat__hex(hex[1], other_ca, sizeof(other_ca));
	assert_int_equal(
	    run(out, sizeof(out), "%s run -b %s --target-ca-key %s %s", moat, targets[0].uri, hex[0], image),
	    0);
	assert_non_null(strstr(out, "Hello, world!"));
	assert_int_equal(
	    run(out, sizeof(out), "%s run -b %s --target-ca-key %s %s", moat, targets[0].uri, hex[1], image),
	    1);
	assert_non_null(strstr(out, "endorsement is by another CA"));
	assert_int_equal(run(out, sizeof(out), "%s run -b %s --target-ca-key %s --target-ca-key %s %s", moat,
	                     targets[1].uri, hex[1], hex[0], image),
	                 0);
	assert_int_equal(
	    run(out, sizeof(out), "%s run -b %s --target-ca-key %s %s", moat, targets[2].uri, hex[0], image),
	    1);
	assert_non_null(strstr(out, "the target sent no endorsement"));
	assert_int_equal(run(out, sizeof(out), "%s run --target-ca-key 12zz %s", moat, image), 2);
	assert_non_null(strstr(out, "--target-ca-key wants 64 hex digits"));
}

static void test_bad_endorsement(void **state)
{
	char out[1024];

	(void)state;
	assert_int_equal(run(out, sizeof(out), "printf 'abcd\\n' > %s/bad", work), 0);
	assert_int_equal(run(out, sizeof(out),
	                     "%s/moatd --listen 127.0.0.1:0 --state-dir %s/state-bad "
	                     "--identity-endorsement %s/bad",
	                     MOAT_TEST_BINDIR, work, work),
	                 1);
	assert_non_null(strstr(out, "bad is not an identity endorsement"));
	assert_non_null(strstr(out, "128 hex digits"));
	assert_int_equal(run(out, sizeof(out),
	                     "%s/moatd --listen 127.0.0.1:0 --state-dir %s/state-bad "
	                     "--identity-endorsement %s/missing",
	                     MOAT_TEST_BINDIR, work, work),
	                 1);
	assert_non_null(strstr(out, "cannot read the identity endorsement"));
	/* The same key in a --config file. */
	assert_int_equal(
	    run(out, sizeof(out), "echo 'identity-endorsement = %s/bad' > %s/moatd.conf", work, work), 0);
	assert_int_equal(run(out, sizeof(out),
	                     "%s/moatd --config %s/moatd.conf --listen 127.0.0.1:0 --state-dir %s/state-bad",
	                     MOAT_TEST_BINDIR, work, work),
	                 1);
	assert_non_null(strstr(out, "bad is not an identity endorsement"));
}

static void test_endorse_errors(void **state)
{
	char out[1024];
	const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

	(void)state;
	assert_int_equal(run(out, sizeof(out), "%s/moat endorse %s", MOAT_TEST_BINDIR, hex), 2);
	assert_non_null(strstr(out, "--ca-key is required"));
	assert_int_equal(
	    run(out, sizeof(out), "%s/moat endorse --ca-key %s/nosuch.pem %s", MOAT_TEST_BINDIR, work, hex),
	    1);
	assert_non_null(strstr(out, "cannot read the CA key"));
	assert_int_equal(
	    run(out, sizeof(out), "%s/moat endorse --ca-key %s/bad %s", MOAT_TEST_BINDIR, work, hex), 1);
	assert_non_null(strstr(out, "is not a PEM private key"));
	assert_int_equal(
	    run(out, sizeof(out),
	        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out %s/ec.pem", work),
	    0);
	assert_int_equal(
	    run(out, sizeof(out), "%s/moat endorse --ca-key %s/ec.pem %s", MOAT_TEST_BINDIR, work, hex), 1);
	assert_non_null(strstr(out, "is not an Ed25519 key but EC"));
	assert_int_equal(
	    run(out, sizeof(out), "%s/moat endorse --ca-key %s/ca.pem 12zz", MOAT_TEST_BINDIR, work), 1);
	assert_non_null(strstr(out, "'12zz' is neither a target key"));
	assert_int_equal(
	    run(out, sizeof(out), "%s/moat endorse --ca-key %s/ca.pem %s/bad", MOAT_TEST_BINDIR, work, work),
	    1);
	assert_non_null(strstr(out, "bad does not hold a target key"));
	/* A key in a file, as moatd --print-key writes it. */
	assert_int_equal(run(out, sizeof(out),
	                     "echo %s > %s/key && %s/moat endorse --ca-key %s/ca.pem %s/key", hex, work,
	                     MOAT_TEST_BINDIR, work, work),
	                 0);
	assert_int_equal(strlen(out), 128);
	assert_int_equal(run(out, sizeof(out), "%s/moat endorse --help", MOAT_TEST_BINDIR), 0);
	assert_non_null(strstr(out, "usage: moat endorse"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fleet_lands_on_endorsed),
	    cmocka_unit_test(test_single_target),
	    cmocka_unit_test(test_cli_run),
	    cmocka_unit_test(test_bad_endorsement),
	    cmocka_unit_test(test_endorse_errors),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
