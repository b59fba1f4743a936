#include "config/config.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace apilb::config {
namespace {

using namespace std::chrono_literals;

Config parsed(std::string_view yaml) {
  auto result = parse_config(yaml, "config.yaml");
  if (!result) {
    ADD_FAILURE() << result.error().message() << "\nin:\n" << yaml;
    return {};
  }
  return *result;
}

// The message parse_config gives for `yaml`, or a failure when it parses.
std::string parse_error(std::string_view yaml) {
  auto result = parse_config(yaml, "config.yaml");
  if (result) {
    ADD_FAILURE() << "parsed, expected an error:\n" << yaml;
    return {};
  }
  return result.error().message();
}

// Parses then finalizes with `overrides`: the path `apiserver-lb run` takes.
Result<Config> finalized(std::string_view yaml, const Overrides& overrides = {}) {
  auto result = parse_config(yaml, "config.yaml");
  if (!result) return result;
  return finalize(std::move(*result), overrides, "config.yaml");
}

std::string finalize_error(std::string_view yaml, const Overrides& overrides = {}) {
  const auto result = finalized(yaml, overrides);
  if (result) {
    ADD_FAILURE() << "finalized, expected an error:\n" << yaml;
    return {};
  }
  return result.error().message();
}

struct Case {
  std::string yaml;
  std::string message;
};

void expect_errors(const std::vector<Case>& cases) {
  for (const auto& [yaml, message] : cases) {
    SCOPED_TRACE(yaml);
    EXPECT_EQ(parse_error(yaml), message);
  }
}

// A file written for the test, removed after it.
class TempFile {
 public:
  explicit TempFile(std::string_view contents)
      : path_(std::filesystem::temp_directory_path() /
              ("apilb-config-test-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml")) {
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void expect_defaults(const Config& c) {
  EXPECT_EQ(c.listen, (std::vector<Address>{{"0.0.0.0", 6443}}));
  EXPECT_EQ(c.admin.listen, (Address{"127.0.0.1", 9445}));
  EXPECT_TRUE(c.targets.empty());
  EXPECT_EQ(c.targets_file, "");
  EXPECT_EQ(c.first_master, std::nullopt);
  EXPECT_EQ(c.balance, Balance::least_connections);
  EXPECT_EQ(c.health.mode, HealthMode::tcp);
  EXPECT_EQ(c.health.interval, 2s);
  EXPECT_EQ(c.health.timeout, 1s);
  EXPECT_EQ(c.health.rise, 2);
  EXPECT_EQ(c.health.fall, 2);
  EXPECT_EQ(c.health.path, "/readyz");
  EXPECT_EQ(c.health.ca_file, "");
  EXPECT_EQ(c.health.cert_file, "");
  EXPECT_EQ(c.health.key_file, "");
  EXPECT_EQ(c.upstream.connect_timeout, 2s);
  EXPECT_EQ(c.upstream.retries, 2);
  EXPECT_EQ(c.upstream.on_target_down, OnTargetDown::close);
  EXPECT_EQ(c.tcp.keepalive_idle, 30s);
  EXPECT_EQ(c.tcp.keepalive_interval, 10s);
  EXPECT_EQ(c.tcp.keepalive_count, 3);
  EXPECT_EQ(c.tcp.user_timeout, 30s);
  EXPECT_EQ(c.relay.splice, SpliceMode::automatic);
  EXPECT_EQ(c.relay.buffer_size, 16u * 1024);
  EXPECT_EQ(c.relay.engine, Engine::automatic);
  EXPECT_EQ(c.limits.max_connections, 100000u);
  EXPECT_EQ(c.drain_timeout, 30s);
  EXPECT_EQ(c.threads, 0u);
  EXPECT_EQ(c.log.level, LogLevel::info);
  EXPECT_EQ(c.log.format, LogFormat::text);
}

// ---- Reading values ----

TEST(ParseConfig, GivesTheDefaultsForAnEmptyDocument) {
  expect_defaults(parsed(""));
  expect_defaults(parsed("# nothing yet\n\n# still nothing\n"));
  expect_defaults(parsed("---\n"));
}

TEST(ParseConfig, GivesTheDefaultsForEmptySections) {
  expect_defaults(parsed("admin: {}\nhealth:\nupstream: {}\ntcp:\nrelay:\nlimits:\nlog: {}\n"));
}

TEST(ParseConfig, ReadsTheProductExample) {
  const Config c = parsed(R"(
listen: ["0.0.0.0:6443"]
admin: { listen: "127.0.0.1:9445" }
targets: ["10.0.0.11:6443", "10.0.0.12:6443"]
targets_file: /etc/apiserver-lb/targets.yaml    # optional; see the feed format below
first_master: "10.0.0.11:6443"                  # used when no target is configured
balance: least_connections                      # round_robin | least_connections | random_two
health: { mode: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 2,
          path: /readyz, ca_file: "", cert_file: "", key_file: "" }   # mode: tcp | tls | https
upstream: { connect_timeout: 2s, retries: 2, on_target_down: close }   # close | keep
limits: { max_connections: 100000 }
drain_timeout: 30s
threads: 0                                      # 0 = one per core
log: { level: info, format: text }              # text | json
)");
  EXPECT_EQ(c.targets, (std::vector<Address>{{"10.0.0.11", 6443}, {"10.0.0.12", 6443}}));
  EXPECT_EQ(c.targets_file, "/etc/apiserver-lb/targets.yaml");
  EXPECT_EQ(c.first_master, (Address{"10.0.0.11", 6443}));
  Config rest = c;
  rest.targets.clear();
  rest.targets_file.clear();
  rest.first_master.reset();
  expect_defaults(rest);
}

TEST(ParseConfig, ReadsEveryFieldWhenSetAwayFromItsDefault) {
  const Config c = parsed(R"(
listen:
  - 127.0.0.1:7443
  - "[::]:6443"
admin:
  listen: "[::1]:9000"
targets:
  - master-1.example
  - 10.0.0.12:443
  - "[fd00::13]"
targets_file: targets.yaml
first_master: master-1.example:6444
balance: random_two
health:
  mode: https
  interval: 1m30s
  timeout: 500ms
  rise: 1
  fall: 100
  path: /readyz?verbose
  ca_file: /etc/kubernetes/pki/ca.crt
  cert_file: /etc/lb/client.crt
  key_file: /etc/lb/client.key
upstream:
  connect_timeout: 1s
  retries: 0
  on_target_down: keep
tcp:
  keepalive_idle: 0
  keepalive_interval: 1s
  keepalive_count: 100
  user_timeout: 24h
relay:
  splice: never
  buffer_size: 1048576
limits:
  max_connections: 10000000
drain_timeout: 0s
threads: 1024
log:
  level: debug
  format: json
)");
  EXPECT_EQ(c.listen, (std::vector<Address>{{"127.0.0.1", 7443}, {"::", 6443}}));
  EXPECT_EQ(c.admin.listen, (Address{"::1", 9000}));
  EXPECT_EQ(c.targets, (std::vector<Address>{
                           {"master-1.example", 6443}, {"10.0.0.12", 443}, {"fd00::13", 6443}}));
  EXPECT_EQ(c.targets_file, "targets.yaml");
  EXPECT_EQ(c.first_master, (Address{"master-1.example", 6444}));
  EXPECT_EQ(c.balance, Balance::random_two);
  EXPECT_EQ(c.health.mode, HealthMode::https);
  EXPECT_EQ(c.health.interval, 90s);
  EXPECT_EQ(c.health.timeout, 500ms);
  EXPECT_EQ(c.health.rise, 1);
  EXPECT_EQ(c.health.fall, 100);
  EXPECT_EQ(c.health.path, "/readyz?verbose");
  EXPECT_EQ(c.health.ca_file, "/etc/kubernetes/pki/ca.crt");
  EXPECT_EQ(c.health.cert_file, "/etc/lb/client.crt");
  EXPECT_EQ(c.health.key_file, "/etc/lb/client.key");
  EXPECT_EQ(c.upstream.connect_timeout, 1s);
  EXPECT_EQ(c.upstream.retries, 0);
  EXPECT_EQ(c.upstream.on_target_down, OnTargetDown::keep);
  EXPECT_EQ(c.tcp.keepalive_idle, 0s);
  EXPECT_EQ(c.tcp.keepalive_interval, 1s);
  EXPECT_EQ(c.tcp.keepalive_count, 100);
  EXPECT_EQ(c.tcp.user_timeout, 24h);
  EXPECT_EQ(c.relay.splice, SpliceMode::never);
  EXPECT_EQ(c.relay.buffer_size, 1048576u);
  EXPECT_EQ(c.limits.max_connections, 10000000u);
  EXPECT_EQ(c.drain_timeout, 0s);
  EXPECT_EQ(c.threads, 1024u);
  EXPECT_EQ(c.log.level, LogLevel::debug);
  EXPECT_EQ(c.log.format, LogFormat::json);
}

TEST(ParseConfig, ReadsEveryEnumValueByItsName) {
  for (auto v : {Balance::round_robin, Balance::least_connections, Balance::random_two})
    EXPECT_EQ(parsed("balance: " + std::string(to_string(v))).balance, v);
  for (auto v : {HealthMode::tcp, HealthMode::tls, HealthMode::https})
    EXPECT_EQ(parsed("health: {mode: " + std::string(to_string(v)) + "}").health.mode, v);
  for (auto v : {OnTargetDown::close, OnTargetDown::keep})
    EXPECT_EQ(parsed("upstream: {on_target_down: " + std::string(to_string(v)) + "}")
                  .upstream.on_target_down,
              v);
  for (auto v : {SpliceMode::automatic, SpliceMode::always, SpliceMode::never})
    EXPECT_EQ(parsed("relay: {splice: " + std::string(to_string(v)) + "}").relay.splice, v);
  for (auto v : {Engine::automatic, Engine::uring, Engine::epoll})
    EXPECT_EQ(parsed("relay: {engine: " + std::string(to_string(v)) + "}").relay.engine, v);
  for (auto v : {LogFormat::text, LogFormat::json})
    EXPECT_EQ(parsed("log: {format: " + std::string(to_string(v)) + "}").log.format, v);
  for (auto v : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error,
                 LogLevel::critical, LogLevel::off})
    EXPECT_EQ(parsed("log: {level: " + std::string(to_string(v)) + "}").log.level, v);
}

TEST(ParseConfig, GivesTargetsWithoutAPortPort6443) {
  EXPECT_EQ(parsed("targets: [10.0.0.11, master-2]").targets,
            (std::vector<Address>{{"10.0.0.11", 6443}, {"master-2", 6443}}));
  EXPECT_EQ(parsed("first_master: 10.0.0.11").first_master, (Address{"10.0.0.11", 6443}));
}

TEST(ParseConfig, DisablesAdminWithAnEmptyListenAddress) {
  EXPECT_EQ(parsed("admin: {listen: \"\"}").admin.listen, std::nullopt);
  EXPECT_EQ(parsed("admin:\n  listen:\n").admin.listen, std::nullopt);
}

TEST(ParseConfig, ReadsAnAbsentListAsEmpty) {
  EXPECT_TRUE(parsed("targets:\n").targets.empty());
  EXPECT_TRUE(parsed("listen: []\n").listen.empty());  // finalize() refuses it, with its position
}

TEST(ParseConfig, ReadsQuotedNumbersAndDurations) {
  const Config c = parsed("threads: \"4\"\nhealth: {interval: '3s'}\n");
  EXPECT_EQ(c.threads, 4u);
  EXPECT_EQ(c.health.interval, 3s);
}

// ---- Rejecting values, word for word ----

TEST(ParseConfig, RejectsMalformedDurationsWithPosition) {
  expect_errors({
      {"health:\n  interval: 2x\n", "config.yaml:2:13: health.interval: \"2x\" is not a duration"},
      {"health:\n  interval: 2\n", "config.yaml:2:13: health.interval: \"2\" is not a duration"},
      {"drain_timeout: -1s\n", "config.yaml:1:16: drain_timeout: \"-1s\" is not a duration"},
      {"drain_timeout: 1.5s\n", "config.yaml:1:16: drain_timeout: \"1.5s\" is not a duration"},
      {"upstream:\n  connect_timeout: 30s1m\n",
       "config.yaml:2:20: upstream.connect_timeout: \"30s1m\" is not a duration"},
  });
}

TEST(ParseConfig, RejectsDurationsOutOfRange) {
  expect_errors({
      {"health:\n  interval: 0s\n",
       "config.yaml:2:13: health.interval: must be at least 1ms, got 0s"},
      {"health:\n  timeout: 0\n", "config.yaml:2:12: health.timeout: must be at least 1ms, got 0"},
      {"upstream:\n  connect_timeout: 0ms\n",
       "config.yaml:2:20: upstream.connect_timeout: must be at least 1ms, got 0ms"},
      {"tcp:\n  keepalive_interval: 0s\n",
       "config.yaml:2:23: tcp.keepalive_interval: must be between 1s and 9h6m7s, got 0s"},
      {"tcp:\n  keepalive_idle: 9h6m8s\n",
       "config.yaml:2:19: tcp.keepalive_idle: must be between 0s and 9h6m7s, got 9h6m8s"},
      {"tcp:\n  user_timeout: 25h\n",
       "config.yaml:2:17: tcp.user_timeout: must be between 0s and 24h, got 25h"},
  });
}

TEST(ParseConfig, RejectsSubSecondTcpKeepaliveTimes) {
  expect_errors({
      {"tcp:\n  keepalive_idle: 1500ms\n",
       "config.yaml:2:19: tcp.keepalive_idle: must be a whole number of seconds, got 1500ms"},
      {"tcp:\n  keepalive_interval: 1s1ms\n",
       "config.yaml:2:23: tcp.keepalive_interval: must be a whole number of seconds, got 1001ms"},
  });
}

TEST(ParseConfig, RejectsIntegersOutOfRange) {
  expect_errors({
      {"health:\n  rise: 0\n", "config.yaml:2:9: health.rise: must be between 1 and 100, got 0"},
      {"health:\n  fall: 101\n",
       "config.yaml:2:9: health.fall: must be between 1 and 100, got 101"},
      {"upstream:\n  retries: -1\n",
       "config.yaml:2:12: upstream.retries: must be between 0 and 10, got -1"},
      {"upstream:\n  retries: 11\n",
       "config.yaml:2:12: upstream.retries: must be between 0 and 10, got 11"},
      {"threads: 1025\n", "config.yaml:1:10: threads: must be between 0 and 1024, got 1025"},
      {"threads: 99999999999999999999999\n",
       "config.yaml:1:10: threads: must be between 0 and 1024, got 99999999999999999999999"},
      {"limits:\n  max_connections: 0\n",
       "config.yaml:2:20: limits.max_connections: must be between 1 and 10000000, got 0"},
      {"limits:\n  max_connections: 10000001\n",
       "config.yaml:2:20: limits.max_connections: must be between 1 and 10000000, got 10000001"},
      {"tcp:\n  keepalive_count: 0\n",
       "config.yaml:2:20: tcp.keepalive_count: must be between 1 and 100, got 0"},
      {"relay:\n  buffer_size: 1023\n",
       "config.yaml:2:16: relay.buffer_size: must be between 1024 and 1048576, got 1023"},
      {"relay:\n  buffer_size: 1048577\n",
       "config.yaml:2:16: relay.buffer_size: must be between 1024 and 1048576, got 1048577"},
  });
}

TEST(ParseConfig, RejectsIntegersThatAreNotWholeNumbers) {
  expect_errors({
      {"health:\n  rise: 1.5\n", "config.yaml:2:9: health.rise: \"1.5\" is not a whole number"},
      {"health:\n  rise: abc\n", "config.yaml:2:9: health.rise: \"abc\" is not a whole number"},
      {"health:\n  rise: +2\n", "config.yaml:2:9: health.rise: \"+2\" is not a whole number"},
      {"threads: 0x10\n", "config.yaml:1:10: threads: \"0x10\" is not a whole number"},
      {"threads: 4 cores\n", "config.yaml:1:10: threads: \"4 cores\" is not a whole number"},
  });
}

TEST(ParseConfig, RejectsMissingValuesAtTheirKey) {
  expect_errors({
      {"health:\n  rise:\n", "config.yaml:2:3: health.rise: missing value"},
      {"health:\n  rise: \"\"\n", "config.yaml:2:9: health.rise: missing value"},
      {"balance: ~\n", "config.yaml:1:1: balance: missing value"},
      {"first_master: \"\"\n", "config.yaml:1:15: first_master: missing value"},
      {"targets: [\"\"]\n", "config.yaml:1:11: targets[0]: missing value"},
  });
}

TEST(ParseConfig, RejectsUnknownEnumValuesListingTheValidOnes) {
  expect_errors({
      {"balance: fast\n",
       "config.yaml:1:10: balance: \"fast\" is not one of round_robin, least_connections, "
       "random_two"},
      {"balance: Round_Robin\n",
       "config.yaml:1:10: balance: \"Round_Robin\" is not one of round_robin, least_connections, "
       "random_two"},
      {"health:\n  mode: http\n",
       "config.yaml:2:9: health.mode: \"http\" is not one of tcp, tls, https"},
      {"upstream:\n  on_target_down: drop\n",
       "config.yaml:2:19: upstream.on_target_down: \"drop\" is not one of close, keep"},
      {"log:\n  level: verbose\n",
       "config.yaml:2:10: log.level: \"verbose\" is not one of trace, debug, info, warn, error, "
       "critical, off"},
      {"log:\n  format: xml\n", "config.yaml:2:11: log.format: \"xml\" is not one of text, json"},
      {"relay:\n  splice: automatic\n",
       "config.yaml:2:11: relay.splice: \"automatic\" is not one of auto, always, never"},
      {"relay:\n  splice: auto\n  engine: io_uring\n",
       "config.yaml:3:11: relay.engine: \"io_uring\" is not one of auto, uring, epoll"},
  });
}

TEST(ParseConfig, RejectsMalformedAddressesNamingTheListEntry) {
  expect_errors({
      {"listen: [\"0.0.0.0:6443\", \"10.0.0.1:99999\"]\n",
       "config.yaml:1:26: listen[1]: \"10.0.0.1:99999\": port 99999 is out of range"},
      {"targets:\n  - 10.0.0.11\n  - 10.0.0.12:https\n",
       "config.yaml:3:5: targets[1]: \"10.0.0.12:https\": port \"https\" is not a number"},
      {"targets:\n  - \"::1\"\n",
       "config.yaml:2:5: targets[0]: \"::1\": an IPv6 address must be in brackets, as in "
       "[fd00::1]:6443"},
      {"targets: [master_1]\n",
       "config.yaml:1:11: targets[0]: \"master_1\": \"master_1\" is not a valid host name"},
      {"first_master: 10.0.0.1:0\n",
       "config.yaml:1:15: first_master: \"10.0.0.1:0\": port 0 is out of range"},
      {"first_master: \"[::1\"\n",
       "config.yaml:1:15: first_master: \"[::1\": missing ']' after the IPv6 address"},
  });
}

TEST(ParseConfig, RequiresIpAndPortForAddressesToListenOn) {
  expect_errors({
      {"listen:\n  - 0.0.0.0:6443\n  - lb.example:6443\n",
       "config.yaml:3:5: listen[1]: \"lb.example:6443\": needs an IP address to listen on, not a "
       "host name"},
      {"listen: [0.0.0.0]\n", "config.yaml:1:10: listen[0]: \"0.0.0.0\": missing port"},
      {"admin:\n  listen: localhost:9445\n",
       "config.yaml:2:11: admin.listen: \"localhost:9445\": needs an IP address to listen on, not "
       "a host name"},
      {"admin:\n  listen: 127.0.0.1\n",
       "config.yaml:2:11: admin.listen: \"127.0.0.1\": missing port"},
  });
}

TEST(ParseConfig, RejectsHealthPathsThatAreNotAbsolute) {
  expect_errors({
      {"health:\n  path: readyz\n",
       "config.yaml:2:9: health.path: \"readyz\" is not a URL path starting with /"},
      {"health:\n  path: \"/ready z\"\n",
       "config.yaml:2:9: health.path: \"/ready z\" is not a URL path starting with /"},
  });
}

TEST(ParseConfig, RejectsUnknownTopLevelKeyListingTheValidOnes) {
  EXPECT_EQ(
      parse_error("listen: [\"0.0.0.0:6443\"]\nbalancer: round_robin\n"),
      "config.yaml:2:1: unknown key \"balancer\" (valid: listen, listeners, admin, targets, "
      "targets_file, first_master, balance, health, upstream, tcp, relay, limits, drain_timeout, "
      "threads, log, rebalance, upgrade, discovery)");
}

TEST(ParseConfig, RejectsUnknownNestedKeyWithPosition) {
  EXPECT_EQ(parse_error("health:\n  interval: 2s\n  intervall: 3s\n"),
            "config.yaml:3:3: health: unknown key \"intervall\" (valid: mode, interval, "
            "down_interval, timeout, "
            "rise, fall, path, ca_file, cert_file, key_file)");
  EXPECT_EQ(parse_error("admin: {port: 9445}\n"),
            "config.yaml:1:9: admin: unknown key \"port\" (valid: listen)");
  EXPECT_EQ(
      parse_error("tcp:\n  nodelay: true\n"),
      "config.yaml:2:3: tcp: unknown key \"nodelay\" (valid: keepalive_idle, keepalive_interval, "
      "keepalive_count, user_timeout)");
}

TEST(ParseConfig, RejectsAKeyGivenTwice) {
  EXPECT_EQ(parse_error("threads: 1\nthreads: 2\n"), "config.yaml:2:1: duplicate key \"threads\"");
  EXPECT_EQ(parse_error("log:\n  level: info\n  level: debug\n"),
            "config.yaml:3:3: log: duplicate key \"level\"");
}

TEST(ParseConfig, RejectsNodesOfTheWrongKind) {
  expect_errors({
      {"listen: \"0.0.0.0:6443\"\n",
       "config.yaml:1:9: listen: expected a list, got a single value"},
      {"targets: {a: b}\n", "config.yaml:1:10: targets: expected a list, got a map"},
      {"targets:\n  - [10.0.0.1]\n",
       "config.yaml:2:5: targets[0]: expected a single value, got a list"},
      {"health: [tcp]\n", "config.yaml:1:9: health: expected a map, got a list"},
      {"health: tcp\n", "config.yaml:1:9: health: expected a map, got a single value"},
      {"balance: [round_robin]\n",
       "config.yaml:1:10: balance: expected a single value, got a list"},
      {"health:\n  interval: {s: 2}\n",
       "config.yaml:2:13: health.interval: expected a single value, got a map"},
      {"targets_file: [a, b]\n",
       "config.yaml:1:15: targets_file: expected a single value, got a list"},
      {"- listen\n", "config.yaml:1:1: expected a map, got a list"},
      {"just some text\n", "config.yaml:1:1: expected a map, got a single value"},
  });
}

TEST(ParseConfig, ReportsYamlSyntaxErrorsWithPosition) {
  expect_errors({
      {"listen: [\"0.0.0.0:6443\"\nthreads: 2\n",
       "config.yaml:2:1: invalid YAML: end of sequence flow not found"},
      {"balance: round_robin: x\n", "config.yaml:1:21: invalid YAML: illegal map value"},
  });
}

// ---- Cross-field rules and overrides ----

TEST(Finalize, AcceptsAValidConfigUnchanged) {
  const auto c =
      finalized("targets: [10.0.0.11, 10.0.0.12]\nhealth: {interval: 1s, timeout: 1s}\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->targets.size(), 2u);
  EXPECT_EQ(c->health.timeout, 1s);
}

TEST(Finalize, AcceptsATargetsFileOrAFirstMasterInsteadOfTargets) {
  EXPECT_TRUE(finalized("targets_file: /etc/apiserver-lb/targets.yaml\n"));
  EXPECT_TRUE(finalized("first_master: 10.0.0.11\n"));
}

TEST(Finalize, RejectsAConfigWithNothingToSendTrafficTo) {
  EXPECT_EQ(finalize_error(""),
            "config.yaml: targets: no targets, no targets_file and no first_master: nothing to "
            "send traffic to");
  EXPECT_EQ(
      finalize_error("threads: 1\ntargets: []\n"),
      "config.yaml:2:10: targets: no targets, no targets_file and no first_master: nothing to send "
      "traffic to");
}

TEST(Finalize, RequiresAListenAddress) {
  EXPECT_EQ(finalize_error("targets: [a]\nlisten: []\n"),
            "config.yaml:2:9: listen: needs at least one address");
}

TEST(Finalize, RejectsAnAddressListedTwice) {
  EXPECT_EQ(finalize_error("targets: [a]\nlisten: [\"0.0.0.0:6443\", \"0.0.0.0:6443\"]\n"),
            "config.yaml:2:26: listen[1]: \"0.0.0.0:6443\" is already listed as listen[0]");
  EXPECT_EQ(finalize_error("targets:\n  - 10.0.0.11\n  - 10.0.0.12\n  - 10.0.0.11:6443\n"),
            "config.yaml:4:5: targets[2]: \"10.0.0.11:6443\" is already listed as targets[0]");
}

TEST(Finalize, RejectsAnAdminAddressThatIsAlsoAListenAddress) {
  EXPECT_EQ(finalize_error("targets: [a]\nlisten: [\"127.0.0.1:9445\"]\n"),
            "config.yaml: admin.listen: \"127.0.0.1:9445\" is also a listen address");
  EXPECT_EQ(finalize_error("targets: [a]\nadmin: {listen: \"0.0.0.0:6443\"}\n"),
            "config.yaml:2:17: admin.listen: \"0.0.0.0:6443\" is also a listen address");
}

TEST(Finalize, RejectsAHealthTimeoutLongerThanTheInterval) {
  EXPECT_EQ(finalize_error("targets: [a]\nhealth:\n  interval: 1s\n  timeout: 1001ms\n"),
            "config.yaml:4:12: health.timeout: 1001ms is longer than health.interval (1s)");
  EXPECT_EQ(finalize_error("targets: [a]\nhealth: {timeout: 3s}\n"),
            "config.yaml:2:19: health.timeout: 3s is longer than health.interval (2s)");
  // Written only as a shorter interval: the timeout has no line of its own, its section has.
  EXPECT_EQ(finalize_error("targets: [a]\nhealth: {interval: 500ms}\n"),
            "config.yaml:2:9: health.timeout: 1s is longer than health.interval (500ms)");
}

TEST(ParseConfig, ReadsListenersRebalanceAndUpgrade) {
  const Config c = parsed(R"(
health: { mode: https, interval: 1s, timeout: 500ms }
listeners:
  - listen: 0.0.0.0:9345
    health_from: 6443
  - listen: ["0.0.0.0:2379", "[::]:2379"]
    target_port: 12379
    health: { mode: tcp }
rebalance: { enabled: true, threshold: 1.25, after: 30s, rate: 0.5 }
upgrade: { socket: /run/lb.sock, timeout: 1m }
)");
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].listen, (std::vector<Address>{{"0.0.0.0", 9345}}));
  EXPECT_EQ(c.listeners[0].port(), 9345);
  EXPECT_EQ(c.listeners[0].health_from, 6443);
  EXPECT_EQ(c.listeners[1].listen, (std::vector<Address>{{"0.0.0.0", 2379}, {"::", 2379}}));
  EXPECT_EQ(c.listeners[1].port(), 12379);
  EXPECT_FALSE(c.listeners[1].health_from);
  // A listener's health is the top-level one with its own fields over it.
  EXPECT_EQ(c.listeners[1].health.mode, HealthMode::tcp);
  EXPECT_EQ(c.listeners[1].health.interval, 1s);
  EXPECT_EQ(c.listeners[1].health.timeout, 500ms);
  EXPECT_TRUE(c.rebalance.enabled);
  EXPECT_EQ(c.rebalance.threshold, 1.25);
  EXPECT_EQ(c.rebalance.after, 30s);
  EXPECT_EQ(c.rebalance.rate, 0.5);
  EXPECT_EQ(c.upgrade.socket_path(), "/run/lb.sock");
  EXPECT_EQ(c.upgrade.timeout, 60s);
}

TEST(ParseConfig, LeavesListenersEmptyRebalanceOffAndTheUpgradeSocketInTheStateDirectory) {
  const Config c = parsed("");
  EXPECT_TRUE(c.listeners.empty());
  EXPECT_FALSE(c.rebalance.enabled);
  ::unsetenv("STATE_DIRECTORY");
  EXPECT_EQ(c.upgrade.socket_path(), "/var/lib/apiserver-lb/upgrade.sock");
  ::setenv("STATE_DIRECTORY", "/var/lib/apiserver-lb-test:/other", 1);
  EXPECT_EQ(c.upgrade.socket_path(), "/var/lib/apiserver-lb-test/upgrade.sock");
  ::unsetenv("STATE_DIRECTORY");
}

TEST(ParseConfig, RejectsBadListenersAndRebalanceValuesWithPosition) {
  EXPECT_EQ(parse_error("listeners:\n  - target_port: 9345\n"),
            "config.yaml:2:5: listeners[0]: needs a listen address");
  EXPECT_EQ(parse_error("listeners:\n  - listen: 0.0.0.0:9345\n    health_from: main\n"),
            "config.yaml:3:18: listeners[0].health_from: \"main\" is not a whole number");
  EXPECT_EQ(parse_error("listeners:\n  - listen: 0.0.0.0:9345\n    port: 1\n"),
            "config.yaml:3:5: listeners[0]: unknown key \"port\" (valid: listen, target_port, "
            "health_from, health)");
  EXPECT_EQ(parse_error("rebalance: { threshold: 1 }\n"),
            "config.yaml:1:25: rebalance.threshold: must be between 1.05 and 100, got 1");
  EXPECT_EQ(parse_error("rebalance: { rate: fast }\n"),
            "config.yaml:1:20: rebalance.rate: \"fast\" is not a number");
}

TEST(ParseConfig, ReadsDiscoveryWithDefaults) {
  const auto c = parse_config(
      "discovery:\n  kubernetes: { kubeconfig: /etc/kubernetes/admin.conf }\n", "config.yaml");
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE(c->discovery.kubernetes);
  EXPECT_EQ(c->discovery.kubernetes->kubeconfig, "/etc/kubernetes/admin.conf");
  EXPECT_FALSE(c->discovery.kubernetes->in_cluster);
  EXPECT_EQ(c->discovery.kubernetes->port_name, "https");
  EXPECT_EQ(c->discovery.kubernetes->resync, 5min);
  EXPECT_EQ(c->discovery.confirm_after, 60s);

  const auto in_cluster = parse_config(
      "discovery:\n  kubernetes: { in_cluster: true, port_name: api, resync: 30s }\n"
      "  confirm_after: 5s\n",
      "config.yaml");
  ASSERT_TRUE(in_cluster) << in_cluster.error().message();
  EXPECT_TRUE(in_cluster->discovery.kubernetes->in_cluster);
  EXPECT_EQ(in_cluster->discovery.kubernetes->port_name, "api");
  EXPECT_EQ(in_cluster->discovery.kubernetes->resync, 30s);
  EXPECT_EQ(in_cluster->discovery.confirm_after, 5s);

  const auto none = parse_config("targets: [10.0.0.1]\n", "config.yaml");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->discovery.kubernetes);
}

