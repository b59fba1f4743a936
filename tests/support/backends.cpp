#include "tests/support/backends.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <exception>
#include <future>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "tests/support/wait.hpp"

namespace apilb::test {

namespace asio = boost::asio;
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// A test helper's coroutine that throws is a bug in the helper: make it loud.
void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

tcp::endpoint local_endpoint_of(int fd) {
  tcp::endpoint endpoint;
  socklen_t len = static_cast<socklen_t>(endpoint.capacity());
  if (::getsockname(fd, endpoint.data(), &len) != 0) throw_errno("getsockname");
  endpoint.resize(len);
  return endpoint;
}

// socket() + SO_REUSEADDR + bind(), close-on-exec so child processes never inherit it.
int bound_socket(const tcp::endpoint& bind, int flags = 0) {
  const int fd = ::socket(bind.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  if (fd < 0) throw_errno("socket");
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(fd, bind.data(), static_cast<socklen_t>(bind.size())) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    throw_errno("bind " + bind.address().to_string() + ":" + std::to_string(bind.port()));
  }
  return fd;
}

}  // namespace

namespace detail {

// The engine behind LoopbackServer. Sockets and the connection table are only touched on the
// loop thread; the public methods post there and wait.
class FakeServer {
 public:
  FakeServer(Behaviour behaviour, const tcp::endpoint& bind)
      : behaviour_(behaviour), work_(ioc_.get_executor()), acceptor_(ioc_) {
    acceptor_.open(bind.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(bind);
    acceptor_.listen();
    endpoint_ = acceptor_.local_endpoint();
    asio::co_spawn(ioc_, accept_loop(), rethrow);
    thread_ = std::thread([this] { ioc_.run(); });
  }

  ~FakeServer() {
    stop();
    work_.reset();  // the closed sockets' aborted operations finish, then run() returns
    thread_.join();
  }

  tcp::endpoint endpoint() const { return endpoint_; }
  std::uint64_t accepted() const { return accepted_.load(); }
  std::uint64_t active() const { return active_.load(); }

  void close_all(bool reset) {
    on_loop([this, reset] { close_connections(reset); });
  }

  void stop() {
    on_loop([this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      close_connections(false);
    });
  }

 private:
  using SocketPtr = std::shared_ptr<tcp::socket>;

  // Runs `fn` on the loop thread and returns once it has run.
  template <class Fn>
  void on_loop(Fn fn) {
    std::promise<void> done;
    asio::post(ioc_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  void close_connections(bool reset) {
    for (auto& [id, socket] : connections_) {
      boost::system::error_code ignored;
      if (reset) socket->set_option(asio::socket_base::linger(true, 0), ignored);
      socket->close(ignored);
    }
    active_ -= connections_.size();
    connections_.clear();
  }

  // Called when a connection's coroutine ends; a no-op when close_all() got there first.
  void forget(std::uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    boost::system::error_code ignored;
    it->second->close(ignored);
    connections_.erase(it);
    --active_;
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_nothrow);
      if (!acceptor_.is_open() || ec == asio::error::operation_aborted) co_return;
      if (ec) {  // EMFILE and friends: back off instead of spinning
        asio::steady_timer pause(ioc_, std::chrono::milliseconds(10));
        co_await pause.async_wait(use_nothrow);
        continue;
      }
      const std::uint64_t id = next_id_++;
      auto shared = std::make_shared<tcp::socket>(std::move(socket));
      connections_.emplace(id, shared);
      ++accepted_;
      ++active_;
      if (behaviour_ == Behaviour::echo) {
        asio::co_spawn(ioc_, echo(id, std::move(shared)), rethrow);
      } else {
        asio::co_spawn(ioc_, hold(id, std::move(shared)), rethrow);
      }
    }
  }

  asio::awaitable<void> echo(std::uint64_t id, SocketPtr socket) {
    std::array<char, 16 * 1024> buffer;
    for (;;) {
      auto [ec, n] = co_await socket->async_read_some(asio::buffer(buffer), use_nothrow);
      if (ec == asio::error::eof) {
        boost::system::error_code ignored;
        socket->shutdown(tcp::socket::shutdown_send, ignored);
        break;
      }
      if (ec) break;
      auto [write_ec, written] =
          co_await asio::async_write(*socket, asio::buffer(buffer, n), use_nothrow);
      if (write_ec) break;
    }
    forget(id);
  }

  // Never reads: waits only for an error (a client's RST) or for close_all()/stop().
  asio::awaitable<void> hold(std::uint64_t id, SocketPtr socket) {
    co_await socket->async_wait(tcp::socket::wait_error, use_nothrow);
    forget(id);
  }

  const Behaviour behaviour_;
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> active_{0};
  // Declared after the counters: destroyed before them, with any coroutine frames it still owns.
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  tcp::acceptor acceptor_;
  tcp::endpoint endpoint_;
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, SocketPtr> connections_;
  std::thread thread_;
};

}  // namespace detail

LoopbackServer::LoopbackServer(detail::Behaviour behaviour, const tcp::endpoint& bind)
    : server_(std::make_unique<detail::FakeServer>(behaviour, bind)) {}
LoopbackServer::~LoopbackServer() = default;

tcp::endpoint LoopbackServer::endpoint() const { return server_->endpoint(); }
std::uint64_t LoopbackServer::accepted() const { return server_->accepted(); }
std::uint64_t LoopbackServer::active() const { return server_->active(); }
void LoopbackServer::close_all() { server_->close_all(false); }
void LoopbackServer::reset_all() { server_->close_all(true); }
void LoopbackServer::stop() { server_->stop(); }

RefusingTarget::RefusingTarget(const tcp::endpoint& bind)
    : fd_(bound_socket(bind)), endpoint_(local_endpoint_of(fd_)) {}

RefusingTarget::~RefusingTarget() { ::close(fd_); }

BlackholeTarget::BlackholeTarget(const tcp::endpoint& bind) : listen_fd_(bound_socket(bind)) {
  try {
    endpoint_ = local_endpoint_of(listen_fd_);
    if (::listen(listen_fd_, 0) != 0) throw_errno("listen");
    // Linux drops a SYN when the accept queue holds more than `backlog` connections; TCP_INFO on a
    // listener reports the queue length (tcpi_unacked) and the backlog (tcpi_sacked). Connect our
    // own fillers until it is full. A filler that does not connect at all means SYNs are already
    // being dropped (e.g. syncookies off and backlog 0): blackholed either way.
    const auto queued = [this] {  // {connections in the accept queue, backlog}
      tcp_info info{};
      socklen_t len = sizeof info;
      if (::getsockopt(listen_fd_, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
        throw_errno("TCP_INFO");
      return std::pair{info.tcpi_unacked, info.tcpi_sacked};
    };
    for (auto [length, backlog] = queued(); length <= backlog;
         std::tie(length, backlog) = queued()) {
      if (fillers_.size() >= 16)
        throw std::runtime_error("BlackholeTarget: accept queue never filled");
      const int fd =
          ::socket(endpoint_.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) throw_errno("socket");
      fillers_.push_back(fd);
      if (::connect(fd, endpoint_.data(), static_cast<socklen_t>(endpoint_.size())) != 0 &&
          errno != EINPROGRESS) {
        throw_errno("connect filler");
      }
      pollfd pfd{fd, POLLOUT, 0};
      if (::poll(&pfd, 1, 200) == 0) break;  // our own SYN was dropped: already a blackhole
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) throw std::system_error(err, std::generic_category(), "connect filler");
      // The client side completes a moment before the server side queues the connection.
      if (!wait_until([&, before = length] { return queued().first > before; },
                      std::chrono::seconds(2), std::chrono::milliseconds(1))) {
        throw std::runtime_error("BlackholeTarget: filler connected but never queued");
      }
    }
  } catch (...) {
    for (int fd : fillers_) ::close(fd);
    ::close(listen_fd_);
    throw;
  }
}

BlackholeTarget::~BlackholeTarget() {
  for (int fd : fillers_) ::close(fd);
  ::close(listen_fd_);
}

}  // namespace apilb::test
