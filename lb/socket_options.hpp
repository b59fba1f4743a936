#pragma once

#include "config/config.hpp"

namespace apilb::lb {

// TCP_NODELAY, keepalive and TCP_USER_TIMEOUT, so that a dead peer (a master that vanished without
// a RST, a client that lost its network) is found in tens of seconds instead of the kernel's 15
// minutes. Listening sockets pass these on to the sockets they accept (Linux copies them on
// accept), so they are set once per listener. Failures are ignored: they only tune.
void tune_tcp(int fd, const config::Tcp& tcp) noexcept;

// The two halves of tune_tcp for an upstream socket: TCP_NODELAY before its first byte, and the
// dead-peer detection (keepalive, TCP_USER_TIMEOUT: five setsockopt calls) once the connection has
// lived a second or two; see Forwarder. Whether the second half sets anything at all.
void set_nodelay(int fd) noexcept;
void tune_dead_peer_detection(int fd, const config::Tcp& tcp) noexcept;
bool detects_dead_peers(const config::Tcp& tcp) noexcept;

// TCP_INQ: every recvmsg(2) also says how many bytes are left to read, and 1 once only a FIN is
// left, so a read that took all the data also tells whether the peer has finished. Listening
// sockets pass it on to the sockets they accept. Failures are ignored: without it the relay reads
// once more.
void report_unread(int fd) noexcept;

// Never let a write to a closed peer (splice(2) has no MSG_NOSIGNAL) kill the process.
void ignore_sigpipe() noexcept;

}  // namespace apilb::lb
