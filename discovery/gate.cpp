#include "discovery/gate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>
#include <utility>

namespace apilb::discovery {

namespace {

bool by_address(const Endpoint& a, const Endpoint& b) {
  return std::tie(a.address.host, a.address.port) < std::tie(b.address.host, b.address.port);
}

std::vector<Endpoint> sorted(std::vector<Endpoint> list) {
  std::ranges::sort(list, by_address);
  return list;
}

bool names(const std::vector<Endpoint>& list, const config::Address& address) {
  return std::ranges::find(list, address, &Endpoint::address) != list.end();
}

// The targets of `from` that `to` drops while they pass their checks and no other source keeps
// them: what the change takes out of service.
std::vector<Endpoint> healthy_dropped(const std::vector<Endpoint>& from,
                                      const std::vector<Endpoint>& to, const HealthView& health) {
  std::vector<Endpoint> out;
  for (const Endpoint& e : from)
    if (!names(to, e.address) && health.up(e.address) && !health.elsewhere(e.address))
      out.push_back(e);
  return out;
}

std::string list_of(const std::vector<Endpoint>& list) {
  std::string out;
  for (const Endpoint& e : list) out += (out.empty() ? "" : ", ") + e.address.to_string();
  return out;
}

std::string seconds(Gate::Clock::duration d) {
  return fmt::format("{:g}s", std::chrono::duration<double>(d).count());
}

}  // namespace

Gate::Gate(Clock::duration confirm_after, std::vector<Endpoint> applied)
    : confirm_after_(confirm_after), applied_(sorted(std::move(applied))) {}

std::optional<Gate::Clock::time_point> Gate::held_since() const noexcept {
  if (!held_) return std::nullopt;
  return held_->since;
}

Gate::Decision Gate::propose(std::vector<Endpoint> next, const HealthView& health,
                             Clock::time_point now) {
  next = sorted(std::move(next));
  if (held_ && held_->wanted == next) return decide(health, now);
  const auto dropped = healthy_dropped(applied_, next, health);
  std::string reason;
  if (next.empty() && !applied_.empty())
    reason = fmt::format("it would remove every discovered target ({})", list_of(applied_));
  else if (!dropped.empty() && dropped.size() * 2 > health.up_total)
    reason = fmt::format("it would take {} of the {} healthy targets out of service at once ({})",
                         dropped.size(), health.up_total, list_of(dropped));
  if (reason.empty()) {
    const bool superseded = held_.has_value();
    held_.reset();
    if (next == applied_)
      return {.apply = std::nullopt,
              .why = superseded ? "discovery: the cluster names the targets in force again; "
                                  "nothing held back any more"
                                : ""};
    applied_ = next;
    return {.apply = applied_,
            .why = superseded ? "discovery: a newer list replaces the one held back" : ""};
  }
  held_ = Held{std::move(next), now, reason};
  ++held_total_;
  Decision held = decide(health, now);
  if (!held.apply)
    held = {.apply = std::nullopt,
            .why = fmt::format("discovery: holding back a change: {}; it applies after "
                               "discovery.confirm_after ({}) as far as health checks agree",
                               reason, seconds(confirm_after_)),
            .warn = true};
  return held;
}

Gate::Decision Gate::tick(const HealthView& health, Clock::time_point now) {
  if (!held_) return {};
  return decide(health, now);
}

// After confirm_after, the held list plus whatever it drops that still passes its checks.
Gate::Decision Gate::decide(const HealthView& health, Clock::time_point now) {
  if (!held_ || now - held_->since < confirm_after_) return {};
  std::vector<Endpoint> kept = healthy_dropped(applied_, held_->wanted, health);
  std::vector<Endpoint> next = held_->wanted;
  next.insert(next.end(), kept.begin(), kept.end());
  next = sorted(std::move(next));
  if (kept.empty()) {
    held_.reset();
    applied_ = std::move(next);
    return {.apply = applied_,
            .why = fmt::format("discovery: applying the change held back for {}: health checks "
                               "agree",
                               seconds(confirm_after_))};
  }
  if (next == applied_) {
    if (std::exchange(held_->announced, true)) return {};
    return {.apply = std::nullopt,
            .why = fmt::format("discovery: after {}, keeping {}: they still pass their health "
                               "checks; they go once they fail them",
                               seconds(confirm_after_), list_of(kept)),
            .warn = true};
  }
  held_->announced = true;
  applied_ = std::move(next);
  return {.apply = applied_,
          .why = fmt::format("discovery: applying the change held back for {}, except {}, which "
                             "still pass their health checks: they stay until they fail them",
                             seconds(confirm_after_), list_of(kept))};
}

}  // namespace apilb::discovery
