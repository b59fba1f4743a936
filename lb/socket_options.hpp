#pragma once

#include "config/config.hpp"

namespace apilb::lb {

// TCP_NODELAY, keepalive and TCP_USER_TIMEOUT, so that a dead peer (a master that vanished without a
// RST, a client that lost its network) is found in tens of seconds instead of the kernel's 15 minutes.
// Listening sockets pass these on to the sockets they accept (Linux copies them on accept), so they
// are set once per listener. Failures are ignored: they only tune.
void tune_tcp(int fd, const config::Tcp& tcp) noexcept;

// The two halves of tune_tcp for an upstream socket: TCP_NODELAY before its first byte, and the
// dead-peer detection (keepalive, TCP_USER_TIMEOUT: five setsockopt calls) once the connection has
// lived a second or two; see Forwarder. Whether the second half sets anything at all.
void set_nodelay(int fd) noexcept;
void tune_dead_peer_detection(int fd, const config::Tcp& tcp) noexcept;
bool detects_dead_peers(const config::Tcp& tcp) noexcept;

// Never let a write to a closed peer (splice(2) has no MSG_NOSIGNAL) kill the process.
void ignore_sigpipe() noexcept;

}  // namespace apilb::lb
