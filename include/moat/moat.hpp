/*
 * Moat for C++ (header-only, C++11): RAII owners of messages and enclave
 * handles over the C API of moat.h, which stays the real interface.
 *
 *     moat::enclave e("./hello_enclave.so");           // or moat::enclave(path, "proc")
 *     moat::message in, out;
 *     in.push("world");
 *     e.call(MOAT_SELECTOR_RUN, in, out);
 *     std::cout << out.str(0) << "\n";
 *
 * Errors are exceptions: every function that can fail throws moat::error
 * (a std::runtime_error carrying the Moat code, the origin and the enclave
 * handler's code from moat_error_last()). Exceptions because constructors
 * can fail (loading an enclave, allocating a message) and an owner that may
 * be empty would put the check back in every caller; a program that wants
 * no exceptions uses the C API, whose handles get() hands out.
 *
 * Exit handlers are std::function objects kept by the enclave object. They
 * run inside a C callback, so an exception must not cross it: one thrown by
 * a handler fails the enclave's exit call (moat::error gives its own code,
 * anything else MOAT_EHANDLER) and is not rethrown on the host.
 *
 * Typed calls (docs/TYPED-CALLS.md): with the header protoc-gen-moat makes
 * from a .proto, which has a type per method (typed.v1.Book/Find is
 * typed::v1::Book::Find),
 *
 *     auto reply = e.call<typed::v1::Book::Find>(request);    // moat::reply<Typed__V1__FindReply>
 *     e.on_exit<typed::v1::Audit::Record>([&e](const Typed__V1__AuditRequest &q, Typed__V1__AuditReply &r) {
 *             r.people = e.call<typed::v1::Book::Stats>()->people;
 *             return 0;
 *     });
 *
 * Nothing here is for enclave code: enclaves include moat/enclave.h.
 */
#ifndef MOAT_MOAT_HPP
#define MOAT_MOAT_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "moat.h"

namespace moat
{

/** A failed Moat call: what() is moat_error_last()'s message (or moat_strerror(code)). */
class error : public std::runtime_error
{
      public:
	error(int code, moat_origin origin, std::int64_t enclave_code, const std::string &what)
	    : std::runtime_error(what), code_(code), origin_(origin), enclave_code_(enclave_code)
	{
	}

	/** The error code rc with the calling thread's last error, when it is about rc. */
	static error last(int rc)
	{
		const moat_error *e = moat_error_last();

		if (e->code == rc && e->message[0] != '\0')
			return error(rc, e->origin, e->enclave_code, e->message);
		return error(rc, MOAT_ORIGIN_NONE, 0, moat_strerror(rc));
	}

	/** One of moat_error_code (negative). */
	int code() const noexcept
	{
		return code_;
	}
	moat_origin origin() const noexcept
	{
		return origin_;
	}
	/** For MOAT_EHANDLER: the enclave handler's return value. */
	std::int64_t enclave_code() const noexcept
	{
		return enclave_code_;
	}

      private:
	int code_;
	moat_origin origin_;
	std::int64_t enclave_code_;
};

/**
 * The error of a typed call to method (its full name, "pkg.Service/Method")
 * whose stub returned rc: moat_error_last() when it is about rc; MOAT_EPROTO
 * from the enclave when it could not decode the request (origin enclave,
 * enclave_code MOAT_EPROTO); else the stub's own failure (a reply that did
 * not decode: origin enclave; out of memory: origin api).
 */
inline error typed_error(int rc, const char *method)
{
	const moat_error *e = moat_error_last();
	std::string m(method);

	if (rc == MOAT_EPROTO && e->code == MOAT_EHANDLER && e->enclave_code == MOAT_EPROTO)
		return error(rc, MOAT_ORIGIN_ENCLAVE, e->enclave_code,
		             m + ": the enclave could not decode the request");
	if (e->code == rc && e->message[0] != '\0')
		return error(rc, e->origin, e->enclave_code, m + ": " + e->message);
	if (rc == MOAT_EPROTO)
		return error(rc, MOAT_ORIGIN_ENCLAVE, 0, m + ": the reply is not a valid message");
	return error(rc, MOAT_ORIGIN_API, 0, m + ": " + moat_strerror(rc));
}

/** Throw moat::error for a negative result; pass anything else through. */
inline int check(int rc)
{
	if (rc < 0)
		throw error::last(rc);
	return rc;
}

/** A view of one message item: borrowed from its message. */
struct item {
	const void *data;
	std::size_t size;
};

/** An owned moat_msg: an ordered list of byte items. Movable, not copyable. */
class message
{
      public:
	message() : m_(nullptr)
	{
		if (moat_msg_new(&m_) < 0)
			throw std::bad_alloc();
	}
	~message()
	{
		moat_msg_free(m_);
	}
	message(message &&other) noexcept : m_(other.m_)
	{
		other.m_ = nullptr;
	}
	message &operator=(message &&other) noexcept
	{
		std::swap(m_, other.m_);
		return *this;
	}
	message(const message &) = delete;
	message &operator=(const message &) = delete;

