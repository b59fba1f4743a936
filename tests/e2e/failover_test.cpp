// End to end failover: the real apiserver-lb in front of three apiserver-standin processes, real
// crashes (SIGKILL), hangs (SIGSTOP), readiness flips and certificate mismatches. Each test prints
// the detection and close times it measured.
#include "tests/e2e/hosted.hpp"
#include "tests/e2e/lb_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <thread>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;
// The bound the product promises, for interval 1s and fall 2: interval x fall + 0.5 s.
constexpr auto kDetectionBound = 2500ms;
constexpr auto kCloseBound = 1s;

// A kept-alive HTTPS connection through the balancer (no certificate verification: the balancer
// passes TLS through, the stand-ins are self-signed). Knows which stand-in answered.
class TlsClient {
 public:
  explicit TlsClient(const tcp::endpoint& ep)
      : context_(ssl::context::tls_client), stream_(io_, context_) {
    stream_.lowest_layer().connect(ep);
    stream_.handshake(ssl::stream_base::client);
  }
  // GET / on this connection: the stand-in's name, or "" when the connection is gone.
  std::string who() { return who_answers(stream_, buffer_); }
  // True once the balancer has closed this connection, within `deadline`.
  bool closed_within(std::chrono::milliseconds deadline) {
    return peer_closed_within(stream_.next_layer(), deadline);
  }

 private:
  asio::io_context io_;
  ssl::context context_;
  ssl::stream<tcp::socket> stream_;
  std::string buffer_;
};

// Three stand-in masters named m1..m3 and a balancer in front of them.
class Cluster {
 public:
  Cluster(bool tls, const std::string& health_yaml, std::vector<std::string> extra_args = {})
      : tls_(tls) {
    std::vector<std::string> args{"--config", dir_.write("config.yaml", health_yaml).string()};
    for (int i = 1; i <= 3; ++i) {
      StandinOptions o;
      o.name = "m" + std::to_string(i);
      o.tls = tls;
      masters_.push_back(std::make_unique<StandinProcess>(APILB_STANDIN, o));
      args.push_back("--target");
      args.push_back(to_string(masters_.back()->endpoint()));
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    lb_.emplace(args);
  }

  StandinProcess& master(int i) { return *masters_.at(i - 1); }
  std::string address(int i) { return to_string(master(i).endpoint()); }
  LbProcess& lb() { return *lb_; }
  // Where the balancer's log ends now: wait_state() looks only at what comes after a mark.
  std::size_t mark() { return lb_->process().log().size(); }
  // Waits for the balancer to log `address(i) ... -> state` after `from` (a mark()) and returns
  // when it saw it.
  std::optional<steady_clock::time_point> wait_state(
      int i, const std::string& state, std::size_t from = 0,
      std::chrono::milliseconds deadline = kDeadline) {
    return test::wait_state(lb_->process(), address(i), state, from, nullptr, deadline);
  }
  void wait_all_up() {
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(wait_state(i, "up")) << lb_->process().log();
  }
  // Brings master i back on the same port.
  void restart(int i) {
    StandinOptions o;
    o.name = "m" + std::to_string(i);
    o.tls = tls_;
    o.listen = address(i);
    masters_.at(i - 1).reset();
    masters_.at(i - 1) = std::make_unique<StandinProcess>(APILB_STANDIN, o);
  }
  void kill(int i) { master(i).process().kill(); }

 private:
  bool tls_;
  TempDir dir_;
  std::vector<std::unique_ptr<StandinProcess>> masters_;
  std::optional<LbProcess> lb_;
};

constexpr std::string_view kTcpChecks = R"(
health: { mode: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms, retries: 2 }
threads: 2
)";

