#include "lb/forwarder.hpp"

#include "lb/balance.hpp"
#include "lb/pools.hpp"
#include "lb/socket_options.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/intrusive/list.hpp>
#include <boost/version.hpp>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

namespace apilb::lb {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using healthcheck::Target;
using healthcheck::TargetSetPtr;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr int kAcceptBatch = 64;
constexpr std::size_t kSpliceChunk = PipePool::kDefaultSize;  // what one pipe holds
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
// Relay steps one direction may take before it lets the other connections of its worker run.
constexpr int kStepsPerTurn = 16;
// Upstream sockets get keepalive and TCP_USER_TIMEOUT once they have lived between one and two of
// these (see Forwarder::Impl::tune_tick).
constexpr auto kTuneTick = std::chrono::seconds(1);

// Two shortcuts below use Asio's internals as Boost 1.81 (Debian 12) has them: recheck both on
// an upgrade (the epoll reactor's start_op and the socket state bits).
static_assert(BOOST_VERSION == 108100, "recheck Socket::adopt and Waiter against this Boost");
static_assert(std::is_same_v<asio::detail::reactor, asio::detail::epoll_reactor>);

// A wait for readiness that costs no system call. Asio registers every socket with epoll once,
// edge-triggered, yet its async_wait issues an EPOLL_CTL_MOD on every call (so that a level that
// is already there is reported): two of 6.2 system calls per kept-alive request, four per new
// connection. The relay only waits right after a read that left nothing behind (see
// Connection::copy_some), a send that found the socket full, or a connect in progress, all in the
// same handler: the next edge is certain to come, so queueing the operation on the descriptor is
// enough. The reactor calls perform() once at once (the speculative attempt; `starting` makes it
// decline, so the operation is queued without an epoll_ctl) and again when an edge arrives (then
// it is done). Embedded in its connection: no allocation per wait. A reactor operation is completed
// by the scheduler with the owner set, or destroyed with the owner null when the io_context goes
// away with it still pending.
class Waiter : public asio::detail::reactor_op {
 public:
  explicit Waiter(Connection& c) : reactor_op(error_code(), &perform, &complete), connection(c) {}

  // The edge to wait for: read_op (readable, EOF or error) or write_op (writable or error).
  void start(asio::detail::reactor& reactor, asio::detail::reactor::per_descriptor_data& data,
             int descriptor, int op_type) {
    ec_ = {};
    starting = true;
    reactor.start_op(op_type, descriptor, data, this, true, true);
    starting = false;
  }
  // Completes at the worker's next turn, without waiting: lets the worker's other connections run.
  void yield(asio::detail::reactor& reactor) {
    ec_ = {};
    reactor.post_immediate_completion(this, true);
  }
  // The epoll events of the last wake-up of a descriptor: Asio keeps them in its descriptor state
  // (an operation; its base is private, which only a C-style cast may convert to) while and after
  // it performs the operations queued there.
  static std::uint32_t last_events(asio::detail::reactor::per_descriptor_data state) noexcept {
    if (!state) return 0;
    const auto* op = (const asio::detail::operation*)state;
    return op->*(&Waiter::task_result_);
  }

 private:
  static status perform(reactor_op* op) {
    return static_cast<Waiter*>(op)->starting ? not_done : done;
  }
  static void complete(void* owner, asio::detail::operation* op, const error_code&, std::size_t);

