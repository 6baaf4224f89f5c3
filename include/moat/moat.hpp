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

	/** Answer the enclave's exit calls with selector with fn (an empty fn removes the handler). */
	void on_exit(std::uint64_t selector, exit_handler fn)
	{
		if (!fn) {
			check(moat_enclave_set_exit_handler(get(), selector, nullptr, nullptr));
			handlers_->erase(selector);
			return;
		}
		std::unique_ptr<exit_handler> h(new exit_handler(std::move(fn)));

		check(moat_enclave_set_exit_handler(get(), selector, trampoline, h.get()));
		(*handlers_)[selector] = std::move(h);
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
	typedef std::map<std::uint64_t, std::unique_ptr<exit_handler>> handler_map;

	static int trampoline(void *payload, std::uint64_t selector, const moat_msg *in, moat_msg *out)
	{
		(void)selector;
		try {
			return (*static_cast<exit_handler *>(payload))(in, out);
		} catch (const error &e) {
			return e.code() < 0 ? e.code() : MOAT_EHANDLER;
		} catch (...) {
			return MOAT_EHANDLER;
		}
	}

	moat_enclave *e_;
	/* On the heap, so that the handlers' addresses outlive a move of the enclave object. */
	std::unique_ptr<handler_map> handlers_;
};

} // namespace moat

#endif
