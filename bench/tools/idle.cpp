// Idle connections for bench/compare.sh's memory figures.
//   idle server --listen IP:PORT
//       Accepts everything, echoes whatever arrives, holds every connection until its peer closes.
//   idle client --connect IP:PORT --count N [--hold-max SECONDS] [--message BYTES]
//       Opens N connections (up to 256 connects in flight), prints "opened N seconds=T", then
//       waits for signals: SIGUSR1 sends one small message on every connection and waits for
//       every echo ("exchanged N seconds=T"); SIGTERM or SIGINT closes everything and exits 0;
//       after --hold-max seconds (default 600) it gives up and exits 3, so it never outlives a run.
#include "bench/tools/net.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace apilb::bench {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int server(std::string_view listen) {
  ::signal(SIGPIPE, SIG_IGN);
  const int listener = listen_on(listen, SOCK_NONBLOCK);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{EPOLLIN, {.fd = listener}};
  ::epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  std::printf("listening %.*s\n", static_cast<int>(listen.size()), listen.data());
  std::fflush(stdout);
  std::vector<epoll_event> events(1024);
  char buffer[4096];
  for (;;) {
    const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == listener) {
        for (;;) {
          const int c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;  // EAGAIN, or EMFILE: the rest wait in the backlog
          epoll_event cev{EPOLLIN, {.fd = c}};
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      const ssize_t m = ::recv(fd, buffer, sizeof buffer, 0);
      if (m > 0) {
        (void)::send(fd, buffer, static_cast<std::size_t>(m), MSG_NOSIGNAL);  // small: fits
      } else if (m == 0 || errno != EAGAIN) {
        ::close(fd);  // closing removes it from the epoll set
      }
    }
  }
}

// Opens `count` non-blocking connections, `window` connects in flight at a time.
std::vector<int> open_all(const sockaddr_in& addr, int count, int ep) {
  constexpr int kWindow = 256;
  std::vector<int> open;
  open.reserve(static_cast<std::size_t>(count));
  int started = 0, in_flight = 0;
  std::vector<epoll_event> events(kWindow);
  while (static_cast<int>(open.size()) < count) {
    while (in_flight < kWindow && started < count) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) die("socket (raise ulimit -n?)");
      ++started;
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
        open.push_back(fd);
        continue;
      }
      if (errno != EINPROGRESS) die("connect");
      epoll_event ev{EPOLLOUT, {.fd = fd}};
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      ++in_flight;
    }
    const int n = ::epoll_wait(ep, events.data(), kWindow, 10000);
    if (n == 0) {
      std::fprintf(stderr, "idle: connects stalled at %zu of %d\n", open.size(), count);
      std::exit(1);
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        errno = err;
        die("connect");
      }
      ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
      --in_flight;
      open.push_back(fd);
    }
  }
  return open;
}

// One small message on every connection, then every echo back.
void exchange(const std::vector<int>& fds, int ep, std::size_t size) {
  const std::string message(size, 'p');
  for (int fd : fds) {
    if (::send(fd, message.data(), size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) die("send");
    epoll_event ev{EPOLLIN, {.fd = fd}};
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::vector<std::size_t> got(static_cast<std::size_t>(*std::max_element(fds.begin(), fds.end())) +
                               1);
  std::size_t done = 0;
  std::vector<epoll_event> events(1024);
  char buffer[4096];
  while (done < fds.size()) {
    const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 10000);
    if (n == 0) {
      std::fprintf(stderr, "idle: echoes stalled at %zu of %zu\n", done, fds.size());
      std::exit(1);
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      const ssize_t m = ::recv(fd, buffer, sizeof buffer, 0);
      if (m <= 0) {
        if (m < 0 && errno == EAGAIN) continue;
        std::fprintf(stderr, "idle: a connection closed during the exchange\n");
        std::exit(1);
      }
      auto& have = got[static_cast<std::size_t>(fd)];
      have += static_cast<std::size_t>(m);
      if (have >= size) {
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ++done;
      }
    }
  }
}

int client(std::string_view target, int count, int hold_max, std::size_t message) {
  sigset_t wanted;
  sigemptyset(&wanted);
  for (int s : {SIGUSR1, SIGTERM, SIGINT, SIGALRM}) sigaddset(&wanted, s);
  ::pthread_sigmask(SIG_BLOCK, &wanted, nullptr);
  ::alarm(static_cast<unsigned>(hold_max));

  const sockaddr_in addr = parse_ipv4(target);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  auto start = Clock::now();
  const std::vector<int> fds = open_all(addr, count, ep);
  std::printf("opened %zu seconds=%.3f\n", fds.size(), since(start));
  std::fflush(stdout);
  for (;;) {
    int sig = 0;
    ::sigwait(&wanted, &sig);
    if (sig == SIGUSR1) {
      start = Clock::now();
      exchange(fds, ep, message);
      std::printf("exchanged %zu seconds=%.3f\n", fds.size(), since(start));
      std::fflush(stdout);
    } else {
      for (int fd : fds) ::close(fd);
      return sig == SIGALRM ? 3 : 0;
    }
  }
}

int usage() {
  std::fputs(
      "usage: idle server --listen IP:PORT\n"
      "       idle client --connect IP:PORT --count N [--hold-max SECONDS] [--message BYTES]\n",
      stderr);
  return 2;
}

}  // namespace
}  // namespace apilb::bench

int main(int argc, char** argv) {
  using namespace apilb::bench;
  if (argc < 2) return usage();
  const std::string_view mode = argv[1];
  std::string_view address;
  int count = 0, hold_max = 600;
  std::size_t message = 64;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--listen" || flag == "--connect") address = value;
    else if (flag == "--count") count = std::atoi(value);
    else if (flag == "--hold-max") hold_max = std::atoi(value);
    else if (flag == "--message") message = std::strtoull(value, nullptr, 10);
    else return usage();
  }
  if (address.empty()) return usage();
  if (mode == "server") return server(address);
  if (mode == "client" && count > 0 && message > 0 && message <= 4096)
    return client(address, count, hold_max, message);
  return usage();
}
