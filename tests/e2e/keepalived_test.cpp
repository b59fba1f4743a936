// Two edge hosts sharing a virtual IP, end to end: apiserver-lb and keepalived (configured from the
// shipped packaging/keepalived/keepalived.conf.template and notify hook) on two balancer hosts, in
// front of three stand-in masters, a client on the same segment. Every host is a network namespace
// plugged into one bridge (in a namespace of its own), so VRRP multicast and gratuitous ARP work as
// on a real L2 segment and nothing touches the test machine's own network. The tests kill the
// active balancer and print how long new client connections through the VIP failed, and restart
// the standby's balancer under load and print the longest pause seen on the established streams.
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
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <thread>

namespace apilb::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr std::string_view kNamespacePrefix = "apilb-vrrp-";
constexpr std::string_view kSubnet = "10.77.0.";  // only ever inside the test's namespaces
constexpr std::string_view kVip = "10.77.0.10";
constexpr std::uint16_t kPort = 6443;
constexpr std::uint16_t kAdminPort = 9445;

double seconds(steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The last `n` lines of `text`, for failure and skip messages.
std::string tail(const std::string& text, std::size_t n = 25) {
  std::size_t at = text.size();
  for (std::size_t lines = 0; at > 0 && lines <= n; --at)
    if (text[at - 1] == '\n') ++lines;
  return text.substr(at);
}

// Moves the calling thread into network namespace `ns` (by its /run/netns name): every socket it
// creates from then on lives there. Only this thread moves; the test's other threads stay put.
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
  return std::async(std::launch::async, [ns, fn = std::move(fn)]() mutable {
    enter_namespace(ns);
    return fn();
  });
}

// An L2 segment: one namespace holding a bridge, and hosts (namespaces) with an `eth0` plugged
// into it. Named apilb-vrrp-PID-HOST, so parallel test processes never collide; namespaces left by
// test processes that died are deleted on construction. The destructor SIGKILLs every process
// still running in the namespaces (keepalived forks a child no ChildProcess knows) and deletes
// them, also when the test failed. Declare it before the processes that run inside.
class Segment {
 public:
  Segment()
      : ip_(find_program("ip")),
        prefix_(std::string(kNamespacePrefix) + std::to_string(::getpid()) + "-") {
    if (ip_.empty()) throw std::runtime_error("no `ip` program (iproute2)");
    delete_stale();
    add_namespace("switch");
    ip({"-n", ns("switch"), "link", "add", "br0", "type", "bridge"});
    ip({"-n", ns("switch"), "link", "set", "br0", "up"});
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() {
    for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
      const auto pids = run_command({ip_.string(), "netns", "pids", *it});
      std::istringstream in(pids.output);
      for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
    }
    for (const auto& name : namespaces_) run_command({ip_.string(), "netns", "del", name});
  }

  // A host at 10.77.0.<octet>/24 on the bridge.
  void add_host(const std::string& host, int octet) {
    add_namespace(host);
    ip({"link", "add", "eth0", "netns", ns(host), "type", "veth", "peer", "name", host, "netns",
        ns("switch")});
    ip({"-n", ns("switch"), "link", "set", host, "master", "br0"});
    ip({"-n", ns("switch"), "link", "set", host, "up"});
    ip({"-n", ns(host), "addr", "add", std::string(kSubnet) + std::to_string(octet) + "/24", "dev",
        "eth0"});
    ip({"-n", ns(host), "link", "set", "eth0", "up"});
  }

  std::string ns(const std::string& host) const { return prefix_ + host; }
  // argv prefix running a program in `host`'s namespace (`ip netns exec` execs it: same pid).
  std::vector<std::string> run_in(const std::string& host) const {
    return {ip_.string(), "netns", "exec", ns(host)};
  }
  const fs::path& ip_program() const { return ip_; }

  // True when `address` is configured on `host`'s eth0.
  bool has_address(const std::string& host, std::string_view address) const {
    const auto r =
        run_command({ip_.string(), "-n", ns(host), "-o", "-4", "addr", "show", "dev", "eth0"});
    return r.output.find("inet " + std::string(address) + "/") != std::string::npos;
  }

