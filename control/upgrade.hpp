#pragma once

// The running process's side of `apiserver-lb upgrade` (the protocol: handoff.hpp): serves the
// upgrade socket, starts the new process, hands it the listening sockets and what it knows of the
// targets, and lets the controller stop accepting once the new one serves. An upgrade that fails
// anywhere (the binary does not start, the config does not load, the new process dies or stalls)
// changes nothing here: this process never stopped accepting.

#include "config/duration.hpp"
#include "control/handoff.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/seq_packet_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace apilb::control {

// How this process was started: what an upgrade starts again (the binary now at that path).
struct Launch {
  std::string executable;
  std::vector<std::string> arguments;  // after the program name: "run", "--config", ...
};

// Tells systemd (Type=notify) `state`, e.g. "READY=1"; nothing outside systemd ($NOTIFY_SOCKET).
void notify_systemd(const std::string& state) noexcept;

class UpgradeServer {
 public:
  struct Hooks {
    std::function<std::string()> refuse;     // non-empty: why no upgrade can start now
    std::function<Inherited()> handover;     // the sockets to hand over (still owned here)
    std::function<void(pid_t)> handed_over;  // the new process serves: stop accepting, drain
  };

  // Serves on `inherited` (a descriptor handed over by the previous process) or, when it is -1,
  // binds `path`: a stale socket file is replaced, one a live process answers on is left alone
  // (and upgrades are off, with a warning). Never throws: without the socket the balancer still
  // runs, only `apiserver-lb upgrade` cannot reach it.
  UpgradeServer(boost::asio::any_io_executor executor, std::string path, int inherited,
                Launch launch, config::Duration timeout, Hooks hooks);
  ~UpgradeServer();
  UpgradeServer(const UpgradeServer&) = delete;
  UpgradeServer& operator=(const UpgradeServer&) = delete;

  int native_handle();  // -1 when not serving
  // Stops accepting here (the socket lives on in the new process).
  void stop();

 private:
  using Protocol = boost::asio::generic::seq_packet_protocol;  // AF_UNIX
  using Socket = Protocol::socket;
  struct Pending;

  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> session(Socket socket);
  boost::asio::awaitable<void> upgrade(Socket client, std::string binary);
  boost::asio::awaitable<std::string> hand_over(Pending& pending);
  boost::asio::awaitable<std::optional<Message>> receive(Socket& socket, config::Duration timeout);
  pid_t start(const std::string& binary, std::string& why) const;

  boost::asio::any_io_executor executor_;
  std::string path_;
  Launch launch_;
  config::Duration timeout_;
  Hooks hooks_;
  std::optional<boost::asio::basic_socket_acceptor<Protocol>> acceptor_;
  std::shared_ptr<Pending> pending_;
};

}  // namespace apilb::control
