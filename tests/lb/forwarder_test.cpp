// Loopback component tests of the forwarder: real sockets, in-process workers and fake backends.
#include "lb/forwarder.hpp"

#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <thread>

namespace apilb::lb {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using healthcheck::Target;
using healthcheck::TargetState;
using namespace std::chrono_literals;
using test::wait_until;

constexpr auto kDeadline = 10s;

Target make_target(const tcp::endpoint& ep, TargetState state = TargetState::up) {
  Target t;
  t.address = config::Address{ep.address().to_string(), ep.port()};
  t.name = t.address.to_string();
  t.endpoint = ep;
  t.state = state;
  return t;
}

// In-process workers in front of the given targets, listening on 127.0.0.1 port 0.
class Balancer {
 public:
  // `on_connect_failure` is installed before the workers start (they read it unsynchronised).
  explicit Balancer(
      std::vector<Target> targets, ForwarderSettings settings = {}, unsigned workers = 1,
      std::function<void(const Target&, std::string_view, bool)> on_connect_failure = {})
      : targets_(std::move(targets)) {
    shared_.on_connect_failure = std::move(on_connect_failure);
    // The suite runs once per engine (ctest sets APILB_RELAY_ENGINE; unset: the default, auto).
    if (const char* engine = std::getenv("APILB_RELAY_ENGINE"); engine && *engine)
      settings.relay.engine = config::parse_engine(engine).value();
    endpoint_ = test::loopback();
    for (unsigned i = 0; i < workers; ++i) {
      workers_.push_back(std::make_unique<Forwarder>(settings, shared_));
      endpoint_ = workers_.back()->listen(endpoint_).endpoint;  // the others share its port
    }
    publish(targets_);
    for (auto& w : workers_) threads_.emplace_back([&w] { w->run(); });
  }
  ~Balancer() {
    for (auto& w : workers_) w->stop();
    threads_.clear();
  }

  void publish(const std::vector<Target>& targets) {
    auto set = std::make_shared<const healthcheck::TargetSet>(++generation_, targets, true);
    for (auto& w : workers_) w->publish(set);
  }
  tcp::endpoint endpoint() const { return endpoint_; }
  ForwarderShared& shared() { return shared_; }
  const Target& target(std::size_t i) const { return targets_[i]; }
  std::int64_t active(std::size_t i) const { return targets_[i].stats->active.load(); }
  std::uint64_t bytes_spliced() const {
    std::uint64_t n = 0;
    for (auto& w : workers_) n += w->stats().bytes_spliced.load();
    return n;
  }
  std::uint64_t bytes_copied() const {
    std::uint64_t n = 0;
    for (auto& w : workers_) n += w->stats().bytes_copied.load();
    return n;
  }
  Forwarder& worker(std::size_t i) { return *workers_[i]; }

 private:
  std::vector<Target> targets_;
  ForwarderShared shared_;
  std::vector<std::unique_ptr<Forwarder>> workers_;
  std::vector<std::jthread> threads_;
  tcp::endpoint endpoint_;
  std::uint64_t generation_ = 0;
};

// A blocking client connection through the balancer.
class Client {
 public:
  explicit Client(const tcp::endpoint& ep) : socket_(io_) { socket_.connect(ep); }
  // Sends `text` and reads the same number of bytes back.
  std::string echo(std::string_view text) {
    asio::write(socket_, asio::buffer(text));
    std::string reply(text.size(), '\0');
    asio::read(socket_, asio::buffer(reply));
    return reply;
  }
  // Reads until the balancer closes the connection; true when it did (EOF or reset).
  bool closed_by_peer(std::chrono::milliseconds deadline) {
    return wait_until(
        [&] {
          std::array<char, 64> buf;
          boost::system::error_code ec;
          socket_.non_blocking(true);
          socket_.read_some(asio::buffer(buf), ec);
          return ec && ec != asio::error::would_block;
        },
        deadline);
  }
  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
};

ForwarderSettings settings_with(config::Balance balance) {
  ForwarderSettings s;
  s.balance = balance;
  return s;
}

TEST(Forwarder, RelaysBothWaysAndPropagatesHalfClose) {
  test::EchoBackend backend;
  Balancer lb({make_target(backend.endpoint())});
  const auto reply =
      test::fetch(lb.endpoint(), "hello, apiserver", kDeadline, test::AfterSend::shut_down_write);
  EXPECT_FALSE(reply.error) << reply.error.message();  // the backend's FIN came back: EOF
  EXPECT_EQ(reply.data, "hello, apiserver");
}

// Says its piece and ends the connection right after, with a FIN or a RST, so that both usually
// reach the balancer together, in one epoll wake-up. It speaks either first, as soon as it accepts
// (its greeting may then arrive in the very wake-up that completes the balancer's connect), or
// once the client's first bytes are in (a RST straight after accepting would fail the connect).
class Greeter {
 public:
  enum class End { fin, reset };
  enum class Speaks { first, second };
  static constexpr std::string_view kGreeting = "220 hello";

