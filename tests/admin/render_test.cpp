// The admin views rendered from a hand-made AdminView: /metrics text (the table of families),
// /status JSON and the `status` command's table. No sockets.
#include "admin/render.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace apilb::admin {
namespace {

AdminView sample_view() {
  AdminView v;
  v.listeners = {"[::1]:6443", "127.0.0.1:6443"};
  v.listening = true;
  v.bugs = 2;
  v.reloads_succeeded = 3;
  v.bytes_spliced = 4096;
  healthcheck::TargetStatus t;
  t.name = "10.0.0.11:6443";
  t.state = healthcheck::TargetState::up;
  auto stats = std::make_shared<healthcheck::TargetStats>();
  stats->active = 5;
  stats->bytes_upstream = 100;
  stats->bytes_downstream = 200;
  t.stats = stats;
  t.checks.observe(0.002);
  t.left_service = 1;
  v.targets.push_back(t);
  return v;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(RenderMetrics, PerTargetFamiliesCarryTheTargetLabelLast) {
  const std::string m = render_metrics(sample_view());
  EXPECT_TRUE(has_line(m, "apiserver_lb_target_up{target=\"10.0.0.11:6443\"} 1")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_connections_active{target=\"10.0.0.11:6443\"} 5")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_failovers_total{target=\"10.0.0.11:6443\"} 1")) << m;
  EXPECT_TRUE(
      has_line(m, "apiserver_lb_bytes_total{direction=\"upstream\",target=\"10.0.0.11:6443\"} 100"))
      << m;
  EXPECT_TRUE(has_line(
      m, "apiserver_lb_bytes_total{direction=\"downstream\",target=\"10.0.0.11:6443\"} 200"))
      << m;
  EXPECT_TRUE(has_line(m, "# TYPE apiserver_lb_bytes_total counter")) << m;
}

TEST(RenderMetrics, ProcessWideFamiliesAndTheBugCounter) {
  const std::string m = render_metrics(sample_view());
  EXPECT_TRUE(has_line(m, "apiserver_lb_ready 1")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_panic_mode 0")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_config_reloads_total{result=\"success\"} 3")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_relay_bytes_total{mode=\"splice\"} 4096")) << m;
  EXPECT_TRUE(has_line(m, "apiserver_lb_bugs_total 2")) << m;
  EXPECT_TRUE(has_line(m, "# TYPE process_open_fds gauge")) << m;
  EXPECT_TRUE(
      has_line(m, "apiserver_lb_health_check_duration_seconds_count{target=\"10.0.0.11:6443\"} 1"))
      << m;
}

TEST(RenderStatus, BracketsIpv6ListenersAndRoundTripsIntoTheTable) {
  const std::string json = render_status_json(sample_view());
  EXPECT_NE(json.find("\"listeners\":[\"[::1]:6443\",\"127.0.0.1:6443\"]"), std::string::npos)
      << json;
  bool ready = false;
  const auto table = render_status_table(json, &ready);
  ASSERT_TRUE(table);
  EXPECT_TRUE(ready);
  EXPECT_NE(table->find("10.0.0.11:6443"), std::string::npos) << *table;
  EXPECT_FALSE(render_status_table("{\"not\": \"status\"}", nullptr));
}

}  // namespace
}  // namespace apilb::admin
