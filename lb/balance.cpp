#include "lb/balance.hpp"

namespace apilb::lb {

Balancer::Balancer(config::Balance policy, std::uint64_t seed) noexcept
    : policy_(policy), random_(seed | 1) {}

// xorshift64*: a few cycles, no shared state, good enough to spread load.
std::uint64_t Balancer::next_random() noexcept {
  random_ ^= random_ >> 12;
  random_ ^= random_ << 25;
  random_ ^= random_ >> 27;
  return random_ * 0x2545f4914f6cdd1dULL;
}

std::optional<std::uint32_t> Balancer::pick(const healthcheck::TargetSet& set,
                                            const Tried& tried) noexcept {
  const auto eligible = set.eligible();
  const auto targets = set.targets();
  const std::size_t n = eligible.size();
  if (n == 0 || tried.size() >= n) return std::nullopt;
  auto load = [&](std::uint32_t index) {
    return targets[index].stats->active.load(std::memory_order_relaxed);
  };
  // Panic mode tries targets in preference order, one after another.
  if (set.panic()) {
    for (std::uint32_t index : eligible)
      if (!tried.contains(index)) return index;
    return std::nullopt;
  }

  switch (policy_) {
    case config::Balance::round_robin:
      for (std::size_t step = 0; step < n; ++step) {
        const std::uint32_t index = eligible[cursor_++ % n];
        if (!tried.contains(index)) return index;
      }
      return std::nullopt;

    case config::Balance::random_two: {
      // Power of two choices (Mitzenmacher): two random candidates, the less loaded wins.
      const std::size_t left = n - tried.size();
      if (left == 1) break;  // only one candidate: the scan below finds it
      std::uint32_t first = 0, second = 0;
      do first = eligible[next_random() % n];
      while (tried.contains(first));
      do second = eligible[next_random() % n];
      while (second == first || tried.contains(second));
      return load(second) < load(first) ? second : first;
    }

    case config::Balance::least_connections:
      break;
  }

  // Least connections; the scan starts at a rotating offset so that ties spread evenly.
  std::optional<std::uint32_t> best;
  std::int64_t best_load = 0;
  const std::size_t start = cursor_++;
  for (std::size_t step = 0; step < n; ++step) {
    const std::uint32_t index = eligible[(start + step) % n];
    if (tried.contains(index)) continue;
    const std::int64_t l = load(index);
    if (!best || l < best_load) best = index, best_load = l;
  }
  return best;
}

}  // namespace apilb::lb