  Greeter(Speaks speaks, End end) : speaks_(speaks), end_(end) {
    listener_.open(tcp::v4());
    listener_.bind(test::loopback());
    listener_.listen();
    thread_ = std::jthread([this] { serve(); });
  }
  ~Greeter() {
    ::shutdown(listener_.native_handle(), SHUT_RDWR);  // wakes the blocked accept()
    thread_.join();
  }
  tcp::endpoint endpoint() const { return listener_.local_endpoint(); }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept4(listener_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      char request[64];
      if (speaks_ == Speaks::second && ::recv(fd, request, sizeof request, 0) <= 0) {
        ::close(fd);
        continue;
      }
      ::send(fd, kGreeting.data(), kGreeting.size(), MSG_NOSIGNAL);
      if (end_ == End::reset) {
        const linger abort{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
      }
      ::close(fd);
    }
  }

  Speaks speaks_;
  End end_;
  asio::io_context io_;
  tcp::acceptor listener_{io_};
  std::jthread thread_;
};

// The relay waits for the next epoll edge without re-arming (Waiter in forwarder.cpp): these are
// the cases where that edge has already passed when the last read returns, so the read itself
// must tell that the peer has finished (TCP_INQ for a FIN, the wake-up's events for a RST).
// 300 connections, each sending `request`: every one must get the greeting, then the end.
void expect_greeting_then_eof(Greeter::Speaks speaks, std::string_view request) {
  Greeter backend(speaks, Greeter::End::fin);
  Balancer lb({make_target(backend.endpoint())});
  for (int i = 0; i < 300; ++i) {
    const auto reply = test::fetch(lb.endpoint(), request, 2s);
    ASSERT_FALSE(reply.error) << "connection " << i << ": " << reply.error.message();
    ASSERT_EQ(reply.data, Greeter::kGreeting) << "connection " << i;
  }
}

TEST(Forwarder, PassesOnAGreetingAndAFinThatArriveTogether) {
  expect_greeting_then_eof(Greeter::Speaks::first, "");
}

TEST(Forwarder, PassesOnAnAnswerAndAFinThatArriveTogether) {
  expect_greeting_then_eof(Greeter::Speaks::second, "EHLO");
}

TEST(Forwarder, ClosesTheClientWhenAnAnswerAndAResetArriveTogether) {
  Greeter backend(Greeter::Speaks::second, Greeter::End::reset);
  Balancer lb({make_target(backend.endpoint())});
  for (int i = 0; i < 300; ++i) {
    const auto reply = test::fetch(lb.endpoint(), "EHLO", 2s);
    ASSERT_NE(reply.error, asio::error::timed_out) << "connection " << i << " was left open";
  }
}

TEST(Forwarder, RoundRobinSpreadsConnectionsEvenlyOverThreeTargets) {
  std::array<test::EchoBackend, 3> backends;
  Balancer lb({make_target(backends[0].endpoint()), make_target(backends[1].endpoint()),
               make_target(backends[2].endpoint())},
              settings_with(config::Balance::round_robin));
  for (int i = 0; i < 30; ++i) {
    Client c(lb.endpoint());
    ASSERT_EQ(c.echo("ping"), "ping");
  }
  for (auto& b : backends) EXPECT_EQ(b.accepted(), 10u);
}

TEST(Forwarder, LeastConnectionsSendsNewConnectionsToTheLeastLoadedTarget) {
  std::array<test::EchoBackend, 3> backends;
  Balancer lb({make_target(backends[0].endpoint()), make_target(backends[1].endpoint()),
               make_target(backends[2].endpoint())},
              settings_with(config::Balance::least_connections));
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Client>(lb.endpoint()));
    ASSERT_EQ(held.back()->echo("x"), "x");
  }
  for (std::size_t i = 0; i < 3; ++i) ASSERT_EQ(lb.active(i), 1) << "target " << i;

  // Close one client: its target is now the least loaded, so the next connection must go there.
  held.front().reset();
  ASSERT_TRUE(
      wait_until([&] { return lb.active(0) + lb.active(1) + lb.active(2) == 2; }, kDeadline));
  const std::size_t idle = lb.active(0) == 0 ? 0 : lb.active(1) == 0 ? 1 : 2;
  ASSERT_EQ(lb.active(idle), 0);
  held.push_back(std::make_unique<Client>(lb.endpoint()));
  ASSERT_EQ(held.back()->echo("y"), "y");
  EXPECT_EQ(backends[idle].accepted(), 2u);
  held.push_back(std::make_unique<Client>(lb.endpoint()));
  ASSERT_EQ(held.back()->echo("y"), "y");
  std::int64_t total = 0;
  for (std::size_t i = 0; i < 3; ++i) total += lb.active(i);
  EXPECT_EQ(total, 4);
  EXPECT_LE(std::max({lb.active(0), lb.active(1), lb.active(2)}), 2);
}

