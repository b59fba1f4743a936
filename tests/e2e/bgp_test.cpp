// Active-active balancer hosts with BGP ECMP, end to end (issue #15): three balancer hosts, each
// running BIRD 2 (packaging/bgp/bird.conf.template), apiserver-lb and its health gate
// (packaging/bgp/apiserver-lb-bgp-gate), in front of three stand-in masters; a router running
// BIRD 2 (packaging/bgp/router-bird.conf.example) installs one multipath route to the service
// address over every host that announces it; a client behind the router. Every host is a network
// namespace, wired by veth pairs and bridges held in one more namespace, so nothing touches the
// test machine's own network.
//
// The tests show that new connections spread over every live balancer, that a crashed balancer,
// one that leaves gracefully (gate first, then the balancer drains) and one whose every target is
// down are withdrawn, that new connections after the withdrawal all succeed, and that the route
// comes back after recovery. The last test puts the keepalived pair (packaging/keepalived, as in
// keepalived_test.cpp) through the same events under the same load and prints the table of failed
// new connections and recovery times that packaging/README.md quotes.
//
// Needs root, iproute2, BIRD 2, python3, nftables and keepalived (the comparison only); each test
// skips with the reason when something is missing.
#include "tests/e2e/hosted.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/netns.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace apilb::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr std::string_view kNamespacePrefix = "apilb-bgp-";
constexpr std::uint16_t kPort = 6443;
constexpr std::uint16_t kAdminPort = 9445;

// The BGP fabric (only ever inside the test's namespaces).
constexpr std::string_view kService = "10.80.0.10";
constexpr std::string_view kFront = "10.78.0.";      // router .1, balancer N .1N
constexpr std::string_view kBack = "10.79.0.";       // balancer N .1N, master M .2M
constexpr std::string_view kClientNet = "10.76.0.";  // router .1, client .2
// The keepalived pair: one L2 segment, as in keepalived_test.cpp.
constexpr std::string_view kSegment = "10.77.0.";  // lbN .1N, master M .2M, client .100
constexpr std::string_view kVip = "10.77.0.10";

// What the gate promises: withdrawn within a second of apiserver-lb going down or being stopped.
constexpr auto kWithdrawBound = 1s;
// Every target down: the balancer's own detection (interval 500ms x fall 2, plus a timeout),
// then the gate's.
constexpr auto kTargetsDownBound = 4s;  // about 1.8 s idle; this machine is shared
// How long the all-targets-down outage lasts before the targets come back.
constexpr auto kOutage = 6s;
// Load: kLoadThreads clients, each starting a new connection every kPace (200 per second).
constexpr int kLoadThreads = 4;
constexpr auto kPace = 20ms;
constexpr auto kRequestDeadline = 1500ms;
constexpr int kStreams = 24;

// Balancer config shared by both setups: fast checks, short drain, one worker.
std::string balancer_config(const std::vector<std::string>& targets) {
  std::string list;
  for (const auto& t : targets) list += (list.empty() ? "\"" : ", \"") + t + ":6443\"";
  return "listen: [\"0.0.0.0:6443\"]\n"
         "admin: { listen: \"127.0.0.1:9445\" }\n"
         "targets: [" +
         list +
         "]\n"
         "health: { mode: tcp, interval: 500ms, timeout: 300ms, rise: 2, fall: 2 }\n"
         "upstream: { connect_timeout: 500ms }\n"
         "drain_timeout: 3s\n"
         "threads: 1\n";
}

double seconds(steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string tail(const std::string& text, std::size_t n = 20) {
  std::size_t at = text.size();
  for (std::size_t lines = 0; at > 0 && lines <= n; --at)
    if (text[at - 1] == '\n') ++lines;
  return text.substr(at);
}

// Moves the calling thread (only it) into network namespace `ns`.
void enter_namespace(const std::string& ns) {
  const std::string path = "/run/netns/" + ns;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int setns_errno = errno;
  ::close(fd);
  if (rc != 0) throw std::system_error(setns_errno, std::generic_category(), "setns " + path);
}

// Runs `fn` on a fresh thread inside `ns` and returns what it returns.
template <class F>
auto in_namespace(const std::string& ns, F fn) {
  return std::async(std::launch::async,
                    [ns, fn = std::move(fn)]() mutable {
                      enter_namespace(ns);
                      return fn();
                    })
      .get();
}

// Hosts (network namespaces named apilb-bgp-PID-TAG-HOST) wired by veth pairs, some plugged into
// bridges that live in a namespace of their own ("sw"). Namespaces left by test processes that
// died are deleted on construction. The destructor SIGKILLs every process still running in them
// and deletes them, also when the test failed: declare it before the processes that run inside.
class Fabric {
 public:
  // `tag` keeps two fabrics of one process apart.
  explicit Fabric(const std::string& tag)
      : ip_(find_program("ip")),
        prefix_(std::string(kNamespacePrefix) + std::to_string(::getpid()) + "-" + tag + "-") {
    if (ip_.empty()) throw std::runtime_error("no `ip` program (iproute2)");
    delete_stale();
    add_host("sw");
  }
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;
  ~Fabric() {
    for (const auto& name : namespaces_) {
      const auto pids = run_command({ip_.string(), "netns", "pids", name});
      std::istringstream in(pids.output);
      for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
    }
    for (const auto& name : namespaces_) run_command({ip_.string(), "netns", "del", name});
  }

  void add_host(const std::string& host) {
    ip({"netns", "add", ns(host)});
    namespaces_.push_back(ns(host));
    ip({"-n", ns(host), "link", "set", "lo", "up"});
  }
  void add_bridge(const std::string& bridge) {
    ip({"-n", ns("sw"), "link", "add", bridge, "type", "bridge"});
    ip({"-n", ns("sw"), "link", "set", bridge, "up"});
  }
  // `host`'s interface `ifname` with `cidr`, plugged into `bridge`.
  void plug(const std::string& host, const std::string& ifname, const std::string& bridge,
            const std::string& cidr) {
    const std::string port = host + "-" + ifname;  // the bridge's side, in "sw"
    ip({"link", "add", ifname, "netns", ns(host), "type", "veth", "peer", "name", port, "netns",
        ns("sw")});
    ip({"-n", ns("sw"), "link", "set", port, "master", bridge});
    ip({"-n", ns("sw"), "link", "set", port, "up"});
    ip({"-n", ns(host), "addr", "add", cidr, "dev", ifname});
    ip({"-n", ns(host), "link", "set", ifname, "up"});
  }
  // A veth pair straight from `a` to `b`.
  void wire(const std::string& a, const std::string& a_if, const std::string& a_cidr,
            const std::string& b, const std::string& b_if, const std::string& b_cidr) {
    ip({"link", "add", a_if, "netns", ns(a), "type", "veth", "peer", "name", b_if, "netns", ns(b)});
    ip({"-n", ns(a), "addr", "add", a_cidr, "dev", a_if});
    ip({"-n", ns(b), "addr", "add", b_cidr, "dev", b_if});
    ip({"-n", ns(a), "link", "set", a_if, "up"});
    ip({"-n", ns(b), "link", "set", b_if, "up"});
  }
  // `ip -n NS ARGS...` in `host`; throws with the output when it fails.
  void ip_in(const std::string& host, std::vector<std::string> args) const {
    args.insert(args.begin(), {"-n", ns(host)});
    ip(args);
  }
  // Runs `argv` inside `host` to completion.
  CommandResult exec(const std::string& host, const std::vector<std::string>& argv) const {
    auto full = run_in(host);
    full.insert(full.end(), argv.begin(), argv.end());
    return run_command(full);
  }
  void must(const std::string& host, const std::vector<std::string>& argv) const {
    const auto r = exec(host, argv);
    if (!r.ok())
      throw std::runtime_error("in " + host + ": " + argv.front() + " failed: " + r.output);
  }

  std::string ns(const std::string& host) const { return prefix_ + host; }
  std::vector<std::string> run_in(const std::string& host) const {
    return {ip_.string(), "netns", "exec", ns(host)};
  }
  const fs::path& ip_program() const { return ip_; }

  // A child process running `argv` inside `host` (`ip netns exec` execs it: same pid).
  std::unique_ptr<ChildProcess> spawn(const std::string& host,
                                      const std::vector<std::string>& argv) const {
    auto full = run_in(host);
    full.insert(full.end(), argv.begin(), argv.end());
    return std::make_unique<ChildProcess>(full.front(), std::vector(full.begin() + 1, full.end()));
  }

 private:
  void ip(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{ip_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run_command(argv);
    if (!r.ok()) {
      std::string command;
      for (const auto& a : argv) command += a + " ";
      throw std::runtime_error(command + "failed: " + r.output);
    }
  }
  void delete_stale() const {
    const auto list = run_command({ip_.string(), "netns", "list"});
    std::istringstream in(list.output);
    for (std::string line; std::getline(in, line);) {
      const std::string name = line.substr(0, line.find(' '));
      if (!name.starts_with(kNamespacePrefix)) continue;
      const std::string rest = name.substr(kNamespacePrefix.size());
      pid_t owner = 0;
      const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), owner);
      if (ec != std::errc() || end == rest.data() || *end != '-') continue;
      if (owner != ::getpid() && ::kill(owner, 0) != 0 && errno == ESRCH)
        run_command({ip_.string(), "netns", "del", name});
    }
  }

  fs::path ip_;
  std::string prefix_;
  std::vector<std::string> namespaces_;
};

