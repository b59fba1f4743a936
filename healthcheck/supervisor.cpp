#include "healthcheck/supervisor.hpp"

#include "base/coroutine.hpp"
#include "healthcheck/rise_fall.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>

namespace apilb::healthcheck {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;
using std::chrono::steady_clock;

namespace {

// While a change builds, check this much more often (HAProxy's fastinter), but not absurdly often.
constexpr int kFastDivisor = 4;
constexpr auto kFastFloor = std::chrono::milliseconds(100);

std::string seconds(steady_clock::duration d) {
  return fmt::format("{:.1f}s", std::chrono::duration<double>(d).count());
}

}  // namespace

void CheckHistogram::observe(double seconds) noexcept {
  std::size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  ++counts[i];
  sum += seconds;
  ++count;
}

struct Supervisor::Checker {
  Checker(asio::any_io_executor ex, TargetSpec s, const config::Health& health)
      : spec(std::move(s)),
        name(spec.address.to_string()),
        rise_fall(health.rise, health.fall),
        timer(ex) {
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address(spec.address.host, ec);
    if (!ec) endpoint = tcp::endpoint(ip, spec.address.port);
    if (spec.inherited != TargetState::unknown) {
      rise_fall.seed(spec.inherited == TargetState::up);
      if (spec.inherited == TargetState::draining) last_failure = Outcome::not_ready;
      state = derive();
      if (state == TargetState::up) last_up = steady_clock::now();
    }
  }

  // The state workers see: the checks' verdict, refined by what kind of failure it was and by the
  // installer's drain flag.
  TargetState derive() const {
    switch (rise_fall.state()) {
      case Health::unknown:
        return spec.drain ? TargetState::draining : TargetState::unknown;
      case Health::up:
        return spec.drain ? TargetState::draining : TargetState::up;
      case Health::down:
        break;
    }
    return last_failure == Outcome::not_ready ? TargetState::draining : TargetState::down;
  }

  TargetSpec spec;
  std::string name;
  tcp::endpoint endpoint;  // unspecified until a name resolves
  RiseFall rise_fall;
  TargetState state = TargetState::unknown;
  Outcome last_failure = Outcome::failed;
  bool refused = false;  // the last failure was a refused connect (ProbeResult::refused)
  ProbeResult last;
  steady_clock::time_point since = steady_clock::now();
  std::chrono::system_clock::time_point since_wall = std::chrono::system_clock::now();
  steady_clock::time_point last_up{};  // for panic mode's preference order
  std::shared_ptr<TargetStats> stats = std::make_shared<TargetStats>();
  CheckHistogram checks;
  std::uint64_t left_service = 0;
  asio::steady_timer timer;
  int in_flight = 0;  // probes started and not finished
  bool stopped = false;
};

Supervisor::Supervisor(asio::any_io_executor executor, const config::Health& health,
                       config::OnTargetDown on_target_down, Publish publish)
    : executor_(std::move(executor)),
      health_(health),
      on_target_down_(on_target_down),
      publish_(std::move(publish)),
      prober_(std::make_shared<Prober>(health)) {}

Supervisor::~Supervisor() {
  for (auto& c : checkers_) {
    c->stopped = true;
    c->timer.cancel();
  }
}

void Supervisor::set_targets(const std::vector<TargetSpec>& specs,
                             const std::optional<config::Address>& first_master) {
  std::vector<std::shared_ptr<Checker>> next;
  for (const TargetSpec& spec : specs) {
    auto same = std::find_if(checkers_.begin(), checkers_.end(),
                             [&](const auto& c) { return c && c->spec.address == spec.address; });
    if (same != checkers_.end()) {
      (*same)->spec = spec;  // origin or drain flag may have changed
      (*same)->state = (*same)->derive();
      next.push_back(std::move(*same));
      continue;
    }
    auto checker = std::make_shared<Checker>(executor_, spec, health_);
    next.push_back(checker);
    base::spawn(executor_, check_loop(std::move(checker)), "a health check loop");
  }
  for (auto& gone : checkers_) {
    if (!gone) continue;
    gone->stopped = true;
    gone->timer.cancel();
  }
  checkers_ = std::move(next);
  const bool is_target = first_master && std::ranges::any_of(specs, [&](const TargetSpec& spec) {
                           return spec.address == *first_master;
                         });
  set_last_resort(is_target ? std::nullopt : first_master);
  publish();
}

void Supervisor::set_last_resort(const std::optional<config::Address>& address) {
  if (!address) {
    last_resort_.reset();
    return;
  }
  if (last_resort_ && last_resort_->address == *address) return;  // keeps its counters
  Target t;
  t.address = *address;
  t.name = address->to_string();
  t.origin = Origin::fallback;
  t.state = TargetState::down;  // never checked: used only when every checked target is down
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address->host, ec);
  if (!ec) t.endpoint = tcp::endpoint(ip, address->port);
  last_resort_ = std::move(t);
  if (ec) base::spawn(executor_, resolve_last_resort(*address), "a first_master resolution");
}

