#include "config/feed.hpp"

#include "config/config.hpp"
#include "config/yaml_util.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace apilb::config {
namespace {

using detail::Field;
using detail::in_quotes;
using detail::Role;

// One entry: a plain address, or `{ address: ..., drain: true|false }`.
FeedEntry read_entry(const Field& item) {
  FeedEntry entry;
  if (!item.is_map()) {
    entry.address = item.address(Role::target);
    return entry;
  }
  bool has_address = false;
  item.fields({
      {"address",
       [&](const Field& v) {
         entry.address = v.address(Role::target);
         has_address = true;
       }},
      {"drain", [&](const Field& v) { entry.drain = v.boolean(); }},
  });
  if (!has_address) item.fail("missing address");
  return entry;
}

void read_targets(const Field& list, Feed& feed) {
  feed.explicit_list = !list.is_null();
  list.items([&](const Field& item) {
    FeedEntry entry = read_entry(item);
    if (const FeedEntry* first = feed.find(entry.address))
      item.fail(in_quotes(entry.address.to_string()) + " is already listed as targets[" +
                std::to_string(first - feed.targets.data()) + ']');
    feed.targets.push_back(std::move(entry));
  });
}

Feed read_feed(const YAML::Node& root) {
  Positions seen;  // the feed has no cross-field rules that would need them later
  Feed feed;
  Field(root, "", root.Mark(), seen)
      .fields({
          {"targets", [&](const Field& list) { read_targets(list, feed); }},
      });
  return feed;
}

// An I/O failure on `path`: "path: cannot write: No space left on device".
Error io_error(const std::filesystem::path& path, std::string_view what, int error_number = errno) {
  return Error{path.string(), 0, 0, "", std::string(what) + ": " + std::strerror(error_number)};
}

// A file descriptor closed on scope exit (errors on close are checked where they matter).
class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::filesystem::path sibling(const std::filesystem::path& file, std::string_view suffix) {
  std::filesystem::path out = file;
  out += suffix;
  return out;
}

// "." for a bare file name: open("") would fail.
std::filesystem::path directory_of(const std::filesystem::path& file) {
  const auto parent = file.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

FeedEntry* Feed::find(const Address& address) {
  const auto it = std::ranges::find(targets, address, &FeedEntry::address);
  return it == targets.end() ? nullptr : &*it;
}

const FeedEntry* Feed::find(const Address& address) const {
  return const_cast<Feed&>(*this).find(address);
}

Result<Feed> parse_feed(std::string_view yaml, std::string_view file) {
  return detail::parse_document<Feed>(yaml, file, read_feed);
}

Result<std::optional<Feed>> load_feed(const std::filesystem::path& file) {
  int error_number = 0;
  const auto text = read_text(file, error_number);
  if (!text) {
    if (error_number == ENOENT) return std::optional<Feed>();
    return io_error(file, "cannot read", error_number);
  }
  auto feed = parse_feed(*text, file.string());
  if (!feed) return feed.error();
  return std::optional<Feed>(std::move(*feed));
}

std::string render_feed(const Feed& feed, std::string_view header) {
  std::string out =
      header.empty()
          ? "# Targets of apiserver-lb: the kube-apiservers to balance across.\n"
            "# Managed by `apiserver-lb targets` and installers; it is replaced as a whole, "
            "atomically.\n"
          : std::string(header);
  out += "# Entries: ADDR or { address: ADDR, drain: true }; quote IPv6: \"[fd00::1]:6443\".\n";
  if (feed.targets.empty()) return out + "targets: []\n";
  out += "targets:\n";
  for (const auto& [address, drain] : feed.targets) {
    std::string text = address.to_string();
    if (address.is_ipv6()) text = in_quotes(text);  // a plain `[` would start a YAML list
    out += drain ? "  - { address: " + text + ", drain: true }\n" : "  - " + text + '\n';
  }
  return out;
}

Result<void> write_feed_atomically(const std::filesystem::path& file, const Feed& feed,
                                   std::string_view header) {
  const std::filesystem::path temp = sibling(file, ".tmp." + std::to_string(::getpid()));
  mode_t mode = 0644;
  if (struct stat st{}; ::stat(file.c_str(), &st) == 0) mode = st.st_mode & 07777;

  Fd out(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return io_error(temp, "cannot create");
  const auto fail = [&](std::string_view what) {
    Error e = io_error(temp, what);
    ::unlink(temp.c_str());
    return e;
  };
  // fchmod, not open's mode: the umask would narrow it.
  if (::fchmod(out.get(), mode) != 0) return fail("cannot set mode");
  if (!write_all(out.get(), render_feed(feed, header))) return fail("cannot write");
  if (::fsync(out.get()) != 0) return fail("cannot sync");
  if (::close(out.release()) != 0) return fail("cannot close");
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    Error e = io_error(file, "cannot replace with " + temp.string());
    ::unlink(temp.c_str());
    return e;
  }
  // The rename is durable only once the directory entry is on disk.
  const auto dir = directory_of(file);
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd || ::fsync(dir_fd.get()) != 0) return io_error(dir, "cannot sync directory");
  return {};
}

Result<bool> update_feed(const std::filesystem::path& file, const FeedEdit& edit, UpdateMode mode) {
  const std::filesystem::path lock_path = sibling(file, ".lock");
  const Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock) return io_error(lock_path, "cannot open lock file");
  while (::flock(lock.get(), LOCK_EX) != 0)
    if (errno != EINTR) return io_error(lock_path, "cannot lock");
  // The lock goes with the descriptor, on every return below.

  Feed feed;
  if (mode == UpdateMode::edit) {
    auto current = load_feed(file);
    if (!current) {
      Error e = current.error();
      if (e.line > 0)  // it parsed badly, rather than failed to read
        e.reason +=
            " (nothing changed: fix the file, or replace it with `apiserver-lb targets set`)";
      return e;
    }
    if (*current) feed = std::move(**current);
  }
  auto changed = edit(feed);
  if (!changed) return changed.error();
  if (!*changed) return false;
  if (mode == UpdateMode::edit && feed.targets.empty())
    return Error{file.string(), 0, 0, "",
                 "refusing to remove the last target (`apiserver-lb targets set` with no address "
                 "empties the list on purpose)"};
  feed.explicit_list = true;
  if (auto written = write_feed_atomically(file, feed); !written) return written.error();
  return true;
}

FeedDecision accept_feed(const Feed& current, const Result<std::optional<Feed>>& loaded,
                         const Config& config, bool at_start) {
  using Verdict = FeedDecision::Verdict;
  if (!loaded) return {Verdict::refuse, {}, loaded.error().message()};
  Feed next = loaded->value_or(Feed{});
  const std::string& file = config.targets_file;
  if (loaded->has_value() && next.targets.empty() && !next.explicit_list)
    return {Verdict::refuse, {}, file + " is empty (write `targets: []` to empty it on purpose)"};
  const bool nothing_else = config.targets.empty() && !config.first_master;
  if (!loaded->has_value() && nothing_else && !current.targets.empty())
    return {Verdict::refuse, {}, file + " is gone and no other target is configured"};
  if (!at_start && next.targets == current.targets) return {Verdict::unchanged, {}, {}};
  return {Verdict::take, std::move(next), {}};
}

}  // namespace apilb::config
