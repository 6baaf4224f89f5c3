/*
 * A fleet reached by name: grpc+dns://NAME:PORT and grpcs+dns://NAME:PORT
 * with gRPC's default resolver, in a private mount namespace of this
 * process whose /etc/hosts (a temporary file bind-mounted over it) gives
 * one name several loopback addresses (127.0.0.2, .3, ...), each with a
 * moatd of its own on the same port. The machine's own /etc/hosts is never
 * touched: the bind mount lives in the namespace, which ends with the test.
 *
 * - Sessions spread over the addresses of the name; each names its target
 *   (moat_enclave_target) and `moat run --verbose` says it.
 * - A target of the name that is not running yet is skipped, and taken
 *   once it starts, by loads of the same process (gRPC's reconnect backoff,
 *   capped at the 5 s connect timeout); an address added to the name is
 *   seen by the next fresh balancing channel (a new process, or this one
 *   once it holds no session on the fleet).
 * - TLS: the certificates name NAME alone, no address, so each session
 *   pinned to an address checks NAME; a target whose certificate is for
 *   another name is skipped, and a name with only such a target fails
 *   with an error that says why.
 *
 * Needs root (unshare, mount); skipped (77) with a message otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "test_enclave.h"

#define N_LOADS 12
#define N_PLAIN 4 /* 127.0.0.2-.4 from the start (.4 started late), .6 added to the name later */
#define N_TLS   4 /* 127.0.0.2-.4 with a certificate for the name, .5 with one for another name */

static char dir[128], hosts[200], certs[200];
static test_moatd plain[N_PLAIN], tls[N_TLS];
static unsigned int plain_port, tls_port;

static const char hosts_text[] = "127.0.0.1 localhost\n"
                                 "127.0.0.2 plain.moat.test fleet.moat.test\n"
                                 "127.0.0.3 plain.moat.test fleet.moat.test\n"
                                 "127.0.0.4 plain.moat.test fleet.moat.test\n"
                                 "127.0.0.5 fleet.moat.test wrong.moat.test\n";

/* Rewrite the hosts file in place (the bind mount shows the same file). */
static int write_hosts(const char *text)
{
	FILE *f = fopen(hosts, "w");
	int rc;

	if (!f)
		return -1;
	rc = fputs(text, f) < 0 ? -1 : 0;
	return fclose(f) == 0 ? rc : -1;
}

static int skip_test(const char *why)
{
	printf("SKIP: %s\n", why);
	return 77;
}

/* How many addresses name resolves to (getaddrinfo, IPv4, TCP). */
static int n_addresses(const char *name)
{
	struct addrinfo hints = {0}, *res = NULL, *p;
	int n = 0;

	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(name, NULL, &hints, &res) != 0)
		return 0;
	for (p = res; p; p = p->ai_next)
		n++;
	freeaddrinfo(res);
	return n;
}

/*
 * A private mount namespace with the test's hosts file over /etc/hosts.
 * Before any thread starts: unshare(CLONE_NEWNS) wants the file system
 * context unshared. Returns 0, or 77 to skip, or 1 on a failure.
 */
