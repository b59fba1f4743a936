// Crashes that no client sees: a master SIGKILLed again and again under a stream of new
// connections, restarted once the balancer has marked it down. Connections its kernel had accepted
// but it never answered are reset when it dies; the balancer replays their first flight on another
// master (upstream.replay_first_flight). For each kind of client an apiserver has: TLS (the real
// case), plain HTTP (client speaks first, `always`), and a server that speaks first.
#include "tests/e2e/hosted.hpp"
#include "tests/e2e/lb_process.hpp"
#include "tests/e2e/load.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <csignal>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;
constexpr int kCrashes = 50;

enum class Kind { tls, plain, greeting };
const char* name_of(Kind k) {
  return k == Kind::tls ? "tls" : k == Kind::plain ? "plain" : "greeting";
}

// Blocking reads and writes give up after 3 s: a lost request fails, it never hangs the load.
template <typename Socket>
void bound(Socket& socket) {
  const timeval limit{3, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

// One new connection through the balancer, one `GET /`: the stand-in's name, "" on any failure.
std::string ask(Kind kind, const tcp::endpoint& lb) {
  try {
    asio::io_context io;
    if (kind == Kind::tls) {
      ssl::context context(ssl::context::tls_client);
      ssl::stream<tcp::socket> stream(io, context);
      stream.lowest_layer().connect(lb);
      bound(stream.lowest_layer());
      stream.handshake(ssl::stream_base::client);
      std::string buffer;
      return who_answers(stream, buffer);
    }
    tcp::socket socket(io);
    socket.connect(lb);
    bound(socket);
    std::string buffer;
    if (kind == Kind::greeting) {
      const std::size_t line = asio::read_until(socket, asio::dynamic_buffer(buffer), '\n');
      if (!buffer.starts_with("apiserver-standin ")) return "";
      buffer.erase(0, line);
    }
    return who_answers(socket, buffer);
  } catch (const std::exception&) {
    return "";
  }
}

StandinOptions master(Kind kind, int i) {
  StandinOptions o("m" + std::to_string(i));
  if (kind != Kind::tls) o.plain_http();
  if (kind == Kind::greeting) o.with_arg("--greet");
  return o;
}

class ReplayCrashes : public testing::TestWithParam<Kind> {};

TEST_P(ReplayCrashes, FiftySigkillsUnderNewConnectionsFailNone) {
  const Kind kind = GetParam();
  TempDir dir;
  // Plain HTTP is replayed only with `always` (see README); TLS and a server that speaks first
  // (nothing to replay but the connect) with the default.
  const std::string config = std::string(R"(
health: { mode: tcp, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 500ms, retries: 2, replay_first_flight: )") +
                             (kind == Kind::plain ? "always" : "tls") + " }\nthreads: 2\n";
  std::vector<std::unique_ptr<StandinProcess>> masters;
  const std::uint16_t admin = free_port();
  std::vector<std::string> args{"--config", dir.write("config.yaml", config).string(), "--admin",
                                "127.0.0.1:" + std::to_string(admin)};
  for (int i = 1; i <= 3; ++i) {
    masters.push_back(std::make_unique<StandinProcess>(APILB_STANDIN, master(kind, i)));
    args.push_back("--target");
    args.push_back(to_string(masters.back()->endpoint()));
  }
  LbProcess lb(args);
  for (int i = 1; i <= 3; ++i)
    ASSERT_TRUE(wait_state(lb.process(), to_string(masters[i - 1]->endpoint()), "up", 0, nullptr,
                           kDeadline));

  // Two clients, so that one stalled by a lost in-flight request cannot hide the others.
  Load a([&] { return ask(kind, lb.endpoint()); }), b([&] { return ask(kind, lb.endpoint()); });
  ASSERT_TRUE(a.more(20) && b.more(20));
  std::vector<steady_clock::time_point> kills;
  for (int crash = 0; crash < kCrashes; ++crash) {
    const std::size_t victim = static_cast<std::size_t>(crash % 3);
    const std::string address = to_string(masters[victim]->endpoint());
    const std::size_t mark = lb.process().log().size();
    kills.push_back(steady_clock::now());  // before the signal: what starts now is new
    masters[victim]->process().kill();
    // Back once the balancer has seen it die, as a real apiserver restarts (seconds, not the
    // milliseconds a stand-in takes): a master back before it is marked down would have its new
    // connections closed by the late verdict (on_target_down: close), which is another story.
    ASSERT_TRUE(wait_state(lb.process(), address, "down", mark, nullptr, kDeadline))
        << "crash " << crash;
    masters[victim].reset();
    StandinOptions again = master(kind, static_cast<int>(victim) + 1);
    again.listening_on(address);
    masters[victim] = std::make_unique<StandinProcess>(APILB_STANDIN, again);
    ASSERT_TRUE(wait_state(lb.process(), address, "up", mark, nullptr, kDeadline))
        << "crash " << crash << ": " << address
        << " not up again; /status: " << http_get(loopback(admin), "/status", kDeadline).body;
    ASSERT_TRUE(a.more(10) && b.more(10)) << "crash " << crash << ": the load stalled";
  }
  kills.push_back(steady_clock::now());
  a.stop();
  b.stop();

  // A request is new to crash i when it started after the signal and ended before the next
  // crash; one that straddles a crash was in flight then (and is lost only if the master had
  // answered part of it already, which no balancer can undo).
  std::size_t fresh = 0, failed = 0, straddled = 0, straddled_failed = 0;
  for (Load* load : {&a, &b}) {
    for (const auto& r : load->since(kills.front())) {
      const auto next = std::upper_bound(kills.begin(), kills.end(), r.started);
      const bool straddles = next != kills.end() && r.started + r.took > *next;
      (straddles ? straddled : fresh)++;
      if (r.answered_by.empty()) (straddles ? straddled_failed : failed)++;
    }
  }
  std::printf(
      "%s: %d SIGKILLs; new connections %zu, failed %zu; in flight at a crash %zu, failed %zu\n",
      name_of(kind), kCrashes, fresh, failed, straddled, straddled_failed);
  EXPECT_EQ(failed, 0u) << lb.process().log().substr(0, 4000);
  EXPECT_GT(fresh, static_cast<std::size_t>(kCrashes) * 20);
  const std::string metrics = http_get(loopback(admin), "/metrics", kDeadline).body;
  const auto at = metrics.find("\napiserver_lb_client_connections_replayed_total ");
  ASSERT_NE(at, std::string::npos) << metrics;
  std::printf("%s\n", metrics.substr(at + 1, metrics.find('\n', at + 1) - at - 1).c_str());
}

INSTANTIATE_TEST_SUITE_P(Clients, ReplayCrashes,
                         testing::Values(Kind::tls, Kind::plain, Kind::greeting),
                         [](const auto& info) { return std::string(name_of(info.param)); });

// A kube-apiserver stopping with --shutdown-delay-duration: /readyz red at once, its listener
// closed after the delay, in-flight requests finished. With https checks the balancer has drained
// it before its listener closes; with tcp checks (which see nothing until then) retries and the
// replay cover the listener's close, and the requests in flight on it finish: a refused connect
// marks it down without closing its connections. Either way no request fails.
class GracefulShutdown : public testing::TestWithParam<std::string> {};

long long ms(steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

TEST_P(GracefulShutdown, OfAMasterLosesNoRequest) {
  const std::string mode = GetParam();
  constexpr int kDelayMs = 1000;
  TempDir dir;
  const std::string config = "health: { mode: " + mode +
                             ", interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }\nthreads: 2\n";
  std::vector<std::unique_ptr<StandinProcess>> masters;
  std::vector<std::string> args{"--config", dir.write("config.yaml", config).string()};
  for (int i = 1; i <= 3; ++i) {
    StandinOptions o("m" + std::to_string(i));
    if (i == 2) o.with_arg("--shutdown-delay").with_arg(std::to_string(kDelayMs));
    masters.push_back(std::make_unique<StandinProcess>(APILB_STANDIN, o));
    args.push_back("--target");
    args.push_back(to_string(masters.back()->endpoint()));
  }
  LbProcess lb(args);
  const std::string m2 = to_string(masters[1]->endpoint());
  for (const auto& m : masters)
    ASSERT_TRUE(wait_state(lb.process(), to_string(m->endpoint()), "up", 0, nullptr, kDeadline));

  Load a([&] { return ask(Kind::tls, lb.endpoint()); }),
      b([&] { return ask(Kind::tls, lb.endpoint()); });
  ASSERT_TRUE(a.more(20) && b.more(20));
  const std::size_t from = lb.process().log().size();
  const auto stopping = steady_clock::now();
  masters[1]->process().send_signal(SIGTERM);
  const auto drained =
      wait_state(lb.process(), m2, mode == "https" ? "draining" : "down", from, nullptr, kDeadline);
  ASSERT_TRUE(drained) << lb.process().log();
  ASSERT_EQ(masters[1]->process().wait_exit(kDeadline), 0);
  ASSERT_TRUE(a.more(20) && b.more(20));
  a.stop();
  b.stop();
  std::printf(
      "graceful stop, %s checks: m2 %s %lld ms after SIGTERM (listener closed at %d ms); "
      "%zu requests, %zu failed\n",
      mode.c_str(), mode == "https" ? "draining" : "down", ms(*drained - stopping), kDelayMs,
      a.since(stopping).size() + b.since(stopping).size(),
      a.failures(stopping) + b.failures(stopping));
  if (mode == "https") {
    EXPECT_LT(*drained - stopping, std::chrono::milliseconds(kDelayMs));
  }
  std::string lost;  // when each failed request started and how long it took, from the SIGTERM
  for (Load* load : {&a, &b})
    for (const auto& r : load->since(stopping))
      if (r.answered_by.empty())
        lost += " +" + std::to_string(ms(r.started - stopping)) + " ms (" +
                std::to_string(ms(r.took)) + " ms)";
  EXPECT_EQ(a.failures(stopping) + b.failures(stopping), 0u) << "failed:" << lost << "\n"
                                                             << lb.process().log();
}

INSTANTIATE_TEST_SUITE_P(Checks, GracefulShutdown, testing::Values("https", "tcp"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace apilb::test
