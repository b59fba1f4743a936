#include "control/upgrade.hpp"

#include "base/coroutine.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace apilb::control {

namespace asio = boost::asio;
using asio::awaitable;
using base::use_nothrow;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto kRequestDeadline = 10s;
constexpr auto kPoll = 20ms;  // how often a starting child is checked for having exited
// After the child exits, how long its "failed <why>" may still take to arrive.
constexpr auto kLastWords = 500ms;

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + strsignal(WTERMSIG(status));
  return "ended";
}

void kill_and_reap(pid_t child) {
  ::kill(child, SIGKILL);
  int status;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
}

pid_t peer_pid(int socket) {
  ucred cred{};
  socklen_t length = sizeof cred;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return -1;
  return cred.pid;
}

// A listening SOCK_SEQPACKET socket at `path`, or -1 with a warning saying why not.
int bind_socket(const std::string& path) {
  if (const int live = connect_to(path); live >= 0) {
    ::close(live);
    spdlog::warn(
        "upgrade socket {}: another process answers there; `apiserver-lb upgrade` "
        "cannot reach this one",
        path);
    return -1;
  }
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path) {
    spdlog::warn("upgrade socket {}: the path is too long; upgrades are off", path);
    return -1;
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  ::unlink(path.c_str());  // a stale file of a process that is gone
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd, 16) != 0) {
    if (errno == ENOENT)  // no state directory: not a service, upgrades were not asked for
      spdlog::info(
          "upgrade socket {}: no such directory; `apiserver-lb upgrade` is off (set "
          "upgrade.socket)",
          path);
    else
      spdlog::warn("upgrade socket {}: {}; `apiserver-lb upgrade` cannot reach this process", path,
                   std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

void notify_systemd(const std::string& state) noexcept {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  sockaddr_un address{};
  const std::size_t length = std::strlen(path);
  if (length >= sizeof address.sun_path || (path[0] != '/' && path[0] != '@')) return;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path, length);
  if (path[0] == '@') address.sun_path[0] = '\0';  // an abstract socket
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
           reinterpret_cast<const sockaddr*>(&address),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length));
  ::close(fd);
}

// An upgrade in progress: the child it started, and its connection once it has called back.
struct UpgradeServer::Pending {
  explicit Pending(asio::any_io_executor ex) : wake(std::move(ex)) {}
  pid_t child = -1;
  std::optional<Socket> peer;
  std::string first;  // "takeover" or "failed <why>"
  asio::steady_timer wake;
};

UpgradeServer::UpgradeServer(asio::any_io_executor executor, std::string path, int inherited,
                             Launch launch, config::Duration timeout, Hooks hooks)
    : executor_(std::move(executor)),
      path_(std::move(path)),
      launch_(std::move(launch)),
      timeout_(timeout),
      hooks_(std::move(hooks)) {
  const int fd = inherited >= 0 ? inherited : bind_socket(path_);
  if (fd < 0) return;
  boost::system::error_code ec;
  acceptor_.emplace(executor_);
  acceptor_->assign(Protocol(AF_UNIX, 0), fd, ec);
  if (ec) {
    spdlog::warn("upgrade socket {}: {}", path_, ec.message());
    ::close(fd);
    acceptor_.reset();
    return;
  }
  acceptor_->non_blocking(true, ec);
  base::spawn(executor_, accept_loop(), "the upgrade socket");
}

UpgradeServer::~UpgradeServer() = default;

int UpgradeServer::native_handle() {
  return acceptor_ && acceptor_->is_open() ? acceptor_->native_handle() : -1;
}

void UpgradeServer::stop() {
  if (!acceptor_ || !acceptor_->is_open()) return;
  boost::system::error_code ignored;
  const int fd = acceptor_->release(ignored);
  if (fd >= 0) ::close(fd);
}

awaitable<void> UpgradeServer::accept_loop() {
  while (acceptor_ && acceptor_->is_open()) {
    auto [ec, socket] = co_await acceptor_->async_accept(use_nothrow);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      asio::steady_timer backoff(executor_, 100ms);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    base::spawn(executor_, session(std::move(socket)), "an upgrade request");
  }
}

awaitable<std::optional<Message>> UpgradeServer::receive(Socket& socket, config::Duration timeout) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(executor_, timeout);
  for (;;) {
    if (auto m = receive_message(socket.native_handle(), 0ms)) co_return m;
    if (errno != EAGAIN && errno != EWOULDBLOCK) co_return std::nullopt;
    auto woke = co_await (socket.async_wait(Socket::wait_read, use_nothrow) ||
                          timer.async_wait(use_nothrow));
    if (woke.index() == 1) {
      errno = ETIMEDOUT;
      co_return std::nullopt;
    }
  }
}

awaitable<void> UpgradeServer::session(Socket socket) {
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  auto first = co_await receive(socket, kRequestDeadline);
  if (!first) co_return;
  for (int fd : first->fds) ::close(fd);
  if (first->text == "upgrade" || first->text.starts_with("upgrade\n")) {
    // A named string: GCC 12 frees a conditional's temporary passed to a coroutine twice.
    std::string binary;
    if (const auto line = first->text.find('\n'); line != std::string::npos)
      binary = first->text.substr(line + 1);
    co_await upgrade(std::move(socket), std::move(binary));
    co_return;
  }
  // "takeover" or "failed <why>": only from the process an upgrade started.
  const pid_t peer = peer_pid(socket.native_handle());
  if (pending_ && !pending_->peer && peer == pending_->child) {
    pending_->first = first->text;
    pending_->peer.emplace(std::move(socket));
    pending_->wake.cancel();
    co_return;
  }
  send_message(socket.native_handle(), "failed no upgrade started process " + std::to_string(peer));
}