  Connection& connection;
  bool starting = false;
};

// A worker's socket: bound to its io_context executor (40 bytes instead of 88 with
// any_io_executor), and able to adopt a descriptor we created non-blocking (accept4, socket with
// SOCK_NONBLOCK) and never duplicated. Plain assign() assumes neither and pays for it on every
// connection: an ioctl(FIONBIO) before the first wait and an EPOLL_CTL_DEL before close (measured:
// 4 of 25 system calls per new connection). This sets Asio's per-socket state bits as its own
// open() + non_blocking(true) would have left them.
class Socket : public asio::basic_stream_socket<tcp, asio::io_context::executor_type> {
 public:
  using basic_stream_socket::basic_stream_socket;
  void adopt(tcp protocol, int fd, error_code& ec) {
    assign(protocol, fd, ec);
    namespace ops = asio::detail::socket_ops;
    if (!ec) impl_.get_implementation().state_ = ops::stream_oriented | ops::internal_non_blocking;
  }
  void wait_edge(asio::detail::reactor& reactor, Waiter& waiter, int op_type) {
    auto& impl = impl_.get_implementation();
    waiter.start(reactor, impl.reactor_data_, impl.socket_, op_type);
  }
  // What epoll reported at this socket's last wake-up.
  std::uint32_t last_events() noexcept {
    return Waiter::last_events(impl_.get_implementation().reactor_data_);
  }
  // An error or hang-up: a RST that arrived behind data, which the read that takes the data
  // cannot tell.
  bool hung_up() noexcept { return last_events() & (EPOLLERR | EPOLLHUP); }
};

// What one relay step ended with: `more` (read again), `drained` (a read that left nothing behind,
// or EAGAIN: wait for readability), `blocked` (the destination is full: wait for writability, bytes
// in hand), `eof`, `error`.
enum class Step { more, drained, blocked, eof, error };

bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

// Our own shortage of descriptors or memory, not a fault of the target.
bool shortage(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

std::string describe(int err) {
  if (err == ETIMEDOUT) return "connect timeout";
  if (err == ECONNREFUSED) return "connection refused";
  return std::strerror(err);
}

}  // namespace

ForwarderSettings ForwarderSettings::from(const config::Config& c) {
  ForwarderSettings s;
  s.balance = c.balance;
  s.connect_timeout = c.upstream.connect_timeout;
  s.panic_connect_timeout = std::min<config::Duration>(c.upstream.connect_timeout,
                                                       std::chrono::milliseconds(500));
  s.retries = c.upstream.retries;
  s.max_connections = c.limits.max_connections;
  s.tcp = c.tcp;
  s.relay = c.relay;
  return s;
}

using AllHook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;
using PhaseHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

// A proxied connection: a callback-driven state machine (connect, then relay both ways) rather than
// coroutines. Measured with 9,000 idle connections: the coroutine version held 20 heap blocks and
// 5.4 KiB per connection (frames of serve, operator&&, two pumps, co_spawn entry points, cancellation
// slots); now an idle connection holds this object (its two waiters inside) and two Asio
// descriptor states: 0.83 KiB. Owned by itself: it deletes itself once it is closed and its last pending wait
// has completed or been abandoned. Linked into its worker's list so the worker can close it;
// touched only on its worker.
class Connection : public AllHook {
 public:
  Connection(Forwarder::Impl& w, int fd, tcp protocol);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start();
  // Closes both sockets: pending waits complete with operation_aborted and the object goes away
  // with the last of them (at once if none is pending). May delete `this`.
  void abort() noexcept;
  // The connect deadline passed: fail the attempt through the pending wait.
  void connect_timed_out() noexcept;
  void tune_upstream() noexcept;
  // A Waiter of this connection completed (`ec` is operation_aborted when it was cancelled).
  void woken(const Waiter& waiter, error_code ec);
  // A Waiter of this connection was destroyed unfinished: the worker is going away.
  void abandoned() noexcept {
    --pending_;
    closed_ = true;
    release();
  }
  bool connected_to(const healthcheck::TargetStats* stats) const noexcept {
    return established_ && target_->stats.get() == stats;
  }
  bool must_close(const healthcheck::TargetSet& next) const noexcept {
    return established_ && next.must_close(target_->stats.get());
  }

  PhaseHook phase_hook;  // in the worker's `connecting`, then `young` or `settling` list
  Clock::time_point deadline;

 private:
  // One direction of the relay. A buffer or pipe is held only while a send is blocked.
  struct Half {
    std::unique_ptr<char[]> buffer;
    Pipe pipe;
    std::uint32_t pending = 0;  // bytes in `buffer` from `sent`, or in `pipe`, still to send
    std::uint32_t sent = 0;
    std::uint64_t moved = 0;    // since the last flush to the target's counter
    bool splice = false;
    bool ended = false;
  };
  enum class Attempt { waiting, connected, failed, shortage };

  void try_targets();
  Attempt open_and_connect(const Target& target, int& error);
  void on_connected(error_code ec);
  void connect_failed(int err);
  void give_up();
  void established();

