#include "control/controller.hpp"

#include "admin/server.hpp"
#include "base/coroutine.hpp"
#include "config/feed.hpp"
#include "control/discovery_source.hpp"
#include "control/feed_watcher.hpp"
#include "control/logging.hpp"
#include "control/upgrade.hpp"
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

// A listener of `listeners`: its pool of connections, and the checks its targets follow.
struct ExtraPool {
  config::Listener spec;
  std::unique_ptr<healthcheck::Supervisor> supervisor;  // its own checks; null: health_from
  std::size_t follows = 0;  // health_from: the pool whose checks it follows (0: the main one)
  healthcheck::TargetSetPtr current;
  std::map<std::string, std::shared_ptr<healthcheck::TargetStats>> stats;  // by target name
};

// A listen address as bound on every worker.
struct Listened {
  tcp::endpoint endpoint;
  std::vector<int> fds;  // one per worker at least; handed over by an upgrade
  std::size_t pool = 0;
};

struct Controller::Impl {
  Impl(config::Config c, Controller::Reload r, Startup s)
      : config(std::move(c)), reload_source(std::move(r)), startup(std::move(s)) {}
  ~Impl() {
    admin.reset();
    upgrades.reset();
    feed_watcher.reset();
    discovery.reset();
    // The supervisors' check loops live in io: stop them, then destroy their frames, the rest.
    extra.clear();
    supervisor.reset();
    io.reset();
  }

  std::vector<healthcheck::TargetSpec> target_specs(std::uint16_t port = 0) const;
  void apply_targets();
  void read_feed(bool at_start);
  void watch_feed();
  void start_discovery(std::optional<std::vector<discovery::Endpoint>> start);
  discovery::HealthView health_view() const;
  tcp::endpoint own_listener() const;
  std::filesystem::path last_good_path() const;
  std::vector<std::pair<config::Address, std::size_t>> listen_addresses(
      const config::Config& c) const;
  void listen(const std::vector<std::pair<config::Address, std::size_t>>& addresses);
  Listened open_listener(const config::Address& address, std::size_t pool);
  void make_pools();
  void publish(std::size_t pool, healthcheck::TargetSetPtr set);
  std::vector<healthcheck::Supervisor*> supervisors() const;
  std::vector<std::shared_ptr<const healthcheck::TargetStats>> all_target_stats() const;
  void start_upgrades();
  Inherited handover() const;
  void handed_over(pid_t next);
  void rebalance_tick();
  awaitable<void> rebalance_loop();
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
  Startup startup;
  std::vector<ExtraPool> extra;  // pool i + 1 is listeners[i]
  std::unique_ptr<UpgradeServer> upgrades;
  pid_t handed_to = 0;  // the process an upgrade handed the listeners to
  // Rebalancing: since when each pool's busiest target is over the threshold, and the budget of
  // closes (rate per second, saved up to one second's worth).
  std::map<std::size_t, std::chrono::steady_clock::time_point> over_since;
  double rebalance_budget = 0;
  std::optional<asio::io_context> io{std::in_place, 1};
  lb::ForwarderShared shared;
  std::vector<std::unique_ptr<Forwarder>> workers;
  bool draining = false;  // SIGTERM: the acceptors are closed; /readyz says "not listening"
  std::vector<std::jthread> threads;
  std::unique_ptr<healthcheck::Supervisor> supervisor;
  std::unique_ptr<AdminServer> admin;
  std::unique_ptr<FeedWatcher> feed_watcher;
  config::Feed feed;                           // the last good targets_file
  std::unique_ptr<DiscoverySource> discovery;  // discovery.kubernetes
  std::map<std::string, Listened> listeners;   // as configured -> as bound
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::uint64_t reloads_succeeded = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t feed_errors = 0;
  bool last_reload_ok = true;
};

