#pragma once

#include "config/config.hpp"
#include "healthcheck/readyz.hpp"  // failing_checks(), which the https probe uses for its reasons

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace apilb::healthcheck {

// What one active check found. `failed`: the port did not answer (refused, timeout, TLS handshake
// failed) -> the target goes down. `not_ready`: it answered but /readyz was not 200 (an apiserver
// in its graceful shutdown window, or one whose etcd is gone) -> the target drains. `inconclusive`:
// the check could not even start on our side (no socket: out of descriptors or memory) -> says
// nothing about the target; the supervisor leaves its state as it was.
enum class Outcome { passed, not_ready, failed, inconclusive };

struct ProbeResult {
  Outcome outcome = Outcome::failed;
  // Empty when passed; otherwise short and specific: "connection refused", "timeout after 1s",
  // "TLS handshake: certificate verify failed", "HTTP 500: [-]etcd failed: reason withheld".
  std::string reason;
  std::chrono::steady_clock::duration latency{};
  // A failure of the connect itself with a reset: the host is up and nothing listens on the port
  // (an apiserver that crashed, or one past its shutdown delay that is finishing its requests).
  // Its kernel closes whatever that port still holds, so the balancer need not cut it.
  bool refused = false;
};

// Runs active checks in the configured mode (tcp | tls | https). Built once per health
// configuration on the control thread: the TLS context (CA, client certificate) is loaded here, so
// bad files are start-up errors, not failing checks. probe() may run for many targets at once on
// one executor; the Prober must outlive every probe() it started.
class Prober {
 public:
  // Throws std::runtime_error naming the file when ca_file, cert_file or key_file cannot be used.
  explicit Prober(const config::Health& health);
  ~Prober();
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // One check of `endpoint`, bounded by health.timeout in total. `host` is the target as configured
  // (a name or an IP literal): the TLS server name (SNI, only for names) and the name the
  // certificate is verified against when a CA is given. Never throws for network outcomes.
  boost::asio::awaitable<ProbeResult> probe(boost::asio::any_io_executor executor,
                                            boost::asio::ip::tcp::endpoint endpoint,
                                            std::string host);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apilb::healthcheck
