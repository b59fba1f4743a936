#pragma once

// The engine edge: the one file that knows Asio's epoll reactor from the inside. The relay
// (connection.cpp) and the worker (forwarder.cpp) wait for readiness and adopt descriptors only
// through what is declared here. The io_uring engine (ring.hpp, uring_loop.cpp) sits beside it:
// a socket adopted with a Ring waits on that ring instead of epoll, behind the same calls.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

// After io_context.hpp (a block of its own, so that sorting keeps it there): the reactor header
// alone does not declare what the scheduler uses.
#include <boost/asio/detail/reactor.hpp>
#include <boost/version.hpp>

#include <sys/epoll.h>

#include <cerrno>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace apilb::lb {

// Two shortcuts below use Asio's internals as Boost 1.81 (Debian 12) has them: recheck both on
// an upgrade (the epoll reactor's start_op and the socket state bits).
static_assert(BOOST_VERSION == 108100, "recheck Socket::adopt and Waiter against this Boost");
static_assert(std::is_same_v<boost::asio::detail::reactor, boost::asio::detail::epoll_reactor>);

using Reactor = boost::asio::detail::reactor;
class Ring;    // ring.hpp: one io_uring per worker thread
class Socket;  // below

// An operation in flight on a Ring: the ring calls on_cqe with each completion's result and flags
// (IORING_CQE_F_MORE while a multishot operation stays armed). Its address is the user_data.
struct RingOp {
  void (*on_cqe)(RingOp* op, int res, unsigned flags) = nullptr;
};
// Defined in ring.cpp, so that liburing stays out of this header.
void ring_poll(Ring& ring, RingOp& op, int fd, unsigned mask);
void ring_nop(Ring& ring, RingOp& op);
void ring_cancel(Ring& ring, RingOp& op);  // completes op with -ECANCELED unless it is done
void ring_flush(Ring& ring);               // submits what is queued now, not at the end of the turn
// The epoll descriptor of Asio's reactor: the io_uring engine polls it on its ring, so that Asio's
// timers and cross-thread posts wake the worker too.
int reactor_epoll_fd(Reactor& reactor) noexcept;
inline constexpr int kReadEdge = Reactor::read_op;    // readable, EOF or error
inline constexpr int kWriteEdge = Reactor::write_op;  // writable or error

// A wait for readiness that costs no system call. Asio registers every socket with epoll once,
// edge-triggered, yet its async_wait issues an EPOLL_CTL_MOD on every call (so that a level that
// is already there is reported): two of 6.2 system calls per kept-alive request, four per new
// connection. The relay only waits right after a read that left nothing behind, a send that found
// the socket full, or a connect in progress, all in the same handler: the next edge is certain to
// come, so queueing the operation on the descriptor is enough. The reactor calls perform() once at
// once (the speculative attempt; `starting_` makes it decline, so the operation is queued without
// an epoll_ctl) and again when an edge arrives (then it is done). Embedded in its owner: no
// allocation per wait. A reactor operation is completed by the scheduler with the owner set, or
// destroyed with the owner null when the io_context goes away with it still pending. The owner
// provides woken(const Waiter&, error_code) (ec is operation_aborted when the wait was cancelled)
// and abandoned(const Waiter&) (the io_context was destroyed with the wait pending).
// On the io_uring engine the same waiter is a oneshot IORING_OP_POLL_ADD on the worker's ring
// (submitted with the loop turn's one io_uring_enter), completed by on_ring_cqe.
template <typename Owner>
class Waiter : public boost::asio::detail::reactor_op, public RingOp {
 public:
  explicit Waiter(Owner& owner)
      : reactor_op(boost::system::error_code(), &perform, &complete), owner_(owner) {
    on_cqe = &on_ring_cqe;
  }

  // Queues the wait for `edge` (kReadEdge, kWriteEdge) on a descriptor.
  void start(Reactor& reactor, Reactor::per_descriptor_data& data, int descriptor, int edge) {
    ec_ = {};
    starting_ = true;
    reactor.start_op(edge, descriptor, data, this, true, true);
    starting_ = false;
  }
  // Completes at the worker's next turn, without waiting: lets the worker's other work run.
  void yield(Reactor& reactor) {
    ec_ = {};
    reactor.post_immediate_completion(this, true);
  }
  // The io_uring engine's start: `socket` learns the poll's result (its last_events()).
  void start_ring(Ring& ring, Socket& socket, int slot, int fd, unsigned mask) {
    socket_ = &socket;
    slot_ = slot;
    ring_poll(ring, *this, fd, mask);
  }
  void yield_ring(Ring& ring) {
    socket_ = nullptr;
    ring_nop(ring, *this);
  }

