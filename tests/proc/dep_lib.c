/* A library outside the system's library path, for an enclave that needs it (dep_enclave.c). */
int moat_test_dep_answer(void);
__attribute__((visibility("default"))) int moat_test_dep_answer(void)
{
	return 42;
}
