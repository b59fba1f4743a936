#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace apilb::lb {

// At most one log line per interval for one class of event on a hot path; counts what it swallowed
// so the next line can say so. One per worker and event class: not thread-safe.
class LogLimit {
 public:
  explicit LogLimit(std::chrono::steady_clock::duration interval = std::chrono::seconds(1))
      : interval_(interval) {}

  bool allow() noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < interval_) {
      ++suppressed_;
      return false;
    }
    last_ = now;
    return true;
  }
  // " (N more suppressed)" when lines were swallowed since the last one, else "".
  std::string suppressed() {
    const auto n = std::exchange(suppressed_, 0);
    return n ? " (" + std::to_string(n) + " more suppressed)" : std::string();
  }

 private:
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_{};
  std::uint64_t suppressed_ = 0;
};

}  // namespace apilb::lb
