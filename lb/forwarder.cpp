#include "lb/forwarder.hpp"

#include "lb/balance.hpp"
#include "lb/log_limit.hpp"
#include "lb/pools.hpp"
#include "lb/socket_options.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/intrusive/list.hpp>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>

namespace apilb::lb {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using healthcheck::Target;
using healthcheck::TargetSetPtr;

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr int kAcceptBatch = 64;
constexpr std::size_t kSpliceChunk = 64 * 1024;  // a default pipe holds 16 pages
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// What one relay step ended with.
enum class Flow { more, idle, eof, error };

bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

std::string describe(const error_code& ec) {
  if (ec == asio::error::timed_out) return "connect timeout";
  if (ec == asio::error::connection_refused) return "connection refused";
  return ec.message();
}

}  // namespace

ForwarderSettings ForwarderSettings::from(const config::Config& c) {
  ForwarderSettings s;
  s.balance = c.balance;
  s.connect_timeout = c.upstream.connect_timeout;
  s.panic_connect_timeout = std::min<config::Duration>(c.upstream.connect_timeout,
                                                       std::chrono::milliseconds(500));
  s.retries = c.upstream.retries;
  s.max_connections = c.limits.max_connections;
  s.tcp = c.tcp;
  s.relay = c.relay;
  return s;
}

// A proxied connection. Lives in its serve() coroutine frame; linked into its worker's list so the
// worker can close it (target down, shutdown). Both pumps refer to it by reference.
struct Connection : boost::intrusive::list_base_hook<
                        boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
  Connection(tcp::socket c, tcp::socket u) : client(std::move(c)), upstream(std::move(u)) {}

  // Closing both sockets completes every pending wait with operation_aborted, which ends the pumps.
  void abort() noexcept {
    error_code ignored;
    client.close(ignored);
    upstream.close(ignored);
  }

  tcp::socket client;
  tcp::socket upstream;
  const Target* target = nullptr;  // owned by the snapshot serve() pins
};

struct Forwarder::Impl {
  Impl(ForwarderSettings s, ForwarderShared& sh)
      : settings(std::move(s)),
        shared(sh),
        balancer(settings.balance, reinterpret_cast<std::uintptr_t>(this)),
        buffers(settings.relay.buffer_size),
        listener_tcp(settings.tcp) {}

  ~Impl() {
    // Destroy the coroutine frames (acceptors and connections with them) while everything they
    // refer to is still alive.
    io.reset();
  }

  awaitable<void> accept_loop(std::unique_ptr<tcp::acceptor> acceptor);
  awaitable<void> serve(int fd, tcp protocol);
  awaitable<error_code> connect(tcp::socket& socket, const Target& target,
                                config::Duration timeout);
  awaitable<void> pump(Connection& c, bool to_upstream);
  awaitable<Flow> copy_some(tcp::socket& from, tcp::socket& to, std::uint64_t& moved, bool& bulk);
  awaitable<Flow> splice_some(tcp::socket& from, tcp::socket& to, std::uint64_t& moved);
  awaitable<bool> wait_writable(tcp::socket& to);
  void spawn(awaitable<void> task);

  ForwarderSettings settings;
  ForwarderShared& shared;
  WorkerStats stats;
  Balancer balancer;
  BufferPool buffers;
  PipePool pipes;
  TargetSetPtr targets;
  boost::intrusive::list<Connection, boost::intrusive::constant_time_size<false>> connections;
  LogLimit accept_errors;
  LogLimit connect_errors;
  LogLimit no_target;
  LogLimit over_limit;
  std::optional<asio::io_context> io{std::in_place, 1};
  std::vector<tcp::acceptor*> acceptors;  // owned by their accept loops
  config::Tcp listener_tcp;               // the control thread's copy, for listen()
};

void Forwarder::Impl::spawn(awaitable<void> task) {
  asio::co_spawn(*io, std::move(task), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::critical("bug: exception escaped a connection coroutine: {}", ex.what());
    }
  });
}