// An established HTTP/1.1 connection kept open across a test phase (plain POSIX: every wait has a
// deadline). Make it on a thread inside the client's namespace; use it from any thread.
class KeptConnection {
 public:
  KeptConnection(const tcp::endpoint& endpoint, std::chrono::milliseconds deadline) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(endpoint.port());
    sa.sin_addr.s_addr = htonl(endpoint.address().to_v4().to_uint());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS)
      throw std::system_error(errno, std::generic_category(), "connect");
    pollfd p{fd_, POLLOUT, 0};
    int error = ETIMEDOUT;
    socklen_t length = sizeof error;
    if (::poll(&p, 1, static_cast<int>(deadline.count())) == 1)
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0)
      throw std::system_error(error, std::generic_category(), "connect " + to_string(endpoint));
    sockaddr_in local{};
    socklen_t size = sizeof local;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &size);
    local_port_ = ntohs(local.sin_port);
  }
  KeptConnection(const KeptConnection&) = delete;
  KeptConnection& operator=(const KeptConnection&) = delete;
  ~KeptConnection() { ::close(fd_); }

  std::uint16_t local_port() const { return local_port_; }

  // GET / on this connection: the stand-in's name, or "" when the connection failed.
  std::string who(std::chrono::milliseconds deadline) {
    const std::string request = "GET / HTTP/1.1\r\nHost: apiserver\r\n\r\n";
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size()))
      return "";
    std::string data;
    const auto until = steady_clock::now() + deadline;
    for (;;) {
      const auto head = data.find("\r\n\r\n");
      if (head != std::string::npos) {
        std::size_t content_length = 0;
        if (const auto at = data.find("\r\nContent-Length: "); at != std::string::npos && at < head)
          content_length = std::stoul(data.substr(at + 18));
        if (data.size() >= head + 4 + content_length) return data.substr(head + 4, content_length);
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return "";
      char buffer[4096];
      const ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
      if (got <= 0) return "";
      data.append(buffer, static_cast<std::size_t>(got));
    }
  }

 private:
  int fd_ = -1;
  std::uint16_t local_port_ = 0;
};

// The events a balancer host goes through. stopped_alone is the graceful leave done wrong: only
// apiserver-lb gets SIGTERM and drains while the router (or the peer) still sends it new flows.
enum class Event { crash, graceful_leave, targets_down, stopped_alone };
std::string to_string(Event e) {
  switch (e) {
    case Event::crash:
      return "apiserver-lb crashes (SIGKILL)";
    case Event::graceful_leave:
      return "graceful leave (withdraw, then drain)";
    case Event::targets_down:
      return "every target down (6 s)";
    case Event::stopped_alone:
      return "apiserver-lb alone gets SIGTERM";
  }
  return "?";
}

// Several balancer hosts behind one client-facing address: the BGP ECMP fabric or the keepalived
// pair. Owned by one test thread.
class Site {
 public:
  virtual ~Site() = default;
  virtual std::string name() const = 0;
  virtual tcp::endpoint service() const = 0;
  virtual std::string client_ns() const = 0;
  virtual std::vector<std::string> balancers() const = 0;
  // The host the next event hits: one that carries traffic.
  virtual std::string victim() = 0;
  // Every balancer host in service (BGP: announced; keepalived: one MASTER, one BACKUP).
  virtual bool in_service() = 0;
  // `host` no longer takes new flows (BGP: its route is gone; keepalived: the VIP is on the peer).
  virtual bool withdrawn(const std::string& host) = 0;
  virtual void hit(Event e, const std::string& host) = 0;
  virtual void heal(Event e, const std::string& host) = 0;
  virtual std::string logs() = 0;

