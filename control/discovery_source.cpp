#include "control/discovery_source.hpp"

#include "base/coroutine.hpp"
#include "config/feed.hpp"
#include "discovery/kubeconfig.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/steady_timer.hpp>

#include <stdexcept>

namespace apilb::control {

namespace asio = boost::asio;
using asio::awaitable;
using base::use_nothrow;
using discovery::Endpoint;
using std::chrono::steady_clock;

namespace {

constexpr std::string_view kLastGoodHeader =
    "# The last list of kube-apiservers apiserver-lb discovered from the cluster (the "
    "`kubernetes`\n"
    "# EndpointSlices), kept so that a restart while the apiserver is unreachable starts from it.\n"
    "# Written by apiserver-lb; drain: true marks an endpoint that was not ready or terminating.\n";

bool serving(const Endpoint& e) { return e.ready && !e.terminating; }

std::vector<Endpoint> load_last_good() {
  const auto path = DiscoverySource::last_good_path();
  auto loaded = config::load_feed(path);
  if (!loaded) {
    spdlog::warn("discovery: ignoring the last good list: {}", loaded.error().message());
    return {};
  }
  if (!*loaded) return {};
  std::vector<Endpoint> out;
  for (const config::FeedEntry& e : (*loaded)->targets)
    out.push_back({.address = e.address, .ready = !e.drain, .terminating = false});
  spdlog::info("discovery: starting from the last good list in {} ({} targets)", path.string(),
               out.size());
  return out;
}

std::string describe(const std::vector<Endpoint>& list) {
  std::string out;
  for (const Endpoint& e : list)
    out += (out.empty() ? "" : ", ") + e.address.to_string() +
           (e.terminating ? " (terminating)"
            : e.ready     ? ""
                          : " (not ready)");
  return out.empty() ? "none" : out;
}

}  // namespace

struct DiscoverySource::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, const config::Config& c, std::vector<Endpoint> start, Health h,
       Applied a)
      : executor(std::move(ex)),
        settings(*c.discovery.kubernetes),
        confirm_after(c.discovery.confirm_after),
        gate(confirm_after, std::move(start)),
        health(std::move(h)),
        applied(std::move(a)),
        timer(executor) {}

  void changed(std::vector<Endpoint> list) {
    decided(gate.propose(std::move(list), health(), steady_clock::now()));
  }
  void decided(const discovery::Gate::Decision& d) {
    if (!d.why.empty()) spdlog::log(d.warn ? spdlog::level::warn : spdlog::level::info, d.why);
    if (!d.apply) return;
    spdlog::info("discovery: {} targets from the cluster: {}", d.apply->size(), describe(*d.apply));
    config::Feed feed{.targets = {}, .explicit_list = true};
    for (const Endpoint& e : *d.apply) feed.targets.push_back({e.address, !serving(e)});
    const auto path = last_good_path();
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);  // a failure shows below
    if (auto saved = config::write_feed_atomically(path, feed, kLastGoodHeader); !saved)
      spdlog::warn("discovery: cannot keep the last good list: {}", saved.error().message());
    applied();
  }
  // A held-back change waits for confirm_after and for health checks: look again every second.
  awaitable<void> recheck() {
    const auto self = shared_from_this();
    while (!stopped) {
      timer.expires_after(std::chrono::seconds(1));
      co_await timer.async_wait(use_nothrow);
      if (!stopped && gate.holding()) decided(gate.tick(health(), steady_clock::now()));
    }
  }

  asio::any_io_executor executor;
  config::Kubernetes settings;
  config::Duration confirm_after;
  discovery::Gate gate;
  Health health;
  Applied applied;
  asio::steady_timer timer;
  std::unique_ptr<discovery::Watcher> watcher;
  bool stopped = false;
};

DiscoverySource::DiscoverySource(asio::any_io_executor executor, const config::Config& config,
                                 std::optional<std::vector<Endpoint>> start,
                                 discovery::Watcher::Through through, Health health,
                                 Applied applied) {
  auto creds = credentials(config);
  if (!creds) throw std::runtime_error(creds.error().message());
  impl_ = std::make_shared<Impl>(executor, config, start ? std::move(*start) : load_last_good(),
                                 std::move(health), std::move(applied));
  impl_->watcher = std::make_unique<discovery::Watcher>(
      executor, impl_->settings, *creds, std::move(through),
      [impl = impl_.get()](std::vector<Endpoint> list) { impl->changed(std::move(list)); });
  base::spawn(executor, impl_->recheck(), "the discovery gate's recheck");
  spdlog::info("discovery: watching the `kubernetes` EndpointSlices ({}, port {}, resync {})",
               creds->source, impl_->settings.port_name,
               config::format_duration(impl_->settings.resync));
}

DiscoverySource::~DiscoverySource() {
  impl_->stopped = true;
  impl_->timer.cancel();
  impl_->watcher.reset();
}

const std::vector<Endpoint>& DiscoverySource::targets() const { return impl_->gate.applied(); }

admin::DiscoveryStatus DiscoverySource::status() const {
  const discovery::WatchStatus& w = impl_->watcher->status();
  const auto since = impl_->gate.held_since();
  return {.state = w.state,
          .resource_version = w.resource_version,
          .last_error = w.last_error,
          .lists = w.lists,
          .watches = w.watches,
          .events = w.events,
          .errors = w.errors,
          .held_back = impl_->gate.held_total(),
          .holding = since.has_value(),
          .holding_seconds =
              since ? std::chrono::duration<double>(steady_clock::now() - *since).count() : 0,
          .targets = impl_->gate.applied().size(),
          .last_list = w.last_list};
}

config::Result<discovery::Credentials> DiscoverySource::credentials(const config::Config& config) {
  const config::Kubernetes& k = *config.discovery.kubernetes;
  return k.in_cluster ? discovery::load_in_cluster() : discovery::load_kubeconfig(k.kubeconfig);
}

std::filesystem::path DiscoverySource::last_good_path() {
  const std::string state = config::state_directory();
  return std::filesystem::path(state.empty() ? "/var/lib/apiserver-lb" : state) /
         "discovery.yaml.last-good";
}

}  // namespace apilb::control
