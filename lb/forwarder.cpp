#include "lb/forwarder.hpp"

#include "base/coroutine.hpp"
#include "config/address.hpp"
#include "lb/engine.hpp"
#include "lb/socket_options.hpp"
#include "lb/uring_loop.hpp"
#include "lb/worker.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

namespace apilb::lb {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;
using boost::system::error_code;
using healthcheck::TargetSetPtr;

namespace {

constexpr int kAcceptBatch = 64;
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
// Upstream sockets get keepalive and TCP_USER_TIMEOUT once they have lived between one and two of
// these (see Worker::tune_tick).
constexpr auto kTuneTick = std::chrono::seconds(1);

}  // namespace

ForwarderSettings ForwarderSettings::from(const config::Config& c) {
  ForwarderSettings s;
  s.balance = c.balance;
  s.connect_timeout = c.upstream.connect_timeout;
  s.panic_connect_timeout =
      std::min<config::Duration>(c.upstream.connect_timeout, std::chrono::milliseconds(500));
  s.retries = c.upstream.retries;
  s.replay = c.upstream.replay_first_flight;
  s.max_connections = c.limits.max_connections;
  s.tcp = c.tcp;
  s.relay = c.relay;
  return s;
}

awaitable<void> Worker::accept_loop(std::unique_ptr<tcp::acceptor> owned, std::size_t pool) {
  tcp::acceptor& acceptor = *owned;
  acceptors.push_back(&acceptor);
  struct Unregister {
    std::vector<tcp::acceptor*>& all;
    tcp::acceptor* self;
    ~Unregister() { std::erase(all, self); }
  } unregister{acceptors, &acceptor};
  const tcp protocol = acceptor.local_endpoint().protocol();
  for (;;) {
    auto [ec] = co_await acceptor.async_wait(tcp::acceptor::wait_read, use_nothrow);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    // Take every pending connection per wake-up: one epoll round trip for a burst.
    for (int i = 0; i < kAcceptBatch; ++i) {
      const int fd =
          ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) break;
        if (err == EINTR || err == ECONNABORTED) continue;
        // Out of descriptors or memory: the connection waits in the backlog until we recover.
        if (shared.accept_errors.allow())
          spdlog::error("accept on {}: {}; backing off{}",
                        config::to_string(acceptor.local_endpoint()), std::strerror(err),
                        shared.accept_errors.suppressed());
        asio::steady_timer backoff(*io, kAcceptBackoff);
        co_await backoff.async_wait(use_nothrow);
        break;
      }
      const auto open = shared.connections.fetch_add(1, std::memory_order_relaxed) + 1;
      if (open > static_cast<std::int64_t>(settings.max_connections)) {
        shared.connections.fetch_sub(1, std::memory_order_relaxed);
        shared.rejected.fetch_add(1, std::memory_order_relaxed);
        ::close(fd);
        if (shared.over_limit.allow())
          spdlog::warn("max_connections ({}) reached: closing new connections{}",
                       settings.max_connections, shared.over_limit.suppressed());
        continue;
      }
      (new Connection(*this, fd, protocol))->start(pool < targets.size() ? targets[pool] : nullptr);
    }
  }
}

void Worker::watch_connect(Connection& c) {
  // Nearly always appended: every connect of a worker has the same timeout, except in panic mode.
  auto it = connecting.end();
  while (it != connecting.begin() && std::prev(it)->deadline > c.deadline) --it;
  connecting.insert(it, c);
  if (!connect_timer_armed || c.deadline < connect_timer_at) arm_connect_timer(c.deadline);
}

void Worker::arm_connect_timer(Clock::time_point at) {
  connect_timer_armed = true;
  connect_timer_at = at;
  connect_timer->expires_at(at);  // completes an earlier wait with operation_aborted
  connect_timer->async_wait([this](error_code ec) {
    if (ec != asio::error::operation_aborted) on_connect_timer();
  });
}

void Worker::on_connect_timer() {
  connect_timer_armed = false;
  const auto now = Clock::now();
  while (!connecting.empty() && connecting.front().deadline <= now) {
    Connection& c = connecting.front();
    c.phase_hook.unlink();
    c.connect_timed_out();
  }
  // Not re-armed when the list is empty: the next connect arms it.
  if (!connecting.empty()) arm_connect_timer(connecting.front().deadline);
}

void Worker::watch_young(Connection& c) {
  young.push_back(c);
  if (tune_timer_armed) return;
  tune_timer_armed = true;
  tune_timer->expires_after(kTuneTick);
  tune_timer->async_wait([this](error_code ec) {
    if (!ec) tune_tick();
  });
}

void Worker::tune_tick() {
  tune_timer_armed = false;
  while (!settling.empty()) {
    Connection& c = settling.front();
    c.phase_hook.unlink();
    c.tune_upstream();
  }
  settling.splice(settling.end(), young);
  if (settling.empty()) return;
  tune_timer_armed = true;
  tune_timer->expires_after(kTuneTick);
  tune_timer->async_wait([this](error_code ec) {
    if (!ec) tune_tick();
  });
}

Forwarder::Forwarder(ForwarderSettings settings, ForwarderShared& shared)
    : worker_(std::make_unique<Worker>(std::move(settings), shared)) {
  ignore_sigpipe();
  auto& engine = worker_->settings.relay.engine;
  engine = choose_engine(engine).engine;  // throws for an unavailable uring
  worker_->engine = engine;
  if (engine == config::Engine::uring) {
    worker_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (worker_->wake_fd < 0) throw std::system_error(errno, std::system_category(), "eventfd");
  }
}

