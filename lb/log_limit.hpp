#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace apilb::lb {

// At most one log line per interval for one class of event, across every worker that shares it;
// counts what it swallowed so the next line can say so. Thread-safe: it is touched only when the
// event happens (an error path), never per packet.
class LogLimit {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogLimit(Clock::duration interval = std::chrono::seconds(1))
      : interval_(interval.count()) {}

  bool allow() noexcept {
    const Clock::rep now = Clock::now().time_since_epoch().count();
    Clock::rep last = last_.load(std::memory_order_relaxed);
    // One thread wins the slot; the others count themselves as suppressed.
    if (now - last >= interval_ &&
        last_.compare_exchange_strong(last, now, std::memory_order_relaxed))
      return true;
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // " (N more suppressed)" when lines were swallowed since the last one, else "".
  std::string suppressed() {
    const auto n = suppressed_.exchange(0, std::memory_order_relaxed);
    return n ? " (" + std::to_string(n) + " more suppressed)" : std::string();
  }

 private:
  Clock::rep interval_;
  std::atomic<Clock::rep> last_{-interval_};  // the first event is always logged
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace apilb::lb