TEST(ParseConfig, RejectsBadDiscoveryWithPosition) {
  EXPECT_EQ(parse_error("discovery:\n  kubernetes: {}\n"),
            "config.yaml:2:15: discovery.kubernetes: needs kubeconfig: FILE or in_cluster: true "
            "(how to reach the apiserver)");
  EXPECT_EQ(parse_error("discovery:\n  kubernetes: { kubeconfig: a.conf, in_cluster: true }\n"),
            "config.yaml:2:15: discovery.kubernetes: kubeconfig and in_cluster: true exclude each "
            "other: keep one");
  EXPECT_EQ(parse_error("discovery:\n  kubernetes: { in_cluster: true, resync: 10ms }\n"),
            "config.yaml:2:43: discovery.kubernetes.resync: must be at least 1s, got 10ms");
  EXPECT_EQ(parse_error("discovery:\n  kubernetes: { in_cluster: yes }\n"),
            "config.yaml:2:29: discovery.kubernetes.in_cluster: \"yes\" is not true or false");
  EXPECT_EQ(parse_error("discovery:\n  endpoints: true\n"),
            "config.yaml:2:3: discovery: unknown key \"endpoints\" (valid: kubernetes, "
            "confirm_after)");
}

TEST(Finalize, RejectsListenersThatClashWithTheMainListenerOrEachOther) {
  const auto error = [](const std::string& listeners) {
    return finalize_error("targets: [10.0.0.1, 10.0.0.2]\nlisteners:\n" + listeners);
  };
  EXPECT_EQ(error("  - listen: 0.0.0.0:6443\n"),
            "config.yaml:3:13: listeners[0].listen: \"0.0.0.0:6443\" is already a listen address");
  EXPECT_EQ(error("  - listen: 0.0.0.0:7443\n    target_port: 6443\n"),
            "config.yaml:4:18: listeners[0].target_port: 6443 is the port of `targets`: list "
            "\"0.0.0.0:7443\" under the top-level listen instead");
  EXPECT_EQ(error("  - listen: 0.0.0.0:9345\n  - listen: 0.0.0.0:9346\n    target_port: 9345\n"),
            "config.yaml:5:18: listeners[1].target_port: 9345 is listeners[0]'s target port "
            "already");
  EXPECT_EQ(error("  - listen: 0.0.0.0:9345\n    health_from: 7000\n"),
            "config.yaml:4:18: listeners[0].health_from: no targets use port 7000: name the port "
            "of `targets` or of another listener");
  EXPECT_EQ(error("  - listen: 0.0.0.0:9345\n    health_from: 9345\n"),
            "config.yaml:4:18: listeners[0].health_from: 9345 is this listener's own target port");
  EXPECT_EQ(error("  - listen: 0.0.0.0:9345\n    health_from: 6443\n  - listen: 0.0.0.0:8132\n"
                  "    health_from: 9345\n"),
            "config.yaml:6:18: listeners[1].health_from: the listener on port 9345 follows "
            "another one's checks itself (no chains)");
  EXPECT_EQ(error("  - listen: 0.0.0.0:9345\n    health: { interval: 500ms }\n"),
            "config.yaml:4:13: listeners[0].health.timeout: 1s is longer than "
            "listeners[0].health.interval (500ms)");
}

