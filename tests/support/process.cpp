#include "tests/support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>

#include "tests/support/wait.hpp"

extern char** environ;

namespace apilb::test {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

int decode_status(int raw) {
  if (WIFEXITED(raw)) return WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) return 128 + WTERMSIG(raw);
  return -1;
}

}  // namespace

// ---- TempDir ----------------------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      (base != nullptr && *base != '\0' ? std::string(base) : std::string("/tmp")) +
      "/apilb-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = pattern;
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    TempDir old(std::move(*this));
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

fs::path TempDir::write(std::string_view name, std::string_view content) const {
  const fs::path file = path_ / name;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + file.string());
  return file;
}

// ---- addresses --------------------------------------------------------------------------------

std::uint16_t free_port(const asio::ip::address& address) {
  const tcp::endpoint bind(address, 0);
  const int fd = ::socket(bind.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("socket");
  tcp::endpoint bound;
  socklen_t len = static_cast<socklen_t>(bound.capacity());
  if (::bind(fd, bind.data(), static_cast<socklen_t>(bind.size())) != 0 ||
      ::getsockname(fd, bound.data(), &len) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    throw_errno("free_port");
  }
  bound.resize(len);
  ::close(fd);
  return bound.port();
}

std::optional<tcp::endpoint> parse_endpoint(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](unsigned char c) { return std::isdigit(c) != 0; })) {
    return std::nullopt;
  }
  const unsigned long number = std::stoul(std::string(port));
  if (number > 65535) return std::nullopt;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  return tcp::endpoint(address, static_cast<std::uint16_t>(number));
}

std::string to_string(const tcp::endpoint& endpoint) {
  const std::string host = endpoint.address().to_string();
  return (endpoint.address().is_v6() ? "[" + host + "]" : host) + ":" +
         std::to_string(endpoint.port());
}

// ---- ChildProcess -----------------------------------------------------------------------------

