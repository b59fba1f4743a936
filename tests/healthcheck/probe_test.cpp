#include "healthcheck/probe.hpp"

#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>

#include <array>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace apilb::healthcheck {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using asio::ip::tcp;
using config::HealthMode;
using test::StandinOptions;
using test::StandinProcess;

testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << '"' << text << "\" does not contain \"" << part << '"';
}

testing::AssertionResult starts_with(const std::string& text, const std::string& prefix) {
  if (text.starts_with(prefix)) return testing::AssertionSuccess();
  return testing::AssertionFailure() << '"' << text << "\" does not start with \"" << prefix << '"';
}

// Every probe must end on its own within its timeout; this only fails a test that hangs.
constexpr auto kDeadline = 10s;

config::Health health(HealthMode mode, config::Duration timeout = 2s) {
  config::Health h;
  h.mode = mode;
  h.timeout = timeout;
  return h;
}

config::Health https(std::string ca_file = {}) {
  config::Health h = health(HealthMode::https);
  h.ca_file = std::move(ca_file);
  return h;
}

// Runs one probe on an io_context in this thread, as the control thread would.
ProbeResult run_probe(Prober& prober, const tcp::endpoint& endpoint,
                      std::string host = "127.0.0.1") {
  asio::io_context io;
  auto result = asio::co_spawn(io, prober.probe(io.get_executor(), endpoint, std::move(host)),
                               asio::use_future);
  io.run_for(kDeadline);
  if (result.wait_for(0s) != std::future_status::ready)
    throw std::runtime_error("probe still running after 10s");
  return result.get();
}

ProbeResult run_probe(const config::Health& h, const tcp::endpoint& endpoint,
                      std::string host = "127.0.0.1") {
  Prober prober(h);
  return run_probe(prober, endpoint, std::move(host));
}

StandinProcess standin(StandinOptions options = StandinOptions()) {
  return StandinProcess(APILB_STANDIN, options);
}

// ---- failing_checks: pure ----------------------------------------------------------------------

TEST(FailingChecks, KeepsOnlyTheFailingLines) {
  const std::string body =
      "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\nreadyz check "
      "failed\n";
  EXPECT_EQ(failing_checks(body), "[-]etcd failed: reason withheld");
}

TEST(FailingChecks, JoinsSeveralFailingLinesWithSemicolons) {
  const std::string body =
      "[-]etcd failed: reason withheld\n[+]ping ok\n[-]shutdown failed: reason withheld\n";
  EXPECT_EQ(failing_checks(body),
            "[-]etcd failed: reason withheld; [-]shutdown failed: reason withheld");
}

TEST(FailingChecks, TrimsCarriageReturns) {
  EXPECT_EQ(failing_checks("[+]ping ok\r\n[-]etcd failed\r\n[-]log failed\r\n"),
            "[-]etcd failed; [-]log failed");
}

TEST(FailingChecks, ReadsALastLineWithoutNewline) {
  EXPECT_EQ(failing_checks("[+]ping ok\n[-]etcd failed"), "[-]etcd failed");
}

TEST(FailingChecks, IsEmptyWhenNothingFails) {
  EXPECT_EQ(failing_checks(""), "");
  EXPECT_EQ(failing_checks("ok"), "");
  EXPECT_EQ(failing_checks("[+]ping ok\n[+]etcd ok\nreadyz check passed\n"), "");
  EXPECT_EQ(failing_checks("\n\n\r\n"), "");
}

TEST(FailingChecks, IgnoresTheMarkerAnywhereButAtTheStartOfALine) {
  EXPECT_EQ(failing_checks(" [-]indented\nsee [-]etcd\n[-]\n"), "[-]");
}

// ---- tcp ----------------------------------------------------------------------------------------

TEST(TcpProbe, PassesWhenThePortAcceptsConnections) {
  test::EchoBackend backend;
  const ProbeResult result = run_probe(health(HealthMode::tcp), backend.endpoint());
  EXPECT_EQ(result.outcome, Outcome::passed);
  EXPECT_EQ(result.reason, "");
  EXPECT_GT(result.latency, 0ns);
  EXPECT_TRUE(test::wait_until([&] { return backend.accepted() == 1; }, 5s));
}

TEST(TcpProbe, FailsWithConnectionRefusedWhenNothingListens) {
  test::RefusingTarget target;
  const ProbeResult result = run_probe(health(HealthMode::tcp), target.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "connection refused");
}

