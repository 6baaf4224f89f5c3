/*
 * moatd as a service: systemd's notifications (READY with the URI, the
 * watchdog, RELOADING/READY around SIGHUP, STOPPING) on a notify socket of
 * the test's own, and SIGHUP reloads that keep sessions: a new TLS
 * certificate for new connections while an open session keeps calling, and
 * a new enclave directory read from the --config file.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"

static char work[64];

static int setup(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(work, sizeof(work), "/tmp/moat-ops-XXXXXX");
	if (!mkdtemp(work))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/remote/make_certs.sh %s/certs", MOAT_TEST_SOURCE_DIR, work);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[100];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", work, name);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static void run_sh(const char *fmt, ...)
{
	char cmd[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

/* The next notification on fd within ms (NUL-terminated in buf), or 0 bytes. */
static ssize_t next_note(int fd, char *buf, size_t cap, int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return 0;
	n = recv(fd, buf, cap - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	return n;
}

/* Wait up to ms for a notification holding want; the others are skipped. */
static int note_with(int fd, const char *want, int ms, char *buf, size_t cap)
{
	while (ms > 0) {
		if (next_note(fd, buf, cap, 100) > 0 && strstr(buf, want))
			return 1;
		ms -= 100;
	}
	return 0;
}

static void test_notify(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char buf[512];
	test_moatd m;
	int fd;

	(void)state;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", work);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	setenv("WATCHDOG_USEC", "300000", 1);
	assert_int_equal(test_moatd_start(&m, "unix", "--allow-upload", NULL), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");

	assert_true(note_with(fd, "READY=1", 5000, buf, sizeof(buf)));
	assert_non_null(strstr(buf, "STATUS=serving on unix:"));
	/* A ping every half period. */
	assert_true(note_with(fd, "WATCHDOG=1", 2000, buf, sizeof(buf)));
	assert_true(note_with(fd, "WATCHDOG=1", 2000, buf, sizeof(buf)));
	kill(m.pid, SIGHUP);
	assert_true(note_with(fd, "RELOADING=1", 5000, buf, sizeof(buf)));
	assert_true(note_with(fd, "READY=1", 5000, buf, sizeof(buf)));
	assert_int_equal(test_moatd_stop(&m), 0);
	assert_true(note_with(fd, "STOPPING=1", 1000, buf, sizeof(buf)));
	close(fd);
}

static void hello_works(moat_enclave *e)
{
	moat_msg *in = test_msg(), *out = test_msg();

	moat_msg_push_str(in, "reload");
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out));
	test_assert_item_str(out, 0, "Hello, reload!");
	moat_msg_free(in);
	moat_msg_free(out);
}

/* Load hello by name on uri, trusting CA ca; the code. */
static int load_hello(moat_enclave **e, const char *uri, const char *ca)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.backend = uri;
	o.tls_ca_file = ca;
	o.flags = MOAT_LOAD_BY_NAME;
	*e = NULL;
	return moat_enclave_load(e, "hello_enclave", &o);
}

/* Retry a load until it gives want (a reload happens on moatd's next loop turn). */
static moat_enclave *load_until(const char *uri, const char *ca, int want)
{
	moat_enclave *e = NULL;
	int i, rc = 1;

	for (i = 0; i < 100 && rc != want; i++) {
		moat_enclave_destroy(e);
		if ((rc = load_hello(&e, uri, ca)) != want)
			test_sleep_ms(50);
	}
	if (rc != want)
		print_error("load gave %d, not %d: %s\n", rc, want, moat_error_last()->message);
	assert_int_equal(rc, want);
	return e;
}

static void test_reload(void **state)
{
	char conf[128], cert[128], key[128], ca[128], other_ca[128], empty[128], text[512];
	moat_enclave *kept, *e;
	test_moatd m;

	(void)state;
	path_of(conf, sizeof(conf), "moatd.conf");
	path_of(cert, sizeof(cert), "serving.pem");
	path_of(key, sizeof(key), "serving.key");
	path_of(ca, sizeof(ca), "certs/ca.pem");
	path_of(other_ca, sizeof(other_ca), "certs/other-ca.pem");
	path_of(empty, sizeof(empty), "empty");
	run_sh("mkdir -p %s && cp %s/certs/server.pem %s && cp %s/certs/server.key %s", empty, work, cert,
	       work, key);
	snprintf(text, sizeof(text),
	         "# moatd's configuration\n[moatd]\nenclave-dir = %s\ntls-cert = %s\ntls-key = %s\n", empty,
	         cert, key);
	write_file(conf, text);
	assert_int_equal(test_moatd_start(&m, "grpcs", "--config", conf, NULL), 0);

	/* Nothing by that name in the empty directory; then the config names the enclaves. */
	assert_int_equal(load_hello(&e, m.uri, ca), MOAT_ENOENT);
	snprintf(text, sizeof(text), "[moatd]\nenclave-dir = %s\ntls-cert = %s\ntls-key = %s\n",
	         MOAT_TEST_ENCLAVES, cert, key);
	write_file(conf, text);
	kill(m.pid, SIGHUP);
	kept = load_until(m.uri, ca, 0);
	hello_works(kept);

	/* A certificate from another CA, in place: new connections get it, the open session keeps calling. */
	run_sh("cd %s/certs && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "
	       "/CN=localhost "
	       "-keyout %s -out new.csr >/dev/null 2>&1 && openssl x509 -req -in new.csr -CA other-ca.pem "
	       "-CAkey "
	       "other-ca.key -CAcreateserial -days 2 -extfile server.ext -out %s >/dev/null 2>&1",
	       work, key, cert);
	kill(m.pid, SIGHUP);
	e = load_until(m.uri, other_ca, 0);
	hello_works(e);
	moat_enclave_destroy(e);
	assert_int_not_equal(load_hello(&e, m.uri, ca), 0);
	hello_works(kept);

	/* A key that does not go with the certificate: refused, the last good pair stays. */
	run_sh("cp %s/certs/server.key %s", work, key);
	kill(m.pid, SIGHUP);
	test_sleep_ms(300);
	e = load_until(m.uri, other_ca, 0);
	moat_enclave_destroy(e);
	hello_works(kept);
	moat_enclave_destroy(kept);
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_notify),
	    cmocka_unit_test(test_reload),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
