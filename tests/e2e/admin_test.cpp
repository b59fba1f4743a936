// The admin API end to end: the real binary, a real HTTP client on loopback, the metrics text
// checked against the Prometheus exposition format line by line.
#include "tests/e2e/lb_process.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;

// apiserver-lb with its admin API on a free loopback port.
class Admin {
 public:
  explicit Admin(std::vector<std::string> args,
                 std::string config = "health: { interval: 200ms, timeout: 100ms }\n")
      : port_(free_port()) {
    args.insert(args.begin(), {"--config", dir_.write("config.yaml", config).string(), "--admin",
                               "127.0.0.1:" + std::to_string(port_)});
    lb_.emplace(args);
  }
  tcp::endpoint admin() const { return loopback(port_); }
  LbProcess& lb() { return *lb_; }
  HttpReply get(std::string_view path) { return http_get(admin(), path, kDeadline); }

 private:
  TempDir dir_;
  std::uint16_t port_;
  std::optional<LbProcess> lb_;
};

// Samples of one metrics text, keyed by "name{labels}" as exposed.
using Samples = std::map<std::string, double>;

// Checks `text` against the Prometheus text format (0.0.4) rules we rely on; returns the samples.
Samples parse_exposition(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex type(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? ([-+0-9.eE]+|\+Inf|-Inf|NaN))");
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  Samples samples;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (line.starts_with("# HELP")) {
      EXPECT_TRUE(std::regex_match(line, m, help)) << "line " << n << ": " << line;
      EXPECT_TRUE(helped.insert(m[1]).second) << "HELP twice for " << m[1];
    } else if (line.starts_with("# TYPE")) {
      EXPECT_TRUE(std::regex_match(line, m, type)) << "line " << n << ": " << line;
      EXPECT_TRUE(types.emplace(m[1], m[2]).second) << "TYPE twice for " << m[1];
      if (m[2] == "counter") {
        EXPECT_TRUE(std::string(m[1]).ends_with("_total")) << m[1];
      }
    } else {
      if (!std::regex_match(line, m, sample)) {
        ADD_FAILURE() << "line " << n << " is not a sample: " << line;
        continue;
      }
      std::string family = m[1];
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (!types.contains(family) && family.ends_with(suffix))
          family = family.substr(0, family.size() - std::strlen(suffix));
      EXPECT_TRUE(types.contains(family)) << "sample before its TYPE: " << line;
      const std::string value = m[4];
      samples[std::string(m[1]) + std::string(m[2])] = value == "+Inf"   ? INFINITY
                                                       : value == "-Inf" ? -INFINITY
                                                                         : std::stod(value);
    }
  }
  return samples;
}

double sample(const Samples& s, const std::string& key) {
  const auto it = s.find(key);
  return it == s.end() ? -1 : it->second;
}

TEST(Admin, HealthzAnswersOkWhateverTheTargets) {
  RefusingTarget dead;
  Admin a({"--target", to_string(dead.endpoint())});
  const auto r = a.get("/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
}

TEST(Admin, ReadyzIsReadyWithAHealthyTargetAndNotInPanicMode) {
  auto backend = std::make_optional<EchoBackend>();
  Admin a({"--target", to_string(backend->endpoint())});
  ASSERT_TRUE(wait_until([&] { return a.get("/readyz").status == 200; }, kDeadline));
  EXPECT_EQ(a.get("/readyz").body, "ok\n");
  backend->stop();
  ASSERT_TRUE(wait_until([&] { return a.get("/readyz").status == 503; }, kDeadline));
  EXPECT_EQ(a.get("/readyz").body, "panic mode: no target is healthy\n");
  EXPECT_EQ(a.get("/healthz").status, 200);
}

TEST(Admin, StatusShowsEveryTargetWithStateLastCheckAndConnections) {
  EchoBackend up;
  RefusingTarget down;
  Admin a({"--target", to_string(up.endpoint()), "--target", to_string(down.endpoint())});
  ASSERT_TRUE(wait_until(
      [&] { return a.get("/status").body.find("\"state\":\"up\"") != std::string::npos; },
      kDeadline));
  ASSERT_EQ(fetch(a.lb().endpoint(), "ping", kDeadline, AfterSend::shut_down_write).data, "ping");
  const auto r = a.get("/status");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.head.find("Content-Type: application/json"), std::string::npos) << r.head;
  for (const std::string& needle :
       {"\"address\":\"" + to_string(up.endpoint()) + "\"",
        "\"address\":\"" + to_string(down.endpoint()) + "\"", std::string("\"state\":\"down\""),
        std::string("\"reason\":\"connection refused\""), std::string("\"origin\":\"config\""),
        std::string("\"balance\":\"least_connections\""), std::string("\"connections_total\":1"),
        std::string("\"ready\":true"), std::string("\"last_check\":{")})
    EXPECT_NE(r.body.find(needle), std::string::npos) << needle << " in " << r.body;
}

