#include "healthcheck/target_set.hpp"

#include <algorithm>
#include <optional>

namespace apilb::healthcheck {

std::string_view to_string(TargetState s) noexcept {
  switch (s) {
    case TargetState::unknown:
      return "unknown";
    case TargetState::up:
      return "up";
    case TargetState::draining:
      return "draining";
    case TargetState::down:
      return "down";
  }
  return "?";
}

std::string_view to_string(Origin o) noexcept {
  switch (o) {
    case Origin::config:
      return "config";
    case Origin::file:
      return "file";
    case Origin::discovery:
      return "discovery";
    case Origin::fallback:
      return "fallback";
  }
  return "?";
}

TargetSet::TargetSet(std::uint64_t generation, std::vector<Target> targets, bool close_on_down,
                     const Target* last_resort)
    : generation_(generation), targets_(std::move(targets)), close_on_down_(close_on_down) {
  auto collect = [this](TargetState wanted) {
    for (std::uint32_t i = 0; i < targets_.size(); ++i)
      if (targets_[i].state == wanted) eligible_.push_back(i);
  };
  collect(TargetState::up);
  if (eligible_.empty()) collect(TargetState::unknown);
  if (eligible_.empty()) {
    // Panic: a broken checker must not take the cluster offline, so try everyone, best first.
    panic_ = !targets_.empty();
    for (std::uint32_t i = 0; i < targets_.size(); ++i) eligible_.push_back(i);
    if (panic_ && last_resort) {
      has_last_resort_ = true;
      eligible_.push_back(static_cast<std::uint32_t>(targets_.size()));
      targets_.push_back(*last_resort);
    }
  }
  // In panic mode every target is "down" yet still used: closing would only cut working streams.
  if (close_on_down && !panic_) {
    for (const Target& t : targets_)
      if (t.state == TargetState::down && !t.refused) to_close_.push_back(t.stats.get());
    std::sort(to_close_.begin(), to_close_.end());
  }
}

bool TargetSet::must_close(const TargetStats* stats) const noexcept {
  return std::binary_search(to_close_.begin(), to_close_.end(), stats);
}

std::shared_ptr<const TargetSet> TargetSet::on_port(
    std::uint16_t port,
    const std::function<std::shared_ptr<TargetStats>(const std::string& name)>& stats_for) const {
  const auto moved = [&](const Target& from) {
    Target t = from;
    t.address.port = port;
    t.name = t.address.to_string();
    t.endpoint.port(port);
    t.stats = stats_for(t.name);
    return t;
  };
  std::vector<Target> targets;
  const std::size_t checked = targets_.size() - (has_last_resort_ ? 1 : 0);
  for (std::size_t i = 0; i < checked; ++i) targets.push_back(moved(targets_[i]));
  std::optional<Target> last_resort;
  if (has_last_resort_) last_resort = moved(targets_.back());
  return std::make_shared<const TargetSet>(generation_, std::move(targets), close_on_down_,
                                           last_resort ? &*last_resort : nullptr);
}

}  // namespace apilb::healthcheck