awaitable<void> Forwarder::Impl::accept_loop(std::unique_ptr<tcp::acceptor> owned) {
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
      const int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (would_block(err)) break;
        if (err == EINTR || err == ECONNABORTED) continue;
        // Out of descriptors or memory: the connection waits in the backlog until we recover.
        if (accept_errors.allow())
          spdlog::error("accept on {}: {}; backing off{}",
                        acceptor.local_endpoint().address().to_string(), std::strerror(err),
                        accept_errors.suppressed());
        asio::steady_timer backoff(*io, kAcceptBackoff);
        co_await backoff.async_wait(use_nothrow);
        break;
      }
      const auto open = shared.connections.fetch_add(1, std::memory_order_relaxed) + 1;
      if (open > static_cast<std::int64_t>(settings.max_connections)) {
        shared.connections.fetch_sub(1, std::memory_order_relaxed);
        shared.rejected.fetch_add(1, std::memory_order_relaxed);
        ::close(fd);
        if (over_limit.allow())
          spdlog::warn("max_connections ({}) reached: closing new connections{}",
                       settings.max_connections, over_limit.suppressed());
        continue;
      }
      spawn(serve(fd, protocol));
    }
  }
}

awaitable<error_code> Forwarder::Impl::connect(tcp::socket& socket, const Target& target,
                                               config::Duration timeout) {
  using namespace asio::experimental::awaitable_operators;
  error_code ec;
  socket.open(target.endpoint.protocol(), ec);
  if (ec) co_return ec;
  tune_tcp(socket.native_handle(), settings.tcp);
  asio::steady_timer timer(*io, timeout);
  auto result = co_await (socket.async_connect(target.endpoint, use_nothrow) ||
                          timer.async_wait(use_nothrow));
  if (result.index() == 1) co_return asio::error::timed_out;
  co_return std::get<0>(std::get<0>(result));
}

awaitable<void> Forwarder::Impl::serve(int fd, tcp protocol) {
  Connection c{tcp::socket(*io), tcp::socket(*io)};
  struct Release {
    ForwarderShared& shared;
    ~Release() { shared.connections.fetch_sub(1, std::memory_order_relaxed); }
  } release{shared};
  error_code ec;
  c.client.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    co_return;
  }
  connections.push_back(c);

  // Pin the snapshot: the Target we pick stays valid however often the control thread publishes.
  const TargetSetPtr pinned = targets;
  if (!pinned || pinned->eligible().empty()) {
    shared.failed.fetch_add(1, std::memory_order_relaxed);
    if (no_target.allow())
      spdlog::error("no target configured: closing client connection{}", no_target.suppressed());
    co_return;
  }
  const bool panic = pinned->panic();
  const auto timeout = panic ? settings.panic_connect_timeout : settings.connect_timeout;
  const std::size_t attempts =
      panic ? pinned->eligible().size() : static_cast<std::size_t>(settings.retries) + 1;
  Tried tried;
  while (tried.size() < attempts) {
    const auto index = balancer.pick(*pinned, tried);
    if (!index) break;
    tried.add(*index);
    const Target& target = pinned->targets()[*index];
    const error_code failure = co_await connect(c.upstream, target, timeout);
    if (!failure) {
      c.target = &target;
      break;
    }
    if (!c.client.is_open()) co_return;  // closed by shutdown while connecting
    // No socket at all (EMFILE, ENFILE, ENOBUFS): our shortage, not the target's fault. Do not
    // count it against the target nor try the others, which would fail the same way.
    if (!c.upstream.is_open()) break;
    c.upstream.close(ec);
    target.stats->connect_failures.fetch_add(1, std::memory_order_relaxed);
    const std::string reason = describe(failure);
    if (connect_errors.allow())
      spdlog::warn("connect to {} failed: {}; trying another target{}", target.name, reason,
                   connect_errors.suppressed());
    if (shared.on_connect_failure) shared.on_connect_failure(target, reason);
  }
  if (!c.target) {
    shared.failed.fetch_add(1, std::memory_order_relaxed);
    if (no_target.allow())
      spdlog::error("no target reachable after {} attempts: closing client connection{}",
                    tried.size(), no_target.suppressed());
    co_return;
  }

  auto& stats = *c.target->stats;
  stats.total.fetch_add(1, std::memory_order_relaxed);
  stats.active.fetch_add(1, std::memory_order_relaxed);
  {
    using namespace asio::experimental::awaitable_operators;
    co_await (pump(c, true) && pump(c, false));
  }
  stats.active.fetch_sub(1, std::memory_order_relaxed);
}

