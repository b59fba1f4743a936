#include "lb/socket_options.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>

namespace apilb::lb {
namespace {

void set_int(int fd, int level, int name, int value) noexcept {
  ::setsockopt(fd, level, name, &value, sizeof value);
}

int whole_seconds(config::Duration d) noexcept {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  return s < 1 ? 1 : static_cast<int>(s);
}

}  // namespace

void set_nodelay(int fd) noexcept { set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1); }

bool detects_dead_peers(const config::Tcp& tcp) noexcept {
  return tcp.keepalive_idle.count() > 0 || tcp.user_timeout.count() > 0;
}

void tune_dead_peer_detection(int fd, const config::Tcp& tcp) noexcept {
  if (tcp.keepalive_idle.count() > 0) {
    set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, whole_seconds(tcp.keepalive_idle));
    set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, whole_seconds(tcp.keepalive_interval));
    set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, tcp.keepalive_count);
  }
  if (tcp.user_timeout.count() > 0)
    set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(tcp.user_timeout.count()));
}

void report_unread(int fd) noexcept { set_int(fd, IPPROTO_TCP, TCP_INQ, 1); }

void tune_tcp(int fd, const config::Tcp& tcp) noexcept {
  set_nodelay(fd);
  tune_dead_peer_detection(fd, tcp);
}

void ignore_sigpipe() noexcept { ::signal(SIGPIPE, SIG_IGN); }

}  // namespace apilb::lb