  // The balancer host holding the client's connection from `client_port`: asks each host's kernel
  // (ss) which client connections its :6443 has established.
  std::string carrier(std::uint16_t client_port) {
    const fs::path ss = find_program("ss");
    for (const auto& host : balancers()) {
      const auto r =
          fabric().exec(host, {ss.string(), "-Htn", "state", "established", "( sport = :6443 )"});
      if (r.output.find(":" + std::to_string(client_port) + " ") != std::string::npos ||
          r.output.find(":" + std::to_string(client_port) + "\n") != std::string::npos)
        return host;
    }
    return "";
  }
  virtual Fabric& fabric() = 0;

 protected:
  // A stand-in master listening on `address`:6443 inside `host`.
  static std::unique_ptr<ChildProcess> start_master(Fabric& fabric, const std::string& host,
                                                    const std::string& address,
                                                    const std::string& name) {
    auto p = fabric.spawn(
        host, {APILB_STANDIN, "--plain", "--name", name, "--listen", address + ":6443"});
    if (!p->wait_for_log(" listening on ", 10s))
      throw std::runtime_error("stand-in " + host + " did not start:\n" + p->log());
    return p;
  }
  static std::unique_ptr<ChildProcess> start_balancer(Fabric& fabric, const std::string& host,
                                                      const fs::path& config) {
    auto p = fabric.spawn(host, {APILB_BINARY, "run", "--config", config.string()});
    if (!p->wait_for_log(" listening on ", 10s))
      throw std::runtime_error("apiserver-lb on " + host + " did not start:\n" + p->log());
    return p;
  }
  // Every target of `host` goes silent: its packets to them are dropped (as when its link to the
  // masters breaks), while the host itself stays up and reachable.
  static void cut_targets(Fabric& fabric, const std::string& host, const std::string& targets) {
    fabric.must(host, {find_program("nft").string(),
                       "add table inet apilb_cut; add chain inet apilb_cut out { type filter hook "
                       "output priority 0; "
                       "policy accept; }; add rule inet apilb_cut out ip daddr { " +
                           targets + " } drop"});
  }
  static void restore_targets(Fabric& fabric, const std::string& host) {
    fabric.must(host, {find_program("nft").string(), "delete table inet apilb_cut"});
  }
};

// ---- The BGP ECMP fabric ------------------------------------------------------------------------

// BIRD config from a shipped file: each `define NAME = ...;` listed in `values` is replaced (and
// must exist exactly once), `log syslog all;` becomes `log stderr all;`, and `extra` is appended.
std::string render_bird(const fs::path& file, const std::map<std::string, std::string>& values,
                        const std::string& drop_prefix = "", const std::string& extra = "") {
  std::istringstream in(read_text(file));
  std::map<std::string, int> replaced;
  std::string out;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("define ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      if (const auto it = values.find(name); it != values.end()) {
        line = "define " + name + " = " + it->second + ";";
        ++replaced[name];
      }
    }
    if (line == "log syslog all;") line = "log stderr all;";
    if (!drop_prefix.empty() && line.starts_with(drop_prefix)) continue;
    out += line + "\n";
  }
  for (const auto& [name, value] : values)
    if (replaced[name] != 1)
      throw std::runtime_error(file.string() + " does not define " + name + " exactly once");
  return out + extra;
}

// After a session drops, BIRD waits `error wait time` (60 s at first) before it tries again: right
// for a flapping host in production, too slow for a test on a loaded machine.
std::string quick_retry(std::string conf) {
  const std::string line = "    graceful restart off;\n";
  const auto at = conf.find(line);
  if (at == std::string::npos)
    throw std::runtime_error("no `graceful restart off;` line to add the retry times after");
  return conf.insert(at + line.size(), "    error wait time 1, 5;\n    connect retry time 2;\n");
}

class BgpSite : public Site {
 public:
  static constexpr int kBalancers = 3;

  // Builds the fabric and starts everything; returns when the router has a route over every
  // balancer host. Throws with the logs when it cannot.
  BgpSite() {
    fabric_.add_bridge("front");
    fabric_.add_bridge("back");
    fabric_.add_host("rt");
    fabric_.add_host("client");
    fabric_.plug("rt", "eth0", "front", std::string(kFront) + "1/24");
    fabric_.wire("rt", "cli0", std::string(kClientNet) + "1/24", "client", "eth0",
                 std::string(kClientNet) + "2/24");
    fabric_.ip_in("client", {"route", "add", "default", "via", std::string(kClientNet) + "1"});
    const fs::path sysctl = find_program("sysctl");
    // Forward, and hash on the 5-tuple (ports included), as a router in front of balancers should.
    fabric_.must("rt", {sysctl.string(), "-qw", "net.ipv4.ip_forward=1",
                        "net.ipv4.fib_multipath_hash_policy=1"});
    for (int m = 1; m <= 3; ++m) {
      const std::string host = "m" + std::to_string(m);
      fabric_.add_host(host);
      fabric_.plug(host, "eth0", "back", master_address(m) + "/24");
      masters_.push_back(
          start_master(fabric_, host, master_address(m), "master-" + std::to_string(m)));
    }
    const std::string targets =
        master_address(1) + ", " + master_address(2) + ", " + master_address(3);
    config_ =
        dir_.write("apiserver-lb.yaml",
                   balancer_config({master_address(1), master_address(2), master_address(3)}));

    std::string peers;
    for (int n = 1; n <= kBalancers; ++n) {
      const std::string host = host_of(n);
      fabric_.add_host(host);
      fabric_.plug(host, "eth0", "front", front_address(n) + "/24");
      fabric_.plug(host, "back0", "back", std::string(kBack) + std::to_string(10 + n) + "/24");
      fabric_.ip_in(host, {"route", "add", "default", "via", std::string(kFront) + "1"});
      // The service address is local on every balancer host, announced or not.
      fabric_.ip_in(host, {"addr", "add", std::string(kService) + "/32", "dev", "lo"});
      peers += "protocol bgp " + host + " from apilb_balancer { neighbor " + front_address(n) +
               " as BALANCER_AS; }\n";
    }
    const fs::path router_conf = dir_.write(
        "router.conf",
        quick_retry(render_bird(
            fs::path(APILB_SOURCE_DIR) / "packaging/bgp/router-bird.conf.example",
            {{"ROUTER_ID", std::string(kFront) + "1"}, {"SERVICE", std::string(kService) + "/32"}},
            "protocol bgp lb", peers)));
    router_ = start_bird("rt", router_conf);
    for (int n = 1; n <= kBalancers; ++n) {
      const std::string host = host_of(n);
      bird_confs_[host] = dir_.write(
          host + ".bird.conf",
          quick_retry(render_bird(fs::path(APILB_SOURCE_DIR) / "packaging/bgp/bird.conf.template",
                                  {{"ROUTER_ID", front_address(n)},
                                   {"SERVICE", std::string(kService) + "/32"},
                                   {"PEER1", std::string(kFront) + "1"}})));
      birds_[host] = start_bird(host, bird_confs_.at(host));
      balancers_[host] = start_balancer(fabric_, host, config_);
      start_gate(host);
    }
    targets_ = targets;
    if (!wait_until([&] { return in_service(); }, 30s, 20ms))
      throw std::runtime_error("the router has no route over every balancer host after 30s:\n" +
                               routes() + logs());
  }