TEST(TcpProbe, FailsWithATimeoutWhenConnectsAreDropped) {
  test::BlackholeTarget target;
  const auto start = std::chrono::steady_clock::now();
  const ProbeResult result = run_probe(health(HealthMode::tcp, 300ms), target.endpoint());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "timeout after 300ms");
  EXPECT_GE(result.latency, 300ms);
  EXPECT_LT(elapsed, 3s);
}

TEST(TcpProbe, ChecksAnIpv6Target) {
  test::EchoBackend backend(test::loopback_v6());
  EXPECT_EQ(run_probe(health(HealthMode::tcp), backend.endpoint(), "::1").outcome, Outcome::passed);
}

TEST(TcpProbe, IgnoresTlsFilesItDoesNotUse) {
  config::Health h = health(HealthMode::tcp);
  h.ca_file = "/nonexistent/ca.pem";
  test::EchoBackend backend;
  EXPECT_EQ(run_probe(h, backend.endpoint()).outcome, Outcome::passed);
}

// ---- tls ----------------------------------------------------------------------------------------

TEST(TlsProbe, PassesWhenTheHandshakeCompletes) {
  StandinProcess server = standin();
  const ProbeResult result = run_probe(health(HealthMode::tls), server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::passed) << result.reason;
}

// The hung apiserver: its kernel still completes TCP handshakes, the process never answers.
TEST(TlsProbe, FailsWithATimeoutWhenTheServerAcceptsButNeverAnswers) {
  test::NeverReadsBackend backend;
  const ProbeResult result = run_probe(health(HealthMode::tls, 300ms), backend.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "timeout after 300ms");
  EXPECT_GE(result.latency, 300ms);
  EXPECT_LT(result.latency, 3s);
  EXPECT_EQ(backend.accepted(), 1u);
}

