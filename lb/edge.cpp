#include "lb/edge.hpp"

namespace apilb::lb {

namespace {

// epoll_reactor::epoll_fd_ is private; an explicit instantiation may name a private member, and
// the friend it defines hands the member pointer out (Boost 1.81: see the static_assert in
// edge.hpp).
struct EpollFd {
  using type = int Reactor::*;
  friend type member(EpollFd);
};
template <typename Tag, typename Tag::type M>
struct Expose {
  friend typename Tag::type member(Tag) { return M; }
};
template struct Expose<EpollFd, &Reactor::epoll_fd_>;

}  // namespace

int reactor_epoll_fd(Reactor& reactor) noexcept { return reactor.*member(EpollFd{}); }

void Socket::adopt(boost::asio::ip::tcp protocol, int fd, boost::system::error_code& ec,
                   Ring* ring) {
  namespace ops = boost::asio::detail::socket_ops;
  ring_ = ring;
  ring_events_ = 0;
  if (ring) {
    // What assign() sets, minus the epoll registration (reactor_data_ stays null, which Asio's
    // close and cancel take as "never registered").
    if (is_open()) {
      ec = boost::asio::error::already_open;
      return;
    }
    auto& impl = impl_.get_implementation();
    impl.socket_ = fd;
    impl.protocol_ = protocol;
    impl.state_ = ops::stream_oriented | ops::internal_non_blocking;
    ec = {};
    return;
  }
  assign(protocol, fd, ec);
  if (!ec) impl_.get_implementation().state_ = ops::stream_oriented | ops::internal_non_blocking;
}

void Socket::cancel(boost::system::error_code& ec) {
  if (ring_) {
    for (RingOp* op : ring_waits_)
      if (op) ring_cancel(*ring_, *op);
    ec = {};
    return;
  }
  basic_stream_socket::cancel(ec);
}

void Socket::close(boost::system::error_code& ec) {
  if (ring_ && (ring_waits_[0] || ring_waits_[1])) {
    // A poll queued in this turn names the descriptor, not the socket: submitted after close(),
    // it would fail (EBADF) or, worse, poll whatever socket reuses the number. So hand the queue
    // to the kernel first (one io_uring_enter, only when closing with a wait pending: an abort,
    // not the usual end of a connection), the cancellations with it.
    cancel(ec);
    ring_flush(*ring_);
  }
  basic_stream_socket::close(ec);
}

// Asio keeps the epoll events of a descriptor's last wake-up in its descriptor state (an
// operation; its base is private, which only a C-style cast may convert to) while and after it
// performs the operations queued there.
std::uint32_t Socket::last_events() noexcept {
  if (ring_) return ring_events_;
  auto* state = impl_.get_implementation().reactor_data_;
  if (!state) return 0;
  struct Peek : boost::asio::detail::reactor_op {
    static std::uint32_t events(const boost::asio::detail::operation* op) noexcept {
      return op->*(&Peek::task_result_);
    }
  };
  return Peek::events((const boost::asio::detail::operation*)state);
}

}  // namespace apilb::lb