  std::string name() const override { return "BGP ECMP (3 hosts)"; }
  tcp::endpoint service() const override {
    return {boost::asio::ip::make_address_v4(std::string(kService)), kPort};
  }
  std::string client_ns() const override { return fabric_.ns("client"); }
  std::vector<std::string> balancers() const override {
    std::vector<std::string> hosts;
    for (int n = 1; n <= kBalancers; ++n) hosts.push_back(host_of(n));
    return hosts;
  }
  std::string victim() override { return "lb1"; }
  Fabric& fabric() override { return fabric_; }

  // The router's kernel route to the service address (what forwarding uses).
  std::string routes() const {
    return run_command({fabric_.ip_program().string(), "-n", fabric_.ns("rt"), "route", "show",
                        std::string(kService) + "/32"})
        .output;
  }
  bool announced(const std::string& host) const {
    return routes().find("via " + front_address(number_of(host)) + " ") != std::string::npos;
  }
  bool in_service() override {
    const std::string r = routes();
    for (int n = 1; n <= kBalancers; ++n)
      if (r.find("via " + front_address(n) + " ") == std::string::npos) return false;
    return true;
  }
  bool withdrawn(const std::string& host) override { return !announced(host); }

  void hit(Event e, const std::string& host) override {
    switch (e) {
      case Event::crash:
        balancers_.at(host)->kill();
        break;
      case Event::graceful_leave: {
        // What `systemctl stop apiserver-lb` does with the shipped units: the gate (ordered
        // after apiserver-lb) stops first, withdraws and waits its --leave-delay; then
        // apiserver-lb gets SIGTERM and drains.
        gates_.at(host)->send_signal(SIGTERM);
        const auto gate_exit = gates_.at(host)->wait_exit(10s);
        if (gate_exit != 0)
          throw std::runtime_error("the gate on " + host + " did not leave cleanly:\n" +
                                   gates_.at(host)->log());
        withdrawn_before_drain_ = withdrawn(host);
        balancers_.at(host)->send_signal(SIGTERM);
        leave_exit_ = balancers_.at(host)->wait_exit(10s);
        leave_log_ = balancers_.at(host)->log();
        break;
      }
      case Event::targets_down:
        cut_targets(fabric_, host, targets_);
        break;
      case Event::stopped_alone:
        balancers_.at(host)->send_signal(SIGTERM);
        balancers_.at(host)->wait_exit(10s);
        break;
    }
  }
  void heal(Event e, const std::string& host) override {
    switch (e) {
      case Event::crash:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        break;
      case Event::graceful_leave:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        start_gate(host);
        break;
      case Event::targets_down:
        restore_targets(fabric_, host);
        break;
      case Event::stopped_alone:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        break;
    }
  }
  std::optional<int> leave_exit() const { return leave_exit_; }
  // Whether the route was gone when apiserver-lb got SIGTERM in the last graceful leave.
  bool withdrawn_before_drain() const { return withdrawn_before_drain_; }
  const std::string& leave_log() const { return leave_log_; }  // the leaving apiserver-lb's

  // apiserver-lb's /status on `host`: the sum of every target's connections_total.
  long connections_total(const std::string& host) {
    const auto reply = in_namespace(fabric_.ns(host),
                                    [] { return http_get(loopback(kAdminPort), "/status", 2s); });
    static const std::regex total("\"connections_total\":([0-9]+)");
    long sum = 0;
    for (auto it = std::sregex_iterator(reply.body.begin(), reply.body.end(), total);
         it != std::sregex_iterator(); ++it)
      sum += std::stol((*it)[1]);
    return sum;
  }
  ChildProcess& gate(const std::string& host) { return *gates_.at(host); }
  ChildProcess& balancer(const std::string& host) { return *balancers_.at(host); }

  std::string logs() override {
    std::string text = "--- router BIRD:\n" + tail(router_->log(), 10);
    for (const auto& [host, gate] : gates_) {
      text += "--- gate on " + host + ":\n" + tail(gate->log(), 8);
      text += "--- BIRD on " + host + ":\n" + tail(birds_.at(host)->log(), 6);
    }
    return text;
  }

 private:
  static std::string host_of(int n) { return "lb" + std::to_string(n); }
  static int number_of(const std::string& host) { return std::stoi(host.substr(2)); }
  static std::string front_address(int n) { return std::string(kFront) + std::to_string(10 + n); }
  static std::string master_address(int m) { return std::string(kBack) + std::to_string(20 + m); }

  std::unique_ptr<ChildProcess> start_bird(const std::string& host, const fs::path& conf) {
    const fs::path socket = dir_ / (host + ".ctl");
    auto p = fabric_.spawn(host, {find_program("bird").string(), "-f", "-c", conf.string(), "-s",
                                  socket.string(), "-P", (dir_ / (host + ".pid")).string()});
    if (!wait_until([&] { return fs::exists(socket) || !p->running(); }, 10s) || !p->running())
      throw std::runtime_error("BIRD on " + host + " did not start:\n" + p->log());
    return p;
  }
  void start_gate(const std::string& host) {
    gates_[host] = fabric_.spawn(
        host, {find_program("python3").string(), "-u",
               (fs::path(APILB_SOURCE_DIR) / "packaging/bgp/apiserver-lb-bgp-gate").string(),
               "--admin", "127.0.0.1:" + std::to_string(kAdminPort), "--leave-delay", "1s"});
    if (!gates_[host]->wait_for_log(" watching ", 10s))
      throw std::runtime_error("the gate on " + host + " did not start:\n" + gates_[host]->log());
  }

  TempDir dir_;
  Fabric fabric_{"e"};  // before the processes: they die first
  fs::path config_;
  std::string targets_;
  std::map<std::string, fs::path> bird_confs_;
  std::vector<std::unique_ptr<ChildProcess>> masters_;
  std::unique_ptr<ChildProcess> router_;
  std::map<std::string, std::unique_ptr<ChildProcess>> birds_;
  std::map<std::string, std::unique_ptr<ChildProcess>> balancers_;
  std::map<std::string, std::unique_ptr<ChildProcess>> gates_;
  std::optional<int> leave_exit_;
  bool withdrawn_before_drain_ = false;
  std::string leave_log_;
};