TEST(TlsProbe, FailsWhenTheServerDoesNotSpeakTls) {
  StandinProcess server = standin(StandinOptions().plain_http());
  const ProbeResult result = run_probe(health(HealthMode::tls), server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_TRUE(starts_with(result.reason, "TLS handshake: "));
}

TEST(TlsProbe, FailsWithConnectionRefusedWhenNothingListens) {
  test::RefusingTarget target;
  const ProbeResult result = run_probe(health(HealthMode::tls), target.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "connection refused");
}

TEST(TlsProbe, VerifiesTheCertificateWhenACaIsGiven) {
  StandinProcess server = standin();
  StandinProcess other = standin(StandinOptions("other"));
  config::Health h = health(HealthMode::tls);
  h.ca_file = server.cert_file().string();
  EXPECT_EQ(run_probe(h, server.endpoint()).outcome, Outcome::passed);
  const ProbeResult result = run_probe(h, other.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_TRUE(contains(result.reason, "certificate verify failed"));
}

// ---- https --------------------------------------------------------------------------------------

TEST(HttpsProbe, PassesWhenReadyzAnswers200) {
  StandinProcess server = standin();
  const ProbeResult result = run_probe(https(), server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::passed) << result.reason;
  EXPECT_EQ(result.reason, "");
}

TEST(HttpsProbe, IsNotReadyWithTheFailingChecksWhenReadyzAnswers500) {
  StandinProcess server = standin();
  ASSERT_TRUE(server.set_readyz(500));
  const ProbeResult result = run_probe(https(), server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::not_ready);
  EXPECT_TRUE(contains(result.reason, "HTTP 500"));
  EXPECT_TRUE(contains(result.reason, "[-]etcd"));
  EXPECT_EQ(result.reason, "HTTP 500: [-]etcd failed: reason withheld");
}

TEST(HttpsProbe, SaysOnlyTheStatusWhenTheBodyListsNoFailingCheck) {
  StandinProcess server = standin();
  config::Health h = https();
  h.path = "/no-such-path";
  const ProbeResult result = run_probe(h, server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::not_ready);
  EXPECT_EQ(result.reason, "HTTP 404");
}

TEST(HttpsProbe, AppendsVerboseToAPathThatHasAQuery) {
  StandinProcess server = standin();
  ASSERT_TRUE(server.set_readyz(503, "shutdown"));
  config::Health h = https();
  h.path = "/readyz?exclude=etcd";
  const ProbeResult result = run_probe(h, server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::not_ready);
  EXPECT_EQ(result.reason, "HTTP 503: [-]shutdown failed: reason withheld");
}

TEST(HttpsProbe, FollowsReadyzAsItChanges) {
  StandinProcess server = standin();
  Prober prober(https());
  EXPECT_EQ(run_probe(prober, server.endpoint()).outcome, Outcome::passed);
  ASSERT_TRUE(server.set_readyz(500));
  EXPECT_EQ(run_probe(prober, server.endpoint()).outcome, Outcome::not_ready);
  ASSERT_TRUE(server.set_readyz(200));
  EXPECT_EQ(run_probe(prober, server.endpoint()).outcome, Outcome::passed);
}

TEST(HttpsProbe, FailsWithATimeoutWhenTheServerAcceptsButNeverAnswers) {
  test::NeverReadsBackend backend;
  const ProbeResult result = run_probe(health(HealthMode::https, 300ms), backend.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "timeout after 300ms");
}

TEST(HttpsProbe, FailsWhenTheConnectionIsClosedDuringTheHandshake) {
  test::EchoBackend backend;  // echoes the ClientHello back: not a TLS server
  const ProbeResult result = run_probe(https(), backend.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_TRUE(starts_with(result.reason, "TLS handshake: "));
}

// The stand-in's certificate is self-signed with CA:TRUE and SANs 127.0.0.1, ::1 and localhost,
// so it serves as its own CA.
TEST(HttpsProbe, PassesWhenTheCertificateIsSignedByTheGivenCa) {
  StandinProcess server = standin();
  const ProbeResult result =
      run_probe(https(server.cert_file().string()), server.endpoint(), "127.0.0.1");
  EXPECT_EQ(result.outcome, Outcome::passed) << result.reason;
}

TEST(HttpsProbe, VerifiesADnsNameAndSendsItAsSni) {
  StandinProcess server = standin();
  const ProbeResult result =
      run_probe(https(server.cert_file().string()), server.endpoint(), "localhost");
  EXPECT_EQ(result.outcome, Outcome::passed) << result.reason;
  const test::HttpReply stats = test::http_get(server.control_endpoint(), "/standin/stats");
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(contains(stats.body, "last_sni localhost\n"));
}

TEST(HttpsProbe, SendsNoSniForAnIpAddress) {
  StandinProcess server = standin();
  ASSERT_EQ(run_probe(https(server.cert_file().string()), server.endpoint(), "127.0.0.1").outcome,
            Outcome::passed);
  const test::HttpReply stats = test::http_get(server.control_endpoint(), "/standin/stats");
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(contains(stats.body, "last_sni -\n"));
}

TEST(HttpsProbe, FailsCertificateVerificationAgainstAnotherCa) {
  StandinProcess server = standin(StandinOptions("server"));
  StandinProcess other = standin(StandinOptions("other"));
  const ProbeResult result = run_probe(https(other.cert_file().string()), server.endpoint());
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_TRUE(starts_with(result.reason, "TLS handshake: certificate verify failed"));
}

TEST(HttpsProbe, FailsWhenTheHostNameIsNotInTheCertificate) {
  StandinProcess server = standin();
  const ProbeResult result =
      run_probe(https(server.cert_file().string()), server.endpoint(), "master-9.example");
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "TLS handshake: certificate verify failed (hostname mismatch)");
}

TEST(HttpsProbe, FailsWhenTheIpAddressIsNotInTheCertificate) {
  StandinProcess server = standin(StandinOptions().with_san("DNS:master-1.example"));
  const ProbeResult result =
      run_probe(https(server.cert_file().string()), server.endpoint(), "127.0.0.1");
  EXPECT_EQ(result.outcome, Outcome::failed);
  EXPECT_EQ(result.reason, "TLS handshake: certificate verify failed (IP address mismatch)");
}

TEST(HttpsProbe, DoesNotCheckTheCertificateWithoutACa) {
  StandinProcess server = standin(StandinOptions().with_san("DNS:master-1.example"));
  EXPECT_EQ(run_probe(https(), server.endpoint(), "master-9.example").outcome, Outcome::passed);
}

TEST(HttpsProbe, PresentsTheClientCertificateWhenAnonymousAccessIsOff) {
  StandinProcess client_identity = standin(StandinOptions("probe-client"));
  StandinProcess server = standin(StandinOptions("server")
                                      .with_arg("--client-ca")
                                      .with_arg(client_identity.cert_file().string())
                                      .with_arg("--no-anonymous"));
  config::Health h = https(server.cert_file().string());
  const ProbeResult anonymous = run_probe(h, server.endpoint());
  EXPECT_EQ(anonymous.outcome, Outcome::not_ready);
  // Every target of such a cluster answers alike: the reason says what to change.
  EXPECT_EQ(
      anonymous.reason,
      "HTTP 401 (anonymous /readyz refused: set health.cert_file and key_file, or use mode tls)");

  h.cert_file = client_identity.cert_file().string();
  h.key_file = client_identity.key_file().string();
  const ProbeResult authenticated = run_probe(h, server.endpoint());
  EXPECT_EQ(authenticated.outcome, Outcome::passed) << authenticated.reason;
}

TEST(HttpsProbe, RunsManyProbesAtOnceOnOneExecutor) {
  StandinProcess ready = standin(StandinOptions("ready"));
  StandinProcess draining = standin(StandinOptions("draining"));
  ASSERT_TRUE(draining.set_readyz(500));
  test::RefusingTarget refusing;
  Prober prober(https());

  asio::io_context io;
  std::vector<std::future<ProbeResult>> results;
  for (int i = 0; i < 8; ++i) {
    for (const auto& endpoint : {ready.endpoint(), draining.endpoint(), refusing.endpoint()}) {
      results.push_back(asio::co_spawn(io, prober.probe(io.get_executor(), endpoint, "127.0.0.1"),
                                       asio::use_future));
    }
  }
  io.run_for(kDeadline);
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_EQ(results[i].wait_for(0s), std::future_status::ready) << "probe " << i;
    const ProbeResult result = results[i].get();
    const Outcome expected =
        std::array{Outcome::passed, Outcome::not_ready, Outcome::failed}[i % 3];
    EXPECT_EQ(result.outcome, expected) << "probe " << i << ": " << result.reason;
  }
}

TEST(Prober, EndsQuietlyWhenTheCallerCancelsIt) {
  test::NeverReadsBackend backend;
  Prober prober(health(HealthMode::tls, 10s));
  asio::io_context io;
  asio::cancellation_signal cancel;
  std::optional<ProbeResult> result;
  std::exception_ptr error;
  asio::co_spawn(
      io, prober.probe(io.get_executor(), backend.endpoint(), "127.0.0.1"),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, ProbeResult r) {
        error = e;
        result = std::move(r);
      }));
  // Cancel once the server has the connection: the probe is then waiting for the handshake.
  asio::steady_timer poll(io);
  std::function<void()> cancel_when_accepted = [&] {
    if (backend.accepted() == 1) return cancel.emit(asio::cancellation_type::terminal);
    poll.expires_after(5ms);
    poll.async_wait([&](boost::system::error_code) { cancel_when_accepted(); });
  };
  cancel_when_accepted();
  io.run_for(kDeadline);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(error);
  EXPECT_EQ(result->outcome, Outcome::failed);
  EXPECT_EQ(result->reason, "cancelled");
  EXPECT_LT(result->latency, 5s);
}