TEST(ParseConfig, ReplaysTlsFirstFlightsByDefaultAndTakesTheOtherModes) {
  EXPECT_EQ(parsed("").upstream.replay_first_flight, ReplayFirstFlight::tls);
  EXPECT_EQ(parsed("upstream: {replay_first_flight: always}\n").upstream.replay_first_flight,
            ReplayFirstFlight::always);
  EXPECT_EQ(parsed("upstream: {replay_first_flight: never}\n").upstream.replay_first_flight,
            ReplayFirstFlight::never);
  EXPECT_EQ(parse_error("upstream:\n  replay_first_flight: sometimes\n"),
            "config.yaml:2:24: upstream.replay_first_flight: \"sometimes\" is not one of tls, "
            "always, never");
}

TEST(Finalize, DownIntervalDefaultsToTheIntervalAndMustOutlastTheTimeout) {
  const Config plain = parsed("health: {interval: 3s}\n");
  EXPECT_FALSE(plain.health.down_interval);
  EXPECT_EQ(plain.health.settled_down_interval(), 3s);
  const Config slower = parsed("health: {interval: 2s, down_interval: 10s}\n");
  EXPECT_EQ(slower.health.settled_down_interval(), 10s);
  EXPECT_EQ(finalize_error("targets: [a]\nhealth:\n  down_interval: 500ms\n"),
            "config.yaml:3:3: health.timeout: 1s is longer than health.down_interval (500ms)");
  EXPECT_EQ(parse_error("health: {down_interval: soon}\n"),
            "config.yaml:1:25: health.down_interval: \"soon\" is not a duration");
}