// ---- The keepalived pair (as keepalived_test.cpp sets it up)
// -------------------------------------

class KeepalivedSite : public Site {
 public:
  KeepalivedSite() {
    const passwd* nobody = ::getpwnam("nobody");
    if (nobody == nullptr)
      throw std::runtime_error("no user `nobody` to run keepalived's scripts as");
    nobody_uid_ = nobody->pw_uid;
    nobody_gid_ = nobody->pw_gid;
    fabric_.add_bridge("br0");
    const auto add = [&](const std::string& host, int octet) {
      fabric_.add_host(host);
      fabric_.plug(host, "eth0", "br0", std::string(kSegment) + std::to_string(octet) + "/24");
    };
    for (int m = 1; m <= 3; ++m) {
      add("m" + std::to_string(m), 20 + m);
      masters_.push_back(start_master(fabric_, "m" + std::to_string(m), master_address(m),
                                      "master-" + std::to_string(m)));
    }
    add("client", 100);
    config_ =
        dir_.write("apiserver-lb.yaml",
                   balancer_config({master_address(1), master_address(2), master_address(3)}));
    // keepalived refuses scripts a non-root user could modify and runs them as nobody.
    fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read |
                                     fs::perms::group_exec | fs::perms::others_read |
                                     fs::perms::others_exec);
    fs::copy_file(fs::path(APILB_SOURCE_DIR) / "packaging/keepalived/keepalived-notify",
                  dir_ / "keepalived-notify");
    fs::permissions(dir_ / "keepalived-notify", fs::perms::owner_all | fs::perms::group_read |
                                                    fs::perms::group_exec | fs::perms::others_read |
                                                    fs::perms::others_exec);
    for (const char* host : {"lb1", "lb2"}) {
      add(host, host == std::string("lb1") ? 11 : 12);
      balancers_[host] = start_balancer(fabric_, host, config_);
    }
    for (const char* host : {"lb1", "lb2"}) start_keepalived(host);
    // 3 advertisement intervals and the skew, unless a loaded machine delays the election.
    if (!wait_until([&] { return in_service(); }, 40s, 20ms)) {
      for (const auto& [host, k] : keepalived_)
        if (!k->running())
          throw std::runtime_error("keepalived on " + host + " exited at start:\n" +
                                   tail(k->log()));
      throw std::runtime_error("no VRRP master with a backup within 40s:\n" + logs());
    }
  }

  std::string name() const override { return "keepalived pair"; }
  tcp::endpoint service() const override {
    return {boost::asio::ip::make_address_v4(std::string(kVip)), kPort};
  }
  std::string client_ns() const override { return fabric_.ns("client"); }
  std::vector<std::string> balancers() const override { return {"lb1", "lb2"}; }
  Fabric& fabric() override { return fabric_; }
  std::string victim() override { return holds_vip("lb1") ? "lb1" : "lb2"; }
  static std::string peer_of(const std::string& host) { return host == "lb1" ? "lb2" : "lb1"; }

  bool holds_vip(const std::string& host) const {
    const auto r = run_command({fabric_.ip_program().string(), "-n", fabric_.ns(host), "-o", "-4",
                                "addr", "show", "dev", "eth0"});
    return r.output.find("inet " + std::string(kVip) + "/") != std::string::npos;
  }
  std::string state_of(const std::string& host) const {
    const std::string text = read_text(dir_ / (host + ".state"));
    return text.substr(0, text.find(' '));
  }
  bool in_service() override {
    const bool one = holds_vip("lb1") != holds_vip("lb2");
    const std::string holder = holds_vip("lb1") ? "lb1" : "lb2";
    return one && state_of(holder) == "MASTER" && state_of(peer_of(holder)) == "BACKUP";
  }
  bool withdrawn(const std::string& host) override {
    return !holds_vip(host) && holds_vip(peer_of(host));
  }

  void hit(Event e, const std::string& host) override {
    switch (e) {
      case Event::crash:
        balancers_.at(host)->kill();
        break;
      case Event::graceful_leave:
        // keepalived's own graceful leave: stopping it sends a priority-0 advertisement and the
        // peer takes over at once; then apiserver-lb drains.
        keepalived_.at(host)->send_signal(SIGTERM);
        keepalived_.at(host)->wait_exit(10s);
        wait_until([&] { return withdrawn(host); }, 10s, 10ms);
        balancers_.at(host)->send_signal(SIGTERM);
        balancers_.at(host)->wait_exit(10s);
        break;
      case Event::targets_down:
        cut_targets(fabric_, host,
                    master_address(1) + ", " + master_address(2) + ", " + master_address(3));
        break;
      case Event::stopped_alone:  // `systemctl stop apiserver-lb` with the shipped units
        balancers_.at(host)->send_signal(SIGTERM);
        balancers_.at(host)->wait_exit(10s);
        break;
    }
  }
  void heal(Event e, const std::string& host) override {
    switch (e) {
      case Event::crash:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        break;
      case Event::graceful_leave:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        start_keepalived(host);
        break;
      case Event::targets_down:
        restore_targets(fabric_, host);
        break;
      case Event::stopped_alone:
        balancers_.at(host) = start_balancer(fabric_, host, config_);
        break;
    }
  }
  std::string logs() override {
    std::string text;
    for (const auto& [host, k] : keepalived_)
      text += "--- keepalived on " + host + ":\n" + tail(k->log(), 10);
    return text;
  }

 private:
  static std::string master_address(int m) {
    return std::string(kSegment) + std::to_string(20 + m);
  }

  // keepalived.conf from the shipped template: only its definitions ($NAME=...) are replaced.
  std::string render(const std::string& host) const {
    const std::map<std::string, std::string> values{
        {"VIP", std::string(kVip) + "/24"},
        {"INTERFACE", "eth0"},
        {"ROUTER_ID", "52"},
        {"PRIORITY", host == "lb1" ? "110" : "100"},
        {"NOTIFY", "\"" + (dir_ / "keepalived-notify").string() + " " +
                       (dir_ / (host + ".state")).string() + "\""},
        {"SCRIPT_USER", "nobody"},
    };
    std::istringstream in(
        read_text(fs::path(APILB_SOURCE_DIR) / "packaging/keepalived/keepalived.conf.template"));
    std::string out;
    for (std::string line; std::getline(in, line);) {
      const auto eq = line.find('=');
      if (line.starts_with('$') && eq != std::string::npos) {
        const std::string name = line.substr(1, eq - 1);
        if (const auto it = values.find(name); it != values.end())
          line = "$" + name + "=" + it->second;
      }
      out += line + "\n";
    }
    return out;
  }
  void start_keepalived(const std::string& host) {
    const fs::path state = dir_ / (host + ".state");
    std::ofstream{state};
    if (::chown(state.c_str(), nobody_uid_, nobody_gid_) != 0)
      throw std::system_error(errno, std::generic_category(), "chown");
    const fs::path conf = dir_.write(host + ".keepalived.conf", render(host));
    keepalived_[host] =
        fabric_.spawn(host, {find_program("keepalived").string(), "--dont-fork", "--log-console",
                             "--log-detail", "--no-syslog", "--vrrp", "--use-file", conf.string(),
                             "--pid", (dir_ / (host + ".pid")).string(), "--vrrp_pid",
                             (dir_ / (host + ".vrrp.pid")).string()});
  }

  TempDir dir_;
  Fabric fabric_{"k"};  // before the processes: they die first
  fs::path config_;
  uid_t nobody_uid_ = 0;
  gid_t nobody_gid_ = 0;
  std::vector<std::unique_ptr<ChildProcess>> masters_;
  std::map<std::string, std::unique_ptr<ChildProcess>> balancers_;
  std::map<std::string, std::unique_ptr<ChildProcess>> keepalived_;
};

