// The fib example's host in C++ (moat/moat.hpp and the types fib.moat.h has for C++): fib_cpp_host [N]
// [ENCLAVE.so] prints what fib_host does.
#include <moat/moat.hpp>

#include <cstdlib>
#include <iostream>

#include "fib.moat.h"

int main(int argc, char **argv)
{
	Fib__V1__FibRequest request = fib::v1::Enclave::Fib::request(); // at its defaults

	request.n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 50;
	try {
		moat::enclave e(argc > 2 ? argv[2] : EXAMPLE_ENCLAVE);

		// The enclave's exit call Host.Fib, answered by calling Enclave.Fib again on the same
		// thread (nesting). A failure there throws moat::error, which fails the exit call.
		e.on_exit<fib::v1::Host::Fib>([&e](const Fib__V1__FibRequest &q, Fib__V1__FibReply &r) {
			moat::reply<Fib__V1__FibReply> sub = e.call<fib::v1::Enclave::Fib>(q);

			r.value = sub->value;
			r.previous = sub->previous;
			return 0;
		});
		auto reply = e.call<fib::v1::Enclave::Fib>(request); // freed at the end of the block
		std::cout << "fib(" << request.n << ") = " << reply->value << "\n";
	} catch (const moat::error &err) {
		std::cerr << "fib_cpp_host: " << err.what() << "\n";
		return 1;
	}
	return 0;
}
