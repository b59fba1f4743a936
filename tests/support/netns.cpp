#include "tests/support/netns.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace apilb::test {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

namespace {

constexpr std::string_view kNftTable = "apilb_blackhole";

int decode_status(int raw) {
  if (WIFEXITED(raw)) return WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) return 128 + WTERMSIG(raw);
  return -1;
}

std::string joined(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) text += (text.empty() ? "" : " ") + arg;
  return text;
}

// A locally administered MAC per subnet: 02:a1:b0:00:N:01 on the root side, :02 in the namespace.
std::string mac(int subnet, int side) {
  char text[18];
  std::snprintf(text, sizeof text, "02:a1:b0:00:%02x:%02x", subnet, side);
  return text;
}

}  // namespace

fs::path find_program(std::string_view name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');)
      if (!dir.empty()) dirs.push_back(dir);
  }
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) dirs.emplace_back(dir);
  for (const auto& dir : dirs) {
    const fs::path candidate = fs::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0 && !fs::is_directory(candidate)) return candidate;
  }
  return {};
}

CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds deadline) {
  if (argv.empty()) throw std::invalid_argument("run_command: empty argv");
  // Everything the child needs is built here: between fork and exec only async-signal-safe calls.
  std::vector<std::string> strings = argv;
  std::vector<char*> args;
  for (auto& arg : strings) args.push_back(arg.data());
  args.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::system_error(errno, std::generic_category(), "pipe2");
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(null_fd, 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    // No descriptor of the test (listening sockets!) may leak into the child.
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
      for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction defaults {};
    defaults.sa_handler = SIG_DFL;
    for (int signo = 1; signo < NSIG; ++signo) ::sigaction(signo, &defaults, nullptr);
    ::execve(args[0], args.data(), environ);
    constexpr char failed[] = "exec failed\n";
    [[maybe_unused]] auto written = ::write(2, failed, sizeof failed - 1);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out[1]);
  if (null_fd >= 0) ::close(null_fd);
  if (pid < 0) {
    ::close(out[0]);
    throw std::system_error(fork_errno, std::generic_category(), "fork");
  }

  CommandResult result;
  const auto until = steady_clock::now() + deadline;
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{out[0], POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = ready == 0;
      break;
    }
    char buffer[4096];
    const ssize_t got = ::read(out[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child (and anything it started) closed its output
    result.output.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(out[0]);
  if (timed_out) {
    ::kill(pid, SIGKILL);
    result.output += "\n[killed at the deadline]\n";
  }
  int raw = 0;
  pid_t got;
  do {
    got = ::waitpid(pid, &raw, 0);
  } while (got < 0 && errno == EINTR);
  result.status = got == pid ? decode_status(raw) : -1;
  return result;
}

// ---- TestHost -----------------------------------------------------------------------------------

TestHost::TestHost() : ip_(find_program("ip")) {
  if (ip_.empty()) throw std::runtime_error("no `ip` (iproute2) found");
  static std::atomic<int> next_index{0};
  const int index = next_index++;
  const int pid = static_cast<int>(::getpid());
  name_ = "apilb-" + std::to_string(pid) + "-" + std::to_string(index);
  ip({"netns", "add", name_});
  try {
    // Claim a subnet: creating the link apilbNr fails with EEXIST while another host (in this or
    // another process) has N. Start where this process and index are unlikely to meet another.
    const int start = (pid * 37 + index * 11) % 256;
    int subnet = -1;
    for (int k = 0; k < 256 && subnet < 0; ++k) {
      const int n = (start + k) % 256;
      const std::string root = "apilb" + std::to_string(n) + "r";
      const std::string host = "apilb" + std::to_string(n) + "n";
      const auto r =
          run_command({ip_.string(), "link", "add", root, "address", mac(n, 1), "type", "veth",
                       "peer", "name", host, "address", mac(n, 2), "netns", name_});
      if (r.ok()) {
        subnet = n;
        root_link_ = root;
        host_link_ = host;
      } else if (r.output.find("File exists") == std::string::npos) {
        throw std::runtime_error("ip link add " + root + " type veth ... failed (exit " +
                                 std::to_string(r.status) + "): " + r.output);
      }
    }
    if (subnet < 0)
      throw std::runtime_error("every subnet 10.231.N.0/30 is taken by another test host");
    const auto octet = static_cast<unsigned char>(subnet);
    root_address_ = boost::asio::ip::address_v4({10, 231, octet, 1});
    address_ = boost::asio::ip::address_v4({10, 231, octet, 2});

    ip({"addr", "add", root_address_.to_string() + "/30", "dev", root_link_});
    ip({"link", "set", "dev", root_link_, "up"});
    ip({"-n", name_, "addr", "add", address_.to_string() + "/30", "dev", host_link_});
    ip({"-n", name_, "link", "set", "dev", host_link_, "up"});
    ip({"-n", name_, "link", "set", "dev", "lo", "up"});
    // Permanent neighbours: no ARP at all, so a silent host never becomes "host unreachable".
    ip({"neigh", "replace", address_.to_string(), "lladdr", mac(subnet, 2), "dev", root_link_,
        "nud", "permanent"});
    ip({"-n", name_, "neigh", "replace", root_address_.to_string(), "lladdr", mac(subnet, 1), "dev",
        host_link_, "nud", "permanent"});
  } catch (...) {
    remove();
    throw;
  }
}

TestHost::~TestHost() { remove(); }

void TestHost::ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{ip_.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_command(argv);
  if (!r.ok())
    throw std::runtime_error(joined(argv) + " failed (exit " + std::to_string(r.status) +
                             "): " + r.output);
}

void TestHost::remove() noexcept {
  try {
    // Whatever still runs in the namespace (started by this test through run_in()) would keep it,
    // and its link, alive after `ip netns del`.
    const auto pids = run_command({ip_.string(), "netns", "pids", name_});
    std::istringstream in(pids.output);
    for (long pid; in >> pid;)
      if (pid > 1 && pid != ::getpid()) ::kill(static_cast<pid_t>(pid), SIGKILL);
    // Deleting either end of a veth deletes the pair at once; the namespace's own cleanup is
    // asynchronous.
    if (!root_link_.empty()) run_command({ip_.string(), "link", "del", "dev", root_link_});
    run_command({ip_.string(), "netns", "del", name_});
  } catch (...) {
    // Nothing more to do: a leftover namespace is deleted by the next unavailable_reason().
  }
}

std::vector<std::string> TestHost::run_in() const { return {ip_.string(), "netns", "exec", name_}; }

BlackholeMethod TestHost::blackhole(BlackholeMethod method) {
  if (method == BlackholeMethod::automatic)
    method = find_program("nft").empty() ? BlackholeMethod::link_down : BlackholeMethod::nftables;
  switch (method) {
    case BlackholeMethod::nftables: {
      const fs::path nft = find_program("nft");
      if (nft.empty()) throw std::runtime_error("blackhole: no `nft` found (install nftables)");
      // One transaction: both directions go silent at the same instant. Priority raw: before
      // conntrack, so nothing in the namespace ever sees a packet or answers one.
      const std::string table = std::string(kNftTable);
      auto argv = run_in();
      argv.push_back(nft.string());
      argv.push_back("add table inet " + table +
                     "; "
                     "add chain inet " +
                     table +
                     " in { type filter hook prerouting priority raw; policy drop; }; "
                     "add chain inet " +
                     table + " out { type filter hook output priority raw; policy drop; }");
      const auto r = run_command(argv);
      if (!r.ok())
        throw std::runtime_error(joined(argv) + " failed (exit " + std::to_string(r.status) +
                                 "): " + r.output);
      blackholed_by_nft_ = true;
      break;
    }
    case BlackholeMethod::link_down:
      ip({"-n", name_, "link", "set", "dev", host_link_, "down"});
      link_down_ = true;
      break;
    case BlackholeMethod::automatic:
      break;
  }
  return method;
}

void TestHost::restore() {
  if (blackholed_by_nft_) {
    auto argv = run_in();
    argv.push_back(find_program("nft").string());
    argv.push_back("delete table inet " + std::string(kNftTable));
    const auto r = run_command(argv);
    if (!r.ok())
      throw std::runtime_error(joined(argv) + " failed (exit " + std::to_string(r.status) +
                               "): " + r.output);
    blackholed_by_nft_ = false;
  }
  if (link_down_) {
    ip({"-n", name_, "link", "set", "dev", host_link_, "up"});
    // Taking a link down flushes even its permanent neighbours.
    const auto subnet = static_cast<int>(address_.to_bytes()[2]);
    ip({"-n", name_, "neigh", "replace", root_address_.to_string(), "lladdr", mac(subnet, 1), "dev",
        host_link_, "nud", "permanent"});
    link_down_ = false;
  }
}

const std::string& TestHost::unavailable_reason() {
  static const std::string reason = []() -> std::string {
    if (::geteuid() != 0)
      return "test hosts need root (network namespaces, veth links); euid is " +
             std::to_string(::geteuid());
    const fs::path ip = find_program("ip");
    if (ip.empty()) return "test hosts need `ip` from iproute2, which is not installed";
    // Namespaces left by test processes that were killed before their destructors ran.
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
      const std::string name = entry.path().filename().string();
      if (!name.starts_with("apilb-")) continue;  // apilb-PID-INDEX
      const auto dash = name.find('-', 6);
      const std::string pid = name.substr(6, dash == std::string::npos ? dash : dash - 6);
      const bool digits = !pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || pid == std::to_string(::getpid()) || fs::exists("/proc/" + pid)) continue;
      run_command({ip.string(), "netns", "del", name});
    }
    try {
      TestHost probe;
    } catch (const std::exception& e) {
      return std::string("cannot make a test host here: ") + e.what();
    }
    return "";
  }();
  return reason;
}

}  // namespace apilb::test
