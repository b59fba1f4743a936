#pragma once

// Test hosts: a network namespace per stand-in master, reached from the root namespace over a veth
// pair, so a test can make a master's whole host stop answering (no RST, no ICMP) the way a
// silently dead or partitioned machine does. Needs root and iproute2; nftables for the preferred
// way to blackhole. Traffic only ever goes to these namespaces' own addresses (10.231.N.0/30).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace apilb::test {

// The first executable called `name` in $PATH or, since tests may run without sbin in $PATH, in
// /usr/sbin, /sbin, /usr/bin, /bin. Empty when there is none.
std::filesystem::path find_program(std::string_view name);

// Runs `argv` (argv[0] an absolute path) to completion with stdin /dev/null, inheriting no
// descriptor but 0, 1 and 2, and returns its exit status (128 + N when killed by signal N) and
// everything it wrote to stdout and stderr. Killed at the deadline (status 128 + SIGKILL).
struct CommandResult {
  int status = -1;
  std::string output;
  bool ok() const { return status == 0; }
};
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds deadline = std::chrono::seconds(10));

// How TestHost::blackhole() silences a host.
enum class BlackholeMethod {
  automatic,  // nftables when `nft` exists, else link_down
  nftables,   // a table inside the namespace whose prerouting and output hooks drop everything
  link_down,  // the namespace's end of the veth goes down; the root side keeps a permanent
              // neighbour entry, so no ARP failure turns the silence into EHOSTUNREACH
};

// A network namespace named apilb-PID-I with a veth pair to the root namespace: root side
// 10.231.N.1/30 (link apilbNr), namespace side 10.231.N.2/30 (link apilbNn), both up, loopback up
// in the namespace, permanent neighbour entries both ways. N is claimed atomically across
// processes by creating the link apilbNr. The destructor deletes the link and the namespace (and
// SIGKILLs anything still running in it), also when the test failed. Declare a TestHost before
// the processes that run in it, so they are gone first. Not copyable, not movable.
class TestHost {
 public:
  // Throws std::runtime_error (with the failing command's output) when the host cannot be made.
  TestHost();
  TestHost(const TestHost&) = delete;
  TestHost& operator=(const TestHost&) = delete;
  ~TestHost();

  // Empty when test hosts can be made here (root, iproute2, namespaces and veth work; checked once
  // per process by making one), otherwise why not, for GTEST_SKIP. Also deletes namespaces left by
  // test processes that no longer exist.
  static const std::string& unavailable_reason();
  static bool available() { return unavailable_reason().empty(); }

  const std::string& name() const { return name_; }            // the namespace
  const std::string& root_link() const { return root_link_; }  // apilbNr, in the root namespace
  const std::string& host_link() const { return host_link_; }  // apilbNn, in the namespace
  boost::asio::ip::address_v4 address() const { return address_; }            // 10.231.N.2
  boost::asio::ip::address_v4 root_address() const { return root_address_; }  // 10.231.N.1
  boost::asio::ip::tcp::endpoint endpoint(std::uint16_t port) const { return {address_, port}; }

  // The argv prefix that runs a command inside the namespace: {"/usr/sbin/ip", "netns", "exec",
  // name()}. `ip netns exec` execs the command, so a ChildProcess started with it has the
  // command's own pid (signals reach the command itself).
  std::vector<std::string> run_in() const;

  // From now on the host answers nothing: no SYN-ACK, no RST, no ICMP, no data on established
  // connections. Returns the method used. Throws std::runtime_error when it cannot.
  BlackholeMethod blackhole(BlackholeMethod method = BlackholeMethod::automatic);
  // Undoes blackhole(): the host answers again.
  void restore();

 private:
  void ip(const std::vector<std::string>& args) const;  // throws with the output on failure
  void remove() noexcept;

  std::string name_;
  std::string root_link_;
  std::string host_link_;
  boost::asio::ip::address_v4 address_;
  boost::asio::ip::address_v4 root_address_;
  std::filesystem::path ip_;
  bool blackholed_by_nft_ = false;
  bool link_down_ = false;
};

}  // namespace apilb::test
