#pragma once

#include "config/config.hpp"
#include "healthcheck/target_set.hpp"
#include "lb/log_limit.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

namespace apilb::lb {

struct Worker;  // worker.hpp: a worker's state, internal to lb/

// What a Forwarder needs from the configuration; copied into each worker.
struct ForwarderSettings {
  config::Balance balance = config::Balance::least_connections;
  config::Duration connect_timeout = std::chrono::seconds(2);
  // Connect timeout per attempt in panic mode, where every target is believed down.
  config::Duration panic_connect_timeout = std::chrono::milliseconds(500);
  int retries = 2;
  config::ReplayFirstFlight replay = config::ReplayFirstFlight::tls;
  std::uint32_t max_connections = 100000;
  config::Tcp tcp;
  config::Relay relay;

  static ForwarderSettings from(const config::Config& c);
};

// Process-wide state the workers share: the connection cap, totals, and the way back to the
// control thread. Must outlive every Forwarder.
struct ForwarderShared {
  std::atomic<std::int64_t> connections{0};  // accepted and not yet closed, all workers
  std::atomic<std::uint64_t> rejected{0};    // closed at once because of max_connections
  std::atomic<std::uint64_t> failed{0};      // clients closed because no target could be reached
  std::atomic<std::uint64_t> replayed{0};    // first flights replayed on another target
  std::atomic<std::uint64_t> rebalanced{0};  // closed to spread long-lived connections again
  // Rate limits of the workers' error lines: at most one a second for the whole process.
  LogLimit accept_errors, connect_errors, no_target, over_limit, replays;
  // Called on a worker thread after a failed connect; must be thread-safe (post to the control
  // thread).
  std::function<void(const healthcheck::Target&, std::string_view reason, bool refused)>
      on_connect_failure;
};

// Counters of one worker, written only by its thread (a relaxed load and store, no locked
// instruction) and read by anyone; one cache line each so workers never share a line.
struct alignas(64) WorkerStats {
  std::atomic<std::uint64_t> bytes_copied{0};   // relayed through user-space buffers
  std::atomic<std::uint64_t> bytes_spliced{0};  // relayed with splice(2)

  static void add(std::atomic<std::uint64_t>& counter, std::uint64_t n) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// A listener of one worker: where it is bound and its descriptor (owned by the worker, valid until
// unlisten() or stop_accepting(); an upgrade hands it to the next process).
struct Listening {
  boost::asio::ip::tcp::endpoint endpoint;
  int fd = -1;
};

// One worker: an io_context run by one thread, its own SO_REUSEPORT listeners, its connections and
// its copy of the target snapshot. A connection never leaves its worker, so nothing here is locked.
// run() is called by exactly one thread; publish(), stop_accepting(), close_all() and stop() may be
// called from any thread. Destroying it destroys every connection it still holds.
class Forwarder {
 public:
  Forwarder(ForwarderSettings settings, ForwarderShared& shared);
  ~Forwarder();
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  // Opens a listener (SO_REUSEPORT, so every worker can bind the same address) whose connections
  // go to the targets of `pool` (see publish()), and returns it with the bound endpoint (the
  // kernel's choice for port 0); throws std::system_error naming the endpoint. listen(), adopt(),
  // unlisten() and configure() are called from one thread (the control thread), before or while
  // run() runs.
  Listening listen(const boost::asio::ip::tcp::endpoint& endpoint, std::size_t pool = 0);
  // Takes over a listening socket `fd` that another process bound (an upgrade).
  Listening adopt(int fd, std::size_t pool = 0);
  // Closes the listener here; the socket lives on in a process it was handed to.
  void unlisten(const boost::asio::ip::tcp::endpoint& endpoint);
  // New settings for new connections; established ones keep running untouched.
  void configure(ForwarderSettings settings);
  // Closes the established connections to the target owning `target` (removed after drain_timeout).
  void close_target(std::shared_ptr<const healthcheck::TargetStats> target);

  const WorkerStats& stats() const noexcept;

  void run();
  // The snapshot new connections of `pool`'s listeners pick from; closes the established
  // connections it says to close.
  void publish(healthcheck::TargetSetPtr targets, std::size_t pool = 0);
  // Closes the oldest connections to the target owning `target`, one per unit of `budget` (shared
  // by the workers asked at once): rebalancing.
  void close_oldest(std::shared_ptr<const healthcheck::TargetStats> target,
                    std::shared_ptr<std::atomic<int>> budget);
  void stop_accepting();
  void close_all();
  void stop();

 private:
  Listening start_accepting(std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor,
                            std::size_t pool);

  std::unique_ptr<Worker> worker_;
};

}  // namespace apilb::lb
