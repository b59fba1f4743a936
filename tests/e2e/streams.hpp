#pragma once

// What the upgrade tests and bench/upgrade.sh (upgrade_compare) share: long-lived streams that
// notice a cut, and the latency summary of new-connection loads.

#include "tests/e2e/installer.hpp"

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

namespace apilb::test {

// Long-lived streams: each holds a connection for its own random lifetime, echoing every few ms,
// then closes it and opens the next. A stream is cut when an echo fails before its lifetime ends.
class Streams {
 public:
  Streams(const tcp::endpoint& lb, int count) {
    for (int i = 0; i < count; ++i)
      threads_.emplace_back([this, lb, i](std::stop_token stop) {
        std::minstd_rand random(i + 1);
        while (!stop.stop_requested()) {
          std::optional<Held> held;
          try {
            held.emplace(lb);
          } catch (const std::exception&) {
            ++cut_;
            continue;
          }
          const auto end = steady_clock::now() + std::chrono::milliseconds(200 + random() % 1300);
          while (steady_clock::now() < end && !stop.stop_requested()) {
            if (!held->echo("tick")) {
              ++cut_;
              break;
            }
            ++echoes_;
            std::this_thread::sleep_for(10ms);  // the stream's own pace, not a synchronisation
          }
          ++completed_;
        }
      });
  }
  void stop() { threads_.clear(); }
  int cut() const { return cut_; }
  int completed() const { return completed_; }
  long echoes() const { return echoes_; }

 private:
  std::atomic<int> cut_{0}, completed_{0};
  std::atomic<long> echoes_{0};
  std::vector<std::jthread> threads_;
};

// Time to answer of every new connection of some loads, summarised.
struct Latencies {
  Latencies() = default;
  explicit Latencies(std::initializer_list<Load*> loads) {
    std::vector<Load::Clock::duration> all;
    for (Load* l : loads)
      for (const auto& r : l->since()) all.push_back(r.took);
    std::sort(all.begin(), all.end());
    count = all.size();
    if (all.empty()) return;
    const auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    longest_ms = ms(all.back());
    p99_ms = ms(all[all.size() * 99 / 100]);
    p50_ms = ms(all[all.size() / 2]);
  }
  std::size_t count = 0;
  double longest_ms = 0, p99_ms = 0, p50_ms = 0;
};

}  // namespace apilb::test
