#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <vector>

namespace apilb::lb {

// Relay buffers of one worker. A connection takes one only while bytes are in flight and gives it
// back at once, so idle connections (watches) hold none. Not thread-safe: one pool per worker.
class BufferPool {
 public:
  explicit BufferPool(std::size_t buffer_size, std::size_t keep = 256)
      : size_(buffer_size), keep_(keep) {}
  std::size_t buffer_size() const noexcept { return size_; }

  std::unique_ptr<char[]> take() {
    if (free_.empty()) return std::make_unique_for_overwrite<char[]>(size_);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(std::unique_ptr<char[]> b) {
    if (b && free_.size() < keep_) free_.push_back(std::move(b));
  }

 private:
  std::size_t size_;
  std::size_t keep_;
  std::vector<std::unique_ptr<char[]>> free_;
};

// A pipe for splice(2): bytes go socket -> pipe -> socket without entering user space.
struct Pipe {
  int read = -1;
  int write = -1;
  explicit operator bool() const noexcept { return read >= 0; }
};

// Pipes of one worker, as HAProxy pools them: only empty pipes come back; a pipe that still holds
// bytes of an aborted connection is closed instead. Not thread-safe: one pool per worker.
class PipePool {
 public:
  // Pipes are enlarged from the default 64 KiB to `size` where the kernel allows it (up to
  // /proc/sys/fs/pipe-max-size, and while the user's pipe pages stay below
  // pipe-user-pages-soft), so that one splice pair moves up to that much.
  explicit PipePool(std::size_t keep = 64, int size = kDefaultSize) : keep_(keep), size_(size) {
    free_.reserve(keep);
  }
  static constexpr int kDefaultSize = 256 * 1024;
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;
  ~PipePool() {
    for (Pipe p : free_) close(p);
  }

  // An empty pipe, or an invalid one when the process is out of file descriptors.
  Pipe take() noexcept {
    if (!free_.empty()) {
      Pipe p = free_.back();
      free_.pop_back();
      return p;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return {};
    ::fcntl(fds[1], F_SETPIPE_SZ, size_);  // failure leaves the default: still correct
    return {fds[0], fds[1]};
  }
  void give(Pipe p) noexcept {
    if (free_.size() < keep_) {
      free_.push_back(p);
    } else {
      close(p);
    }
  }
  static void close(Pipe p) noexcept {
    if (!p) return;
    ::close(p.read);
    ::close(p.write);
  }

 private:
  std::size_t keep_;
  int size_;
  std::vector<Pipe> free_;
};

}  // namespace apilb::lb
