#pragma once

#include "config/config.hpp"
#include "healthcheck/supervisor.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace apilb::admin {

// Discovery (discovery.kubernetes) as /status and /metrics show it.
struct DiscoveryStatus {
  std::string state;  // the watch: connecting, listing, watching, backing off
  std::string resource_version;
  std::string last_error;  // "" until something failed
  std::uint64_t lists = 0;
  std::uint64_t watches = 0;
  std::uint64_t events = 0;
  std::uint64_t errors = 0;
  std::uint64_t held_back = 0;  // changes the safety rules held back
  bool holding = false;         // one is held back now
  double holding_seconds = 0;
  std::size_t targets = 0;  // discovered targets in force
  std::chrono::system_clock::time_point last_list{};
};

// Everything the admin endpoints show, gathered in one go on the control thread (where the
// supervisor lives) and rendered afterwards on the admin thread.
struct AdminView {
  std::vector<std::string> listeners;
  config::Balance balance = config::Balance::least_connections;
  config::Engine engine = config::Engine::epoll;  // the workers' event engine, as chosen at start
  bool listening = false;
  bool panic = false;
  std::vector<healthcheck::TargetStatus> targets;
  std::int64_t connections = 0;     // open client connections, all workers
  std::uint64_t rejected = 0;       // closed at once: max_connections
  std::uint64_t failed = 0;         // closed because no target could be reached
  std::uint64_t replayed = 0;       // first flights replayed on another target
  std::uint64_t rebalanced = 0;     // closed by rebalance
  std::uint64_t bytes_copied = 0;   // relayed through buffers
  std::uint64_t bytes_spliced = 0;  // relayed with splice(2)
  std::uint64_t reloads_succeeded = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t feed_errors = 0;  // targets_file updates refused
  std::uint64_t bugs = 0;         // exceptions that escaped a coroutine (base::report_escaped)
  bool last_reload_ok = true;     // the last SIGHUP reload was taken (true before any)
  std::chrono::system_clock::time_point started;
  std::int64_t pid = 0;                           // the process answering (an upgrade replaces it)
  std::vector<healthcheck::StateChange> changes;  // recent, oldest first
  std::optional<DiscoveryStatus> discovery;       // set when discovery.kubernetes is
  std::shared_ptr<const config::Config> config;   // in force; null when not gathered
};

// Ready: listening, and a target is up (or unchecked, or the first_master fallback applies) —
// not in panic mode. Otherwise false with a one-line reason.
bool ready(const AdminView& view, std::string* why);

}  // namespace apilb::admin
