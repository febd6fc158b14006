// Every C++ operator new / delete variant, through LD_PRELOAD of
// libsigmalloc.so: the objects must come from sigmalloc (malloc_usable_size
// answers with a class size, and sm_stats sees the allocations), the
// aligned forms must honour their alignment, and failure must throw
// std::bad_alloc, call the new-handler, or return nullptr for nothrow.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <malloc.h>
#include <memory>
#include <new>
#include <string>
#include <vector>

static int passed, failed;
#define CHECK(name, expr)                                                              \
	do {                                                                           \
		if (expr)                                                              \
			passed++;                                                      \
		else {                                                                 \
			failed++;                                                      \
			std::fprintf(stderr, "FAIL: %s (line %d)\n", name, __LINE__);  \
		}                                                                      \
	} while (0)

struct alignas(64) Wide {
	char bytes[100];
};
struct alignas(8192) Huge {
	char bytes[10];
};

static int handler_calls;
static void handler()
{
	if (++handler_calls >= 3)
		std::set_new_handler(nullptr); // give up: the next failure throws
}

static bool aligned(const void *p, std::size_t a) { return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0; }

int main()
{
	// The library is really there, and it is the one answering.
	CHECK("libsigmalloc.so is preloaded", dlsym(RTLD_DEFAULT, "sm_malloc") != nullptr);

	int *i = new int(42);
	CHECK("new int", i && *i == 42 && malloc_usable_size(i) == 16);
	delete i;
	int *arr = new int[1000];
	CHECK("new[]", arr && malloc_usable_size(arr) >= 4000);
	delete[] arr;
	int *nt = new (std::nothrow) int(7);
	CHECK("new nothrow", nt && *nt == 7);
	delete nt;
	int *ntarr = new (std::nothrow) int[10];
	CHECK("new[] nothrow", ntarr != nullptr);
	delete[] ntarr;

	Wide *w = new Wide;
	CHECK("aligned new (64)", aligned(w, 64));
	delete w;
	Wide *wa = new Wide[7];
	CHECK("aligned new[] (64)", aligned(wa, 64));
	delete[] wa;
	Huge *h = new Huge;
	CHECK("aligned new (8192)", aligned(h, 8192));
	delete h;
	Huge *hn = new (std::nothrow) Huge;
	CHECK("aligned new nothrow (8192)", hn && aligned(hn, 8192));
	delete hn;
	Huge *ha = new (std::nothrow) Huge[3];
	CHECK("aligned new[] nothrow (8192)", ha && aligned(ha, 8192));
	delete[] ha;

	// Explicit calls of every delete form.
	void *p = ::operator new(100);
	::operator delete(p, std::size_t(100));
	p = ::operator new[](100);
	::operator delete[](p, std::size_t(100));
	p = ::operator new(100, std::align_val_t(128));
	CHECK("operator new(size, align_val_t)", aligned(p, 128));
	::operator delete(p, std::size_t(100), std::align_val_t(128));
	p = ::operator new[](100, std::align_val_t(256));
	CHECK("operator new[](size, align_val_t)", aligned(p, 256));
	::operator delete[](p, std::size_t(100), std::align_val_t(256));
	p = ::operator new(10, std::align_val_t(512), std::nothrow);
	::operator delete(p, std::align_val_t(512), std::nothrow);
	p = ::operator new[](10, std::align_val_t(512), std::nothrow);
	::operator delete[](p, std::align_val_t(512), std::nothrow);
	p = ::operator new(10, std::align_val_t(32));
	::operator delete(p, std::align_val_t(32));
	p = ::operator new[](10, std::align_val_t(32));
	::operator delete[](p, std::align_val_t(32));
	p = ::operator new(10, std::nothrow);
	::operator delete(p, std::nothrow);
	p = ::operator new[](10, std::nothrow);
	::operator delete[](p, std::nothrow);
	p = ::operator new(0);
	CHECK("operator new(0) is a unique pointer", p != nullptr);
	::operator delete(p);

	// Failure: bad_alloc, nothrow nullptr, and the new-handler protocol.
	bool threw = false;
	try {
		void *q = ::operator new(SIZE_MAX / 2);
		::operator delete(q);
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	CHECK("new throws std::bad_alloc", threw);
	CHECK("nothrow new returns nullptr", ::operator new(SIZE_MAX / 2, std::nothrow) == nullptr);
	CHECK("aligned nothrow new returns nullptr",
	      ::operator new(SIZE_MAX / 2, std::align_val_t(64), std::nothrow) == nullptr);
	std::set_new_handler(handler);
	threw = false;
	try {
		void *q = ::operator new[](SIZE_MAX / 2);
		::operator delete[](q);
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	CHECK("the new-handler is called until it gives up", handler_calls == 3 && threw);

	// The standard library on top.
	std::vector<std::string> v;
	for (int k = 0; k < 10000; k++)
		v.push_back(std::string(static_cast<std::size_t>(k % 200), 'x'));
	std::size_t total = 0;
	for (auto &s : v)
		total += s.size();
	CHECK("std::vector<std::string>", total == 995000);
	auto sp = std::make_shared<Wide>();
	CHECK("make_shared of an over-aligned type", aligned(sp.get(), 64));

	std::printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
