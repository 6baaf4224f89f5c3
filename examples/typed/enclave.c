/*
 * typed: an address book that lives only in the enclave, served through the
 * calls protoc-gen-moat generates from iface.proto. Each Add reports to the
 * host's Audit service (an exit call), which asks the enclave for its Stats
 * (a nested entry call) before it answers.
 */
#include <moat/enclave.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "iface.moat.h"

/* People are kept packed: a stored Person is independent of the request it came in. */
typedef struct entry {
	char *name;
	uint8_t *packed;
	size_t len;
	struct entry *next;
} entry;

static entry *book;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static entry *find_locked(const char *name)
{
	entry *e;

	for (e = book; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static int store(const Typed__V1__Person *p)
{
	size_t len = typed__v1__person__get_packed_size(p), nlen = strlen(p->name) + 1;
	uint8_t *packed = malloc(len ? len : 1);
	entry *e;
	int rc = 0;

	if (!packed)
		return MOAT_ENOMEM;
	typed__v1__person__pack(p, packed);
	pthread_mutex_lock(&lock);
	if ((e = find_locked(p->name)) != NULL) {
		free(e->packed);
	} else if ((e = calloc(1, sizeof(*e))) != NULL && (e->name = malloc(nlen)) != NULL) {
		memcpy(e->name, p->name, nlen);
		e->next = book;
		book = e;
	} else {
		free(e);
		e = NULL;
		rc = MOAT_ENOMEM;
	}
	if (e) {
		e->packed = packed;
		e->len = len;
		packed = NULL;
	}
	pthread_mutex_unlock(&lock);
	free(packed);
	return rc;
}

static int add(void *payload, const Typed__V1__AddRequest *request, Typed__V1__AddReply *reply)
{
	Typed__V1__AuditRequest audit = TYPED__V1__AUDIT_REQUEST__INIT;
	Typed__V1__AuditReply *answer = NULL;
	char **names = calloc(request->n_people + 1, sizeof(*names));
	size_t i;
	int rc = names ? 0 : MOAT_ENOMEM;

	for (i = 0; i < request->n_people && rc == 0; i++) {
		rc = store(request->people[i]);
		names[i] = request->people[i]->name;
	}
	if (rc == 0) {
		/* An exit call, made with no lock held: the host's answer calls Stats in here again. */
		audit.event = "add";
		audit.n_names = request->n_people;
		audit.names = names;
		rc = typed__v1__audit__record__call(&audit, &answer);
	}
	if (rc == 0)
		reply->count = answer->people;
	typed__v1__audit__record__reply_free(answer);
	free(names);
	return rc;
}

static int find(void *payload, const Typed__V1__FindRequest *request, Typed__V1__FindReply *reply)
{
	entry *e;

	pthread_mutex_lock(&lock);
	e = find_locked(request->name);
	/* Unpacking allocates with malloc(), as a reply must: the runtime frees it after packing. */
	if (e)
		reply->person = typed__v1__person__unpack(NULL, e->len, e->packed);
	pthread_mutex_unlock(&lock);
	return e && !reply->person ? MOAT_ENOMEM : 0;
}

static int stats(void *payload, const Typed__V1__StatsRequest *request, Typed__V1__StatsReply *reply)
{
	entry *e;
	int rc = 0;

	pthread_mutex_lock(&lock);
	for (e = book; e && rc == 0; e = e->next) {
		Typed__V1__Person *p = typed__v1__person__unpack(NULL, e->len, e->packed);

		if (!p) {
			rc = MOAT_ENOMEM;
			break;
		}
		reply->people++;
		reply->phones += (uint32_t)p->n_phones;
		reply->photo_bytes += p->photo.len;
		typed__v1__person__free_unpacked(p, NULL);
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static void fini(void)
{
	while (book) {
		entry *e = book;

		book = e->next;
		free(e->name);
		free(e->packed);
		free(e);
	}
}

static const Typed__V1__Book_MoatServer server = {NULL, add, find, stats};

static int init(const void *config, size_t len)
{
	moat_finalizer_set(fini);
	return typed__v1__book__moat_register(&server);
}

MOAT_ENCLAVE(init)
