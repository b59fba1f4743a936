// Several ports per target (`listeners`), end to end: two masters (127.0.0.2 and 127.0.0.3) each
// serving three ports; one extra listener follows the main port's checks (health_from), one has
// checks of its own. And rebalancing after a master comes back.
#include "tests/e2e/installer.hpp"

#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

namespace apilb::test {
namespace {

namespace ip = boost::asio::ip;

tcp::endpoint on(const char* host, std::uint16_t port) { return {ip::make_address(host), port}; }

// `n` new connections through `lb`, each an echo round trip; how many were answered.
int echoes_through(const tcp::endpoint& lb, int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) ok += echo_through(lb) == "ok";
  return ok;
}

TEST(Listeners, FollowTheMainChecksOrTheirOwnAndShareTheOneFeed) {
  const auto h2 = ip::make_address("127.0.0.2"), h3 = ip::make_address("127.0.0.3");
  const std::uint16_t main_port = free_port(h2), follow_port = free_port(h2),
                      own_port = free_port(h2);
  EchoBackend main2(on("127.0.0.2", main_port)), follow2(on("127.0.0.2", follow_port)),
      own2(on("127.0.0.2", own_port));
  std::optional<EchoBackend> main3(std::in_place, on("127.0.0.3", main_port));
  EchoBackend follow3(on("127.0.0.3", follow_port));
  std::optional<EchoBackend> own3(std::in_place, on("127.0.0.3", own_port));
  const tcp::endpoint follow_lb = loopback(free_port()), own_lb = loopback(free_port());

  Installer installer("", false);
  installer.write_config("balance: round_robin\nlisteners:\n  - listen: " + to_string(follow_lb) +
                         "\n    target_port: " + std::to_string(follow_port) +
                         "\n    health_from: " + std::to_string(main_port) +
                         "\n  - listen: " + to_string(own_lb) +
                         "\n    target_port: " + std::to_string(own_port) + "\n");
  installer.targets({"set", to_string(main2.endpoint()), to_string(main3->endpoint())});
  installer.start();
  for (const auto& t : {main2.endpoint(), main3->endpoint(), follow2.endpoint(), follow3.endpoint(),
                        own2.endpoint(), own3->endpoint()})
    ASSERT_TRUE(installer.wait_state(t, "up")) << to_string(t) << installer.status();
  const tcp::endpoint main_lb = installer.lb().endpoint();

  // Each listener reaches its own port of both masters.
  EXPECT_EQ(echoes_through(main_lb, 10), 10);
  EXPECT_EQ(echoes_through(follow_lb, 10), 10);
  EXPECT_EQ(echoes_through(own_lb, 10), 10);
  EXPECT_GE(main3->accepted(), 1u);
  EXPECT_GE(follow3.accepted(), 1u);
  EXPECT_GE(own3->accepted(), 1u);

  // 127.0.0.3's main port dies: the listener that follows the main checks stops sending there
  // although its own port still answers; the one with its own checks keeps using it.
  main3.reset();
  ASSERT_TRUE(installer.wait_state(on("127.0.0.3", main_port), "down"));
  ASSERT_TRUE(installer.wait_state(follow3.endpoint(), "down")) << installer.status();
  const auto follow3_before = follow3.accepted(), own3_before = own3->accepted();
  EXPECT_EQ(echoes_through(follow_lb, 10), 10);
  EXPECT_EQ(echoes_through(own_lb, 10), 10);
  EXPECT_EQ(follow3.accepted(), follow3_before);
  EXPECT_GT(own3->accepted(), own3_before);

  // It comes back; now only its `own` port dies: skipped on that listener only.
  main3.emplace(on("127.0.0.3", main_port));
  ASSERT_TRUE(installer.wait_state(follow3.endpoint(), "up")) << installer.status();
  const tcp::endpoint own3_endpoint = own3->endpoint();
  own3.reset();
  ASSERT_TRUE(installer.wait_state(own3_endpoint, "down")) << installer.status();
  EXPECT_EQ(installer.state(main3->endpoint()), "up");
  const auto main3_before = main3->accepted(), follow3_back = follow3.accepted();
  EXPECT_EQ(echoes_through(own_lb, 10), 10);
  EXPECT_EQ(echoes_through(main_lb, 10), 10);
  EXPECT_EQ(echoes_through(follow_lb, 10), 10);
  EXPECT_GT(main3->accepted(), main3_before);
  EXPECT_GT(follow3.accepted(), follow3_back);
}

// Long-lived client connections that reconnect as soon as the balancer closes one, the way
// kube-apiserver clients re-establish a watch. One thread polls them all.
class Watchers {
 public:
  Watchers(const tcp::endpoint& lb, int count) : lb_(lb) {
    for (int i = 0; i < count; ++i) sockets_.push_back(connect());
    thread_ = std::jthread([this](std::stop_token stop) {
      while (!stop.stop_requested()) {
        for (auto& s : sockets_) {
          char byte;
          const auto n = ::recv(s->native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            s = connect();
            ++reconnects_;
          }
        }
        std::this_thread::sleep_for(5ms);  // the polling period, not a synchronisation
      }
    });
  }
  ~Watchers() { thread_ = {}; }
  int reconnects() const { return reconnects_; }