awaitable<void> Supervisor::resolve_last_resort(config::Address address) {
  tcp::resolver resolver(executor_);
  const std::string port = std::to_string(address.port);  // named: see check_once
  auto [ec, found] = co_await resolver.async_resolve(address.host, port, use_nothrow);
  if (ec || found.empty()) {
    spdlog::warn("first_master {}: cannot resolve it ({}); panic mode goes without it",
                 address.to_string(), ec.message());
    co_return;
  }
  if (!last_resort_ || last_resort_->address != address) co_return;  // replaced meanwhile
  last_resort_->endpoint = found.begin()->endpoint();
  publish();
}

// One check loop per target. A probe starts every tick without waiting for the one before: a
// silent (blackholed) target answers nothing, so each of its probes runs the whole timeout, and
// probes taken one after another would need interval + fall x timeout to reach `fall` failures.
// Overlapping (at most `fall` in flight) it takes interval + (fall - 1) x fast interval + timeout.
// A probe still pending after a fast interval is suspect, and so is a change that is building:
// both bring the next probe forward. A target that has settled down gets none of that: one probe
// at a time, the next one down_interval after the last one started (or when it ended, if it took
// longer): a master in trouble is not sent a SYN every fast interval by every balancer. A pass
// ends the settled state, and the fast probes of a building change start at once.
awaitable<void> Supervisor::check_loop(std::shared_ptr<Checker> c) {
  while (!c->stopped) {
    const auto started = steady_clock::now();
    if (c->rise_fall.settled_down()) {
      if (c->in_flight > 0) {  // the transition's last probes are still ending
        c->timer.expires_at(started + fast_interval());
        co_await c->timer.async_wait(use_nothrow);
        continue;
      }
      ++c->in_flight;
      co_await check_once(c);
      if (c->stopped || !c->rise_fall.settled_down()) continue;
      c->timer.expires_at(started + health_.settled_down_interval());
      co_await c->timer.async_wait(use_nothrow);  // cancelled: a reconfiguration
      continue;
    }
    if (c->in_flight < health_.fall) {
      ++c->in_flight;
      base::spawn(executor_, check_once(c), "a health check");
    }
    c->timer.expires_at(started + fast_interval());
    auto [cancelled] = co_await c->timer.async_wait(use_nothrow);  // cancelled: check now
    if (cancelled || c->in_flight > 0 || c->rise_fall.in_transition()) continue;
    c->timer.expires_at(started + next_delay());
    co_await c->timer.async_wait(use_nothrow);
  }
}

awaitable<void> Supervisor::check_once(std::shared_ptr<Checker> c) {
  ProbeResult result;
  if (!config::is_ip_literal(c->spec.address.host)) {
    // Names are resolved for every check, so a master that changes address is followed.
    // A named port, not a temporary inside the co_await expression: GCC 12 miscompiles those.
    const std::string port = std::to_string(c->spec.address.port);
    tcp::resolver resolver(executor_);
    auto [ec, found] = co_await resolver.async_resolve(c->spec.address.host, port, use_nothrow);
    if (ec || found.empty()) {
      result.reason = "cannot resolve " + c->spec.address.host + ": " + ec.message();
    } else if (found.begin()->endpoint() != c->endpoint && !c->stopped) {
      c->endpoint = found.begin()->endpoint();
      publish();
    }
  }
  if (c->endpoint.port() != 0 && result.reason.empty() && !c->stopped) {
    const std::shared_ptr<Prober> prober = prober_;
    result = co_await prober->probe(executor_, c->endpoint, c->spec.address.host);
  }
  --c->in_flight;
  if (!c->stopped) record(*c, std::move(result), true);
}

std::chrono::milliseconds Supervisor::fast_interval() const {
  return std::max<std::chrono::milliseconds>(health_.interval / kFastDivisor, kFastFloor);
}

std::chrono::milliseconds Supervisor::next_delay() {
  const auto interval = health_.interval;
  // Up to 10% earlier, never later, so targets checked in step drift apart without stretching
  // the detection bound.
  random_ ^= random_ << 13, random_ ^= random_ >> 7, random_ ^= random_ << 17;
  return interval - std::chrono::milliseconds(random_ % (interval.count() / 10 + 1));
}

