#include "lb/ring.hpp"

#include "lb/engine.hpp"

#include <poll.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace apilb::lb {

namespace {

// SINGLE_ISSUER (6.0) and DEFER_TASKRUN (6.1): task work runs inside our io_uring_enter, so a turn
// is one kernel entry and completions never interrupt user space. Older kernels: without them.
constexpr unsigned kFastFlags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;

int setup(io_uring& ring, unsigned entries) {
  io_uring_params p{};
  p.flags = kFastFlags | IORING_SETUP_SUBMIT_ALL;
  int rc = io_uring_queue_init_params(entries, &ring, &p);
  if (rc == -EINVAL) {
    p = io_uring_params{};
    p.flags = IORING_SETUP_SUBMIT_ALL;
    rc = io_uring_queue_init_params(entries, &ring, &p);
  }
  return rc;
}

// The opcodes the engine submits.
constexpr std::array<std::pair<int, const char*>, 5> kOpcodes{{
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_POLL_REMOVE, "POLL_REMOVE"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_TIMEOUT, "TIMEOUT"},
}};

}  // namespace

std::optional<std::string> uring_unavailable() {
  io_uring ring;
  const int rc = setup(ring, 8);
  if (rc < 0) {
    std::string why = std::string("io_uring_setup failed: ") + std::strerror(-rc);
    if (rc == -EPERM) why += " (refused by a seccomp profile or kernel.io_uring_disabled)";
    if (rc == -ENOSYS) why += " (kernel built without io_uring)";
    return why;
  }
  std::unique_ptr<io_uring_probe, void (*)(io_uring_probe*)> probe(io_uring_get_probe_ring(&ring),
                                                                   &io_uring_free_probe);
  std::optional<std::string> why;
  if (!probe) {
    why = "io_uring_register(PROBE) failed: " + std::string(std::strerror(errno));
  } else {
    for (auto [op, name] : kOpcodes)
      if (!io_uring_opcode_supported(probe.get(), op)) {
        why = std::string("the kernel lacks IORING_OP_") + name;
        break;
      }
  }
  // Multishot accept and poll (5.19) have no opcode of their own: FEAT_FAST_POLL (5.7) and the
  // kernel version of the probe opcode below stand for them (IORING_OP_SOCKET is 5.19).
  if (!why && probe && !io_uring_opcode_supported(probe.get(), IORING_OP_SOCKET))
    why = "the kernel is older than 5.19 (no multishot accept)";
  io_uring_queue_exit(&ring);
  return why;
}

Ring::Ring(unsigned entries) {
  if (const int rc = setup(ring_, entries); rc < 0)
    throw std::system_error(-rc, std::system_category(), "io_uring_setup");
}

Ring::~Ring() { io_uring_queue_exit(&ring_); }

io_uring_sqe& Ring::sqe(RingOp* op) {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {
    // The submission queue is full: hand it to the kernel now (rare: it holds a turn's work).
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(s, op);
  if (op) ++in_flight_;
  return *s;
}

void Ring::flush() {
  if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
}

void Ring::submit_and_wait() {
  int rc;
  do rc = io_uring_submit_and_wait(&ring_, 1);
  while (rc == -EINTR);
}

void Ring::submit_and_wait_for(int milliseconds) {
  __kernel_timespec ts{milliseconds / 1000, (milliseconds % 1000) * 1'000'000LL};
  io_uring_cqe* cqe;
  io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
}

unsigned Ring::reap() {
  unsigned n = 0;
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    auto* op = static_cast<RingOp*>(io_uring_cqe_get_data(cqe));
    const int res = cqe->res;
    const unsigned flags = cqe->flags;
    io_uring_cqe_seen(&ring_, cqe);
    ++n;
    if (!op) continue;
    if (!(flags & IORING_CQE_F_MORE)) --in_flight_;
    op->on_cqe(op, res, flags);
  }
  return n;
}

void ring_poll(Ring& ring, RingOp& op, int fd, unsigned mask) {
  io_uring_prep_poll_add(&ring.sqe(&op), fd, mask);
}

void ring_nop(Ring& ring, RingOp& op) { io_uring_prep_nop(&ring.sqe(&op)); }

void ring_flush(Ring& ring) { ring.flush(); }

void ring_cancel(Ring& ring, RingOp& op) { io_uring_prep_cancel(&ring.sqe(nullptr), &op, 0); }

EngineChoice choose_engine(config::Engine requested) {
  if (requested == config::Engine::epoll) return {config::Engine::epoll, {}};
  // Probed on a thread of its own: tearing a ring down makes the kernel queue task work with
  // TWA_SIGNAL on every thread that used it (io_ring_exit_work), which ends a blocking call of
  // that thread with EINTR (a recv with SO_RCVTIMEO, say). The probing thread is gone by then.
  static const std::optional<std::string> why = [] {
    std::optional<std::string> result;
    std::thread([&] { result = uring_unavailable(); }).join();
    return result;
  }();
  if (!why) return {config::Engine::uring, {}};
  if (requested == config::Engine::uring)
    throw std::runtime_error("relay.engine is uring but io_uring is unavailable: " + *why);
  return {config::Engine::epoll, *why};
}

}  // namespace apilb::lb
