// The test helpers themselves, against real loopback sockets and real child processes.

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

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

// ---- EndpointSlices: list and watch from --slice-file --------------------------------------

constexpr std::string_view kSlices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
constexpr std::string_view kSelector = "labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";

// A blocking HTTPS client over one connection, reading with deadlines (poll on a non-blocking
// socket, so a TLS 1.3 session ticket cannot leave a read hanging). Trusts `ca` for 127.0.0.1.
class TlsClient {
 public:
  using clock = std::chrono::steady_clock;

  TlsClient(const tcp::endpoint& endpoint, const std::filesystem::path& ca)
      : ctx_(SSL_CTX_new(TLS_client_method())) {
    SSL_CTX_load_verify_locations(ctx_, ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(endpoint.port());
    address.sin_addr.s_addr = htonl(endpoint.address().to_v4().to_uint());
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), "127.0.0.1");
    if (SSL_connect(ssl_) != 1) return;
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    connected_ = true;
  }
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;
  ~TlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }

  bool connected() const { return connected_; }
  bool closed() const { return closed_; }  // the server ended the connection (EOF or reset)

  // GET target with `headers` ("Name: value\r\n" each); keep-alive.
  bool send_get(std::string_view target, std::string_view headers = {}) {
    std::string request = "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    request.append(headers).append("\r\n");
    std::string_view left = request;
    const auto until = clock::now() + std::chrono::seconds(5);
    while (!left.empty()) {
      const int n = SSL_write(ssl_, left.data(), static_cast<int>(left.size()));
      if (n > 0) {
        left.remove_prefix(static_cast<std::size_t>(n));
      } else if (!wait_socket(SSL_get_error(ssl_, n), until)) {
        return false;
      }
    }
    return true;
  }

  // The status line and headers of the next response; nullopt at EOF or the deadline.
  std::optional<std::string> head(std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
    const auto until = clock::now() + deadline;
    for (;;) {
      if (const auto end = buffer_.find("\r\n\r\n"); end != std::string::npos) {
        std::string head = buffer_.substr(0, end);
        buffer_.erase(0, end + 4);
        return head;
      }
      if (!read_more(until)) return std::nullopt;
    }
  }

  // The next chunk's data, "" for the last chunk; nullopt when the stream ended before a whole
  // chunk (closed() tells an abrupt end from the deadline).
  std::optional<std::string> chunk(std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
    const auto until = clock::now() + deadline;
    for (;;) {
      if (const auto line = buffer_.find("\r\n"); line != std::string::npos) {
        const std::size_t size = std::stoul(buffer_.substr(0, line), nullptr, 16);
        if (buffer_.size() >= line + 2 + size + 2) {
          std::string data = buffer_.substr(line + 2, size);
          buffer_.erase(0, line + 2 + size + 2);
          return data;
        }
      }
      if (!read_more(until)) return std::nullopt;
    }
  }

  std::optional<std::string> body(std::size_t length,
                                  std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
    const auto until = clock::now() + deadline;
    while (buffer_.size() < length) {
      if (!read_more(until)) return std::nullopt;
    }
    std::string body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return body;
  }

 private:
  // After SSL_ERROR_WANT_READ/WRITE: waits for the socket; false on any other error.
  bool wait_socket(int error, clock::time_point until) {
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      closed_ = true;
      return false;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now());
    if (left.count() <= 0) return false;
    pollfd ready{.fd = fd_,
                 .events = static_cast<short>(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT),
                 .revents = 0};
    return ::poll(&ready, 1, static_cast<int>(left.count())) > 0;
  }

  bool read_more(clock::time_point until) {
    for (;;) {
      char data[16384];
      const int n = SSL_read(ssl_, data, sizeof data);
      if (n > 0) {
        buffer_.append(data, static_cast<std::size_t>(n));
        return true;
      }
      if (!wait_socket(SSL_get_error(ssl_, n), until)) return false;
    }
  }

  SSL_CTX* ctx_;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buffer_;
};

