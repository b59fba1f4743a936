#pragma once

// The list-then-watch client of the `kubernetes` EndpointSlices, as client-go's reflector does it:
// list (resourceVersion R), watch from R with bookmarks, keep the last resourceVersion seen,
// re-list on 410 Gone and every `resync`, back off with jitter on errors. It connects through the
// balancer's own listener, so it reaches whichever master the balancer picks, and a dead master
// only costs a reconnect to another one. HTTPS with CA verification and a client certificate or a
// bearer token (Boost.Beast and OpenSSL).
//
// One coroutine on the control executor; every member function runs there too. Destroy it before
// the executor's io_context.

#include "config/config.hpp"
#include "discovery/kubeconfig.hpp"
#include "discovery/slice.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace apilb::discovery {

struct WatchStatus {
  std::string state = "starting";  // connecting, listing, watching, backing off
  std::string resource_version;    // the last one seen
  std::string last_error;          // "" until something failed
  std::uint64_t lists = 0;         // full lists taken
  std::uint64_t watches = 0;       // watch streams opened
  std::uint64_t events = 0;        // watch events read, bookmarks included
  std::uint64_t errors = 0;        // failed connections, requests and streams
  std::chrono::system_clock::time_point last_list{};
};

class Watcher {
 public:
  // The merged list of endpoints: after every list, and after every event that changes a slice.
  using Changed = std::function<void(std::vector<Endpoint>)>;
  // Where to connect: the balancer's own listener (asked at each connect; a reload may move it).
  using Through = std::function<boost::asio::ip::tcp::endpoint()>;

  // Throws std::runtime_error when the credentials' PEM text does not load.
  Watcher(boost::asio::any_io_executor executor, const config::Kubernetes& settings,
          const Credentials& credentials, Through through, Changed changed);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  const WatchStatus& status() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace apilb::discovery