TEST(Admin, MetricsFollowTheExpositionFormatAndMoveWithTrafficAndFailures) {
  auto backend = std::make_optional<EchoBackend>();
  const std::string target = to_string(backend->endpoint());
  Admin a({"--target", target});
  ASSERT_TRUE(wait_until([&] { return a.get("/readyz").status == 200; }, kDeadline));
  auto before = parse_exposition(a.get("/metrics").body);
  EXPECT_EQ(sample(before, "apiserver_lb_target_up{target=\"" + target + "\"}"), 1);
  EXPECT_EQ(sample(before, "apiserver_lb_panic_mode"), 0);
  EXPECT_GE(sample(before, "process_open_fds"), 1);
  EXPECT_GT(sample(before, "process_resident_memory_bytes"), 0);
  EXPECT_GT(
      sample(before, "apiserver_lb_health_check_duration_seconds_count{target=\"" + target + "\"}"),
      0);

  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(fetch(a.lb().endpoint(), "12345", kDeadline, AfterSend::shut_down_write).data,
              "12345");
  const auto after = parse_exposition(a.get("/metrics").body);
  EXPECT_EQ(sample(after, "apiserver_lb_connections_total{target=\"" + target + "\"}"), 3);
  EXPECT_EQ(
      sample(after, "apiserver_lb_bytes_total{direction=\"upstream\",target=\"" + target + "\"}"),
      15);
  EXPECT_EQ(
      sample(after, "apiserver_lb_bytes_total{direction=\"downstream\",target=\"" + target + "\"}"),
      15);

  backend->stop();
  ASSERT_TRUE(wait_until(
      [&] {
        const auto s = parse_exposition(a.get("/metrics").body);
        return sample(s, "apiserver_lb_target_up{target=\"" + target + "\"}") == 0 &&
               sample(s, "apiserver_lb_panic_mode") == 1 &&
               sample(s, "apiserver_lb_failovers_total{target=\"" + target + "\"}") == 1;
      },
      kDeadline));
}

TEST(Admin, HeadAnswersLikeGetWithoutABodyAndUnknownPathsAre404) {
  EchoBackend backend;
  Admin a({"--target", to_string(backend.endpoint())});
  const auto head = http_request(a.admin(), "HEAD", "/healthz", kDeadline);
  EXPECT_EQ(head.status, 200);
  EXPECT_NE(head.head.find("Content-Length: 3"), std::string::npos) << head.head;
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(a.get("/nope").status, 404);
  EXPECT_EQ(http_request(a.admin(), "POST", "/healthz", kDeadline).status, 405);
}

