#pragma once

#include "config/config.hpp"

#include <boost/json/object.hpp>

#include <string_view>

namespace apilb::admin {

// The status page served at `/` of the admin API: one HTML document with its CSS and a few lines
// of plain JavaScript inline (no framework, nothing fetched from elsewhere: it works air-gapped),
// which polls /status and renders it. Static text, valid for the whole program's lifetime.
std::string_view status_page_html() noexcept;

// The configuration in force as /status shows it: every field, durations as in the file, the
// health check's key_file never shown (only whether one is set).
boost::json::object config_json(const config::Config& config);

}  // namespace apilb::admin