static int enter_namespace(void)
{
	struct sockaddr_in a = {0};
	int fd, bound;

	if (geteuid() != 0)
		return skip_test("needs root (a private mount namespace with its own /etc/hosts)");
	/* The type is ignored for these two mounts; "none" rather than NULL keeps valgrind quiet. */
	if (unshare(CLONE_NEWNS) < 0)
		return skip_test("this kernel or sandbox does not allow a mount namespace (unshare)");
	if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
		return skip_test("cannot make the mounts of the namespace private");
	snprintf(dir, sizeof(dir), "/tmp/moat-fleetdns-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(hosts, sizeof(hosts), "%s/hosts", dir);
	snprintf(certs, sizeof(certs), "%s/certs", dir);
	if (write_hosts(hosts_text) < 0)
		return 1;
	if (mount(hosts, "/etc/hosts", "none", MS_BIND, NULL) < 0)
		return skip_test("cannot bind-mount a hosts file over /etc/hosts");
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(0x7f000002); /* 127.0.0.2 */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	bound = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	if (!bound)
		return skip_test("127.0.0.2 is not a loopback address here");
	if (n_addresses("plain.moat.test") != 3) {
		printf("FAIL: plain.moat.test resolves to %d addresses, not 3\n",
		       n_addresses("plain.moat.test"));
		return 1;
	}
	return 0;
}

/* Start a moatd on IP:port (0: a free one, learnt into *port); extra arguments NULL-terminated. */
static int start_on(test_moatd *m, const char *scheme, const char *ip, unsigned int *port, ...)
{
	const char *extra[16];
	char listen[64];
	va_list ap;
	int n = 0;

	snprintf(listen, sizeof(listen), "%s:%u", ip, *port);
	extra[n++] = "--allow-upload";
	extra[n++] = "--backend=sim";
	extra[n++] = "--listen"; /* after the helper's own: the last one counts */
	extra[n++] = listen;
	va_start(ap, port);
	while (n < 15 && (extra[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	extra[n] = NULL;
	if (test_moatd_start_v(m, scheme, extra) < 0)
		return -1;
	if (!*port)
		*port = (unsigned int)strtoul(strrchr(m->addr, ':') + 1, NULL, 10);
	return 0;
}

static moat_enclave *load(const char *uri, const moat_load_options *base)
{
	moat_load_options o = base ? *base : (moat_load_options)MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = uri;
	if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o) < 0) {
		print_message("load on %s: %s\n", uri, moat_error_last()->message);
		return NULL;
	}
	return e;
}

static int echo_works(moat_enclave *e)
{
	moat_msg *in = NULL, *out = NULL;
	int rc;

	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, "by name");
	rc = moat_enclave_call(e, T_ECHO, in, out);
	moat_msg_free(in);
	moat_msg_free(out);
	return rc;
}

/* The last digit of the loopback address e's target has (2 for 127.0.0.2:PORT), or -1. */
static int host_of(const moat_enclave *e, unsigned int port)
{
	const char *t = moat_enclave_target(e);
	unsigned int a, p;

	if (!t || sscanf(t, "127.0.0.%u:%u", &a, &p) != 2 || p != port)
		return -1;
	return (int)a;
}

/* Load until a session lands on 127.0.0.want (at most max loads, nap ms apart); its number, or -1. */
static int load_until(const char *uri, const moat_load_options *o, unsigned int port, int want, int max,
                      long nap)
{
	int i;

	for (i = 1; i <= max; i++) {
		moat_enclave *e = load(uri, o);
		int at;

		assert_non_null(e);
		at = host_of(e, port);
		assert_true(at >= 2);
		assert_int_equal(echo_works(e), 0);
		moat_enclave_destroy(e);
		if (at == want)
			return i;
		test_sleep_ms(nap);
	}
	return -1;
}

/* N_LOADS sessions held at once on uri: where each landed, counted in count[address digit]. */
static void spread(moat_enclave **e, const char *uri, const moat_load_options *o, unsigned int port,
                   int *count)
{
	int i, at;

	for (i = 0; i < N_LOADS; i++) {
		e[i] = load(uri, o);
		assert_non_null(e[i]);
		at = host_of(e[i], port);
		assert_true(at >= 2 && at <= 6);
		count[at]++;
		assert_int_equal(echo_works(e[i]), 0);
	}
}

/*
 * grpc+dns://plain.moat.test:PORT names 127.0.0.2-.4, of which .4 runs no
 * moatd yet: loads spread over .2 and .3; once .4 starts, loads of the
 * same process (the balancing channel kept by the sessions it holds)
 * reach it too.
 */
static void test_plain_spread_and_late_target(void **state)
{
	moat_enclave *e[N_LOADS];
	int count[8] = {0}, i, n;
	char uri[100];

	(void)state;
	assert_int_equal(start_on(&plain[0], "grpc", "127.0.0.2", &plain_port, NULL), 0);
	assert_int_equal(start_on(&plain[1], "grpc", "127.0.0.3", &plain_port, NULL), 0);
	snprintf(uri, sizeof(uri), "grpc+dns://plain.moat.test:%u", plain_port);
	spread(e, uri, NULL, plain_port, count);
	print_message("%d loads on %s: %d on .2, %d on .3 (.4 not running)\n", N_LOADS, uri, count[2],
	              count[3]);
	assert_int_equal(count[2] + count[3], N_LOADS);
	assert_true(count[2] >= N_LOADS / 4 && count[3] >= N_LOADS / 4);

	/* The late target: gRPC tries it again after its reconnect backoff (at most 5 s, plus jitter). */
	assert_int_equal(start_on(&plain[2], "grpc", "127.0.0.4", &plain_port, NULL), 0);
	n = load_until(uri, NULL, plain_port, 4, 300, 50);
	print_message("the target started late took load %d after it started\n", n);
	assert_true(n > 0);
	for (i = 0; i < N_LOADS; i++)
		moat_enclave_destroy(e[i]);
}

/*
 * An address added to the name (127.0.0.6, a moatd started there first):
 * the process holds no session on the fleet any more, so its next load
 * opens a fresh balancing channel, which resolves the name again. And a
 * new process (`moat run --verbose`) says which target it landed on.
 */
static void test_plain_address_added(void **state)
{
	char uri[100], cmd[600], line[400];
	moat_enclave *hold;
	int n, said = 0;
	FILE *p;

	(void)state;
	assert_int_equal(start_on(&plain[3], "grpc", "127.0.0.6", &plain_port, NULL), 0);
	assert_int_equal(write_hosts("127.0.0.1 localhost\n"
	                             "127.0.0.2 plain.moat.test\n127.0.0.3 plain.moat.test\n"
	                             "127.0.0.4 plain.moat.test\n127.0.0.6 plain.moat.test\n"),
	                 0);
	assert_int_equal(n_addresses("plain.moat.test"), 4);
	snprintf(uri, sizeof(uri), "grpc+dns://plain.moat.test:%u", plain_port);
	/* A session held keeps the fresh channel, so the loads after it take turns over the four. */
	hold = load(uri, NULL);
	assert_non_null(hold);
	n = load_until(uri, NULL, plain_port, 6, 40, 0);
	print_message("the address added to the name took load %d\n", n);
	assert_true(n > 0);
	moat_enclave_destroy(hold);

	snprintf(cmd, sizeof(cmd), "%s/moat run --verbose --backend %s %s world 2>&1", MOAT_TEST_BINDIR, uri,
	         TEST_ENCLAVE("hello_enclave"));
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p)) {
		print_message("moat run: %s", line);
		said |= strstr(line, "runs on target 127.0.0.") != NULL;
	}
	assert_int_equal(pclose(p), 0);
	assert_true(said);
	assert_int_equal(write_hosts(hosts_text), 0);
}

