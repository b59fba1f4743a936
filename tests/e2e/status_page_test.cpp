// The status page (`/` on the admin listener) in a real browser: headless Chromium, driven over
// the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte on
// file descriptors 3 and 4, so no WebSocket client and nothing downloaded), loads the page from
// the real balancer in front of stand-in masters; a master is killed and the test reads from the
// DOM that its row turns down within the product's bound. Screenshots (1080p and a phone) land in
// APILB_SCREENSHOT_DIR. Without chromium the browser tests skip, saying so.
#include "tests/e2e/lb_process.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <boost/json/src.hpp>  // header-only Boost.JSON, compiled in this one translation unit

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace apilb::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kDeadline = 15s;
// Health settings of the balancer under test, and the bound PRODUCT.md promises with them:
// a crashed master stops receiving new connections within interval x fall + 0.5 s.
constexpr auto kInterval = 1s;
constexpr int kFall = 2;
constexpr auto kDetectionBound = kInterval * kFall + 500ms;
constexpr auto kRefresh = 250ms;  // the page's poll period in this test (`/?refresh=0.25`)

std::optional<std::filesystem::path> find_chromium() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    for (const char* name : {"chromium", "chromium-browser"}) {
      const auto candidate = std::filesystem::path(dirs.substr(start, end - start)) / name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    start = end + 1;
  }
  return std::nullopt;
}

std::string base64_decode(std::string_view in) {
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) throw std::runtime_error("bad base64");
  std::size_t padding = 0;
  for (auto it = in.rbegin(); it != in.rend() && *it == '='; ++it) ++padding;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

