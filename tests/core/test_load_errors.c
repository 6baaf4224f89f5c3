/*
 * Load failures and argument checks of the core, on the sim backend: each
 * failure has its own code, a message that says what is wrong, leaves *out
 * NULL and leaks nothing (valgrind checks memory; the fd count is checked
 * here). Also: identity versus moat_measure_file() and `moat measure`.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "test_enclave.h"

static char tmpdir[64];

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *ent;
	int n = 0;

	assert_non_null(d);
	while ((ent = readdir(d)) != NULL)
		if (ent->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Load path on sim with opts and expect code; the message must contain needle. */
static void expect_load_fails(const char *path, moat_load_options *opts, int code, moat_origin origin,
                              const char *needle)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = (moat_enclave *)&o; /* must come back NULL */
	const moat_error *err;
	int fds = count_fds();

	if (!opts) {
		o.backend = "sim";
		opts = &o;
	}
	assert_int_equal(moat_enclave_load(&e, path, opts), code);
	assert_null(e);
	err = moat_error_last();
	assert_int_equal(err->code, code);
	assert_int_equal(err->origin, origin);
	if (!strstr(err->message, needle))
		fail_msg("message '%s' does not mention '%s'", err->message, needle);
	assert_int_equal(count_fds(), fds);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void tmp_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

static void test_missing_file(void **state)
{
	char p[128];

	tmp_path(p, sizeof(p), "does-not-exist.so");
	expect_load_fails(p, NULL, MOAT_ENOENT, MOAT_ORIGIN_API, p);
	expect_load_fails("/nonexistent-dir/x/enclave.so", NULL, MOAT_ENOENT, MOAT_ORIGIN_API,
	                  "no such file");
}

static void test_not_elf(void **state)
{
	static const char text[] = "#!/bin/sh\necho this is not an enclave\n";
	uint8_t head[200];
	char p[128];
	FILE *f;

	tmp_path(p, sizeof(p), "text.so");
	write_file(p, text, sizeof(text) - 1);
	expect_load_fails(p, NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API, "not an ELF");

	tmp_path(p, sizeof(p), "empty.so");
	write_file(p, "", 0);
	expect_load_fails(p, NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API, "not an ELF");

	/* A directory is not an image either. */
	expect_load_fails(tmpdir, NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API, tmpdir);
	/* Nor a FIFO: refused at once rather than waiting for a writer. */
	tmp_path(p, sizeof(p), "fifo.so");
	assert_int_equal(mkfifo(p, 0600), 0);
	expect_load_fails(p, NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API, "not a regular file");
	assert_int_equal(moat_measure_file(head, p), MOAT_EBADIMAGE);

	/* An ELF header with nothing behind it: the loader refuses it. */
	f = fopen(TEST_ENCLAVE("test_enclave"), "rb");
	assert_non_null(f);
	assert_int_equal(fread(head, 1, sizeof(head), f), sizeof(head));
	fclose(f);
	tmp_path(p, sizeof(p), "truncated.so");
	write_file(p, head, sizeof(head));
	expect_load_fails(p, NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API, "cannot load");
}

static void test_no_entry(void **state)
{
	expect_load_fails(TEST_ENCLAVE("test_noentry"), NULL, MOAT_ENOENTRY, MOAT_ORIGIN_API,
	                  "moat_enclave_entry");
}

static void test_abi_mismatch(void **state)
{
	/* test_abi's functions abort if called: a pass also shows none of them ran. */
	expect_load_fails(TEST_ENCLAVE("test_abi"), NULL, MOAT_EABI, MOAT_ORIGIN_API, "ABI version 999");
}

static int file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_measurement_mismatch(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	uint8_t m[MOAT_MEASUREMENT_LEN], wrong[MOAT_MEASUREMENT_LEN];
	char marker[128], hex[2 * MOAT_MEASUREMENT_LEN + 1];
	moat_enclave *e = NULL;
	size_t i;

	tmp_path(marker, sizeof(marker), "constructor-ran");
	assert_int_equal(setenv(T_MARKER_ENV, marker, 1), 0);
	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("test_marker")));
	o.backend = "sim";

	/* Control: a load without a pin runs the constructor, so the marker is a working probe. */
	assert_false(file_exists(marker));
	e = test_load(TEST_ENCLAVE("test_marker"), &o);
	moat_enclave_destroy(e);
	assert_true(file_exists(marker));
	assert_int_equal(unlink(marker), 0);

	/* A pin that differs in one bit: refused, and the constructor never ran. */
	memcpy(wrong, m, sizeof(m));
	wrong[MOAT_MEASUREMENT_LEN - 1] ^= 1;
	o.expected_measurement = wrong;
	for (i = 0; i < MOAT_MEASUREMENT_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", wrong[i]);
	expect_load_fails(TEST_ENCLAVE("test_marker"), &o, MOAT_EMEASUREMENT, MOAT_ORIGIN_API, hex);
	assert_false(file_exists(marker));

	/* The right pin loads and runs it. */
	o.expected_measurement = m;
	e = test_load(TEST_ENCLAVE("test_marker"), &o);
	moat_enclave_destroy(e);
	assert_true(file_exists(marker));
	assert_int_equal(unlink(marker), 0);
	unsetenv(T_MARKER_ENV);
}

