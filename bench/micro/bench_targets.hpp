#pragma once

#include "healthcheck/target_set.hpp"

#include <boost/asio/ip/address_v4.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace apilb::bench {

// `n` targets 10.0.x.y:6443 in `state`, each with its own stats block and a spread of active
// connections, so least_connections has something to compare.
inline std::vector<healthcheck::Target> make_targets(
    std::size_t n, healthcheck::TargetState state = healthcheck::TargetState::up) {
  std::vector<healthcheck::Target> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    healthcheck::Target t;
    const auto host = "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    t.address = config::Address{host, 6443};
    t.name = t.address.to_string();
    t.endpoint = {boost::asio::ip::make_address_v4(host), 6443};
    t.state = state;
    t.stats->active.store(static_cast<std::int64_t>((i * 7919) % 13), std::memory_order_relaxed);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace apilb::bench