  void pump(int dir);
  void wait(int dir, bool for_write);
  void on_ready(int dir, error_code ec);
  Step copy_some(int dir);
  Step splice_some(int dir);
  Step send_held(Half& h, int to);
  void end(int dir);
  void flush(int dir) noexcept;
  void release() noexcept {
    if (pending_ == 0) delete this;
  }
  Socket& source(int dir) noexcept { return dir == 0 ? client_ : upstream_; }
  Socket& sink(int dir) noexcept { return dir == 0 ? upstream_ : client_; }

  Forwarder::Impl& w_;
  Socket client_;
  Socket upstream_;
  // One per direction: a direction waits for one thing at a time, and the connect (before either
  // direction runs) uses the first.
  Waiter waiters_[2]{Waiter(*this), Waiter(*this)};
  TargetSetPtr pinned_;             // keeps target_ alive
  const Target* target_ = nullptr;  // the current attempt, then the connected target
  Half half_[2];                    // [0] client -> upstream, [1] upstream -> client
  Tried tried_;
  std::uint8_t pending_ = 0;        // waiters started and not completed yet
  bool closed_ = false;
  bool established_ = false;
  bool timed_out_ = false;
};

struct Forwarder::Impl {
  Impl(ForwarderSettings s, ForwarderShared& sh)
      : settings(std::move(s)),
        shared(sh),
        balancer(settings.balance, reinterpret_cast<std::uintptr_t>(this)),
        buffers(settings.relay.buffer_size),
        listener_tcp(settings.tcp) {}

  ~Impl() {
    // Close every connection. Those with a wait pending go when io is destroyed: it abandons
    // their waiters, the last of which deletes its connection (a waiter lives in its connection,
    // so the connection must outlive io's hold on it). Destroying io also destroys the coroutine
    // frames (acceptors) while everything they refer to is still alive.
    for_each_connection([](Connection& c) { c.abort(); });
    connect_timer.reset();
    tune_timer.reset();
    io.reset();
  }

  awaitable<void> accept_loop(std::unique_ptr<tcp::acceptor> acceptor);
  void spawn(awaitable<void> task);
  void watch_connect(Connection& c);
  void arm_connect_timer(Clock::time_point at);
  void on_connect_timer();
  void watch_young(Connection& c);
  void tune_tick();
  template <typename F>
  void for_each_connection(F f) {
    // Advance first: f may close (and delete) the connection.
    for (auto it = connections.begin(); it != connections.end();) f(*it++);
  }

  using PhaseList = boost::intrusive::list<
      Connection,
      boost::intrusive::member_hook<Connection, PhaseHook, &Connection::phase_hook>,
      boost::intrusive::constant_time_size<false>>;

  ForwarderSettings settings;
  ForwarderShared& shared;
  WorkerStats stats;
  Balancer balancer;
  BufferPool buffers;
  PipePool pipes;
  TargetSetPtr targets;
  boost::intrusive::list<Connection, boost::intrusive::constant_time_size<false>> connections;
  // Connections waiting for their connect, in deadline order, swept by one timer per worker: no
  // timer (and its allocation and timerfd update) per connect.
  PhaseList connecting;
  // Established connections whose upstream socket still lacks keepalive and TCP_USER_TIMEOUT:
  // `young` since the last tick, `settling` since the one before. Setting them late saves five
  // setsockopt calls on every short connection (most of them, with Connection: close clients);
  // the price is that a peer dying in a connection's first two seconds is noticed up to two
  // seconds later than the configured timeouts.
  PhaseList young;
  PhaseList settling;
  std::optional<asio::io_context> io{std::in_place, 1};
  asio::detail::reactor& reactor = asio::use_service<asio::detail::reactor>(*io);
  std::optional<asio::steady_timer> connect_timer{std::in_place, *io};
  std::optional<asio::steady_timer> tune_timer{std::in_place, *io};
  Clock::time_point connect_timer_at;
  bool connect_timer_armed = false;
  bool tune_timer_armed = false;
  std::vector<tcp::acceptor*> acceptors;  // owned by their accept loops
  config::Tcp listener_tcp;               // the control thread's copy, for listen()
};

void Forwarder::Impl::spawn(awaitable<void> task) {
  asio::co_spawn(*io, std::move(task), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::critical("bug: exception escaped a forwarder coroutine: {}", ex.what());
    }
  });
}

