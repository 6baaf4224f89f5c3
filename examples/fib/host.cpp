// The fib example's host in C++ (moat/moat.hpp): fib_cpp_host [N] [ENCLAVE.so] prints what fib_host does.
#include <moat/moat.hpp>

#include <cstdlib>
#include <iostream>

#include "fib.h"

int main(int argc, char **argv)
{
	std::uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 50;

	try {
		moat::enclave e(argc > 2 ? argv[2] : EXAMPLE_ENCLAVE);
		moat::message in;

		// Nesting: the exit handler makes an entry call on the same enclave and thread.
		e.on_exit(FIB_EXIT, [&e](const moat_msg *sub_in, moat_msg *sub_out) {
			e.call(FIB_ENTRY, sub_in, sub_out);
			return 0;
		});
		in.push_u64(n);
		moat::message out = e.call(FIB_ENTRY, in);
		std::cout << "fib(" << n << ") = " << out.u64(0) << "\n";
	} catch (const moat::error &err) {
		std::cerr << "fib_cpp_host: " << err.what() << "\n";
		return 1;
	}
	return 0;
}
