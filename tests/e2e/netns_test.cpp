// End to end failover across hosts: each stand-in master runs in its own network namespace (a
// TestHost), the real apiserver-lb in the root namespace in front of them. The blackhole test makes
// a master's host stop answering without RST or ICMP, the failure no single-host test can stage,
// and prints the detection and close times it measured. Needs root; skipped (with the reason)
// where network namespaces cannot be made.
#include "tests/e2e/hosted.hpp"
#include "tests/e2e/lb_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;
// The bound the product promises, for interval 1s and fall 2: interval x fall + 0.5 s.
constexpr auto kDetectionBound = 2500ms;
constexpr auto kCloseBound = 1s;
constexpr auto kConnectTimeout = 500ms;  // upstream.connect_timeout below

// A raw non-blocking connect from the root namespace, watched for `window`: 0 when it completed,
// ETIMEDOUT when nothing at all came back in time (no SYN-ACK, no RST, no ICMP), otherwise the
// error the kernel reported (ECONNREFUSED for an RST, EHOSTUNREACH for ICMP or a failed ARP).
int connect_outcome(const tcp::endpoint& endpoint, std::chrono::milliseconds window) {
  const int fd =
      ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int outcome = 0;
  if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
    outcome = errno;
    if (outcome == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(window.count()));
      socklen_t length = sizeof outcome;
      if (ready == 0) {
        outcome = ETIMEDOUT;
      } else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &outcome, &length) != 0) {
        outcome = errno;
      }
    }
  }
  ::close(fd);
  return outcome;
}

std::string describe(int outcome) { return outcome == 0 ? "connected" : std::strerror(outcome); }

// ---- TestHost itself ----------------------------------------------------------------------------

TEST(TestHost, IsReachableFromTheRootNamespaceAndRefusesAClosedPort) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  TestHost host;
  EXPECT_EQ(connect_outcome(host.endpoint(kApiserverPort), 1s), ECONNREFUSED)
      << describe(connect_outcome(host.endpoint(kApiserverPort), 1s));
}

TEST(TestHost, RunsAProcessInsideItsNamespaceThatTheRootNamespaceReaches) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  HostedMaster master("inside");
  EXPECT_EQ(http_get(master.endpoint(), "/", 3s).body, "inside\n");
}

void expect_silence_after(BlackholeMethod method) {
  TestHost host;
  ASSERT_EQ(connect_outcome(host.endpoint(kApiserverPort), 1s), ECONNREFUSED);
  ASSERT_EQ(host.blackhole(method), method);
  // Silence, not refusal and not "unreachable": the connect is still pending when we give up. The
  // window is longer than the balancer's connect timeout and longer than ARP would take to fail.
  const int outcome = connect_outcome(host.endpoint(kApiserverPort), 3500ms);
  EXPECT_EQ(outcome, ETIMEDOUT) << describe(outcome);
  host.restore();
  EXPECT_TRUE(wait_until(
      [&] { return connect_outcome(host.endpoint(kApiserverPort), 500ms) == ECONNREFUSED; }, 5s))
      << "the host should answer again after restore()";
}

TEST(TestHost, BlackholedByNftablesItNeitherRefusesNorReportsUnreachable) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  if (find_program("nft").empty()) GTEST_SKIP() << "no `nft` (nftables) installed";
  expect_silence_after(BlackholeMethod::nftables);
}

TEST(TestHost, BlackholedByTakingItsLinkDownItNeitherRefusesNorReportsUnreachable) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  expect_silence_after(BlackholeMethod::link_down);
}

TEST(TestHost, RemovesItsNamespaceAndLinkWhenDestroyed) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  std::string name, link;
  {
    TestHost host;
    name = host.name();
    link = host.root_link();
    EXPECT_TRUE(std::filesystem::exists("/run/netns/" + name));
  }
  EXPECT_FALSE(std::filesystem::exists("/run/netns/" + name));
  EXPECT_FALSE(run_command({find_program("ip").string(), "link", "show", "dev", link}).ok())
      << "the veth pair should be gone with its host";
}

// ---- The balancer in front of masters on three hosts --------------------------------------------

constexpr std::string_view kTcpChecks = R"(
health: { mode: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms }
threads: 2
)";

const char* method_name(BlackholeMethod method) {
  switch (method) {
    case BlackholeMethod::nftables:
      return "nftables DROP";
    case BlackholeMethod::link_down:
      return "link down";
    case BlackholeMethod::automatic:
      break;
  }
  return "automatic";
}