TEST(Failover, ACrashedMasterStopsGettingConnectionsWithinTheBoundAndNoClientFails) {
  Cluster c(false, std::string(kTcpChecks));
  c.wait_all_up();
  Load load([&] { return who_plain(c.lb().endpoint()); });
  ASSERT_TRUE(wait_until([&] { return load.total() > 30; }, kDeadline));

  const auto from = c.mark();
  c.kill(2);  // SIGKILL and reap: requests started from now on are new, none is in flight on m2
  const auto killed = steady_clock::now();
  const auto down = c.wait_state(2, "down", from);
  ASSERT_TRUE(down) << c.lb().process().log();
  std::printf("crash: marked down %lld ms after SIGKILL (interval 1s, fall 2)\n",
              ms(*down - killed));
  EXPECT_LE(*down - killed, kDetectionBound);

  const auto total = load.total();
  ASSERT_TRUE(wait_until([&] { return load.total() > total + 50; }, kDeadline));
  load.stop();
  EXPECT_EQ(load.failures(killed), 0u) << "refused connects must be retried on another target";
  EXPECT_EQ(load.answered_by("m2", killed), 0u);
  EXPECT_GT(load.answered_by("m1", *down) + load.answered_by("m3", *down), 0u);
}

TEST(Failover, ACrashedMasterIsMarkedDownByActiveChecksAloneWithinTheBound) {
  Cluster c(false, std::string(kTcpChecks));
  c.wait_all_up();
  const auto from = c.mark();
  const auto killed = steady_clock::now();
  c.kill(2);  // no client traffic: no passive failure can help
  const auto down = c.wait_state(2, "down", from);
  ASSERT_TRUE(down) << c.lb().process().log();
  std::printf("crash, no traffic: marked down %lld ms after SIGKILL (interval 1s, fall 2)\n",
              ms(*down - killed));
  EXPECT_LE(*down - killed, kDetectionBound);
}

TEST(Failover, ARecoveredMasterGetsNewConnectionsAfterRiseChecks) {
  Cluster c(false, std::string(kTcpChecks));
  c.wait_all_up();
  c.kill(2);
  ASSERT_TRUE(c.wait_state(2, "down"));
  const auto from = c.mark();
  const auto restarted = steady_clock::now();
  c.restart(2);
  const auto up = c.wait_state(2, "up", from, 5s);
  ASSERT_TRUE(up) << c.lb().process().log();
  std::printf("recovery: up again %lld ms after restart (rise 2)\n", ms(*up - restarted));
  Load load([&] { return who_plain(c.lb().endpoint()); });
  ASSERT_TRUE(wait_until([&] { return load.answered_by("m2", *up) > 0; }, kDeadline));
  EXPECT_TRUE(load.stopped_without_failure());
}

TEST(Failover, PanicModeKeepsTryingAndTrafficFlowsAsSoonAsOneMasterReturns) {
  Cluster c(false, std::string(kTcpChecks));
  c.wait_all_up();
  for (int i = 1; i <= 3; ++i) c.kill(i);
  ASSERT_TRUE(c.lb().process().wait_for_log("panic mode", kDeadline)) << c.lb().process().log();
  EXPECT_EQ(who_plain(c.lb().endpoint()), "");  // nobody to answer; the balancer stays up
  EXPECT_TRUE(c.lb().process().running());

  const auto from = c.mark();
  const auto restarted = steady_clock::now();
  c.restart(3);
  ASSERT_TRUE(wait_until([&] { return who_plain(c.lb().endpoint()) == "m3"; }, kDeadline));
  std::printf("panic: first successful request %lld ms after a master came back\n",
              ms(steady_clock::now() - restarted));
  EXPECT_TRUE(wait_until(
      [&] { return c.lb().process().log().find("panic mode over", from) != std::string::npos; },
      kDeadline));
}

TEST(Failover, PanicModeTriesFirstMasterLastWhenItIsNotATarget) {
  StandinOptions o;
  o.name = "first";
  o.tls = false;
  StandinProcess first_master(APILB_STANDIN, o);
  Cluster c(false, std::string(kTcpChecks), {"--first-master", to_string(first_master.endpoint())});
  c.wait_all_up();
  for (int i = 0; i < 6; ++i)
    EXPECT_NE(who_plain(c.lb().endpoint()), "first") << "healthy targets come first";

  for (int i = 1; i <= 3; ++i) c.kill(i);
  ASSERT_TRUE(c.lb().process().wait_for_log(
      "then first_master " + to_string(first_master.endpoint()), kDeadline))
      << c.lb().process().log();
  EXPECT_EQ(who_plain(c.lb().endpoint()), "first") << c.lb().process().log();
}

