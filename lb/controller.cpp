#include "lb/controller.hpp"

#include "healthcheck/supervisor.hpp"
#include "lb/admin.hpp"
#include "lb/forwarder.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <thread>

namespace apilb::lb {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using healthcheck::Origin;
using healthcheck::Target;

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr auto kDrainPoll = std::chrono::milliseconds(50);

std::string to_string(const tcp::endpoint& ep) {
  const auto host = ep.address().to_string();
  return ep.address().is_v6() ? fmt::format("[{}]:{}", host, ep.port())
                              : fmt::format("{}:{}", host, ep.port());
}

}  // namespace

struct Controller::Impl {
  explicit Impl(config::Config c) : config(std::move(c)) {}
  ~Impl() {
    admin.reset();
    // The supervisor's check loops live in io: stop them, then destroy their frames, then the rest.
    supervisor.reset();
    io.reset();
  }

  std::vector<healthcheck::TargetSpec> target_specs() const;
  AdminView admin_view() const;
  awaitable<void> handle_signals();
  awaitable<void> drain();

  config::Config config;
  std::optional<asio::io_context> io{std::in_place, 1};
  ForwarderShared shared;
  std::vector<std::unique_ptr<Forwarder>> workers;
  std::vector<std::jthread> threads;
  std::unique_ptr<healthcheck::Supervisor> supervisor;
  std::unique_ptr<AdminServer> admin;
  std::vector<std::string> listening;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::uint64_t reloads_succeeded = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t feed_errors = 0;
};

// Runs on the control thread, like everything that reads the supervisor.
AdminView Controller::Impl::admin_view() const {
  AdminView v;
  v.listeners = listening;
  v.balance = config.balance;
  v.listening = !workers.empty();
  v.panic = supervisor->panic();
  v.targets = supervisor->status();
  v.connections = shared.connections.load(std::memory_order_relaxed);
  v.rejected = shared.rejected.load(std::memory_order_relaxed);
  v.failed = shared.failed.load(std::memory_order_relaxed);
  for (const auto& w : workers) {
    v.bytes_copied += w->stats().bytes_copied.load(std::memory_order_relaxed);
    v.bytes_spliced += w->stats().bytes_spliced.load(std::memory_order_relaxed);
  }
  v.reloads_succeeded = reloads_succeeded;
  v.reloads_failed = reloads_failed;
  v.feed_errors = feed_errors;
  v.started = started;
  return v;
}

// Static targets, or first_master when there are none.
std::vector<healthcheck::TargetSpec> Controller::Impl::target_specs() const {
  std::vector<healthcheck::TargetSpec> specs;
  for (const config::Address& a : config.targets) specs.push_back({a, Origin::config});
  if (specs.empty() && config.first_master) specs.push_back({*config.first_master, Origin::fallback});
  return specs;
}

awaitable<void> Controller::Impl::handle_signals() {
  asio::signal_set signals(*io, SIGINT, SIGTERM, SIGHUP);
  for (;;) {
    auto [ec, signo] = co_await signals.async_wait(use_nothrow);
    if (ec) co_return;
    if (signo == SIGHUP) {
      spdlog::warn("SIGHUP: configuration reload is not available in this version; ignored");
      continue;
    }
    spdlog::info("{}: draining {} connections for up to {}ms", signo == SIGTERM ? "SIGTERM" : "SIGINT",
                 shared.connections.load(), config.drain_timeout.count());
    co_await drain();
    co_return;
  }
}

// Stop accepting, let live connections finish up to drain_timeout, then close what is left.
awaitable<void> Controller::Impl::drain() {
  for (auto& w : workers) w->stop_accepting();
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

Controller::Controller(config::Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Controller::~Controller() {
  for (auto& w : impl_->workers) w->stop();
  impl_->threads.clear();  // joins
}

int Controller::run() {
  Impl& s = *impl_;
  const unsigned threads =
      s.config.threads ? s.config.threads : std::max(1u, std::thread::hardware_concurrency());

  std::vector<tcp::endpoint> endpoints;
  for (const config::Address& a : s.config.listen)
    endpoints.emplace_back(asio::ip::make_address(a.host), a.port);

  const auto settings = ForwarderSettings::from(s.config);
  for (unsigned i = 0; i < threads; ++i) {
    s.workers.push_back(std::make_unique<Forwarder>(settings, s.shared));
    s.workers.back()->listen(endpoints);
    // Port 0 means "any": the other workers share the port the first one got.
    if (i == 0) endpoints = s.workers.front()->local_endpoints();
  }

  // Workers report connect failures; the supervisor, on the control thread, counts them.
  s.shared.on_connect_failure = [&s](const Target& t, std::string_view reason) {
    asio::post(*s.io, [&s, stats = t.stats, reason = std::string(reason)] {
      if (s.supervisor) s.supervisor->report_connect_failure(stats.get(), reason);
    });
  };
  s.supervisor = std::make_unique<healthcheck::Supervisor>(
      s.io->get_executor(), s.config.health, s.config.upstream.on_target_down,
      [&s](healthcheck::TargetSetPtr set) {
        for (auto& w : s.workers) w->publish(set);
      });
  s.supervisor->set_targets(s.target_specs());
  std::string summary;
  for (const Target& t : s.supervisor->current()->targets())
    summary += fmt::format("{}{} ({})", summary.empty() ? "" : ", ", t.name,
                           healthcheck::to_string(t.origin));

  for (const auto& ep : endpoints) s.listening.push_back(to_string(ep));
  if (s.config.admin.listen) {
    const auto& a = *s.config.admin.listen;
    s.admin = std::make_unique<AdminServer>(tcp::endpoint(asio::ip::make_address(a.host), a.port),
                                            s.io->get_executor(), [&s] { return s.admin_view(); });
    spdlog::info("admin API on http://{}/ (healthz, readyz, status, metrics)",
                 to_string(s.admin->endpoint()));
  }
  spdlog::info("apiserver-lb {} listening on {} with {} worker threads, balance {}", APILB_VERSION,
               fmt::format("{}", fmt::join(s.listening, ", ")), threads,
               config::to_string(s.config.balance));
  spdlog::info("targets: {}; health checks: {} every {}, rise {}, fall {}",
               summary.empty() ? "none" : summary, config::to_string(s.config.health.mode),
               config::format_duration(s.config.health.interval), s.config.health.rise,
               s.config.health.fall);

  for (auto& w : s.workers) s.threads.emplace_back([&w] { w->run(); });
  asio::co_spawn(*s.io, s.handle_signals(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  s.io->run();
  s.threads.clear();
  return 0;
}

}  // namespace apilb::lb
