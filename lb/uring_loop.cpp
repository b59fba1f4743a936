// The io_uring engine's worker loop.
//
// Integration with Asio: the ring drives the thread. Each turn is one io_uring_submit_and_wait
// (every poll, accept, cancel and NOP queued during the last turn goes in with it), then the
// completions are dispatched to the same Connection state machine the epoll engine drives. Asio
// keeps what is not on the data path — the connect-deadline and tune timers, posts from the
// control thread — and its epoll descriptor (holding only its timerfd and interrupter: no socket
// of ours is registered there) is itself polled on the ring, multishot, so a due timer wakes the
// ring; posts from other threads write the worker's eventfd (also polled on the ring). Only then
// is io_context::poll() run: a turn without Asio work costs no epoll_wait. The other way round
// (the ring's eventfd registered with Asio, io_context::run() in charge) would cost an epoll_wait
// and an io_uring_enter per turn instead of one io_uring_enter.

#include "lb/uring_loop.hpp"

#include "config/address.hpp"
#include "lb/ring.hpp"
#include "lb/worker.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace apilb::lb {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr unsigned kRingEntries = 4096;
constexpr long long kAcceptBackoffNs = 100'000'000;  // as the epoll engine's accept loop
constexpr int kDrainTurns = 50;                      // of at most 100 ms each, at shutdown

// A multishot accept on one listening descriptor (released from its Asio acceptor: not in epoll).
struct Listener : RingOp {
  Worker* w = nullptr;
  int fd = -1;
  tcp protocol = tcp::v4();
  tcp::endpoint endpoint;
  std::size_t pool = 0;  // whose targets its connections go to
  __kernel_timespec backoff{0, kAcceptBackoffNs};
  bool backing_off = false;
  bool closing = false;
  bool rearming = false;  // cancelled to be armed again (uring_short_of_descriptors)
};

// A multishot poll that only says "look": Asio's epoll descriptor, the wake eventfd.
struct Poke : RingOp {
  int fd = -1;
  bool fired = false;
  bool armed = false;
};

void arm(Ring& ring, Poke& p) {
  io_uring_prep_poll_multishot(&ring.sqe(&p), p.fd, POLLIN);
  p.armed = true;
}

}  // namespace

struct UringState {
  Ring& ring;
  std::vector<std::unique_ptr<Listener>> listeners;
};