ChildProcess::ChildProcess(fs::path executable, std::vector<std::string> args, SpawnOptions options)
    : executable_(std::move(executable)) {
  if (options.log_file.empty()) {
    log_dir_.emplace();
    log_path_ = *log_dir_ / "output.log";
  } else {
    log_path_ = std::move(options.log_file);
  }

  // Everything the child needs is built here: between fork and exec only async-signal-safe calls.
  std::vector<std::string> arg_strings;
  arg_strings.push_back(executable_.string());
  for (auto& arg : args) arg_strings.push_back(std::move(arg));
  std::vector<char*> argv;
  for (auto& arg : arg_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view inherited(*entry);
    const auto name = inherited.substr(0, inherited.find('=') + 1);
    const bool overridden = std::any_of(options.env.begin(), options.env.end(),
                                        [&](const std::string& e) { return e.starts_with(name); });
    if (!overridden) env_strings.emplace_back(inherited);
  }
  for (auto& entry : options.env) env_strings.push_back(std::move(entry));
  std::vector<char*> envp;
  for (auto& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);

  const std::string stdin_path =
      options.stdin_file.empty() ? "/dev/null" : options.stdin_file.string();
  const int in_fd = ::open(stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in_fd < 0) throw_errno("open " + stdin_path);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    const int saved = errno;
    ::close(in_fd);
    errno = saved;
    throw_errno("open " + log_path_.string());
  }
  int error_pipe[2];  // the child reports a failed exec through it; exec closes it on success
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    ::close(in_fd);
    ::close(log_fd);
    throw_errno("pipe2");
  }
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  const int max_fd = files.rlim_cur == RLIM_INFINITY
                         ? 65536
                         : static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20));
  const pid_t parent = ::getpid();

  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(in_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    int report = error_pipe[1];
    if (report != 3) report = ::dup3(report, 3, O_CLOEXEC);
    // No descriptor of the test (listening sockets of fakes!) may leak into the child.
    if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
      for (int fd = 4; fd < max_fd; ++fd) ::close(fd);
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction defaults {};
    defaults.sa_handler = SIG_DFL;
    for (int signo = 1; signo < NSIG; ++signo) ::sigaction(signo, &defaults, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    const int error = errno;
    if (report >= 0) [[maybe_unused]]
      auto written = ::write(report, &error, sizeof error);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(error_pipe[1]);
  ::close(in_fd);
  ::close(log_fd);
  if (pid_ < 0) {
    ::close(error_pipe[0]);
    throw std::system_error(fork_errno, std::generic_category(), "fork");
  }
  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(error_pipe[0], &exec_errno, sizeof exec_errno);
  } while (got < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (got > 0) {
    int raw = 0;
    ::waitpid(pid_, &raw, 0);
    status_ = decode_status(raw);
    throw std::system_error(exec_errno, std::generic_category(), "exec " + executable_.string());
  }
}

ChildProcess::~ChildProcess() {
  kill();
  if (::testing::Test::HasFailure()) {
    std::string text = log();
    constexpr std::size_t kTail = 64 * 1024;
    if (text.size() > kTail) text = "[...]\n" + text.substr(text.size() - kTail);
    std::cerr << "---- output of " << executable_.filename().string() << " (pid " << pid_
              << ", exit " << (status_ ? std::to_string(*status_) : "?") << ") ----\n"
              << text << (text.ends_with('\n') ? "" : "\n") << "---- end of output ----\n";
  }
}

bool ChildProcess::running() {
  if (status_) return false;
  int raw = 0;
  const pid_t got = ::waitpid(pid_, &raw, WNOHANG);
  if (got == pid_) {
    status_ = decode_status(raw);
    return false;
  }
  return got == 0;
}

void ChildProcess::send_signal(int signo) {
  if (!status_) ::kill(pid_, signo);
}

std::optional<int> ChildProcess::wait_exit(std::chrono::milliseconds deadline) {
  wait_until([this] { return !running(); }, deadline, std::chrono::milliseconds(2));
  return status_;
}

void ChildProcess::kill() {
  if (status_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int raw = 0;
  pid_t got;
  do {
    got = ::waitpid(pid_, &raw, 0);
  } while (got < 0 && errno == EINTR);
  status_ = got == pid_ ? decode_status(raw) : -1;
}

std::string ChildProcess::log() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return std::move(text).str();
}

bool ChildProcess::wait_for_log(std::string_view needle, std::chrono::milliseconds deadline) const {
  return wait_until([&] { return log().find(needle) != std::string::npos; }, deadline,
                    std::chrono::milliseconds(10));
}

// ---- fetch ------------------------------------------------------------------------------------

FetchResult fetch(const tcp::endpoint& endpoint, std::string_view request,
                  std::chrono::milliseconds deadline, AfterSend after_send) {
  asio::io_context ioc{1};
  tcp::socket socket(ioc);
  FetchResult result;
  boost::system::error_code write_error;
  bool done = false;
  const auto finish = [&](boost::system::error_code ec) {
    if (done) return;
    done = true;
    result.error = ec == asio::error::eof ? write_error : ec;
    boost::system::error_code ignored;
    socket.close(ignored);  // aborts a write still pending, so run_for() returns now
  };

  std::array<char, 16 * 1024> buffer;
  std::function<void()> read_more = [&] {
    socket.async_read_some(asio::buffer(buffer), [&](boost::system::error_code ec, std::size_t n) {
      result.data.append(buffer.data(), n);
      if (ec) return finish(ec);
      read_more();
    });
  };
  socket.async_connect(endpoint, [&](boost::system::error_code ec) {
    if (ec) return finish(ec);
    read_more();  // while writing: the peer may answer (echo) before the request is all out
    asio::async_write(
        socket, asio::buffer(request), [&](boost::system::error_code write_ec, std::size_t) {
          if (write_ec) {  // the read side still collects what the peer sent before it went away
            write_error = write_ec;
            return;
          }
          if (after_send == AfterSend::shut_down_write) {
            boost::system::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_send, ignored);
          }
        });
  });

  ioc.run_for(deadline);
  if (!done) finish(asio::error::timed_out);
  ioc.restart();
  ioc.run();  // let the aborted handlers run before their captures go away
  return result;
}

// ---- HTTP -------------------------------------------------------------------------------------