// Headless Chromium and a DevTools protocol client on its pipe, attached to one page. One test
// thread; the destructor closes the browser (SIGKILL if it does not go).
class Browser {
 public:
  explicit Browser(const std::filesystem::path& chromium) {
    int to_browser[2], from_browser[2];
    if (::pipe2(to_browser, O_CLOEXEC) != 0 || ::pipe2(from_browser, O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe");
    const std::string log = (dir_ / "chromium.log").string();
    const std::vector<std::string> args{chromium.string(),
                                        "--headless",
                                        "--no-sandbox",
                                        "--disable-gpu",
                                        "--disable-quic",
                                        "--no-first-run",
                                        "--disable-background-networking",
                                        "--disable-component-update",
                                        "--disable-sync",
                                        "--disable-extensions",
                                        "--mute-audio",
                                        "--hide-scrollbars",
                                        "--remote-debugging-pipe",
                                        "--user-data-dir=" + (dir_ / "profile").string(),
                                        "about:blank"};
    pid_ = ::fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      // The protocol's descriptors: the browser reads commands on 3 and writes replies on 4.
      ::dup2(to_browser[0], 3);
      ::dup2(from_browser[1], 4);
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(to_browser[0]);
    ::close(from_browser[1]);
    write_fd_ = to_browser[1];
    read_fd_ = from_browser[0];
  }
  ~Browser() {
    if (pid_ > 0) {
      try {
        call("Browser.close", {}, {}, 2s);
      } catch (const std::exception&) {
      }
      ::close(write_fd_);
      ::close(read_fd_);
      int status = 0;
      if (!wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 5s, 20ms)) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
    }
    if (::testing::Test::HasFailure()) {
      std::ifstream in(dir_ / "chromium.log");
      std::fprintf(stderr, "--- chromium log ---\n%s\n",
                   std::string(std::istreambuf_iterator<char>(in), {}).c_str());
    }
  }
  Browser(const Browser&) = delete;
  Browser& operator=(const Browser&) = delete;

  // Opens `url` in a new page and attaches to it; later calls go to that page.
  void open(const std::string& url) {
    const auto created = call("Target.createTarget", {{"url", url}});
    const auto attached =
        call("Target.attachToTarget", {{"targetId", created.at("targetId")}, {"flatten", true}});
    session_ = json::value_to<std::string>(attached.at("sessionId"));
  }
  void viewport(int width, int height, bool mobile) {
    call("Emulation.setDeviceMetricsOverride",
         {{"width", width},
          {"height", height},
          {"deviceScaleFactor", mobile ? 2 : 1},
          {"mobile", mobile}},
         session_);
  }
  // The value of a JavaScript expression in the page (JSON-able values only).
  json::value evaluate(const std::string& expression) {
    const auto r =
        call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}}, session_);
    if (r.contains("exceptionDetails"))
      throw std::runtime_error("in the page: " + json::serialize(r.at("exceptionDetails")));
    const auto& result = r.at("result").as_object();
    return result.contains("value") ? result.at("value") : json::value(nullptr);
  }
  void screenshot(const std::filesystem::path& file) {
    const auto r = call("Page.captureScreenshot", {{"format", "png"}}, session_);
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << base64_decode(r.at("data").as_string());
  }

 private:
  json::object call(std::string_view method, json::object params, const std::string& session = {},
                    std::chrono::milliseconds deadline = kDeadline) {
    const std::int64_t id = next_id_++;
    json::object message{{"id", id}, {"method", method}, {"params", std::move(params)}};
    if (!session.empty()) message["sessionId"] = session;
    std::string text = json::serialize(message);
    text.push_back('\0');
    for (std::size_t sent = 0; sent < text.size();) {
      const ssize_t n = ::write(write_fd_, text.data() + sent, text.size() - sent);
      if (n <= 0) throw std::runtime_error("chromium closed its protocol pipe");
      sent += static_cast<std::size_t>(n);
    }
    const auto until = Clock::now() + deadline;
    for (;;) {
      // Events and replies to other calls come in between: skip to ours.
      for (std::size_t end; (end = buffer_.find('\0')) != std::string::npos;) {
        const json::value reply = json::parse(std::string_view(buffer_).substr(0, end));
        buffer_.erase(0, end + 1);
        const auto& o = reply.as_object();
        if (!o.contains("id") || o.at("id").to_number<std::int64_t>() != id) continue;
        if (o.contains("error"))
          throw std::runtime_error(std::string(method) + ": " + json::serialize(o.at("error")));
        return o.at("result").as_object();
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      pollfd p{read_fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        throw std::runtime_error(std::string(method) + ": no answer from chromium in time");
      char chunk[65536];
      const ssize_t n = ::read(read_fd_, chunk, sizeof chunk);
      if (n <= 0) throw std::runtime_error("chromium closed its protocol pipe");
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  TempDir dir_;
  pid_t pid_ = -1;
  int write_fd_ = -1;
  int read_fd_ = -1;
  std::int64_t next_id_ = 1;
  std::string buffer_;
  std::string session_;
};

// Each target row of the page as "address=state", in page order.
constexpr const char* kRows =
    "[...document.querySelectorAll('#targets tr[data-target]')].map(r => r.dataset.target + '=' + "
    "r.dataset.state).join(' ')";

std::string text_of(Browser& b, const std::string& selector) {
  const auto v = b.evaluate("(document.querySelector('" + selector + "') || {}).textContent || ''");
  return v.is_string() ? std::string(v.as_string()) : std::string();
}

std::string admin_config(std::string_view extra = {}) {
  return "health: { mode: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2" +
         std::string(extra) + " }\n";
}

// apiserver-lb with its admin API on a free loopback port, in front of the given masters.
struct Balancer {
  Balancer(const std::vector<std::string>& targets, const std::string& config)
      : admin_port(free_port()) {
    std::vector<std::string> args{"--config", dir.write("config.yaml", config).string(), "--admin",
                                  "127.0.0.1:" + std::to_string(admin_port)};
    for (const auto& t : targets) args.insert(args.end(), {"--target", t});
    lb.emplace(args);
  }
  std::string page_url() const { return "http://127.0.0.1:" + std::to_string(admin_port) + "/"; }
  tcp::endpoint admin() const { return loopback(admin_port); }

  TempDir dir;
  std::uint16_t admin_port;
  std::optional<LbProcess> lb;
};

TEST(StatusPage, IsOneSelfContainedReadOnlyDocument) {
  StandinProcess master(APILB_STANDIN, StandinOptions("m1").plain_http());
  Balancer b({to_string(master.endpoint())}, admin_config());
  const auto page = http_get(b.admin(), "/", kDeadline);
  ASSERT_EQ(page.status, 200) << page.head;
  EXPECT_NE(page.head.find("Content-Type: text/html; charset=utf-8"), std::string::npos)
      << page.head;
  EXPECT_NE(page.head.find("Content-Security-Policy: default-src 'none'"), std::string::npos)
      << page.head;
  EXPECT_NE(page.body.find("<!doctype html>"), std::string::npos);
  EXPECT_NE(page.body.find("name=\"viewport\""), std::string::npos)
      << "no viewport: unreadable on a phone";
  // Air-gapped: nothing is loaded from anywhere but this server.
  for (const char* remote : {"http://", "https://", "src=\"//", "@import"})
    EXPECT_EQ(page.body.find(remote), std::string::npos) << remote;
  EXPECT_EQ(page.body.find("innerHTML"), std::string::npos)
      << "data must be rendered as text, never parsed as HTML";
  EXPECT_EQ(http_get(b.admin(), "/?refresh=1", kDeadline).status, 200);
  for (const char* method : {"POST", "PUT", "DELETE"})
    EXPECT_EQ(http_request(b.admin(), method, "/", kDeadline).status, 405) << method;
}

TEST(StatusPage, StatusCarriesWhatThePageShowsAndNoKeyPath) {
  StandinProcess master(APILB_STANDIN, StandinOptions("m1"));
  const std::string https = ", mode: https, ca_file: \"" + master.cert_file().string() +
                            "\", cert_file: \"" + master.cert_file().string() + "\", key_file: \"" +
                            master.key_file().string() + "\"";
  Balancer b({to_string(master.endpoint())},
             "health: { interval: 1s, timeout: 500ms, rise: 2, fall: 2" + https + " }\n");
  ASSERT_TRUE(wait_until(
      [&] {
        return http_get(b.admin(), "/status").body.find("\"state\":\"up\"") != std::string::npos;
      },
      kDeadline));
  const auto body = http_get(b.admin(), "/status", kDeadline).body;
  const json::object s = json::parse(body).as_object();
  const auto& t = s.at("targets").as_array().at(0).as_object();
  EXPECT_GE(t.at("seconds_in_state").to_number<double>(), 0.0);
  EXPECT_EQ(t.at("failovers").to_number<int>(), 0);
  const auto& changes = s.at("recent_changes").as_array();
  ASSERT_FALSE(changes.empty());
  EXPECT_EQ(changes.back().at("to").as_string(), "up");
  EXPECT_EQ(changes.back().at("target").as_string(), to_string(master.endpoint()));
  const auto& config = s.at("config").as_object();
  EXPECT_EQ(config.at("health").at("mode").as_string(), "https");
  EXPECT_EQ(config.at("health").at("ca_file").as_string(), master.cert_file().string());
  EXPECT_EQ(config.at("health").at("key_file").as_string(), "(set, not shown)");
  EXPECT_EQ(body.find(master.key_file().string()), std::string::npos) << body;
  EXPECT_TRUE(s.at("reloads").at("last_ok").as_bool());
}

TEST(StatusPage, AKilledMastersRowTurnsDownWithinTheBoundInChromium) {
  const auto chromium = find_chromium();
  if (!chromium)
    GTEST_SKIP()
        << "chromium is not installed (scripts/install-deps.sh installs it): no browser test";
  std::optional<StandinProcess> alpha(std::in_place, APILB_STANDIN,
                                      StandinOptions("alpha").plain_http());
  std::optional<StandinProcess> beta(std::in_place, APILB_STANDIN,
                                     StandinOptions("beta").plain_http());
  const std::string a = to_string(alpha->endpoint()), z = to_string(beta->endpoint());
  Balancer b({a, z}, admin_config());
  Browser browser(*chromium);
  browser.open(b.page_url() + "?refresh=0.25");
  browser.viewport(1920, 1080, false);

  const std::string both_up = a + "=up " + z + "=up";
  ASSERT_TRUE(
      wait_until([&] { return browser.evaluate(kRows) == json::value(both_up); }, kDeadline))
      << browser.evaluate(kRows);
  // Some traffic, so the counters and rates on the page move.
  for (int i = 0; i < 6; ++i)
    ASSERT_NE(fetch(b.lb->endpoint(), "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
                    kDeadline)
                  .data.find("200 OK"),
              std::string::npos);
  EXPECT_EQ(text_of(browser, "#ready"), "ready");

  beta->process().kill();
  const auto killed = Clock::now();
  const std::string one_down = a + "=up " + z + "=down";
  const bool down =
      wait_until([&] { return browser.evaluate(kRows) == json::value(one_down); }, kDeadline, 20ms);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
  std::printf(
      "status page: %s shown down %lld ms after SIGKILL (interval 1s, fall 2, page refresh %lld "
      "ms)\n",
      z.c_str(), static_cast<long long>(took.count()), static_cast<long long>(kRefresh.count()));
  ASSERT_TRUE(down) << browser.evaluate(kRows);
  // The balancer's bound, plus one poll of the page and its fetch.
  EXPECT_LE(took, kDetectionBound + kRefresh + 250ms);

  // What the row and the rest of the page say about it.
  const std::string row = "#targets tr[data-target=\"" + z + "\"]";
  EXPECT_EQ(text_of(browser, row + " td[data-label=State]"), "down");
  EXPECT_NE(text_of(browser, row + " td[data-label=\"Last check\"]").find("connection refused"),
            std::string::npos)
      << text_of(browser, row);
  EXPECT_EQ(browser.evaluate("[...document.querySelectorAll('#targets td[data-label=Connections]')]"
                             ".reduce((n, td) => n + Number(td.textContent), 0)"),
            json::value(6));
  EXPECT_NE(text_of(browser, "#changes").find(z + ": up → down"), std::string::npos)
      << text_of(browser, "#changes");
  EXPECT_NE(text_of(browser, "#facts").find(to_string(b.lb->endpoint())), std::string::npos)
      << "listeners";
  EXPECT_NE(text_of(browser, "#config").find("health.interval1s"), std::string::npos)
      << text_of(browser, "#config");
  EXPECT_EQ(text_of(browser, "#ready"), "ready");
  const std::filesystem::path dir = APILB_SCREENSHOT_DIR;
  browser.screenshot(dir / "status_page_1080p.png");
  EXPECT_EQ(browser.evaluate("document.documentElement.scrollWidth <= innerWidth"),
            json::value(true))
      << "a horizontal scroll bar at 1920x1080";

  // A phone: no sideways scrolling, every target a card.
  browser.viewport(390, 844, true);
  ASSERT_TRUE(wait_until(
      [&] {
        return browser.evaluate("document.documentElement.scrollWidth <= innerWidth") ==
               json::value(true);
      },
      5s))
      << browser.evaluate("document.documentElement.scrollWidth");
  EXPECT_EQ(browser.evaluate("getComputedStyle(document.querySelector('#targets tr')).display"),
            json::value("block"));
  browser.screenshot(dir / "status_page_phone.png");

  // Every master gone: panic mode, said in the header and on each row.
  alpha->process().kill();
  ASSERT_TRUE(wait_until([&] { return text_of(browser, "#ready") == "PANIC MODE"; }, kDeadline))
      << text_of(browser, "header");
  EXPECT_EQ(text_of(browser, "#targets tr[data-target=\"" + a + "\"] td[data-label=State]"),
            "down · panic");
  std::printf("screenshots: %s/status_page_{1080p,phone}.png\n", dir.c_str());
}

}  // namespace
}  // namespace apilb::test
