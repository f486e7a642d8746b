// Package e2e holds the end-to-end tests: the tunvs daemon on real TUN
// devices, real kernel TCP and UDP clients and servers in network
// namespaces built by internal/netns, as root and as uid 65534 inside a user
// namespace.
package e2e