TEST(Finalize, RequiresCertAndKeyFilesTogether) {
  EXPECT_EQ(finalize_error("targets: [a]\nhealth:\n  cert_file: /c.pem\n"),
            "config.yaml:3:14: health.cert_file: needs health.key_file as well");
  EXPECT_EQ(finalize_error("targets: [a]\nhealth:\n  key_file: /k.pem\n"),
            "config.yaml:3:13: health.key_file: needs health.cert_file as well");
  EXPECT_TRUE(finalized("targets: [a]\nhealth: {cert_file: /c.pem, key_file: /k.pem}\n"));
}

TEST(Finalize, LetsFlagsReplaceTheFileValues) {
  Overrides flags;
  flags.listen = {{"127.0.0.1", 7443}};
  flags.targets = {{"10.0.0.21", 6443}};
  flags.first_master = Address{"10.0.0.21", 6443};
  flags.admin.emplace(std::nullopt);  // `--admin ""`
  flags.log_level = LogLevel::warn;
  const auto c = finalized(
      "listen: [\"0.0.0.0:6443\"]\ntargets: [10.0.0.11, 10.0.0.12]\nfirst_master: 10.0.0.11\nlog: "
      "{level: debug}\n",
      flags);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->listen, flags.listen);
  EXPECT_EQ(c->targets, flags.targets);
  EXPECT_EQ(c->first_master, flags.first_master);
  EXPECT_EQ(c->admin.listen, std::nullopt);
  EXPECT_EQ(c->log.level, LogLevel::warn);
}

