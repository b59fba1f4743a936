#pragma once

// The safety rules between what the cluster says and what the balancer does. The anchors' failure
// modes are the dangerous ones: an Endpoints object caught empty empties the list, a half-finished
// replacement drops most of the healthy masters at once. So a change that would remove every
// discovered target, or take more than half of the healthy targets out of service at once, is held
// back for `confirm_after` and then applied only as far as health checks agree: a removed target
// that still passes its checks stays until it fails them (or the cluster names it again).
// Everything else applies at once: additions, and endpoints turning not-ready or terminating,
// which drain (no new connections) and are not removed.
//
// A value with no I/O, no clock and no logging (the caller passes the time, and logs `why`), so
// every rule is tested deterministically.

#include "discovery/slice.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace apilb::discovery {

// What the health checks say, from the control thread's supervisor, at the time of a decision.
struct HealthView {
  // Passing its checks now (up).
  std::function<bool(const config::Address&)> up;
  // Named by `targets` or the feed as well: stays whatever discovery says, so it does not count.
  std::function<bool(const config::Address&)> elsewhere;
  std::size_t up_total = 0;  // targets passing their checks, from every source
};

class Gate {
 public:
  using Clock = std::chrono::steady_clock;

  // `applied`: the list in force at start (the last good list persisted before a restart).
  explicit Gate(Clock::duration confirm_after, std::vector<Endpoint> applied = {});

  struct Decision {
    std::optional<std::vector<Endpoint>> apply;  // the list to put in force now, if it changes
    std::string why;    // a line for the log when something was held back, kept or released
    bool warn = false;  // `why` is a warning: a change is being held back
  };

  // A new list from the cluster (merge() of the slices).
  Decision propose(std::vector<Endpoint> next, const HealthView& health, Clock::time_point now);
  // Re-decides a held-back list: call it when health changes or a second passes while holding().
  Decision tick(const HealthView& health, Clock::time_point now);

  const std::vector<Endpoint>& applied() const noexcept { return applied_; }
  // A change is held back; since when.
  bool holding() const noexcept { return held_.has_value(); }
  std::optional<Clock::time_point> held_since() const noexcept;
  // How many changes have been held back since construction.
  std::uint64_t held_total() const noexcept { return held_total_; }

 private:
  struct Held {
    std::vector<Endpoint> wanted;
    Clock::time_point since;
    std::string reason;
    bool announced = false;  // the log said what stays after confirm_after
  };
  Decision decide(const HealthView& health, Clock::time_point now);

  Clock::duration confirm_after_;
  std::vector<Endpoint> applied_;
  std::optional<Held> held_;
  std::uint64_t held_total_ = 0;
};

}  // namespace apilb::discovery
