// The test helpers themselves, against real loopback sockets and real child processes.

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

namespace apilb::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

TEST(WaitUntil, ReturnsTrueOnceThePredicateHolds) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls == 3; }, 5s, 1ms));
  EXPECT_EQ(calls, 3);
}

TEST(WaitUntil, ReturnsFalseAtTheDeadline) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_until([] { return false; }, 50ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
}

TEST(EchoBackend, EchoesAndAnswersAHalfCloseWithItsOwnFin) {
  EchoBackend echo;
  const std::string payload(200 * 1024, 'x');  // more than the socket buffers hold
  const FetchResult result = fetch(echo.endpoint(), payload, 10s, AfterSend::shut_down_write);
  EXPECT_FALSE(result.error) << result.error.message();  // EOF: the echo sent its FIN
  EXPECT_EQ(result.data, payload);
  EXPECT_EQ(echo.accepted(), 1u);
  EXPECT_TRUE(wait_until([&] { return echo.active() == 0; }, 5s));
}

TEST(EchoBackend, KeepsEchoingWhileTheClientKeepsItsWriteSideOpen) {
  EchoBackend echo;
  const FetchResult result = fetch(echo.endpoint(), "ping", 200ms);
  EXPECT_EQ(result.error, asio::error::timed_out);
  EXPECT_EQ(result.data, "ping");
}

TEST(EchoBackend, CloseAllEndsEstablishedConnectionsAndKeepsListening) {
  EchoBackend echo;
  asio::io_context ioc;
  tcp::socket client(ioc);
  client.connect(echo.endpoint());
  ASSERT_TRUE(wait_until([&] { return echo.active() == 1; }, 5s));

  echo.close_all();
  EXPECT_EQ(echo.active(), 0u);
  char byte;
  boost::system::error_code ec;
  client.read_some(asio::buffer(&byte, 1), ec);
  EXPECT_EQ(ec, asio::error::eof);
  EXPECT_TRUE(port_accepts(echo.endpoint()));
}

TEST(EchoBackend, ResetAllAbortsEstablishedConnections) {
  EchoBackend echo;
  asio::io_context ioc;
  tcp::socket client(ioc);
  client.connect(echo.endpoint());
  ASSERT_TRUE(wait_until([&] { return echo.active() == 1; }, 5s));

  echo.reset_all();
  char byte;
  boost::system::error_code ec;
  client.read_some(asio::buffer(&byte, 1), ec);
  EXPECT_EQ(ec, asio::error::connection_reset);
}

TEST(EchoBackend, StopRefusesNewConnectionsAndCanBeReplacedOnTheSamePort) {
  auto echo = std::make_unique<EchoBackend>();
  const tcp::endpoint endpoint = echo->endpoint();
  EXPECT_TRUE(port_accepts(endpoint));
  echo->stop();
  EXPECT_EQ(fetch(endpoint, "x", 2s).error, asio::error::connection_refused);

  echo = std::make_unique<EchoBackend>(endpoint);
  EXPECT_EQ(fetch(endpoint, "back", 5s, AfterSend::shut_down_write).data, "back");
}

TEST(EchoBackend, ListensOnIpv6Loopback) {
  EchoBackend echo(loopback_v6());
  EXPECT_TRUE(echo.endpoint().address().is_v6());
  EXPECT_EQ(fetch(echo.endpoint(), "six", 5s, AfterSend::shut_down_write).data, "six");
}

TEST(RefusingTarget, RefusesConnectsAtOnce) {
  RefusingTarget refusing;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(fetch(refusing.endpoint(), "x", 2s).error, asio::error::connection_refused);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_FALSE(port_accepts(refusing.endpoint()));
}

TEST(BlackholeTarget, ConnectsDoNotCompleteAndAreNotRefused) {
  BlackholeTarget blackhole;
  const auto start = std::chrono::steady_clock::now();
  const FetchResult result = fetch(blackhole.endpoint(), "x", 300ms);
  EXPECT_EQ(result.error, asio::error::timed_out) << result.error.message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_FALSE(port_accepts(blackhole.endpoint(), 100ms));
}

