#pragma once

// How discovery reaches and authenticates to the apiserver: from a kubeconfig file (its current
// context) or from a pod's service-account files. Plain values; the load functions do blocking
// file I/O and belong on the control thread or in the CLI.

#include "config/error.hpp"

#include <filesystem>
#include <string>
#include <string_view>

namespace apilb::discovery {

inline constexpr std::string_view kServiceAccountDir =
    "/var/run/secrets/kubernetes.io/serviceaccount";

struct Credentials {
  std::string source;  // the kubeconfig or the service-account directory, for logs and errors
  // The name the apiserver's certificate must cover, sent as SNI: the host of the kubeconfig's
  // cluster.server (an IP literal or a DNS name, without brackets or port), or the cluster's
  // tls-server-name when it sets one; in-cluster "kubernetes.default.svc". The connection itself
  // goes through the balancer's own listener, whatever address the kubeconfig names.
  std::string server_name;
  std::string ca_pem;      // certificate-authority(-data) / ca.crt: PEM text; never empty
  std::string cert_pem;    // client-certificate(-data): PEM text; with key_pem, or neither
  std::string key_pem;     // client-key(-data)
  std::string token;       // users[].user.token: a bearer token; or
  std::string token_file;  // tokenFile / the service account's `token`: read at each connect
                           // (bound service-account tokens rotate)
};

// The current context's cluster and user. Relative file paths are relative to the kubeconfig's
// directory, as kubectl reads them. Errors name the file, line and field
// ("admin.conf:12:7: users[0].user.client-key-data: not base64"); refused, with a reason saying
// what to use instead: exec and auth-provider plugins, username/password, a context or cluster
// or user that is not defined, insecure-skip-tls-verify (discovery verifies the CA always), no CA,
// no credentials at all.
config::Result<Credentials> load_kubeconfig(const std::filesystem::path& file);
// `dir`/ca.crt and `dir`/token (read at load to check it is there; token_file is set).
config::Result<Credentials> load_in_cluster(
    const std::filesystem::path& dir = std::filesystem::path(kServiceAccountDir));

}  // namespace apilb::discovery
