#pragma once

#include "config/config.hpp"
#include "healthcheck/target_set.hpp"

#include <array>
#include <cstdint>
#include <optional>

namespace apilb::lb {

// Targets already tried by one connection, so a retry goes elsewhere. Bounded by 1 + max retries.
class Tried {
 public:
  static constexpr std::size_t kCapacity = 16;
  void add(std::uint32_t index) noexcept {
    if (size_ < kCapacity) items_[size_++] = index;
  }
  bool contains(std::uint32_t index) const noexcept {
    for (std::size_t i = 0; i < size_; ++i)
      if (items_[i] == index) return true;
    return false;
  }
  std::size_t size() const noexcept { return size_; }

 private:
  std::array<std::uint32_t, kCapacity> items_{};
  std::size_t size_ = 0;
};

// Chooses a target for a new connection. One per worker thread (its round-robin cursor and random
// state are private); reads the process-wide active counts in TargetStats.
class Balancer {
 public:
  explicit Balancer(config::Balance policy, std::uint64_t seed = 0x9e3779b97f4a7c15ULL) noexcept;

  void set_policy(config::Balance policy) noexcept { policy_ = policy; }
  // An index into set.targets() among set.eligible(), not in `tried`; nullopt when all were tried.
  std::optional<std::uint32_t> pick(const healthcheck::TargetSet& set, const Tried& tried) noexcept;

 private:
  std::uint64_t next_random() noexcept;

  config::Balance policy_;
  std::uint64_t cursor_ = 0;
  std::uint64_t random_;
};

}  // namespace apilb::lb
