// Target selection: the one decision every new connection makes on its worker thread.
#include "bench/micro/bench_targets.hpp"
#include "lb/balance.hpp"

#include <benchmark/benchmark.h>

namespace apilb::bench {
namespace {

void pick(benchmark::State& state, config::Balance policy) {
  const healthcheck::TargetSet set(1, make_targets(static_cast<std::size_t>(state.range(0))), true);
  lb::Balancer balancer(policy, 42);
  const lb::Tried none;
  for (auto _ : state) benchmark::DoNotOptimize(balancer.pick(set, none));
}

// A retry: two targets already failed, so the pick must skip them.
void pick_retry(benchmark::State& state, config::Balance policy) {
  const healthcheck::TargetSet set(1, make_targets(static_cast<std::size_t>(state.range(0))), true);
  lb::Balancer balancer(policy, 42);
  lb::Tried tried;
  tried.add(0);
  tried.add(1);
  for (auto _ : state) benchmark::DoNotOptimize(balancer.pick(set, tried));
}

BENCHMARK_CAPTURE(pick, least_connections, config::Balance::least_connections)->Arg(3)->Arg(50);
BENCHMARK_CAPTURE(pick, round_robin, config::Balance::round_robin)->Arg(3)->Arg(50);
BENCHMARK_CAPTURE(pick, random_two, config::Balance::random_two)->Arg(3)->Arg(50);
BENCHMARK_CAPTURE(pick_retry, least_connections, config::Balance::least_connections)
    ->Arg(3)
    ->Arg(50);
BENCHMARK_CAPTURE(pick_retry, round_robin, config::Balance::round_robin)->Arg(3)->Arg(50);
BENCHMARK_CAPTURE(pick_retry, random_two, config::Balance::random_two)->Arg(3)->Arg(50);

}  // namespace
}  // namespace apilb::bench
