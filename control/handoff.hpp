#pragma once

// The upgrade hand-off between two apiserver-lb processes, over the Unix socket `upgrade.socket`
// (SOCK_SEQPACKET: one message a packet, descriptors beside it as SCM_RIGHTS). Three parties:
//   `apiserver-lb upgrade` (the command)  -> old: "upgrade\n<binary>"; old -> command: "ok <pid>"
//                                                    or "failed <why>"
//   new (started by old, APILB_TAKEOVER set) -> old: "takeover" (or "failed <why>": no config)
//   old -> new: "listener <address>" + one descriptor per worker, "admin <address>" + 1, "control"
//   + 1,
//               "health\n<target> <state>..." and "end"
//   new -> old: "serving" (it accepts on every socket now) or "failed <why>"
//   old -> new: "released" (old stopped accepting; it drains its own connections and exits 0)
// The sockets move, never close: connections waiting in a backlog are accepted by the new process.

#include "healthcheck/target_set.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::control {

// The environment variable that tells a process started by an upgrade where to take over from.
inline constexpr const char* kTakeoverVariable = "APILB_TAKEOVER";

struct Message {
  std::string text;
  std::vector<int> fds;  // received descriptors, owned by the receiver (close-on-exec)
};

// One message with `fds` attached. False (errno set) when it could not be sent whole; EAGAIN on a
// non-blocking socket that is full.
bool send_message(int socket, std::string_view text, std::span<const int> fds = {});
// Receives one message, waiting up to `deadline` (0: do not wait). nullopt with errno set on
// error, EOF (errno 0) or timeout (ETIMEDOUT); EAGAIN when not waiting and nothing is there.
std::optional<Message> receive_message(int socket, std::chrono::milliseconds deadline);
// A connected SOCK_SEQPACKET socket to `path` (close-on-exec), or -1 with errno set.
int connect_to(const std::string& path);

// What a process hands over: its listening sockets and what it knows of its targets.
struct Inherited {
  std::map<std::string, std::vector<int>> listeners;  // the configured address -> descriptors
  int admin = -1;
  std::string admin_address;                               // as configured
  int control = -1;                                        // the upgrade socket itself
  std::map<std::string, healthcheck::TargetState> health;  // by target name
};

// The new process's side. Throws std::runtime_error with a clear message on any failure.
class Takeover {
 public:
  // Connects to the running process at `path` and receives everything it hands over.
  explicit Takeover(std::string path);
  ~Takeover();
  Takeover(const Takeover&) = delete;
  Takeover& operator=(const Takeover&) = delete;

  Inherited& inherited() noexcept { return inherited_; }
  // Every socket is being accepted on: the old process may stop. Waits for it to confirm.
  void serving();
  // This process cannot start: the old one keeps serving and tells the command why.
  void failed(std::string_view why) noexcept;
  // Tells the process at `path` that the process it started failed before taking over.
  static void report_failure(const std::string& path, std::string_view why) noexcept;

 private:
  std::string path_;
  int socket_ = -1;
  Inherited inherited_;
};

}  // namespace apilb::control
