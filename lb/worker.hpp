#pragma once

// A worker's state: internal to lb/, shared by forwarder.cpp (accept, connect deadlines, the
// public API) and connection.cpp (the relay).

#include "lb/connection.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <unistd.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace apilb::lb {

struct UringState;  // uring_loop.cpp: the io_uring engine's listeners, while run() runs

// One worker (see Forwarder): its io_context, listeners, connections, pools and target snapshot.
// Touched only on the thread that runs `io`, except listener_tcp (the control thread's copy).
struct Worker {
  Worker(ForwarderSettings s, ForwarderShared& sh)
      : settings(std::move(s)),
        shared(sh),
        balancer(settings.balance, reinterpret_cast<std::uintptr_t>(this)),
        buffers(settings.relay.buffer_size),
        listener_tcp(settings.tcp) {}

  ~Worker() {
    // Close every connection. Those with a wait pending go when io is destroyed: it abandons
    // their waiters, the last of which deletes its connection (a waiter lives in its connection,
    // so the connection must outlive io's hold on it). Destroying io also destroys the coroutine
    // frames (acceptors) while everything they refer to is still alive.
    for_each_connection([](Connection& c) { c.abort(); });
    connect_timer.reset();
    tune_timer.reset();
    io.reset();
    if (wake_fd >= 0) ::close(wake_fd);
  }

  // After a post from another thread: wakes the io_uring engine's loop, which sleeps in its ring
  // rather than in Asio's epoll_wait (nothing to do on epoll: Asio's own post interrupts it).
  void wake() noexcept {
    const std::uint64_t one = 1;
    if (wake_fd >= 0 && ::write(wake_fd, &one, sizeof one) < 0) {
      // Full (2^64 - 2 pending wake-ups) or closed: the loop is awake or gone either way.
    }
  }

  boost::asio::awaitable<void> accept_loop(std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor,
                                           std::size_t pool);
  void watch_connect(Connection& c);
  void arm_connect_timer(Clock::time_point at);
  void on_connect_timer();
  void watch_young(Connection& c);
  void tune_tick();
  template <typename F>
  void for_each_connection(F f) {
    // Advance first: f may close (and delete) the connection.
    for (auto it = connections.begin(); it != connections.end();) f(*it++);
  }

  using PhaseList = boost::intrusive::list<
      Connection, boost::intrusive::member_hook<Connection, PhaseHook, &Connection::phase_hook>,
      boost::intrusive::constant_time_size<false>>;

  ForwarderSettings settings;
  ForwarderShared& shared;
  WorkerStats stats;
  Balancer balancer;
  BufferPool buffers;
  PipePool pipes;
  std::vector<healthcheck::TargetSetPtr> targets;  // one snapshot per pool (listeners[] + 1)
  boost::intrusive::list<Connection, boost::intrusive::constant_time_size<false>> connections;
  // Connections waiting for their connect, in deadline order, swept by one timer per worker: no
  // timer (and its allocation and timerfd update) per connect.
  PhaseList connecting;
  // Established connections whose upstream socket still lacks keepalive and TCP_USER_TIMEOUT:
  // `young` since the last tick, `settling` since the one before. Setting them late saves five
  // setsockopt calls on every short connection (most of them, with Connection: close clients);
  // the price is that a peer dying in a connection's first two seconds is noticed up to two
  // seconds later than the configured timeouts.
  PhaseList young;
  PhaseList settling;
  std::optional<boost::asio::io_context> io{std::in_place, 1};
  Reactor& reactor = boost::asio::use_service<Reactor>(*io);
  std::optional<boost::asio::steady_timer> connect_timer{std::in_place, *io};
  std::optional<boost::asio::steady_timer> tune_timer{std::in_place, *io};
  Clock::time_point connect_timer_at;
  bool connect_timer_armed = false;
  bool tune_timer_armed = false;
  std::vector<boost::asio::ip::tcp::acceptor*> acceptors;  // owned by their accept loops
  config::Tcp listener_tcp;  // the control thread's copy, for listen()
  // The engine (never automatic), fixed at construction; on io_uring, the ring and listeners while
  // run() runs (worker thread only) and the eventfd that wake() writes.
  config::Engine engine = config::Engine::epoll;
  Ring* ring = nullptr;
  UringState* uring = nullptr;
  int wake_fd = -1;
};

}  // namespace apilb::lb
