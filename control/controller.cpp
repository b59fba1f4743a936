#include "control/controller.hpp"

#include "admin/server.hpp"
#include "base/coroutine.hpp"
#include "config/feed.hpp"
#include "control/feed_watcher.hpp"
#include "control/logging.hpp"
#include "healthcheck/supervisor.hpp"
#include "lb/engine.hpp"
#include "lb/forwarder.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace apilb::control {

namespace asio = boost::asio;
using admin::AdminServer;
using admin::AdminView;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;
using config::to_string;
using healthcheck::Origin;
using healthcheck::Target;
using lb::Forwarder;
using lb::ForwarderSettings;

namespace {

constexpr auto kDrainPoll = std::chrono::milliseconds(50);

tcp::endpoint endpoint_of(const config::Address& a) {
  return {asio::ip::make_address(a.host), a.port};
}

}  // namespace

struct Controller::Impl {
  Impl(config::Config c, Controller::Reload r)
      : config(std::move(c)), reload_source(std::move(r)) {}
  ~Impl() {
    admin.reset();
    feed_watcher.reset();
    // The supervisor's check loops live in io: stop them, then destroy their frames, then the rest.
    supervisor.reset();
    io.reset();
  }

  std::vector<healthcheck::TargetSpec> target_specs() const;
  void apply_targets();
  void read_feed(bool at_start);
  void watch_feed();
  std::filesystem::path last_good_path() const;
  void listen(const std::vector<config::Address>& addresses);
  void reload();
  AdminView admin_view() const;
  std::unique_ptr<AdminServer> make_admin(const config::Address& address);
  awaitable<void> handle_signals(asio::signal_set& signals);
  awaitable<void> drain();
  awaitable<void> close_after_drain(
      std::vector<std::shared_ptr<const healthcheck::TargetStats>> gone);

  config::Config config;
  config::Engine engine = config::Engine::epoll;  // chosen at start for every worker
  Controller::Reload reload_source;
  std::optional<asio::io_context> io{std::in_place, 1};
  lb::ForwarderShared shared;
  std::vector<std::unique_ptr<Forwarder>> workers;
  bool draining = false;  // SIGTERM: the acceptors are closed; /readyz says "not listening"
  std::vector<std::jthread> threads;
  std::unique_ptr<healthcheck::Supervisor> supervisor;
  std::unique_ptr<AdminServer> admin;
  std::unique_ptr<FeedWatcher> feed_watcher;
  config::Feed feed;                               // the last good targets_file
  std::map<std::string, tcp::endpoint> listeners;  // as configured -> as bound
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::uint64_t reloads_succeeded = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t feed_errors = 0;
  bool last_reload_ok = true;
};

// Runs on the control thread, like everything that reads the supervisor.
AdminView Controller::Impl::admin_view() const {
  AdminView v;
  for (const auto& [configured, bound] : listeners) v.listeners.push_back(to_string(bound));
  v.balance = config.balance;
  v.engine = engine;
  v.listening = !workers.empty() && !draining;
  v.panic = supervisor->panic();
  v.targets = supervisor->status();
  v.connections = shared.connections.load(std::memory_order_relaxed);
  v.rejected = shared.rejected.load(std::memory_order_relaxed);
  v.failed = shared.failed.load(std::memory_order_relaxed);
  v.replayed = shared.replayed.load(std::memory_order_relaxed);
  for (const auto& w : workers) {
    v.bytes_copied += w->stats().bytes_copied.load(std::memory_order_relaxed);
    v.bytes_spliced += w->stats().bytes_spliced.load(std::memory_order_relaxed);
  }
  v.reloads_succeeded = reloads_succeeded;
  v.reloads_failed = reloads_failed;
  v.feed_errors = feed_errors;
  v.bugs = base::bugs_reported();
  v.last_reload_ok = last_reload_ok;
  v.started = started;
  v.changes.assign(supervisor->changes().begin(), supervisor->changes().end());
  v.config = std::make_shared<const config::Config>(config);
  return v;
}

// Binds the admin API (throws std::system_error naming the address); it gathers on this thread.
std::unique_ptr<AdminServer> Controller::Impl::make_admin(const config::Address& address) {
  return std::make_unique<AdminServer>(endpoint_of(address), io->get_executor(),
                                       [this] { return admin_view(); });
}