TEST(Forwarder, RandomTwoKeepsLoadWithinTwoConnectionsOfEven) {
  std::array<test::EchoBackend, 3> backends;
  Balancer lb({make_target(backends[0].endpoint()), make_target(backends[1].endpoint()),
               make_target(backends[2].endpoint())},
              settings_with(config::Balance::random_two));
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 60; ++i) {
    held.push_back(std::make_unique<Client>(lb.endpoint()));
    ASSERT_EQ(held.back()->echo("z"), "z");
  }
  const auto [lo, hi] = std::minmax({lb.active(0), lb.active(1), lb.active(2)});
  EXPECT_EQ(lb.active(0) + lb.active(1) + lb.active(2), 60);
  EXPECT_LE(hi - lo, 2) << "loads " << lb.active(0) << "/" << lb.active(1) << "/" << lb.active(2);
}

// Streams `size` pseudo-random bytes through the balancer to an echo backend while reading the
// echo, half-closes, and checks that what came back is byte-exact (same length, same checksum).
void transfer_and_verify(const tcp::endpoint& ep, std::size_t size) {
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(ep);
  auto checksum = [](std::uint64_t h, const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      h = (h ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ULL;
    return h;
  };
  std::uint64_t sent_sum = 0xcbf29ce484222325ULL;
  std::thread writer([&] {
    std::vector<char> chunk(256 * 1024);
    std::uint64_t state = 42;
    for (std::size_t sent = 0; sent < size;) {
      for (char& ch : chunk) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        ch = static_cast<char>(state >> 56);
      }
      const std::size_t n = std::min(chunk.size(), size - sent);
      asio::write(socket, asio::buffer(chunk.data(), n));
      sent_sum = checksum(sent_sum, chunk.data(), n);
      sent += n;
    }
    socket.shutdown(tcp::socket::shutdown_send);
  });
  std::uint64_t received_sum = 0xcbf29ce484222325ULL;
  std::size_t received = 0;
  std::vector<char> buf(256 * 1024);
  boost::system::error_code ec;
  for (;;) {
    const std::size_t n = socket.read_some(asio::buffer(buf), ec);
    received_sum = checksum(received_sum, buf.data(), n);
    received += n;
    if (ec) break;
  }
  writer.join();
  EXPECT_EQ(ec, asio::error::eof);
  EXPECT_EQ(received, size);
  EXPECT_EQ(received_sum, sent_sum);
}

constexpr std::size_t k512MiB = 512ull << 20;