TEST(Finalize, KeepsTheFileValuesForFlagsNotGiven) {
  const auto c = finalized(
      "listen: [\"0.0.0.0:6443\"]\ntargets: [10.0.0.11]\nadmin: {listen: \"127.0.0.1:1\"}\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->listen, (std::vector<Address>{{"0.0.0.0", 6443}}));
  EXPECT_EQ(c->targets, (std::vector<Address>{{"10.0.0.11", 6443}}));
  EXPECT_EQ(c->admin.listen, (Address{"127.0.0.1", 1}));
}

TEST(Finalize, AcceptsAFileWithoutTargetsWhenAFlagGivesOne) {
  Overrides flags;
  flags.targets = {{"10.0.0.11", 6443}};
  EXPECT_TRUE(finalized("", flags));
  Overrides first_master;
  first_master.first_master = Address{"10.0.0.11", 6443};
  EXPECT_TRUE(finalized("", first_master));
}

TEST(Finalize, ReportsErrorsInFlagValuesWithoutAFilePosition) {
  Overrides flags;
  flags.listen = {{"0.0.0.0", 1}, {"0.0.0.0", 1}};
  EXPECT_EQ(finalize_error("targets: [a]\nlisten: [\"0.0.0.0:6443\", \"0.0.0.0:6444\"]\n", flags),
            "config.yaml: listen[1]: \"0.0.0.0:1\" is already listed as listen[0]");
  Overrides admin;
  admin.admin = Address{"0.0.0.0", 6443};
  EXPECT_EQ(finalize_error("targets: [a]\nadmin: {listen: \"127.0.0.1:1\"}\n", admin),
            "config.yaml: admin.listen: \"0.0.0.0:6443\" is also a listen address");
}

TEST(Finalize, ChecksAConfigBuiltInCode) {
  Config c;
  c.first_master = Address{"10.0.0.11", 6443};
  c.health.cert_file = "/c.pem";
  const auto result = finalize(c, {}, "flags");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(), "flags: health.cert_file: needs health.key_file as well");
}