// Three hosted masters m1..m3 and a balancer in the root namespace in front of them. `config` is
// the balancer's config file.
class HostedCluster {
 public:
  explicit HostedCluster(std::string_view config = kTcpChecks) {
    for (int i = 1; i <= 3; ++i)
      masters_.push_back(std::make_unique<HostedMaster>("m" + std::to_string(i)));
    std::vector<std::string> args{"--config", dir_.write("config.yaml", config).string()};
    for (const auto& m : masters_) args.insert(args.end(), {"--target", m->address()});
    lb_.emplace(args);
  }
  HostedMaster& master(int i) { return *masters_.at(static_cast<std::size_t>(i - 1)); }
  LbProcess& lb() { return *lb_; }
  std::size_t mark() { return lb_->process().log().size(); }
  bool all_up() {
    for (const auto& m : masters_)
      if (!wait_state(lb_->process(), m->address(), "up")) return false;
    return true;
  }

 private:
  std::vector<std::unique_ptr<HostedMaster>> masters_;
  TempDir dir_;
  std::optional<LbProcess> lb_;  // declared last: stops first
};

// Failures and the slowest requests among `requests`, for the checks and the printout.
struct LoadSummary {
  std::size_t failed = 0;
  std::size_t answered_by_m2 = 0;
  std::size_t slow = 0;  // waited for at least one connect timeout
  steady_clock::duration slowest{};
};
LoadSummary summarize(const std::vector<Load::Result>& requests) {
  LoadSummary s;
  for (const auto& r : requests) {
    if (r.answered_by.empty()) ++s.failed;
    if (r.answered_by == "m2") ++s.answered_by_m2;
    if (r.took >= kConnectTimeout) ++s.slow;
    s.slowest = std::max(s.slowest, r.took);
  }
  return s;
}
// Every request from `origin` on, as start+duration in ms after `origin` and who answered ("-" for
// nobody): the timeline a failed check prints.
std::string timeline(Loads& load, steady_clock::time_point origin) {
  std::string text = "requests (start+duration ms, answered by):";
  for (const auto& r : load.since(origin))
    text += " " + std::to_string(ms(r.started - origin)) + "+" + std::to_string(ms(r.took)) +
            (r.answered_by.empty() ? "-" : r.answered_by);
  return text;
}

// Probe timeout == interval: probes taken one after another would need 1 s + 2 x 1 s, over the
// bound; overlapping ones need 1 s + 250 ms + 1 s.
constexpr std::string_view kTimeoutIsInterval = R"(
health: { mode: tcp, interval: 1s, timeout: 1s, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms }
threads: 2
)";

TEST(Blackhole, ASilentHostIsMarkedDownByActiveChecksAloneWithinTheBound) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  HostedCluster c(kTimeoutIsInterval);
  ASSERT_TRUE(c.all_up()) << c.lb().process().log();

  const auto from = c.mark();
  const auto blackholing = steady_clock::now();
  const BlackholeMethod method =
      c.master(2).host().blackhole();  // no client traffic: no passive failure
  std::string why;
  const auto down = wait_state(c.lb().process(), c.master(2).address(), "down", from, &why);
  ASSERT_TRUE(down) << c.lb().process().log();
  std::printf(
      "blackhole (%s), no traffic: marked down %lld ms after the blackhole (\"%s\"; tcp checks, "
      "interval 1s, timeout 1s, fall 2; bound %lld ms)\n",
      method_name(method), ms(*down - blackholing), why.c_str(), ms(kDetectionBound));
  EXPECT_LE(*down - blackholing, kDetectionBound);
}