 private:
  std::unique_ptr<tcp::socket> connect() {
    auto s = std::make_unique<tcp::socket>(io_);
    boost::system::error_code ec;
    s->connect(lb_, ec);
    // One round trip: the connection is established to a target before it counts.
    asio::write(*s, asio::buffer("w", 1), ec);
    char reply;
    if (!ec) asio::read(*s, asio::buffer(&reply, 1), ec);
    return s;
  }

  tcp::endpoint lb_;
  asio::io_context io_;
  std::vector<std::unique_ptr<tcp::socket>> sockets_;
  std::atomic<int> reconnects_{0};
  std::jthread thread_;
};

TEST(Rebalance, SpreadsLongLivedConnectionsAfterAMasterReturnsWithinTheRateLimit) {
  EchoBackend a, b;
  std::optional<EchoBackend> c(std::in_place);
  const tcp::endpoint c_endpoint = c->endpoint();
  constexpr double kRate = 20;
  Installer installer("", false);
  installer.write_config("rebalance: { enabled: true, threshold: 1.2, after: 1s, rate: 20 }\n");
  installer.targets(
      {"set", to_string(a.endpoint()), to_string(b.endpoint()), to_string(c_endpoint)});
  installer.start();
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up"));
  c.reset();
  ASSERT_TRUE(installer.wait_state(c_endpoint, "down"));

  Watchers watchers(installer.lb().endpoint(), 300);
  ASSERT_TRUE(wait_until([&] { return a.active() + b.active() == 300; }, kDeadline));
  EXPECT_EQ(watchers.reconnects(), 0);

  c.emplace(c_endpoint);
  ASSERT_TRUE(installer.wait_state(c_endpoint, "up"));
  const auto back = steady_clock::now();
  const auto even = [&] {
    for (const auto* s : {&a, &b, &*c})
      if (s->active() < 80 || s->active() > 120) return false;
    return true;
  };
  // Bound: `after` (1 s) + 100 connections over the fair share at 20 a second (5 s) + 5 s slack.
  const bool spread = wait_until(even, 11s, 20ms);
  const double took = std::chrono::duration<double>(steady_clock::now() - back).count();
  std::printf(
      "rebalance: %zu / %zu / %zu connections %.1f s after the master came back; %d "
      "closed (bound: %.0f)\n",
      a.active(), b.active(), c->active(), took, watchers.reconnects(), kRate * took + kRate);
  EXPECT_TRUE(spread);
  EXPECT_LE(watchers.reconnects(), kRate * took + kRate);
  // Never more than needed: the spread stays where it is, and the metric counts every close.
  EXPECT_TRUE(wait_until(
      [&] {
        return installer.metrics().find("apiserver_lb_client_connections_rebalanced_total " +
                                        std::to_string(watchers.reconnects()) + "\n") !=
               std::string::npos;
      },
      kDeadline));
  EXPECT_LE(watchers.reconnects(), 110);
  EXPECT_NE(installer.lb().process().log().find("rebalance: "), std::string::npos);
}

}  // namespace
}  // namespace apilb::test
