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

}  // namespace

json::object config_json(const config::Config& c) {
  json::object o;
  o["listen"] = addresses(c.listen);
  o["admin"] = json::object{{"listen", optional_address(c.admin.listen)}};
  o["targets"] = addresses(c.targets);
  o["targets_file"] = c.targets_file;
  o["first_master"] = optional_address(c.first_master);
  o["balance"] = std::string(config::to_string(c.balance));
  o["health"] = json::object{
      {"mode", std::string(config::to_string(c.health.mode))},
      {"interval", duration(c.health.interval)},
      {"down_interval", duration(c.health.settled_down_interval())},
      {"timeout", duration(c.health.timeout)},
      {"rise", c.health.rise},
      {"fall", c.health.fall},
      {"path", c.health.path},
      {"ca_file", c.health.ca_file},
      {"cert_file", c.health.cert_file},
      // A path is not the key, but nothing about the key is shown: the admin API has no
      // authentication and its output ends up in tickets and screenshots.
      {"key_file", c.health.key_file.empty() ? "" : "(set, not shown)"},
  };
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
  o["drain_timeout"] = duration(c.drain_timeout);
  o["threads"] = c.threads;
  o["log"] = json::object{
      {"level", std::string(config::to_string(c.log.level))},
      {"format", std::string(config::to_string(c.log.format))},
  };
  return o;
}

}  // namespace apilb::admin
