#include "healthcheck/rise_fall.hpp"

namespace apilb::healthcheck {

Transition RiseFall::record(bool passed) noexcept {
  const Health before = state();
  if (!known_) {
    known_ = true;
    health_ = passed ? top() : 0;
  } else if (passed) {
    if (health_ < top() && ++health_ >= rise_) health_ = top();
  } else if (health_ > 0 && --health_ < rise_) {
    health_ = 0;
  }
  if (state() == before) return Transition::none;
  return state() == Health::up ? Transition::went_up : Transition::went_down;
}

}  // namespace apilb::healthcheck
