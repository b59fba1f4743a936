#pragma once

// Which event engine the workers run (relay.engine), decided once at start.

#include "config/config.hpp"

#include <string>

namespace apilb::lb {

// The engine picked for `requested`: uring or epoll (never automatic), and when auto fell back to
// epoll, why (one line for the log; empty otherwise).
struct EngineChoice {
  config::Engine engine = config::Engine::epoll;
  std::string fallback_reason;
};

// Probes io_uring (a ring with the engine's flags and the opcodes it submits) the first time it is
// asked, then answers from that result; thread-safe. Throws std::runtime_error naming the reason
// when `requested` is uring and the kernel or a seccomp profile refuses it.
EngineChoice choose_engine(config::Engine requested);

}  // namespace apilb::lb