// The admin API changes nothing (every method but GET and HEAD is refused), and neither it nor the
// log ever shows the client key the https checks use: not one line of it.
TEST(Admin, IsReadOnlyAndNeverShowsTheHealthCheckKey) {
  StandinProcess master(APILB_STANDIN);
  std::ifstream key_in(master.key_file());
  const std::string key{std::istreambuf_iterator<char>(key_in), {}};
  ASSERT_NE(key.find("PRIVATE KEY"), std::string::npos);
  const std::string yaml = "health: { mode: https, interval: 300ms, timeout: 300ms, ca_file: \"" +
                           master.cert_file().string() + "\", cert_file: \"" +
                           master.cert_file().string() + "\", key_file: \"" +
                           master.key_file().string() + "\" }\n";
  Admin a({"--target", to_string(master.endpoint()), "--log-level", "debug"}, yaml);
  ASSERT_TRUE(wait_until(
      [&] { return a.get("/status").body.find("\"state\":\"up\"") != std::string::npos; },
      kDeadline))
      << a.get("/status").body << a.lb().process().log();
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH"})
    for (const char* path : {"/status", "/metrics", "/readyz", "/healthz"})
      EXPECT_EQ(http_request(a.admin(), method, path, kDeadline).status, 405)
          << method << " " << path;
  EXPECT_NE(a.get("/status").body.find("\"state\":\"up\""), std::string::npos) << "nothing changed";

  a.lb().process().send_signal(SIGHUP);  // a reload logs the settings it takes
  ASSERT_TRUE(a.lb().process().wait_for_log("reloaded the configuration", kDeadline));
  const std::string shown = a.get("/status").body + a.get("/metrics").body + a.lb().process().log();
  std::istringstream lines(key);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    EXPECT_EQ(shown.find(line), std::string::npos) << "shows a line of the key: " << line;
  }
  EXPECT_EQ(shown.find("PRIVATE KEY"), std::string::npos);
}

TEST(Admin, AHugeRequestIsCutOffAndForwardingCarriesOn) {
  EchoBackend backend;
  Admin a({"--target", to_string(backend.endpoint())});
  const std::string huge =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + std::string(1 << 20, 'a') + "\r\n\r\n";
  const auto r = fetch(a.admin(), huge, kDeadline);
  EXPECT_NE(r.data.find("431"), std::string::npos) << r.data.substr(0, 200);
  EXPECT_EQ(fetch(a.lb().endpoint(), "still", kDeadline, AfterSend::shut_down_write).data, "still");
  EXPECT_EQ(a.get("/healthz").status, 200);
}

TEST(Admin, AThousandIdleAdminConnectionsDoNotDisturbForwarding) {
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 4096) {
    files.rlim_cur = std::min<rlim_t>(4096, files.rlim_max);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);  // this test process holds the 1,000 sockets
  }
  EchoBackend backend;
  Admin a({"--target", to_string(backend.endpoint())});
  asio::io_context io;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 1000; ++i) {
    idle.emplace_back(io);
    boost::system::error_code ec;
    idle.back().connect(a.admin(), ec);
  }
  for (int i = 0; i < 20; ++i) {
    const auto started = std::chrono::steady_clock::now();
    ASSERT_EQ(fetch(a.lb().endpoint(), "through", kDeadline, AfterSend::shut_down_write).data,
              "through");
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  }
  EXPECT_TRUE(a.lb().process().running());
}

TEST(StatusCommand, PrintsATableAndExitsZeroWhenReadyOneWhenNotTwoWhenNoAnswer) {
  auto backend = std::make_optional<EchoBackend>();
  const std::string target = to_string(backend->endpoint());
  Admin a({"--target", target});
  const std::string admin = to_string(a.admin());
  ASSERT_TRUE(wait_until([&] { return a.get("/readyz").status == 200; }, kDeadline));
  {
    ChildProcess status(APILB_BINARY, {"status", "--admin", admin});
    EXPECT_EQ(status.wait_exit(kDeadline), 0);
    EXPECT_NE(status.log().find("TARGET"), std::string::npos) << status.log();
    EXPECT_NE(status.log().find(target), std::string::npos) << status.log();
    EXPECT_NE(status.log().find(" up "), std::string::npos) << status.log();
  }
  backend->stop();
  ASSERT_TRUE(wait_until([&] { return a.get("/readyz").status == 503; }, kDeadline));
  {
    ChildProcess status(APILB_BINARY, {"status", "--admin", admin});
    EXPECT_EQ(status.wait_exit(kDeadline), 1);
    EXPECT_NE(status.log().find("NOT READY: panic mode"), std::string::npos) << status.log();
  }
  RefusingTarget nobody;
  ChildProcess status(APILB_BINARY, {"status", "--admin", to_string(nobody.endpoint())});
  EXPECT_EQ(status.wait_exit(kDeadline), 2);
  EXPECT_NE(status.log().find("no answer"), std::string::npos) << status.log();
}

}  // namespace
}  // namespace apilb::test
