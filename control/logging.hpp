#pragma once

#include "config/config.hpp"

namespace apilb::control {

// Points spdlog's default logger at stderr, as text or as one JSON object per line. Called again
// (a reload), it changes level and format of the same logger.
void setup_logging(const config::Log& log);

}  // namespace apilb::control
