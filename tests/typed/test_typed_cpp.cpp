// Typed calls from C++ (moat/moat.hpp with the types alltypes.moat.h has for C++), on the backend in
// $MOAT_BACKEND: enclave::call<M>() and its RAII reply, on_exit<M>() with lambdas (nesting included),
// and moat::error's code, origin and enclave code for every way a typed call fails.
#include <moat/moat.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "alltypes.moat.h"
#include "typed_test.h"

namespace tt = typed_test::v1;

namespace
{

int checks, failures;

void check_that(bool ok, const char *what, int line)
{
	checks++;
	if (!ok) {
		std::fprintf(stderr, "FAIL: line %d: %s\n", line, what);
		failures++;
	}
}
#define CHECK(cond) check_that((cond), #cond, __LINE__)

// fn() must throw moat::error with code, origin and enclave_code, and a what() that starts with text.
template <class F>
void expect_error(F fn, int code, moat_origin origin, std::int64_t enclave_code, const std::string &text,
                  int line)
{
	try {
		fn();
		check_that(false, "moat::error thrown", line);
	} catch (const moat::error &err) {
		check_that(err.code() == code, "error code", line);
		check_that(err.origin() == origin, "error origin", line);
		check_that(err.enclave_code() == enclave_code, "error enclave code", line);
		check_that(std::string(err.what()).compare(0, text.size(), text) == 0, "error text", line);
		if (std::string(err.what()).compare(0, text.size(), text) != 0)
			std::fprintf(stderr, "  what(): %s\n", err.what());
	}
}

moat::enclave load()
{
	return moat::enclave(MOAT_TEST_ENCLAVES "/typed_test_enclave.so");
}

// The enclave's raw TT_EXIT_FAIL: it calls Mirror.Fail with code and answers what its stub returned.
std::int64_t exit_fail(moat::enclave &e, std::int32_t code)
{
	moat::message in;

	in.push_u64(static_cast<std::uint64_t>(static_cast<std::int64_t>(code)));
	return static_cast<std::int64_t>(e.call(TT_EXIT_FAIL, in).u64(0));
}

void test_types()
{
	static_assert(!tt::Echo::Same::host && tt::Mirror::Same::host, "host is the service's option");
	static_assert(std::is_same<tt::Echo::Big::request_type, TypedTest__V1__BigRequest>::value,
	              "request type");
	static_assert(std::is_same<decltype(std::declval<moat::enclave &>().call<tt::Echo::Big>()),
	                           moat::reply<TypedTest__V1__BigReply>>::value,
	              "call<M>() returns moat::reply of M's reply type");
	CHECK(tt::Echo::Same::selector() == TYPED_TEST__V1__ECHO__SAME__SELECTOR);
	CHECK(tt::Echo::Runs::selector() == 5000);
	CHECK(std::string(tt::Mirror::Same::name()) == "typed_test.v1.Mirror/Same");
}

void test_round_trip()
{
	moat::enclave e = load();
	TypedTest__V1__All a = tt::Echo::Same::request();
	char text[] = "h\xc3\xa9llo", one[] = "one", two[] = "";
	char *strings[] = {one, two};
	std::uint8_t bytes[300];

	for (std::size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = static_cast<std::uint8_t>(i);
	a.f_int64 = INT64_MIN;
	a.f_uint64 = UINT64_MAX;
	a.f_string = text;
	a.f_bytes.data = bytes;
	a.f_bytes.len = sizeof(bytes);
	a.n_r_string = 2;
	a.r_string = strings;
	a.choice_case = TYPED_TEST__V1__ALL__CHOICE_O_NUMBER;
	a.o_number = 42;
	moat::reply<TypedTest__V1__All> r = e.call<tt::Echo::Same>(a);
	CHECK(r && r->f_int64 == INT64_MIN && r->f_uint64 == UINT64_MAX);
	CHECK(std::string(r->f_string) == text);
	CHECK(r->f_bytes.len == sizeof(bytes) && std::memcmp(r->f_bytes.data, bytes, sizeof(bytes)) == 0);
	CHECK(r->n_r_string == 2 && std::string(r->r_string[0]) == "one" &&
	      std::string(r->r_string[1]).empty());
	CHECK(r->choice_case == TYPED_TEST__V1__ALL__CHOICE_O_NUMBER && r->o_number == 42);

	// The reply is a std::unique_ptr: it moves, releases, and frees itself (valgrind checks that).
	moat::reply<TypedTest__V1__All> moved = std::move(r), empty;
	CHECK(!r && moved && !empty);
	typed_test__v1__echo__same__reply_free(moved.release());
	CHECK(!moved);

	// No request: every field at its default.
	auto d = e.call<tt::Echo::Same>();
	CHECK(d->f_int64 == 0 && std::string(d->f_string).empty() && d->n_r_string == 0);
	CHECK(d->choice_case == TYPED_TEST__V1__ALL__CHOICE__NOT_SET);

	TypedTest__V1__BigRequest q = TYPED_TEST__V1__BIG_REQUEST__INIT;
	q.size = 1u << 20;
	auto big = e.call<tt::Echo::Big>(q);
	CHECK(big->data.len == q.size && big->data.data[q.size - 1] == 'x');
}

// A lambda answers the enclave's exit call, and calls into the enclave again from inside it.
void test_exit_lambda()
{
	moat::enclave e = load();
	TypedTest__V1__All a = tt::Echo::Same::request();
	char text[] = "through the host";
	int runs = 0;

	e.on_exit<tt::Mirror::Same>([&e, &runs](const TypedTest__V1__All &q, TypedTest__V1__All &r) {
		runs++;
		r.f_int64 = q.f_int64 * 2;
		r.f_string = strdup(q.f_string); // from malloc(), as everything hung on a reply
		r.f_uint64 = e.call<tt::Echo::Runs>()->runs;
		return r.f_string ? 0 : MOAT_ENOMEM;
	});
	a.f_int64 = 21;
	a.f_string = text;
	std::uint64_t before = e.call<tt::Echo::Runs>()->runs;
	auto r = e.call<tt::Echo::ViaHost>(a);
	CHECK(runs == 1);
	CHECK(r->f_int64 == 42 && std::string(r->f_string) == text);
	CHECK(r->f_uint64 == before + 1); // Runs, nested inside the exit call, saw ViaHost's run

	// A moved enclave keeps its handlers: they live on the heap, not in the object.
	e.on_exit<tt::Mirror::Same>([](const TypedTest__V1__All &q, TypedTest__V1__All &out) {
		out.f_int64 = q.f_int64 + 1;
		return 0;
	});
	moat::enclave moved(std::move(e));
	CHECK(moved.call<tt::Echo::ViaHost>(a)->f_int64 == 22);
}

void test_exit_failures()
{
	moat::enclave e = load();
	TypedTest__V1__All a = tt::Echo::Same::request();

	CHECK(exit_fail(e, 0) == MOAT_ENOHANDLER);
	e.on_exit<tt::Mirror::Fail>([](const TypedTest__V1__FailRequest &q, TypedTest__V1__Empty &) {
		if (q.code == 1)
			throw moat::error(MOAT_ELIMIT, MOAT_ORIGIN_API, 0, "too much");
		if (q.code == 2)
			throw std::runtime_error("not a moat::error");
		return q.code;
	});
	CHECK(exit_fail(e, 0) == 0);
	CHECK(exit_fail(e, -42) == -42);
	CHECK(exit_fail(e, 1) == MOAT_ELIMIT);   // moat::error: its code
	CHECK(exit_fail(e, 2) == MOAT_EHANDLER); // anything else
	e.on_exit<tt::Mirror::Fail>(nullptr);    // removed
	CHECK(exit_fail(e, 0) == MOAT_ENOHANDLER);

	// A half-built reply of a handler that throws is freed (valgrind checks it); the enclave's
	// function passes the exit call's code on as its own.
	e.on_exit<tt::Mirror::Same>([](const TypedTest__V1__All &q, TypedTest__V1__All &r) -> int {
		r.f_string = strdup(q.f_string);
		throw std::runtime_error("after a strdup");
	});
	expect_error([&] { e.call<tt::Echo::ViaHost>(a); }, MOAT_EHANDLER, MOAT_ORIGIN_ENCLAVE, MOAT_EHANDLER,
	             "typed_test.v1.Echo/ViaHost: ", __LINE__);
}

void test_entry_failures()
{
	moat::enclave e = load();
	TypedTest__V1__FailRequest f = TYPED_TEST__V1__FAIL_REQUEST__INIT;

	f.code = 7;
	expect_error([&] { e.call<tt::Echo::Fail>(f); }, MOAT_EHANDLER, MOAT_ORIGIN_ENCLAVE, 7,
	             "typed_test.v1.Echo/Fail: ", __LINE__);
	// The enclave's refusal of a request it cannot decode (a function answering MOAT_EPROTO is
	// reported the same way): MOAT_EPROTO from the enclave.
	f.code = MOAT_EPROTO;
	expect_error([&] { e.call<tt::Echo::Fail>(f); }, MOAT_EPROTO, MOAT_ORIGIN_ENCLAVE, MOAT_EPROTO,
	             "typed_test.v1.Echo/Fail: the enclave could not decode the request", __LINE__);
	// A reply that does not decode: the stub's own failure, no stale error of the calls before.
	expect_error([&] { e.call<tt::Broken::Garbage>(); }, MOAT_EPROTO, MOAT_ORIGIN_ENCLAVE, 0,
	             "typed_test.v1.Broken/Garbage: the reply is not a valid message", __LINE__);
	// The enclave goes on.
	CHECK(e.call<tt::Echo::Same>()->f_int64 == 0);
	// A moved-from enclave is refused before any call.
	moat::enclave moved(std::move(e));
	expect_error([&] { e.call<tt::Echo::Same>(); }, MOAT_EINVAL, MOAT_ORIGIN_API, 0,
	             "moat::enclave: used after", __LINE__);
}

} // namespace

int main()
{
	try {
		test_types();
		test_round_trip();
		test_exit_lambda();
		test_exit_failures();
		test_entry_failures();
	} catch (const moat::error &err) {
		std::fprintf(stderr, "FAIL: moat::error %d (%s): %s\n", err.code(),
		             moat_origin_name(err.origin()), err.what());
		return 1;
	}
	std::printf("typed calls from C++: %d checks, %d failed\n", checks, failures);
	return failures != 0;
}
