#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdint>
#include <exception>
#include <string_view>
#include <utility>

namespace apilb::base {

// co_await op(..., use_nothrow) yields a tuple (error_code, results...) instead of throwing.
inline constexpr auto use_nothrow = boost::asio::as_tuple(boost::asio::use_awaitable);

// An exception that escapes a spawned coroutine is a bug in apiserver-lb, never a network outcome
// (those are error codes). The one policy, everywhere: log it as critical, count it
// (apiserver_lb_bugs_total), keep serving. Stopping the process would drop every client
// connection for one broken request or check; the count makes the bug visible to an alert.
void report_escaped(std::string_view where, std::exception_ptr e) noexcept;
std::uint64_t bugs_reported() noexcept;

// co_spawn with that policy: `where` names the coroutine in the log line ("the admin server").
template <typename Executor, typename Awaitable>
void spawn(Executor&& executor, Awaitable&& task, std::string_view where) {
  boost::asio::co_spawn(std::forward<Executor>(executor), std::forward<Awaitable>(task),
                        [where](std::exception_ptr e) {
                          if (e) report_escaped(where, e);
                        });
}

}  // namespace apilb::base
