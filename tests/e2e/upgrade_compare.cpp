// Upgrades side by side (bench/upgrade.sh): apiserver-lb's `upgrade` and HAProxy 2.6's reload with
// its listeners handed over (`-x` the stats socket with `expose-fd listeners`, `-sf` the old pid),
// each N times in a row in front of the same two echo targets, under the same load: two client
// threads opening a new connection per round trip, eight long-lived streams echoing every 10 ms
// for 0.2-1.5 s each. Prints a Markdown table: failed new connections, streams cut, and the
// longest time a new connection took (the longest accept pause a client saw), with p99 and p50.
//
//   upgrade_compare [--haproxy PATH] [--upgrades N]
#include "tests/e2e/haproxy_socket.hpp"
#include "tests/e2e/streams.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <sstream>

namespace apilb::test {
namespace {

class Balancer {
 public:
  virtual ~Balancer() = default;
  virtual tcp::endpoint endpoint() const = 0;
  virtual bool reload() = 0;  // returns once the new process serves
};

class ApiserverLb final : public Balancer {
 public:
  explicit ApiserverLb(const std::vector<tcp::endpoint>& targets) : installer_("", false) {
    installer_.write_config("upgrade: { socket: " + installer_.path("upgrade.sock").string() +
                            " }\nthreads: 1\ndrain_timeout: 5s\n");
    std::vector<std::string> set{"set"};
    for (const auto& t : targets) set.push_back(to_string(t));
    installer_.targets(set);
    installer_.start();
    for (const auto& t : targets)
      if (!installer_.wait_state(t, "up")) throw std::runtime_error("target not up");
  }
  tcp::endpoint endpoint() const override {
    return const_cast<Installer&>(installer_).lb().endpoint();
  }
  bool reload() override {
    ChildProcess p(APILB_BINARY, {"upgrade", "--socket", installer_.path("upgrade.sock").string()});
    const bool ok = p.wait_exit(60s) == 0;
    if (!ok) std::fprintf(stderr, "apiserver-lb upgrade failed: %s\n", p.log().c_str());
    return ok;
  }

 private:
  Installer installer_;
};

class Haproxy final : public Balancer {
 public:
  Haproxy(std::string binary, const std::vector<tcp::endpoint>& targets)
      : binary_(std::move(binary)), endpoint_(loopback(free_port())), socket_(dir_ / "stats.sock") {
    std::ostringstream cfg;
    cfg << "global\n  stats socket " << socket_.string()
        << " mode 600 level admin expose-fd listeners\n  maxconn 9000\n  nbthread 1\n"
        << "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n"
        << "frontend fe\n  bind " << to_string(endpoint_) << "\n  default_backend be\n"
        << "backend be\n  balance leastconn\n  default-server check inter 1s fall 2 rise 2\n";
    for (std::size_t i = 0; i < targets.size(); ++i)
      cfg << "  server m" << i + 1 << " " << to_string(targets[i]) << "\n";
    config_ = dir_.write("haproxy.cfg", cfg.str());
    processes_.emplace_back(binary_, std::vector<std::string>{"-db", "-f", config_.string()});
    if (!wait_until([&] { return pid_answering() == processes_.back().pid(); }, kDeadline))
      throw std::runtime_error("haproxy did not start:\n" + processes_.back().log());
  }
  tcp::endpoint endpoint() const override { return endpoint_; }
  bool reload() override {
    const pid_t old = processes_.back().pid();
    processes_.emplace_back(
        binary_, std::vector<std::string>{"-db", "-f", config_.string(), "-x", socket_.string(),
                                          "-sf", std::to_string(old)});
    const pid_t next = processes_.back().pid();
    // Serving once its own stats socket (bound after the listeners it took) answers.
    const bool ok = wait_until([&] { return pid_answering() == next; }, kDeadline, 2ms);
    // Old processes leave once their last connection ends; forget those that have.
    while (processes_.size() > 1 && !processes_.front().running()) processes_.pop_front();
    return ok;
  }

 private:
  // The Pid of `show info` on the stats socket: the process that has bound it last.
  pid_t pid_answering() const {
    const std::string reply = haproxy_command(socket_, "show info\n");
    const auto at = reply.find("\nPid: ");
    return at == std::string::npos ? 0 : std::atoi(reply.c_str() + at + 6);
  }

  std::string binary_;
  TempDir dir_;
  tcp::endpoint endpoint_;
  std::filesystem::path socket_, config_;
  std::deque<ChildProcess> processes_;
};

struct Row {
  int upgrades = 0;
  std::size_t connections = 0, failed = 0;
  int streams = 0, cut = 0;
  Latencies latency{};
  double seconds = 0;
};

Row measure(Balancer& lb, int upgrades) {
  const tcp::endpoint ep = lb.endpoint();
  Load load1([ep] { return echo_through(ep); }, 2'000'000),
      load2([ep] { return echo_through(ep); }, 2'000'000);
  Streams streams(ep, 8);
  load1.more(20);
  Row row;
  const auto started = steady_clock::now();
  for (; row.upgrades < upgrades; ++row.upgrades) {
    if (!lb.reload()) break;
    load1.more(3);
    load2.more(3);
  }
  row.seconds = std::chrono::duration<double>(steady_clock::now() - started).count();
  load1.more(10);
  streams.stop();
  load1.stop();
  load2.stop();
  row.connections = load1.total() + load2.total();
  row.failed = load1.failures() + load2.failures();
  row.streams = streams.completed();
  row.cut = streams.cut();
  row.latency = Latencies({&load1, &load2});
  return row;
}

int main_(int argc, char** argv) {
  std::string haproxy = "/usr/sbin/haproxy";
  int upgrades = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--haproxy") haproxy = argv[i + 1];
    else if (flag == "--upgrades") upgrades = std::atoi(argv[i + 1]);
  }
  EchoBackend a, b;
  std::vector<std::pair<std::string, Row>> rows;
  {
    ApiserverLb lb({a.endpoint(), b.endpoint()});
    rows.emplace_back("apiserver-lb `upgrade`", measure(lb, upgrades));
  }
  {
    Haproxy lb(haproxy, {a.endpoint(), b.endpoint()});
    rows.emplace_back("HAProxy 2.6 `-x` + `-sf`", measure(lb, upgrades));
  }
  std::printf(
      "| balancer | upgrades | new connections | failed | streams | cut | longest ms | "
      "p99 ms | p50 ms |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& [name, r] : rows)
    std::printf("| %s | %d in %.1f s | %zu | %zu | %d | %d | %.1f | %.2f | %.2f |\n", name.c_str(),
                r.upgrades, r.seconds, r.connections, r.failed, r.streams, r.cut,
                r.latency.longest_ms, r.latency.p99_ms, r.latency.p50_ms);
  return 0;
}

}  // namespace
}  // namespace apilb::test

int main(int argc, char** argv) { return apilb::test::main_(argc, argv); }
