// Bulk streams for bench/compare.sh.
//   bulk server --listen IP:PORT
//       A sink: reads every connection to its end, then answers the byte count (8 bytes, big
//       endian) and closes, so the client knows everything went through the balancer.
//   bulk client --connect IP:PORT [--streams K] [--seconds S | --bytes N] [--chunk BYTES]
//       Connects K streams, then pushes on all of them at once (one thread each) for S seconds or
//       until N bytes in all; half-closes, waits for every count and prints one line:
//       "streams=K bytes=B seconds=T gbps=G".
#include "bench/tools/net.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace apilb::bench {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t sink(int fd) {
  std::vector<char> buffer(256 * 1024);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  return total;
}

int server(std::string_view listen) {
  const int listener = listen_on(listen);
  std::printf("listening %.*s\n", static_cast<int>(listen.size()), listen.data());
  std::fflush(stdout);
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
      die("accept");
    }
    std::thread([fd] {
      std::uint64_t total = sink(fd);
      unsigned char answer[8];
      for (int i = 7; i >= 0; --i, total >>= 8) answer[i] = static_cast<unsigned char>(total);
      (void)::send(fd, answer, sizeof answer, MSG_NOSIGNAL);
      ::close(fd);
    }).detach();
  }
}

int connect_to(const sockaddr_in& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) die("connect");
  return fd;
}

struct Stream {
  int fd = -1;
  std::uint64_t sent = 0;
  std::uint64_t acked = 0;
  bool ok = false;
};

int client(std::string_view target, int streams, double seconds, std::uint64_t bytes,
           std::size_t chunk) {
  const sockaddr_in addr = parse_ipv4(target);
  std::vector<Stream> all(static_cast<std::size_t>(streams));
  for (auto& s : all) s.fd = connect_to(addr);
  const std::uint64_t quota = bytes ? bytes / static_cast<std::uint64_t>(streams) : UINT64_MAX;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  Clock::time_point start;
  const auto deadline_after = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(seconds > 0 ? seconds : 1e9));
  for (auto& s : all) {
    threads.emplace_back([&, &s = s] {
      std::vector<char> buffer(chunk, 'b');
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      const auto deadline = start + deadline_after;
      unsigned n = 0;
      while (s.sent < quota) {
        // Checking the clock every 16 writes keeps it off the profile.
        if ((++n & 15) == 0 && Clock::now() >= deadline) break;
        const std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(chunk, quota - s.sent));
        const ssize_t m = ::send(s.fd, buffer.data(), want, MSG_NOSIGNAL);
        if (m < 0 && errno == EINTR) continue;
        if (m <= 0) return;
        s.sent += static_cast<std::uint64_t>(m);
      }
      ::shutdown(s.fd, SHUT_WR);
      unsigned char answer[8];
      std::size_t got = 0;
      while (got < sizeof answer) {
        const ssize_t m = ::recv(s.fd, answer + got, sizeof answer - got, 0);
        if (m < 0 && errno == EINTR) continue;
        if (m <= 0) return;
        got += static_cast<std::size_t>(m);
      }
      for (unsigned char c : answer) s.acked = (s.acked << 8) | c;
      s.ok = s.acked == s.sent;
    });
  }
  start = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::uint64_t total = 0;
  bool ok = true;
  for (const auto& s : all) {
    total += s.acked;
    ok = ok && s.ok;
    ::close(s.fd);
  }
  std::printf("streams=%d bytes=%" PRIu64 " seconds=%.3f gbps=%.3f%s\n", streams, total, elapsed,
              static_cast<double>(total) * 8 / elapsed / 1e9, ok ? "" : " error=short");
  return ok ? 0 : 1;
}

int usage() {
  std::fputs(
      "usage: bulk server --listen IP:PORT\n"
      "       bulk client --connect IP:PORT [--streams K] [--seconds S | --bytes N] [--chunk "
      "BYTES]\n",
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
  int streams = 1;
  double seconds = 0;
  std::uint64_t bytes = 0;
  std::size_t chunk = 128 * 1024;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--listen" || flag == "--connect") address = value;
    else if (flag == "--streams") streams = std::atoi(value);
    else if (flag == "--seconds") seconds = std::atof(value);
    else if (flag == "--bytes") bytes = std::strtoull(value, nullptr, 10);
    else if (flag == "--chunk") chunk = std::strtoull(value, nullptr, 10);
    else return usage();
  }
  if (address.empty() || streams < 1 || chunk == 0) return usage();
  if (mode == "server") return server(address);
  if (mode == "client") {
    if (seconds <= 0 && bytes == 0) seconds = 5;
    return client(address, streams, seconds, bytes, chunk);
  }
  return usage();
}
