#include "control/handoff.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace apilb::control {

namespace {

constexpr std::size_t kMaxMessage = 64 * 1024;
// SCM_MAX_FD: the kernel takes at most 253 descriptors a message.
constexpr std::size_t kMaxFds = 253;
constexpr auto kReplyDeadline = std::chrono::seconds(10);

std::string errno_text() { return errno ? std::strerror(errno) : "the peer closed the socket"; }

std::optional<healthcheck::TargetState> parse_state(std::string_view name) {
  using healthcheck::TargetState;
  for (TargetState s :
       {TargetState::unknown, TargetState::up, TargetState::draining, TargetState::down})
    if (healthcheck::to_string(s) == name) return s;
  return std::nullopt;
}

}  // namespace

bool send_message(int socket, std::string_view text, std::span<const int> fds) {
  if (fds.size() > kMaxFds) {
    errno = EINVAL;
    return false;
  }
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(text.size());
}

std::optional<Message> receive_message(int socket, std::chrono::milliseconds deadline) {
  if (deadline.count() > 0) {
    pollfd p{socket, POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, static_cast<int>(deadline.count()));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) errno = ETIMEDOUT;
    if (ready <= 0) return std::nullopt;
  }
  std::string text(kMaxMessage, '\0');
  iovec iov{text.data(), text.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | (deadline.count() > 0 ? 0 : MSG_DONTWAIT));
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (n == 0) errno = 0;
    return std::nullopt;
  }
  Message out;
  text.resize(static_cast<std::size_t>(n));
  out.text = std::move(text);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* data = reinterpret_cast<const int*>(CMSG_DATA(c));
    out.fds.insert(out.fds.end(), data, data + count);
  }
  return out;
}

int connect_to(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

Takeover::Takeover(std::string path) : path_(std::move(path)) {
  socket_ = connect_to(path_);
  if (socket_ < 0)
    throw std::runtime_error("cannot reach the running apiserver-lb at " + path_ + ": " +
                             errno_text());
  if (!send_message(socket_, "takeover"))
    throw std::runtime_error("upgrade socket " + path_ + ": " + errno_text());
  for (;;) {
    auto m = receive_message(socket_, kReplyDeadline);
    if (!m)
      throw std::runtime_error("upgrade socket " + path_ +
                               ": the running process sent nothing: " + errno_text());
    const auto adopt_one = [&](int& into) {
      if (m->fds.size() != 1) throw std::runtime_error("upgrade socket: bad \"" + m->text + '"');
      into = m->fds.front();
    };
    if (m->text == "end") return;
    if (m->text.starts_with("listener ")) {
      auto& fds = inherited_.listeners[m->text.substr(9)];
      fds.insert(fds.end(), m->fds.begin(), m->fds.end());
    } else if (m->text.starts_with("admin ")) {
      adopt_one(inherited_.admin);
      inherited_.admin_address = m->text.substr(6);
    } else if (m->text == "control") {
      adopt_one(inherited_.control);
    } else if (m->text.starts_with("health\n")) {
      std::istringstream lines(m->text.substr(7));
      std::string name, state;
      while (lines >> name >> state)
        if (auto s = parse_state(state)) inherited_.health[name] = *s;
    } else if (m->text.starts_with("failed ")) {
      throw std::runtime_error("the running process refused the hand-off: " + m->text.substr(7));
    } else {
      for (int fd : m->fds) ::close(fd);
    }
  }
}

Takeover::~Takeover() {
  if (socket_ >= 0) ::close(socket_);
}

void Takeover::serving() {
  if (!send_message(socket_, "serving"))
    throw std::runtime_error("upgrade socket: " + errno_text());
  auto reply = receive_message(socket_, kReplyDeadline);
  if (!reply || reply->text != "released")
    throw std::runtime_error("the running process did not confirm the hand-off: " +
                             (reply ? reply->text : errno_text()));
}

void Takeover::failed(std::string_view why) noexcept {
  send_message(socket_, "failed " + std::string(why));
}

void Takeover::report_failure(const std::string& path, std::string_view why) noexcept {
  const int fd = connect_to(path);
  if (fd < 0) return;
  send_message(fd, "failed " + std::string(why));
  ::close(fd);
}

}  // namespace apilb::control
