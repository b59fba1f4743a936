#include "base/coroutine.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <stdexcept>

namespace apilb::base {
namespace {
std::atomic<std::uint64_t> escaped{0};
}  // namespace

void report_escaped(std::string_view where, std::exception_ptr e) noexcept {
  escaped.fetch_add(1, std::memory_order_relaxed);
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::critical("bug: exception escaped {}: {}", where, ex.what());
  } catch (...) {
    spdlog::critical("bug: exception escaped {}: not a std::exception", where);
  }
}

std::uint64_t bugs_reported() noexcept { return escaped.load(std::memory_order_relaxed); }

}  // namespace apilb::base
