#pragma once

// In-process loopback fakes for upstream apiservers. Each binds 127.0.0.1 port 0 unless given an
// endpoint (pass a stopped fake's endpoint() to bring a target "back" on the same port).

#include <cstdint>
#include <memory>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

namespace apilb::test {

using tcp = boost::asio::ip::tcp;

// 127.0.0.1:`port` (port 0: the kernel picks one).
inline tcp::endpoint loopback(std::uint16_t port = 0) {
  return {boost::asio::ip::address_v4::loopback(), port};
}
// [::1]:`port`.
inline tcp::endpoint loopback_v6(std::uint16_t port = 0) {
  return {boost::asio::ip::address_v6::loopback(), port};
}

namespace detail {
class FakeServer;
enum class Behaviour { echo, never_read };
}  // namespace detail

// A listener with its own io_context on its own thread. Every method may be called from any
// thread; close_all(), reset_all() and stop() have taken effect when they return. The destructor
// closes everything and joins the thread. Counters lag the client: after a connect completes,
// wait_until(accepted() == n) before relying on them.
class LoopbackServer {
 public:
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;
  ~LoopbackServer();

  tcp::endpoint endpoint() const;  // the bound address, also after stop()
  std::uint16_t port() const { return endpoint().port(); }
  std::uint64_t accepted() const;  // connections accepted since construction
  std::uint64_t active() const;    // connections currently held open

  void close_all();  // closes every established connection (FIN); keeps listening
  void reset_all();  // aborts every established connection (RST, SO_LINGER 0); keeps listening
  void stop();       // close_all() and close the listener: later connects are refused

 protected:
  LoopbackServer(detail::Behaviour behaviour, const tcp::endpoint& bind);

 private:
  std::unique_ptr<detail::FakeServer> server_;
};

// Echoes every byte back. Honours half-close: when the client shuts down its write side, it
// finishes echoing, shuts down its own write side and closes (a relay must carry both FINs).
class EchoBackend : public LoopbackServer {
 public:
  explicit EchoBackend(const tcp::endpoint& bind = loopback())
      : LoopbackServer(detail::Behaviour::echo, bind) {}
};

// Accepts and then never reads nor writes: a hung process behind a live kernel. Connects and
// writes (until the buffers fill) succeed, nothing ever comes back. It never reads, so it cannot
// see a client's FIN: active() only drops on close_all()/stop() or a client's RST.
class NeverReadsBackend : public LoopbackServer {
 public:
  explicit NeverReadsBackend(const tcp::endpoint& bind = loopback())
      : LoopbackServer(detail::Behaviour::never_read, bind) {}
};

// A reserved port nobody listens on: bound, never listening, so connects are refused (RST) at
// once, and no other test can take the port while this object lives. No thread; not copyable.
class RefusingTarget {
 public:
  explicit RefusingTarget(const tcp::endpoint& bind = loopback());
  RefusingTarget(const RefusingTarget&) = delete;
  RefusingTarget& operator=(const RefusingTarget&) = delete;
  ~RefusingTarget();

  tcp::endpoint endpoint() const { return endpoint_; }
  std::uint16_t port() const { return endpoint_.port(); }

 private:
  int fd_ = -1;
  tcp::endpoint endpoint_;
};

// A listener that never accepts and whose accept queue is full (listen backlog 0, filled by a
// connection of our own), so the kernel drops further SYNs and connects time out instead of being
// refused: a silently blackholed master, for connect timeouts. No thread; not copyable.
class BlackholeTarget {
 public:
  explicit BlackholeTarget(const tcp::endpoint& bind = loopback());
  BlackholeTarget(const BlackholeTarget&) = delete;
  BlackholeTarget& operator=(const BlackholeTarget&) = delete;
  ~BlackholeTarget();

  tcp::endpoint endpoint() const { return endpoint_; }
  std::uint16_t port() const { return endpoint_.port(); }

 private:
  int listen_fd_ = -1;
  std::vector<int> fillers_;
  tcp::endpoint endpoint_;
};

}  // namespace apilb::test
