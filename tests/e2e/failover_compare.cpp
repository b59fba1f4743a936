// Failover side by side (bench/failover.sh): apiserver-lb and HAProxy 2.6 in front of the same
// three stand-in masters, each on a host of its own (network namespaces), through the same faults,
// measured the same way from the client side:
//   crash      the master's process is SIGKILLed (its kernel refuses connects from then on)
//   blackhole  the master's host goes silent (nftables DROP): no RST, no ICMP, nothing
// For each: when the balancer marked the master down, how many new client connections failed
// meanwhile (two client threads, a new connection per request), and when the balancer closed the
// long-lived connections it held to the master. Prints a Markdown table. Needs root (namespaces).
//
//   failover_compare [--haproxy PATH] [--rounds N]
//   failover_compare [--haproxy PATH] --crashes N
// The second form SIGKILLs a master N times in a row (restarting it at once) under the same load
// and counts the new connections that failed: those that started after a kill and ended before the
// next (one in flight across a kill may be lost with a master that had answered part of it).
#include "tests/e2e/haproxy_socket.hpp"
#include "tests/e2e/hosted.hpp"
#include "tests/e2e/lb_process.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

namespace apilb::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;
constexpr auto kWatchHeld = 10s;  // how long held connections are watched after the detection

// The settings both balancers get: checks every 1 s, 2 failures to go down, 2 passes to come back,
// a 1 s check timeout and a 2 s connect timeout (apiserver-lb's defaults for the last two).
constexpr std::string_view kApiserverLbConfig = R"(
health: { mode: tcp, interval: 1s, timeout: 1s, rise: 2, fall: 2 }
upstream: { connect_timeout: 2s, replay_first_flight: always }   # plain HTTP clients here
threads: 1
)";

enum class Fault { crash, blackhole };
const char* name_of(Fault f) { return f == Fault::crash ? "crash" : "blackhole"; }

// A balancer in front of the three masters, as the measurement sees it.
class Balancer {
 public:
  virtual ~Balancer() = default;
  virtual tcp::endpoint endpoint() const = 0;
  // Blocks until the balancer considers master `name` (at `address`) up / down; the time it saw it.
  virtual std::optional<steady_clock::time_point> wait_state(const std::string& name,
                                                             const std::string& address,
                                                             const std::string& state) = 0;
};

class ApiserverLb final : public Balancer {
 public:
  ApiserverLb(const std::vector<HostedMaster*>& masters, TempDir& dir) {
    std::vector<std::string> args{"--config",
                                  dir.write("apiserver-lb.yaml", kApiserverLbConfig).string()};
    for (HostedMaster* m : masters) args.insert(args.end(), {"--target", m->address()});
    lb_.emplace(args);
  }
  tcp::endpoint endpoint() const override { return lb_->endpoint(); }
  std::optional<steady_clock::time_point> wait_state(const std::string&, const std::string& address,
                                                     const std::string& state) override {
    const auto from = seen_[address + state];
    const auto at = test::wait_state(lb_->process(), address, state, from);
    seen_[address + state] = lb_->process().log().size();  // the next wait needs a newer line
    return at;
  }

 private:
  std::optional<LbProcess> lb_;
  std::map<std::string, std::size_t> seen_;
};

// HAProxy `mode tcp`, `balance leastconn`, `check inter 1s fall 2 rise 2`, stats socket for states.
// `tuned` adds what an operator who read the manual would: `option redispatch` (a retry goes to
// another server) and `on-marked-down shutdown-sessions` (close what a down server held).
class Haproxy final : public Balancer {
 public:
  Haproxy(const std::string& binary, const std::vector<HostedMaster*>& masters, TempDir& dir,
          bool tuned)
      : endpoint_(loopback(free_port())),
        socket_(dir.path() / (tuned ? "tuned.sock" : "haproxy.sock")) {
    std::ostringstream cfg;
    cfg << "global\n  stats socket " << socket_.string()
        << " mode 600 level admin\n  maxconn 9000\n"
        << "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n"
        << (tuned ? "  option redispatch\n  retries 3\n" : "") << "frontend fe\n  bind "
        << to_string(endpoint_) << "\n  default_backend be\n"
        << "backend be\n  balance leastconn\n  default-server check inter 1s fall 2 rise 2"
        << (tuned ? " on-marked-down shutdown-sessions" : "") << "\n";
    for (std::size_t i = 0; i < masters.size(); ++i)
      cfg << "  server m" << i + 1 << " " << masters[i]->address() << "\n";
    const auto file = dir.write(tuned ? "tuned.cfg" : "haproxy.cfg", cfg.str());
    process_.emplace(binary, std::vector<std::string>{"-db", "-f", file.string()});
    if (!wait_until([&] { return port_accepts(endpoint_); }, kDeadline))
      throw std::runtime_error("haproxy did not start:\n" + process_->log());
  }
  tcp::endpoint endpoint() const override { return endpoint_; }
  std::optional<steady_clock::time_point> wait_state(const std::string& name, const std::string&,
                                                     const std::string& state) override {
    const std::string wanted = state == "up" ? "UP" : "DOWN";
    if (!wait_until([&] { return server_status(name) == wanted; }, kDeadline, 2ms))
      return std::nullopt;
    return steady_clock::now();
  }