TEST(NeverReadsBackend, AcceptsButNeverAnswers) {
  NeverReadsBackend silent;
  const FetchResult result = fetch(silent.endpoint(), "hello?", 200ms, AfterSend::shut_down_write);
  EXPECT_EQ(result.error, asio::error::timed_out);
  EXPECT_TRUE(result.data.empty());
  EXPECT_EQ(silent.accepted(), 1u);
  EXPECT_EQ(silent.active(), 1u) << "it never reads, so it never sees the client's FIN";
  silent.stop();
  EXPECT_EQ(silent.active(), 0u);
  EXPECT_FALSE(port_accepts(silent.endpoint()));
}

TEST(TempDir, IsRemovedWithItsContents) {
  std::filesystem::path path;
  {
    TempDir dir;
    path = dir.path();
    dir.write("file.txt", "content");
    EXPECT_TRUE(std::filesystem::is_directory(path));
    EXPECT_TRUE(std::filesystem::exists(dir / "file.txt"));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(FreePort, ReturnsABindablePort) {
  const std::uint16_t port = free_port();
  EXPECT_NE(port, 0);
  EchoBackend echo(loopback(port));
  EXPECT_EQ(echo.port(), port);
}

TEST(ParseEndpoint, ReadsIpv4AndBracketedIpv6) {
  EXPECT_EQ(parse_endpoint("127.0.0.1:6443"), loopback(6443));
  EXPECT_EQ(parse_endpoint("[::1]:80"), loopback_v6(80));
  EXPECT_EQ(to_string(loopback_v6(80)), "[::1]:80");
  EXPECT_FALSE(parse_endpoint("localhost:80"));
  EXPECT_FALSE(parse_endpoint("127.0.0.1:65536"));
  EXPECT_FALSE(parse_endpoint("127.0.0.1"));
}

TEST(ChildProcess, CapturesOutputAndExitStatus) {
  ChildProcess child("/bin/sh", {"-c", "echo to-stdout; echo to-stderr >&2; exit 3"});
  EXPECT_EQ(child.wait_exit(10s), 3);
  EXPECT_TRUE(child.wait_for_log("to-stdout\n", 1s));
  EXPECT_NE(child.log().find("to-stderr\n"), std::string::npos);
}

TEST(ChildProcess, ReportsDeathBySignalLikeAShell) {
  ChildProcess child("/bin/sh", {"-c", "echo ready; exec sleep 60"});
  ASSERT_TRUE(child.wait_for_log("ready", 10s));
  EXPECT_FALSE(child.wait_exit(0ms));
  child.send_signal(SIGTERM);
  EXPECT_EQ(child.wait_exit(10s), 128 + SIGTERM);
}

TEST(ChildProcess, InheritsNoSocketOfTheTest) {
  // A child holding a fake's listening socket would keep a stopped target's port answering.
  EchoBackend echo;
  ChildProcess child("/bin/ls", {"-l", "/proc/self/fd"});
  EXPECT_EQ(child.wait_exit(10s), 0);
  const std::string fds = child.log();
  EXPECT_NE(fds.find("/dev/null"), std::string::npos) << fds;
  EXPECT_EQ(fds.find("socket:"), std::string::npos) << fds;
}

TEST(ChildProcess, FeedsStdinFromAFileAndAddsEnvironment) {
  TempDir dir;
  const auto input = dir.write("input", "from-stdin\n");
  ChildProcess child("/bin/sh", {"-c", "cat; echo \"$APILB_TEST_VAR\""},
                     SpawnOptions().with_stdin(input).with_env("APILB_TEST_VAR=from-env"));
  EXPECT_EQ(child.wait_exit(10s), 0);
  EXPECT_EQ(child.log(), "from-stdin\nfrom-env\n");
}

TEST(ChildProcess, ThrowsWhenTheExecutableCannotStart) {
  EXPECT_THROW(ChildProcess("/nonexistent/apilb-no-such-binary", {}), std::system_error);
}

TEST(ChildProcess, KillsItsChildOnDestruction) {
  pid_t pid = -1;
  {
    ChildProcess child("/bin/sh", {"-c", "exec sleep 60"});
    pid = child.pid();
  }
  EXPECT_NE(::kill(pid, 0), 0) << "reaped, so the pid is gone";
}

TEST(ApiserverStandin, ServesItsNameOverTlsWithAVerifiableGeneratedCertificate) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("alpha"));
  ASSERT_FALSE(standin.cert_file().empty());

  TempDir dir;
  const auto request =
      dir.write("request", "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  ChildProcess client(
      "/usr/bin/openssl",
      {"s_client", "-connect", to_string(standin.endpoint()), "-servername", "localhost", "-CAfile",
       standin.cert_file().string(), "-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet"},
      SpawnOptions().with_stdin(request));
  EXPECT_EQ(client.wait_exit(10s), 0);
  const std::string output = client.log();
  EXPECT_NE(output.find("HTTP/1.1 200 OK"), std::string::npos) << output;
  EXPECT_NE(output.find("\r\n\r\nalpha\n"), std::string::npos) << output;

  const HttpReply stats = http_get(standin.control_endpoint(), "/standin/stats");
  EXPECT_NE(stats.body.find("handshakes 1\n"), std::string::npos) << stats.body;
  EXPECT_NE(stats.body.find("last_sni localhost\n"), std::string::npos) << stats.body;
}