// Runs on the control thread, like everything that reads the supervisor.
AdminView Controller::Impl::admin_view() const {
  AdminView v;
  for (const auto& [configured, l] : listeners) v.listeners.push_back(to_string(l.endpoint));
  v.balance = config.balance;
  v.engine = engine;
  v.listening = !workers.empty() && !draining;
  v.panic = supervisor->panic();
  v.targets = supervisor->status();
  for (const ExtraPool& pool : extra) {
    if (pool.supervisor) {
      std::ranges::move(pool.supervisor->status(), std::back_inserter(v.targets));
      continue;
    }
    for (const Target& t : pool.current ? pool.current->targets() : std::span<const Target>{}) {
      healthcheck::TargetStatus& status = v.targets.emplace_back();
      status.name = t.name;
      status.origin = t.origin;
      status.state = t.state;
      status.stats = t.stats;
      status.sources = {t.origin};
    }
  }
  v.connections = shared.connections.load(std::memory_order_relaxed);
  v.rejected = shared.rejected.load(std::memory_order_relaxed);
  v.failed = shared.failed.load(std::memory_order_relaxed);
  v.replayed = shared.replayed.load(std::memory_order_relaxed);
  v.rebalanced = shared.rebalanced.load(std::memory_order_relaxed);
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
  v.pid = ::getpid();
  v.changes.assign(supervisor->changes().begin(), supervisor->changes().end());
  if (discovery) v.discovery = discovery->status();
  v.config = std::make_shared<const config::Config>(config);
  return v;
}

// Binds the admin API (throws std::system_error naming the address); it gathers on this thread.
std::unique_ptr<AdminServer> Controller::Impl::make_admin(const config::Address& address) {
  return std::make_unique<AdminServer>(endpoint_of(address), io->get_executor(),
                                       [this] { return admin_view(); });
}

// Static targets, the feed's and the discovered ones, without repeats: a target named by several
// sources lists them all, takes the first as its origin and drains if any of them says so (the
// feed's drain flag, an endpoint not ready or terminating). first_master when there are none.
// `port`: on that port of each (a listener of `listeners`). At start after an upgrade, each in the
// state the previous process knew.
std::vector<healthcheck::TargetSpec> Controller::Impl::target_specs(std::uint16_t port) const {
  std::vector<healthcheck::TargetSpec> specs;
  const auto add = [&](const config::Address& a, Origin origin, bool drain) {
    const auto same = std::ranges::find(specs, a, &healthcheck::TargetSpec::address);
    if (same == specs.end()) {
      specs.push_back({.address = a,
                       .origin = origin,
                       .drain = drain,
                       .inherited = healthcheck::TargetState::unknown,
                       .sources = {origin}});
      return;
    }
    same->drain = same->drain || drain;
    same->sources.push_back(origin);
  };
  for (const config::Address& a : config.targets) add(a, Origin::config, false);
  for (const config::FeedEntry& e : feed.targets) add(e.address, Origin::file, e.drain);
  if (discovery)
    for (const discovery::Endpoint& e : discovery->targets())
      add(e.address, Origin::discovery, !e.ready || e.terminating);
  if (specs.empty() && config.first_master) add(*config.first_master, Origin::fallback, false);
  for (auto& spec : specs) {
    if (port) spec.address.port = port;
    if (startup.takeover)
      if (const auto it = startup.takeover->inherited().health.find(spec.address.to_string());
          it != startup.takeover->inherited().health.end())
        spec.inherited = it->second;
  }
  return specs;
}

// Hands the target list to the supervisors; connections to targets no longer in it are closed
// after drain_timeout (a removed master gets time to finish its streams, as with SIGTERM).
void Controller::Impl::apply_targets() {
  const auto before_status = admin_view().targets;
  supervisor->set_targets(target_specs(), config.first_master);
  for (ExtraPool& pool : extra) {
    if (!pool.supervisor) continue;
    auto first_master = config.first_master;
    if (first_master) first_master->port = pool.spec.port();
    pool.supervisor->set_targets(target_specs(pool.spec.port()), first_master);
  }
  const auto after = all_target_stats();
  std::vector<std::shared_ptr<const healthcheck::TargetStats>> gone;
  for (const auto& old : before_status) {
    if (std::ranges::find(after, old.stats) != after.end()) continue;
    spdlog::info("target {} ({}) removed: its connections close in {}", old.name,
                 healthcheck::to_string(old.origin), config::format_duration(config.drain_timeout));
    gone.push_back(old.stats);
  }
  if (!gone.empty())
    base::spawn(*io, close_after_drain(std::move(gone)), "closing removed targets' connections");
}

// The counters of every target of every pool.
std::vector<std::shared_ptr<const healthcheck::TargetStats>> Controller::Impl::all_target_stats()
    const {
  std::vector<std::shared_ptr<const healthcheck::TargetStats>> out;
  for (const auto& t : admin_view().targets) out.push_back(t.stats);
  return out;
}

