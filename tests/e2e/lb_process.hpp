#pragma once

#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace apilb::test {

// `apiserver-lb run` as a child process on 127.0.0.1 port 0 (admin off unless `args` sets it),
// started and listening when the constructor returns; the port comes from its startup log.
// `options` can add to its environment (e.g. ASAN_OPTIONS).
class LbProcess {
 public:
  explicit LbProcess(std::vector<std::string> args,
                     std::chrono::milliseconds deadline = std::chrono::seconds(10),
                     SpawnOptions options = {}) {
    std::vector<std::string> argv{"run", "--listen", "127.0.0.1:0", "--admin", ""};
    argv.insert(argv.end(), args.begin(), args.end());
    process_.emplace(APILB_BINARY, argv, std::move(options));
    // A process that exits (a config error) fails at once, not at the deadline.
    const bool started = wait_until(
        [&] {
          return process_->log().find(" listening on ") != std::string::npos ||
                 !process_->running();
        },
        deadline, std::chrono::milliseconds(10));
    if (!started || !process_->running())
      throw std::runtime_error("apiserver-lb did not start:\n" + process_->log());
    std::smatch m;
    const std::string log = process_->log();
    if (!std::regex_search(log, m, std::regex(R"(listening on 127\.0\.0\.1:(\d+))")))
      throw std::runtime_error("no port in the log:\n" + log);
    endpoint_ = loopback(static_cast<std::uint16_t>(std::stoi(m[1])));
  }
  tcp::endpoint endpoint() const { return endpoint_; }
  ChildProcess& process() { return *process_; }

 private:
  std::optional<ChildProcess> process_;
  tcp::endpoint endpoint_;
};

}  // namespace apilb::test