// ---- Files ----

TEST(LoadConfig, ReadsARealFile) {
  const TempFile file("# written by the installer\ntargets: [10.0.0.11]\nthreads: 2\n");
  const auto c = load_config(file.path());
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->targets, (std::vector<Address>{{"10.0.0.11", 6443}}));
  EXPECT_EQ(c->threads, 2u);
}

TEST(LoadConfig, GivesTheDefaultsForACommentOnlyFile) {
  const TempFile file("# nothing configured yet\n");
  const auto c = load_config(file.path());
  ASSERT_TRUE(c) << c.error().message();
  expect_defaults(*c);
}

TEST(LoadConfig, NamesTheFileInErrors) {
  const TempFile file("threads: many\n");
  const auto c = load_config(file.path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message(),
            file.path().string() + ":1:10: threads: \"many\" is not a whole number");
}

TEST(LoadConfig, ReportsAMissingFileWithoutPosition) {
  const auto path =
      std::filesystem::temp_directory_path() / "apilb-config-test-does-not-exist.yaml";
  const auto c = load_config(path);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().file, path.string());
  EXPECT_EQ(c.error().line, 0);
  EXPECT_EQ(c.error().field, "");
  EXPECT_EQ(c.error().message(), path.string() + ": cannot read: No such file or directory");
}

