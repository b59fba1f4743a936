// Metric updates on the hot path. The relay adds to a byte counter after every chunk; this shows
// what the per-worker design (WorkerStats::add: a relaxed load and store on a line owned by one
// thread) saves over a locked fetch_add and over prometheus-cpp's Counter::Increment (a CAS loop
// on a double). With ->Threads(2) every thread hits the same shared counter, as workers would if
// they shared one; WorkerStats gives each thread its own line, as the Forwarder does.
#include "lb/forwarder.hpp"

#include <benchmark/benchmark.h>
#include <prometheus/counter.h>

#include <array>
#include <atomic>

namespace apilb::bench {
namespace {

constexpr std::uint64_t kChunk = 16384;
constexpr int kMaxThreads = 8;

std::array<lb::WorkerStats, kMaxThreads> per_worker;
alignas(64) std::atomic<std::uint64_t> shared_counter{0};
prometheus::Counter shared_prometheus;

void worker_stats_add(benchmark::State& state) {
  auto& counter =
      per_worker[static_cast<std::size_t>(state.thread_index()) % kMaxThreads].bytes_copied;
  for (auto _ : state) lb::WorkerStats::add(counter, kChunk);
  benchmark::DoNotOptimize(counter.load(std::memory_order_relaxed));
}
BENCHMARK(worker_stats_add)->Threads(1)->Threads(2);

void atomic_fetch_add(benchmark::State& state) {
  for (auto _ : state) shared_counter.fetch_add(kChunk, std::memory_order_relaxed);
}
BENCHMARK(atomic_fetch_add)->Threads(1)->Threads(2);

void prometheus_increment(benchmark::State& state) {
  for (auto _ : state) shared_prometheus.Increment(static_cast<double>(kChunk));
}
BENCHMARK(prometheus_increment)->Threads(1)->Threads(2);

}  // namespace
}  // namespace apilb::bench