// ---- Load and the measured outcome of one event -------------------------------------------------

// A failed request's answered_by: "!" and why.
bool failed(const Load::Result& r) { return r.answered_by.starts_with('!'); }
// Refused: the SYN got a reset (nobody listening where the packet went). Anything else that fails
// is a connection that was established, or on its way, when its path changed.
bool refused(const Load::Result& r) { return r.answered_by == "!refused"; }

// `GET /` on a new connection: the stand-in's name, or "!" and what failed.
std::string request_once(const tcp::endpoint& service) {
  const auto reply = http_get(service, "/", kRequestDeadline);
  if (reply.error == boost::asio::error::connection_refused) return "!refused";
  if (reply.error) return "!" + reply.error.message();
  if (reply.status != 200) return "!HTTP " + std::to_string(reply.status);
  return reply.body;
}

// kLoadThreads client threads inside `ns`, each starting a new connection to `service` every kPace
// (a paced load: a refused connect returns at once and would otherwise spin).
std::vector<std::unique_ptr<Load>> start_load(const std::string& ns, const tcp::endpoint& service) {
  std::vector<std::unique_ptr<Load>> loads;
  for (int i = 0; i < kLoadThreads; ++i) {
    loads.push_back(std::make_unique<Load>([ns, service] {
      thread_local const bool entered = (enter_namespace(ns), true);
      thread_local auto next = steady_clock::now();
      (void)entered;
      std::this_thread::sleep_until(next);
      next = std::max(next + kPace, steady_clock::now() - kPace);
      return request_once(service);
    }));
  }
  return loads;
}

std::vector<Load::Result> results_of(std::vector<std::unique_ptr<Load>>& loads,
                                     steady_clock::time_point after = {}) {
  std::vector<Load::Result> all;
  for (auto& load : loads) {
    auto some = load->since(after);
    all.insert(all.end(), some.begin(), some.end());
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a.started < b.started; });
  return all;
}

struct Outcome {
  std::string site;
  Event event{};
  std::string victim;
  // From the event to the heal (requests in flight at the event included):
  std::size_t attempts = 0;
  std::size_t failed = 0;
  std::size_t refused = 0;                  // of `failed`: SYN reset
  std::size_t failed_after_withdrawal = 0;  // started after the withdrawal (or VIP move) was seen
  double recovered_s = 0;             // first answer to a request started after the last failure
  std::optional<double> withdrawn_s;  // the route gone (BGP) / the VIP on the peer
  std::string failures;               // when they started, relative to the event
  // From the heal to the end:
  std::optional<double> returned_s;  // back in service, after the heal started
  std::size_t return_attempts = 0;
  std::size_t return_failed = 0;
  std::size_t return_refused = 0;
  int victim_streams = 0, victim_broken = 0;
  int other_streams = 0, other_broken = 0;  // broken by the event or by the return
};

