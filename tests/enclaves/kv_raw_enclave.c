/*
 * kv_raw_enclave: the kv example in raw messages (a test fixture; the example
 * itself is typed now). A key-value store that lives only inside the enclave.
 * RUN takes commands as items, e.g. "put" k v "get" k "del" k, and returns one
 * item per get.
 */
#include <moat/enclave.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv_raw.h"

typedef struct kv_entry {
	uint8_t *key, *value;
	size_t key_len, value_len;
	struct kv_entry *next;
} kv_entry;

static kv_entry *table;
static size_t count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static kv_entry **find(const void *key, size_t len)
{
	kv_entry **p;

	for (p = &table; *p; p = &(*p)->next)
		if ((*p)->key_len == len && memcmp((*p)->key, key, len) == 0)
			return p;
	return NULL;
}

static int put(const void *k, size_t kl, const void *v, size_t vl)
{
	kv_entry **p, *e;
	uint8_t *value = malloc(vl ? vl : 1);
	int rc = 0;

	if (!value)
		return MOAT_ENOMEM;
	memcpy(value, v, vl);
	pthread_mutex_lock(&lock);
	if ((p = find(k, kl)) != NULL) {
		free((*p)->value);
		(*p)->value = value;
		(*p)->value_len = vl;
	} else if ((e = calloc(1, sizeof(*e))) && (e->key = malloc(kl ? kl : 1))) {
		memcpy(e->key, k, kl);
		e->key_len = kl;
		e->value = value;
		e->value_len = vl;
		e->next = table;
		table = e;
		count++;
	} else {
		free(e);
		free(value);
		rc = MOAT_ENOMEM;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int get(const void *k, size_t kl, moat_msg *out)
{
	kv_entry **p;
	int rc;

	pthread_mutex_lock(&lock);
	p = find(k, kl);
	rc = p ? moat_msg_push(out, (*p)->value, (*p)->value_len) : KV_NOT_FOUND;
	pthread_mutex_unlock(&lock);
	return rc;
}

static int del(const void *k, size_t kl)
{
	kv_entry **p, *e;

	pthread_mutex_lock(&lock);
	p = find(k, kl);
	if (!p) {
		pthread_mutex_unlock(&lock);
		return KV_NOT_FOUND;
	}
	e = *p;
	*p = e->next;
	count--;
	pthread_mutex_unlock(&lock);
	free(e->key);
	free(e->value);
	free(e);
	return 0;
}

static int on_put(void *payload, const moat_msg *in, moat_msg *out)
{
	const void *k, *v;
	size_t kl, vl;

	if (moat_msg_item(in, 0, &k, &kl) < 0 || moat_msg_item(in, 1, &v, &vl) < 0)
		return MOAT_EINVAL;
	return put(k, kl, v, vl);
}

static int on_get(void *payload, const moat_msg *in, moat_msg *out)
{
	const void *k;
	size_t kl;

	if (moat_msg_item(in, 0, &k, &kl) < 0)
		return MOAT_EINVAL;
	return get(k, kl, out);
}

static int on_del(void *payload, const moat_msg *in, moat_msg *out)
{
	const void *k;
	size_t kl;

	if (moat_msg_item(in, 0, &k, &kl) < 0)
		return MOAT_EINVAL;
	return del(k, kl);
}

static int on_count(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t n;

	pthread_mutex_lock(&lock);
	n = count;
	pthread_mutex_unlock(&lock);
	return moat_msg_push_u64(out, n);
}

static int is(const void *item, size_t len, const char *word)
{
	return len == strlen(word) && memcmp(item, word, len) == 0;
}

static int on_run(void *payload, const moat_msg *in, moat_msg *out)
{
	size_t i = 0, n = moat_msg_count(in);
	int rc = 0;

	while (i < n && rc == 0) {
		const void *cmd, *k, *v;
		size_t cl, kl, vl;

		moat_msg_item(in, i, &cmd, &cl);
		if (i + 1 >= n || moat_msg_item(in, i + 1, &k, &kl) < 0)
			return MOAT_EINVAL;
		if (is(cmd, cl, "put") && i + 2 < n) {
			moat_msg_item(in, i + 2, &v, &vl);
			rc = put(k, kl, v, vl);
			i += 3;
		} else if (is(cmd, cl, "get")) {
			rc = get(k, kl, out);
			if (rc == KV_NOT_FOUND)
				rc = moat_msg_push_str(out, "(not found)");
			i += 2;
		} else if (is(cmd, cl, "del")) {
			rc = del(k, kl);
			i += 2;
		} else {
			return MOAT_EINVAL;
		}
	}
	return rc;
}

static void fini(void)
{
	while (table)
		del(table->key, table->key_len);
}

static int init(const void *config, size_t len)
{
	int rc = 0;

	rc |= moat_entry_register(MOAT_SELECTOR_RUN, on_run, NULL);
	rc |= moat_entry_register(KV_PUT, on_put, NULL);
	rc |= moat_entry_register(KV_GET, on_get, NULL);
	rc |= moat_entry_register(KV_DEL, on_del, NULL);
	rc |= moat_entry_register(KV_COUNT, on_count, NULL);
	moat_finalizer_set(fini);
	return rc;
}

MOAT_ENCLAVE(init)
