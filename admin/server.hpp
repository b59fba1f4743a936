#pragma once

#include "admin/view.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <memory>

namespace apilb::admin {

// The read-only admin HTTP server: /healthz, /readyz, /status, /metrics. Runs on its own thread
// and io_context, so a flood of scrapes or idle connections never slows forwarding or health
// checks; asks the control executor for an AdminView per request that needs one. Slow clients
// and oversized requests are cut off. Construct on the control thread; the destructor stops it.
class AdminServer {
 public:
  using Gather = std::function<AdminView()>;  // called on `control`

  // Binds (throws std::system_error naming the address) and starts serving. Destroy it on the
  // control executor's thread (or once that executor no longer runs).
  AdminServer(const boost::asio::ip::tcp::endpoint& endpoint, boost::asio::any_io_executor control,
              Gather gather);
  // Serves on a listening socket another process handed over (an upgrade).
  AdminServer(int listening, boost::asio::any_io_executor control, Gather gather);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  boost::asio::ip::tcp::endpoint endpoint() const;
  int native_handle() const;  // the listening socket, for an upgrade to hand over

 private:
  void start();

  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with requests waiting on the control executor
};

}  // namespace apilb::admin