namespace {

// The epoll engine's accept loop does the same per accepted descriptor (forwarder.cpp).
void admit(Worker& w, int fd, tcp protocol, std::size_t pool) {
  const auto open = w.shared.connections.fetch_add(1, std::memory_order_relaxed) + 1;
  if (open > static_cast<std::int64_t>(w.settings.max_connections)) {
    w.shared.connections.fetch_sub(1, std::memory_order_relaxed);
    w.shared.rejected.fetch_add(1, std::memory_order_relaxed);
    ::close(fd);
    if (w.shared.over_limit.allow())
      spdlog::warn("max_connections ({}) reached: closing new connections{}",
                   w.settings.max_connections, w.shared.over_limit.suppressed());
    return;
  }
  (new Connection(w, fd, protocol))->start(pool < w.targets.size() ? w.targets[pool] : nullptr);
}

void arm_accept(Ring& ring, Listener& l) {
  io_uring_prep_multishot_accept(&ring.sqe(&l), l.fd, nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void finish(Listener& l) {
  ::close(l.fd);
  auto& all = l.w->uring->listeners;
  std::erase_if(all, [&](const auto& p) { return p.get() == &l; });  // deletes l
}

void on_accept(RingOp* op, int res, unsigned flags) {
  auto& l = *static_cast<Listener*>(op);
  Worker& w = *l.w;
  Ring& ring = *w.ring;
  const bool more = flags & IORING_CQE_F_MORE;
  if (l.backing_off) {  // the back-off timeout ended (or was cancelled)
    l.backing_off = false;
    if (l.closing) return finish(l);
    return arm_accept(ring, l);
  }
  if (res >= 0) {
    if (!l.closing) admit(w, res, l.protocol, l.pool);
    else ::close(res);
  }
  if (more) return;
  // The multishot accept ended: cancelled (unlisten, or to re-arm), or an error that ended it.
  if (l.closing) return finish(l);
  if (std::exchange(l.rearming, false) && res == -ECANCELED) return arm_accept(ring, l);
  const int err = -res;
  if (res >= 0 || err == EINTR || err == ECONNABORTED || err == EAGAIN) return arm_accept(ring, l);
  // Out of descriptors or memory: the connection waits in the backlog until we recover.
  if (w.shared.accept_errors.allow())
    spdlog::error("accept on {}: {}; backing off{}", config::to_string(l.endpoint),
                  std::strerror(err), w.shared.accept_errors.suppressed());
  l.backing_off = true;
  io_uring_prep_timeout(&ring.sqe(&l), &l.backoff, 0, 0);
}

void close_listener(Ring& ring, Listener& l) {
  if (l.closing) return;
  l.closing = true;
  ring_cancel(ring, l);
}

}  // namespace

void uring_listen(Worker& w, std::unique_ptr<tcp::acceptor> acceptor, std::size_t pool) {
  auto l = std::make_unique<Listener>();
  l->pool = pool;
  l->on_cqe = &on_accept;
  l->w = &w;
  boost::system::error_code ec;
  l->endpoint = acceptor->local_endpoint(ec);
  l->protocol = l->endpoint.protocol();
  l->fd = acceptor->release(ec);  // out of Asio's epoll: an incoming SYN must not wake Asio
  if (ec) {
    spdlog::error("cannot take over the listener on {}: {}", config::to_string(l->endpoint),
                  ec.message());
    return;
  }
  arm_accept(*w.ring, *l);
  w.uring->listeners.push_back(std::move(l));
}

void uring_unlisten(Worker& w, const tcp::endpoint& endpoint) {
  for (auto& l : w.uring->listeners)
    if (l->endpoint == endpoint) close_listener(*w.ring, *l);
}

void uring_short_of_descriptors(Worker& w) {
  for (auto& l : w.uring->listeners)
    if (!l->closing && !l->backing_off && !l->rearming) {
      l->rearming = true;
      ring_cancel(*w.ring, *l);
    }
}

void uring_stop_accepting(Worker& w) {
  for (auto& l : w.uring->listeners) close_listener(*w.ring, *l);
}

void run_uring(Worker& w) {
  Ring ring(kRingEntries);
  UringState state{ring, {}};
  w.ring = &ring;
  w.uring = &state;
  Poke asio_poke, wake_poke;
  for (Poke* p : {&asio_poke, &wake_poke})
    p->on_cqe = [](RingOp* op, int, unsigned flags) {
      auto& self = static_cast<Poke&>(*op);
      self.fired = true;
      self.armed = flags & IORING_CQE_F_MORE;
    };
  asio_poke.fd = reactor_epoll_fd(w.reactor);
  wake_poke.fd = w.wake_fd;
  arm(ring, asio_poke);
  arm(ring, wake_poke);

  auto guard = asio::make_work_guard(*w.io);  // poll() must not stop for want of work
  bool asio_due = true;                       // posts made before run()
  for (;;) {
    if (asio_due || asio_poke.fired || wake_poke.fired) {
      if (std::exchange(wake_poke.fired, false)) {
        std::uint64_t n;
        if (::read(w.wake_fd, &n, sizeof n) < 0) {
          // EAGAIN: a wake-up already taken; the poll below runs what it announced anyway.
        }
      }
      asio_poke.fired = false;
      asio_due = false;
      for (Poke* p : {&asio_poke, &wake_poke})
        if (!p->armed) arm(ring, *p);
      w.io->poll();
    }
    if (w.io->stopped()) break;
    ring.submit_and_wait();
    ring.reap();
  }

  // Close what is left, then reap until the ring holds nothing of ours (each connection deletes
  // itself with its last cancelled wait).
  for (auto& l : state.listeners) close_listener(ring, *l);
  w.for_each_connection([](Connection& c) { c.abort(); });
  ring_cancel(ring, asio_poke);
  ring_cancel(ring, wake_poke);
  for (int turn = 0; turn < kDrainTurns && ring.in_flight() > 0; ++turn) {
    ring.submit_and_wait_for(100);
    ring.reap();
  }
  if (ring.in_flight() > 0)
    spdlog::error("io_uring worker: {} operations still pending at exit", ring.in_flight());
  for (auto& l : state.listeners) ::close(l->fd);
  w.uring = nullptr;
  w.ring = nullptr;
}

}  // namespace apilb::lb