// One event on `site` under load: streams opened first, new connections throughout, the event,
// until the clients recover, then the heal until the site is whole again.
Outcome run_event(Site& site, Event event) {
  Outcome o;
  o.site = site.name();
  o.event = event;
  if (!wait_until([&] { return site.in_service(); }, 20s, 20ms))
    throw std::runtime_error(site.name() + " is not whole before the event:\n" + site.logs());
  o.victim = site.victim();

  // Long-lived streams, and which host carries each.
  std::vector<std::unique_ptr<KeptConnection>> streams;
  std::vector<std::string> carriers;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(in_namespace(site.client_ns(), [ep = site.service()] {
      return std::make_unique<KeptConnection>(ep, 2s);
    }));
    if (streams.back()->who(2s).empty()) throw std::runtime_error("a stream got no first answer");
    carriers.push_back(site.carrier(streams.back()->local_port()));
  }

  auto loads = start_load(site.client_ns(), site.service());
  const auto answered = [&] {
    std::size_t n = 0;
    for (const auto& r : results_of(loads)) n += !failed(r);
    return n;
  };
  if (!wait_until([&] { return answered() >= 40; }, 10s))
    throw std::runtime_error("the load does not flow through " + site.name());

  // The event runs on a thread of its own (a graceful leave takes its time: the gate's leave
  // delay, then the drain), while this one watches for the withdrawal.
  const auto t0 = steady_clock::now();
  auto hitting = std::async(std::launch::async,
                            [&site, event, victim = o.victim] { site.hit(event, victim); });
  std::optional<steady_clock::time_point> withdrawn_at;
  if (wait_until([&] { return site.withdrawn(o.victim); },
                 event == Event::targets_down ? kOutage : 10s, 5ms))
    withdrawn_at = steady_clock::now();
  if (withdrawn_at) o.withdrawn_s = seconds(*withdrawn_at - t0);
  if (event == Event::targets_down) {
    // The outage lasts kOutage whatever the site does about it.
    wait_until([&] { return steady_clock::now() - t0 >= kOutage; }, kOutage + 1s, 20ms);
  }
  // Clients have recovered once nothing failed for 1.5 s (and at least 3 s have passed).
  const auto settled = [&] {
    const auto now = steady_clock::now();
    if (now - t0 < 3s) return false;
    for (const auto& r : results_of(loads, now - 1500ms - kRequestDeadline))
      if (failed(r) && r.started + r.took > now - 1500ms) return false;
    return true;
  };
  if (event != Event::targets_down) wait_until(settled, 15s, 50ms);
  hitting.get();

  // Streams after the event: through the victim, and through the others.
  std::vector<bool> broken(streams.size(), false);
  const auto check_streams = [&] {  // all at once: a stalled stream takes its whole deadline
    std::vector<std::future<bool>> alive;
    for (std::size_t i = 0; i < streams.size(); ++i)
      alive.push_back(
          std::async(std::launch::async, [&stream = *streams[i], was = bool(broken[i])] {
            return !was && !stream.who(1s).empty();
          }));
    for (std::size_t i = 0; i < streams.size(); ++i) broken[i] = !alive[i].get();
  };
  check_streams();

  const auto healed = steady_clock::now();
  site.heal(event, o.victim);
  if (wait_until([&] { return site.in_service(); }, 20s, 10ms))
    o.returned_s = seconds(steady_clock::now() - healed);
  // Traffic after the return, then the streams again: a returning next hop may take flows over.
  const std::size_t before = answered();
  wait_until([&] { return answered() >= before + 100; }, 10s);
  wait_until(settled, 15s, 50ms);
  for (auto& load : loads) load->stop();
  check_streams();

  // Requests in flight at the event count too.
  std::optional<steady_clock::time_point> last_failure;  // when the last failed request started
  char when[32];
  for (const auto& r : results_of(loads, t0 - kRequestDeadline)) {
    if (r.started >= healed) {
      ++o.return_attempts;
      o.return_failed += failed(r);
      o.return_refused += refused(r);
      continue;
    }
    ++o.attempts;
    if (!failed(r)) continue;
    ++o.failed;
    o.refused += refused(r);
    if (withdrawn_at && r.started > *withdrawn_at) ++o.failed_after_withdrawal;
    last_failure = r.started;
    if (o.failed <= 3 || r.answered_by != "!refused") {
      std::snprintf(when, sizeof when, " %+.2fs", seconds(r.started - t0));
      o.failures += when + std::string(" ") + r.answered_by.substr(1) + ";";
    }
  }
  if (last_failure) {
    std::optional<steady_clock::time_point> first;
    for (const auto& r : results_of(loads, *last_failure))
      if (!failed(r)) first = std::min(first.value_or(r.started + r.took), r.started + r.took);
    o.recovered_s = first ? seconds(*first - t0) : -1;
  }
  for (std::size_t i = 0; i < streams.size(); ++i) {
    if (carriers[i] == o.victim) {
      ++o.victim_streams;
      o.victim_broken += broken[i];
    } else {
      ++o.other_streams;
      o.other_broken += broken[i];
    }
  }
  return o;
}

std::string fmt_seconds(const std::optional<double>& s) {
  if (!s) return "never";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f s", *s);
  return text;
}

std::string describe(const Outcome& o) {
  char text[512];
  std::snprintf(text, sizeof text,
                "%s, %s on %s: %zu of %zu new connections failed (%zu refused, %zu started after "
                "the withdrawal), "
                "clients recovered after %.2f s, withdrawn after %s; back in service %s after the "
                "heal, %zu of %zu "
                "failed then; streams broken: %d of %d through %s, %d of %d through the others",
                o.site.c_str(), to_string(o.event).c_str(), o.victim.c_str(), o.failed, o.attempts,
                o.refused, o.failed_after_withdrawal, o.recovered_s,
                fmt_seconds(o.withdrawn_s).c_str(), fmt_seconds(o.returned_s).c_str(),
                o.return_failed, o.return_attempts, o.victim_broken, o.victim_streams,
                o.victim.c_str(), o.other_broken, o.other_streams);
  return text + (o.failures.empty() ? "" : "\n             failures:" + o.failures);
}

// Why BGP tests cannot run here, "" when they can.
std::string bgp_unavailable() {
  if (::geteuid() != 0) return "needs root: it creates network namespaces, bridges and veth pairs";
  if (find_program("bird").empty() || find_program("birdc").empty())
    return "BIRD 2 is not installed (scripts/install-deps.sh installs it: apt-get install bird2)";
  if (find_program("python3").empty())
    return "python3 is not installed (the health gate is a python3 script)";
  if (find_program("nft").empty())
    return "nft is not installed (nftables: the tests cut a balancer's targets with it)";
  if (find_program("ss").empty() || find_program("sysctl").empty())
    return "ss (iproute2) or sysctl (procps) is missing";
  if (find_program("curl").empty()) return "curl is not installed";
  return "";
}

class BgpEcmp : public testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bgp_unavailable(); !why.empty()) GTEST_SKIP() << why;
    try {
      site_.emplace();
    } catch (const std::exception& e) {
      // Namespaces or BIRD may not work here (a container without CAP_SYS_ADMIN, no veth).
      GTEST_SKIP() << "cannot run the BGP fabric here: " << e.what();
    }
  }
  std::optional<BgpSite> site_;
};

TEST_F(BgpEcmp, NewConnectionsSpreadOverEveryLiveBalancer) {
  std::map<std::string, long> before;
  for (const auto& host : site_->balancers()) before[host] = site_->connections_total(host);
  constexpr int kConnections = 150;
  const int answered = in_namespace(site_->client_ns(), [ep = site_->service()] {
    int n = 0;
    for (int i = 0; i < kConnections; ++i) n += !who_plain(ep, 2s).empty();
    return n;
  });
  ASSERT_EQ(answered, kConnections);
  std::string spread;
  for (const auto& host : site_->balancers()) {
    const long got = site_->connections_total(host) - before[host];
    spread += " " + host + "=" + std::to_string(got);
    // With three equal next hops and the 5-tuple hashed, each should see about a third.
    EXPECT_GE(got, kConnections / 10) << host << " got too few of the new connections:" << spread;
  }
  std::printf("[ ecmp     ] %d new connections through %s: %s (route: %s)\n", kConnections,
              std::string(kService).c_str(), spread.c_str(), site_->routes().c_str());
}

TEST_F(BgpEcmp, ACrashedBalancerIsWithdrawnWithinASecondAndNewConnectionsAfterItAllSucceed) {
  const Outcome o = run_event(*site_, Event::crash);
  std::printf("[ crash    ] %s\n", describe(o).c_str());
  ASSERT_TRUE(o.withdrawn_s) << "the route over " << o.victim << " stayed\n"
                             << site_->routes() << site_->logs();
  EXPECT_LT(*o.withdrawn_s, seconds(kWithdrawBound)) << site_->logs();
  EXPECT_EQ(o.failed_after_withdrawal, 0U) << describe(o);
  EXPECT_TRUE(o.returned_s) << "the route did not come back after the balancer restarted\n"
                            << site_->logs();
  // Announced again only once healthy: nothing refused on the way back.
  EXPECT_EQ(o.return_refused, 0U) << describe(o);
}