Forwarder::~Forwarder() = default;

namespace {

// Closes a listener on this process only: the socket lives on where another process holds it (an
// upgrade handed it over), so its epoll registration is removed first. (Asio's close() skips that
// for a socket it opened itself, and the registration would outlive the close in that case.)
void release(tcp::acceptor& acceptor) {
  error_code ignored;
  if (!acceptor.is_open()) return;
  const int fd = acceptor.release(ignored);
  if (fd >= 0) ::close(fd);
}

}  // namespace

Listening Forwarder::listen(const tcp::endpoint& ep, std::size_t pool) {
  auto acceptor = std::make_unique<tcp::acceptor>(*worker_->io);
  error_code ec;
  acceptor->open(ep.protocol(), ec);
  if (!ec) {
    const int fd = acceptor->native_handle();
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // Like nginx: a v6 listener is v6 only, so [::]:6443 and 0.0.0.0:6443 can coexist.
    if (ep.protocol() == tcp::v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    tune_tcp(fd, worker_->listener_tcp);  // inherited by every accepted socket, as is:
    report_unread(fd);
    acceptor->bind(ep, ec);
  }
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::system_error(ec, "cannot listen on " + config::to_string(ep));
  }
  return start_accepting(std::move(acceptor), pool);
}

Listening Forwarder::adopt(int fd, std::size_t pool) {
  auto acceptor = std::make_unique<tcp::acceptor>(*worker_->io);
  error_code ec;
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    throw std::system_error(errno, std::generic_category(), "an inherited listener");
  const tcp protocol = address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4();
  acceptor->assign(protocol, fd, ec);
  if (ec) throw std::system_error(ec, "an inherited listener");
  acceptor->non_blocking(true, ec);
  tune_tcp(fd, worker_->listener_tcp);
  return start_accepting(std::move(acceptor), pool);
}

Listening Forwarder::start_accepting(std::unique_ptr<tcp::acceptor> acceptor, std::size_t pool) {
  const Listening listening{acceptor->local_endpoint(), acceptor->native_handle()};
  asio::post(*worker_->io, [w = worker_.get(), a = std::move(acceptor), pool]() mutable {
    if (w->uring) return uring_listen(*w, std::move(a), pool);
    base::spawn(*w->io, w->accept_loop(std::move(a), pool), "a forwarder accept loop");
  });
  worker_->wake();
  return listening;
}

void Forwarder::unlisten(const tcp::endpoint& ep) {
  asio::post(*worker_->io, [w = worker_.get(), ep] {
    if (w->uring) uring_unlisten(*w, ep);
    for (tcp::acceptor* a : std::vector(w->acceptors)) {
      error_code ec;
      if (a->local_endpoint(ec) == ep) release(*a);
    }
  });
  worker_->wake();
}

void Forwarder::configure(ForwarderSettings next) {
  worker_->listener_tcp = next.tcp;
  next.relay.engine = worker_->engine;  // the engine runs until the next restart
  asio::post(*worker_->io, [w = worker_.get(), next = std::move(next)]() mutable {
    w->balancer.set_policy(next.balance);
    w->settings = std::move(next);
  });
  worker_->wake();
}

void Forwarder::close_target(std::shared_ptr<const healthcheck::TargetStats> target) {
  asio::post(*worker_->io, [w = worker_.get(), target = std::move(target)] {
    w->for_each_connection([&](Connection& c) {
      if (c.connected_to(target.get())) c.abort();
    });
  });
  worker_->wake();
}

const WorkerStats& Forwarder::stats() const noexcept { return worker_->stats; }

void Forwarder::run() {
  if (worker_->engine == config::Engine::uring) return run_uring(*worker_);
  auto guard = asio::make_work_guard(*worker_->io);
  worker_->io->run();
}

void Forwarder::publish(TargetSetPtr next, std::size_t pool) {
  asio::post(*worker_->io, [w = worker_.get(), next = std::move(next), pool]() mutable {
    if (w->targets.size() <= pool) w->targets.resize(pool + 1);
    w->targets[pool] = next;
    // A connection of another pool never matches: its target's counters are its pool's own.
    w->for_each_connection([&](Connection& c) {
      if (c.must_close(*next)) c.target_down();
    });
  });
  worker_->wake();
}

void Forwarder::stop_accepting() {
  asio::post(*worker_->io, [w = worker_.get()] {
    if (w->uring) uring_stop_accepting(*w);
    for (tcp::acceptor* a : std::vector(w->acceptors)) release(*a);
  });
  worker_->wake();
}

void Forwarder::close_oldest(std::shared_ptr<const healthcheck::TargetStats> target,
                             std::shared_ptr<std::atomic<int>> budget) {
  asio::post(*worker_->io, [w = worker_.get(), target = std::move(target), budget] {
    // The list is in accept order: the oldest connections first.
    w->for_each_connection([&](Connection& c) {
      if (!c.connected_to(target.get()) || budget->fetch_sub(1) <= 0) return;
      w->shared.rebalanced.fetch_add(1, std::memory_order_relaxed);
      c.abort();
    });
  });
  worker_->wake();
}

void Forwarder::close_all() {
  asio::post(*worker_->io,
             [w = worker_.get()] { w->for_each_connection([](Connection& c) { c.abort(); }); });
  worker_->wake();
}

void Forwarder::stop() {
  worker_->io->stop();
  worker_->wake();
}

}  // namespace apilb::lb
