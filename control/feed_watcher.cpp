#include "control/feed_watcher.hpp"

#include "base/coroutine.hpp"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace apilb::control {

namespace asio = boost::asio;
using asio::awaitable;
using base::use_nothrow;

namespace {

// Writers emit bursts (create, write, close, rename): wait for the burst to end, read once.
constexpr auto kDebounce = std::chrono::milliseconds(50);
// While the directory itself is missing, look for it again this often.
constexpr auto kRetry = std::chrono::seconds(1);
constexpr std::uint32_t kEvents = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                  IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF;

}  // namespace

struct FeedWatcher::Impl : std::enable_shared_from_this<FeedWatcher::Impl> {
  Impl(asio::any_io_executor ex, std::filesystem::path f, std::function<void()> c)
      : file(std::move(f)), changed(std::move(c)), inotify(ex), timer(ex) {}

  awaitable<void> watch(std::shared_ptr<Impl> self);  // `self` keeps this alive while it runs
  bool add_watch();
  bool concerns_file(std::string_view events, bool& watching) const;

  std::filesystem::path file;
  std::function<void()> changed;
  std::array<char, 4096> buffer;  // here rather than in the coroutine frame: frames stay small
  asio::posix::stream_descriptor inotify;
  asio::steady_timer timer;
  bool stopped = false;
};

bool FeedWatcher::Impl::add_watch() {
  const auto dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  if (::inotify_add_watch(inotify.native_handle(), dir.c_str(), kEvents) >= 0) return true;
  spdlog::warn("targets_file: cannot watch {}: {}; looking again every {}s", dir.string(),
               std::strerror(errno), kRetry.count());
  return false;
}

// Whether a batch of inotify events touches the file, or loses the watch on its directory (which
// clears `watching`).
bool FeedWatcher::Impl::concerns_file(std::string_view events, bool& watching) const {
  bool relevant = false;
  for (std::size_t at = 0; at + sizeof(inotify_event) <= events.size();) {
    inotify_event event;  // copied out: the buffer gives no alignment guarantee
    std::memcpy(&event, events.data() + at, sizeof event);
    const std::string_view name = events.substr(at + sizeof event, event.len);
    if (event.len && file.filename() == name.substr(0, name.find('\0'))) relevant = true;
    // The directory went away (or was moved): the watch is gone with it.
    if (event.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
      relevant = true, watching = false;
    at += sizeof event + event.len;
  }
  return relevant;
}

awaitable<void> FeedWatcher::Impl::watch([[maybe_unused]] std::shared_ptr<Impl> self) {
  bool watching = add_watch();
  while (!stopped) {
    if (!watching) {
      timer.expires_after(kRetry);
      co_await timer.async_wait(use_nothrow);
      if (stopped) co_return;
      if ((watching = add_watch())) changed();  // the directory is back: the file may be too
      continue;
    }
    auto [ec, n] = co_await inotify.async_read_some(asio::buffer(buffer), use_nothrow);
    if (stopped || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      spdlog::error("targets_file: inotify: {}", ec.message());
      co_return;
    }
    if (!concerns_file(std::string_view(buffer.data(), n), watching)) continue;
    timer.expires_after(kDebounce);
    co_await timer.async_wait(use_nothrow);
    if (stopped) co_return;
    changed();
  }
}

FeedWatcher::FeedWatcher(asio::any_io_executor executor, std::filesystem::path file,
                         std::function<void()> changed)
    : impl_(std::make_shared<Impl>(executor, std::move(file), std::move(changed))) {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
  impl_->inotify.assign(fd);
  base::spawn(executor, impl_->watch(impl_), "the targets_file watcher");
}

FeedWatcher::~FeedWatcher() {
  impl_->stopped = true;
  boost::system::error_code ignored;
  impl_->inotify.close(ignored);
  impl_->timer.cancel();
}

}  // namespace apilb::control