  // `host` is gone as if powered off: its link goes down (its kernel answers nothing any more, not
  // even ARP for the VIP it still has configured), then every process in it is SIGKILLed.
  void power_off(const std::string& host) const {
    run_command({ip_.string(), "-n", ns(host), "link", "set", "eth0", "down"});
    const auto pids = run_command({ip_.string(), "netns", "pids", ns(host)});
    std::istringstream in(pids.output);
    for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
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
  void add_namespace(const std::string& host) {
    ip({"netns", "add", ns(host)});
    namespaces_.push_back(ns(host));
    ip({"-n", ns(host), "link", "set", "lo", "up"});
  }
  // `ip netns list` lines look like "apilb-vrrp-1234-lb1 (id: 3)".
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

// An established HTTP/1.1 connection kept open across a test phase (plain POSIX, so every wait has
// a deadline). Connect on a thread inside the client's namespace; use from any thread.
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
  }
  KeptConnection(const KeptConnection&) = delete;
  KeptConnection& operator=(const KeptConnection&) = delete;
  ~KeptConnection() { ::close(fd_); }

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
        if (data.size() >= head + 4 + content_length) {
          std::string body = data.substr(head + 4, content_length);
          while (!body.empty() && body.back() == '\n') body.pop_back();
          return body;
        }
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
};

// What the client saw after a balancer died: the first new connection through the VIP that got an
// answer, and how many attempts failed before it.
struct Recovery {
  std::optional<steady_clock::time_point> answered;
  std::string answered_by;
  int failed_attempts = 0;
};

// New connections to the VIP, one after another, each allowed `attempt` to complete, until one
// succeeds or `deadline` passes. Run on a thread inside the client's namespace.
Recovery first_answer(const tcp::endpoint& vip, std::chrono::milliseconds deadline,
                      std::chrono::milliseconds attempt = 200ms) {
  Recovery r;
  const auto until = steady_clock::now() + deadline;
  while (steady_clock::now() < until) {
    const auto started = steady_clock::now();
    r.answered_by = who_plain(vip, attempt);
    if (!r.answered_by.empty()) {
      r.answered = steady_clock::now();
      return r;
    }
    ++r.failed_attempts;
    std::this_thread::sleep_until(started + 20ms);  // a refused connect returns at once: pace it
  }
  return r;
}

// The two edge hosts, three stand-in masters and a client on one segment; apiserver-lb and
// keepalived started on both edge hosts, one of them holding the VIP when SetUp() returns.
class KeepalivedPair : public testing::Test {
 protected:
  static constexpr const char* kHosts[] = {"lb1", "lb2"};