TEST(Forwarder, MovesHalfAGigabyteByteExactThroughSplice) {
  test::EchoBackend backend;
  ForwarderSettings s;
  s.relay.splice = config::SpliceMode::always;
  Balancer lb({make_target(backend.endpoint())}, s);
  transfer_and_verify(lb.endpoint(), k512MiB);
  EXPECT_EQ(lb.bytes_spliced(), 2 * k512MiB);
  EXPECT_EQ(lb.bytes_copied(), 0u);
}

TEST(Forwarder, MovesHalfAGigabyteByteExactThroughBuffers) {
  test::EchoBackend backend;
  ForwarderSettings s;
  s.relay.splice = config::SpliceMode::never;
  Balancer lb({make_target(backend.endpoint())}, s);
  transfer_and_verify(lb.endpoint(), k512MiB);
  EXPECT_EQ(lb.bytes_copied(), 2 * k512MiB);
  EXPECT_EQ(lb.bytes_spliced(), 0u);
}

TEST(Forwarder, AutomaticModeSplicesBulkAndCopiesSmallMessages) {
  test::EchoBackend backend;
  Balancer lb({make_target(backend.endpoint())});
  {
    Client small(lb.endpoint());
    for (int i = 0; i < 10; ++i) ASSERT_EQ(small.echo("GET /api/v1/pods"), "GET /api/v1/pods");
  }
  EXPECT_EQ(lb.bytes_spliced(), 0u);
  transfer_and_verify(lb.endpoint(), 64ull << 20);
  EXPECT_GT(lb.bytes_spliced(), 0u);
}

TEST(Forwarder, RetriesARefusedConnectOnAnotherTargetInvisibly) {
  test::RefusingTarget dead;
  test::EchoBackend alive;
  std::atomic<int> failures{0};
  Balancer lb({make_target(dead.endpoint()), make_target(alive.endpoint())},
              settings_with(config::Balance::round_robin), 1,
              [&](const Target&, std::string_view, bool) { ++failures; });
  for (int i = 0; i < 20; ++i) {
    Client c(lb.endpoint());
    ASSERT_EQ(c.echo("still here"), "still here") << "connection " << i;
  }
  EXPECT_EQ(alive.accepted(), 20u);
  // Round robin without health checks: every connection tries the dead target first.
  EXPECT_EQ(failures.load(), 20);
  EXPECT_EQ(lb.target(0).stats->connect_failures.load(), 20u);
}

TEST(Forwarder, RetriesAConnectTimeoutOnAnotherTarget) {
  test::BlackholeTarget blackhole;
  test::EchoBackend alive;
  ForwarderSettings s = settings_with(config::Balance::round_robin);
  s.connect_timeout = 200ms;
  Balancer lb({make_target(blackhole.endpoint()), make_target(alive.endpoint())}, s);
  for (int i = 0; i < 4; ++i) {
    Client c(lb.endpoint());
    ASSERT_EQ(c.echo("through"), "through");
  }
  EXPECT_EQ(alive.accepted(), 4u);
  EXPECT_EQ(lb.target(0).stats->connect_failures.load(), 4u);
}

TEST(Forwarder, ClosesTheClientWhenNoTargetAnswers) {
  test::RefusingTarget a, b;
  Balancer lb({make_target(a.endpoint()), make_target(b.endpoint())});
  Client c(lb.endpoint());
  EXPECT_TRUE(c.closed_by_peer(kDeadline));
  EXPECT_EQ(lb.shared().failed.load(), 1u);
}

TEST(Forwarder, ClosesConnectionsBeyondMaxConnectionsAndKeepsServing) {
  test::EchoBackend backend;
  ForwarderSettings s;
  s.max_connections = 2;
  Balancer lb({make_target(backend.endpoint())}, s);
  auto first = std::make_unique<Client>(lb.endpoint());
  Client second(lb.endpoint());
  ASSERT_EQ(first->echo("1"), "1");
  ASSERT_EQ(second.echo("2"), "2");

  Client third(lb.endpoint());
  EXPECT_TRUE(third.closed_by_peer(kDeadline));
  EXPECT_EQ(lb.shared().rejected.load(), 1u);

  first.reset();
  ASSERT_TRUE(wait_until([&] { return lb.shared().connections.load() == 1; }, kDeadline));
  Client fourth(lb.endpoint());
  EXPECT_EQ(fourth.echo("4"), "4");
}

