#pragma once

// The io_uring engine's worker loop and listeners. Internal to lb/ (forwarder.cpp calls it).

#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <memory>

namespace apilb::lb {

struct Worker;

// Runs the worker on its own ring until Forwarder::stop(); then closes everything it holds.
void run_uring(Worker& w);
// On the worker thread, while run_uring runs: accepts on `acceptor`'s descriptor with a multishot
// accept on the ring, its connections going to the targets of `pool`; stops accepting on one
// endpoint, or all.
void uring_listen(Worker& w, std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor,
                  std::size_t pool);
void uring_unlisten(Worker& w, const boost::asio::ip::tcp::endpoint& endpoint);
void uring_stop_accepting(Worker& w);
// A connection found no descriptor for its upstream socket. A multishot accept keeps the
// RLIMIT_NOFILE it was armed with, so after the limit was lowered (prlimit) it would go on
// accepting clients we cannot serve: re-arm it, so that accept fails with EMFILE and backs off as
// the epoll engine's accept4 does.
void uring_short_of_descriptors(Worker& w);

}  // namespace apilb::lb
