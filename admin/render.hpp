#pragma once

// Rendering of the admin views: pure functions of an AdminView (or of a /status document), no
// sockets. The status page, /status, /metrics and the `status` command's table all come from here.

#include "admin/view.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace apilb::admin {

// /status as JSON, /metrics as Prometheus text (0.0.4).
std::string render_status_json(const AdminView& view);
std::string render_metrics(const AdminView& view);
// The `apiserver-lb status` table, from a /status document; nullopt when it is not one.
std::optional<std::string> render_status_table(std::string_view status_json, bool* ready);

}  // namespace apilb::admin
