
use builtin;
use str;

set edit:completion:arg-completer[flexnbd] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'flexnbd'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'flexnbd'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK'
            cand listen 'Listen for an incoming migration on ADDR:PORT'
            cand read 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET'
            cand write 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET'
            cand acl 'Set the access control list for a server with control socket SOCK'
            cand status 'Get the status for a server with control socket SOCK'
            cand mirror 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT'
            cand mirror-speed 'Set the maximum speed of a migration from a mirroring server listening on SOCK'
            cand break 'Stop mirroring from the server with control socket SOCK'
            cand proxy 'Resiliently proxy an NBD connection between a client and a server'
            cand completions 'Print the shell completion script for SHELL to stdout'
            cand man 'Write the man pages into DIR, or print flexnbd(1) to stdout'
            cand generate 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'flexnbd;serve'= {
            cand -l 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)'
            cand --addr 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)'
            cand -p 'The port to serve on (0 picks a free port); not with a UNIX socket'
            cand --port 'The port to serve on (0 picks a free port); not with a UNIX socket'
            cand --socket-mode 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)'
            cand -f 'The file to serve'
            cand --file 'The file to serve'
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand --pid-file 'Write the process id to PATH once serving; removed on exit'
            cand --control-mode 'Permission bits of the control socket, in octal (default 0600: owner only)'
            cand -x 'Serve the file under this export name only (newstyle)'
            cand --export-name 'Serve the file under this export name only (newstyle)'
            cand --handshake-timeout 'How long a client may take over each step of the handshake'
            cand --max-handshakes 'Most connections still in their handshake at once'
            cand --max-clients-per-address 'Most connections from one address at once (no limit by default)'
            cand --max-inflight 'Most bytes of request payloads and read buffers held for all clients'
            cand --stall-timeout 'How long a client may pause in the middle of sending a request''s payload, or leave a reply unread'
            cand --handover-grace 'At a migration''s handover, how long clients have to finish their requests'
            cand --busy-poll 'How long to poll for a queue-depth-1 client''s next request before sleeping'
            cand --tls 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require'
            cand --tls-certificates 'The directory of TLS certificates, laid out as for nbdkit and qemu'
            cand --max-clients 'Most clients served at once; further connections are closed at once'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -d 'Deny connections by default unless in ACL'
            cand --default-deny 'Deny connections by default unless in ACL'
            cand --tls-verify-peer 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
            cand -k 'Drop a client whose request takes longer than 120 seconds'
            cand --killswitch 'Drop a client whose request takes longer than 120 seconds'
            cand -r 'Export the file read-only: writes, trims and zeroes get EPERM'
            cand --read-only 'Export the file read-only: writes, trims and zeroes get EPERM'
            cand --oldstyle 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle'
            cand --mirror-tls 'Migrations over TLS, with the client certificate of --tls-certificates'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;listen'= {
            cand -l 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)'
            cand --addr 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)'
            cand -p 'The port to serve on (0 picks a free port); not with a UNIX socket'
            cand --port 'The port to serve on (0 picks a free port); not with a UNIX socket'
            cand --socket-mode 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)'
            cand -f 'The file to receive into; it must exist with the source''s size'
            cand --file 'The file to receive into; it must exist with the source''s size'
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand --pid-file 'Write the process id to PATH once serving; removed on exit'
            cand --control-mode 'Permission bits of the control socket, in octal (default 0600: owner only)'
            cand -x 'Serve the file under this export name only (newstyle)'
            cand --export-name 'Serve the file under this export name only (newstyle)'
            cand --handshake-timeout 'How long a client may take over each step of the handshake'
            cand --max-handshakes 'Most connections still in their handshake at once'
            cand --max-clients-per-address 'Most connections from one address at once (no limit by default)'
            cand --max-inflight 'Most bytes of request payloads and read buffers held for all clients'
            cand --stall-timeout 'How long a client may pause in the middle of sending a request''s payload, or leave a reply unread'
            cand --handover-grace 'At a migration''s handover, how long clients have to finish their requests'
            cand --busy-poll 'How long to poll for a queue-depth-1 client''s next request before sleeping'
            cand --tls 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require'
            cand --tls-certificates 'The directory of TLS certificates, laid out as for nbdkit and qemu'
            cand --max-clients 'With --serve-after-handover: most clients served at once after the handover'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -d 'Deny connections by default unless in ACL'
            cand --default-deny 'Deny connections by default unless in ACL'
            cand --tls-verify-peer 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
            cand --oldstyle 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle'
            cand --serve-after-handover 'Once the migration has handed control over, go on serving the file as `serve` would'
            cand --no-hash-ahead 'Do not hash FILE ahead of a source''s incremental comparison'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;read'= {
            cand -l 'The server: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand --addr 'The server: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand -p 'The port of the server (with an IP address only)'
            cand --port 'The port of the server (with an IP address only)'
            cand -b 'Bind the local socket to a particular IP address (TCP only)'
            cand --bind 'Bind the local socket to a particular IP address (TCP only)'
            cand --tls-certificates 'The directory of TLS certificates: ca-cert.pem checks the server''s certificate; client-cert.pem and client-key.pem, if there, are presented'
            cand --tls-hostname 'The name the server''s certificate must carry (default: the host connected to). Implies --tls'
            cand -F 'Byte offset to start at (a suffix is allowed: 1M is 1048576)'
            cand --from 'Byte offset to start at (a suffix is allowed: 1M is 1048576)'
            cand -S 'Number of bytes (a suffix is allowed: 4K is 4096)'
            cand --size 'Number of bytes (a suffix is allowed: 4K is 4096)'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand --tls 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;write'= {
            cand -l 'The server: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand --addr 'The server: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand -p 'The port of the server (with an IP address only)'
            cand --port 'The port of the server (with an IP address only)'
            cand -b 'Bind the local socket to a particular IP address (TCP only)'
            cand --bind 'Bind the local socket to a particular IP address (TCP only)'
            cand --tls-certificates 'The directory of TLS certificates: ca-cert.pem checks the server''s certificate; client-cert.pem and client-key.pem, if there, are presented'
            cand --tls-hostname 'The name the server''s certificate must carry (default: the host connected to). Implies --tls'
            cand -F 'Byte offset to start at (a suffix is allowed: 1M is 1048576)'
            cand --from 'Byte offset to start at (a suffix is allowed: 1M is 1048576)'
            cand -S 'Number of bytes (a suffix is allowed: 4K is 4096)'
            cand --size 'Number of bytes (a suffix is allowed: 4K is 4096)'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand --tls 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;acl'= {
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;status'= {
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand --json 'Print the status as one JSON object instead of the key=value line'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;mirror'= {
            cand -l 'The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand --addr 'The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI'
            cand -p 'The port to mirror to (with an IP address only)'
            cand --port 'The port to mirror to (with an IP address only)'
            cand -s 'Path to the control socket of the server to migrate'
            cand --sock 'Path to the control socket of the server to migrate'
            cand -b 'Bind the local socket to a particular IP address'
            cand --bind 'Bind the local socket to a particular IP address'
            cand -m 'Maximum speed of the migration, in bytes/sec (changeable with mirror-speed)'
            cand --max-speed 'Maximum speed of the migration, in bytes/sec (changeable with mirror-speed)'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -u 'Unlink the local file when done'
            cand --unlink 'Unlink the local file when done'
            cand -w 'Follow the migration until it ends and exit with its outcome'
            cand --wait 'Follow the migration until it ends and exit with its outcome'
            cand --no-progress 'With --wait, print no progress, only the outcome'
            cand --verify 'Check the copy before handing over: the destination''s block hashes must match ours'
            cand --incremental 'Send only the blocks whose hashes differ from the destination''s copy'
            cand --no-incremental 'Copy the whole file, even to a destination that holds a copy'
            cand --tls 'Migrate over TLS, with the serving process''s own --tls-certificates'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;mirror-speed'= {
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand -m 'Maximum speed of the migration, in bytes/sec'
            cand --max-speed 'Maximum speed of the migration, in bytes/sec'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;break'= {
            cand -s 'Path to the control socket'
            cand --sock 'Path to the control socket'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;proxy'= {
            cand -l 'The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket'
            cand --addr 'The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket'
            cand -p 'The port we will bind to as a proxy, if required'
            cand --port 'The port we will bind to as a proxy, if required'
            cand -C 'Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI'
            cand --conn-addr 'Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI'
            cand -P 'Port of the proxied server (with an IP address only)'
            cand --conn-port 'Port of the proxied server (with an IP address only)'
            cand -b 'The address we connect from, as a proxy'
            cand --bind 'The address we connect from, as a proxy'
            cand --cache 'Use a RAM read cache of the given size (4096 if no size is given; at most 16 MiB)'
            cand --tls 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require'
            cand --tls-certificates 'The directory of TLS certificates, laid out as for nbdkit and qemu'
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand --oldstyle 'Speak the old-style handshake to the client (as the C flexnbd-proxy) instead of fixed newstyle'
            cand --tls-verify-peer 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem'
            cand --upstream-tls 'Speak TLS to the upstream server, with the client certificate of --tls-certificates'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;completions'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;man'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;generate'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand man 'As `flexnbd man`'
            cand completions 'As `flexnbd completions`'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'flexnbd;generate;man'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;generate;completions'= {
            cand --log-format 'How log lines look: auto is journal under systemd''s journal, else plain'
            cand -v 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand --verbose 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)'
            cand -q 'Log nothing; errors that end the command are still printed'
            cand --quiet 'Log nothing; errors that end the command are still printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'flexnbd;generate;help'= {
            cand man 'As `flexnbd man`'
            cand completions 'As `flexnbd completions`'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'flexnbd;generate;help;man'= {
        }
        &'flexnbd;generate;help;completions'= {
        }
        &'flexnbd;generate;help;help'= {
        }
        &'flexnbd;help'= {
            cand serve 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK'
            cand listen 'Listen for an incoming migration on ADDR:PORT'
            cand read 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET'
            cand write 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET'
            cand acl 'Set the access control list for a server with control socket SOCK'
            cand status 'Get the status for a server with control socket SOCK'
            cand mirror 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT'
            cand mirror-speed 'Set the maximum speed of a migration from a mirroring server listening on SOCK'
            cand break 'Stop mirroring from the server with control socket SOCK'
            cand proxy 'Resiliently proxy an NBD connection between a client and a server'
            cand completions 'Print the shell completion script for SHELL to stdout'
            cand man 'Write the man pages into DIR, or print flexnbd(1) to stdout'
            cand generate 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'flexnbd;help;serve'= {
        }
        &'flexnbd;help;listen'= {
        }
        &'flexnbd;help;read'= {
        }
        &'flexnbd;help;write'= {
        }
        &'flexnbd;help;acl'= {
        }
        &'flexnbd;help;status'= {
        }
        &'flexnbd;help;mirror'= {
        }
        &'flexnbd;help;mirror-speed'= {
        }
        &'flexnbd;help;break'= {
        }
        &'flexnbd;help;proxy'= {
        }
        &'flexnbd;help;completions'= {
        }
        &'flexnbd;help;man'= {
        }
        &'flexnbd;help;generate'= {
            cand man 'As `flexnbd man`'
            cand completions 'As `flexnbd completions`'
        }
        &'flexnbd;help;generate;man'= {
        }
        &'flexnbd;help;generate;completions'= {
        }
        &'flexnbd;help;help'= {
        }
    ]
    $completions[$command]
}