awaitable<void> Forwarder::Impl::accept_loop(std::unique_ptr<tcp::acceptor> owned) {
  tcp::acceptor& acceptor = *owned;
  acceptors.push_back(&acceptor);
  struct Unregister {
    std::vector<tcp::acceptor*>& all;
    tcp::acceptor* self;
    ~Unregister() { std::erase(all, self); }
  } unregister{acceptors, &acceptor};
  const tcp protocol = acceptor.local_endpoint().protocol();
  for (;;) {
    auto [ec] = co_await acceptor.async_wait(tcp::acceptor::wait_read, use_nothrow);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    // Take every pending connection per wake-up: one epoll round trip for a burst.
    for (int i = 0; i < kAcceptBatch; ++i) {
      const int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (would_block(err)) break;
        if (err == EINTR || err == ECONNABORTED) continue;
        // Out of descriptors or memory: the connection waits in the backlog until we recover.
        if (shared.accept_errors.allow())
          spdlog::error("accept on {}: {}; backing off{}",
                        acceptor.local_endpoint().address().to_string(), std::strerror(err),
                        shared.accept_errors.suppressed());
        asio::steady_timer backoff(*io, kAcceptBackoff);
        co_await backoff.async_wait(use_nothrow);
        break;
      }
      const auto open = shared.connections.fetch_add(1, std::memory_order_relaxed) + 1;
      if (open > static_cast<std::int64_t>(settings.max_connections)) {
        shared.connections.fetch_sub(1, std::memory_order_relaxed);
        shared.rejected.fetch_add(1, std::memory_order_relaxed);
        ::close(fd);
        if (shared.over_limit.allow())
          spdlog::warn("max_connections ({}) reached: closing new connections{}",
                       settings.max_connections, shared.over_limit.suppressed());
        continue;
      }
      (new Connection(*this, fd, protocol))->start();
    }
  }
}

void Forwarder::Impl::watch_connect(Connection& c) {
  // Nearly always appended: every connect of a worker has the same timeout, except in panic mode.
  auto it = connecting.end();
  while (it != connecting.begin() && std::prev(it)->deadline > c.deadline) --it;
  connecting.insert(it, c);
  if (!connect_timer_armed || c.deadline < connect_timer_at) arm_connect_timer(c.deadline);
}

void Forwarder::Impl::arm_connect_timer(Clock::time_point at) {
  connect_timer_armed = true;
  connect_timer_at = at;
  connect_timer->expires_at(at);  // completes an earlier wait with operation_aborted
  connect_timer->async_wait([this](error_code ec) {
    if (ec != asio::error::operation_aborted) on_connect_timer();
  });
}

void Forwarder::Impl::on_connect_timer() {
  connect_timer_armed = false;
  const auto now = Clock::now();
  while (!connecting.empty() && connecting.front().deadline <= now) {
    Connection& c = connecting.front();
    c.phase_hook.unlink();
    c.connect_timed_out();
  }
  // Not re-armed when the list is empty: the next connect arms it.
  if (!connecting.empty()) arm_connect_timer(connecting.front().deadline);
}

void Forwarder::Impl::watch_young(Connection& c) {
  young.push_back(c);
  if (tune_timer_armed) return;
  tune_timer_armed = true;
  tune_timer->expires_after(kTuneTick);
  tune_timer->async_wait([this](error_code ec) {
    if (!ec) tune_tick();
  });
}

void Forwarder::Impl::tune_tick() {
  tune_timer_armed = false;
  while (!settling.empty()) {
    Connection& c = settling.front();
    c.phase_hook.unlink();
    c.tune_upstream();
  }
  settling.splice(settling.end(), young);
  if (settling.empty()) return;
  tune_timer_armed = true;
  tune_timer->expires_after(kTuneTick);
  tune_timer->async_wait([this](error_code ec) {
    if (!ec) tune_tick();
  });
}

Connection::Connection(Forwarder::Impl& w, int fd, tcp protocol)
    : w_(w), client_(w.io->get_executor()), upstream_(w.io->get_executor()) {
  error_code ec;
  client_.adopt(protocol, fd, ec);
  if (ec) ::close(fd);  // start() sees a closed client
}

