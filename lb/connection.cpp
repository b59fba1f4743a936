#include "lb/connection.hpp"

#include "lb/socket_options.hpp"
#include "lb/uring_loop.hpp"
#include "lb/worker.hpp"

#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace apilb::lb {

using boost::system::error_code;
using healthcheck::Target;
using tcp = boost::asio::ip::tcp;

namespace {

constexpr std::size_t kSpliceChunk = PipePool::kDefaultSize;  // what one pipe holds
// Relay steps one direction may take before it lets the other connections of its worker run.
constexpr int kStepsPerTurn = 16;
// The most of a first flight kept for a replay: any TLS ClientHello (one record, <= 16 KiB), and
// what a just-connected socket takes in one send.
constexpr std::uint32_t kFlightBound = 16 * 1024;

bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

// Our own shortage of descriptors or memory, not a fault of the target.
bool shortage(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

// A TLS record carrying a handshake (a ClientHello): content type 22, then version 3.x.
bool looks_like_tls(const char* data, std::size_t n) noexcept {
  return n >= 1 && data[0] == 0x16 && (n < 2 || data[1] == 0x03);
}

// recvmsg with TCP_INQ: the bytes read (or -1 and errno), and in `unread` whether more is queued
// (1 until TCP_INQ says otherwise: then the caller reads again).
ssize_t receive(int fd, char* at, std::size_t size, int& unread) noexcept {
  iovec iov{at, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  unread = 1;
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ)
      std::memcpy(&unread, CMSG_DATA(c), sizeof unread);
  return n;
}

std::string describe(int err) {
  if (err == ETIMEDOUT) return "connect timeout";
  if (err == ECONNREFUSED) return "connection refused";
  return std::strerror(err);
}

}  // namespace

Connection::Connection(Worker& w, int fd, tcp protocol)
    : w_(w), client_(w.io->get_executor()), upstream_(w.io->get_executor()) {
  error_code ec;
  client_.adopt(protocol, fd, ec, w.ring);
  if (ec) ::close(fd);  // start() sees a closed client
}

Connection::~Connection() {
  for (int dir = 0; dir < 2; ++dir) {
    Half& h = half_[dir];
    if (h.buffer) w_.buffers.give(std::move(h.buffer));
    if (h.pipe) PipePool::close(h.pipe);  // it may hold bytes nobody will read
    flush(dir);
  }
  if (flight_) w_.buffers.give(std::move(flight_));
  if (established_) target_->stats->active.fetch_sub(1, std::memory_order_relaxed);
  w_.shared.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Connection::start(healthcheck::TargetSetPtr targets) {
  if (!client_.is_open()) {
    delete this;
    return;
  }
  w_.connections.push_back(*this);
  // Pin the snapshot: the Target we pick stays valid however often the control thread publishes.
  pinned_ = std::move(targets);
  if (!pinned_ || pinned_->eligible().empty()) {
    w_.shared.failed.fetch_add(1, std::memory_order_relaxed);
    if (w_.shared.no_target.allow())
      spdlog::error("no target configured: closing client connection{}",
                    w_.shared.no_target.suppressed());
    abort();
    return;
  }
  try_targets();
}

void Connection::try_targets() {
  const bool panic = pinned_->panic();
  const std::size_t attempts =
      panic ? pinned_->eligible().size() : static_cast<std::size_t>(w_.settings.retries) + 1;
  while (tried_.size() < attempts) {
    auto index = w_.balancer.pick(*pinned_, tried_);
    if (!index) index = believed_down();
    if (!index) break;
    tried_.add(*index);
    target_ = &pinned_->targets()[*index];
    int err = 0;
    switch (open_and_connect(*target_, err)) {
      case Attempt::waiting:
        return;
      case Attempt::connected:
        established();
        return;
      case Attempt::failed:
        connect_failed(err);  // counts it and comes back here through try_targets
        return;
      case Attempt::shortage:
        // No socket at all (EMFILE, ENFILE, ENOBUFS): our shortage, not the target's fault. Do
        // not count it against the target nor try the others, which would fail the same way.
        if (w_.uring) uring_short_of_descriptors(w_);
        give_up();
        return;
    }
  }
  give_up();
}

// Every healthy target has been tried: one believed down (most recently healthy first, the panic
// order) rather than a refusal. A checker a few hundred milliseconds behind a crash, or passive
// failures that marked a live target down, must not cost a client its connection.
std::optional<std::uint32_t> Connection::believed_down() const noexcept {
  const auto targets = pinned_->targets();
  for (std::uint32_t i = 0; i < targets.size(); ++i)
    if (targets[i].state == healthcheck::TargetState::down && !tried_.contains(i)) return i;
  return std::nullopt;
}

// Our own non-blocking connect: socket(SOCK_NONBLOCK) + connect + wait for writability (SO_ERROR
// only when woken with an error). Asio's async_connect adds an ioctl(FIONBIO) before and a poll()
// and getsockopt after (measured: 3 of the 12 system calls this saves per new connection).
Connection::Attempt Connection::open_and_connect(const Target& target, int& error) {
  const auto& ep = target.endpoint;
  const int fd =
      ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return Attempt::shortage;
  set_nodelay(fd);
  report_unread(fd);
  int rc;
  do rc = ::connect(fd, ep.data(), static_cast<socklen_t>(ep.size()));
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS) {
    error = errno;
    ::close(fd);
    return shortage(error) ? Attempt::shortage : Attempt::failed;
  }
  error_code ec;
  upstream_.adopt(ep.protocol(), fd, ec, w_.ring);  // registers with epoll (or the ring)
  if (ec) {
    ::close(fd);
    return Attempt::shortage;
  }
  if (rc == 0) return Attempt::connected;
  const bool panic = pinned_->panic();
  deadline =
      Clock::now() + (panic ? w_.settings.panic_connect_timeout : w_.settings.connect_timeout);
  w_.watch_connect(*this);
  upstream_.wait_edge(w_.reactor, arm(connect_waiter_), kWriteEdge);
  return Attempt::waiting;
}

void Connection::connect_timed_out() noexcept {
  timed_out_ = true;
  error_code ignored;
  upstream_.cancel(ignored);  // on_connected sees operation_aborted
}

void Connection::on_connected(error_code ec) {
  phase_hook.unlink();
  if (closed_) return release();
  int err = 0;
  if (!ec) {
    // Woken writable without an error or hang-up: connected. Only a failure needs SO_ERROR.
    socklen_t len = sizeof err;
    if (upstream_.hung_up() &&
        ::getsockopt(upstream_.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
  } else {
    err = timed_out_ ? ETIMEDOUT : ec.value();
  }
  timed_out_ = false;
  if (err == 0) return established();
  error_code ignored;
  upstream_.close(ignored);
  connect_failed(err);
}

void Connection::connect_failed(int err) {
  const Target& target = *target_;
  target.stats->connect_failures.fetch_add(1, std::memory_order_relaxed);
  const std::string reason = describe(err);
  if (w_.shared.connect_errors.allow())
    spdlog::warn("connect to {} failed: {}; trying another target{}", target.name, reason,
                 w_.shared.connect_errors.suppressed());
  if (w_.shared.on_connect_failure)
    w_.shared.on_connect_failure(target, reason, err == ECONNREFUSED);
  try_targets();
}

void Connection::give_up() {
  w_.shared.failed.fetch_add(1, std::memory_order_relaxed);
  if (w_.shared.no_target.allow())
    spdlog::error("no target reachable after {} attempts: closing client connection{}",
                  tried_.size(), w_.shared.no_target.suppressed());
  abort();
}

void Connection::established() {
  const bool again = std::exchange(connect_waiter_, 0) != 0;  // a reconnect for a replay
  established_ = true;
  auto& stats = *target_->stats;
  stats.total.fetch_add(1, std::memory_order_relaxed);
  stats.active.fetch_add(1, std::memory_order_relaxed);
  if (detects_dead_peers(w_.settings.tcp)) w_.watch_young(*this);
  const bool splice = w_.settings.relay.splice == config::SpliceMode::always;
  half_[0].splice = half_[1].splice = splice;
  if (!again) replayable_ = w_.settings.replay != config::ReplayFirstFlight::never;
  // The target speaks second: wait for it, unless the wake-up that completed the connect said it
  // has spoken already (that edge is gone: read at the next turn). The client has usually sent its
  // first bytes while we connected: try them at once rather than paying a wait first. The wait
  // goes first so that an error in pump() cannot delete `this` under it.
  if (upstream_.readable_at_last_wakeup()) {
    upstream_.yield(w_.reactor, arm(1));
  } else {
    wait(1, false);
  }
  if (!again) return pump(0);
  send_flight();
}

// After a reconnect: the held bytes go to the new target, then what the client sent meanwhile
// (unless its read is still pending: that wait wakes dir 0 as usual), or its FIN.
void Connection::send_flight() {
  std::uint32_t sent = 0;
  while (sent < flight_len_) {
    const ssize_t m = ::send(upstream_.native_handle(), flight_.get() + sent, flight_len_ - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (m > 0) sent += static_cast<std::uint32_t>(m);
    else if (m < 0 && errno == EINTR) continue;
    else break;
  }
  if (sent < flight_len_) {
    // A fresh socket takes 16 KiB at once; if it did not, send the rest the ordinary way.
    if (busy_ & 1) return abort();  // dir 0 waits on the client: no waiter left for the send
    Half& h = half_[0];
    h.buffer = std::move(flight_);
    h.sent = sent;
    h.pending = flight_len_ - sent;
    flight_len_ = 0;
    replayable_ = false;
    return wait(0, true);
  }
  half_[0].moved += sent;
  WorkerStats::add(w_.stats.bytes_copied, sent);
  if (half_[0].ended) {
    ::shutdown(upstream_.native_handle(), SHUT_WR);
    return;
  }
  if (!(busy_ & 1)) pump(0);
}

// The target closed or reset before its first byte: nothing the client sent was processed (in
// `tls` mode, a ClientHello at most). Counted as a failed connect (passive check), then the same
// bytes go to another target.
void Connection::replay() {
  const Target& lost = *target_;
  lost.stats->connect_failures.fetch_add(1, std::memory_order_relaxed);
  if (w_.shared.replays.allow())
    spdlog::warn(
        "{} closed a connection before answering: replaying its first {} bytes on another target{}",
        lost.name, flight_len_, w_.shared.replays.suppressed());
  if (w_.shared.on_connect_failure)
    w_.shared.on_connect_failure(lost, "closed before answering", false);
  leave_target();
  connect_waiter_ = 1;  // free: we are in its completion (dir 1 saw the close)
  try_targets();
}

// The target went down (on_target_down: close). A connection it has not answered yet moves to
// another target, first flight and all, instead of being closed: its client never learns.
void Connection::target_down() noexcept {
  if (closed_) return;  // going away already, with its last wait
  if (!established_ || !replayable_) return abort();
  leave_target();
  // Closing the upstream socket completes dir 1's wait (aborted); the reconnect, which needs
  // that waiter, starts from its completion. A yield already queued completes the same way.
  if (busy_ & 2) {
    moving_ = true;
    return;
  }
  connect_waiter_ = 1;
  try_targets();
}

void Connection::leave_target() noexcept {
  target_->stats->active.fetch_sub(1, std::memory_order_relaxed);
  flush(0);
  established_ = false;
  phase_hook.unlink();
  error_code ignored;
  upstream_.close(ignored);
  half_[1] = Half{};
  w_.shared.replayed.fetch_add(1, std::memory_order_relaxed);
}

void Connection::commit() noexcept {
  replayable_ = false;
  flight_len_ = 0;
  if (flight_) w_.buffers.give(std::move(flight_));
}

void Connection::tune_upstream() noexcept {
  if (upstream_.is_open()) tune_dead_peer_detection(upstream_.native_handle(), w_.settings.tcp);
}

void Connection::abort() noexcept {
  if (!closed_) {
    closed_ = true;
    error_code ignored;
    client_.close(ignored);
    upstream_.close(ignored);
  }
  release();
}

// Moves one direction until its source is drained or its destination full, then waits. A buffer
// or pipe is held only while bytes are in flight: an idle connection holds neither.
void Connection::pump(int dir) {
  for (int steps = 0; steps < kStepsPerTurn; ++steps) {
    const Step step = replayable_ && dir == 0 ? hold_some()
                      : half_[dir].splice     ? splice_some(dir)
                                              : copy_some(dir);
    if (replayable_ && dir == 1 && (step == Step::eof || step == Step::error)) {
      // A FIN after the client's own FIN is the target's normal answer to it, not a failure.
      if (step == Step::error || !half_[0].ended) return replay();
      commit();
    }
    switch (step) {
      case Step::more:
        continue;
      case Step::drained:
        flush(dir);
        return wait(dir, false);
      case Step::blocked:
        return wait(dir, true);
      case Step::eof:
        flush(dir);
        return end(dir);
      case Step::error:
        flush(dir);
        return abort();
    }
  }
  // A long burst: let the worker's other connections run, then carry on.
  source(dir).yield(w_.reactor, arm(dir));
}

void Connection::wait(int dir, bool for_write) {
  if (for_write) sink(dir).wait_edge(w_.reactor, arm(dir), kWriteEdge);
  else source(dir).wait_edge(w_.reactor, arm(dir), kReadEdge);
}

void Connection::woken(const Waiter<Connection>& waiter, error_code ec) {
  busy_ &= ~bit(waiter);
  const int i = &waiter == &waiters_[0] ? 0 : 1;
  if (i == 1 && std::exchange(moving_, false)) {  // see target_down()
    if (closed_) return release();
    connect_waiter_ = 1;
    return try_targets();
  }
  if (established_) return on_ready(i, ec);
  if (i == connect_waiter_) return on_connected(ec);
  woken_while_connecting(ec);
}

// The client's read wait woke while a replay reconnects: established() reads it then.
void Connection::woken_while_connecting(error_code ec) {
  if (closed_) return release();
  if (ec) abort();
}

void Connection::on_ready(int dir, error_code ec) {
  if (closed_) return release();
  if (ec) return abort();
  Half& h = half_[dir];
  if (h.pending) {
    switch (send_held(h, sink(dir).native_handle())) {
      case Step::blocked:
        return wait(dir, true);
      case Step::error:
        return abort();
      default:
        break;
    }
  }
  pump(dir);
}

// A FIN is passed on as a write shutdown (half-close). When the other direction has ended too, both
// sockets are simply closed: close() sends the FIN, a shutdown() first would be one more call.
void Connection::end(int dir) {
  Half& h = half_[dir];
  h.ended = true;
  if (half_[1 - dir].ended) return abort();
  ::shutdown(sink(dir).native_handle(), SHUT_WR);
}

void Connection::flush(int dir) noexcept {
  Half& h = half_[dir];
  if (!h.moved || !target_) return;
  auto& counter = dir == 0 ? target_->stats->bytes_upstream : target_->stats->bytes_downstream;
  counter.fetch_add(std::exchange(h.moved, 0), std::memory_order_relaxed);
}

// recv into a pooled buffer, send it all. A read is the last one until the next edge when it
// leaves nothing behind: no bytes and no FIN (TCP_INQ says so; without it, read again) and no RST
// either (epoll's last wake-up says so). Measured: 8.4 -> 6.4 system calls per kept-alive request
// against reading until EAGAIN, and the FIN of a short exchange (Connection: close) comes with the
// answer instead of a wait of its own.
Step Connection::copy_some(int dir) {
  Half& h = half_[dir];
  const int from = source(dir).native_handle();
  auto buffer = w_.buffers.take();
  const std::size_t size = w_.buffers.buffer_size();
  int unread;
  const ssize_t n = receive(from, buffer.get(), size, unread);
  if (n <= 0) {
    const int err = errno;
    w_.buffers.give(std::move(buffer));
    if (n == 0) return Step::eof;
    return would_block(err) ? Step::drained : Step::error;
  }
  if (dir == 1 && replayable_) commit();  // the target has spoken
  const bool full = static_cast<std::size_t>(n) == size;
  // A full buffer means a bulk transfer: from now on move it with splice(2), as HAProxy's
  // splice-auto does.
  if (full && w_.settings.relay.splice == config::SpliceMode::automatic) h.splice = true;
  h.buffer = std::move(buffer);
  h.pending = static_cast<std::uint32_t>(n);
  h.sent = 0;
  const Step sent = send_held(h, sink(dir).native_handle());
  if (sent != Step::more) return sent;
  const bool last = !full && unread == 0 && !source(dir).hung_up();
  return last ? Step::drained : Step::more;
}

// Dir 0 before the target's first byte: reads into the first-flight buffer and sends from there,
// keeping the bytes. Ends as copy_some does. Commits (and goes on as copy_some would) when the
// flight cannot be replayed: not a TLS handshake in `tls` mode, past the bound, or a send that
// found the target's socket full.
Step Connection::hold_some() {
  const bool tls_only = w_.settings.replay == config::ReplayFirstFlight::tls;
  if (flight_len_ == 0 && tls_only && half_[0].splice) {
    // splice: always: decide from a peek, so that a stream that is no TLS handshake is spliced
    // from its first byte, as before (in the other modes the first read is a copy anyway).
    char first[2];
    ssize_t n;
    do n = ::recv(client_.native_handle(), first, sizeof first, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0) return Step::eof;
    if (n < 0) return would_block(errno) ? Step::drained : Step::error;
    if (!looks_like_tls(first, static_cast<std::size_t>(n))) {
      commit();
      return splice_some(0);
    }
  }
  if (!flight_) flight_ = w_.buffers.take();
  const std::uint32_t bound =
      std::min<std::uint32_t>(kFlightBound, static_cast<std::uint32_t>(w_.buffers.buffer_size()));
  char* at = flight_.get() + flight_len_;
  int unread;
  const ssize_t n = receive(client_.native_handle(), at, bound - flight_len_, unread);
  if (n <= 0) {
    const int err = errno;
    if (flight_len_ == 0) w_.buffers.give(std::move(flight_));  // hold a buffer only with bytes
    if (n == 0) return Step::eof;
    return would_block(err) ? Step::drained : Step::error;
  }
  const auto got = static_cast<std::uint32_t>(n);
  Half& h = half_[0];
  if (flight_len_ == 0 && tls_only && !looks_like_tls(at, got)) {
    // Not a TLS client: committed at once; these bytes are sent as copy_some sends them.
    h.buffer = std::move(flight_);
    h.pending = got;
    h.sent = 0;
    commit();
    const Step sent = send_held(h, upstream_.native_handle());
    if (sent != Step::more) return sent;
    return unread == 0 && !client_.hung_up() ? Step::drained : Step::more;
  }
  const std::uint32_t offset = flight_len_;
  flight_len_ += got;
  std::uint32_t sent = 0;
  while (sent < got) {
    const ssize_t m =
        ::send(upstream_.native_handle(), at + sent, got - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (m > 0) {
      sent += static_cast<std::uint32_t>(m);
    } else if (m < 0 && errno == EINTR) {
      continue;
    } else if (m < 0 && would_block(errno)) {
      // The target's socket is full: no longer a first flight. The rest goes as copy_some's
      // would, moved to the buffer's start (a copy, on this rare path only).
      std::memmove(flight_.get(), at + sent, got - sent);
      h.buffer = std::move(flight_);
      h.sent = 0;
      h.pending = got - sent;
      h.moved += sent;
      WorkerStats::add(w_.stats.bytes_copied, sent);
      flight_len_ = 0;
      replayable_ = false;
      return Step::blocked;
    } else {
      // The target is gone (EPIPE, ECONNRESET): keep the bytes; its close reaches dir 1, which
      // replays them all.
      h.moved += sent;
      return Step::drained;
    }
  }
  h.moved += got;
  WorkerStats::add(w_.stats.bytes_copied, got);
  if (flight_len_ == bound) commit();  // too big to keep: from now on as any connection
  const bool last = got < bound - offset && unread == 0 && !client_.hung_up();
  return last ? Step::drained : Step::more;
}

// Sends what `h` holds (buffer or pipe); `more` once it is all out and the buffer or pipe is back
// in its pool.
Step Connection::send_held(Half& h, int to) {
  while (h.pending > 0) {
    ssize_t m;
    if (h.pipe) {
      m = ::splice(h.pipe.read, nullptr, to, nullptr, h.pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
      m = ::send(to, h.buffer.get() + h.sent, h.pending, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (m > 0) {
      h.sent += static_cast<std::uint32_t>(m);
      h.pending -= static_cast<std::uint32_t>(m);
    } else if (m < 0 && errno == EINTR) {
      continue;
    } else if (m < 0 && would_block(errno)) {
      return Step::blocked;
    } else {
      return Step::error;  // the destructor closes a pipe that still holds bytes
    }
  }
  if (h.pipe) {
    WorkerStats::add(w_.stats.bytes_spliced, h.sent);
    w_.pipes.give(std::exchange(h.pipe, Pipe{}));
  } else {
    WorkerStats::add(w_.stats.bytes_copied, h.sent);
    w_.buffers.give(std::move(h.buffer));
  }
  h.moved += h.sent;
  return Step::more;
}

Step Connection::splice_some(int dir) {
  Half& h = half_[dir];
  const Pipe pipe = w_.pipes.take();
  if (!pipe) return copy_some(dir);  // out of descriptors: one buffered step instead
  const int from = source(dir).native_handle();
  ssize_t n;
  do
    n = ::splice(from, nullptr, pipe.write, nullptr, kSpliceChunk,
                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    const int err = errno;
    w_.pipes.give(pipe);  // nothing entered it
    if (n == 0) return Step::eof;
    return would_block(err) ? Step::drained : Step::error;
  }
  if (dir == 1 && replayable_) commit();  // the target has spoken
  h.pipe = pipe;
  h.pending = static_cast<std::uint32_t>(n);
  h.sent = 0;
  return send_held(h, sink(dir).native_handle());
}

}  // namespace apilb::lb