TEST(LoadConfig, ReportsADirectoryAsUnreadable) {
  const auto dir = std::filesystem::temp_directory_path();
  const auto c = load_config(dir);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message(), dir.string() + ": cannot read: Is a directory");
}

// ---- Errors and enums ----

TEST(Error, RendersFileLineColumnFieldAndReason) {
  EXPECT_EQ((Error{"config.yaml", 7, 3, "health.interval", "\"2x\" is not a duration"}).message(),
            "config.yaml:7:3: health.interval: \"2x\" is not a duration");
}

TEST(Error, LeavesOutAnUnknownPositionAndAnEmptyField) {
  EXPECT_EQ((Error{"config.yaml", 0, 0, "targets", "none"}).message(),
            "config.yaml: targets: none");
  EXPECT_EQ((Error{"config.yaml", 2, 1, "", "bad"}).message(), "config.yaml:2:1: bad");
  EXPECT_EQ((Error{"config.yaml", 0, 0, "", "cannot read: x"}).message(),
            "config.yaml: cannot read: x");
}

TEST(Error, ThrowsItsMessageFromResultValue) {
  const auto result = parse_config("threads: -1\n", "config.yaml");
  try {
    (void)result.value();
    FAIL() << "value() did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "config.yaml:1:10: threads: must be between 0 and 1024, got -1");
  }
}

