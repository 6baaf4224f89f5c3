/*
 * Host for the typed example: typed_host [ENCLAVE] adds two people to the
 * enclave's address book, finds them again and reads its statistics, all
 * through the calls generated from iface.proto, and answers the enclave's
 * Audit calls by asking the enclave for its Stats (nesting).
 */
#include <moat/moat.h>

#include <stdio.h>

#include "iface.moat.h"

static int record(void *payload, const Typed__V1__AuditRequest *request, Typed__V1__AuditReply *reply)
{
	Typed__V1__StatsReply *stats = NULL;
	size_t i;
	int rc;

	printf("audit: %s", request->event);
	for (i = 0; i < request->n_names; i++)
		printf(" %s", request->names[i]);
	printf("\n");
	/* Nesting: a typed entry call from inside the enclave's exit call, on the same thread. */
	if ((rc = typed__v1__book__stats__call(payload, NULL, &stats)) == 0)
		reply->people = stats->people;
	typed__v1__book__stats__reply_free(stats);
	return rc;
}

static void show(const Typed__V1__Person *p)
{
	size_t i;

	printf("%s (id %u):", p->name, (unsigned)p->id);
	for (i = 0; i < p->n_phones; i++)
		printf(" %s[%s]", p->phones[i]->number,
		       p->phones[i]->kind == TYPED__V1__PERSON__PHONE__KIND__WORK   ? "work"
		       : p->phones[i]->kind == TYPED__V1__PERSON__PHONE__KIND__HOME ? "home"
		                                                                    : "mobile");
	printf(", photo %zu bytes", p->photo.len);
	if (p->contact_case == TYPED__V1__PERSON__CONTACT_EMAIL)
		printf(", email %s\n", p->email);
	else if (p->contact_case == TYPED__V1__PERSON__CONTACT_PAGER)
		printf(", pager %llu\n", (unsigned long long)p->pager);
	else
		printf(", no contact\n");
}

static int find(moat_enclave *e, const char *name)
{
	Typed__V1__FindRequest q = TYPED__V1__FIND_REQUEST__INIT;
	Typed__V1__FindReply *r = NULL;
	int rc;

	q.name = (char *)name;
	if ((rc = typed__v1__book__find__call(e, &q, &r)) < 0)
		return rc;
	if (r->person)
		show(r->person);
	else
		printf("%s: not found\n", name);
	typed__v1__book__find__reply_free(r);
	return 0;
}

static int add_two(moat_enclave *e)
{
	static uint8_t photo[3000];
	Typed__V1__Person__Phone m = TYPED__V1__PERSON__PHONE__INIT, w = TYPED__V1__PERSON__PHONE__INIT;
	Typed__V1__Person__Phone *phones[] = {&m, &w};
	Typed__V1__Person alice = TYPED__V1__PERSON__INIT, bob = TYPED__V1__PERSON__INIT;
	Typed__V1__Person *people[] = {&alice, &bob};
	Typed__V1__AddRequest add = TYPED__V1__ADD_REQUEST__INIT;
	Typed__V1__AddReply *added = NULL;
	int rc;

	m.number = "+44 7700 900123";
	w.number = "+44 20 7946 0000";
	w.kind = TYPED__V1__PERSON__PHONE__KIND__WORK;
	alice.name = "alice";
	alice.id = 1;
	alice.n_phones = 2;
	alice.phones = phones;
	alice.photo.data = photo;
	alice.photo.len = sizeof(photo);
	alice.contact_case = TYPED__V1__PERSON__CONTACT_EMAIL;
	alice.email = "alice@example.org";
	bob.name = "bob";
	bob.id = 2;
	bob.contact_case = TYPED__V1__PERSON__CONTACT_PAGER;
	bob.pager = 4155550100;
	add.n_people = 2;
	add.people = people;
	if ((rc = typed__v1__book__add__call(e, &add, &added)) == 0)
		printf("added: the book has %u people\n", (unsigned)added->count);
	typed__v1__book__add__reply_free(added);
	return rc;
}

int main(int argc, char **argv)
{
	Typed__V1__Audit_MoatServer audit = {NULL, record};
	Typed__V1__StatsReply *stats = NULL;
	moat_enclave *e = NULL;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 1 ? argv[1] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	audit.payload = e;
	if ((rc = typed__v1__audit__moat_register(e, &audit)) < 0 || (rc = add_two(e)) < 0 ||
	    (rc = find(e, "alice")) < 0 || (rc = find(e, "bob")) < 0 || (rc = find(e, "carol")) < 0 ||
	    (rc = typed__v1__book__stats__call(e, NULL, &stats)) < 0)
		goto fail;
	printf("stats: %u people, %u phones, %llu photo bytes\n", (unsigned)stats->people,
	       (unsigned)stats->phones, (unsigned long long)stats->photo_bytes);
fail:
	if (rc < 0)
		fprintf(stderr, "typed_host: %s (%s)\n", moat_strerror(rc), moat_error_last()->message);
	typed__v1__book__stats__reply_free(stats);
	moat_enclave_destroy(e);
	return rc < 0;
}
