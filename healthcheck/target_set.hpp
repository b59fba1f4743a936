#pragma once

#include "config/address.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace apilb::healthcheck {

enum class TargetState : std::uint8_t { unknown, up, draining, down };
// Where a target came from: the config's `targets`, the installer's targets_file, the cluster's
// EndpointSlices (discovery), or first_master. A target several sources name has the first of
// them as its origin.
enum class Origin : std::uint8_t { config, file, discovery, fallback };

std::string_view to_string(TargetState) noexcept;
std::string_view to_string(Origin) noexcept;

// Live counters of one target, shared by every snapshot and every worker for as long as any of them
// refers to the target. Relaxed atomics written once per connection (never per packet), so that
// least_connections sees the whole process's load and not one worker's.
struct TargetStats {
  std::atomic<std::int64_t> active{0};
  std::atomic<std::uint64_t> total{0};
  std::atomic<std::uint64_t> connect_failures{0};
  std::atomic<std::uint64_t> bytes_upstream{0};    // client -> target, added once per burst
  std::atomic<std::uint64_t> bytes_downstream{0};  // target -> client
};

// One backend as a snapshot sees it: immutable once the snapshot is built.
struct Target {
  config::Address address;
  std::string name;  // address.to_string(), for logs and labels
  boost::asio::ip::tcp::endpoint endpoint;
  TargetState state = TargetState::unknown;
  Origin origin = Origin::config;
  // Down because its host refused the connect (ProbeResult::refused): its established connections
  // are left alone, for its kernel resets them if the apiserver died, and one that stopped
  // gracefully is finishing them.
  bool refused = false;
  std::shared_ptr<TargetStats> stats = std::make_shared<TargetStats>();
};

// Everything a worker needs to choose a target, built on the control thread whenever something
// changes and never modified after: any thread may read it without a lock. A connection keeps the
// snapshot it picked from alive (shared_ptr) so its Target stays valid.
class TargetSet {
 public:
  // `targets` in preference order (most recently healthy first): the order panic mode tries them
  // in. `close_on_down`: connections to a target that is down in this snapshot are to be closed.
  // `last_resort` (first_master when it is not a target): tried after every target in panic mode,
  // and only then.
  TargetSet(std::uint64_t generation, std::vector<Target> targets, bool close_on_down,
            const Target* last_resort = nullptr);

  std::uint64_t generation() const noexcept { return generation_; }
  std::span<const Target> targets() const noexcept { return targets_; }
  // Indices into targets() that may take new connections: the `up` ones; while none has been
  // checked yet, the `unknown` ones; in panic mode (none up, none unknown), every target, then the
  // last resort (which is in targets() only then).
  std::span<const std::uint32_t> eligible() const noexcept { return eligible_; }
  // No target is up or unchecked: every connection is a gamble on targets believed down.
  bool panic() const noexcept { return panic_; }
  // Whether a worker must close its established connections to the target owning `stats`: one
  // down and not refused, outside panic mode, with close_on_down.
  bool must_close(const TargetStats* stats) const noexcept;
  // The same hosts, states and order on another port, with the counters `stats_for(name)` gives:
  // the snapshot of a listener that follows these checks (listeners[].health_from).
  std::shared_ptr<const TargetSet> on_port(
      std::uint16_t port,
      const std::function<std::shared_ptr<TargetStats>(const std::string& name)>& stats_for) const;

 private:
  std::uint64_t generation_;
  std::vector<Target> targets_;
  std::vector<std::uint32_t> eligible_;
  std::vector<const TargetStats*> to_close_;  // sorted
  bool panic_ = false;
  bool close_on_down_;
  bool has_last_resort_ = false;  // the last of targets_ is the last resort
};

using TargetSetPtr = std::shared_ptr<const TargetSet>;

}  // namespace apilb::healthcheck
