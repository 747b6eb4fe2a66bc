# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_flexnbd_global_optspecs
    string join \n v/verbose q/quiet log-format= h/help V/version
end

function __fish_flexnbd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_flexnbd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_flexnbd_using_subcommand
    set -l cmd (__fish_flexnbd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c flexnbd -n "__fish_flexnbd_needs_command" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_needs_command" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "serve" -d 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "listen" -d 'Listen for an incoming migration on ADDR:PORT'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "read" -d 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "write" -d 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "acl" -d 'Set the access control list for a server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "status" -d 'Get the status for a server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "mirror" -d 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "mirror-speed" -d 'Set the maximum speed of a migration from a mirroring server listening on SOCK'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "break" -d 'Stop mirroring from the server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "proxy" -d 'Resiliently proxy an NBD connection between a client and a server'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL to stdout'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "man" -d 'Write the man pages into DIR, or print flexnbd(1) to stdout'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "generate" -d 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`'
complete -c flexnbd -n "__fish_flexnbd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s l -l addr -d 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s p -l port -d 'The port to serve on (0 picks a free port); not with a UNIX socket' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l socket-mode -d 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s f -l file -d 'The file to serve' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l pid-file -d 'Write the process id to PATH once serving; removed on exit' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l control-mode -d 'Permission bits of the control socket, in octal (default 0600: owner only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s x -l export-name -d 'Serve the file under this export name only (newstyle)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l handshake-timeout -d 'How long a client may take over each step of the handshake' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l max-handshakes -d 'Most connections still in their handshake at once' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l max-clients-per-address -d 'Most connections from one address at once (no limit by default)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l max-inflight -d 'Most bytes of request payloads and read buffers held for all clients' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l stall-timeout -d 'How long a client may pause in the middle of sending a request\'s payload, or leave a reply unread' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l handover-grace -d 'At a migration\'s handover, how long clients have to finish their requests' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l busy-poll -d 'How long to poll for a queue-depth-1 client\'s next request before sleeping' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l tls -d 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require' -r -f -a "off\t'No TLS (NBD_OPT_STARTTLS is refused)'
on\t'TLS offered; clients may also stay in plaintext'
require\t'Only TLS: a client that does not upgrade gets nothing but errors'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l tls-certificates -d 'The directory of TLS certificates, laid out as for nbdkit and qemu' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l max-clients -d 'Most clients served at once; further connections are closed at once' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s d -l default-deny -d 'Deny connections by default unless in ACL'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l tls-verify-peer -d 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s k -l killswitch -d 'Drop a client whose request takes longer than 120 seconds'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s r -l read-only -d 'Export the file read-only: writes, trims and zeroes get EPERM'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l oldstyle -d 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -l mirror-tls -d 'Migrations over TLS, with the client certificate of --tls-certificates'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand serve" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s l -l addr -d 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s p -l port -d 'The port to serve on (0 picks a free port); not with a UNIX socket' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l socket-mode -d 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s f -l file -d 'The file to receive into; it must exist with the source\'s size' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l pid-file -d 'Write the process id to PATH once serving; removed on exit' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l control-mode -d 'Permission bits of the control socket, in octal (default 0600: owner only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s x -l export-name -d 'Serve the file under this export name only (newstyle)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l handshake-timeout -d 'How long a client may take over each step of the handshake' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l max-handshakes -d 'Most connections still in their handshake at once' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l max-clients-per-address -d 'Most connections from one address at once (no limit by default)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l max-inflight -d 'Most bytes of request payloads and read buffers held for all clients' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l stall-timeout -d 'How long a client may pause in the middle of sending a request\'s payload, or leave a reply unread' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l handover-grace -d 'At a migration\'s handover, how long clients have to finish their requests' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l busy-poll -d 'How long to poll for a queue-depth-1 client\'s next request before sleeping' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l tls -d 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require' -r -f -a "off\t'No TLS (NBD_OPT_STARTTLS is refused)'
on\t'TLS offered; clients may also stay in plaintext'
require\t'Only TLS: a client that does not upgrade gets nothing but errors'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l tls-certificates -d 'The directory of TLS certificates, laid out as for nbdkit and qemu' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l max-clients -d 'With --serve-after-handover: most clients served at once after the handover' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s d -l default-deny -d 'Deny connections by default unless in ACL'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l tls-verify-peer -d 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l oldstyle -d 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l serve-after-handover -d 'Once the migration has handed control over, go on serving the file as `serve` would'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -l no-hash-ahead -d 'Do not hash FILE ahead of a source\'s incremental comparison'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand listen" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s l -l addr -d 'The server: an IP address (with --port), a UNIX socket path or an NBD URI' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s p -l port -d 'The port of the server (with an IP address only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s b -l bind -d 'Bind the local socket to a particular IP address (TCP only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -l tls-certificates -d 'The directory of TLS certificates: ca-cert.pem checks the server\'s certificate; client-cert.pem and client-key.pem, if there, are presented' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -l tls-hostname -d 'The name the server\'s certificate must carry (default: the host connected to). Implies --tls' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s F -l from -d 'Byte offset to start at (a suffix is allowed: 1M is 1048576)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s S -l size -d 'Number of bytes (a suffix is allowed: 4K is 4096)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -l tls -d 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand read" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s l -l addr -d 'The server: an IP address (with --port), a UNIX socket path or an NBD URI' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s p -l port -d 'The port of the server (with an IP address only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s b -l bind -d 'Bind the local socket to a particular IP address (TCP only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -l tls-certificates -d 'The directory of TLS certificates: ca-cert.pem checks the server\'s certificate; client-cert.pem and client-key.pem, if there, are presented' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -l tls-hostname -d 'The name the server\'s certificate must carry (default: the host connected to). Implies --tls' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s F -l from -d 'Byte offset to start at (a suffix is allowed: 1M is 1048576)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s S -l size -d 'Number of bytes (a suffix is allowed: 4K is 4096)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -l tls -d 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand write" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand acl" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -l json -d 'Print the status as one JSON object instead of the key=value line'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand status" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s l -l addr -d 'The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s p -l port -d 'The port to mirror to (with an IP address only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s s -l sock -d 'Path to the control socket of the server to migrate' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s b -l bind -d 'Bind the local socket to a particular IP address' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s m -l max-speed -d 'Maximum speed of the migration, in bytes/sec (changeable with mirror-speed)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s u -l unlink -d 'Unlink the local file when done'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s w -l wait -d 'Follow the migration until it ends and exit with its outcome'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l no-progress -d 'With --wait, print no progress, only the outcome'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l verify -d 'Check the copy before handing over: the destination\'s block hashes must match ours'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l incremental -d 'Send only the blocks whose hashes differ from the destination\'s copy'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l no-incremental -d 'Copy the whole file, even to a destination that holds a copy'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -l tls -d 'Migrate over TLS, with the serving process\'s own --tls-certificates'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s m -l max-speed -d 'Maximum speed of the migration, in bytes/sec' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand mirror-speed" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -s s -l sock -d 'Path to the control socket' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand break" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s l -l addr -d 'The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s p -l port -d 'The port we will bind to as a proxy, if required' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s C -l conn-addr -d 'Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s P -l conn-port -d 'Port of the proxied server (with an IP address only)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s b -l bind -d 'The address we connect from, as a proxy' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l cache -d 'Use a RAM read cache of the given size (4096 if no size is given; at most 16 MiB)' -r
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l tls -d 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require' -r -f -a "off\t'No TLS (NBD_OPT_STARTTLS is refused)'
on\t'TLS offered; clients may also stay in plaintext'
require\t'Only TLS: a client that does not upgrade gets nothing but errors'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l tls-certificates -d 'The directory of TLS certificates, laid out as for nbdkit and qemu' -r -F
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l oldstyle -d 'Speak the old-style handshake to the client (as the C flexnbd-proxy) instead of fixed newstyle'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l tls-verify-peer -d 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -l upstream-tls -d 'Speak TLS to the upstream server, with the client certificate of --tls-certificates'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand proxy" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand completions" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand completions" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand completions" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand completions" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand man" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand man" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand man" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand man" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "man" -d 'As `flexnbd man`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "completions" -d 'As `flexnbd completions`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from man" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from man" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from man" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from man" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from completions" -l log-format -d 'How log lines look: auto is journal under systemd\'s journal, else plain' -r -f -a "auto\t'journal when stderr is systemd\'s journal stream, else plain'
plain\t'Timestamp, level, pid, thread, message'
journal\t'Syslog priority prefix, no timestamp'
c\t'The C flexnbd\'s layout'"
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from completions" -s v -l verbose -d 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from completions" -s q -l quiet -d 'Log nothing; errors that end the command are still printed'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from completions" -s V -l version -d 'Print version'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'As `flexnbd man`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'As `flexnbd completions`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "serve" -d 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "listen" -d 'Listen for an incoming migration on ADDR:PORT'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "read" -d 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "write" -d 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "acl" -d 'Set the access control list for a server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "status" -d 'Get the status for a server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "mirror" -d 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "mirror-speed" -d 'Set the maximum speed of a migration from a mirroring server listening on SOCK'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "break" -d 'Stop mirroring from the server with control socket SOCK'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "proxy" -d 'Resiliently proxy an NBD connection between a client and a server'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "completions" -d 'Print the shell completion script for SHELL to stdout'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "man" -d 'Write the man pages into DIR, or print flexnbd(1) to stdout'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "generate" -d 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and not __fish_seen_subcommand_from serve listen read write acl status mirror mirror-speed break proxy completions man generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'As `flexnbd man`'
complete -c flexnbd -n "__fish_flexnbd_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'As `flexnbd completions`'