	/** Append a copy of size bytes at data. */
	message &push(const void *data, std::size_t size)
	{
		check(moat_msg_push(get(), data, size));
		return *this;
	}
	message &push(const std::string &s)
	{
		return push(s.data(), s.size());
	}
	/** A string item, without its terminating NUL (as moat_msg_push_str). */
	message &push(const char *s)
	{
		return push(s, std::strlen(s));
	}
	/** An 8-byte little-endian unsigned item (as moat_msg_push_u64). */
	message &push_u64(std::uint64_t v)
	{
		check(moat_msg_push_u64(get(), v));
		return *this;
	}

	std::size_t size() const
	{
		return m_ ? moat_msg_count(m_) : 0;
	}
	/** Item i, borrowed until the message changes. Throws moat::error (MOAT_EINVAL) past the end. */
	moat::item item(std::size_t i) const
	{
		moat::item it = {nullptr, 0};

		check(moat_msg_item(get(), i, &it.data, &it.size));
		return it;
	}
	/** Item i copied into a string. */
	std::string str(std::size_t i) const
	{
		moat::item it = item(i);

		return std::string(static_cast<const char *>(it.data), it.size);
	}
	std::uint64_t u64(std::size_t i) const
	{
		std::uint64_t v = 0;

		check(moat_msg_item_u64(get(), i, &v));
		return v;
	}
	void reset()
	{
		moat_msg_reset(get());
	}

	/** The C message, still owned by this object (a moved-from message has none: MOAT_EINVAL). */
	moat_msg *get() const
	{
		if (!m_)
			throw error(MOAT_EINVAL, MOAT_ORIGIN_API, 0, "moat::message: used after a move");
		return m_;
	}

      private:
	moat_msg *m_;
};

/**
 * An exit handler: in holds the enclave's items (borrowed for the call),
 * append the reply to out. Return 0 or a negative value for the enclave's
 * moat_exit_call(); throwing fails the exit call (see the top of the file).
 */
typedef std::function<int(const moat_msg *in, moat_msg *out)> exit_handler;

/** Frees a reply of a typed call with the function its method names (protobuf-c's free). */
template <class T> struct reply_deleter {
	reply_deleter() : fn(nullptr)
	{
	}
	explicit reply_deleter(void (*f)(T *)) : fn(f)
	{
	}
	void operator()(T *p) const
	{
		if (p && fn)
			fn(p);
	}
	void (*fn)(T *);
};

/**
 * The reply of a typed entry call: a protobuf-c message T (e.g.
 * Typed__V1__FindReply) the caller owns, freed when its owner goes.
 */
template <class T> using reply = std::unique_ptr<T, reply_deleter<T>>;

/**
 * The host's function for exit method M (a type from a generated header): it
 * reads the decoded request and fills the reply, which is at its defaults.
 * Everything it hangs on the reply must come from malloc() (the C rule:
 * docs/TYPED-CALLS.md). It returns 0 or a negative code for the enclave's
 * stub; throwing fails the exit call as for exit_handler.
 */
template <class M>
using typed_exit_handler =
    std::function<int(const typename M::request_type &request, typename M::reply_type &reply)>;

/** An owned enclave handle: destroyed with the object. Movable, not copyable. */
class enclave
{
      public:
	/** Load the image at path with options (nullptr: defaults, the backend from $MOAT_BACKEND). */
	explicit enclave(const std::string &path, const moat_load_options *options = nullptr)
	    : e_(nullptr), handlers_(new handler_map())
	{
		check(moat_enclave_load(&e_, path.c_str(), options));
	}
	/** Load the image at path on backend (a URI: "sim", "proc", "local", "grpc://HOST:PORT"...). */
	enclave(const std::string &path, const std::string &backend)
	    : e_(nullptr), handlers_(new handler_map())
	{
		moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

		o.backend = backend.c_str();
		check(moat_enclave_load(&e_, path.c_str(), &o));
	}
	~enclave()
	{
		moat_enclave_destroy(e_);
	}
	enclave(enclave &&other) noexcept : e_(other.e_), handlers_(std::move(other.handlers_))
	{
		other.e_ = nullptr;
	}
	enclave &operator=(enclave &&other) noexcept
	{
		std::swap(e_, other.e_);
		std::swap(handlers_, other.handlers_);
		return *this;
	}
	enclave(const enclave &) = delete;
	enclave &operator=(const enclave &) = delete;

	/** Entry call: the reply items are appended to out (left as it was when the call fails). */
	void call(std::uint64_t selector, const message &in, message &out)
	{
		check(moat_enclave_call(get(), selector, in.get(), out.get()));
	}
	/** Entry call with C messages (in and out may be null), as from an exit handler. */
	void call(std::uint64_t selector, const moat_msg *in, moat_msg *out)
	{
		check(moat_enclave_call(get(), selector, in, out));
	}
	/** Entry call with no items; the reply is returned. */
	message call(std::uint64_t selector)
	{
		message out;

		check(moat_enclave_call(get(), selector, nullptr, out.get()));
		return out;
	}
	/** Entry call; the reply is returned. */
	message call(std::uint64_t selector, const message &in)
	{
		message out;

		call(selector, in, out);
		return out;
	}