// ---- TLS files ---------------------------------------------------------------------------------

std::string construction_error(const config::Health& h) {
  try {
    Prober prober(h);
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(ProberFiles, LoadsAClientCertificateAndKey) {
  StandinProcess server = standin();
  config::Health h = https();
  h.cert_file = server.cert_file().string();
  h.key_file = server.key_file().string();
  EXPECT_NO_THROW(Prober{h});
}

TEST(ProberFiles, NamesTheFieldAndPathOfAMissingKey) {
  StandinProcess server = standin();
  config::Health h = https();
  h.cert_file = server.cert_file().string();
  h.key_file = "/nonexistent/key.pem";
  EXPECT_EQ(construction_error(h),
            "health.key_file: cannot load /nonexistent/key.pem: No such file or directory");
}

TEST(ProberFiles, NamesTheFieldOfAMissingCa) {
  config::Health h = https("/nonexistent/ca.pem");
  EXPECT_EQ(construction_error(h),
            "health.ca_file: cannot load /nonexistent/ca.pem: No such file or directory");
}

TEST(ProberFiles, RejectsACaFileWithoutCertificates) {
  test::TempDir dir;
  const auto path = dir.write("ca.pem", "not a certificate\n").string();
  EXPECT_TRUE(
      starts_with(construction_error(https(path)), "health.ca_file: cannot load " + path + ": "));
}

TEST(ProberFiles, RejectsAKeyThatIsNotTheCertificatesKey) {
  StandinProcess server = standin();
  StandinProcess other = standin(StandinOptions("other"));
  config::Health h = health(HealthMode::tls);
  h.cert_file = server.cert_file().string();
  h.key_file = other.key_file().string();
  EXPECT_TRUE(
      starts_with(construction_error(h), "health.key_file: cannot load " + h.key_file + ": "));
}

TEST(ProberFiles, RejectsACertFileThatIsAKey) {
  StandinProcess server = standin();
  config::Health h = https();
  h.cert_file = server.key_file().string();
  h.key_file = server.key_file().string();
  EXPECT_TRUE(
      starts_with(construction_error(h), "health.cert_file: cannot load " + h.cert_file + ": "));
}

}  // namespace
}  // namespace apilb::healthcheck
