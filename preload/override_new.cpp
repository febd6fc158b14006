/*
 * libsigmalloc.so: every C++ operator new and operator delete, so that no
 * C++ allocation reaches jemalloc's own operator new (libjemalloc.so.2
 * exports one) behind the depth counter's back.
 *
 * new follows [new.delete.single]: on failure it calls the new-handler
 * until one is not installed, then throws std::bad_alloc; the nothrow forms
 * return nullptr instead (and swallow what the handler throws). A
 * new-expression in a signal handler gets the same answer as malloc does
 * there: memory from the nested reserve, or bad_alloc when it is empty.
 */
#include <cstddef>
#include <new>

#include "sigmalloc.h"

#define SM_EXPORT __attribute__((visibility("default")))

namespace {

void *alloc(std::size_t n, std::size_t align)
{
	if (align <= 16)
		return sm_malloc(n);
	void *p = nullptr;
	return sm_posix_memalign(&p, align, n) == 0 ? p : nullptr;
}

__attribute__((noinline)) void *new_slow(std::size_t n, std::size_t align, bool nothrow)
{
	for (;;) {
		void *p = alloc(n, align);
		if (p)
			return p;
		std::new_handler handler = std::get_new_handler();
		if (!handler) {
			if (nothrow)
				return nullptr;
			throw std::bad_alloc();
		}
		if (!nothrow) {
			handler();
			continue;
		}
		try {
			handler();
		} catch (...) {
			return nullptr;
		}
	}
}

inline void *new_impl(std::size_t n, std::size_t align, bool nothrow)
{
	void *p = alloc(n, align);
	if (__builtin_expect(p != nullptr, 1))
		return p;
	return new_slow(n, align, nothrow);
}

} // namespace

SM_EXPORT void *operator new(std::size_t n) { return new_impl(n, 0, false); }
SM_EXPORT void *operator new[](std::size_t n) { return new_impl(n, 0, false); }
SM_EXPORT void *operator new(std::size_t n, const std::nothrow_t &) noexcept
{
	return new_impl(n, 0, true);
}
SM_EXPORT void *operator new[](std::size_t n, const std::nothrow_t &) noexcept
{
	return new_impl(n, 0, true);
}
SM_EXPORT void *operator new(std::size_t n, std::align_val_t a)
{
	return new_impl(n, static_cast<std::size_t>(a), false);
}
SM_EXPORT void *operator new[](std::size_t n, std::align_val_t a)
{
	return new_impl(n, static_cast<std::size_t>(a), false);
}
SM_EXPORT void *operator new(std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_impl(n, static_cast<std::size_t>(a), true);
}
SM_EXPORT void *operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_impl(n, static_cast<std::size_t>(a), true);
}

SM_EXPORT void operator delete(void *p) noexcept { sm_free(p); }
SM_EXPORT void operator delete[](void *p) noexcept { sm_free(p); }
SM_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { sm_free(p); }
SM_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { sm_free(p); }
SM_EXPORT void operator delete(void *p, std::size_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete[](void *p, std::size_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete(void *p, std::align_val_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete(void *p, std::size_t, std::align_val_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete[](void *p, std::size_t, std::align_val_t) noexcept { sm_free(p); }
SM_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
	sm_free(p);
}
SM_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
	sm_free(p);
}
