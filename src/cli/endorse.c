/*
 * moat endorse: a CA's Ed25519 signature over a target's identity key, which
 * that target's moatd sends with every Load (--identity-endorsement) so hosts
 * that pin the CA accept it. The signed message is MOAT_ENDORSE_DOMAIN with
 * its NUL, then the 32-byte key; the endorsement file holds the signature in
 * hex, one line.
 */
#include <moat/moat.h>

#include "cli/cli.h"
#include "codec/protocol.h"
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

static const char usage_endorse[] =
    "usage: moat endorse --ca-key CA.pem [--output FILE] TARGET_KEY\n"
    "       moat endorse --ca-key CA.pem --print-ca-key\n"
    "\n"
    "Endorse a target's Ed25519 identity key with a CA key, so that hosts pinning\n"
    "the CA (moat run --target-ca-key, moat_load_options.target_ca_keys) accept\n"
    "that target. TARGET_KEY is the key in hex as moatd --print-key prints it (an\n"
    "\"ed25519:\" prefix may stay), or a file holding that line. The endorsement,\n"
    "a 64-byte Ed25519 signature as 128 hex digits on one line, goes to FILE or\n"
    "stdout: start that target's moatd with --identity-endorsement FILE.\n"
    "\n"
    "  -k, --ca-key F      the CA's Ed25519 private key (PEM), made with\n"
    "                      openssl genpkey -algorithm ed25519 -out F\n"
    "  -o, --output F      write the endorsement to F instead of stdout\n"
    "      --print-ca-key  print the CA's public key in hex (what hosts pin) and exit\n"
    "  -h, --help          show this help\n";

/* The CA's private key from a PEM file; NULL after saying why. */
static EVP_PKEY *read_ca_key(const char *path)
{
	EVP_PKEY *key;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "moat: endorse: cannot read the CA key %s: %s\n", path, strerror(errno));
		return NULL;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key) {
		fprintf(stderr,
		        "moat: endorse: %s is not a PEM private key (make one with openssl genpkey "
		        "-algorithm ed25519 -out %s)\n",
		        path, path);
		return NULL;
	}
	if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
		fprintf(
		    stderr,
		    "moat: endorse: %s is not an Ed25519 key but %s (openssl genpkey -algorithm ed25519)\n",
		    path, EVP_PKEY_get0_type_name(key));
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

/* Parse one key in hex, with an optional "ed25519:" prefix and trailing white space. */
static int parse_key(uint8_t key[MOAT_TARGET_KEY_LEN], const char *text)
{
	char buf[2 * MOAT_TARGET_KEY_LEN + 1];
	size_t n;

	if (strncmp(text, "ed25519:", 8) == 0)
		text += 8;
	n = strlen(text);
	while (n && isspace((unsigned char)text[n - 1]))
		n--;
	if (n != 2 * MOAT_TARGET_KEY_LEN)
		return -1;
	memcpy(buf, text, n);
	buf[n] = '\0';
	return moat__unhex(key, MOAT_TARGET_KEY_LEN, buf);
}

/* TARGET_KEY: hex on the command line, or a file (moatd --print-key's output) holding it. */
static int target_key(uint8_t key[MOAT_TARGET_KEY_LEN], const char *arg)
{
	char line[256];
	FILE *f;
	int rc = -1;

	if (parse_key(key, arg) == 0)
		return 0;
	if ((f = fopen(arg, "r")) != NULL) {
		if (fgets(line, sizeof(line), f))
			rc = parse_key(key, line);
		fclose(f);
		if (rc < 0)
			fprintf(stderr, "moat: endorse: %s does not hold a target key (%d hex digits)\n", arg,
			        2 * MOAT_TARGET_KEY_LEN);
		return rc;
	}
	fprintf(stderr,
	        "moat: endorse: '%s' is neither a target key (%d hex digits, as moatd --print-key "
	        "prints it) nor a file holding one\n",
	        arg, 2 * MOAT_TARGET_KEY_LEN);
	return -1;
}

/* Sign the domain and key with ca into hex (129 bytes). Returns 0 or -1 (said). */
static int endorse(char hex[129], EVP_PKEY *ca, const uint8_t key[MOAT_TARGET_KEY_LEN])
{
	uint8_t msg[MOAT_ENDORSE_DOMAIN_LEN + MOAT_TARGET_KEY_LEN], sig[64];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	size_t n = sizeof(sig);
	int ok;

	memcpy(msg, MOAT_ENDORSE_DOMAIN, MOAT_ENDORSE_DOMAIN_LEN);
	memcpy(msg + MOAT_ENDORSE_DOMAIN_LEN, key, MOAT_TARGET_KEY_LEN);
	ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, ca) > 0 &&
	     EVP_DigestSign(c, sig, &n, msg, sizeof(msg)) > 0 && n == sizeof(sig);
	EVP_MD_CTX_free(c);
	if (!ok) {
		fprintf(stderr, "moat: endorse: signing with the CA key failed\n");
		return -1;
	}
	moat__hex(hex, sig, sizeof(sig));
	return 0;
}

/* Write line (and a newline) to path, or stdout when path is NULL. Returns 0 or -1 (said). */
static int write_line(const char *path, const char *line)
{
	FILE *f = path ? fopen(path, "w") : stdout;
	int ok;

	if (!f) {
		fprintf(stderr, "moat: endorse: cannot write %s: %s\n", path, strerror(errno));
		return -1;
	}
	ok = fprintf(f, "%s\n", line) > 0;
	ok = (path ? fclose(f) : fflush(f)) == 0 && ok;
	if (!ok)
		fprintf(stderr, "moat: endorse: cannot write %s: %s\n", path ? path : "stdout",
		        strerror(errno));
	return ok ? 0 : -1;
}

int moat__cli_endorse(int argc, char **argv)
{
	enum { OPT_PRINT = 256 };
	static const struct option longopts[] = {{"ca-key", required_argument, NULL, 'k'},
	                                         {"output", required_argument, NULL, 'o'},
	                                         {"print-ca-key", no_argument, NULL, OPT_PRINT},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	const char *ca_path = NULL, *out_path = NULL;
	uint8_t key[MOAT_TARGET_KEY_LEN];
	char hex[129];
	EVP_PKEY *ca = NULL;
	int c, print_ca = 0, status = 1;
	size_t n = MOAT_TARGET_KEY_LEN;

	while ((c = getopt_long(argc, argv, "+k:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k': ca_path = optarg; break;
		case 'o': out_path = optarg; break;
		case OPT_PRINT: print_ca = 1; break;
		case 'h': fputs(usage_endorse, stdout); return 0;
		default: fputs(usage_endorse, stderr); return 2;
		}
	}
	if (!ca_path || optind + (print_ca ? 0 : 1) != argc) {
		fprintf(stderr, "moat: endorse: %s\n%s",
		        !ca_path ? "--ca-key is required" : "give one TARGET_KEY (or --print-ca-key)",
		        usage_endorse);
		return 2;
	}
	if (!(ca = read_ca_key(ca_path)))
		return 1;
	if (print_ca) {
		if (EVP_PKEY_get_raw_public_key(ca, key, &n) > 0 && n == sizeof(key)) {
			moat__hex(hex, key, sizeof(key));
			status = write_line(out_path, hex) < 0;
		}
	} else if (target_key(key, argv[optind]) == 0 && endorse(hex, ca, key) == 0) {
		status = write_line(out_path, hex) < 0;
	}
	EVP_PKEY_free(ca);
	return status;
}