	/**
	 * Typed entry call M (a method type of a generated header: docs/TYPED-CALLS.md).
	 * The request is borrowed for the call. Returns the reply; throws moat::error
	 * (typed_error()), e.g. MOAT_EHANDLER with enclave_code() when the enclave's
	 * function failed.
	 */
	template <class M> reply<typename M::reply_type> call(const typename M::request_type &request)
	{
		return typed_call<M>(&request);
	}
	/** Typed entry call M with every field of the request at its default. */
	template <class M> reply<typename M::reply_type> call()
	{
		return typed_call<M>(nullptr);
	}

	/** Answer the enclave's exit calls with selector with fn (an empty fn removes the handler). */
	void on_exit(std::uint64_t selector, exit_handler fn)
	{
		if (!fn) {
			check(moat_enclave_set_exit_handler(get(), selector, nullptr, nullptr));
			handlers_->erase(selector);
			return;
		}
		std::unique_ptr<raw_slot> h(new raw_slot(std::move(fn)));

		check(moat_enclave_set_exit_handler(get(), selector, raw_slot::run, h.get()));
		(*handlers_)[selector] = std::move(h);
	}
	/**
	 * Answer the enclave's typed exit calls of method M (of a service with
	 * option (moat.v1.host)) with fn; an empty fn removes the handler.
	 */
	template <class M> void on_exit(typed_exit_handler<M> fn)
	{
		static_assert(M::host,
		              "moat::enclave::on_exit<M>: M is an entry call (the enclave serves it)");
		if (!fn) {
			on_exit(M::selector(), exit_handler());
			return;
		}
		std::unique_ptr<typed_slot<M>> h(new typed_slot<M>(std::move(fn)));

		check(M::serve(get(), &h->server));
		(*handlers_)[M::selector()] = std::move(h);
	}

	/** Run the enclave's init after a load with MOAT_LOAD_DEFER_INIT (moat_enclave_start), once the
	 * handlers that answer its exit calls are set. */
	void start()
	{
		check(moat_enclave_start(get()));
	}

	moat_identity identity() const
	{
		moat_identity id;

		check(moat_enclave_identity(get(), &id));
		return id;
	}
	/** The address of the target hosting a remote session (moat_enclave_target); nullptr on sim, proc. */
	const char *target() const
	{
		return moat_enclave_target(get());
	}
	/** End the enclave now (moat_enclave_abort); the object must still be destroyed. */
	void abort()
	{
		check(moat_enclave_abort(get()));
	}

	/** The C handle, still owned by this object (a moved-from enclave has none: MOAT_EINVAL). */
	moat_enclave *get() const
	{
		if (!e_)
			throw error(MOAT_EINVAL, MOAT_ORIGIN_API, 0, "moat::enclave: used after a move");
		return e_;
	}

      private:
	/* What a handler threw, as the code of the enclave's exit call. */
	static int thrown()
	{
		try {
			throw;
		} catch (const error &e) {
			return e.code() < 0 ? e.code() : MOAT_EHANDLER;
		} catch (...) {
			return MOAT_EHANDLER;
		}
	}

	/* An exit handler kept by the enclave object; its address is the C callback's payload. */
	struct slot {
		virtual ~slot()
		{
		}
	};
	struct raw_slot : slot {
		explicit raw_slot(exit_handler f) : fn(std::move(f))
		{
		}
		static int run(void *payload, std::uint64_t selector, const moat_msg *in, moat_msg *out)
		{
			(void)selector;
			try {
				return static_cast<raw_slot *>(payload)->fn(in, out);
			} catch (...) {
				return thrown();
			}
		}
		exit_handler fn;
	};
	/* A typed one: a table of M's service with only M's function, which calls fn. */
	template <class M> struct typed_slot : slot {
		explicit typed_slot(typed_exit_handler<M> f) : server(), fn(std::move(f))
		{
			server.payload = this;
			M::set(server, run);
		}
		static int run(void *payload, const typename M::request_type *request,
		               typename M::reply_type *out)
		{
			try {
				return static_cast<typed_slot *>(payload)->fn(*request, *out);
			} catch (...) {
				return thrown();
			}
		}
		typename M::server_type server;
		typed_exit_handler<M> fn;
	};
	typedef std::map<std::uint64_t, std::unique_ptr<slot>> handler_map;

	template <class M> reply<typename M::reply_type> typed_call(const typename M::request_type *request)
	{
		static_assert(!M::host,
		              "moat::enclave::call<M>: M is an exit call (the host serves it: on_exit<M>)");
		typedef typename M::reply_type T;
		moat_enclave *e = get();
		T *r = nullptr;
		int rc;

		moat_error_clear();
		if ((rc = M::call(e, request, &r)) < 0)
			throw typed_error(rc, M::name());
		return reply<T>(r, reply_deleter<T>(M::reply_free));
	}

	moat_enclave *e_;
	/* On the heap, so that the handlers' addresses outlive a move of the enclave object. */
	std::unique_ptr<handler_map> handlers_;
};

} // namespace moat

#endif