 private:
  // The server's status column of `show stat` ("UP", "DOWN", "UP 1/2", ...).
  std::string server_status(const std::string& server) const {
    const std::string reply = haproxy_command(socket_, "show stat\n");
    std::istringstream lines(reply);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("be," + server + ",")) continue;
      std::istringstream fields(line);
      std::string field;
      for (int i = 0; i <= 17 && std::getline(fields, field, ','); ++i) {
      }
      return field;  // column 18: status
    }
    return "";
  }

  tcp::endpoint endpoint_;
  std::filesystem::path socket_;
  std::optional<ChildProcess> process_;
};

struct Outcome {
  std::optional<long long> detected_ms;  // fault -> marked down
  std::size_t requests = 0, failed = 0, slow = 0;
  std::vector<std::optional<long long>> held_closed_ms;  // after the fault; nullopt: still open
};

Outcome measure(Balancer& lb, std::vector<HostedMaster*>& masters, Fault fault) {
  Outcome out;
  for (int i = 0; i < 3; ++i)
    if (!lb.wait_state("m" + std::to_string(i + 1), masters[i]->address(), "up"))
      throw std::runtime_error("m" + std::to_string(i + 1) + " never came up");
  // Six long-lived connections (watches); leastconn gives each master two.
  std::vector<std::unique_ptr<HttpClient>> to_m2;
  std::vector<std::unique_ptr<HttpClient>> others;
  for (int i = 0; i < 6; ++i) {
    auto client = std::make_unique<HttpClient>(lb.endpoint());
    (client->who() == "m2" ? to_m2 : others).push_back(std::move(client));
  }
  Loads load(lb.endpoint(), 2);
  if (!wait_until([&] { return load.total() > 30; }, kDeadline))
    throw std::runtime_error("no load");

  // Held connections are watched from the fault on, on a thread of their own, while this one
  // waits for the balancer's verdict.
  out.held_closed_ms.resize(to_m2.size());
  const auto faulted = steady_clock::now();
  std::atomic<bool> all_closed = false;
  std::jthread watch([&](std::stop_token stop) {
    all_closed = wait_until(
                     [&] {
                       bool all = true;
                       for (std::size_t i = 0; i < to_m2.size(); ++i) {
                         if (!out.held_closed_ms[i] && to_m2[i]->closed())
                           out.held_closed_ms[i] = ms(steady_clock::now() - faulted);
                         all = all && out.held_closed_ms[i].has_value();
                       }
                       return all || stop.stop_requested();
                     },
                     kDeadline + kWatchHeld, 2ms) &&
                 !stop.stop_requested();
  });
  if (fault == Fault::crash) masters[1]->process().kill();
  else masters[1]->host().blackhole(BlackholeMethod::nftables);
  // A request already passed on to the master while the fault was being made is lost with it, as
  // with any balancer; those that start after must not fail.
  const auto fault_done = steady_clock::now();
  const auto down = lb.wait_state("m2", masters[1]->address(), "down");
  if (down) out.detected_ms = ms(*down - faulted);

  // The load runs on for at least 2 s after the detection; held connections are watched for
  // kWatchHeld after it.
  const auto detected = down.value_or(faulted + kDeadline);
  wait_until([&] { return steady_clock::now() > detected + 2s; }, kDeadline + 3s, 10ms);
  load.stop();
  wait_until([&] { return all_closed || steady_clock::now() > detected + kWatchHeld; },
             kDeadline + kWatchHeld, 10ms);
  watch.request_stop();
  watch.join();
  for (const auto& r : load.since(fault_done)) {
    ++out.requests;
    if (r.answered_by.empty()) ++out.failed;
    if (r.took >= 1s) ++out.slow;
  }
  return out;
}

struct Crashes {
  std::size_t fresh = 0, failed = 0, straddled = 0, straddled_failed = 0;
};

