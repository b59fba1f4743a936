#pragma once

// The target feed: a small YAML file that installers (and `apiserver-lb targets`) write and the
// balancer watches. Format (PRODUCT.md):
//   targets:
//     - 10.0.0.11:6443                            # a plain entry
//     - { address: 10.0.0.12:6443, drain: true }  # planned maintenance: no new connections
// Everything here is plain functions on values, safe from any thread; the file functions do
// blocking I/O and belong on the control thread or in the CLI.

#include "config/address.hpp"
#include "config/error.hpp"

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::config {

struct Config;

struct FeedEntry {
  Address address;
  bool drain = false;  // planned maintenance: send no new connections there
  friend bool operator==(const FeedEntry&, const FeedEntry&) = default;
};

// The feed as read: addresses normalised (port 6443 filled in), no address twice.
struct Feed {
  std::vector<FeedEntry> targets;
  // True when the file said `targets:` followed by a list, even `[]`. False for an empty or
  // comment-only file and for a bare `targets:`, which is also what a file caught half-written
  // looks like: an empty feed with explicit_list false is no evidence that the list should be
  // empty. render_feed() always writes a list, so an empty feed it wrote reads back as
  // `targets: []`.
  bool explicit_list = false;

  // The entry for `address`, or nullptr.
  FeedEntry* find(const Address& address);
  const FeedEntry* find(const Address& address) const;
};

// Parses YAML text. `file` only names the source in errors, which name file:line:col and the
// field ("targets[1].drain") as parse_config's do. Unknown keys, malformed addresses and an
// address listed twice are errors.
Result<Feed> parse_feed(std::string_view yaml, std::string_view file);

// Reads and parses a file. The three outcomes are distinct on purpose:
//   a Feed        the file exists and is valid;
//   std::nullopt  there is no such file (ENOENT): no feed, which a reader may take as empty;
//   an Error      the file exists but cannot be read or does not parse (line 0 for I/O errors):
//                 a reader must keep what it had, never treat this as empty.
Result<std::optional<Feed>> load_feed(const std::filesystem::path& file);

// The canonical text of `feed`, which parse_feed() reads back to the same entries: a header
// comment, then plain entries as scalars and drained ones as `{ address: X, drain: true }`;
// `targets: []` when there are none.
// `header`: the comment lines at the top ("" for the feed's own, which says who manages it).
std::string render_feed(const Feed& feed, std::string_view header = {});

// Replaces `file` with render_feed(feed) so that a reader sees the old file or the new one, never
// a mix, even across a crash: writes `<file>.tmp.<pid>` in the same directory, fsyncs it, renames
// it over `file` and fsyncs the directory. Keeps the mode of the file it replaces (0644 for a new
// one). Not safe against a concurrent writer by itself: update_feed() serialises writers. Errors
// name the path and say what failed ("cannot write: No space left on device").
Result<void> write_feed_atomically(const std::filesystem::path& file, const Feed& feed,
                                   std::string_view header = {});

// An edit of a feed in place. Returns true when it changed something, false to leave the file as
// it is (nothing is written), or an Error to refuse, which update_feed() returns unchanged.
using FeedEdit = std::function<Result<bool>(Feed&)>;

enum class UpdateMode {
  // Read the current file (absent: empty), apply the edit, write it back. Refuses to overwrite a
  // file that does not parse, and refuses an edit that leaves no target at all.
  edit,
  // `targets set`: the edit starts from an empty feed, whatever the file holds (it is not even
  // parsed, so this also replaces a broken file), and may leave the list empty on purpose.
  replace,
};

// A read-modify-write under an exclusive flock on `<file>.lock` (a separate file: the rename
// replaces the feed's inode, so a lock on the feed itself would not exclude the next writer).
// Concurrent updates, from threads or processes, are serialised and none is lost. The lock file
// stays in place. Returns whether the file was written.
Result<bool> update_feed(const std::filesystem::path& file, const FeedEdit& edit,
                         UpdateMode mode = UpdateMode::edit);

// Whether the balancer takes a targets_file it has just read (`loaded`, as load_feed returned it
// for config.targets_file) in place of `current`, the last good feed. Refused, keeping `current`:
// a file that does not parse; one that is empty without saying `targets: []` (what a half-written
// file looks like); a file that is gone while no other target (static or first_master) is
// configured. `unchanged` (after start) when the targets are the same. Pure: no I/O.
struct FeedDecision {
  enum class Verdict { take, unchanged, refuse };
  Verdict verdict = Verdict::refuse;
  Feed next;        // what to take
  std::string why;  // why it was refused: "targets.yaml is empty (write `targets: []` ...)"
};
FeedDecision accept_feed(const Feed& current, const Result<std::optional<Feed>>& loaded,
                         const Config& config, bool at_start);

}  // namespace apilb::config
