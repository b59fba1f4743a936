#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <filesystem>
#include <functional>
#include <memory>

namespace apilb::control {

// Watches the installer's targets file through inotify on its directory, so an atomic rename onto
// it, an in-place write, a delete and a re-create are all seen (a watch on the file itself would
// follow the old inode away after the first rename). Calls `changed` on the executor, debounced,
// after the file may have changed. Lives on the control thread; destroy it before the executor's
// io_context.
class FeedWatcher {
 public:
  FeedWatcher(boost::asio::any_io_executor executor, std::filesystem::path file,
              std::function<void()> changed);
  ~FeedWatcher();
  FeedWatcher(const FeedWatcher&) = delete;
  FeedWatcher& operator=(const FeedWatcher&) = delete;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace apilb::control