  void SetUp() override {
    if (::geteuid() != 0)
      GTEST_SKIP() << "needs root: it creates network namespaces, a bridge and veth pairs";
    keepalived_ = find_program("keepalived");
    if (keepalived_.empty())
      GTEST_SKIP() << "keepalived is not installed (scripts/install-deps.sh installs it: apt-get "
                      "install keepalived)";
    curl_ = find_program("curl");
    if (curl_.empty())
      GTEST_SKIP() << "curl is not installed (the track script of the template uses it)";
    const passwd* nobody = ::getpwnam("nobody");
    if (nobody == nullptr) GTEST_SKIP() << "no user `nobody` to run keepalived's scripts as";
    nobody_uid_ = nobody->pw_uid;
    nobody_gid_ = nobody->pw_gid;
    try {
      segment_.emplace();
    } catch (const std::exception& e) {
      GTEST_SKIP() << "cannot make network namespaces with a bridge here: " << e.what();
    }
    segment_->add_host("lb1", 11);
    segment_->add_host("lb2", 12);
    for (int m = 1; m <= 3; ++m) segment_->add_host("m" + std::to_string(m), 20 + m);
    segment_->add_host("client", 100);

    for (int m = 1; m <= 3; ++m) start_master(m);
    for (const char* host : kHosts) start_balancer(host);
    choose_check();
    for (const char* host : kHosts) start_keepalived(host);

    // Both start as BACKUP; after 3 advertisement intervals without a master, the one with the
    // higher priority (lb1) takes the VIP, and the other stays BACKUP.
    const auto started = steady_clock::now();
    const bool elected = wait_until([&] { return !vip_holder().empty(); }, 20s, 20ms);
    if (!elected) {
      for (const char* host : kHosts) {
        if (!keepalived_processes_.at(host)->running()) {
          GTEST_SKIP() << "VRRP cannot run in a network namespace here: keepalived on " << host
                       << " exited at start:\n"
                       << tail(keepalived_processes_.at(host)->log());
        }
      }
      FAIL() << "no balancer took the VIP within 20s\nlb1:\n"
             << tail(keepalived_processes_.at("lb1")->log()) << "\nlb2:\n"
             << tail(keepalived_processes_.at("lb2")->log());
    }
    const auto elected_after = steady_clock::now() - started;
    ASSERT_FALSE(wait_until([&] { return vip_holder() == "lb1+lb2"; }, 2s, 50ms))
        << "split brain: both hosts hold the VIP (do VRRP advertisements cross the bridge?)\n"
        << logs();
    std::printf(
        "[ vrrp     ] %s took the VIP %s %.1f s after keepalived started (track_script: %s)\n",
        vip_holder().c_str(), std::string(kVip).c_str(), seconds(elected_after),
        check_kind_.c_str());
    ASSERT_TRUE(wait_until([&] { return state_of(vip_holder()) == "MASTER"; }, 5s))
        << "the notify hook did not record MASTER on " << vip_holder() << ": \""
        << state_of(vip_holder()) << "\"";
    const auto who =
        in_namespace(segment_->ns("client"), [&] { return who_plain(vip(), 5s); }).get();
    ASSERT_FALSE(who.empty()) << "no answer through the VIP before any failure";
  }

  tcp::endpoint vip() const { return {boost::asio::ip::make_address_v4(std::string(kVip)), kPort}; }
  static std::string peer_of(const std::string& host) { return host == "lb1" ? "lb2" : "lb1"; }

  // The edge host holding the VIP, "" when none does (both would be a split brain: reported too).
  std::string vip_holder() const {
    std::string holder;
    for (const char* host : kHosts) {
      if (segment_->has_address(host, kVip))
        holder += holder.empty() ? host : std::string("+") + host;
    }
    return holder;
  }

  // The state the notify hook last wrote on `host` (MASTER, BACKUP, FAULT, STOP), "" before any.
  std::string state_of(const std::string& host) const {
    const std::string text = read_file(dir_ / (host + ".state"));
    return text.substr(0, text.find(' '));
  }

  void start_master(int m) {
    const std::string host = "m" + std::to_string(m);
    auto argv = segment_->run_in(host);
    argv.insert(argv.end(),
                {APILB_STANDIN, "--plain", "--name", "master-" + std::to_string(m), "--listen",
                 std::string(kSubnet) + std::to_string(20 + m) + ":" + std::to_string(kPort)});
    const auto& p = masters_.emplace_back(
        std::make_unique<ChildProcess>(argv.front(), std::vector(argv.begin() + 1, argv.end())));
    if (!p->wait_for_log(" listening on ", 10s))
      throw std::runtime_error("stand-in " + host + " did not start:\n" + p->log());
  }

  // apiserver-lb as on an edge host: every address on :6443, the admin API on loopback.
  void start_balancer(const std::string& host) {
    auto argv = segment_->run_in(host);
    argv.insert(argv.end(), {APILB_BINARY, "run", "--listen", "0.0.0.0:" + std::to_string(kPort),
                             "--admin", "127.0.0.1:" + std::to_string(kAdminPort)});
    for (int m = 1; m <= 3; ++m)
      argv.insert(argv.end(), {"--target", std::string(kSubnet) + std::to_string(20 + m)});
    auto& p = balancers_[host];
    p = std::make_unique<ChildProcess>(argv.front(), std::vector(argv.begin() + 1, argv.end()));
    if (!p->wait_for_log(" listening on ", 10s))
      throw std::runtime_error("apiserver-lb on " + host + " did not start:\n" + p->log());
  }

