#pragma once

// Child processes, temporary directories and tiny blocking clients for end-to-end tests: the real
// apiserver-lb binary and the apiserver-standin run as children, talked to over loopback.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

namespace apilb::test {

using tcp = boost::asio::ip::tcp;

// A fresh directory (mkdtemp under $TMPDIR, else /tmp), removed with its contents on destruction.
// Movable, not copyable; a moved-from TempDir owns nothing.
class TempDir {
 public:
  TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }
  // Writes `content` to path()/name (replacing it) and returns the full path.
  std::filesystem::path write(std::string_view name, std::string_view content) const;

 private:
  std::filesystem::path path_;
};

// A TCP port on `address` that was free a moment ago: binds port 0, reads the port, closes.
// Racy by nature: another process may take the port before the caller binds it. Prefer letting the
// program under test bind port 0 and report the port (apiserver-standin does); use this only for
// programs that cannot, and expect a rare EADDRINUSE.
std::uint16_t free_port(
    const boost::asio::ip::address& address = boost::asio::ip::address_v4::loopback());

// "127.0.0.1:6443" or "[::1]:6443" (IP literals only) to an endpoint.
std::optional<tcp::endpoint> parse_endpoint(std::string_view text);
// The inverse: "127.0.0.1:6443", "[::1]:6443".
std::string to_string(const tcp::endpoint& endpoint);

// Fluent, since GCC 12's -Wextra flags designated initializers that leave members out:
// SpawnOptions().with_stdin(file).with_env("NAME=value").
struct SpawnOptions {
  std::filesystem::path stdin_file;  // empty: /dev/null
  std::vector<std::string>
      env;  // "NAME=value", added to (or replacing in) the inherited environment
  std::filesystem::path log_file;  // empty: a file in a TempDir the ChildProcess owns

  SpawnOptions& with_stdin(std::filesystem::path file) {
    stdin_file = std::move(file);
    return *this;
  }
  SpawnOptions& with_env(std::string entry) {
    env.push_back(std::move(entry));
    return *this;
  }
  SpawnOptions& with_log(std::filesystem::path file) {
    log_file = std::move(file);
    return *this;
  }
};

// A child process (fork + exec) with stdout and stderr appended to one log file. Owned by one test
// thread. The child gets SIGKILL if the spawning thread dies (PR_SET_PDEATHSIG), and inherits no
// file descriptor but 0, 1 and 2. The destructor SIGKILLs and reaps it if it still runs, and, when
// the current test has failed, copies the tail of the log to stderr.
class ChildProcess {
 public:
  // Throws std::system_error when the executable cannot be started.
  ChildProcess(std::filesystem::path executable, std::vector<std::string> args,
               SpawnOptions options = {});
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running();               // reaps the child if it has exited
  void send_signal(int signo);  // a no-op once reaped
  // The exit status once the child has exited, nullopt if it still runs at the deadline. A child
  // killed by signal N reports 128 + N, as a shell does.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  void kill();  // SIGKILL and reap; idempotent

  std::string log() const;  // everything it has written so far
  bool wait_for_log(std::string_view needle, std::chrono::milliseconds deadline) const;
  const std::filesystem::path& log_path() const { return log_path_; }

 private:
  std::optional<TempDir> log_dir_;
  std::filesystem::path executable_;
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// fetch(): connect, send, read until the peer closes, all within one deadline.
enum class AfterSend { keep_open, shut_down_write };
struct FetchResult {
  // Empty when the whole request went out and the peer closed cleanly (EOF) in time;
  // asio::error::timed_out at the deadline; otherwise what failed first on the read side
  // (connection_refused, connection_reset, ...), or else the write's error (broken_pipe).
  boost::system::error_code error;
  std::string data;  // every byte received, also when `error` is set
};
// Reads while it sends, so an echo of a large request cannot deadlock. With
// AfterSend::shut_down_write it half-closes once the request is sent (an echo server then ends).
FetchResult fetch(const tcp::endpoint& endpoint, std::string_view request,
                  std::chrono::milliseconds deadline, AfterSend after_send = AfterSend::keep_open);

// One HTTP/1.1 exchange with `Connection: close`, over plain TCP.
struct HttpReply {
  boost::system::error_code
      error;         // as FetchResult::error; also bad_message for an unparsable reply
  int status = 0;    // 0 when no status line arrived
  std::string head;  // status line and headers, without the blank line
  std::string body;  // de-chunked when Transfer-Encoding: chunked
  bool ok() const { return !error && status != 0; }
};
HttpReply http_request(const tcp::endpoint& endpoint, std::string_view method,
                       std::string_view target,
                       std::chrono::milliseconds deadline = std::chrono::seconds(5),
                       std::string_view body = {});
inline HttpReply http_get(const tcp::endpoint& endpoint, std::string_view target,
                          std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
  return http_request(endpoint, "GET", target, deadline);
}

// How to start an apiserver-standin: StandinOptions("alpha").plain_http().with_san("IP:10.0.0.1").
struct StandinOptions {
  explicit StandinOptions(std::string standin_name = "standin") : name(std::move(standin_name)) {}

  std::string name;
  std::string listen = "127.0.0.1:0";
  bool tls = true;  // false: --plain
  int readyz_status = 200;
  std::string san;  // --san "IP:10.0.0.1,DNS:x"; empty: 127.0.0.1, ::1, localhost
  std::vector<std::string> extra_args;  // appended as they are

  StandinOptions& listening_on(std::string address) {
    listen = std::move(address);
    return *this;
  }
  StandinOptions& plain_http() {
    tls = false;
    return *this;
  }
  StandinOptions& with_readyz_status(int status) {
    readyz_status = status;
    return *this;
  }
  StandinOptions& with_san(std::string sans) {
    san = std::move(sans);
    return *this;
  }
  StandinOptions& with_arg(std::string arg) {
    extra_args.push_back(std::move(arg));
    return *this;
  }
};

// apiserver-standin as a child process, started and listening when the constructor returns.
// It always gets a plain-HTTP control port (the same handlers) so tests can flip /readyz without
// TLS, and writes its certificate and key (PEM) into a TempDir the object owns. One test thread.
class StandinProcess {
 public:
  // Throws std::runtime_error (with the child's log) if it is not listening within `deadline`.
  StandinProcess(const std::filesystem::path& executable, StandinOptions options = StandinOptions(),
                 std::chrono::milliseconds deadline = std::chrono::seconds(10));

  tcp::endpoint endpoint() const { return endpoint_; }  // the apiserver port
  std::uint16_t port() const { return endpoint_.port(); }
  tcp::endpoint control_endpoint() const { return control_endpoint_; }   // plain HTTP
  const std::filesystem::path& cert_file() const { return cert_file_; }  // empty with tls = false
  const std::filesystem::path& key_file() const { return key_file_; }
  // PUT /standin/readyz?status=N&check=CHECK on the control port; true when it answered 200.
  bool set_readyz(int status, std::string_view failing_check = "etcd",
                  std::chrono::milliseconds deadline = std::chrono::seconds(5));
  ChildProcess& process() { return process_; }

 private:
  TempDir dir_;
  std::filesystem::path cert_file_;
  std::filesystem::path key_file_;
  ChildProcess process_;
  tcp::endpoint endpoint_;
  tcp::endpoint control_endpoint_;
};

}  // namespace apilb::test