namespace {

boost::system::error_code bad_message() {
  return boost::system::errc::make_error_code(boost::system::errc::bad_message);
}

// Decodes a chunked body; nullopt when it is malformed or incomplete.
std::optional<std::string> dechunk(std::string_view raw) {
  std::string body;
  for (;;) {
    const auto line_end = raw.find("\r\n");
    if (line_end == std::string_view::npos) return std::nullopt;
    std::size_t size = 0;
    try {
      size = std::stoul(std::string(raw.substr(0, line_end)), nullptr, 16);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    raw.remove_prefix(line_end + 2);
    if (size == 0) return body;
    if (raw.size() < size + 2) return std::nullopt;
    body.append(raw.substr(0, size));
    raw.remove_prefix(size + 2);
  }
}

}  // namespace

HttpReply http_request(const tcp::endpoint& endpoint, std::string_view method,
                       std::string_view target, std::chrono::milliseconds deadline,
                       std::string_view body) {
  std::string request;
  request.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  request.append("Host: ").append(to_string(endpoint)).append("\r\nConnection: close\r\n");
  if (!body.empty() || method == "PUT" || method == "POST") {
    request.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  request.append("\r\n").append(body);

  FetchResult fetched = fetch(endpoint, request, deadline);
  HttpReply reply;
  reply.error = fetched.error;
  const auto head_end = fetched.data.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    if (!reply.error) reply.error = bad_message();
    return reply;
  }
  reply.head = fetched.data.substr(0, head_end);
  std::string_view rest = std::string_view(fetched.data).substr(head_end + 4);
  // "HTTP/1.1 200 OK"
  if (!reply.head.starts_with("HTTP/1.") || reply.head.size() < 12) {
    reply.error = bad_message();
    return reply;
  }
  try {
    reply.status = std::stoi(reply.head.substr(9, 3));
  } catch (const std::exception&) {
    reply.error = bad_message();
    return reply;
  }
  const std::string head = lowercase(reply.head);
  if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
    auto decoded = dechunk(rest);
    if (!decoded && !reply.error) reply.error = bad_message();
    reply.body = decoded.value_or(std::string(rest));
  } else if (const auto at = head.find("\r\ncontent-length:"); at != std::string::npos) {
    const std::size_t length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
    if (rest.size() < length && !reply.error) {
      reply.error = bad_message();
    }
    reply.body = std::string(rest.substr(0, length));
  } else {
    reply.body = std::string(rest);
  }
  return reply;
}

// ---- StandinProcess ---------------------------------------------------------------------------

namespace {

std::vector<std::string> standin_args(const StandinOptions& options, const fs::path& cert,
                                      const fs::path& key) {
  std::vector<std::string> args{
      "--listen",  options.listen, "--name",          options.name,
      "--control", "127.0.0.1:0",  "--readyz-status", std::to_string(options.readyz_status)};
  if (options.tls) {
    args.insert(args.end(), {"--write-cert", cert.string(), "--write-key", key.string()});
  } else {
    args.emplace_back("--plain");
  }
  if (!options.san.empty()) args.insert(args.end(), {"--san", options.san});
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  return args;
}

// The endpoint after `marker` ("listening on ") up to the end of its line.
std::optional<tcp::endpoint> endpoint_after(const std::string& log, std::string_view marker) {
  const auto at = log.find(marker);
  if (at == std::string::npos) return std::nullopt;
  const auto begin = at + marker.size();
  const auto end = log.find('\n', begin);
  if (end == std::string::npos) return std::nullopt;
  return parse_endpoint(std::string_view(log).substr(begin, end - begin));
}

}  // namespace

StandinProcess::StandinProcess(const fs::path& executable, StandinOptions options,
                               std::chrono::milliseconds deadline)
    : cert_file_(options.tls ? dir_ / "cert.pem" : fs::path()),
      key_file_(options.tls ? dir_ / "key.pem" : fs::path()),
      process_(executable, standin_args(options, cert_file_, key_file_)) {
  std::optional<tcp::endpoint> listening;
  std::optional<tcp::endpoint> control;
  wait_until(
      [&] {
        const std::string log = process_.log();
        listening = endpoint_after(log, " listening on ");
        control = endpoint_after(log, " control on ");
        return (listening && control) || !process_.running();
      },
      deadline, std::chrono::milliseconds(10));
  if (!listening || !control) {
    throw std::runtime_error("apiserver-standin " + options.name + " did not start listening:\n" +
                             process_.log());
  }
  endpoint_ = *listening;
  control_endpoint_ = *control;
}

bool StandinProcess::set_readyz(int status, std::string_view failing_check,
                                std::chrono::milliseconds deadline) {
  const std::string target =
      "/standin/readyz?status=" + std::to_string(status) + "&check=" + std::string(failing_check);
  return http_request(control_endpoint_, "PUT", target, deadline).status == 200;
}

}  // namespace apilb::test