// Moves one direction until its source ends. The source is read only once it is readable, and a
// buffer or pipe is held only while bytes are in flight: an idle connection costs two sockets and
// this frame. A FIN is passed on as a write shutdown (half-close); an error aborts both directions.
awaitable<void> Forwarder::Impl::pump(Connection& c, bool to_upstream) {
  tcp::socket& from = to_upstream ? c.client : c.upstream;
  tcp::socket& to = to_upstream ? c.upstream : c.client;
  auto& target_bytes = to_upstream ? c.target->stats->bytes_upstream : c.target->stats->bytes_downstream;
  bool splice = settings.relay.splice == config::SpliceMode::always;
  // Bytes moved since the last flush to the target's shared counter: one atomic add per burst,
  // not per read.
  std::uint64_t moved = 0;
  auto flush = [&] {
    if (moved) target_bytes.fetch_add(std::exchange(moved, 0), std::memory_order_relaxed);
  };
  for (;;) {
    bool bulk = false;
    const Flow flow = splice ? co_await splice_some(from, to, moved)
                             : co_await copy_some(from, to, moved, bulk);
    switch (flow) {
      case Flow::more:
        // A full buffer means a bulk transfer: from now on move it with splice(2), as HAProxy's
        // splice-auto does.
        if (bulk && settings.relay.splice == config::SpliceMode::automatic) splice = true;
        continue;
      case Flow::idle: {
        flush();
        auto [ec] = co_await from.async_wait(tcp::socket::wait_read, use_nothrow);
        if (!ec) continue;
        if (ec != asio::error::operation_aborted) c.abort();
        co_return;
      }
      case Flow::eof: {
        flush();
        error_code ignored;
        to.shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
      case Flow::error:
        flush();
        c.abort();
        co_return;
    }
  }
}

awaitable<bool> Forwarder::Impl::wait_writable(tcp::socket& to) {
  auto [ec] = co_await to.async_wait(tcp::socket::wait_write, use_nothrow);
  co_return !ec;
}

awaitable<Flow> Forwarder::Impl::copy_some(tcp::socket& from, tcp::socket& to,
                                           std::uint64_t& moved, bool& bulk) {
  auto buffer = buffers.take();
  const std::size_t size = buffers.buffer_size();
  ssize_t n;
  do n = ::recv(from.native_handle(), buffer.get(), size, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    buffers.give(std::move(buffer));
    if (n == 0) co_return Flow::eof;
    co_return would_block(errno) ? Flow::idle : Flow::error;
  }
  bulk = static_cast<std::size_t>(n) == size;
  for (std::size_t sent = 0; sent < static_cast<std::size_t>(n);) {
    const ssize_t m = ::send(to.native_handle(), buffer.get() + sent, n - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (m >= 0) {
      sent += m;
    } else if (errno == EINTR) {
      continue;
    } else if (!would_block(errno) || !co_await wait_writable(to)) {
      buffers.give(std::move(buffer));
      co_return Flow::error;
    }
  }
  buffers.give(std::move(buffer));
  WorkerStats::add(stats.bytes_copied, n);
  moved += n;
  co_return Flow::more;
}

awaitable<Flow> Forwarder::Impl::splice_some(tcp::socket& from, tcp::socket& to,
                                             std::uint64_t& moved) {
  const Pipe pipe = pipes.take();
  if (!pipe) {
    // Out of descriptors: fall back to one buffered step rather than failing the connection.
    bool bulk = false;
    co_return co_await copy_some(from, to, moved, bulk);
  }
  ssize_t n;
  do n = ::splice(from.native_handle(), nullptr, pipe.write, nullptr, kSpliceChunk,
                  SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    const int err = errno;
    pipes.give(pipe);  // nothing entered it
    if (n == 0) co_return Flow::eof;
    co_return would_block(err) ? Flow::idle : Flow::error;
  }
  for (std::size_t pending = n; pending > 0;) {
    const ssize_t m = ::splice(pipe.read, nullptr, to.native_handle(), nullptr, pending,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m > 0) {
      pending -= m;
    } else if (m < 0 && errno == EINTR) {
      continue;
    } else if (m == 0 || !would_block(errno) || !co_await wait_writable(to)) {
      PipePool::close(pipe);  // it still holds bytes nobody will read
      co_return Flow::error;
    }
  }
  pipes.give(pipe);
  WorkerStats::add(stats.bytes_spliced, n);
  moved += n;
  co_return Flow::more;
}

Forwarder::Forwarder(ForwarderSettings settings, ForwarderShared& shared)
    : impl_(std::make_unique<Impl>(std::move(settings), shared)) {
  ignore_sigpipe();
}

Forwarder::~Forwarder() = default;

tcp::endpoint Forwarder::listen(const tcp::endpoint& ep) {
  auto acceptor = std::make_unique<tcp::acceptor>(*impl_->io);
  error_code ec;
  acceptor->open(ep.protocol(), ec);
  if (!ec) {
    const int fd = acceptor->native_handle();
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // Like nginx: a v6 listener is v6 only, so [::]:6443 and 0.0.0.0:6443 can coexist.
    if (ep.protocol() == tcp::v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    tune_tcp(fd, impl_->listener_tcp);  // inherited by every accepted socket
    acceptor->bind(ep, ec);
  }
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::ostringstream where;
    where << ep;
    throw std::system_error(ec, "cannot listen on " + where.str());
  }
  const tcp::endpoint bound = acceptor->local_endpoint();
  asio::post(*impl_->io, [impl = impl_.get(), a = std::move(acceptor)]() mutable {
    impl->spawn(impl->accept_loop(std::move(a)));
  });
  return bound;
}

void Forwarder::unlisten(const tcp::endpoint& ep) {
  asio::post(*impl_->io, [impl = impl_.get(), ep] {
    for (tcp::acceptor* a : impl->acceptors) {
      error_code ec;
      if (a->local_endpoint(ec) == ep) a->close(ec);
    }
  });
}

void Forwarder::configure(ForwarderSettings next) {
  impl_->listener_tcp = next.tcp;
  asio::post(*impl_->io, [impl = impl_.get(), next = std::move(next)]() mutable {
    impl->balancer.set_policy(next.balance);
    impl->settings = std::move(next);
  });
}

void Forwarder::close_target(std::shared_ptr<const healthcheck::TargetStats> target) {
  asio::post(*impl_->io, [impl = impl_.get(), target = std::move(target)] {
    for (Connection& c : impl->connections)
      if (c.target && c.target->stats.get() == target.get()) c.abort();
  });
}

const WorkerStats& Forwarder::stats() const noexcept { return impl_->stats; }

void Forwarder::run() {
  auto guard = asio::make_work_guard(*impl_->io);
  impl_->io->run();
}

void Forwarder::publish(TargetSetPtr next) {
  asio::post(*impl_->io, [impl = impl_.get(), next = std::move(next)]() mutable {
    impl->targets = std::move(next);
    for (Connection& c : impl->connections)
      if (c.target && impl->targets->must_close(c.target->stats.get())) c.abort();
  });
}

void Forwarder::stop_accepting() {
  asio::post(*impl_->io, [impl = impl_.get()] {
    for (tcp::acceptor* a : impl->acceptors) {
      error_code ignored;
      a->close(ignored);
    }
  });
}

void Forwarder::close_all() {
  asio::post(*impl_->io, [impl = impl_.get()] {
    for (Connection& c : impl->connections) c.abort();
  });
}

void Forwarder::stop() { impl_->io->stop(); }

}  // namespace apilb::lb