  // The template's track_script checks /healthz with curl. While the admin API may not exist in
  // the binary under test, the test falls back to a TCP connect to the listen port, and says so.
  void choose_check() {
    const auto healthz = in_namespace(segment_->ns("lb1"), [] {
                           return http_get(loopback(kAdminPort), "/healthz", 2s);
                         }).get();
    if (healthz.ok() && healthz.status == 200) {
      check_kind_ = "curl /healthz (the template's own)";
      return;
    }
    const fs::path script = dir_ / "tcp-check";
    std::ofstream(script) << "#!/bin/bash\n# fallback: apiserver-lb accepts on its listen "
                             "port\nexec 3<>/dev/tcp/127.0.0.1/"
                          << kPort << "\n";
    fs::permissions(script, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                fs::perms::others_read | fs::perms::others_exec);
    check_ = "\"" + script.string() + "\"";
    check_kind_ =
        "TCP connect to :" + std::to_string(kPort) + " because /healthz did not answer (" +
        (healthz.error ? healthz.error.message() : "HTTP " + std::to_string(healthz.status)) + ")";
  }

  // keepalived.conf from the shipped template: only its definitions ($NAME=...) are replaced.
  std::string render(const std::string& host, int priority) const {
    const std::map<std::string, std::string> values{
        {"VIP", std::string(kVip) + "/24"},
        {"INTERFACE", "eth0"},
        {"ROUTER_ID", "51"},
        {"PRIORITY", std::to_string(priority)},
        {"NOTIFY", "\"" + (dir_ / "keepalived-notify").string() + " " +
                       (dir_ / (host + ".state")).string() + "\""},
        {"SCRIPT_USER", "nobody"},
    };
    std::map<std::string, int> replaced;
    std::istringstream in(
        read_file(fs::path(APILB_SOURCE_DIR) / "packaging/keepalived/keepalived.conf.template"));
    std::string out;
    for (std::string line; std::getline(in, line);) {
      const auto eq = line.find('=');
      if (line.starts_with('$') && eq != std::string::npos) {
        const std::string name = line.substr(1, eq - 1);
        if (const auto it = values.find(name); it != values.end()) {
          line = "$" + name + "=" + it->second;
          ++replaced[name];
        } else if (name == "CHECK" && !check_.empty()) {
          line = "$CHECK=" + check_;
        }
      }
      out += line + "\n";
    }
    for (const auto& [name, value] : values) {
      if (replaced[name] != 1)
        throw std::runtime_error("the template does not define $" + name + " exactly once");
    }
    return out;
  }

  void start_keepalived(const std::string& host) {
    if (!fs::exists(dir_ / "keepalived-notify")) {
      // keepalived refuses scripts that a non-root user could modify, and runs them as
      // script_user (nobody): the directory must be searchable, the state files writable by it.
      fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read |
                                       fs::perms::group_exec | fs::perms::others_read |
                                       fs::perms::others_exec);
      fs::copy_file(fs::path(APILB_SOURCE_DIR) / "packaging/keepalived/keepalived-notify",
                    dir_ / "keepalived-notify");
      fs::permissions(dir_ / "keepalived-notify",
                      fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec);
    }
    const fs::path state = dir_ / (host + ".state");
    std::ofstream{state};
    if (::chown(state.c_str(), nobody_uid_, nobody_gid_) != 0)
      throw std::system_error(errno, std::generic_category(), "chown");
    const fs::path conf = dir_.write(host + ".conf", render(host, host == "lb1" ? 110 : 100));
    auto argv = segment_->run_in(host);
    argv.insert(argv.end(), {keepalived_.string(), "--dont-fork", "--log-console", "--log-detail",
                             "--no-syslog", "--vrrp", "--use-file", conf.string(), "--pid",
                             (dir_ / (host + ".pid")).string(), "--vrrp_pid",
                             (dir_ / (host + ".vrrp.pid")).string()});
    keepalived_processes_[host] =
        std::make_unique<ChildProcess>(argv.front(), std::vector(argv.begin() + 1, argv.end()));
  }

  // When `host` got the VIP (whatever the other edge host has configured), nullopt at the deadline.
  std::optional<steady_clock::time_point> wait_for_vip_on(const std::string& host,
                                                          std::chrono::milliseconds deadline) {
    if (!wait_until([&] { return segment_->has_address(host, kVip); }, deadline, 10ms))
      return std::nullopt;
    return steady_clock::now();
  }

  std::string logs() const {
    std::string text;
    for (const char* host : kHosts) {
      text += std::string("--- keepalived on ") + host + ":\n" +
              tail(keepalived_processes_.at(host)->log(), 15);
    }
    return text;
  }

  TempDir dir_;
  std::optional<Segment> segment_;  // declared before the processes: they die first
  fs::path keepalived_;
  fs::path curl_;
  uid_t nobody_uid_ = 0;
  gid_t nobody_gid_ = 0;
  std::string check_;  // replaces the template's $CHECK when set
  std::string check_kind_;
  std::vector<std::unique_ptr<ChildProcess>> masters_;
  std::map<std::string, std::unique_ptr<ChildProcess>> balancers_;
  std::map<std::string, std::unique_ptr<ChildProcess>> keepalived_processes_;
};

