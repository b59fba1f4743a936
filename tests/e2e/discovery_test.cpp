// Discovery from the cluster itself: apiserver-lb in front of stand-in masters that serve the
// `kubernetes` EndpointSlices (list and watch over TLS with client-certificate auth) from one
// slice file the test rewrites, as masters sharing etcd would. The watch runs through the
// balancer's own listener. Every wait is on an event (a /status field, a log line, a stand-in's
// counter) with a deadline.

#include "tests/e2e/installer.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl.hpp>

#include <algorithm>
#include <fstream>
#include <map>

namespace apilb::test {
namespace {

namespace ssl = boost::asio::ssl;

constexpr int kMasters = 3;

// A CA, a serving certificate for every master address and a client certificate it signed, made
// with the openssl command line.
void make_pki(const TempDir& dir) {
  const std::string script = R"(set -e
cd ")" + dir.path().string() +
                             R"("
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -subj /CN=test-kubernetes-ca -days 2 -out ca.crt
sign() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
sign server /CN=kube-apiserver \
  "subjectAltName=IP:127.0.0.1,IP:127.0.0.11,IP:127.0.0.12,IP:127.0.0.13,IP:127.0.0.14,DNS:kubernetes.default.svc"
sign client "/O=system:masters/CN=apiserver-lb" "extendedKeyUsage=clientAuth"
)";
  ChildProcess openssl("/bin/sh", {"-c", script});
  ASSERT_EQ(openssl.wait_exit(kDeadline), 0) << openssl.log();
}

enum class Auth { certificate, token };

std::string field(const std::string& text, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("\"" + name + "\":(\"[^\"]*\"|[0-9.]+|true|false)")))
    return "";
  std::string v = m[1];
  if (!v.empty() && v.front() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

// Masters on 127.0.0.11..14, one port, each a stand-in serving the same slice file; apiserver-lb
// in front with discovery on and only the first master as a bootstrap.
class Cluster {
 public:
  explicit Cluster(std::string extra = "", Auth auth = Auth::certificate, int masters = kMasters)
      : port_(free_port()), lb_port_(free_port()), auth_(auth) {
    make_pki(dir_);
    for (int i = 1; i <= masters; ++i) in_slice_[i] = true;
    write_slice();
    for (int i = 1; i <= masters; ++i) start_master(i);
    write_kubeconfig();
    const std::string config =
        "first_master: " + address(1) + "\nhealth: { interval: 200ms, timeout: 150ms }\n" +
        "drain_timeout: 1s\ndiscovery:\n  kubernetes: { kubeconfig: " + kubeconfig().string() +
        " }\n  confirm_after: 2s\n" +
        std::regex_replace(extra, std::regex("PORT"), std::to_string(port_));
    config_ = dir_.write("config.yaml", config);
    start();
  }

  void start() {
    lb_.reset();
    lb_.emplace(std::vector<std::string>{"--config", config_.string(), "--listen",
                                         "127.0.0.1:" + std::to_string(lb_port_), "--admin",
                                         "127.0.0.1:" + std::to_string(admin_port_)},
                kDeadline, SpawnOptions().with_env("STATE_DIRECTORY=" + (dir_ / "state").string()));
  }

  std::string address(int i) const {
    return "127.0.0.1" + std::to_string(i) + ":" + std::to_string(port_);
  }
  tcp::endpoint lb() const { return loopback(lb_port_); }
  tcp::endpoint admin() const { return loopback(admin_port_); }
  std::filesystem::path kubeconfig() const { return dir_ / "kubeconfig"; }
  std::filesystem::path path(std::string_view name) const { return dir_ / name; }
  StandinProcess& master(int i) { return *masters_.at(i); }
  ChildProcess& process() { return lb_->process(); }

  // The slice as the cluster holds it: which masters it names, and whether each is ready.
  void set(int i, bool ready) {
    in_slice_[i] = ready;
    write_slice();
  }
  // One new slice version without these masters (the stand-ins may see every version).
  void remove(std::initializer_list<int> masters) {
    for (int i : masters) in_slice_.erase(i);
    write_slice();
  }
  void set_compacted(std::uint64_t below) {
    compacted_ = below;
    write_slice();
  }
  std::uint64_t resource_version() const { return version_; }

  std::string status() { return http_get(loopback(admin_port_), "/status", kDeadline).body; }
  std::string metrics() { return http_get(loopback(admin_port_), "/metrics", kDeadline).body; }
  // The /status entry of master i, or "" when it is not a target.
  std::string entry(int i) {
    const std::string s = status();
    const auto at = s.find("{\"address\":\"" + address(i) + "\"");
    if (at == std::string::npos) return "";
    return s.substr(at, s.find('}', s.find("\"last_check\"", at) + 1) - at);
  }
  std::string state(int i) { return field(entry(i), "state"); }
  // A field of /status's discovery object.
  std::string discovery(const std::string& name) {
    const std::string s = status();
    const auto at = s.find("\"discovery\":{");
    return at == std::string::npos ? "" : field(s.substr(at, s.find('}', at) - at), name);
  }
  bool wait_state(int i, const std::string& state, std::chrono::milliseconds deadline = kDeadline) {
    return wait_until([&] { return this->state(i) == state; }, deadline, 10ms);
  }
  bool wait_log(const std::string& needle) { return process().wait_for_log(needle, kDeadline); }
  // A counter of master i's /standin/stats ("watching", "lists", "handshakes").
  int stat(int i, const std::string& name) {
    const std::string body = http_get(master(i).control_endpoint(), "/standin/stats").body;
    std::smatch m;
    if (!std::regex_search(body, m, std::regex("(^|\n)" + name + " (\\d+)"))) return -1;
    return std::stoi(m[2]);
  }
  // The master whose stand-in holds the discovery watch now, 0 for none.
  int watched_through() {
    for (const auto& [i, m] : masters_)
      if (m && m->process().running() && stat(i, "watching") > 0) return i;
    return 0;
  }

  // A new TLS connection through the balancer: which master answers GET / (client certificate).
  std::string who_answers_now() {
    boost::asio::io_context io;
    ssl::context ctx(ssl::context::tls_client);
    ctx.load_verify_file(path("ca.crt").string());
    ctx.use_certificate_chain_file(path("client.crt").string());
    ctx.use_private_key_file(path("client.key").string(), ssl::context::pem);
    ctx.set_verify_mode(ssl::verify_peer);
    ssl::stream<tcp::socket> stream(io, ctx);
    boost::system::error_code ec;
    stream.next_layer().connect(lb(), ec);
    if (!ec) stream.handshake(ssl::stream_base::client, ec);
    if (ec) return "";
    std::string buffer;
    return who_answers(stream, buffer);
  }

 private:
  void start_master(int i) {
    auto options = StandinOptions("master-" + std::to_string(i))
                       .listening_on(address(i))
                       .with_arg("--cert")
                       .with_arg(path("server.crt").string())
                       .with_arg("--key")
                       .with_arg(path("server.key").string())
                       .with_arg("--client-ca")
                       .with_arg(path("ca.crt").string())
                       .with_arg("--no-anonymous")
                       .with_arg("--slice-file")
                       .with_arg(path("slices.json").string())
                       .with_arg("--bookmark-interval")
                       .with_arg("200");
    if (auth_ == Auth::token) options.with_arg("--token").with_arg("s3cret-token");
    masters_[i] = std::make_unique<StandinProcess>(APILB_STANDIN, options);
  }

  void write_slice() {
    std::string endpoints;
    for (const auto& [i, ready] : in_slice_)
      endpoints += std::string(endpoints.empty() ? "" : ",") + R"({"addresses":["127.0.0.1)" +
                   std::to_string(i) + R"("],"conditions":{"ready":)" + (ready ? "true" : "false") +
                   "}}";
    const std::string json =
        R"({"resourceVersion":)" + std::to_string(++version_) + R"(,"compacted":)" +
        std::to_string(compacted_) +
        R"(,"slices":[{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":)"
        R"({"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":)"
        R"("kubernetes"}},"addressType":"IPv4","endpoints":[)" +
        endpoints + R"(],"ports":[{"name":"https","port":)" + std::to_string(port_) +
        R"(,"protocol":"TCP"}]}]})";
    dir_.write("slices.json.tmp", json);
    std::filesystem::rename(path("slices.json.tmp"), path("slices.json"));
  }

  void write_kubeconfig() {
    const std::string user =
        auth_ == Auth::token ? "    token: s3cret-token\n"
                             : "    client-certificate: client.crt\n    client-key: client.key\n";
    dir_.write("kubeconfig",
               "apiVersion: v1\nkind: Config\ncurrent-context: lb\nclusters:\n"
               "- name: test\n  cluster:\n    certificate-authority: ca.crt\n"
               "    server: https://127.0.0.1:" +
                   std::to_string(lb_port_) +
                   "\ncontexts:\n- name: lb\n  context: { cluster: test, user: lb "
                   "}\nusers:\n- name: lb\n  user:\n" +
                   user);
  }

  TempDir dir_;
  std::uint16_t port_;
  std::uint16_t lb_port_;
  std::uint16_t admin_port_ = free_port();
  Auth auth_;
  std::map<int, bool> in_slice_;  // master -> ready
  std::uint64_t version_ = 100;
  std::uint64_t compacted_ = 0;
  std::map<int, std::unique_ptr<StandinProcess>> masters_;
  std::filesystem::path config_;
  std::optional<LbProcess> lb_;
};

