#include "control/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

namespace apilb::control {
namespace {

// %j: the message as the body of a JSON string (quotes, backslashes and control bytes escaped).
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (const char ch : msg.payload) {
      switch (ch) {
        case '"':
          dest.append(std::string_view("\\\""));
          break;
        case '\\':
          dest.append(std::string_view("\\\\"));
          break;
        case '\n':
          dest.append(std::string_view("\\n"));
          break;
        case '\t':
          dest.append(std::string_view("\\t"));
          break;
        default:
          if (static_cast<unsigned char>(ch) < 0x20) {
            char esc[8];
            const int n = std::snprintf(esc, sizeof esc, "\\u%04x", ch);
            dest.append(esc, esc + n);
          } else {
            dest.push_back(ch);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

spdlog::level::level_enum to_spdlog(config::LogLevel level) {
  switch (level) {
    case config::LogLevel::trace:
      return spdlog::level::trace;
    case config::LogLevel::debug:
      return spdlog::level::debug;
    case config::LogLevel::info:
      return spdlog::level::info;
    case config::LogLevel::warn:
      return spdlog::level::warn;
    case config::LogLevel::error:
      return spdlog::level::err;
    case config::LogLevel::critical:
      return spdlog::level::critical;
    case config::LogLevel::off:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

void setup_logging(const config::Log& log) {
  // Replacing the default logger while workers log through it is a race (spdlog hands out raw
  // pointers), so a reload changes the existing logger in place: level and formatter are safe.
  auto logger = spdlog::default_logger();
  if (!logger || logger->name() != "apiserver-lb") {
    logger = std::make_shared<spdlog::logger>("apiserver-lb",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->flush_on(spdlog::level::trace);  // one line per state change: cheap, nothing is lost
    spdlog::set_default_logger(logger);
  }
  std::unique_ptr<spdlog::pattern_formatter> formatter;
  if (log.format == config::LogFormat::json) {
    formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('j').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"msg":"%j"})");
  } else {
    formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %-5l %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(to_spdlog(log.level));
}

}  // namespace apilb::control