struct JsonReply {
  int status = 0;
  std::string head;
  std::string body;
};

JsonReply get(TlsClient& client, std::string_view target, std::string_view headers = {}) {
  JsonReply reply;
  if (!client.send_get(target, headers)) return reply;
  const auto head = client.head();
  if (!head || head->size() < 12) return reply;
  reply.head = *head;
  reply.status = std::stoi(head->substr(9, 3));
  const auto at = head->find("Content-Length: ");
  if (at == std::string::npos) return reply;
  reply.body = client.body(std::stoul(head->substr(at + 16))).value_or("");
  return reply;
}

// One line of /standin/stats ("watching 1"); -1 when it does not answer.
std::int64_t standin_stat(const StandinProcess& standin, std::string_view name) {
  const HttpReply stats = http_get(standin.control_endpoint(), "/standin/stats");
  const std::string key = "\n" + std::string(name) + " ";
  const std::string body = "\n" + stats.body;
  const auto at = body.find(key);
  if (!stats.ok() || at == std::string::npos) return -1;
  return std::stoll(body.substr(at + key.size()));
}

nlohmann::json slice(std::string_view name, std::string_view address,
                     std::string_view service = "kubernetes") {
  nlohmann::json slice = nlohmann::json::object();
  slice["kind"] = "EndpointSlice";
  slice["apiVersion"] = "discovery.k8s.io/v1";
  slice["metadata"]["name"] = name;
  slice["metadata"]["namespace"] = "default";
  slice["metadata"]["labels"]["kubernetes.io/service-name"] = service;
  slice["addressType"] = "IPv4";
  nlohmann::json endpoint = nlohmann::json::object();
  endpoint["addresses"] = nlohmann::json::array({address});
  endpoint["conditions"]["ready"] = true;
  slice["endpoints"] = nlohmann::json::array({endpoint});
  nlohmann::json port = nlohmann::json::object();
  port["name"] = "https";
  port["port"] = 6443;
  port["protocol"] = "TCP";
  slice["ports"] = nlohmann::json::array({port});
  return slice;
}

// Written as the tests of discovery will: a temporary file renamed over the old one.
std::filesystem::path write_slices(const TempDir& dir, int resource_version, int compacted,
                                   const std::vector<nlohmann::json>& slices) {
  nlohmann::json file = nlohmann::json::object();
  file["resourceVersion"] = resource_version;
  file["compacted"] = compacted;
  file["slices"] = slices;
  const auto tmp = dir.write("slices.json.tmp", file.dump());
  std::filesystem::rename(tmp, dir / "slices.json");
  return dir / "slices.json";
}

StandinOptions slice_standin(const std::filesystem::path& file) {
  return StandinOptions("slices").with_arg("--slice-file").with_arg(file.string());
}

std::string watch_target(std::string_view query) {
  return std::string(kSlices) + "?" + std::string(kSelector) + "&watch=1&" + std::string(query);
}

// The next event of a watch, parsed; a null json when none came whole.
nlohmann::json next_event(TlsClient& client,
                          std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
  const auto data = client.chunk(deadline);
  if (!data || data->empty() || !data->ends_with("\n")) return {};
  return nlohmann::json::parse(*data, nullptr, false);
}