TEST(ApiserverStandin, PutsTheRequestedSansIntoItsCertificate) {
  StandinProcess standin(APILB_STANDIN,
                         StandinOptions("beta").with_san("IP:10.0.0.1,DNS:api.example"));
  ChildProcess show("/usr/bin/openssl", {"x509", "-in", standin.cert_file().string(), "-noout",
                                         "-ext", "subjectAltName", "-subject"});
  EXPECT_EQ(show.wait_exit(10s), 0);
  const std::string output = show.log();
  EXPECT_NE(output.find("IP Address:10.0.0.1, DNS:api.example"), std::string::npos) << output;
  EXPECT_NE(output.find("CN = beta"), std::string::npos) << output;
}

TEST(ApiserverStandin, ReadyzFollowsTheStatusSetAtRunTime) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("gamma").plain_http());
  const tcp::endpoint api = standin.endpoint();

  HttpReply ready = http_get(api, "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.error.message();
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ok");
  EXPECT_EQ(http_get(api, "/").body, "gamma\n");
  EXPECT_EQ(http_get(api, "/livez").status, 200);
  EXPECT_EQ(http_get(api, "/no/such/path").status, 404);

  ASSERT_TRUE(standin.set_readyz(500));
  const HttpReply failing = http_get(api, "/readyz");
  EXPECT_EQ(failing.status, 500);
  EXPECT_NE(failing.body.find("[+]ping ok\n"), std::string::npos) << failing.body;
  EXPECT_NE(failing.body.find("[-]etcd failed: reason withheld\n"), std::string::npos)
      << failing.body;
  EXPECT_TRUE(failing.body.ends_with("readyz check failed\n")) << failing.body;

  ASSERT_TRUE(standin.set_readyz(200));
  const HttpReply verbose = http_get(api, "/readyz?verbose");
  EXPECT_EQ(verbose.status, 200);
  EXPECT_EQ(verbose.body.find("[-]"), std::string::npos) << verbose.body;
  EXPECT_TRUE(verbose.body.ends_with("readyz check passed\n")) << verbose.body;
}

TEST(ApiserverStandin, KeepsConnectionsAliveUntilAskedToClose) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("delta").plain_http());
  const std::string two_requests =
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const FetchResult result = fetch(standin.endpoint(), two_requests, 5s);
  EXPECT_FALSE(result.error) << result.error.message();
  EXPECT_NE(result.data.find("\r\n\r\ndelta\n"), std::string::npos) << result.data;
  EXPECT_TRUE(result.data.ends_with("\r\n\r\nok")) << result.data;
}

TEST(ApiserverStandin, ExitsZeroOnSigterm) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("epsilon"));
  standin.process().send_signal(SIGTERM);
  EXPECT_EQ(standin.process().wait_exit(5s), 0);
  EXPECT_FALSE(port_accepts(standin.endpoint()));
}

TEST(ApiserverStandin, PrintsExactlyOneListeningLine) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("zeta").listening_on("[::1]:0"));
  const std::string log = standin.process().log();
  const std::string line =
      "apiserver-standin zeta listening on " + to_string(standin.endpoint()) + "\n";
  EXPECT_NE(log.find(line), std::string::npos) << log;
  EXPECT_EQ(log.find("listening on"), log.rfind("listening on")) << log;
  EXPECT_TRUE(standin.endpoint().address().is_v6());
}

}  // namespace
}  // namespace apilb::test