Connection::~Connection() {
  for (int dir = 0; dir < 2; ++dir) {
    Half& h = half_[dir];
    if (h.buffer) w_.buffers.give(std::move(h.buffer));
    if (h.pipe) PipePool::close(h.pipe);  // it may hold bytes nobody will read
    flush(dir);
  }
  if (established_) target_->stats->active.fetch_sub(1, std::memory_order_relaxed);
  w_.shared.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Connection::start() {
  if (!client_.is_open()) {
    delete this;
    return;
  }
  w_.connections.push_back(*this);
  // Pin the snapshot: the Target we pick stays valid however often the control thread publishes.
  pinned_ = w_.targets;
  if (!pinned_ || pinned_->eligible().empty()) {
    w_.shared.failed.fetch_add(1, std::memory_order_relaxed);
    if (w_.shared.no_target.allow())
      spdlog::error("no target configured: closing client connection{}", w_.shared.no_target.suppressed());
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
    const auto index = w_.balancer.pick(*pinned_, tried_);
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
        give_up();
        return;
    }
  }
  give_up();
}

// Our own non-blocking connect: socket(SOCK_NONBLOCK) + connect + wait for writability (SO_ERROR
// only when woken with an error). Asio's async_connect adds an ioctl(FIONBIO) before and a poll()
// and getsockopt after (measured: 3 of the 12 system calls this saves per new connection).
Connection::Attempt Connection::open_and_connect(const Target& target, int& error) {
  const auto& ep = target.endpoint;
  const int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          IPPROTO_TCP);
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
  upstream_.adopt(ep.protocol(), fd, ec);  // registers with epoll
  if (ec) {
    ::close(fd);
    return Attempt::shortage;
  }
  if (rc == 0) return Attempt::connected;
  const bool panic = pinned_->panic();
  deadline = Clock::now() + (panic ? w_.settings.panic_connect_timeout : w_.settings.connect_timeout);
  w_.watch_connect(*this);
  ++pending_;
  upstream_.wait_edge(w_.reactor, waiters_[0], asio::detail::reactor::write_op);
  return Attempt::waiting;
}

void Connection::connect_timed_out() noexcept {
  timed_out_ = true;
  error_code ignored;
  upstream_.cancel(ignored);  // on_connected sees operation_aborted
}

void Connection::on_connected(error_code ec) {
  --pending_;
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
  if (w_.shared.on_connect_failure) w_.shared.on_connect_failure(target, reason);
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
  established_ = true;
  auto& stats = *target_->stats;
  stats.total.fetch_add(1, std::memory_order_relaxed);
  stats.active.fetch_add(1, std::memory_order_relaxed);
  if (detects_dead_peers(w_.settings.tcp)) w_.watch_young(*this);
  const bool splice = w_.settings.relay.splice == config::SpliceMode::always;
  half_[0].splice = half_[1].splice = splice;
  // The target speaks second: wait for it, unless the wake-up that completed the connect said it
  // has spoken already (that edge is gone: read at the next turn). The client has usually sent its
  // first bytes while we connected: try them at once rather than paying a wait first. The wait
  // goes first so that an error in pump() cannot delete `this` under it.
  if (upstream_.last_events() & EPOLLIN) {
    ++pending_;
    waiters_[1].yield(w_.reactor);
  } else {
    wait(1, false);
  }
  pump(0);
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
    const Step step = half_[dir].splice ? splice_some(dir) : copy_some(dir);
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
  ++pending_;
  waiters_[dir].yield(w_.reactor);
}

void Connection::wait(int dir, bool for_write) {
  ++pending_;
  using reactor = asio::detail::reactor;
  if (for_write) sink(dir).wait_edge(w_.reactor, waiters_[dir], reactor::write_op);
  else source(dir).wait_edge(w_.reactor, waiters_[dir], reactor::read_op);
}

void Connection::woken(const Waiter& waiter, error_code ec) {
  if (!established_) return on_connected(ec);
  on_ready(&waiter == &waiters_[0] ? 0 : 1, ec);
}