 private:
  static status perform(reactor_op* op) {
    return static_cast<Waiter*>(op)->starting_ ? not_done : done;
  }
  static void complete(void* owner, boost::asio::detail::operation* op,
                       const boost::system::error_code&, std::size_t) {
    auto& self = *static_cast<Waiter*>(op);
    if (owner) self.owner_.woken(self, self.ec_);
    else self.owner_.abandoned(self);
  }

  static void on_ring_cqe(RingOp* op, int res, unsigned flags);

  Owner& owner_;
  Socket* socket_ = nullptr;  // the socket polled (io_uring engine), null for a yield
  int slot_ = 0;
  bool starting_ = false;
};

// A worker's socket: bound to its io_context executor (40 bytes instead of 88 with
// any_io_executor), and able to adopt a descriptor we created non-blocking (accept4, socket with
// SOCK_NONBLOCK) and never duplicated. Plain assign() assumes neither and pays for it on every
// connection: an ioctl(FIONBIO) before the first wait and an EPOLL_CTL_DEL before close (measured:
// 4 of 25 system calls per new connection).
class Socket : public boost::asio::basic_stream_socket<boost::asio::ip::tcp,
                                                       boost::asio::io_context::executor_type> {
 public:
  using basic_stream_socket::basic_stream_socket;

  // Takes `fd` (registers it with epoll), setting Asio's per-socket state bits as its own open() +
  // non_blocking(true) would have left them. With a ring (the io_uring engine) the descriptor is
  // not registered with epoll at all: its waits go to the ring.
  void adopt(boost::asio::ip::tcp protocol, int fd, boost::system::error_code& ec,
             Ring* ring = nullptr);
  template <typename Owner>
  void wait_edge(Reactor& reactor, Waiter<Owner>& waiter, int edge) {
    auto& impl = impl_.get_implementation();
    if (ring_) {
      const int slot = edge == kWriteEdge ? 1 : 0;
      ring_waits_[slot] = &waiter;
      waiter.start_ring(*ring_, *this, slot, impl.socket_, edge == kWriteEdge ? EPOLLOUT : EPOLLIN);
      return;
    }
    waiter.start(reactor, impl.reactor_data_, impl.socket_, edge);
  }
  // Completes `waiter` at the worker's next turn (a ring NOP on the io_uring engine).
  template <typename Owner>
  void yield(Reactor& reactor, Waiter<Owner>& waiter) {
    if (ring_) waiter.yield_ring(*ring_);
    else waiter.yield(reactor);
  }
  // Cancel and close: on the io_uring engine a pending poll holds the file, so it is cancelled
  // (completed with operation_aborted at the next turn), as Asio's close does with epoll waits.
  void cancel(boost::system::error_code& ec);
  void close(boost::system::error_code& ec);
  // What epoll (or the ring's poll) reported at this socket's last wake-up (0 before the first).
  std::uint32_t last_events() noexcept;
  // An error or hang-up: a RST that arrived behind data, which the read that takes the data
  // cannot tell.
  bool hung_up() noexcept { return last_events() & (EPOLLERR | EPOLLHUP); }
  bool readable_at_last_wakeup() noexcept { return last_events() & EPOLLIN; }

 private:
  template <typename Owner>
  friend class Waiter;
  Ring* ring_ = nullptr;
  RingOp* ring_waits_[2] = {};  // pending polls: read, write (null when none)
  std::uint32_t ring_events_ = 0;
};

template <typename Owner>
void Waiter<Owner>::on_ring_cqe(RingOp* op, int res, unsigned) {
  auto& self = *static_cast<Waiter*>(op);
  if (Socket* s = std::exchange(self.socket_, nullptr)) {
    if (s->ring_waits_[self.slot_] == op) s->ring_waits_[self.slot_] = nullptr;
    if (res >= 0) s->ring_events_ = static_cast<std::uint32_t>(res);
  }
  boost::system::error_code ec;
  if (res == -ECANCELED) ec = boost::asio::error::operation_aborted;
  else if (res < 0) ec = boost::system::error_code(-res, boost::system::system_category());
  self.owner_.woken(self, ec);
}

}  // namespace apilb::lb