// Static targets and the feed's, without repeats (a static target keeps its origin and takes the
// feed's drain flag); first_master when there are none.
std::vector<healthcheck::TargetSpec> Controller::Impl::target_specs() const {
  std::vector<healthcheck::TargetSpec> specs;
  for (const config::Address& a : config.targets) {
    const config::FeedEntry* in_feed = feed.find(a);
    specs.push_back({a, Origin::config, in_feed && in_feed->drain});
  }
  for (const config::FeedEntry& e : feed.targets)
    if (std::ranges::find(config.targets, e.address) == config.targets.end())
      specs.push_back({e.address, Origin::file, e.drain});
  if (specs.empty() && config.first_master)
    specs.push_back({*config.first_master, Origin::fallback});
  return specs;
}

// Hands the target list to the supervisor; connections to targets no longer in it are closed
// after drain_timeout (a removed master gets time to finish its streams, as with SIGTERM).
void Controller::Impl::apply_targets() {
  const auto before = supervisor->status();
  supervisor->set_targets(target_specs(), config.first_master);
  const auto after = supervisor->status();
  std::vector<std::shared_ptr<const healthcheck::TargetStats>> gone;
  for (const auto& old : before) {
    const bool kept =
        std::ranges::any_of(after, [&](const auto& t) { return t.stats == old.stats; });
    if (!kept) {
      spdlog::info("target {} ({}) removed: its connections close in {}", old.name,
                   healthcheck::to_string(old.origin),
                   config::format_duration(config.drain_timeout));
      gone.push_back(old.stats);
    }
  }
  if (!gone.empty())
    base::spawn(*io, close_after_drain(std::move(gone)), "closing removed targets' connections");
}

awaitable<void> Controller::Impl::close_after_drain(
    std::vector<std::shared_ptr<const healthcheck::TargetStats>> gone) {
  asio::steady_timer timer(*io, config.drain_timeout);
  co_await timer.async_wait(use_nothrow);
  for (const auto& stats : gone)
    for (auto& w : workers) w->close_target(stats);
}

// Reads targets_file and takes it, or keeps the last good list (config::accept_feed says which).
// The last good feed is kept on disk so a restart during a broken feed starts from it.
void Controller::Impl::read_feed(bool at_start) {
  const std::filesystem::path file = config.targets_file;
  auto decision = config::accept_feed(feed, config::load_feed(file), config, at_start);
  using Verdict = config::FeedDecision::Verdict;
  if (decision.verdict == Verdict::unchanged) return;
  if (decision.verdict == Verdict::take) {
    feed = std::move(decision.next);
    if (auto saved = config::write_feed_atomically(last_good_path(), feed); !saved)
      spdlog::warn("targets_file: cannot keep the last good list: {}", saved.error().message());
    spdlog::info("targets_file {}: {} targets", file.string(), feed.targets.size());
    if (!at_start) apply_targets();
    return;
  }
  ++feed_errors;
  spdlog::error("targets_file: {}; keeping the last good list ({} targets)", decision.why,
                feed.targets.size());
  // Refused at start-up: begin from what was last known to be good.
  if (at_start) {
    if (auto last = config::load_feed(last_good_path()); last && *last) {
      feed = std::move(**last);
      spdlog::warn("targets_file: starting from the last good list in {} ({} targets)",
                   last_good_path().string(), feed.targets.size());
    }
  }
}

// Where the last good feed is kept: systemd's StateDirectory= (the service may not write /etc), or
// next to the feed when there is none.
std::filesystem::path Controller::Impl::last_good_path() const {
  const std::filesystem::path feed_file = config.targets_file;
  const char* state = std::getenv("STATE_DIRECTORY");
  if (state && *state) {
    const std::string_view first(state, std::strcspn(state, ":"));  // systemd may list several
    return std::filesystem::path(first) / (feed_file.filename().string() + ".last-good");
  }
  return feed_file.string() + ".last-good";
}

void Controller::Impl::watch_feed() {
  feed_watcher.reset();
  if (config.targets_file.empty()) return;
  feed_watcher = std::make_unique<FeedWatcher>(io->get_executor(), config.targets_file,
                                               [this] { read_feed(false); });
}

