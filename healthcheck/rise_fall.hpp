#pragma once

#include <cstdint>

namespace apilb::healthcheck {

enum class Health : std::uint8_t { unknown, up, down };
enum class Transition : std::uint8_t { none, went_up, went_down };

// Hysteresis as a value: no I/O, no clock, no logging. One saturating counter, as in HAProxy's
// check.c: [0, rise) is down, [rise, rise + fall) is up; a pass climbs one step (and jumps to the
// top on reaching `rise`), a failure falls one step (and drops to 0 on leaving the up range). So an
// up target needs `fall` consecutive failures to go down and a down one `rise` consecutive passes
// to come back. Before any result the state is unknown, and the first result decides at once: a
// fresh target is usable (or known dead) after one check, not after `rise` of them.
class RiseFall {
 public:
  RiseFall(int rise, int fall) noexcept : rise_(rise), fall_(fall) {}

  Transition record(bool passed) noexcept;
  // Known up or down already (from a previous process), settled at the edge of that range.
  void seed(bool up) noexcept {
    known_ = true;
    health_ = up ? top() : 0;
  }
  // New limits; the state (unknown, up or down) is kept, settled at the edge of its range.
  void reset(int rise, int fall) noexcept {
    const Health before = state();
    rise_ = rise;
    fall_ = fall;
    health_ = before == Health::up ? top() : 0;
  }

  Health state() const noexcept {
    if (!known_) return Health::unknown;
    return health_ >= rise_ ? Health::up : Health::down;
  }
  // Down with nothing pointing the other way: every recent result failed. Probed slowly then.
  bool settled_down() const noexcept { return known_ && health_ == 0; }
  // A change is building: some results already point the other way. Checks run faster meanwhile.
  bool in_transition() const noexcept { return known_ && health_ != 0 && health_ != top(); }

 private:
  int top() const noexcept { return rise_ + fall_ - 1; }

  int rise_;
  int fall_;
  int health_ = 0;
  bool known_ = false;
};

}  // namespace apilb::healthcheck