Crashes crash_repeatedly(Balancer& lb, std::vector<HostedMaster*>& masters, int n) {
  for (int i = 0; i < 3; ++i)
    if (!lb.wait_state("m" + std::to_string(i + 1), masters[i]->address(), "up"))
      throw std::runtime_error("m" + std::to_string(i + 1) + " never came up");
  Loads load(lb.endpoint(), 2);
  if (!wait_until([&] { return load.total() > 30; }, kDeadline))
    throw std::runtime_error("no load");
  std::vector<steady_clock::time_point> kills;
  for (int crash = 0; crash < n; ++crash) {
    const std::size_t i = static_cast<std::size_t>(crash % 3);
    HostedMaster& victim = *masters[i];
    const std::string name = "m" + std::to_string(i + 1);
    kills.push_back(steady_clock::now());
    victim.process().kill();
    // Back once the balancer has seen it die, as a real apiserver restarts.
    if (!lb.wait_state(name, victim.address(), "down"))
      throw std::runtime_error(name + " never marked down");
    victim.start();
    if (!lb.wait_state(name, victim.address(), "up"))
      throw std::runtime_error(name + " never back up");
    const std::size_t total = load.total();
    if (!wait_until([&] { return load.total() >= total + 20; }, kDeadline))
      throw std::runtime_error("load stalled");
  }
  kills.push_back(steady_clock::now());
  load.stop();
  Crashes out;
  for (const auto& r : load.since(kills.front())) {
    const auto next = std::upper_bound(kills.begin(), kills.end(), r.started);
    const bool straddles = next != kills.end() && r.started + r.took > *next;
    (straddles ? out.straddled : out.fresh)++;
    if (r.answered_by.empty()) (straddles ? out.straddled_failed : out.failed)++;
  }
  return out;
}

std::string cell(const std::optional<long long>& v, const std::string& none) {
  return v ? std::to_string(*v) : none;
}

int main_impl(int argc, char** argv) {
  std::string haproxy = find_program("haproxy").string();
  int rounds = 1, crashes = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--haproxy" && i + 1 < argc) haproxy = argv[++i];
    else if (arg == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--crashes" && i + 1 < argc) crashes = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: failover_compare [--haproxy PATH] [--rounds N | --crashes N]\n");
      return 2;
    }
  }
  if (!TestHost::available()) {
    std::fprintf(stderr, "failover_compare: %s\n", TestHost::unavailable_reason().c_str());
    return 77;
  }
  if (haproxy.empty())
    std::fprintf(stderr, "failover_compare: no haproxy found: apiserver-lb only\n");

  auto fresh_masters = [](std::vector<std::unique_ptr<HostedMaster>>& owned) {
    std::vector<HostedMaster*> masters;
    for (int i = 1; i <= 3; ++i) {
      owned.push_back(std::make_unique<HostedMaster>("m" + std::to_string(i)));
      masters.push_back(owned.back().get());
    }
    return masters;
  };
  // "apiserver-lb", "HAProxy" or "HAProxy tuned" in front of `masters`.
  auto balancer = [&](const std::string& subject, const std::vector<HostedMaster*>& masters,
                      TempDir& dir) -> std::unique_ptr<Balancer> {
    if (subject == "apiserver-lb") return std::make_unique<ApiserverLb>(masters, dir);
    return std::make_unique<Haproxy>(haproxy, masters, dir, subject == "HAProxy tuned");
  };
  if (crashes > 0) {
    std::printf(
        "| balancer | SIGKILLs | new connections | failed | in flight at a kill | of those failed "
        "|\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (const std::string subject : {"apiserver-lb", "HAProxy tuned"}) {
      if (subject != "apiserver-lb" && haproxy.empty()) continue;
      std::vector<std::unique_ptr<HostedMaster>> owned;
      auto masters = fresh_masters(owned);
      TempDir dir;
      const auto lb = balancer(subject, masters, dir);
      const Crashes c = crash_repeatedly(*lb, masters, crashes);
      std::printf("| %s | %d | %zu | %zu | %zu | %zu |\n", subject.c_str(), crashes, c.fresh,
                  c.failed, c.straddled, c.straddled_failed);
      std::fflush(stdout);
    }
    return 0;
  }
  std::printf(
      "| fault | balancer | marked down (ms after the fault) | new connections | failed | took >= "
      "1 s | "
      "its held connections closed (ms after the fault) |\n| --- | --- | ---: | ---: | ---: | ---: "
      "| --- |\n");
  for (int round = 0; round < rounds; ++round) {
    for (Fault fault : {Fault::crash, Fault::blackhole}) {
      for (const std::string subject : {"apiserver-lb", "HAProxy", "HAProxy tuned"}) {
        if (subject != "apiserver-lb" && haproxy.empty()) continue;
        // Fresh masters and a fresh balancer for every measurement.
        std::vector<std::unique_ptr<HostedMaster>> owned;
        auto masters = fresh_masters(owned);
        TempDir dir;
        const auto lb = balancer(subject, masters, dir);
        const Outcome o = measure(*lb, masters, fault);
        std::string held;
        for (const auto& t : o.held_closed_ms)
          held += (held.empty() ? "" : ", ") +
                  cell(t, "open after " + std::to_string(ms(kWatchHeld) / 1000) + " s");
        std::printf("| %s | %s | %s | %zu | %zu | %zu | %s |\n", name_of(fault), subject.c_str(),
                    cell(o.detected_ms, "not within 10 s").c_str(), o.requests, o.failed, o.slow,
                    held.empty() ? "(none held)" : held.c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace apilb::test

int main(int argc, char** argv) {
  try {
    return apilb::test::main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "failover_compare: %s\n", e.what());
    return 1;
  }
}