TEST_F(KeepalivedPair, VipMovesWhenTheActiveApiserverLbDiesAndStaysWhenItComesBack) {
  const std::string active = vip_holder();
  const std::string standby = peer_of(active);
  ASSERT_EQ(state_of(standby), "BACKUP");

  // The balancer process crashes; keepalived on the same host stays and notices through /healthz.
  const auto killed = steady_clock::now();
  balancers_.at(active)->kill();
  auto recovery =
      in_namespace(segment_->ns("client"), [vip = vip()] { return first_answer(vip, 20s); });
  const auto moved = wait_for_vip_on(standby, 20s);
  const Recovery r = recovery.get();
  ASSERT_TRUE(moved) << "the VIP did not move to " << standby << " within 20s\n" << logs();
  ASSERT_TRUE(r.answered) << "no new connection through the VIP succeeded within 20s\n" << logs();
  EXPECT_FALSE(segment_->has_address(active, kVip)) << "split brain: " << active << " kept the VIP";
  std::printf(
      "[ failover ] apiserver-lb on %s killed (SIGKILL): VIP on %s after %.2f s; first new client "
      "connection through the VIP answered (by %s) after %.2f s, %d attempts failed before it\n",
      active.c_str(), standby.c_str(), seconds(*moved - killed), r.answered_by.c_str(),
      seconds(*r.answered - killed), r.failed_attempts);
  RecordProperty("vip_failover_seconds", std::to_string(seconds(*r.answered - killed)));
  EXPECT_TRUE(
      wait_until([&] { return state_of(active) == "FAULT" && state_of(standby) == "MASTER"; }, 5s))
      << "notify hook states: " << active << "=" << state_of(active) << ", " << standby << "="
      << state_of(standby);

  // A watch through the new master, then the old one recovers: with nopreempt it stays BACKUP and
  // the VIP (and the watch) stay where they are.
  auto watch = in_namespace(segment_->ns("client"), [vip = vip()] {
                 return std::make_unique<KeptConnection>(vip, 2s);
               }).get();
  const std::string first = watch->who(2s);
  ASSERT_FALSE(first.empty());
  start_balancer(active);
  ASSERT_TRUE(wait_until([&] { return state_of(active) == "BACKUP"; }, 10s))
      << active << " did not leave FAULT after apiserver-lb came back: " << state_of(active) << "\n"
      << logs();
  EXPECT_FALSE(wait_until([&] { return vip_holder() != standby; }, 3s, 50ms))
      << "the VIP moved back to " << vip_holder() << ": nopreempt is not in effect";
  EXPECT_EQ(watch->who(2s), first)
      << "the established connection through " << standby << " did not survive";
}