TEST_F(BgpEcmp, AGracefulLeaveWithdrawsFirstThenDrainsAndLosesNoNewConnection) {
  const Outcome o = run_event(*site_, Event::graceful_leave);
  std::printf("[ leave    ] %s\n", describe(o).c_str());
  ASSERT_TRUE(o.withdrawn_s) << site_->logs();
  EXPECT_LT(*o.withdrawn_s, seconds(kWithdrawBound)) << site_->logs();
  // Withdrawn before apiserver-lb stopped accepting: no SYN was refused, and nothing started after
  // the withdrawal failed. (A request in flight at the instant the router changes its next hops
  // can still be reset: stateless ECMP moves it; describe() lists those.)
  EXPECT_EQ(o.refused, 0U) << describe(o);
  EXPECT_EQ(o.failed_after_withdrawal, 0U) << describe(o);
  EXPECT_TRUE(site_->withdrawn_before_drain())
      << "apiserver-lb got SIGTERM while the router still had its route";
  EXPECT_EQ(site_->leave_exit(), 0) << "apiserver-lb did not drain and exit 0 after the gate left";
  EXPECT_NE(site_->leave_log().find("SIGTERM: draining"), std::string::npos) << site_->leave_log();
  EXPECT_TRUE(o.returned_s) << site_->logs();
}

TEST_F(BgpEcmp, ABalancerWhoseEveryTargetIsDownIsWithdrawnAndComesBackAfterRecovery) {
  const std::size_t from = site_->gate("lb1").log().size();
  const Outcome o = run_event(*site_, Event::targets_down);
  std::printf("[ targets  ] %s\n", describe(o).c_str());
  ASSERT_TRUE(o.withdrawn_s) << site_->logs();
  EXPECT_LT(*o.withdrawn_s, seconds(kTargetsDownBound)) << site_->logs();
  EXPECT_EQ(o.failed_after_withdrawal, 0U) << describe(o);
  EXPECT_NE(site_->gate("lb1").log().find(
                "withdrawing: /readyz 503: panic mode: no target is healthy", from),
            std::string::npos)
      << "the gate did not say why it withdrew:\n"
      << site_->gate("lb1").log();
  EXPECT_TRUE(o.returned_s) << "the route did not come back after the targets recovered\n"
                            << site_->logs();
}

TEST_F(BgpEcmp, ABalancerStoppedWithoutItsGateIsWithdrawnAsSoonAsItStopsAccepting) {
  // Not the shipped order (the gate's unit stops first), but what a bare `kill -TERM` does: the
  // drain closes the acceptors, /readyz says "not listening", and the gate withdraws at once
  // instead of after the drain. What hashed to the host in between is refused, as in a crash.
  const Outcome o = run_event(*site_, Event::stopped_alone);
  std::printf("[ alone    ] %s\n", describe(o).c_str());
  ASSERT_TRUE(o.withdrawn_s) << site_->logs();
  EXPECT_LT(*o.withdrawn_s, seconds(kWithdrawBound)) << "withdrawn only when the drain ended?\n"
                                                     << site_->logs();
  EXPECT_EQ(o.failed_after_withdrawal, 0U) << describe(o);
  EXPECT_NE(site_->gate("lb1").log().find("withdrawing: /readyz 503: not listening"),
            std::string::npos)
      << site_->gate("lb1").log();
}

TEST_F(BgpEcmp, StoppingEveryGateWithdrawsTheServiceAddress) {
  // Stopping every gate withdraws everything: nothing is announced without a healthy balancer.
  for (const auto& host : site_->balancers()) site_->gate(host).send_signal(SIGTERM);
  for (const auto& host : site_->balancers()) EXPECT_EQ(site_->gate(host).wait_exit(10s), 0);
  EXPECT_TRUE(wait_until([&] { return site_->routes().empty(); }, 2s)) << site_->routes();
}

// The same three events, the same load, both setups, in one run: the table in packaging/README.md.
TEST(BgpVersusKeepalived,
     FailedNewConnectionsAndRecoveryForACrashAGracefulLeaveAndEveryTargetDown) {
  if (const std::string why = bgp_unavailable(); !why.empty()) GTEST_SKIP() << why;
  if (find_program("keepalived").empty())
    GTEST_SKIP() << "keepalived is not installed (scripts/install-deps.sh installs it): no pair to "
                    "compare with";
  std::optional<BgpSite> bgp;
  std::optional<KeepalivedSite> vrrp;
  try {
    bgp.emplace();
    vrrp.emplace();
  } catch (const std::exception& e) {
    GTEST_SKIP() << "cannot run both setups here: " << e.what();
  }
  std::vector<Outcome> outcomes;
  for (const Event e :
       {Event::crash, Event::graceful_leave, Event::targets_down, Event::stopped_alone}) {
    for (Site* site : std::initializer_list<Site*>{&*bgp, &*vrrp}) {
      outcomes.push_back(run_event(*site, e));
      std::printf("[ compare  ] %s\n", describe(outcomes.back()).c_str());
    }
  }
  std::printf(
      "\n| Event | Setup | Failed new connections (refused) | Clients recovered after | Withdrawn "
      "/ VIP moved "
      "after | Failed on the return | Streams broken: the host's, the others' |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& o : outcomes) {
    std::printf("| %s | %s | %zu of %zu (%zu) | %.2f s | %s | %zu of %zu | %d of %d, %d of %d |\n",
                to_string(o.event).c_str(), o.site.c_str(), o.failed, o.attempts, o.refused,
                o.recovered_s, fmt_seconds(o.withdrawn_s).c_str(), o.return_failed,
                o.return_attempts, o.victim_broken, o.victim_streams, o.other_broken,
                o.other_streams);
  }
  std::printf(
      "(load: %d clients, each starting a new connection every %lld ms; %d long-lived streams "
      "opened before "
      "each event)\n\n",
      kLoadThreads, static_cast<long long>(kPace.count()), kStreams);
  // BGP: nothing started after the withdrawal fails, and a graceful leave refuses nothing.
  for (const auto& o : outcomes) {
    if (o.site != bgp->name()) continue;
    EXPECT_EQ(o.failed_after_withdrawal, 0U) << describe(o);
    EXPECT_EQ(o.return_refused, 0U) << describe(o);
    if (o.event == Event::graceful_leave) {
      EXPECT_EQ(o.refused, 0U) << describe(o);
    }
  }
}

}  // namespace
}  // namespace apilb::test