std::vector<healthcheck::Supervisor*> Controller::Impl::supervisors() const {
  std::vector<healthcheck::Supervisor*> out{supervisor.get()};
  for (const ExtraPool& pool : extra)
    if (pool.supervisor) out.push_back(pool.supervisor.get());
  return out;
}

// Sends pool `index`'s snapshot to the workers, and derives the snapshots of the pools that follow
// its checks (health_from).
void Controller::Impl::publish(std::size_t index, healthcheck::TargetSetPtr set) {
  for (auto& w : workers) w->publish(set, index);
  if (index > 0) extra[index - 1].current = set;
  for (std::size_t i = 0; i < extra.size(); ++i) {
    ExtraPool& pool = extra[i];
    if (pool.supervisor || pool.follows != index) continue;
    std::map<std::string, std::shared_ptr<healthcheck::TargetStats>> kept;
    auto derived = set->on_port(pool.spec.port(), [&](const std::string& name) {
      auto it = pool.stats.find(name);
      auto stats =
          it != pool.stats.end() ? it->second : std::make_shared<healthcheck::TargetStats>();
      kept[name] = stats;
      return stats;
    });
    pool.stats = std::move(kept);
    publish(i + 1, std::move(derived));
  }
}

// One pool per entry of `listeners`: its own supervisor, or the pool whose checks it follows.
void Controller::Impl::make_pools() {
  for (const config::Listener& spec : config.listeners) {
    ExtraPool& pool = extra.emplace_back();
    pool.spec = spec;
    if (spec.health_from) {
      const auto source =
          std::ranges::find(config.listeners, *spec.health_from, &config::Listener::port);
      pool.follows = source == config.listeners.end()
                         ? 0
                         : static_cast<std::size_t>(source - config.listeners.begin()) + 1;
      continue;
    }
    const std::size_t index = extra.size();
    pool.supervisor = std::make_unique<healthcheck::Supervisor>(
        io->get_executor(), spec.health, config.upstream.on_target_down,
        [this, index](healthcheck::TargetSetPtr set) { publish(index, std::move(set)); });
  }
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
  const std::string state = config::state_directory();
  if (!state.empty())
    return std::filesystem::path(state) / (feed_file.filename().string() + ".last-good");
  return feed_file.string() + ".last-good";
}

// Starts (or, on a reload, restarts) the watch of the cluster's EndpointSlices. `start`: the
// discovered list in force; nullopt at start: the last good one kept on disk.
// Throws when the credentials do not load, leaving the running watch as it is.
void Controller::Impl::start_discovery(std::optional<std::vector<discovery::Endpoint>> start) {
  if (!config.discovery.kubernetes) {
    discovery.reset();
    return;
  }
  auto next = std::make_unique<DiscoverySource>(
      io->get_executor(), config, std::move(start), [this] { return own_listener(); },
      [this] { return health_view(); }, [this] { apply_targets(); });
  discovery = std::move(next);
}

// What the discovery gate weighs a change against: the main pool's checks.
discovery::HealthView Controller::Impl::health_view() const {
  auto status = std::make_shared<std::vector<healthcheck::TargetStatus>>(supervisor->status());
  const auto up = [status](const config::Address& a) {
    const std::string name = a.to_string();
    return std::ranges::any_of(*status, [&](const healthcheck::TargetStatus& t) {
      return t.name == name && t.state == healthcheck::TargetState::up;
    });
  };
  const auto elsewhere = [this](const config::Address& a) {
    return std::ranges::find(config.targets, a) != config.targets.end() || feed.find(a) != nullptr;
  };
  return {.up = up,
          .elsewhere = elsewhere,
          .up_total = static_cast<std::size_t>(std::ranges::count(
              *status, healthcheck::TargetState::up, &healthcheck::TargetStatus::state))};
}