awaitable<void> UpgradeServer::upgrade(Socket client, std::string binary) {
  const auto reply = [&](const std::string& text) { send_message(client.native_handle(), text); };
  std::string why = hooks_.refuse();
  if (why.empty() && pending_) why = "another upgrade is in progress";
  if (why.empty() && ::getpid() == 1)
    why =
        "apiserver-lb is PID 1 here (a container): a process it starts dies with it; roll out "
        "a new pod instead";
  if (!why.empty()) {
    spdlog::warn("upgrade refused: {}", why);
    reply("failed " + why);
    co_return;
  }
  if (binary.empty()) binary = launch_.executable;
  const pid_t child = start(binary, why);
  if (child < 0) {
    spdlog::error("upgrade failed, this process keeps serving: {}", why);
    reply("failed " + why);
    co_return;
  }
  spdlog::info("upgrade: started {} as pid {}; handing over when it is ready", binary, child);
  auto pending = std::make_shared<Pending>(executor_);
  pending->child = child;
  pending_ = pending;
  why = co_await hand_over(*pending);
  pending_.reset();
  if (!why.empty()) {
    spdlog::error("upgrade failed, this process keeps serving: {}", why);
    reply("failed " + why);
    co_return;
  }
  reply("ok " + std::to_string(child));
}

// Returns "" once the child serves and this process has let go, or why the upgrade failed (the
// child is gone then).
awaitable<std::string> UpgradeServer::hand_over(Pending& p) {
  const auto deadline = steady_clock::now() + timeout_;
  std::optional<steady_clock::time_point> exited_at;
  std::string exit_reason;
  while (!p.peer) {
    int status = 0;
    if (!exited_at && ::waitpid(p.child, &status, WNOHANG) == p.child) {
      exited_at = steady_clock::now();
      exit_reason =
          "the new process " + exit_text(status) + " before taking over (its log says why)";
    }
    if (exited_at && steady_clock::now() >= *exited_at + kLastWords) co_return exit_reason;
    if (steady_clock::now() >= deadline) {
      kill_and_reap(p.child);
      co_return "the new process did not call back within " + config::format_duration(timeout_);
    }
    p.wake.expires_after(kPoll);
    co_await p.wake.async_wait(use_nothrow);
  }
  const auto fail = [&](std::string why) {
    if (!exited_at) kill_and_reap(p.child);
    return why;
  };
  if (p.first.starts_with("failed ")) co_return fail(p.first.substr(7));
  if (p.first != "takeover") co_return fail("the new process said \"" + p.first + '"');

  const int peer = p.peer->native_handle();
  const Inherited sockets = hooks_.handover();
  bool sent = true;
  for (const auto& [address, fds] : sockets.listeners)
    for (std::size_t at = 0; at < fds.size(); at += 253)
      sent = sent &&
             send_message(peer, "listener " + address,
                          std::span(fds).subspan(at, std::min<std::size_t>(253, fds.size() - at)));
  if (sockets.admin >= 0)
    sent =
        sent && send_message(peer, "admin " + sockets.admin_address, std::span(&sockets.admin, 1));
  if (const int own = native_handle(); own >= 0)
    sent = sent && send_message(peer, "control", std::span(&own, 1));
  std::string health = "health\n";
  for (const auto& [name, state] : sockets.health)
    health += name + ' ' + std::string(healthcheck::to_string(state)) + '\n';
  sent = sent && send_message(peer, health) && send_message(peer, "end");
  if (!sent) co_return fail(std::string("handing over the sockets: ") + std::strerror(errno));

  const auto left = std::max<config::Duration>(
      std::chrono::duration_cast<config::Duration>(deadline - steady_clock::now()), 1ms);
  auto answer = co_await receive(*p.peer, left);
  if (!answer)
    co_return fail(errno == ETIMEDOUT ? "the new process did not start serving within " +
                                            config::format_duration(timeout_)
                                      : "the new process hung up before serving");
  if (answer->text.starts_with("failed ")) co_return fail(answer->text.substr(7));
  if (answer->text != "serving") co_return fail("the new process said \"" + answer->text + '"');
  hooks_.handed_over(p.child);
  send_message(peer, "released");
  co_return "";
}

// fork + exec of `binary` with this process's arguments and APILB_TAKEOVER; -1 and `why` when it
// cannot even be started.
pid_t UpgradeServer::start(const std::string& binary, std::string& why) const {
  if (::access(binary.c_str(), X_OK) != 0) {
    why = "cannot run " + binary + ": " + std::strerror(errno);
    return -1;
  }
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args{binary};
  args.insert(args.end(), launch_.arguments.begin(), launch_.arguments.end());
  std::vector<std::string> env;
  const std::string variable = std::string(kTakeoverVariable) + '=';
  for (char** e = environ; *e; ++e)
    if (!std::string_view(*e).starts_with(variable)) env.emplace_back(*e);
  env.push_back(variable + path_);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  for (auto& e : env) envp.push_back(e.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  const pid_t child = ::fork();
  if (child < 0) {
    why = std::string("fork: ") + std::strerror(errno);
    return -1;
  }
  if (child == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // No descriptor of this process may live on in the new one (a client socket kept open there
    // would never see its close here). Everything the child needs it gets over the socket.
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
      for (int fd = 3, top = static_cast<int>(::sysconf(_SC_OPEN_MAX)); fd < top; ++fd) ::close(fd);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return child;
}

}  // namespace apilb::control