TEST(Forwarder, ClosesEstablishedConnectionsOfATargetThatGoesDown) {
  std::array<test::EchoBackend, 2> backends;
  std::vector<Target> targets{make_target(backends[0].endpoint()),
                              make_target(backends[1].endpoint())};
  Balancer lb(targets, settings_with(config::Balance::round_robin));
  Client on_first(lb.endpoint());
  Client on_second(lb.endpoint());
  ASSERT_EQ(on_first.echo("a"), "a");
  ASSERT_EQ(on_second.echo("b"), "b");

  targets[0].state = TargetState::down;  // same stats object: the same target, now down
  lb.publish(targets);
  EXPECT_TRUE(on_first.closed_by_peer(kDeadline));
  EXPECT_EQ(on_second.echo("still"), "still");
}

TEST(Forwarder, SpreadsOverSeveralWorkersSharingOnePort) {
  test::EchoBackend backend;
  Balancer lb({make_target(backend.endpoint())}, {}, 2);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::make_unique<Client>(lb.endpoint()));
    ASSERT_EQ(clients.back()->echo("w"), "w");
  }
  EXPECT_EQ(lb.active(0), 16);
}

// --- replaying the first flight on an early close ------------------------------------------------

// Closes every connection it accepts without sending a byte: at once (a listen backlog flushed by
// a dying apiserver) or after reading what the client sent (an accepted, unanswered request),
// with a RST or a FIN. Counts what it accepted.
class Slammer {
 public:
  enum class End { fin, reset };
  Slammer(End end, std::size_t read_first) : end_(end), read_first_(read_first) {
    listener_.open(tcp::v4());
    listener_.bind(test::loopback());
    listener_.listen();
    thread_ = std::jthread([this] { serve(); });
  }
  ~Slammer() {
    ::shutdown(listener_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  tcp::endpoint endpoint() const { return listener_.local_endpoint(); }
  int accepted() const { return accepted_.load(); }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept4(listener_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      ++accepted_;
      std::size_t got = 0;
      char buf[4096];
      while (got < read_first_) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      if (end_ == End::reset) {
        const linger abort{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
      }
      ::close(fd);
    }
  }

  End end_;
  std::size_t read_first_;
  std::atomic<int> accepted_{0};
  asio::io_context io_;
  tcp::acceptor listener_{io_};
  std::jthread thread_;
};

// A TLS-looking first flight: a handshake record header and a body.
std::string client_hello(std::size_t size = 517) {
  std::string hello = "\x16\x03\x01";
  hello.resize(size, 'h');
  return hello;
}

ForwarderSettings replaying(config::ReplayFirstFlight mode) {
  ForwarderSettings s = settings_with(config::Balance::round_robin);
  s.replay = mode;
  return s;
}

// One connection: sends `flight` and keeps its side open (its read is pending while a replay
// reconnects); true when the same bytes came back within 5 s.
bool echoed_once(const tcp::endpoint& lb, const std::string& flight) {
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect(lb, ec);
  const timeval limit{5, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  if (!ec) asio::write(socket, asio::buffer(flight), ec);
  std::string reply(flight.size(), '\0');
  if (!ec) asio::read(socket, asio::buffer(reply), ec);
  return !ec && reply == flight;
}

// Round robin over a target that closes before answering and one that echoes: every other first
// attempt lands on the first. `count` connections each send `flight`: how many got it echoed.
int echoed(Balancer& lb, const std::string& flight, int count) {
  int ok = 0;
  for (int i = 0; i < count; ++i) ok += echoed_once(lb.endpoint(), flight);
  return ok;
}

TEST(Replay, AConnectionResetBeforeAnsweringIsReplayedOnAnotherTargetInvisibly) {
  for (const auto read_first : {std::size_t{0}, std::size_t{1}}) {
    for (const auto end : {Slammer::End::reset, Slammer::End::fin}) {
      Slammer slammer(end, read_first);
      test::EchoBackend echo;
      Balancer lb({make_target(slammer.endpoint()), make_target(echo.endpoint())},
                  replaying(config::ReplayFirstFlight::tls));
      EXPECT_EQ(echoed(lb, client_hello(), 40), 40) << "read_first " << read_first;
      EXPECT_GE(slammer.accepted(), 20);
      EXPECT_EQ(lb.shared().failed.load(), 0u);
      // Each counted against it: as a replay, or (closed at once, before the connect completed
      // on our side) as a failed connect that was retried.
      EXPECT_GE(lb.target(0).stats->connect_failures.load(), 20u);
      // Once it waits for the client's bytes, the connect always completes: every one a replay.
      if (read_first > 0) EXPECT_GE(lb.shared().replayed.load(), 20u);
    }
  }
}

TEST(Replay, TlsModeNeverReplaysPlainTcpButAlwaysModeDoes) {
  Slammer slammer(Slammer::End::reset, 1);
  test::EchoBackend echo;
  {
    Balancer lb({make_target(slammer.endpoint()), make_target(echo.endpoint())},
                replaying(config::ReplayFirstFlight::tls));
    EXPECT_EQ(echoed(lb, "GET / HTTP/1.1\r\n\r\n", 20), 10);  // every other one hit the slammer
    EXPECT_EQ(lb.shared().replayed.load(), 0u);
  }
  Balancer lb({make_target(slammer.endpoint()), make_target(echo.endpoint())},
              replaying(config::ReplayFirstFlight::always));
  EXPECT_EQ(echoed(lb, "GET / HTTP/1.1\r\n\r\n", 20), 20);
  Balancer never({make_target(slammer.endpoint()), make_target(echo.endpoint())},
                 replaying(config::ReplayFirstFlight::never));
  EXPECT_EQ(echoed(never, client_hello(), 20), 10);
}

TEST(Replay, AFirstFlightBeyondTheBoundIsCommittedAndNotReplayed) {
  const std::string big = client_hello(20 * 1024);
  Slammer slammer(Slammer::End::reset, big.size());  // reads it all, then resets
  test::EchoBackend echo;
  Balancer lb({make_target(slammer.endpoint()), make_target(echo.endpoint())},
              replaying(config::ReplayFirstFlight::tls));
  EXPECT_EQ(echoed(lb, big, 20), 10);
  EXPECT_EQ(lb.shared().replayed.load(), 0u);
}

TEST(Replay, ATargetThatAnsweredAndThenDiedIsNotReplayed) {
  Greeter greeter(Greeter::Speaks::second, Greeter::End::reset);
  test::EchoBackend echo;
  Balancer lb({make_target(greeter.endpoint()), make_target(echo.endpoint())},
              replaying(config::ReplayFirstFlight::always));
  for (int i = 0; i < 20; ++i) {
    const auto reply = test::fetch(lb.endpoint(), "EHLO", 2s, test::AfterSend::shut_down_write);
    // Either the greeter's answer and its close, or the echo: never the echo after a greeting.
    EXPECT_TRUE(reply.data == Greeter::kGreeting || reply.data == "EHLO") << reply.data;
  }
  EXPECT_EQ(lb.shared().replayed.load(), 0u);
}

TEST(Replay, AClientThatHalfClosedIsReplayedWithItsFin) {
  Slammer slammer(Slammer::End::reset, 1);
  test::EchoBackend echo;
  Balancer lb({make_target(slammer.endpoint()), make_target(echo.endpoint())},
              replaying(config::ReplayFirstFlight::tls));
  const std::string hello = client_hello();
  for (int i = 0; i < 20; ++i) {
    // Sends and shuts down its write side: the echo's FIN must come back after the bytes.
    const auto reply = test::fetch(lb.endpoint(), hello, 5s, test::AfterSend::shut_down_write);
    EXPECT_FALSE(reply.error) << "connection " << i << ": " << reply.error.message();
    EXPECT_EQ(reply.data, hello) << "connection " << i;
  }
}

}  // namespace
}  // namespace apilb::lb
