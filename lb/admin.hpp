#pragma once

#include "config/config.hpp"
#include "healthcheck/supervisor.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace apilb::lb {

// Everything the admin endpoints show, gathered in one go on the control thread (where the
// supervisor lives) and rendered afterwards on the admin thread.
struct AdminView {
  std::vector<std::string> listeners;
  config::Balance balance = config::Balance::least_connections;
  bool listening = false;
  bool panic = false;
  std::vector<healthcheck::TargetStatus> targets;
  std::int64_t connections = 0;           // open client connections, all workers
  std::uint64_t rejected = 0;             // closed at once: max_connections
  std::uint64_t failed = 0;               // closed because no target could be reached
  std::uint64_t bytes_copied = 0;         // relayed through buffers
  std::uint64_t bytes_spliced = 0;        // relayed with splice(2)
  std::uint64_t reloads_succeeded = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t feed_errors = 0;          // targets_file updates refused
  std::chrono::system_clock::time_point started;
};

// Ready: listening, and a target is up (or unchecked, or the first_master fallback applies) —
// not in panic mode. Otherwise false with a one-line reason.
bool ready(const AdminView& view, std::string* why);

// /status as JSON, /metrics as Prometheus text (0.0.4).
std::string render_status_json(const AdminView& view);
std::string render_metrics(const AdminView& view);
// The `apiserver-lb status` table, from a /status document; nullopt when it is not one.
std::optional<std::string> render_status_table(std::string_view status_json, bool* ready);

// The read-only admin HTTP server: /healthz, /readyz, /status, /metrics. Runs on its own thread
// and io_context, so a flood of scrapes or idle connections never slows forwarding or health
// checks; asks the control executor for an AdminView per request that needs one. Slow clients
// and oversized requests are cut off. Construct on the control thread; the destructor stops it.
class AdminServer {
 public:
  using Gather = std::function<AdminView()>;  // called on `control`

  // Binds (throws std::system_error naming the address) and starts serving. Destroy it on the
  // control executor's thread (or once that executor no longer runs).
  AdminServer(const boost::asio::ip::tcp::endpoint& endpoint, boost::asio::any_io_executor control,
              Gather gather);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  boost::asio::ip::tcp::endpoint endpoint() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with requests waiting on the control executor
};

// `apiserver-lb status [--admin ADDR]`: 0 ready, 1 not ready, 2 no answer or usage error.
int status_command(std::span<char*> args);

}  // namespace apilb::lb