namespace {

// Throws when another socket (another apiserver-lb, say) listens on `ep` already. Our listeners set
// SO_REUSEPORT, so the kernel would let a second instance of the same user bind the port and
// silently split the connections between the two; a bind without it is refused instead.
void ensure_unclaimed(const tcp::endpoint& ep) {
  const int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;  // the real bind will say what is wrong
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // TIME_WAIT leftovers are fine
  if (ep.protocol() == tcp::v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const bool taken =
      ::bind(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0 && errno == EADDRINUSE;
  ::close(fd);
  if (taken)
    throw std::system_error(
        std::make_error_code(std::errc::address_in_use),
        "cannot listen on " + to_string(ep) + ": another process listens there");
}

}  // namespace

// Makes the workers listen on exactly `addresses`: binds the new ones first (on every worker, all
// sharing the port the first one got for port 0), then closes the ones no longer wanted. Throws
// if a new address cannot be bound, after closing what it had bound for it.
void Controller::Impl::listen(const std::vector<config::Address>& addresses) {
  std::map<std::string, tcp::endpoint> next;
  std::vector<tcp::endpoint> opened;
  try {
    for (const config::Address& a : addresses) {
      const std::string key = a.to_string();
      if (const auto it = listeners.find(key); it != listeners.end()) {
        next.insert(*it);
        continue;
      }
      tcp::endpoint ep = endpoint_of(a);
      // A port we listen on already (under another address) is ours to share.
      const bool ours = std::ranges::any_of(
          listeners, [&](const auto& l) { return l.second.port() == ep.port(); });
      if (ep.port() != 0 && !ours) ensure_unclaimed(ep);
      for (auto& w : workers) {
        ep = w->listen(ep);
        if (&w == &workers.front()) opened.push_back(ep);
      }
      next.emplace(key, ep);
    }
  } catch (...) {
    for (const auto& ep : opened)
      for (auto& w : workers) w->unlisten(ep);
    throw;
  }
  for (const auto& [key, ep] : listeners)
    if (!next.contains(key)) {
      for (auto& w : workers) w->unlisten(ep);
      spdlog::info("stopped listening on {}", to_string(ep));
    }
  listeners = std::move(next);
}

// SIGHUP: the whole configuration again, validated before anything changes. A file that does not
// parse, TLS files that do not load or an address that cannot be bound leave everything as it was.
void Controller::Impl::reload() {
  auto next = reload_source ? reload_source() : config::Result<config::Config>(config);
  try {
    if (!next) throw std::runtime_error(next.error().message());
    healthcheck::Prober{next->health};  // loads ca/cert/key files, or throws naming them
    std::unique_ptr<AdminServer> next_admin;
    if (next->admin.listen != config.admin.listen && next->admin.listen) {
      admin.reset();  // its address may be the new one's
      next_admin = make_admin(*next->admin.listen);
    }
    listen(next->listen);
    if (next->admin.listen != config.admin.listen) admin = std::move(next_admin);
  } catch (const std::exception& e) {
    ++reloads_failed;
    last_reload_ok = false;
    spdlog::error("reload refused, nothing changed: {}", e.what());
    if (!admin && config.admin.listen) {
      // Bring the admin server back if the new one took its place and then failed.
      try {
        admin = make_admin(*config.admin.listen);
      } catch (const std::exception& again) {
        spdlog::error("admin API lost: {}", again.what());
      }
    }
    return;
  }
  if (next->threads != config.threads)
    spdlog::warn("threads: a change takes effect at the next restart; keeping {} workers",
                 workers.size());
  const bool feed_moved = next->targets_file != config.targets_file;
  config = std::move(*next);
  setup_logging(config.log);
  for (auto& w : workers) w->configure(ForwarderSettings::from(config));
  supervisor->reconfigure(config.health, config.upstream.on_target_down);
  if (feed_moved) {
    feed = {};
    watch_feed();
  }
  if (!config.targets_file.empty()) read_feed(feed_moved);
  apply_targets();
  ++reloads_succeeded;
  last_reload_ok = true;
  spdlog::info(
      "reloaded the configuration: {} listeners, {} targets, balance {}, health {} every {}",
      listeners.size(), supervisor->status().size(), config::to_string(config.balance),
      config::to_string(config.health.mode), config::format_duration(config.health.interval));
}

awaitable<void> Controller::Impl::handle_signals(asio::signal_set& signals) {
  for (;;) {
    auto [ec, signo] = co_await signals.async_wait(use_nothrow);
    if (ec) co_return;
    if (signo == SIGHUP) {
      spdlog::info("SIGHUP: reloading the configuration");
      reload();
      continue;
    }
    spdlog::info("{}: draining {} connections for up to {}ms",
                 signo == SIGTERM ? "SIGTERM" : "SIGINT", shared.connections.load(),
                 config.drain_timeout.count());
    co_await drain();
    co_return;
  }
}

// Stop accepting, let live connections finish up to drain_timeout, then close what is left.
awaitable<void> Controller::Impl::drain() {
  for (auto& w : workers) w->stop_accepting();
  draining = true;
  const auto deadline = std::chrono::steady_clock::now() + config.drain_timeout;
  asio::steady_timer timer(*io);
  while (shared.connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(kDrainPoll);
    co_await timer.async_wait(use_nothrow);
  }
  if (const auto left = shared.connections.load(); left > 0) {
    spdlog::warn("drain_timeout reached: closing {} connections", left);
    for (auto& w : workers) w->close_all();
    const auto hard_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (shared.connections.load() > 0 && std::chrono::steady_clock::now() < hard_deadline) {
      timer.expires_after(kDrainPoll);
      co_await timer.async_wait(use_nothrow);
    }
  }
  admin.reset();
  for (auto& w : workers) w->stop();
  io->stop();  // health checks included
  spdlog::info("stopped");
}

Controller::Controller(config::Config config, Reload reload)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(reload))) {}

