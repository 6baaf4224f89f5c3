/*
 * The server's TLS credentials, replaceable while it serves (moatd reloads
 * its certificate and key on SIGHUP): gRPC asks a fetcher for the
 * certificate configuration at every handshake, and it hands out a new one
 * once after each reload. Connections already open keep what they were made
 * with. A process has one TLS server, so the files live here.
 */
#include "rpc/rpc_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <moat/errors.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static struct {
	pthread_mutex_t lock;
	char *cert, *key, *client_ca; /* PEM: what the next handshake gets, when fresh */
	int fresh;
} tls = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL, 0};

static void free_key(char *key)
{
	if (key) {
		memset(key, 0, strlen(key));
		free(key);
	}
}

/* Does the certificate chain's first certificate go with the private key? */
static int key_matches(const char *cert, const char *key)
{
	BIO *cb = BIO_new_mem_buf(cert, -1), *kb = BIO_new_mem_buf(key, -1);
	X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
	int ok = x && k && X509_check_private_key(x, k) == 1;

	X509_free(x);
	EVP_PKEY_free(k);
	BIO_free(cb);
	BIO_free(kb);
	return ok;
}

int moat__rpc_server_tls_load(const char *cert_file, const char *key_file, const char *client_ca_file,
                              char *err, size_t err_len)
{
	char *cert = NULL, *key = NULL, *client_ca = NULL;
	int rc = -1;

	if (moat__rpc_read_pem(&cert, cert_file, "TLS certificate") < 0 ||
	    moat__rpc_read_pem(&key, key_file, "TLS key") < 0 ||
	    (client_ca_file && moat__rpc_read_pem(&client_ca, client_ca_file, "TLS client CA") < 0)) {
		snprintf(err, err_len, "%s", moat_error_last()->message);
		goto out;
	}
	if (!key_matches(cert, key)) {
		snprintf(err, err_len, "the TLS key %s does not go with the certificate %s (or is not PEM)",
		         key_file, cert_file);
		goto out;
	}
	pthread_mutex_lock(&tls.lock);
	free(tls.cert);
	free_key(tls.key);
	free(tls.client_ca);
	tls.cert = cert;
	tls.key = key;
	tls.client_ca = client_ca;
	tls.fresh = 1;
	pthread_mutex_unlock(&tls.lock);
	cert = key = client_ca = NULL;
	rc = 0;
out:
	free(cert);
	free_key(key);
	free(client_ca);
	return rc;
}

static grpc_ssl_certificate_config_reload_status fetch(void *user_data,
                                                       grpc_ssl_server_certificate_config **config)
{
	grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
	grpc_ssl_pem_key_cert_pair pair;

	(void)user_data;
	pthread_mutex_lock(&tls.lock);
	if (tls.fresh) {
		/*
		 * gRPC copies the strings. It insists on roots on this path even
		 * when it requests no client certificate (then it never uses
		 * them): the server's own chain stands in.
		 */
		pair.private_key = tls.key;
		pair.cert_chain = tls.cert;
		*config = grpc_ssl_server_certificate_config_create(tls.client_ca ? tls.client_ca : tls.cert,
		                                                    &pair, 1);
		tls.fresh = 0;
		st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
	}
	pthread_mutex_unlock(&tls.lock);
	return st;
}

grpc_server_credentials *moat__rpc_server_tls_creds(const moat_rpc_server_opts *o, char *err, size_t err_len)
{
	grpc_ssl_server_credentials_options *opts;
	grpc_server_credentials *creds = NULL;

	if (moat__rpc_server_tls_load(o->tls_cert_file, o->tls_key_file, o->tls_client_ca, err, err_len) < 0)
		return NULL;
	opts = grpc_ssl_server_credentials_create_options_using_config_fetcher(
	    o->tls_client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
	                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
	    fetch, NULL);
	if (opts)
		creds = grpc_ssl_server_credentials_create_with_options(opts);
	if (!creds)
		snprintf(err, err_len, "cannot create TLS server credentials from %s and %s",
		         o->tls_cert_file, o->tls_key_file);
	return creds;
}

void moat__rpc_server_tls_free(void)
{
	pthread_mutex_lock(&tls.lock);
	free(tls.cert);
	free_key(tls.key);
	free(tls.client_ca);
	tls.cert = tls.key = tls.client_ca = NULL;
	tls.fresh = 0;
	pthread_mutex_unlock(&tls.lock);
}
