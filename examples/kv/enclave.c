/*
 * kv: a key-value store that lives only inside the enclave. The host sees the
 * data only through the entry calls generated from kv.proto (Put, Get, Del).
 */
#include <moat/enclave.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv.moat.h"

typedef struct kv_entry {
	char *key;
	uint8_t *value;
	size_t value_len;
	struct kv_entry *next;
} kv_entry;

static kv_entry *table;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static kv_entry **find(const char *key)
{
	kv_entry **p;

	for (p = &table; *p; p = &(*p)->next)
		if (strcmp((*p)->key, key) == 0)
			return p;
	return NULL;
}

/* A copy from malloc(), as a reply's bytes must be (the runtime frees them after packing). */
static uint8_t *copy(const uint8_t *data, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);

	if (c)
		memcpy(c, data, len);
	return c;
}

static int put(void *payload, const Kv__V1__PutRequest *request, Kv__V1__PutReply *reply)
{
	size_t klen = strlen(request->key) + 1;
	uint8_t *value = copy(request->value.data, request->value.len);
	kv_entry **p, *e = NULL;
	int rc = 0;

	if (!value)
		return MOAT_ENOMEM;
	pthread_mutex_lock(&lock);
	if ((p = find(request->key)) != NULL) {
		free((*p)->value);
		(*p)->value = value;
		(*p)->value_len = request->value.len;
	} else if ((e = calloc(1, sizeof(*e))) != NULL && (e->key = malloc(klen)) != NULL) {
		memcpy(e->key, request->key, klen);
		e->value = value;
		e->value_len = request->value.len;
		e->next = table;
		table = e;
	} else {
		free(e);
		free(value);
		rc = MOAT_ENOMEM;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int get(void *payload, const Kv__V1__GetRequest *request, Kv__V1__GetReply *reply)
{
	kv_entry **p;
	int rc = 0;

	pthread_mutex_lock(&lock);
	if (!(p = find(request->key)))
		rc = KV__V1__ERROR__NOT_FOUND;
	else if (!(reply->value.data = copy((*p)->value, (*p)->value_len)))
		rc = MOAT_ENOMEM;
	else
		reply->value.len = (*p)->value_len;
	pthread_mutex_unlock(&lock);
	return rc;
}

static void drop(kv_entry *e)
{
	free(e->key);
	free(e->value);
	free(e);
}

static int del(void *payload, const Kv__V1__DelRequest *request, Kv__V1__DelReply *reply)
{
	kv_entry **p, *e = NULL;

	pthread_mutex_lock(&lock);
	if ((p = find(request->key)) != NULL) {
		e = *p;
		*p = e->next;
	}
	pthread_mutex_unlock(&lock);
	if (!e)
		return KV__V1__ERROR__NOT_FOUND;
	drop(e);
	return 0;
}

static void fini(void)
{
	while (table) {
		kv_entry *e = table;

		table = e->next;
		drop(e);
	}
}

static const Kv__V1__Store_MoatServer store = {NULL, put, get, del};

static int init(const void *config, size_t len)
{
	moat_finalizer_set(fini);
	return kv__v1__store__moat_register(&store);
}

MOAT_ENCLAVE(init)