static void test_options_version(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.version = 999;
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EVERSION, MOAT_ORIGIN_API, "version 999");
	o.version = 0;
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EVERSION, MOAT_ORIGIN_API, "version 0");
	{
		/*
		 * A program built against version 1 passes a struct that ends before
		 * image_name; what lies beyond it (here: garbage) is not read.
		 */
		union {
			moat_load_options o;
			unsigned char bytes[sizeof(moat_load_options)];
		} v1;
		moat_enclave *e = NULL;

		memset(v1.bytes, 0xa5, sizeof(v1.bytes));
		memcpy(&v1.o, &o, offsetof(moat_load_options, image_name));
		v1.o.version = 1;
		v1.o.backend = "proc"; /* proc names the image by image_name when set */
		assert_int_equal(moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &v1.o), 0);
		moat_enclave_destroy(e);
	}
	{
		/*
		 * Version 3 ends before target_ca_keys. Beyond it here: a NULL
		 * target_ca_keys with a count, which the library refuses if it
		 * reads them (as the last check below shows).
		 */
		union {
			moat_load_options o;
			unsigned char bytes[sizeof(moat_load_options)];
		} v3;
		moat_enclave *e = NULL;

		memset(v3.bytes, 0xa5, sizeof(v3.bytes));
		memcpy(&v3.o, &o, offsetof(moat_load_options, target_ca_keys));
		v3.o.target_ca_keys = NULL;
		v3.o.version = 3;
		assert_int_equal(moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &v3.o), 0);
		moat_enclave_destroy(e);
		v3.o.version = 4;
		expect_load_fails(TEST_ENCLAVE("test_enclave"), &v3.o, MOAT_EINVAL, MOAT_ORIGIN_API,
		                  "n_target_ca_keys is set but target_ca_keys is NULL");
	}
}

static void test_unknown_backend(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.backend = "nosuch";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_ENOBACKEND, MOAT_ORIGIN_API, "nosuch");
	o.backend = "nosuch://host:1";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_ENOBACKEND, MOAT_ORIGIN_API,
	                  "nosuch://host:1");
	/* Known schemes with a malformed address are invalid arguments, not unknown backends. */
	o.backend = "grpc";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "needs an address");
	o.backend = "sim:extra";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "takes no address");
	/* One parser: a grpc URI without "//" is refused in the core, the same way for every backend. */
	o.backend = "grpc:127.0.0.1:1";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API,
	                  "needs an address: grpc://");
	o.backend = "grpcs://";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "needs an address");
	o.backend = "unix:";
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "needs an address");

	/* The environment variable is honoured when the option is NULL. */
	o.backend = NULL;
	assert_int_equal(setenv("MOAT_BACKEND", "nosuch-env", 1), 0);
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_ENOBACKEND, MOAT_ORIGIN_API, "nosuch-env");
	unsetenv("MOAT_BACKEND");
}

static void test_bad_options(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.backend = "sim";
	o.config_len = 4;
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "config");
	o.config_len = 0;
	o.thread_policy = 5;
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "thread_policy");
	o.thread_policy = MOAT_THREADS_WAIT;
	o.flags = MOAT_LOAD_BY_NAME;
	expect_load_fails(TEST_ENCLAVE("test_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API, "remote");
}

static void test_reserved_selector(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	static const uint64_t reserved[] = {0, MOAT_SELECTOR_LOG,     MOAT_SELECTOR_TIME, MOAT_SELECTOR_SPAWN,
	                                    5, MOAT_SELECTOR_USER - 1};
	size_t i;

	o.backend = "sim";
	e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		assert_int_equal(moat_enclave_call(e, reserved[i], NULL, NULL), MOAT_EINVAL);
		assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
		assert_non_null(strstr(moat_error_last()->message, "reserved"));
	}
	/* The handle is unharmed. */
	assert_moat_ok(moat_enclave_call(e, T_GLOBAL_GET, NULL, NULL));
	moat_enclave_destroy(e);
}

static int dummy_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	return 0;
}

