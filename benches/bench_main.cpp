// Google Benchmark driver for the C workloads in workloads.c (issue 5).
//
// Linked against plain libc malloc: run it as is for glibc, or under
// LD_PRELOAD of another allocator (benches/compare does both).
//
// Every benchmark reports `ns_per_op`: wall-clock nanoseconds per unit of
// work (workloads.h says what an op is), measured per thread with
// CLOCK_MONOTONIC around the timed loop and averaged over the threads.
// Google Benchmark's own time columns are per iteration (an iteration is
// a chunk of ops) and are not what benches/compare reads.
//
// The signal benchmark (name starting with "signal/") may hang or crash
// under allocators that are not async-signal-safe: run it in a process of
// its own (`--benchmark_filter=^signal/`) and exclude it from the rest
// (`--benchmark_filter=-^signal/`, or the regex `^[^s]`).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <time.h>
#include <unistd.h>
#include <vector>

#include "workloads.h"

namespace {

double clock_ns(clockid_t id)
{
	timespec ts;
	clock_gettime(id, &ts);
	return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

// Wall clock and this thread's CPU time, taken together.
struct Stamp {
	double wall, cpu;
};

Stamp now()
{
	return {clock_ns(CLOCK_MONOTONIC), clock_ns(CLOCK_THREAD_CPUTIME_ID)};
}

// ns_per_op: wall clock (the headline; it includes time lost to lock
// waits, and to preemption on a busy machine). cpu_ns_per_op: this
// thread's CPU time (robust to other load on the machine, blind to
// sleeping on a lock).
void report(benchmark::State &st, Stamp t0, uint64_t ops, Stamp t1 = now())
{
	double n = ops ? double(ops) : 1.0;
	st.counters["ns_per_op"] =
		benchmark::Counter((t1.wall - t0.wall) / n, benchmark::Counter::kAvgThreads);
	st.counters["cpu_ns_per_op"] =
		benchmark::Counter((t1.cpu - t0.cpu) / n, benchmark::Counter::kAvgThreads);
	st.SetItemsProcessed(int64_t(ops));
}

constexpr uint64_t kChunk = 1000; // ops per benchmark iteration

void BM_pair(benchmark::State &st, size_t size)
{
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		benchmark::DoNotOptimize(wl_pairs(size, kChunk));
		ops += kChunk;
	}
	report(st, t0, ops);
}

void BM_calloc(benchmark::State &st, size_t size)
{
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		benchmark::DoNotOptimize(wl_calloc_pairs(size, kChunk));
		ops += kChunk;
	}
	report(st, t0, ops);
}

void BM_batch(benchmark::State &st, size_t size, bool lifo)
{
	const size_t count = 1000;
	std::vector<void *> slots(count);
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		if (lifo)
			benchmark::DoNotOptimize(wl_batch_lifo(slots.data(), count, size));
		else
			benchmark::DoNotOptimize(wl_batch_fifo(slots.data(), count, size));
		ops += count;
	}
	report(st, t0, ops);
}

void BM_churn(benchmark::State &st)
{
	wl_churn c;
	if (wl_churn_init(&c, 4096, uint64_t(st.thread_index()) + 1, 0) != 0) {
		st.SkipWithError("churn set-up failed");
		return;
	}
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		benchmark::DoNotOptimize(wl_churn_run(&c, kChunk));
		ops += kChunk;
	}
	report(st, t0, ops);
	wl_churn_fini(&c);
}

void BM_prodcons(benchmark::State &st, size_t size)
{
	wl_ring *r = wl_prodcons_start(1024);
	if (!r) {
		st.SkipWithError("ring set-up failed");
		return;
	}
	const uint64_t chunk = 10000;
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		benchmark::DoNotOptimize(wl_prodcons_run(r, size, chunk));
		ops += chunk;
	}
	report(st, t0, ops);
	wl_prodcons_stop(r);
}

void BM_realloc(benchmark::State &st, unsigned num, unsigned den)
{
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st)
		ops += wl_realloc_growth(64 * 1024, num, den);
	report(st, t0, ops);
}

// Churn on this thread while a 100 us timer sends it SIGPROF; the handler
// times malloc+free. Exits with status 3 if the churn finds a block whose
// contents changed under it (the heap was corrupted).
void BM_signal(benchmark::State &st, unsigned period_us)
{
	wl_churn c;
	if (wl_churn_init(&c, 4096, 7, 1) != 0) {
		st.SkipWithError("churn set-up failed");
		return;
	}
	if (wl_sig_arm(period_us) != 0) {
		wl_sig_disarm();
		st.SkipWithError("timer_create/sigaction failed");
		return;
	}
	uint64_t ops = 0;
	Stamp t0 = now();
	for (auto _ : st) {
		benchmark::DoNotOptimize(wl_churn_run(&c, kChunk));
		ops += kChunk;
	}
	Stamp t1 = now();
	wl_sig_disarm();
	struct wl_sig_stats s;
	wl_sig_stats(&s);
	if (c.corrupt) {
		std::fprintf(stderr, "signal benchmark: %llu blocks changed under the churn: heap corrupted\n",
		             (unsigned long long)c.corrupt);
		std::fflush(stderr);
		_exit(3);
	}
	report(st, t0, ops, t1);
	st.counters["p50_ns"] = s.p50_ns;
	st.counters["p90_ns"] = s.p90_ns;
	st.counters["p99_ns"] = s.p99_ns;
	st.counters["p999_ns"] = s.p999_ns;
	st.counters["max_ns"] = s.max_ns;
	st.counters["clock_ns"] = s.clock_ns;
	st.counters["empty_p50_ns"] = s.empty_p50_ns;
	st.counters["empty_p99_ns"] = s.empty_p99_ns;
	st.counters["pool_p50_ns"] = s.pool_p50_ns;
	st.counters["pool_p99_ns"] = s.pool_p99_ns;
	st.counters["samples"] = double(s.samples);
	st.counters["nulls"] = double(s.nulls);
	wl_churn_fini(&c);
}

void register_all()
{
	using benchmark::RegisterBenchmark;
	for (size_t size : {16, 64, 256, 1024, 4096})
		RegisterBenchmark(("pair/" + std::to_string(size)).c_str(), BM_pair, size);
	RegisterBenchmark("batch_lifo/1000x64", BM_batch, size_t(64), true);
	RegisterBenchmark("batch_fifo/1000x64", BM_batch, size_t(64), false);
	RegisterBenchmark("churn/4096x16-1040", BM_churn)->Threads(1)->Threads(2)->UseRealTime();
	RegisterBenchmark("prodcons/64", BM_prodcons, size_t(64))->UseRealTime();
	RegisterBenchmark("realloc/x1.5_16-64K", BM_realloc, 3u, 2u);
	RegisterBenchmark("realloc/+64_16-64K", BM_realloc, 64u, 0u);
	for (size_t size : {64, 4096})
		RegisterBenchmark(("calloc/" + std::to_string(size)).c_str(), BM_calloc, size);
	RegisterBenchmark("signal/sigprof_100us", BM_signal, 100u)->UseRealTime();
}

} // namespace

int main(int argc, char **argv)
{
	register_all();
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