TEST(Blackhole, ASilentHostIsDownWithinTheBoundItsConnectionsCloseAndNoClientFails) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  HostedCluster c;
  LbProcess& lb = c.lb();
  ASSERT_TRUE(c.all_up()) << lb.process().log();

  // Long-lived connections (watches): least_connections spreads six over three masters.
  std::map<std::string, std::vector<std::unique_ptr<HttpClient>>> held;
  for (int i = 0; i < 6; ++i) {
    auto client = std::make_unique<HttpClient>(lb.endpoint());
    const std::string name = client->who();
    held[name].push_back(std::move(client));
  }
  ASSERT_EQ(held.size(), 3u) << "least_connections should reach every master";
  for (const char* name : {"m1", "m2", "m3"}) EXPECT_EQ(held[name].size(), 2u) << name;

  Loads load(lb.endpoint(), 2);
  ASSERT_TRUE(wait_until([&] { return load.total() > 30; }, kDeadline));

  const auto from = c.mark();
  const auto blackholing = steady_clock::now();
  const BlackholeMethod method = c.master(2).host().blackhole();
  const auto blackholed = steady_clock::now();  // from here on m2's host is silent for sure
  std::string why;
  const auto down = wait_state(lb.process(), c.master(2).address(), "down", from, &why);
  ASSERT_TRUE(down) << lb.process().log();
  std::printf(
      "blackhole (%s, took %lld ms), under load: marked down %lld ms after the blackhole (\"%s\"; "
      "bound %lld ms)\n",
      method_name(method), ms(blackholed - blackholing), ms(*down - blackholing), why.c_str(),
      ms(kDetectionBound));
  EXPECT_LE(*down - blackholing, kDetectionBound);

  // Its established connections are closed by the balancer (the host itself says nothing).
  auto& to_m2 = held["m2"];
  std::vector<std::optional<steady_clock::time_point>> closed_at(to_m2.size());
  wait_until(
      [&] {
        for (std::size_t i = 0; i < to_m2.size(); ++i)
          if (!closed_at[i] && to_m2[i]->closed()) closed_at[i] = steady_clock::now();
        return std::all_of(closed_at.begin(), closed_at.end(),
                           [](const auto& t) { return t.has_value(); });
      },
      kDeadline, 2ms);
  for (std::size_t i = 0; i < to_m2.size(); ++i) {
    ASSERT_TRUE(closed_at[i]) << "held connection " << i << " to m2 is still open " << ms(kDeadline)
                              << " ms after m2 was marked down";
    std::printf(
        "blackhole: established connection %zu to m2 closed %lld ms after it was marked down\n", i,
        ms(*closed_at[i] - *down));
    EXPECT_LE(*closed_at[i] - *down, kCloseBound);
  }
  for (const char* name : {"m1", "m3"})
    for (auto& client : held[name])
      EXPECT_EQ(client->who(), name) << "only m2's connections may close";

  // New connections: none failed, and once m2 is down none waits for its connect timeout. The
  // load goes on for a second after the detection.
  const auto at_down = load.total();
  ASSERT_TRUE(wait_until(
      [&] { return steady_clock::now() > *down + 1s && load.total() > at_down + 50; }, kDeadline));
  load.stop();
  EXPECT_TRUE(lb.process().running()) << "the balancer must survive a silent master";
  // Requests that started while the blackhole was being set up may have reached m2 before it went
  // silent and be lost with it (as with a crash); those that started after must all succeed.
  const auto after = summarize(load.since(blackholed)), after_down = summarize(load.since(*down));
  std::printf(
      "blackhole: %zu new client connections after the blackhole, %zu failed; %zu retried after a "
      "connect timeout; slowest after it was marked down %lld ms\n",
      load.since(blackholed).size(), after.failed, summarize(load.since(blackholing)).slow,
      ms(after_down.slowest));
  EXPECT_EQ(after.failed, 0u) << "a connect timeout must be retried on another target, invisibly\n"
                              << timeline(load, blackholing);
  EXPECT_EQ(after.answered_by_m2, 0u);
  EXPECT_EQ(after_down.slow, 0u) << "a target marked down must get no new connection attempts\n"
                                 << timeline(load, blackholing);
}

// Round robin sends every third new connection to the silent host until it is down, so connect
// timeouts are certain here. The load starts only once the host is silent: a request caught in
// flight by the blackhole would be lost with the host (as with a crash) and would stall its thread.
constexpr std::string_view kRoundRobin = R"(
balance: round_robin
health: { mode: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms }
threads: 2
)";

TEST(Blackhole, ConnectsThatTimeOutOnASilentHostAreRetriedElsewhereAndItIsProbedAtOnce) {
  if (!TestHost::available()) GTEST_SKIP() << TestHost::unavailable_reason();
  HostedCluster c(kRoundRobin);
  LbProcess& lb = c.lb();
  ASSERT_TRUE(c.all_up()) << lb.process().log();

  const auto from = c.mark();
  const auto blackholing = steady_clock::now();
  c.master(2).host().blackhole();
  const auto blackholed = steady_clock::now();
  Loads load(lb.endpoint(), 2);
  std::string why;
  const auto down = wait_state(lb.process(), c.master(2).address(), "down", from, &why);
  ASSERT_TRUE(down) << lb.process().log();
  const auto at_down = load.total();
  ASSERT_TRUE(wait_until(
      [&] { return steady_clock::now() > *down + 1s && load.total() > at_down + 50; }, kDeadline));
  load.stop();

  const auto all = load.since(blackholed);
  const auto s = summarize(all);
  std::printf(
      "blackhole, round robin, load from the blackhole on: marked down %lld ms after the blackhole "
      "(\"%s\"); %zu new client connections, %zu failed, %zu retried after a connect timeout, "
      "slowest %lld ms\n",
      ms(*down - blackholing), why.c_str(), all.size(), s.failed, s.slow, ms(s.slowest));
  EXPECT_GT(s.slow, 0u) << "round robin should have tried the silent host\n"
                        << timeline(load, blackholing);
  EXPECT_EQ(s.failed, 0u) << "a connect timeout must be retried on another target, invisibly\n"
                          << timeline(load, blackholing);
  // A client's connect timeout counts as a failed check and triggers an immediate probe: with fall
  // 2 the host is down at most two connect timeouts after the first client hit it, sooner than the
  // active checks alone (up to interval + 2 x timeout) would say so.
  EXPECT_LE(*down - blackholing, kConnectTimeout * 2 + 250ms) << timeline(load, blackholing);
  EXPECT_LT(s.slowest, kConnectTimeout * 2) << "one timeout, then a target that answers\n"
                                            << timeline(load, blackholing);
}

}  // namespace
}  // namespace apilb::test