// Where discovery connects: the first main listen address as bound (loopback for a wildcard), so
// it reaches whichever master the balancer picks.
tcp::endpoint Controller::Impl::own_listener() const {
  const auto it = listeners.find(config.listen.front().to_string());
  tcp::endpoint ep =
      it != listeners.end() ? it->second.endpoint : endpoint_of(config.listen.front());
  if (ep.address().is_unspecified())
    ep.address(ep.address().is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                                    : asio::ip::address(asio::ip::address_v4::loopback()));
  return ep;
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

// The listen addresses of every pool: the main listener's (pool 0), then each of `listeners`.
std::vector<std::pair<config::Address, std::size_t>> Controller::Impl::listen_addresses(
    const config::Config& c) const {
  std::vector<std::pair<config::Address, std::size_t>> out;
  for (const config::Address& a : c.listen) out.emplace_back(a, 0);
  for (std::size_t i = 0; i < c.listeners.size(); ++i)
    for (const config::Address& a : c.listeners[i].listen) out.emplace_back(a, i + 1);
  return out;
}

// Binds `address` on every worker (all sharing the port the first one got for port 0), or takes
// the sockets an upgrade handed over for it: one a worker, the surplus spread over the workers
// (a socket nobody accepts on would strand its backlog), a new one for each worker left over.
Listened Controller::Impl::open_listener(const config::Address& address, std::size_t pool) {
  Listened l{endpoint_of(address), {}, pool};
  std::vector<int> inherited;
  if (startup.takeover) {
    auto& handed = startup.takeover->inherited().listeners;
    if (auto it = handed.find(address.to_string()); it != handed.end()) {
      inherited = std::move(it->second);
      handed.erase(it);
    }
  }
  // A port we listen on already (under another address) is ours to share.
  const bool ours = std::ranges::any_of(listeners, [&](const auto& entry) {
    return entry.second.endpoint.port() == l.endpoint.port();
  });
  if (inherited.empty() && l.endpoint.port() != 0 && !ours) ensure_unclaimed(l.endpoint);
  for (std::size_t i = 0; i < std::max(workers.size(), inherited.size()); ++i) {
    Forwarder& w = *workers[i % workers.size()];
    const lb::Listening got =
        i < inherited.size() ? w.adopt(inherited[i], pool) : w.listen(l.endpoint, pool);
    l.endpoint = got.endpoint;
    l.fds.push_back(got.fd);
  }
  return l;
}

// Makes the workers listen on exactly `addresses`: binds the new ones first, then closes the ones
// no longer wanted. Throws if a new address cannot be bound, after closing what it had bound for
// it.
void Controller::Impl::listen(
    const std::vector<std::pair<config::Address, std::size_t>>& addresses) {
  std::map<std::string, Listened> next;
  std::vector<tcp::endpoint> opened;
  try {
    for (const auto& [a, pool] : addresses) {
      const std::string key = a.to_string();
      if (const auto it = listeners.find(key); it != listeners.end()) {
        if (it->second.pool != pool)
          throw std::runtime_error(key + " moves to another listener: that takes an upgrade");
        next.insert(*it);
        continue;
      }
      Listened l = open_listener(a, pool);
      opened.push_back(l.endpoint);
      next.emplace(key, std::move(l));
    }
  } catch (...) {
    for (const auto& ep : opened)
      for (auto& w : workers) w->unlisten(ep);
    throw;
  }
  for (const auto& [key, l] : listeners) {
    if (next.contains(key)) continue;
    for (auto& w : workers) w->unlisten(l.endpoint);
    spdlog::info("stopped listening on {}", to_string(l.endpoint));
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
    // New health settings apply to every pool; a new pool layout needs new pools.
    const auto same_pool = [](const config::Listener& a, const config::Listener& b) {
      return a.port() == b.port() && a.health_from == b.health_from;
    };
    if (!std::ranges::equal(next->listeners, config.listeners, same_pool)) {
      spdlog::warn(
          "listeners: new target ports or health_from take effect at the next upgrade "
          "(apiserver-lb upgrade); keeping the listeners as they are");
      next->listeners = config.listeners;
    }
    for (const config::Listener& l : next->listeners) healthcheck::Prober{l.health};
    if (next->discovery.kubernetes)
      if (auto creds = DiscoverySource::credentials(*next); !creds)
        throw std::runtime_error(creds.error().message());
    std::unique_ptr<AdminServer> next_admin;
    if (next->admin.listen != config.admin.listen && next->admin.listen) {
      admin.reset();  // its address may be the new one's
      next_admin = make_admin(*next->admin.listen);
    }
    listen(listen_addresses(*next));
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
  for (std::size_t i = 0; i < extra.size(); ++i)
    if (extra[i].supervisor)
      extra[i].supervisor->reconfigure(config.listeners[i].health, config.upstream.on_target_down);
  if (feed_moved) {
    feed = {};
    watch_feed();
  }
  if (!config.targets_file.empty()) read_feed(feed_moved);
  // The watch starts again with the new settings and credentials (a rotated client certificate),
  // from the discovered list in force.
  std::optional<std::vector<discovery::Endpoint>> discovered;
  if (discovery) discovered = discovery->targets();
  try {
    start_discovery(std::move(discovered));
  } catch (const std::exception& e) {  // the kubeconfig changed again since it was checked above
    spdlog::error("discovery: {}; the running watch goes on with the old credentials", e.what());
  }
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
    if (draining) {
      spdlog::info("signal {} ignored: draining{}", signo,
                   handed_to ? fmt::format(" after the upgrade to pid {}", handed_to) : "");
      continue;
    }
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

// The upgrade socket: `apiserver-lb upgrade` starts the binary again and this process hands over.
void Controller::Impl::start_upgrades() {
  const int inherited =
      startup.takeover ? std::exchange(startup.takeover->inherited().control, -1) : -1;
  UpgradeServer::Hooks hooks{
      .refuse = [this]() -> std::string {
        if (handed_to) return fmt::format("this process handed over to pid {} already", handed_to);
        if (draining) return "this process is draining (SIGTERM)";
        return {};
      },
      .handover = [this] { return handover(); },
      .handed_over = [this](pid_t next) { handed_over(next); },
  };
  upgrades =
      std::make_unique<UpgradeServer>(io->get_executor(), config.upgrade.socket_path(), inherited,
                                      startup.launch, config.upgrade.timeout, std::move(hooks));
}

// What an upgrade hands over: every listening socket, and the state of every target.
Inherited Controller::Impl::handover() const {
  Inherited out;
  for (const auto& [key, l] : listeners) out.listeners[key] = l.fds;
  if (admin && config.admin.listen) {
    out.admin = admin->native_handle();
    out.admin_address = config.admin.listen->to_string();
  }
  for (const healthcheck::Supervisor* s : supervisors())
    for (const auto& t : s->status()) out.health[t.name] = t.state;
  return out;
}

// The new process accepts on every socket: stop accepting here (the sockets live on there), let
// systemd follow the new process, and drain.
void Controller::Impl::handed_over(pid_t next) {
  handed_to = next;
  upgrades->stop();
  admin.reset();
  notify_systemd(fmt::format("MAINPID={}\nREADY=1", next));
  spdlog::info("upgrade: pid {} serves now; draining {} connections for up to {}", next,
               shared.connections.load(), config::format_duration(config.drain_timeout));
  base::spawn(*io, drain(), "the drain after an upgrade");
}

// Rebalancing, once a second: in each pool whose busiest target has held more than `threshold`
// times the fair share for `after`, close its oldest connections, at most `rate` a second and
// never more than it holds above the fair share. Never in panic mode, never on a target that is
// not up (draining ones empty themselves).
void Controller::Impl::rebalance_tick() {
  const config::Rebalance& r = config.rebalance;
  const auto now = std::chrono::steady_clock::now();
  rebalance_budget = std::min(rebalance_budget + r.rate, std::max(r.rate, 1.0));
  std::vector<healthcheck::TargetSetPtr> sets{supervisor->current()};
  for (const ExtraPool& pool : extra) sets.push_back(pool.current);
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const auto& set = sets[i];
    if (!set || set->panic() || draining) {
      over_since.erase(i);
      continue;
    }
    std::int64_t total = 0;
    int up = 0;
    const Target* busiest = nullptr;
    for (const Target& t : set->targets()) {
      const auto active = t.stats->active.load(std::memory_order_relaxed);
      total += active;
      if (t.state != healthcheck::TargetState::up) continue;
      ++up;
      if (!busiest || active > busiest->stats->active.load(std::memory_order_relaxed)) busiest = &t;
    }
    if (!busiest || up < 2) {
      over_since.erase(i);
      continue;
    }
    const double fair = static_cast<double>(total) / up;
    const auto held = busiest->stats->active.load(std::memory_order_relaxed);
    if (held <= r.threshold * fair || held - fair < 1) {
      over_since.erase(i);
      continue;
    }
    const auto since = over_since.try_emplace(i, now).first->second;
    if (now - since < r.after) continue;
    const int closes =
        static_cast<int>(std::min({rebalance_budget, static_cast<double>(held) - std::ceil(fair)}));
    if (closes <= 0) continue;
    rebalance_budget -= closes;
    spdlog::info(
        "rebalance: {} holds {} connections, {:.1f}x its fair share of {:.1f}; closing "
        "its {} oldest",
        busiest->name, held, held / fair, fair, closes);
    auto budget = std::make_shared<std::atomic<int>>(closes);
    for (auto& w : workers) w->close_oldest(busiest->stats, budget);
  }
}

awaitable<void> Controller::Impl::rebalance_loop() {
  asio::steady_timer timer(*io);
  while (!draining) {
    timer.expires_after(std::chrono::seconds(1));
    co_await timer.async_wait(use_nothrow);
    if (config.rebalance.enabled) rebalance_tick();
  }
}

Controller::Controller(config::Config config, Reload reload, Startup startup)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(reload), std::move(startup))) {}

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
  s.listen(s.listen_addresses(s.config));

  // Workers report connect failures; the supervisor of the target's pool, on the control thread,
  // counts them (a pool that follows another's checks has none: its failures are only counted).
  s.shared.on_connect_failure = [&s](const Target& t, std::string_view reason, bool refused) {
    asio::post(*s.io, [&s, stats = t.stats, reason = std::string(reason), refused] {
      for (healthcheck::Supervisor* supervisor : s.supervisors())
        supervisor->report_connect_failure(stats.get(), reason, refused);
    });
  };
  s.supervisor = std::make_unique<healthcheck::Supervisor>(
      s.io->get_executor(), s.config.health, s.config.upstream.on_target_down,
      [&s](healthcheck::TargetSetPtr set) { s.publish(0, std::move(set)); });
  s.make_pools();
  if (!s.config.targets_file.empty()) {
    s.read_feed(true);
    s.watch_feed();
  }
  s.start_discovery(std::nullopt);
  s.apply_targets();
  std::string summary;
  for (const Target& t : s.supervisor->current()->targets())
    summary += fmt::format("{}{} ({}{})", summary.empty() ? "" : ", ", t.name,
                           healthcheck::to_string(t.origin),
                           t.state == healthcheck::TargetState::unknown
                               ? ""
                               : ", " + std::string(healthcheck::to_string(t.state)));

  Takeover* takeover = s.startup.takeover;
  if (takeover && takeover->inherited().admin >= 0) {
    const int fd = std::exchange(takeover->inherited().admin, -1);
    if (s.config.admin.listen &&
        takeover->inherited().admin_address == s.config.admin.listen->to_string())
      s.admin =
          std::make_unique<AdminServer>(fd, s.io->get_executor(), [&s] { return s.admin_view(); });
    else ::close(fd);
  }
  if (!s.admin && s.config.admin.listen) s.admin = s.make_admin(*s.config.admin.listen);
  if (s.admin)
    spdlog::info("admin API on http://{}/ (healthz, readyz, status, metrics)",
                 to_string(s.admin->endpoint()));
  s.start_upgrades();
  if (takeover) {
    for (const auto& [address, fds] : takeover->inherited().listeners) {
      spdlog::info("upgrade: {} is no longer configured; not listening there", address);
      for (int fd : fds) ::close(fd);
    }
    takeover->inherited().listeners.clear();
  }
  spdlog::info("apiserver-lb {} listening on {} with {} worker threads ({}), balance {}",
               APILB_VERSION, fmt::format("{}", fmt::join(s.admin_view().listeners, ", ")), threads,
               config::to_string(s.engine), config::to_string(s.config.balance));
  spdlog::info("targets: {}; health checks: {} every {}, rise {}, fall {}",
               summary.empty() ? "none" : summary, config::to_string(s.config.health.mode),
               config::format_duration(s.config.health.interval), s.config.health.rise,
               s.config.health.fall);

  for (auto& w : s.workers) s.threads.emplace_back([&w] { w->run(); });
  if (takeover) {
    // Accepting on every socket now: the previous process may stop (it tells systemd our pid).
    try {
      takeover->serving();
      spdlog::info("upgrade: took over from the previous process");
    } catch (const std::exception& e) {
      spdlog::warn("upgrade: {}; serving anyway", e.what());
    }
  } else {
    notify_systemd("READY=1");
  }
  base::spawn(*s.io, s.handle_signals(signals), "the signal handler");
  base::spawn(*s.io, s.rebalance_loop(), "the rebalancer");
  s.io->run();
  s.threads.clear();
  return 0;
}

}  // namespace apilb::control