Controller::~Controller() {
  for (auto& w : impl_->workers) w->stop();
  impl_->threads.clear();  // joins
}

int Controller::run() {
  Impl& s = *impl_;
  // Registered before anything can reach us (the listeners, the admin API): a SIGTERM from then
  // on drains instead of killing the process with the default action.
  asio::signal_set signals(*s.io, SIGINT, SIGTERM, SIGHUP);
  const unsigned threads =
      s.config.threads ? s.config.threads : std::max(1u, std::thread::hardware_concurrency());

  auto settings = ForwarderSettings::from(s.config);
  // APILB_RELAY_ENGINE overrides relay.engine, as a flag would (the test suite runs every e2e test
  // on both engines with it).
  config::Engine requested = s.config.relay.engine;
  if (const char* env = std::getenv("APILB_RELAY_ENGINE"); env && *env) {
    const auto parsed = config::parse_engine(env);
    if (!parsed)
      throw std::runtime_error(
          fmt::format("APILB_RELAY_ENGINE: \"{}\" is not one of auto, uring, epoll", env));
    requested = *parsed;
  }
  const lb::EngineChoice choice = lb::choose_engine(requested);  // throws: uring unavailable
  if (!choice.fallback_reason.empty())
    spdlog::warn("relay.engine auto: io_uring unavailable ({}); using epoll",
                 choice.fallback_reason);
  s.engine = settings.relay.engine = choice.engine;
  for (unsigned i = 0; i < threads; ++i)
    s.workers.push_back(std::make_unique<Forwarder>(settings, s.shared));
  s.listen(s.config.listen);

  // Workers report connect failures; the supervisor, on the control thread, counts them.
  s.shared.on_connect_failure = [&s](const Target& t, std::string_view reason) {
    asio::post(*s.io, [&s, stats = t.stats, reason = std::string(reason)] {
      if (s.supervisor) s.supervisor->report_connect_failure(stats.get(), reason);
    });
  };
  s.supervisor = std::make_unique<healthcheck::Supervisor>(s.io->get_executor(), s.config.health,
                                                           s.config.upstream.on_target_down,
                                                           [&s](healthcheck::TargetSetPtr set) {
                                                             for (auto& w : s.workers)
                                                               w->publish(set);
                                                           });
  if (!s.config.targets_file.empty()) {
    s.read_feed(true);
    s.watch_feed();
  }
  s.supervisor->set_targets(s.target_specs(), s.config.first_master);
  std::string summary;
  for (const Target& t : s.supervisor->current()->targets())
    summary += fmt::format("{}{} ({})", summary.empty() ? "" : ", ", t.name,
                           healthcheck::to_string(t.origin));

  if (s.config.admin.listen) {
    s.admin = s.make_admin(*s.config.admin.listen);
    spdlog::info("admin API on http://{}/ (healthz, readyz, status, metrics)",
                 to_string(s.admin->endpoint()));
  }
  spdlog::info("apiserver-lb {} listening on {} with {} worker threads ({}), balance {}",
               APILB_VERSION, fmt::format("{}", fmt::join(s.admin_view().listeners, ", ")), threads,
               config::to_string(s.engine), config::to_string(s.config.balance));
  spdlog::info("targets: {}; health checks: {} every {}, rise {}, fall {}",
               summary.empty() ? "none" : summary, config::to_string(s.config.health.mode),
               config::format_duration(s.config.health.interval), s.config.health.rise,
               s.config.health.fall);

  for (auto& w : s.workers) s.threads.emplace_back([&w] { w->run(); });
  base::spawn(*s.io, s.handle_signals(signals), "the signal handler");
  s.io->run();
  s.threads.clear();
  return 0;
}

}  // namespace apilb::control