constexpr std::string_view kTlsChecks = R"(
health: { mode: tls, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms }
threads: 1
)";

// Opens one kept-alive TLS connection per master (least_connections spreads three over three).
std::map<std::string, std::unique_ptr<TlsClient>> hold_one_per_master(Cluster& c) {
  std::map<std::string, std::unique_ptr<TlsClient>> held;
  for (int i = 0; i < 3; ++i) {
    auto client = std::make_unique<TlsClient>(c.lb().endpoint());
    const std::string name = client->who();
    held[name] = std::move(client);
  }
  return held;
}

TEST(Failover, AHungMasterIsCaughtByTlsChecksAndItsConnectionsAreClosed) {
  Cluster c(true, std::string(kTlsChecks));
  c.wait_all_up();
  auto held = hold_one_per_master(c);
  ASSERT_EQ(held.size(), 3u) << "least_connections should spread three connections";

  const auto from = c.mark();
  const auto stopped = steady_clock::now();
  c.master(2).process().send_signal(SIGSTOP);  // the kernel still completes TCP handshakes
  const auto down = c.wait_state(2, "down", from);
  ASSERT_TRUE(down) << c.lb().process().log();
  std::printf("hung: marked down %lld ms after SIGSTOP (tls checks, interval 1s, fall 2)\n",
              ms(*down - stopped));
  EXPECT_LE(*down - stopped, kDetectionBound);

  EXPECT_TRUE(held["m2"]->closed_within(kCloseBound));
  std::printf("hung: its established connection closed %lld ms after it was marked down\n",
              ms(steady_clock::now() - *down));
  EXPECT_EQ(held["m1"]->who(), "m1");
  EXPECT_EQ(held["m3"]->who(), "m3");
  c.master(2).process().send_signal(SIGCONT);
}

constexpr std::string_view kHttpsChecks = R"(
health: { mode: https, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
threads: 1
)";

TEST(Failover, AMasterWhoseReadyzFailsDrainsWithoutLosingItsConnections) {
  Cluster c(true, std::string(kHttpsChecks));
  c.wait_all_up();
  auto held = hold_one_per_master(c);
  ASSERT_EQ(held.size(), 3u);

  ASSERT_TRUE(c.master(1).set_readyz(500));
  const auto draining = c.wait_state(1, "draining");
  ASSERT_TRUE(draining) << c.lb().process().log();
  EXPECT_NE(c.lb().process().log().find("HTTP 500: [-]etcd"), std::string::npos)
      << c.lb().process().log();
  // Its established connection stays usable; new connections go elsewhere.
  EXPECT_EQ(held["m1"]->who(), "m1");
  for (int i = 0; i < 6; ++i) EXPECT_NE(TlsClient(c.lb().endpoint()).who(), "m1");
  EXPECT_EQ(held["m1"]->who(), "m1");
}

TEST(Failover, AMasterWithACertificateFromAnotherCaIsDownWithAReasonThatSaysSo) {
  // The stand-ins' certificates are self-signed: trusting one's certificate trusts only that one.
  StandinOptions o;
  o.name = "trusted";
  StandinProcess trusted(APILB_STANDIN, o);
  o.name = "stranger";
  StandinProcess stranger(APILB_STANDIN, o);
  TempDir dir;
  const auto config =
      dir.write("config.yaml", "health: { mode: https, interval: 1s, timeout: 500ms, ca_file: " +
                                   trusted.cert_file().string() + " }\n");
  LbProcess lb({"--config", config.string(), "--target", to_string(trusted.endpoint()), "--target",
                to_string(stranger.endpoint())});
  EXPECT_TRUE(lb.process().wait_for_log(to_string(trusted.endpoint()) + " (config): unknown -> up",
                                        kDeadline))
      << lb.process().log();
  ASSERT_TRUE(lb.process().wait_for_log(
      to_string(stranger.endpoint()) + " (config): unknown -> down", kDeadline))
      << lb.process().log();
  EXPECT_NE(lb.process().log().find("certificate verify failed"), std::string::npos)
      << lb.process().log();
}

}  // namespace
}  // namespace apilb::test