TEST_F(KeepalivedPair, VipMovesWhenTheActiveBalancerHostDies) {
  const std::string active = vip_holder();
  const std::string standby = peer_of(active);

  // The whole host goes: link down, keepalived and apiserver-lb SIGKILLed, so no priority-0
  // advertisement warns the peer: it takes over after 3 missed advertisements (plus its skew time).
  const auto killed = steady_clock::now();
  segment_->power_off(active);
  auto recovery =
      in_namespace(segment_->ns("client"), [vip = vip()] { return first_answer(vip, 20s); });
  const auto moved = wait_for_vip_on(standby, 20s);
  const Recovery r = recovery.get();
  ASSERT_TRUE(moved) << "the VIP did not appear on " << standby << " within 20s\n" << logs();
  ASSERT_TRUE(r.answered) << "no new connection through the VIP succeeded within 20s\n" << logs();
  std::printf(
      "[ failover ] host %s powered off (link down, keepalived and apiserver-lb SIGKILLed): VIP on "
      "%s after %.2f s; first "
      "new client connection through the VIP answered (by %s) after %.2f s, %d attempts failed "
      "before it\n",
      active.c_str(), standby.c_str(), seconds(*moved - killed), r.answered_by.c_str(),
      seconds(*r.answered - killed), r.failed_attempts);
  RecordProperty("vip_failover_seconds", std::to_string(seconds(*r.answered - killed)));
  EXPECT_TRUE(wait_until([&] { return state_of(standby) == "MASTER"; }, 5s)) << state_of(standby);
}

// A kept-alive connection through the VIP asking GET / every kPace until told to stop: a stream of
// responses whose longest pause is what a stalled watch would show. A request unanswered within
// kStall ends it (a VIP handed to the other host leaves the connection with nobody to talk to).
struct StreamRecord {
  std::string answered_by;  // the master behind it, from its first response
  int responses = 0;
  steady_clock::duration max_gap{};
  steady_clock::time_point max_gap_end{};  // when the longest pause ended
  bool broken = false;
  steady_clock::time_point broken_at{};  // when a request went unanswered (reset, closed or kStall)
  bool switched = false;                 // answered by another master than at first
};

// " 12 ms (ended +1.93 s after the kill)": a stream's longest pause and when it ended.
std::string fmt_gap(const StreamRecord& r, steady_clock::time_point restarted) {
  char text[128];
  std::snprintf(text, sizeof text, " %.0f ms (ended %+.2f s after the kill)",
                seconds(r.max_gap) * 1000, seconds(r.max_gap_end - restarted));
  if (r.broken) {
    const std::size_t n = std::strlen(text);
    std::snprintf(text + n, sizeof text - n, " broken at %+.2f s",
                  seconds(r.broken_at - restarted));
  }
  return text;
}

StreamRecord flow(KeptConnection& stream, const std::stop_token& stop,
                  std::atomic<int>& responses) {
  constexpr auto kPace = 10ms;
  constexpr auto kStall = 3s;
  StreamRecord r;
  auto last = steady_clock::now();
  while (!stop.stop_requested()) {
    const std::string who =
        stream.who(std::chrono::duration_cast<std::chrono::milliseconds>(kStall));
    const auto now = steady_clock::now();
    if (now - last > r.max_gap) r.max_gap = now - last, r.max_gap_end = now;
    if (who.empty()) {
      r.broken = true;
      r.broken_at = now;
      break;
    }
    if (r.answered_by.empty()) r.answered_by = who;
    r.switched = r.switched || who != r.answered_by;
    ++r.responses;
    responses.fetch_add(1, std::memory_order_relaxed);
    last = now;
    std::this_thread::sleep_until(now + kPace);
  }
  return r;
}

