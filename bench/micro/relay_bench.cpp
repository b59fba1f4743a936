// The relay's per-chunk path on loopback TCP: producer -> [in] relay step [out] -> consumer.
// Each iteration writes one chunk into the producer, moves it with the step under test, and reads
// it at the consumer; `direct` (no relay step) is the fixed cost to subtract. The steps mirror
// lb/forwarder.cpp: copy_some (recv + send through a pooled buffer) and splice_some (socket ->
// pooled pipe -> socket, SPLICE_F_MOVE | SPLICE_F_NONBLOCK). Also the pools' take/give alone.
#include "lb/pools.hpp"

#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace apilb::bench {
namespace {

[[noreturn]] void fail(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

// A connected loopback TCP pair: {client side, accepted side}.
struct TcpPair {
  int a = -1;
  int b = -1;
  TcpPair() {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      fail("listen");
    a = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(a, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("connect");
    b = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (b < 0) fail("accept");
    ::close(listener);
    const int one = 1;
    ::setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~TcpPair() {
    ::close(a);
    ::close(b);
  }
  TcpPair(const TcpPair&) = delete;
  TcpPair& operator=(const TcpPair&) = delete;
};

void wait_for(int fd, short events) {
  pollfd p{fd, events, 0};
  if (::poll(&p, 1, 5000) != 1) fail("poll");
}

void write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t m = ::send(fd, data, n, MSG_NOSIGNAL);
    if (m < 0) fail("send");
    data += m;
    n -= static_cast<std::size_t>(m);
  }
}

void read_exactly(int fd, char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t m = ::recv(fd, data, n, 0);
    if (m <= 0) fail("recv");
    n -= static_cast<std::size_t>(m);
  }
}

// copy_some: one pooled buffer per step, recv then send until sent.
std::size_t copy_step(lb::BufferPool& pool, int from, int to) {
  auto buffer = pool.take();
  ssize_t n;
  while ((n = ::recv(from, buffer.get(), pool.buffer_size(), MSG_DONTWAIT)) < 0) {
    if (errno != EAGAIN) fail("relay recv");
    wait_for(from, POLLIN);
  }
  for (ssize_t sent = 0; sent < n;) {
    const ssize_t m = ::send(to, buffer.get() + sent, static_cast<std::size_t>(n - sent),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (m >= 0) sent += m;
    else if (errno == EAGAIN) wait_for(to, POLLOUT);
    else fail("relay send");
  }
  pool.give(std::move(buffer));
  return static_cast<std::size_t>(n);
}

// splice_some: socket -> pooled pipe -> socket, up to 64 KiB per step.
std::size_t splice_step(lb::PipePool& pool, int from, int to) {
  const lb::Pipe pipe = pool.take();
  ssize_t n;
  while ((n = ::splice(from, nullptr, pipe.write, nullptr, 64 * 1024,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK)) < 0) {
    if (errno != EAGAIN) fail("splice in");
    wait_for(from, POLLIN);
  }
  for (ssize_t pending = n; pending > 0;) {
    const ssize_t m = ::splice(pipe.read, nullptr, to, nullptr, static_cast<std::size_t>(pending),
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m > 0) pending -= m;
    else if (m < 0 && errno == EAGAIN) wait_for(to, POLLOUT);
    else fail("splice out");
  }
  pool.give(pipe);
  return static_cast<std::size_t>(n);
}

enum class Step { direct, copy, splice };

void relay_chunk(benchmark::State& state, Step step) {
  const auto chunk = static_cast<std::size_t>(state.range(0));
  TcpPair in;   // producer = in.a, relay reads in.b
  TcpPair out;  // relay writes out.a, consumer = out.b
  lb::BufferPool buffers(16 * 1024);
  lb::PipePool pipes;
  std::vector<char> data(chunk, 'x');
  std::vector<char> sink(chunk);
  for (auto _ : state) {
    write_all(in.a, data.data(), chunk);
    if (step == Step::direct) {
      read_exactly(in.b, sink.data(), chunk);
      continue;
    }
    for (std::size_t moved = 0; moved < chunk;)
      moved +=
          step == Step::copy ? copy_step(buffers, in.b, out.a) : splice_step(pipes, in.b, out.a);
    read_exactly(out.b, sink.data(), chunk);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * chunk));
}

BENCHMARK_CAPTURE(relay_chunk, direct, Step::direct)->Arg(128)->Arg(16384)->Arg(65536);
BENCHMARK_CAPTURE(relay_chunk, copy, Step::copy)->Arg(128)->Arg(16384)->Arg(65536);
BENCHMARK_CAPTURE(relay_chunk, splice, Step::splice)->Arg(128)->Arg(16384)->Arg(65536);

// What waiting for the next message costs the relay per message and direction, on top of the
// recv + send that move it: the recv that finds the socket drained (EAGAIN; the relay now takes a
// short read as drained, so it pays this only after a full buffer), and the EPOLL_CTL_MOD with
// which Asio's async_wait re-arms an edge-triggered descriptor (a wait is never speculative, so
// every async_wait on an idle queue issues one).
void wait_recv_eagain(benchmark::State& state) {
  TcpPair p;
  char b[64];
  for (auto _ : state) benchmark::DoNotOptimize(::recv(p.b, b, sizeof b, MSG_DONTWAIT));
}
BENCHMARK(wait_recv_eagain);

void wait_epoll_ctl_mod(benchmark::State& state) {
  TcpPair p;
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLPRI | EPOLLERR | EPOLLHUP | EPOLLET;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, p.b, &ev) != 0) fail("epoll_ctl");
  for (auto _ : state) benchmark::DoNotOptimize(::epoll_ctl(ep, EPOLL_CTL_MOD, p.b, &ev));
  ::close(ep);
}
BENCHMARK(wait_epoll_ctl_mod);

// The pools alone: what a relay step pays to hold a buffer or a pipe only while bytes are in
// flight.
void buffer_pool_take_give(benchmark::State& state) {
  lb::BufferPool pool(16 * 1024);
  pool.give(pool.take());
  for (auto _ : state) {
    auto b = pool.take();
    benchmark::DoNotOptimize(b.get());
    pool.give(std::move(b));
  }
}
BENCHMARK(buffer_pool_take_give);

// Without a pool: a fresh 16 KiB allocation per step.
void buffer_malloc_free(benchmark::State& state) {
  for (auto _ : state) {
    auto b = std::make_unique_for_overwrite<char[]>(16 * 1024);
    benchmark::DoNotOptimize(b.get());
  }
}
BENCHMARK(buffer_malloc_free);

void pipe_pool_take_give(benchmark::State& state) {
  lb::PipePool pool;
  pool.give(pool.take());
  for (auto _ : state) {
    const lb::Pipe p = pool.take();
    benchmark::DoNotOptimize(p.read);
    pool.give(p);
  }
}
BENCHMARK(pipe_pool_take_give);

// Without a pool: pipe2 + two closes per step, what an unpooled splice would pay.
void pipe_create_close(benchmark::State& state) {
  for (auto _ : state) {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) fail("pipe2");
    ::close(fds[0]);
    ::close(fds[1]);
  }
}
BENCHMARK(pipe_create_close);

}  // namespace
}  // namespace apilb::bench
