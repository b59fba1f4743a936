#pragma once
// Small blocking-socket helpers shared by the bench load tools (IPv4 loopback work only).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace apilb::bench {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// "127.0.0.1:8080" -> sockaddr_in; exits on a malformed address.
inline sockaddr_in parse_ipv4(std::string_view text) {
  const auto colon = text.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  const std::string host(text.substr(0, colon));
  if (colon == std::string_view::npos || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "bad address %.*s (want IPv4:port)\n", static_cast<int>(text.size()),
                 text.data());
    std::exit(2);
  }
  addr.sin_port =
      htons(static_cast<std::uint16_t>(std::atoi(std::string(text.substr(colon + 1)).c_str())));
  return addr;
}

inline int listen_on(std::string_view text, int flags = 0) {
  const sockaddr_in addr = parse_ipv4(text);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 4096) != 0)
    die("listen on " + std::string(text));
  return fd;
}

inline void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace apilb::bench
