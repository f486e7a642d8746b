package admin

// DefaultSocketDoc describes DefaultSocket's choice, for help texts and
// manual pages (the path itself depends on where the program runs).
const DefaultSocketDoc = "$TUNVS_SOCKET, else the first of /run/tunvs.sock, $XDG_RUNTIME_DIR/tunvs.sock and $TMPDIR/tunvs-UID.sock whose directory is writable"

// ClientUsage is the part of tunvsadm's help that is tunvsadm's own, not
// ipvsadm's.
const ClientUsage = `tunvsadm's own options:
  --socket PATH                       the daemon's control socket (default: ` + DefaultSocketDoc + `;
                                      tunvs run chooses the same way)
  --version      -v                   tunvsadm's version, commit and Go toolchain

Environment:
  TUNVS_SOCKET                        the control socket, as --socket
`
