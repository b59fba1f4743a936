#pragma once

// One io_uring per worker thread (the io_uring engine): created, submitted to and reaped only on
// that thread (IORING_SETUP_SINGLE_ISSUER, DEFER_TASKRUN: completions are processed when the
// worker enters the ring, never by an interrupt in the middle of a turn). Internal to lb/.

#include "lb/edge.hpp"

#include <liburing.h>

#include <cstddef>
#include <optional>
#include <string>

namespace apilb::lb {

// What the io_uring engine needs from the kernel; nullopt when it has it, else why not (one line).
std::optional<std::string> uring_unavailable();

// A worker's ring. Operations queue SQEs; submit_and_wait() is the loop turn's one io_uring_enter:
// it submits everything queued and waits for at least one completion. Not thread-safe.
class Ring {
 public:
  explicit Ring(unsigned entries);  // throws std::system_error
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  io_uring_sqe& sqe(RingOp* op);  // a fresh SQE whose completion goes to `op` (null: ignored)
  void submit_and_wait();
  void flush();                                // submits what is queued, without waiting
  void submit_and_wait_for(int milliseconds);  // returns after the time even with nothing done
  // Dispatches every completion ready; returns how many.
  unsigned reap();
  // Operations whose last completion has not been reaped yet.
  std::size_t in_flight() const noexcept { return in_flight_; }

 private:
  io_uring ring_;
  std::size_t in_flight_ = 0;
};

}  // namespace apilb::lb