TEST(Enums, PrintTheNamesTheConfigUses) {
  EXPECT_EQ(to_string(Balance::least_connections), "least_connections");
  EXPECT_EQ(to_string(HealthMode::https), "https");
  EXPECT_EQ(to_string(OnTargetDown::keep), "keep");
  EXPECT_EQ(to_string(LogFormat::json), "json");
  EXPECT_EQ(to_string(LogLevel::critical), "critical");
  EXPECT_EQ(to_string(SpliceMode::automatic), "auto");
}

TEST(ParseLogLevel, ReadsEachLevelAndNothingElse) {
  for (auto v : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error,
                 LogLevel::critical, LogLevel::off})
    EXPECT_EQ(parse_log_level(to_string(v)), v);
  EXPECT_EQ(parse_log_level("warning"), std::nullopt);
  EXPECT_EQ(parse_log_level("INFO"), std::nullopt);
  EXPECT_EQ(parse_log_level(""), std::nullopt);
}

// Found while writing the fuzzers (tests/fuzz): nesting deep enough to overflow a recursive parser
// is refused by yaml-cpp (0.7's depth guard) with an exception, which must come out as an error
// naming the place, like any other.
TEST(ParseConfig, RefusesDeeplyNestedYamlWithAnErrorInsteadOfOverflowingTheStack) {
  std::string dashes = "targets:\n";
  for (int i = 0; i < 20000; ++i) dashes += "- ";
  for (const std::string& yaml :
       {std::string(100000, '['), "health: " + std::string(50000, '{'), dashes + "10.0.0.1\n"}) {
    const auto result = parse_config(yaml, "config.yaml");
    ASSERT_FALSE(result) << yaml.substr(0, 40);
    EXPECT_TRUE(result.error().message().starts_with("config.yaml:")) << result.error().message();
    EXPECT_NE(result.error().message().find(": invalid YAML: nested too deeply ("),
              std::string::npos)
        << result.error().message();
  }
}

}  // namespace
}  // namespace apilb::config