TEST(ApiserverStandinSlices, ListsTheSlicesOfTheFileAtItsResourceVersion) {
  TempDir dir;
  const auto file = write_slices(
      dir, 12, 0, {slice("kubernetes", "10.0.0.1"), slice("other-abc", "10.9.9.9", "other")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());

  for (const std::string& selector :
       {std::string(kSelector) + "&limit=500",
        std::string("labelSelector=kubernetes.io/service-name=kubernetes")}) {
    const JsonReply reply = get(client, std::string(kSlices) + "?" + selector);
    ASSERT_EQ(reply.status, 200) << reply.head << reply.body;
    EXPECT_NE(reply.head.find("Content-Type: application/json"), std::string::npos) << reply.head;
    const auto list = nlohmann::json::parse(reply.body);
    EXPECT_EQ(list["kind"], "EndpointSliceList");
    EXPECT_EQ(list["apiVersion"], "discovery.k8s.io/v1");
    EXPECT_EQ(list["metadata"]["resourceVersion"], "12");
    ASSERT_EQ(list["items"].size(), 1u) << reply.body;
    EXPECT_EQ(list["items"][0]["metadata"]["name"], "kubernetes");
    EXPECT_EQ(list["items"][0]["metadata"]["resourceVersion"], "12");
    EXPECT_EQ(list["items"][0]["endpoints"][0]["addresses"][0], "10.0.0.1");
  }
  EXPECT_EQ(standin_stat(standin, "lists"), 2);
}

TEST(ApiserverStandinSlices, KeepsTheLastSlicesWhenTheFileDoesNotParse) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  const auto tmp = dir.write("slices.json.tmp", "{\"resourceVersion\": 13, \"slices\": [");
  std::filesystem::rename(tmp, file);
  ASSERT_TRUE(standin.process().wait_for_log("slices.json: ignored", 5s));

  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  const JsonReply reply = get(client, std::string(kSlices) + "?" + std::string(kSelector));
  ASSERT_EQ(reply.status, 200) << reply.head;
  EXPECT_EQ(nlohmann::json::parse(reply.body)["metadata"]["resourceVersion"], "12");
}

TEST(ApiserverStandinSlices, AnswersTheSlicesPathWith404WithoutASliceFile) {
  StandinProcess standin(APILB_STANDIN, StandinOptions("no-slices").plain_http());
  EXPECT_EQ(
      http_get(standin.endpoint(), std::string(kSlices) + "?" + std::string(kSelector)).status,
      404);
}

TEST(ApiserverStandinSlices, WatchSeesAModifiedEventWhenTheFileGetsAHigherResourceVersion) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=12")));
  const auto head = client.head();
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->starts_with("HTTP/1.1 200")) << *head;
  EXPECT_NE(head->find("Transfer-Encoding: chunked"), std::string::npos) << *head;
  ASSERT_TRUE(wait_until([&] { return standin_stat(standin, "watching") == 1; }, 5s));

  write_slices(dir, 13, 0, {slice("kubernetes", "10.0.0.2")});
  const auto modified = next_event(client);
  ASSERT_TRUE(modified.is_object()) << "no whole event";
  EXPECT_EQ(modified["type"], "MODIFIED") << modified.dump();
  EXPECT_EQ(modified["object"]["metadata"]["name"], "kubernetes");
  EXPECT_EQ(modified["object"]["metadata"]["resourceVersion"], "13");
  EXPECT_EQ(modified["object"]["endpoints"][0]["addresses"][0], "10.0.0.2");
  EXPECT_EQ(standin_stat(standin, "watches"), 1);
}

TEST(ApiserverStandinSlices, WatchSendsAddedAndDeletedByName) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes-a", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=12")));
  ASSERT_TRUE(client.head());
  ASSERT_TRUE(wait_until([&] { return standin_stat(standin, "watching") == 1; }, 5s));

  write_slices(dir, 14, 0, {slice("kubernetes-b", "10.0.0.2")});
  const auto added = next_event(client);
  EXPECT_EQ(added["type"], "ADDED") << added.dump();
  EXPECT_EQ(added["object"]["metadata"]["name"], "kubernetes-b");
  const auto deleted = next_event(client);
  EXPECT_EQ(deleted["type"], "DELETED") << deleted.dump();
  EXPECT_EQ(deleted["object"]["metadata"]["name"], "kubernetes-a");
  EXPECT_EQ(deleted["object"]["metadata"]["resourceVersion"], "14");
}

