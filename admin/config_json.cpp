// The effective configuration as JSON for /status (and so the status page).
#include "admin/status_page.hpp"

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

namespace apilb::admin {

namespace json = boost::json;

namespace {

json::array addresses(const std::vector<config::Address>& list) {
  json::array out;
  for (const auto& a : list) out.emplace_back(a.to_string());
  return out;
}

json::value optional_address(const std::optional<config::Address>& a) {
  if (!a) return nullptr;
  return json::value(a->to_string());
}

std::string duration(config::Duration d) { return config::format_duration(d); }

json::object health_json(const config::Health& h) {
  return json::object{
      {"mode", std::string(config::to_string(h.mode))},
      {"interval", duration(h.interval)},
      {"down_interval", duration(h.settled_down_interval())},
      {"timeout", duration(h.timeout)},
      {"rise", h.rise},
      {"fall", h.fall},
      {"path", h.path},
      {"ca_file", h.ca_file},
      {"cert_file", h.cert_file},
      // A path is not the key, but nothing about the key is shown: the admin API has no
      // authentication and its output ends up in tickets and screenshots.
      {"key_file", h.key_file.empty() ? "" : "(set, not shown)"},
  };
}

}  // namespace

json::object config_json(const config::Config& c) {
  json::object o;
  o["listen"] = addresses(c.listen);
  o["admin"] = json::object{{"listen", optional_address(c.admin.listen)}};
  o["targets"] = addresses(c.targets);
  o["targets_file"] = c.targets_file;
  o["first_master"] = optional_address(c.first_master);
  o["balance"] = std::string(config::to_string(c.balance));
  o["health"] = health_json(c.health);
  o["upstream"] = json::object{
      {"connect_timeout", duration(c.upstream.connect_timeout)},
      {"retries", c.upstream.retries},
      {"on_target_down", std::string(config::to_string(c.upstream.on_target_down))},
  };
  o["tcp"] = json::object{
      {"keepalive_idle", duration(c.tcp.keepalive_idle)},
      {"keepalive_interval", duration(c.tcp.keepalive_interval)},
      {"keepalive_count", c.tcp.keepalive_count},
      {"user_timeout", duration(c.tcp.user_timeout)},
  };
  o["relay"] = json::object{
      {"splice", std::string(config::to_string(c.relay.splice))},
      {"engine", std::string(config::to_string(c.relay.engine))},
      {"buffer_size", c.relay.buffer_size},
  };
  o["limits"] = json::object{{"max_connections", c.limits.max_connections}};
  json::array listeners;
  for (const config::Listener& l : c.listeners) {
    json::object entry{{"listen", addresses(l.listen)}, {"target_port", l.port()}};
    if (l.health_from) entry["health_from"] = *l.health_from;
    else entry["health"] = health_json(l.health);
    listeners.emplace_back(std::move(entry));
  }
  o["listeners"] = std::move(listeners);
  o["rebalance"] = json::object{
      {"enabled", c.rebalance.enabled},
      {"threshold", c.rebalance.threshold},
      {"after", duration(c.rebalance.after)},
      {"rate", c.rebalance.rate},
  };
  o["upgrade"] =
      json::object{{"socket", c.upgrade.socket_path()}, {"timeout", duration(c.upgrade.timeout)}};
  o["drain_timeout"] = duration(c.drain_timeout);
  o["threads"] = c.threads;
  o["log"] = json::object{
      {"level", std::string(config::to_string(c.log.level))},
      {"format", std::string(config::to_string(c.log.format))},
  };
  return o;
}

}  // namespace apilb::admin
