#pragma once

// Discovery as the controller uses it: the watch of the `kubernetes` EndpointSlices, the safety
// gate between it and the target list, and the last good discovered list kept on disk (as the
// feed's is), so a restart while the apiserver is unreachable starts from what the cluster last
// said. Lives on the control thread; destroy it before the executor's io_context.

#include "admin/view.hpp"
#include "config/config.hpp"
#include "discovery/gate.hpp"
#include "discovery/watcher.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

namespace apilb::control {

class DiscoverySource {
 public:
  using Health = std::function<discovery::HealthView()>;
  // The discovered list in force changed: rebuild the target list.
  using Applied = std::function<void()>;

  // `start`: the list in force before (a reload's), or nullopt to read the last good one from
  // disk. Throws std::runtime_error when the credentials do not load.
  DiscoverySource(boost::asio::any_io_executor executor, const config::Config& config,
                  std::optional<std::vector<discovery::Endpoint>> start,
                  discovery::Watcher::Through through, Health health, Applied applied);
  ~DiscoverySource();
  DiscoverySource(const DiscoverySource&) = delete;
  DiscoverySource& operator=(const DiscoverySource&) = delete;

  // The discovered targets in force.
  const std::vector<discovery::Endpoint>& targets() const;
  admin::DiscoveryStatus status() const;

  // Loads the credentials `config.discovery.kubernetes` names; an Error naming the file and field.
  static config::Result<discovery::Credentials> credentials(const config::Config& config);
  // Where the last good discovered list is kept: $STATE_DIRECTORY/discovery.yaml.last-good, else
  // /var/lib/apiserver-lb/discovery.yaml.last-good.
  static std::filesystem::path last_good_path();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace apilb::control