void Supervisor::record(Checker& c, ProbeResult result, bool active) {
  if (active) c.checks.observe(std::chrono::duration<double>(result.latency).count());
  if (result.outcome == Outcome::inconclusive) return;  // our shortage, not the target's
  const bool passed = result.outcome == Outcome::passed;
  const bool was_refused = c.refused;
  if (!passed) {
    c.last_failure = result.outcome;
    c.refused = result.refused;
  }
  c.rise_fall.record(passed);
  c.last = std::move(result);
  const TargetState next = c.derive();
  if (next == TargetState::up) c.last_up = steady_clock::now();
  if (next == c.state) {
    // Still down, but it went from refusing to silent (its connections are now to close) or back.
    if (next == TargetState::down && c.refused != was_refused) publish();
    return;
  }

  const auto now = steady_clock::now();
  const std::string why = next == TargetState::up ? "checks passed" : c.last.reason;
  auto log = next == TargetState::up ? spdlog::level::info : spdlog::level::warn;
  spdlog::log(log, "target {} ({}): {} -> {}: {} (was {} for {})", c.name, to_string(c.spec.origin),
              to_string(c.state), to_string(next), why, to_string(c.state), seconds(now - c.since));
  if (c.state == TargetState::up) ++c.left_service;
  remember({std::chrono::system_clock::now(), c.name, std::string(to_string(c.state)),
            std::string(to_string(next)), why});
  c.state = next;
  c.since = now;
  c.since_wall = std::chrono::system_clock::now();
  publish();
}

void Supervisor::reconfigure(const config::Health& health, config::OnTargetDown on_target_down) {
  prober_ =
      std::make_shared<Prober>(health);  // throws on bad TLS files: the caller validates first
  health_ = health;
  on_target_down_ = on_target_down;
  for (auto& c : checkers_) {
    c->rise_fall.reset(health.rise, health.fall);
    c->timer.cancel();  // check with the new settings now
  }
  publish();
}

void Supervisor::report_connect_failure(const TargetStats* stats, const std::string& reason,
                                        bool refused) {
  for (auto& c : checkers_) {
    if (c->stats.get() != stats) continue;
    // Probe again at once rather than wait for the next interval, unless the target has settled
    // down already: in panic mode every client tries it, and each failure would bring a probe.
    const bool settled_down = c->rise_fall.settled_down();
    record(*c, ProbeResult{Outcome::failed, "passive: " + reason, {}, refused}, false);
    if (!settled_down) c->timer.cancel();
    return;
  }
}

void Supervisor::publish() {
  // Preference order for panic mode: most recently up first; never-up targets keep config order.
  std::vector<const Checker*> order;
  for (const auto& c : checkers_) order.push_back(c.get());
  std::stable_sort(order.begin(), order.end(),
                   [](const Checker* a, const Checker* b) { return a->last_up > b->last_up; });
  std::vector<Target> targets;
  for (const Checker* c : order) {
    Target t;
    t.address = c->spec.address;
    t.name = c->name;
    t.endpoint = c->endpoint;
    t.origin = c->spec.origin;
    // A target whose name never resolved has nowhere to connect to.
    t.state = c->endpoint.port() == 0 ? TargetState::down : c->state;
    t.refused = t.state == TargetState::down && c->refused;
    t.stats = c->stats;
    targets.push_back(std::move(t));
  }
  const Target* last_resort =
      last_resort_ && last_resort_->endpoint.port() != 0 ? &*last_resort_ : nullptr;
  current_ = std::make_shared<const TargetSet>(++generation_, std::move(targets),
                                               on_target_down_ == config::OnTargetDown::close,
                                               last_resort);
  if (current_->panic() != panic_) {
    panic_ = current_->panic();
    remember({std::chrono::system_clock::now(),
              {},
              panic_ ? "normal" : "panic",
              panic_ ? "panic" : "normal",
              panic_ ? "no target is healthy" : "a target is healthy again"});
    if (panic_) {
      spdlog::error("panic mode: no target is healthy; trying every target in turn{}",
                    last_resort ? ", then first_master " + last_resort->name : std::string());
    } else {
      spdlog::info("panic mode over: a target is healthy again");
    }
  }
  publish_(current_);
}

void Supervisor::remember(StateChange change) {
  if (changes_.size() == kHistory) changes_.pop_front();
  changes_.push_back(std::move(change));
}

std::vector<TargetStatus> Supervisor::status() const {
  std::vector<TargetStatus> out;
  for (const auto& c : checkers_)
    out.push_back({c->name, c->spec.origin, c->state, c->since_wall, c->last, c->stats, c->checks,
                   c->left_service,
                   c->spec.sources.empty() ? std::vector{c->spec.origin} : c->spec.sources});
  return out;
}

}  // namespace apilb::healthcheck
