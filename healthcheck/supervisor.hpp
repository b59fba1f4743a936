#pragma once

#include "config/config.hpp"
#include "healthcheck/probe.hpp"
#include "healthcheck/target_set.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace apilb::healthcheck {

// A target as the configuration or the feed names it.
struct TargetSpec {
  config::Address address;
  Origin origin = Origin::config;
  bool drain = false;  // planned maintenance: no new connections, established ones finish
  // What the process that handed over to this one knew of it (an upgrade): a new target starts in
  // that state instead of unknown, so an upgrade neither sends to a dead master nor waits for
  // `rise` checks of a healthy one. Ignored for a target that is checked already.
  TargetState inherited = TargetState::unknown;
  std::vector<Origin> sources;  // every source that names it, `origin` first; empty: {origin}
};

// Durations of a target's active checks in fixed buckets (Prometheus histogram semantics:
// counts[i] holds the checks that took at most kBounds[i], the last slot the rest).
struct CheckHistogram {
  static constexpr std::array<double, 11> kBounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1.0,  2.5};
  std::array<std::uint64_t, kBounds.size() + 1> counts{};
  double sum = 0;
  std::uint64_t count = 0;

  void observe(double seconds) noexcept;
};

// One target as operators see it (/status, /metrics, logs).
struct TargetStatus {
  std::string name;
  Origin origin = Origin::config;
  TargetState state = TargetState::unknown;
  std::chrono::system_clock::time_point since;
  ProbeResult last;  // the last active or passive result
  std::shared_ptr<const TargetStats> stats;
  CheckHistogram checks;
  std::uint64_t left_service = 0;  // times it went from up to down or draining
  std::vector<Origin> sources;     // every source that names it, `origin` first
};

// One line of the recent history the status page shows: a target changing state, or the balancer
// entering or leaving panic mode (target empty, from/to "panic"/"normal").
struct StateChange {
  std::chrono::system_clock::time_point at;
  std::string target;
  std::string from;
  std::string to;
  std::string reason;
};

// Decides who is healthy. Runs one check loop per target on the control executor (active probes on
// a jittered timer, faster while a change builds or a probe hangs, up to `fall` in flight), folds
// in the connect failures workers report (passive checks: each counts as a failed check and
// triggers an immediate probe), and publishes an immutable TargetSet whenever a target's state
// changes. Every member function runs on the control
// executor. Must outlive the executor's run(); destroy it before the io_context.
class Supervisor {
 public:
  using Publish = std::function<void(TargetSetPtr)>;

  Supervisor(boost::asio::any_io_executor executor, const config::Health& health,
             config::OnTargetDown on_target_down, Publish publish);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Replaces the target list: new targets start unknown and are checked at once; targets that stay
  // keep their state and counters; removed ones stop being checked. `first_master`, when it is not
  // one of them, is the last resort of panic mode: never checked, tried after every target.
  // Publishes.
  void set_targets(const std::vector<TargetSpec>& specs,
                   const std::optional<config::Address>& first_master = std::nullopt);
  // New health settings (a reload): a new prober for the next checks, rise/fall limits applied to
  // every target without forgetting whether it is up or down. Publishes.
  void reconfigure(const config::Health& health, config::OnTargetDown on_target_down);
  // A worker failed to connect to the target owning `stats`; `refused`: with a reset
  // (ProbeResult::refused).
  void report_connect_failure(const TargetStats* stats, const std::string& reason,
                              bool refused = false);

  TargetSetPtr current() const { return current_; }
  bool panic() const noexcept { return panic_; }
  std::vector<TargetStatus> status() const;
  // The last kHistory state changes, oldest first.
  static constexpr std::size_t kHistory = 32;
  const std::deque<StateChange>& changes() const noexcept { return changes_; }

 private:
  struct Checker;
  boost::asio::awaitable<void> check_loop(std::shared_ptr<Checker> checker);
  boost::asio::awaitable<void> check_once(std::shared_ptr<Checker> checker);
  void record(Checker& checker, ProbeResult result, bool active);
  void publish();
  void remember(StateChange change);
  void set_last_resort(const std::optional<config::Address>& address);
  boost::asio::awaitable<void> resolve_last_resort(config::Address address);
  std::chrono::milliseconds fast_interval() const;
  std::chrono::milliseconds next_delay();

  boost::asio::any_io_executor executor_;
  config::Health health_;
  config::OnTargetDown on_target_down_;
  Publish publish_;
  std::shared_ptr<Prober> prober_;  // a check in flight keeps the one it started with
  std::vector<std::shared_ptr<Checker>> checkers_;  // in configuration order
  std::optional<Target> last_resort_;  // its endpoint unspecified until its name resolves
  TargetSetPtr current_;
  std::uint64_t generation_ = 0;
  std::uint64_t random_ = 0x853c49e6748fea9bULL;
  bool panic_ = false;
  std::deque<StateChange> changes_;
};

}  // namespace apilb::healthcheck