double ms_since(steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

TEST(Discovery, FindsEveryMasterFromTheBootstrapAndShowsItsSources) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i)
    ASSERT_TRUE(cluster.wait_state(i, "up")) << i << "\n" << cluster.status();
  EXPECT_NE(cluster.entry(2).find(R"("origin":"discovery","state":"up","sources":["discovery"])"),
            std::string::npos)
      << cluster.entry(2);
  EXPECT_EQ(cluster.discovery("state"), "watching") << cluster.status();
  EXPECT_NE(cluster.metrics().find("apiserver_lb_discovery_targets 3"), std::string::npos);
  EXPECT_NE(cluster.metrics().find("apiserver_lb_target_source{source=\"discovery\",target=\"" +
                                   cluster.address(3)),
            std::string::npos);
  EXPECT_TRUE(cluster.wait_log("discovery: 3 targets from the cluster"));
  // The last good list is kept for a restart.
  std::ifstream kept(cluster.path("state") / "discovery.yaml.last-good");
  std::stringstream text;
  text << kept.rdbuf();
  EXPECT_NE(text.str().find(cluster.address(3)), std::string::npos) << text.str();
  // apiserver-lb status shows every source, and the watch.
  ChildProcess status_cli(APILB_BINARY, {"status", "--admin", to_string(cluster.admin())});
  ASSERT_EQ(status_cli.wait_exit(kDeadline), 0) << status_cli.log();
  EXPECT_NE(status_cli.log().find("discovery: watching (resourceVersion"), std::string::npos)
      << status_cli.log();
  EXPECT_TRUE(
      std::regex_search(status_cli.log(), std::regex(cluster.address(1) + R"( +up +discovery )")))
      << status_cli.log();
}