void Waiter::complete(void* owner, asio::detail::operation* op, const error_code&, std::size_t) {
  auto& self = *static_cast<Waiter*>(op);
  if (owner) self.connection.woken(self, self.ec_);
  else self.connection.abandoned();
}

void Connection::on_ready(int dir, error_code ec) {
  --pending_;
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
  iovec iov{buffer.get(), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(from, &msg, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    const int err = errno;
    w_.buffers.give(std::move(buffer));
    if (n == 0) return Step::eof;
    return would_block(err) ? Step::drained : Step::error;
  }
  int unread = 1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ)
      std::memcpy(&unread, CMSG_DATA(c), sizeof unread);
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
  do n = ::splice(from, nullptr, pipe.write, nullptr, kSpliceChunk,
                  SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    const int err = errno;
    w_.pipes.give(pipe);  // nothing entered it
    if (n == 0) return Step::eof;
    return would_block(err) ? Step::drained : Step::error;
  }
  h.pipe = pipe;
  h.pending = static_cast<std::uint32_t>(n);
  h.sent = 0;
  return send_held(h, sink(dir).native_handle());
}

Forwarder::Forwarder(ForwarderSettings settings, ForwarderShared& shared)
    : impl_(std::make_unique<Impl>(std::move(settings), shared)) {
  ignore_sigpipe();
}

Forwarder::~Forwarder() = default;

tcp::endpoint Forwarder::listen(const tcp::endpoint& ep) {
  auto acceptor = std::make_unique<tcp::acceptor>(*impl_->io);
  error_code ec;
  acceptor->open(ep.protocol(), ec);
  if (!ec) {
    const int fd = acceptor->native_handle();
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // Like nginx: a v6 listener is v6 only, so [::]:6443 and 0.0.0.0:6443 can coexist.
    if (ep.protocol() == tcp::v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    tune_tcp(fd, impl_->listener_tcp);  // inherited by every accepted socket, as is:
    report_unread(fd);
    acceptor->bind(ep, ec);
  }
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::ostringstream where;
    where << ep;
    throw std::system_error(ec, "cannot listen on " + where.str());
  }
  const tcp::endpoint bound = acceptor->local_endpoint();
  asio::post(*impl_->io, [impl = impl_.get(), a = std::move(acceptor)]() mutable {
    impl->spawn(impl->accept_loop(std::move(a)));
  });
  return bound;
}

void Forwarder::unlisten(const tcp::endpoint& ep) {
  asio::post(*impl_->io, [impl = impl_.get(), ep] {
    for (tcp::acceptor* a : impl->acceptors) {
      error_code ec;
      if (a->local_endpoint(ec) == ep) a->close(ec);
    }
  });
}

void Forwarder::configure(ForwarderSettings next) {
  impl_->listener_tcp = next.tcp;
  asio::post(*impl_->io, [impl = impl_.get(), next = std::move(next)]() mutable {
    impl->balancer.set_policy(next.balance);
    impl->settings = std::move(next);
  });
}

void Forwarder::close_target(std::shared_ptr<const healthcheck::TargetStats> target) {
  asio::post(*impl_->io, [impl = impl_.get(), target = std::move(target)] {
    impl->for_each_connection([&](Connection& c) {
      if (c.connected_to(target.get())) c.abort();
    });
  });
}

const WorkerStats& Forwarder::stats() const noexcept { return impl_->stats; }

void Forwarder::run() {
  auto guard = asio::make_work_guard(*impl_->io);
  impl_->io->run();
}

void Forwarder::publish(TargetSetPtr next) {
  asio::post(*impl_->io, [impl = impl_.get(), next = std::move(next)]() mutable {
    impl->targets = std::move(next);
    impl->for_each_connection([&](Connection& c) {
      if (c.must_close(*impl->targets)) c.abort();
    });
  });
}

void Forwarder::stop_accepting() {
  asio::post(*impl_->io, [impl = impl_.get()] {
    for (tcp::acceptor* a : impl->acceptors) {
      error_code ignored;
      a->close(ignored);
    }
  });
}

void Forwarder::close_all() {
  asio::post(*impl_->io, [impl = impl_.get()] {
    impl->for_each_connection([](Connection& c) { c.abort(); });
  });
}

void Forwarder::stop() { impl_->io->stop(); }

}  // namespace apilb::lb
