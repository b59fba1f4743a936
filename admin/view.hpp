#pragma once

#include "config/config.hpp"
#include "healthcheck/supervisor.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace apilb::admin {

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
  std::shared_ptr<const config::Config> config;   // in force; null when not gathered
};

// Ready: listening, and a target is up (or unchecked, or the first_master fallback applies) —
// not in panic mode. Otherwise false with a one-line reason.
bool ready(const AdminView& view, std::string* why);

}  // namespace apilb::admin