TEST(Discovery, AStaticTargetTheClusterAlsoNamesListsBothSources) {
  Cluster cluster("targets: [127.0.0.11:PORT]\n");
  ASSERT_TRUE(cluster.wait_state(2, "up"));
  EXPECT_NE(
      cluster.entry(1).find(R"("origin":"config","state":"up","sources":["config","discovery"])"),
      std::string::npos)
      << cluster.entry(1);
}

TEST(Discovery, AnAddedMasterGetsTrafficAfterItsChecksPassWithNoTargetsAdd) {
  Cluster cluster("", Auth::certificate, 4);
  cluster.remove({4});
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  ASSERT_TRUE(wait_until([&] { return cluster.entry(4).empty(); }, kDeadline, 10ms));

  // Measured: from the slice change to /status listing it, and to the first connection it takes.
  std::vector<double> to_status, to_traffic;
  for (int round = 0; round < 3; ++round) {
    const auto changed = steady_clock::now();
    cluster.set(4, true);
    ASSERT_TRUE(wait_until([&] { return !cluster.entry(4).empty(); }, kDeadline, 5ms));
    to_status.push_back(ms_since(changed));
    ASSERT_TRUE(wait_until([&] { return cluster.who_answers_now() == "master-4"; }, kDeadline, 1ms))
        << cluster.status();
    to_traffic.push_back(ms_since(changed));
    EXPECT_EQ(cluster.state(4), "up");
    cluster.remove({4});
    ASSERT_TRUE(wait_until([&] { return cluster.entry(4).empty(); }, kDeadline, 5ms));
  }
  std::ranges::sort(to_status);
  std::ranges::sort(to_traffic);
  std::printf(
      "slice change -> /status: median %.0f ms, max %.0f ms; -> first connection: "
      "median %.0f ms, max %.0f ms\n",
      to_status[1], to_status[2], to_traffic[1], to_traffic[2]);
  EXPECT_EQ(cluster.process().log().find("targets add"), std::string::npos);
}