TEST_F(KeepalivedPair, RestartingTheStandbysBalancerUnderLoadStallsNoStreamAndLeavesTheVip) {
  // The standby must be the host with the higher VRRP priority (lb1), so that only nopreempt keeps
  // it from taking the VIP back when its balancer comes back. When lb1 won the election, get
  // there first: its balancer dies, the VIP moves to lb2, its balancer comes back (BACKUP).
  const std::string standby = "lb1";
  const std::string holder = peer_of(standby);
  if (vip_holder() == standby) {
    balancers_.at(standby)->kill();
    ASSERT_TRUE(wait_for_vip_on(holder, 20s)) << "the VIP did not move to " << holder << "\n"
                                              << logs();
    start_balancer(standby);
  }
  ASSERT_TRUE(wait_until(
      [&] { return state_of(standby) == "BACKUP" && state_of(holder) == "MASTER"; }, 10s))
      << standby << "=" << state_of(standby) << ", " << holder << "=" << state_of(holder) << "\n"
      << logs();

  // Streams through the VIP, i.e. through the balancer on `holder`.
  constexpr int kStreams = 6;
  std::vector<std::unique_ptr<KeptConnection>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(in_namespace(segment_->ns("client"), [vip = vip()] {
                        return std::make_unique<KeptConnection>(vip, 2s);
                      }).get());
  }
  std::atomic<int> responses{0};
  std::vector<std::future<StreamRecord>> records;
  std::stop_source stop;
  for (auto& s : streams)
    records.push_back(std::async(std::launch::async, [&s, token = stop.get_token(), &responses] {
      return flow(*s, token, responses);
    }));
  // Stop the streams however the test ends.
  struct StopAtExit {
    std::stop_source& stop;
    ~StopAtExit() { stop.request_stop(); }
  } stop_at_exit{stop};
  ASSERT_TRUE(wait_until([&] { return responses.load() >= 10 * kStreams; }, 10s))
      << "the streams do not flow";

  // Whoever holds the VIP is checked all along: every wait below looks at it as it polls.
  std::string other_holder;
  const auto vip_stays = [&] {
    const std::string now = vip_holder();
    if (now != holder && other_holder.empty()) other_holder = now.empty() ? "nobody" : now;
    return other_holder.empty();
  };
  const auto restarted = steady_clock::now();
  balancers_.at(standby)->kill();
  const bool noticed =
      wait_until([&] { return !vip_stays() || state_of(standby) == "FAULT"; }, 10s, 20ms);
  const auto fault_after = steady_clock::now() - restarted;
  start_balancer(standby);
  const bool back =
      wait_until([&] { return !vip_stays() || state_of(standby) == "BACKUP"; }, 10s, 20ms);
  const auto backup_after = steady_clock::now() - restarted;
  // A preempting peer with the higher priority takes the VIP within an advertisement or two.
  wait_until([&] { return !vip_stays(); }, 4s, 50ms);
  const int before_stop = responses.load();
  const bool flowing = wait_until([&] { return responses.load() >= before_stop + kStreams; }, 5s);
  stop.request_stop();

  steady_clock::duration max_gap{};
  int broken = 0, switched = 0, total = 0;
  std::string gaps;
  for (auto& f : records) {
    const StreamRecord r = f.get();
    max_gap = std::max(max_gap, r.max_gap);
    broken += r.broken;
    switched += r.switched;
    total += r.responses;
    gaps += fmt_gap(r, restarted);
  }
  std::printf(
      "[ restart  ] apiserver-lb on standby %s killed and started again under load (%d streams "
      "through "
      "the VIP on %s, %d responses): keepalived on %s went FAULT after %.2f s and BACKUP after "
      "%.2f s; "
      "VIP stayed on %s: %s; longest pause on any stream %.0f ms (per stream:%s)\n",
      standby.c_str(), kStreams, holder.c_str(), total, standby.c_str(), seconds(fault_after),
      seconds(backup_after), holder.c_str(),
      other_holder.empty() ? "yes" : ("no, moved to " + other_holder).c_str(),
      seconds(max_gap) * 1000, gaps.c_str());
  RecordProperty(
      "max_stream_gap_ms",
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(max_gap).count()));
  EXPECT_TRUE(noticed) << "keepalived on " << standby << " did not go FAULT without its balancer\n"
                       << logs();
  EXPECT_TRUE(back) << "keepalived on " << standby
                    << " did not go back to BACKUP: " << state_of(standby) << "\n"
                    << logs();
  EXPECT_TRUE(other_holder.empty())
      << "the VIP left " << holder << " for " << other_holder
      << " while the standby's balancer restarted: nopreempt is not in effect\n"
      << logs();
  EXPECT_TRUE(flowing) << "the streams stopped";
  EXPECT_EQ(broken, 0) << "streams stalled for more than 3 s";
  EXPECT_EQ(switched, 0) << "streams were re-established elsewhere";
  EXPECT_LT(max_gap, 1s) << "a stream paused for " << seconds(max_gap) << " s";
  EXPECT_TRUE(segment_->has_address(holder, kVip));
}

}  // namespace
}  // namespace apilb::test
