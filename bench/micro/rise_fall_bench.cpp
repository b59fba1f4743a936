// The rise/fall machine: one call per health-check result (active or passive).
#include "healthcheck/rise_fall.hpp"

#include <benchmark/benchmark.h>

namespace apilb::bench {
namespace {

// A steady target: every check passes, no transition.
void rise_fall_steady(benchmark::State& state) {
  healthcheck::RiseFall rf(2, 2);
  for (auto _ : state) benchmark::DoNotOptimize(rf.record(true));
}
BENCHMARK(rise_fall_steady);

// A flapping target: pass, pass, fail, fail, ... crosses the thresholds every other call.
void rise_fall_flapping(benchmark::State& state) {
  healthcheck::RiseFall rf(2, 2);
  unsigned i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(rf.record((i++ & 2) == 0));
}
BENCHMARK(rise_fall_flapping);

}  // namespace
}  // namespace apilb::bench