TEST(Discovery, ARemovedMasterIsDrainedAndItsConnectionsClosedAfterDrainTimeout) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  // A kept-alive connection on master 3.
  boost::asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.use_certificate_chain_file(cluster.path("client.crt").string());
  ctx.use_private_key_file(cluster.path("client.key").string(), ssl::context::pem);
  std::optional<ssl::stream<tcp::socket>> held;
  std::string buffer;
  ASSERT_TRUE(wait_until(
      [&] {
        held.emplace(io, ctx);
        boost::system::error_code ec;
        held->next_layer().connect(cluster.lb(), ec);
        if (!ec) held->handshake(ssl::stream_base::client, ec);
        buffer.clear();
        return !ec && who_answers(*held, buffer) == "master-3";
      },
      kDeadline, 1ms));
  cluster.remove({3});
  ASSERT_TRUE(cluster.wait_log("target " + cluster.address(3) +
                               " (discovery) removed: its connections close in 1s"));
  EXPECT_TRUE(cluster.entry(3).empty());
  EXPECT_EQ(who_answers(*held, buffer), "master-3") << "it still serves during drain_timeout";
  EXPECT_TRUE(peer_closed_within(held->next_layer(), 5s)) << "closed after drain_timeout";
  for (int i = 0; i < 20; ++i) EXPECT_NE(cluster.who_answers_now(), "master-3");
}

TEST(Discovery, AMasterThatIsNotReadyDrains) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  cluster.set(2, false);
  ASSERT_TRUE(cluster.wait_state(2, "draining")) << cluster.status();
  for (int i = 0; i < 20; ++i) EXPECT_NE(cluster.who_answers_now(), "master-2");
  cluster.set(2, true);
  EXPECT_TRUE(cluster.wait_state(2, "up"));
}

TEST(Discovery, AnEmptySliceIsHeldBackAndLogged) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  cluster.remove({1, 2, 3});
  ASSERT_TRUE(cluster.wait_log("holding back a change: it would remove every discovered target"));
  EXPECT_NE(cluster.metrics().find("apiserver_lb_discovery_holding 1"), std::string::npos);
  // After confirm_after (2s) the masters still pass their checks: they stay.
  ASSERT_TRUE(cluster.wait_log("they still pass their health checks"));
  for (int i = 1; i <= kMasters; ++i) EXPECT_EQ(cluster.state(i), "up") << i;
  EXPECT_EQ(cluster.who_answers_now().substr(0, 7), "master-");
}

TEST(Discovery, DroppingTwoOfThreeHealthyMastersIsHeldBackUntilHealthChecksAgree) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  cluster.remove({2, 3});
  ASSERT_TRUE(cluster.wait_log("out of service at once"));
  ASSERT_TRUE(cluster.wait_log("still pass their health checks"));
  EXPECT_EQ(cluster.state(2), "up");
  EXPECT_EQ(cluster.state(3), "up");
  // Health checks agree once master 3 dies: it goes, master 2 (still up) stays.
  cluster.master(3).process().kill();
  ASSERT_TRUE(wait_until([&] { return cluster.entry(3).empty(); }, kDeadline, 10ms))
      << cluster.status();
  EXPECT_EQ(cluster.state(2), "up");
}