static void test_null_arguments(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	uint8_t m[MOAT_MEASUREMENT_LEN];
	moat_identity id;
	moat_enclave *e = NULL;

	o.backend = "sim";
	assert_int_equal(moat_enclave_load(NULL, TEST_ENCLAVE("test_enclave"), &o), MOAT_EINVAL);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
	expect_load_fails(NULL, &o, MOAT_EINVAL, MOAT_ORIGIN_API, "path");
	expect_load_fails("", &o, MOAT_EINVAL, MOAT_ORIGIN_API, "path");
	assert_int_equal(moat_enclave_call(NULL, T_ECHO, NULL, NULL), MOAT_EINVAL);
	assert_int_equal(moat_enclave_set_exit_handler(NULL, MOAT_SELECTOR_USER, dummy_exit, NULL),
	                 MOAT_EINVAL);
	assert_int_equal(moat_enclave_set_fallback_handler(NULL, dummy_exit, NULL), MOAT_EINVAL);
	assert_int_equal(moat_enclave_identity(NULL, &id), MOAT_EINVAL);
	assert_int_equal(moat_measure_file(NULL, TEST_ENCLAVE("test_enclave")), MOAT_EINVAL);
	assert_int_equal(moat_measure_file(m, NULL), MOAT_EINVAL);
	assert_int_equal(moat_measure_file(m, "/nonexistent/enclave.so"), MOAT_ENOENT);
	moat_enclave_destroy(NULL);

	e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	assert_int_equal(moat_enclave_identity(e, NULL), MOAT_EINVAL);
	/* Removing a handler that was never set is fine. */
	assert_moat_ok(moat_enclave_set_exit_handler(e, MOAT_SELECTOR_USER + 5, NULL, NULL));
	moat_enclave_destroy(e);
}

static void test_strerror(void **state)
{
	int a, b;

	assert_string_equal(moat_strerror(MOAT_OK), "success");
	for (a = MOAT_ECANCELED; a < 0; a++) {
		assert_string_not_equal(moat_strerror(a), "unknown error");
		for (b = a + 1; b < 0; b++)
			assert_string_not_equal(moat_strerror(a), moat_strerror(b));
	}
	assert_string_equal(moat_strerror(-1000), "unknown error");
	assert_string_equal(moat_strerror(5), "unknown error");
	assert_string_equal(moat_origin_name(MOAT_ORIGIN_ENCLAVE), "enclave");
	assert_string_equal(moat_origin_name((moat_origin)99), "none");
	moat_error_clear();
	assert_int_equal(moat_error_last()->code, MOAT_OK);
	assert_string_equal(moat_error_last()->message, "");
	assert_string_equal(moat_version(), MOAT_VERSION_STRING);
}

static void test_identity(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	uint8_t m[MOAT_MEASUREMENT_LEN];
	char hex[2 * MOAT_MEASUREMENT_LEN + 1], line[256];
	moat_identity id;
	moat_enclave *e;
	FILE *p;
	size_t i;

	o.backend = "sim";
	e = test_load(TEST_ENCLAVE("kv_raw_enclave"), &o);
	assert_moat_ok(moat_enclave_identity(e, &id));
	assert_string_equal(id.backend, "sim");
	assert_int_equal(id.isolation, 0);
	assert_int_equal(id.has_target_key, 0);
	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("kv_raw_enclave")));
	assert_memory_equal(id.measurement, m, MOAT_MEASUREMENT_LEN);
	moat_enclave_destroy(e);

	/* The CLI prints the same measurement. */
	for (i = 0; i < MOAT_MEASUREMENT_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", m[i]);
	p = popen(MOAT_TEST_BINDIR "/moat measure " TEST_ENCLAVE("kv_raw_enclave"), "r");
	assert_non_null(p);
	assert_non_null(fgets(line, sizeof(line), p));
	assert_int_equal(pclose(p), 0);
	line[strcspn(line, "\n")] = '\0';
	assert_string_equal(line, hex);

	/* Different images, different measurements. */
	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("hello_enclave")));
	assert_memory_not_equal(id.measurement, m, MOAT_MEASUREMENT_LEN);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/moat-test-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	static const char *names[] = {"text.so", "empty.so", "truncated.so", "fifo.so", "constructor-ran"};
	char p[128];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		tmp_path(p, sizeof(p), names[i]);
		unlink(p);
	}
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_not_elf),
	    cmocka_unit_test(test_no_entry),
	    cmocka_unit_test(test_abi_mismatch),
	    cmocka_unit_test(test_measurement_mismatch),
	    cmocka_unit_test(test_options_version),
	    cmocka_unit_test(test_unknown_backend),
	    cmocka_unit_test(test_bad_options),
	    cmocka_unit_test(test_reserved_selector),
	    cmocka_unit_test(test_null_arguments),
	    cmocka_unit_test(test_strerror),
	    cmocka_unit_test(test_identity),
	};

	/* These tests pin the backend to sim; a MOAT_BACKEND from the caller must not leak in. */
	unsetenv("MOAT_BACKEND");
	return cmocka_run_group_tests_name("load_errors", tests, setup, teardown);
}