/*
 * grpcs+dns://fleet.moat.test:PORT: three targets with a certificate for
 * fleet.moat.test (and no address in it), one (127.0.0.5) with a
 * certificate for other.moat.test. Sessions spread over the three and
 * never land on the fourth; each is pinned to an address and its TLS check
 * names fleet.moat.test. A name with only the fourth fails, saying why.
 */
static void test_tls_by_name(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	char ca[300], good[2][300], bad[2][300], uri[100], cmd[400];
	moat_enclave *e[N_LOADS], *one;
	int count[8] = {0}, i;

	(void)state;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/remote/make_certs.sh %s fleet.moat.test other.moat.test",
	         MOAT_TEST_SOURCE_DIR, certs);
	assert_int_equal(system(cmd), 0);
	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(good[0], sizeof(good[0]), "%s/fleet.moat.test.pem", certs);
	snprintf(good[1], sizeof(good[1]), "%s/fleet.moat.test.key", certs);
	snprintf(bad[0], sizeof(bad[0]), "%s/other.moat.test.pem", certs);
	snprintf(bad[1], sizeof(bad[1]), "%s/other.moat.test.key", certs);
	for (i = 0; i < N_TLS; i++) {
		char ip[16];
		int ok = i < N_TLS - 1;

		snprintf(ip, sizeof(ip), "127.0.0.%d", i + 2);
		assert_int_equal(start_on(&tls[i], "grpcs", ip, &tls_port, "--tls-cert",
		                          ok ? good[0] : bad[0], "--tls-key", ok ? good[1] : bad[1], NULL),
		                 0);
	}
	o.tls_ca_file = ca;
	snprintf(uri, sizeof(uri), "grpcs+dns://fleet.moat.test:%u", tls_port);
	spread(e, uri, &o, tls_port, count);
	print_message("%d loads on %s: %d on .2, %d on .3, %d on .4, %d on .5 (another name's certificate)\n",
	              N_LOADS, uri, count[2], count[3], count[4], count[5]);
	assert_int_equal(count[5], 0);
	for (i = 2; i <= 4; i++)
		assert_true(count[i] >= N_LOADS / 6);
	for (i = 0; i < N_LOADS; i++)
		moat_enclave_destroy(e[i]);

	/* The name whose only target has another name's certificate: refused, and the error says why. */
	snprintf(uri, sizeof(uri), "grpcs+dns://wrong.moat.test:%u", tls_port);
	assert_null(load(uri, &o));
	assert_int_equal(moat_error_last()->code, MOAT_ETRANSPORT);
	assert_non_null(strstr(moat_error_last()->message, "wrong.moat.test"));
	assert_non_null(strstr(moat_error_last()->message, "is not in the target's certificate"));

	/* One target by address: its certificate names no address, so only the name's check passes. */
	snprintf(uri, sizeof(uri), "grpcs://127.0.0.2:%u", tls_port);
	assert_null(load(uri, &o));
	assert_int_equal(moat_error_last()->code, MOAT_ETRANSPORT);
	o.tls_server_name = "fleet.moat.test";
	one = load(uri, &o);
	assert_non_null(one);
	assert_int_equal(host_of(one, tls_port), 2);
	moat_enclave_destroy(one);
}