TEST(Discovery, GoneTriggersARelistWithNoTargetFlapping) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  ASSERT_TRUE(wait_until([&] { return cluster.watched_through() != 0; }, kDeadline, 10ms));
  const std::string before = cluster.discovery("lists");
  const auto changes = [&] {
    const std::string s = cluster.status();
    const auto at = s.find("\"recent_changes\"");
    return std::regex_replace(s.substr(at, s.find("\"config\"") - at),
                              std::regex(R"("seconds_ago":[^,]*,)"), "");
  };
  const std::string history = changes();
  // Compaction past the watch's resourceVersion, then a dropped watch: the re-watch gets 410.
  cluster.set_compacted(cluster.resource_version() + 1);
  const int through = cluster.watched_through();
  ASSERT_EQ(
      http_request(cluster.master(through).control_endpoint(), "POST", "/standin/drop-watches")
          .status,
      200);
  ASSERT_TRUE(cluster.wait_log("(410 Gone): listing again"));
  ASSERT_TRUE(wait_until([&] { return cluster.discovery("lists") != before; }, kDeadline, 10ms));
  ASSERT_TRUE(wait_until([&] { return cluster.watched_through() != 0; }, kDeadline, 10ms));
  for (int i = 1; i <= kMasters; ++i) EXPECT_EQ(cluster.state(i), "up") << i;
  EXPECT_EQ(changes(), history) << "no target changed state";
  EXPECT_EQ(cluster.process().log().find("removed:"), std::string::npos);
}

TEST(Discovery, TheWatchSurvivesTheApiserverItRunsThroughBeingKilled) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  ASSERT_TRUE(wait_until([&] { return cluster.watched_through() != 0; }, kDeadline, 10ms));
  const int first = cluster.watched_through();
  cluster.master(first).process().kill();
  // Re-connected through the balancer to another master.
  ASSERT_TRUE(wait_until(
      [&] {
        const int now = cluster.watched_through();
        return now != 0 && now != first;
      },
      kDeadline, 10ms))
      << cluster.process().log();
  const int other = first == 1 ? 2 : 1;
  cluster.set(other, false);
  EXPECT_TRUE(cluster.wait_state(other, "draining")) << cluster.status();
}

TEST(Discovery, KubectlThroughTheBalancerWorksWithTheSameKubeconfig) {
  Cluster cluster;
  ASSERT_TRUE(cluster.wait_state(3, "up"));
  ChildProcess kubectl("/usr/bin/env",
                       {"kubectl", "--kubeconfig", cluster.kubeconfig().string(), "get", "--raw",
                        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"});
  ASSERT_EQ(kubectl.wait_exit(kDeadline), 0) << kubectl.log();
  EXPECT_NE(kubectl.log().find("\"kind\":\"EndpointSliceList\""), std::string::npos)
      << kubectl.log();
  EXPECT_NE(kubectl.log().find("127.0.0.13"), std::string::npos) << kubectl.log();
}

TEST(Discovery, ABearerTokenFromTheKubeconfigAuthenticates) {
  Cluster cluster("", Auth::token);
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
}

TEST(Discovery, ARestartStartsFromTheLastGoodListWhileTheApiserverIsUnreachable) {
  Cluster cluster;
  for (int i = 1; i <= kMasters; ++i) ASSERT_TRUE(cluster.wait_state(i, "up")) << i;
  // Every master refuses the watch now (no slice served: the file is broken), and the balancer
  // restarts.
  std::ofstream(cluster.path("slices.json")) << "{ not json";
  cluster.start();
  ASSERT_TRUE(cluster.wait_log("discovery: starting from the last good list"));
  for (int i = 1; i <= kMasters; ++i) EXPECT_TRUE(cluster.wait_state(i, "up")) << i;
}

TEST(Discovery, CheckConfigNamesTheKubeconfigFieldThatIsWrong) {
  TempDir dir;
  const auto kubeconfig = dir.write(
      "kubeconfig",
      "apiVersion: v1\nkind: Config\ncurrent-context: lb\nclusters:\n- name: c\n  cluster:\n"
      "    server: https://10.0.0.1:6443\n    certificate-authority-data: bm90IGEgY2VydA==\n"
      "contexts:\n- name: lb\n  context: { cluster: c, user: u }\nusers:\n- name: u\n  user:\n"
      "    exec: { command: aws }\n");
  const auto config =
      dir.write("config.yaml", "first_master: 10.0.0.1\ndiscovery:\n  kubernetes: { kubeconfig: " +
                                   kubeconfig.string() + " }\n");
  ChildProcess check(APILB_BINARY, {"check-config", "--config", config.string()});
  EXPECT_EQ(check.wait_exit(kDeadline), 1);
  EXPECT_NE(check.log().find(kubeconfig.string() +
                             ":8:33: clusters[0].cluster.certificate-authority-data: decoded, "
                             "this is not a PEM certificate"),
            std::string::npos)
      << check.log();
}

}  // namespace
}  // namespace apilb::test