TEST(ApiserverStandinSlices, SendsBookmarksAtTheBookmarkInterval) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN,
                         slice_standin(file).with_arg("--bookmark-interval").with_arg("50"));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=12&allowWatchBookmarks=true")));
  ASSERT_TRUE(client.head());
  for (int i = 0; i < 2; ++i) {
    const auto bookmark = next_event(client);
    EXPECT_EQ(bookmark["type"], "BOOKMARK") << bookmark.dump();
    EXPECT_EQ(bookmark["object"]["kind"], "EndpointSlice");
    EXPECT_EQ(bookmark["object"]["metadata"]["resourceVersion"], "12");
  }
}

TEST(ApiserverStandinSlices, AnswersAWatchFromBeforeTheCompactionWith410Expired) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 10, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=5")));
  const auto head = client.head();
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->starts_with("HTTP/1.1 200")) << *head;
  const auto error = next_event(client);
  EXPECT_EQ(error["type"], "ERROR") << error.dump();
  EXPECT_EQ(error["object"]["kind"], "Status");
  EXPECT_EQ(error["object"]["reason"], "Expired");
  EXPECT_EQ(error["object"]["code"], 410);
  EXPECT_EQ(error["object"]["message"], "too old resource version: 5 (10)");
  EXPECT_EQ(client.chunk(), "") << "the stream ends with its last chunk";
}

TEST(ApiserverStandinSlices, EndsAWatchCleanlyAfterTimeoutSecondsAndKeepsTheConnection) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=12&timeoutSeconds=1")));
  ASSERT_TRUE(client.head());
  EXPECT_EQ(client.chunk(10s), "");
  const JsonReply list = get(client, std::string(kSlices) + "?" + std::string(kSelector));
  EXPECT_EQ(list.status, 200) << list.head;
  EXPECT_TRUE(wait_until([&] { return standin_stat(standin, "watching") == 0; }, 5s));
}

TEST(ApiserverStandinSlices, DropWatchesEndsAnOpenWatchWithoutItsLastChunk) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(APILB_STANDIN, slice_standin(file));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_get(watch_target("resourceVersion=12")));
  ASSERT_TRUE(client.head());
  ASSERT_TRUE(wait_until([&] { return standin_stat(standin, "watching") == 1; }, 5s));

  EXPECT_EQ(http_request(standin.control_endpoint(), "POST", "/standin/drop-watches").status, 200);
  EXPECT_EQ(client.chunk(5s), std::nullopt);
  EXPECT_TRUE(client.closed()) << "cut, not timed out";
  EXPECT_TRUE(wait_until([&] { return standin_stat(standin, "watching") == 0; }, 5s));
}

TEST(ApiserverStandinSlices, ABearerTokenAuthorisesAndNoCredentialIs401UnderNoAnonymous) {
  TempDir dir;
  const auto file = write_slices(dir, 12, 0, {slice("kubernetes", "10.0.0.1")});
  StandinProcess standin(
      APILB_STANDIN,
      slice_standin(file).with_arg("--no-anonymous").with_arg("--token").with_arg("s3cret"));
  TlsClient client(standin.endpoint(), standin.cert_file());
  ASSERT_TRUE(client.connected());
  const std::string target = std::string(kSlices) + "?" + std::string(kSelector);

  const JsonReply anonymous = get(client, target);
  EXPECT_EQ(anonymous.status, 401) << anonymous.head;
  const auto status = nlohmann::json::parse(anonymous.body, nullptr, false);
  EXPECT_EQ(status["kind"], "Status") << anonymous.body;
  EXPECT_EQ(status["reason"], "Unauthorized");
  EXPECT_EQ(status["code"], 401);

  EXPECT_EQ(get(client, target, "Authorization: Bearer wrong\r\n").status, 401);
  const JsonReply authorised = get(client, target, "Authorization: Bearer s3cret\r\n");
  EXPECT_EQ(authorised.status, 200) << authorised.head;
  EXPECT_EQ(nlohmann::json::parse(authorised.body)["metadata"]["resourceVersion"], "12");
}

}  // namespace
}  // namespace apilb::test