/*
 * grpcs://A,B,...: a list of addresses. On one host, each certificate is
 * checked against that host (127.0.0.1, which make_certs.sh's server
 * certificate names). On several hosts, gRPC checks one name for the whole
 * fleet: tls_server_name gives it (the name's targets of the test before,
 * and still never the one with another name's certificate), and without it
 * the load is refused, saying so.
 */
static void test_tls_list(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	char ca[300], cert[2][300], uri[600];
	int count[8] = {0}, i, on[2] = {0, 0};
	moat_enclave *e[N_LOADS];
	unsigned int port = 0;
	test_moatd local[2];

	(void)state;
	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(cert[0], sizeof(cert[0]), "%s/server.pem", certs);
	snprintf(cert[1], sizeof(cert[1]), "%s/server.key", certs);
	for (i = 0; i < 2; i++) {
		port = 0;
		assert_int_equal(start_on(&local[i], "grpcs", "127.0.0.1", &port, "--tls-cert", cert[0],
		                          "--tls-key", cert[1], NULL),
		                 0);
	}
	o.tls_ca_file = ca;
	snprintf(uri, sizeof(uri), "grpcs://%s,%s", local[0].addr, local[1].addr);
	for (i = 0; i < N_LOADS; i++) {
		e[i] = load(uri, &o);
		assert_non_null(e[i]);
		assert_non_null(moat_enclave_target(e[i]));
		on[strcmp(moat_enclave_target(e[i]), local[1].addr) == 0]++;
	}
	print_message("%d loads on %s: %d and %d\n", N_LOADS, uri, on[0], on[1]);
	assert_true(on[0] >= N_LOADS / 4 && on[1] >= N_LOADS / 4);
	for (i = 0; i < N_LOADS; i++)
		moat_enclave_destroy(e[i]);
	for (i = 0; i < 2; i++)
		assert_int_equal(test_moatd_stop(&local[i]), 0);

	snprintf(uri, sizeof(uri), "grpcs://127.0.0.2:%u,127.0.0.3:%u,127.0.0.4:%u,127.0.0.5:%u", tls_port,
	         tls_port, tls_port, tls_port);
	assert_null(load(uri, &o));
	assert_int_equal(moat_error_last()->code, MOAT_EINVAL);
	assert_non_null(strstr(moat_error_last()->message, "tls_server_name"));
	o.tls_server_name = "fleet.moat.test";
	spread(e, uri, &o, tls_port, count);
	print_message("%d loads on %s: %d on .2, %d on .3, %d on .4, %d on .5\n", N_LOADS, uri, count[2],
	              count[3], count[4], count[5]);
	assert_int_equal(count[5], 0);
	for (i = 2; i <= 4; i++)
		assert_true(count[i] >= N_LOADS / 6);
	for (i = 0; i < N_LOADS; i++)
		moat_enclave_destroy(e[i]);
}

static int teardown(void **state)
{
	int i, rc = 0;

	(void)state;
	for (i = 0; i < N_PLAIN; i++)
		if (plain[i].pid && test_moatd_stop(&plain[i]) < 0)
			rc = -1;
	for (i = 0; i < N_TLS; i++)
		if (tls[i].pid && test_moatd_stop(&tls[i]) < 0)
			rc = -1;
	return rc;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_spread_and_late_target),
	    cmocka_unit_test(test_plain_address_added),
	    cmocka_unit_test(test_tls_by_name),
	    cmocka_unit_test(test_tls_list),
	};
	char cmd[200];
	int rc = enter_namespace();

	if (rc == 0)
		rc = cmocka_run_group_tests(tests, NULL, teardown);
	if (dir[0]) {
		umount("/etc/hosts");
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0 && rc == 0)
			rc = 1;
	}
	return rc;
}
