#include "lb/edge.hpp"

namespace apilb::lb {

void Socket::adopt(boost::asio::ip::tcp protocol, int fd, boost::system::error_code& ec) {
  assign(protocol, fd, ec);
  namespace ops = boost::asio::detail::socket_ops;
  if (!ec) impl_.get_implementation().state_ = ops::stream_oriented | ops::internal_non_blocking;
}

// Asio keeps the epoll events of a descriptor's last wake-up in its descriptor state (an
// operation; its base is private, which only a C-style cast may convert to) while and after it
// performs the operations queued there.
std::uint32_t Socket::last_events() noexcept {
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
