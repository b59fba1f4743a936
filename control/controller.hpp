#pragma once

#include "config/config.hpp"
#include "control/handoff.hpp"
#include "control/upgrade.hpp"

#include <functional>
#include <memory>

namespace apilb::control {

// How the process was started, for `apiserver-lb upgrade`; `takeover` is set when this process was
// started by an upgrade and has received the previous one's sockets (borrowed: it must outlive
// Controller::run()).
struct Startup {
  Launch launch;
  Takeover* takeover = nullptr;
};

// The control thread: builds target snapshots from the configuration and publishes them to the
// workers, handles signals (SIGTERM/SIGINT drain and exit, SIGHUP reload), owns the worker threads.
// Construct, then run() on the main thread; it returns the process exit code.
class Controller {
 public:
  // Reads the configuration again for SIGHUP (the same file and flags); empty: reload re-applies
  // the running configuration.
  using Reload = std::function<config::Result<config::Config>()>;

  explicit Controller(config::Config config, Reload reload = {}, Startup startup = {});
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Binds every listener on every worker (throws std::system_error when it cannot), starts the
  // workers and serves until a termination signal has been handled. Returns 0 after a clean drain.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apilb::control
