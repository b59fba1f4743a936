// Snapshot publishing: what the control thread does on every state change (Supervisor::publish):
// copy the targets in preference order and build the immutable TargetSet the workers will read.
#include "bench/micro/bench_targets.hpp"

#include <benchmark/benchmark.h>

#include <memory>

namespace apilb::bench {
namespace {

void build_snapshot(benchmark::State& state, healthcheck::TargetState first_state) {
  auto checkers = make_targets(static_cast<std::size_t>(state.range(0)));
  checkers.front().state = first_state;
  std::uint64_t generation = 0;
  for (auto _ : state) {
    std::vector<healthcheck::Target> targets(checkers.begin(), checkers.end());
    auto set =
        std::make_shared<const healthcheck::TargetSet>(++generation, std::move(targets), true);
    benchmark::DoNotOptimize(set);
  }
}

// Every target up; then one down, which also builds the sorted close list.
BENCHMARK_CAPTURE(build_snapshot, all_up, healthcheck::TargetState::up)->Arg(3)->Arg(50);
BENCHMARK_CAPTURE(build_snapshot, one_down, healthcheck::TargetState::down)->Arg(3)->Arg(50);

// What a worker does per published snapshot for each live connection: must_close() lookups.
void must_close(benchmark::State& state) {
  auto targets = make_targets(static_cast<std::size_t>(state.range(0)));
  targets.back().state = healthcheck::TargetState::down;
  const healthcheck::TargetSet set(1, targets, true);
  const auto* probe = targets.front().stats.get();
  for (auto _ : state) benchmark::DoNotOptimize(set.must_close(probe));
}
BENCHMARK(must_close)->Arg(3)->Arg(50);

}  // namespace
}  // namespace apilb::bench
