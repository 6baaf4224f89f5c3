/* A plain shared object without MOAT_ENCLAVE: a valid ELF with no entry symbol. */
__attribute__((visibility("default"))) int not_an_enclave(int x);

int not_an_enclave(int x)
{
	return x + 1;
}
