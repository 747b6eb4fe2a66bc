
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'flexnbd' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'flexnbd'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'flexnbd' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Listen for an incoming migration on ADDR:PORT')
            [CompletionResult]::new('read', 'read', [CompletionResultType]::ParameterValue, 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET')
            [CompletionResult]::new('write', 'write', [CompletionResultType]::ParameterValue, 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET')
            [CompletionResult]::new('acl', 'acl', [CompletionResultType]::ParameterValue, 'Set the access control list for a server with control socket SOCK')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Get the status for a server with control socket SOCK')
            [CompletionResult]::new('mirror', 'mirror', [CompletionResultType]::ParameterValue, 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT')
            [CompletionResult]::new('mirror-speed', 'mirror-speed', [CompletionResultType]::ParameterValue, 'Set the maximum speed of a migration from a mirroring server listening on SOCK')
            [CompletionResult]::new('break', 'break', [CompletionResultType]::ParameterValue, 'Stop mirroring from the server with control socket SOCK')
            [CompletionResult]::new('proxy', 'proxy', [CompletionResultType]::ParameterValue, 'Resiliently proxy an NBD connection between a client and a server')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print the shell completion script for SHELL to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write the man pages into DIR, or print flexnbd(1) to stdout')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'flexnbd;serve' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port to serve on (0 picks a free port); not with a UNIX socket')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port to serve on (0 picks a free port); not with a UNIX socket')
            [CompletionResult]::new('--socket-mode', '--socket-mode', [CompletionResultType]::ParameterName, 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The file to serve')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The file to serve')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--pid-file', '--pid-file', [CompletionResultType]::ParameterName, 'Write the process id to PATH once serving; removed on exit')
            [CompletionResult]::new('--control-mode', '--control-mode', [CompletionResultType]::ParameterName, 'Permission bits of the control socket, in octal (default 0600: owner only)')
            [CompletionResult]::new('-x', '-x', [CompletionResultType]::ParameterName, 'Serve the file under this export name only (newstyle)')
            [CompletionResult]::new('--export-name', '--export-name', [CompletionResultType]::ParameterName, 'Serve the file under this export name only (newstyle)')
            [CompletionResult]::new('--handshake-timeout', '--handshake-timeout', [CompletionResultType]::ParameterName, 'How long a client may take over each step of the handshake')
            [CompletionResult]::new('--max-handshakes', '--max-handshakes', [CompletionResultType]::ParameterName, 'Most connections still in their handshake at once')
            [CompletionResult]::new('--max-clients-per-address', '--max-clients-per-address', [CompletionResultType]::ParameterName, 'Most connections from one address at once (no limit by default)')
            [CompletionResult]::new('--max-inflight', '--max-inflight', [CompletionResultType]::ParameterName, 'Most bytes of request payloads and read buffers held for all clients')
            [CompletionResult]::new('--stall-timeout', '--stall-timeout', [CompletionResultType]::ParameterName, 'How long a client may pause in the middle of sending a request''s payload, or leave a reply unread')
            [CompletionResult]::new('--handover-grace', '--handover-grace', [CompletionResultType]::ParameterName, 'At a migration''s handover, how long clients have to finish their requests')
            [CompletionResult]::new('--busy-poll', '--busy-poll', [CompletionResultType]::ParameterName, 'How long to poll for a queue-depth-1 client''s next request before sleeping')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require')
            [CompletionResult]::new('--tls-certificates', '--tls-certificates', [CompletionResultType]::ParameterName, 'The directory of TLS certificates, laid out as for nbdkit and qemu')
            [CompletionResult]::new('--max-clients', '--max-clients', [CompletionResultType]::ParameterName, 'Most clients served at once; further connections are closed at once')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Deny connections by default unless in ACL')
            [CompletionResult]::new('--default-deny', '--default-deny', [CompletionResultType]::ParameterName, 'Deny connections by default unless in ACL')
            [CompletionResult]::new('--tls-verify-peer', '--tls-verify-peer', [CompletionResultType]::ParameterName, 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Drop a client whose request takes longer than 120 seconds')
            [CompletionResult]::new('--killswitch', '--killswitch', [CompletionResultType]::ParameterName, 'Drop a client whose request takes longer than 120 seconds')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Export the file read-only: writes, trims and zeroes get EPERM')
            [CompletionResult]::new('--read-only', '--read-only', [CompletionResultType]::ParameterName, 'Export the file read-only: writes, trims and zeroes get EPERM')
            [CompletionResult]::new('--oldstyle', '--oldstyle', [CompletionResultType]::ParameterName, 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle')
            [CompletionResult]::new('--mirror-tls', '--mirror-tls', [CompletionResultType]::ParameterName, 'Migrations over TLS, with the client certificate of --tls-certificates')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;listen' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The address to serve on: an IPv4 or IPv6 address (0 means all IPv4 addresses), or the path of a UNIX socket (starting with / or ./)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port to serve on (0 picks a free port); not with a UNIX socket')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port to serve on (0 picks a free port); not with a UNIX socket')
            [CompletionResult]::new('--socket-mode', '--socket-mode', [CompletionResultType]::ParameterName, 'Permission bits of the NBD UNIX socket, in octal (default 0600: owner only)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The file to receive into; it must exist with the source''s size')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The file to receive into; it must exist with the source''s size')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--pid-file', '--pid-file', [CompletionResultType]::ParameterName, 'Write the process id to PATH once serving; removed on exit')
            [CompletionResult]::new('--control-mode', '--control-mode', [CompletionResultType]::ParameterName, 'Permission bits of the control socket, in octal (default 0600: owner only)')
            [CompletionResult]::new('-x', '-x', [CompletionResultType]::ParameterName, 'Serve the file under this export name only (newstyle)')
            [CompletionResult]::new('--export-name', '--export-name', [CompletionResultType]::ParameterName, 'Serve the file under this export name only (newstyle)')
            [CompletionResult]::new('--handshake-timeout', '--handshake-timeout', [CompletionResultType]::ParameterName, 'How long a client may take over each step of the handshake')
            [CompletionResult]::new('--max-handshakes', '--max-handshakes', [CompletionResultType]::ParameterName, 'Most connections still in their handshake at once')
            [CompletionResult]::new('--max-clients-per-address', '--max-clients-per-address', [CompletionResultType]::ParameterName, 'Most connections from one address at once (no limit by default)')
            [CompletionResult]::new('--max-inflight', '--max-inflight', [CompletionResultType]::ParameterName, 'Most bytes of request payloads and read buffers held for all clients')
            [CompletionResult]::new('--stall-timeout', '--stall-timeout', [CompletionResultType]::ParameterName, 'How long a client may pause in the middle of sending a request''s payload, or leave a reply unread')
            [CompletionResult]::new('--handover-grace', '--handover-grace', [CompletionResultType]::ParameterName, 'At a migration''s handover, how long clients have to finish their requests')
            [CompletionResult]::new('--busy-poll', '--busy-poll', [CompletionResultType]::ParameterName, 'How long to poll for a queue-depth-1 client''s next request before sleeping')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require')
            [CompletionResult]::new('--tls-certificates', '--tls-certificates', [CompletionResultType]::ParameterName, 'The directory of TLS certificates, laid out as for nbdkit and qemu')
            [CompletionResult]::new('--max-clients', '--max-clients', [CompletionResultType]::ParameterName, 'With --serve-after-handover: most clients served at once after the handover')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Deny connections by default unless in ACL')
            [CompletionResult]::new('--default-deny', '--default-deny', [CompletionResultType]::ParameterName, 'Deny connections by default unless in ACL')
            [CompletionResult]::new('--tls-verify-peer', '--tls-verify-peer', [CompletionResultType]::ParameterName, 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem')
            [CompletionResult]::new('--oldstyle', '--oldstyle', [CompletionResultType]::ParameterName, 'Speak the old-style handshake of the C flexnbd instead of fixed newstyle')
            [CompletionResult]::new('--serve-after-handover', '--serve-after-handover', [CompletionResultType]::ParameterName, 'Once the migration has handed control over, go on serving the file as `serve` would')
            [CompletionResult]::new('--no-hash-ahead', '--no-hash-ahead', [CompletionResultType]::ParameterName, 'Do not hash FILE ahead of a source''s incremental comparison')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;read' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The server: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The server: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port of the server (with an IP address only)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port of the server (with an IP address only)')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address (TCP only)')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address (TCP only)')
            [CompletionResult]::new('--tls-certificates', '--tls-certificates', [CompletionResultType]::ParameterName, 'The directory of TLS certificates: ca-cert.pem checks the server''s certificate; client-cert.pem and client-key.pem, if there, are presented')
            [CompletionResult]::new('--tls-hostname', '--tls-hostname', [CompletionResultType]::ParameterName, 'The name the server''s certificate must carry (default: the host connected to). Implies --tls')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Byte offset to start at (a suffix is allowed: 1M is 1048576)')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Byte offset to start at (a suffix is allowed: 1M is 1048576)')
            [CompletionResult]::new('-S', '-S ', [CompletionResultType]::ParameterName, 'Number of bytes (a suffix is allowed: 4K is 4096)')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Number of bytes (a suffix is allowed: 4K is 4096)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;write' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The server: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The server: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port of the server (with an IP address only)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port of the server (with an IP address only)')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address (TCP only)')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address (TCP only)')
            [CompletionResult]::new('--tls-certificates', '--tls-certificates', [CompletionResultType]::ParameterName, 'The directory of TLS certificates: ca-cert.pem checks the server''s certificate; client-cert.pem and client-key.pem, if there, are presented')
            [CompletionResult]::new('--tls-hostname', '--tls-hostname', [CompletionResultType]::ParameterName, 'The name the server''s certificate must carry (default: the host connected to). Implies --tls')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Byte offset to start at (a suffix is allowed: 1M is 1048576)')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Byte offset to start at (a suffix is allowed: 1M is 1048576)')
            [CompletionResult]::new('-S', '-S ', [CompletionResultType]::ParameterName, 'Number of bytes (a suffix is allowed: 4K is 4096)')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Number of bytes (a suffix is allowed: 4K is 4096)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;acl' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;status' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the status as one JSON object instead of the key=value line')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;mirror' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port to mirror to (with an IP address only)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port to mirror to (with an IP address only)')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket of the server to migrate')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket of the server to migrate')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Bind the local socket to a particular IP address')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Maximum speed of the migration, in bytes/sec (changeable with mirror-speed)')
            [CompletionResult]::new('--max-speed', '--max-speed', [CompletionResultType]::ParameterName, 'Maximum speed of the migration, in bytes/sec (changeable with mirror-speed)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'Unlink the local file when done')
            [CompletionResult]::new('--unlink', '--unlink', [CompletionResultType]::ParameterName, 'Unlink the local file when done')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Follow the migration until it ends and exit with its outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Follow the migration until it ends and exit with its outcome')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'With --wait, print no progress, only the outcome')
            [CompletionResult]::new('--verify', '--verify', [CompletionResultType]::ParameterName, 'Check the copy before handing over: the destination''s block hashes must match ours')
            [CompletionResult]::new('--incremental', '--incremental', [CompletionResultType]::ParameterName, 'Send only the blocks whose hashes differ from the destination''s copy')
            [CompletionResult]::new('--no-incremental', '--no-incremental', [CompletionResultType]::ParameterName, 'Copy the whole file, even to a destination that holds a copy')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Migrate over TLS, with the serving process''s own --tls-certificates')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;mirror-speed' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Maximum speed of the migration, in bytes/sec')
            [CompletionResult]::new('--max-speed', '--max-speed', [CompletionResultType]::ParameterName, 'Maximum speed of the migration, in bytes/sec')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;break' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--sock', '--sock', [CompletionResultType]::ParameterName, 'Path to the control socket')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;proxy' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket')
            [CompletionResult]::new('--addr', '--addr', [CompletionResultType]::ParameterName, 'The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The port we will bind to as a proxy, if required')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'The port we will bind to as a proxy, if required')
            [CompletionResult]::new('-C', '-C ', [CompletionResultType]::ParameterName, 'Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('--conn-addr', '--conn-addr', [CompletionResultType]::ParameterName, 'Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI')
            [CompletionResult]::new('-P', '-P ', [CompletionResultType]::ParameterName, 'Port of the proxied server (with an IP address only)')
            [CompletionResult]::new('--conn-port', '--conn-port', [CompletionResultType]::ParameterName, 'Port of the proxied server (with an IP address only)')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'The address we connect from, as a proxy')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'The address we connect from, as a proxy')
            [CompletionResult]::new('--cache', '--cache', [CompletionResultType]::ParameterName, 'Use a RAM read cache of the given size (4096 if no size is given; at most 16 MiB)')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require')
            [CompletionResult]::new('--tls-certificates', '--tls-certificates', [CompletionResultType]::ParameterName, 'The directory of TLS certificates, laid out as for nbdkit and qemu')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('--oldstyle', '--oldstyle', [CompletionResultType]::ParameterName, 'Speak the old-style handshake to the client (as the C flexnbd-proxy) instead of fixed newstyle')
            [CompletionResult]::new('--tls-verify-peer', '--tls-verify-peer', [CompletionResultType]::ParameterName, 'Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem')
            [CompletionResult]::new('--upstream-tls', '--upstream-tls', [CompletionResultType]::ParameterName, 'Speak TLS to the upstream server, with the client certificate of --tls-certificates')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;completions' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;man' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;generate' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'As `flexnbd man`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'As `flexnbd completions`')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'flexnbd;generate;man' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;generate;completions' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How log lines look: auto is journal under systemd''s journal, else plain')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log more: -v for informational messages, -vv for per-request debug. With -q as well, the last one given wins (as flexnbd-c)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log nothing; errors that end the command are still printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'flexnbd;generate;help' {
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'As `flexnbd man`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'As `flexnbd completions`')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'flexnbd;generate;help;man' {
            break
        }
        'flexnbd;generate;help;completions' {
            break
        }
        'flexnbd;generate;help;help' {
            break
        }
        'flexnbd;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve FILE from ADDR:PORT, with an optional control socket at SOCK')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Listen for an incoming migration on ADDR:PORT')
            [CompletionResult]::new('read', 'read', [CompletionResultType]::ParameterValue, 'Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET')
            [CompletionResult]::new('write', 'write', [CompletionResultType]::ParameterValue, 'Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET')
            [CompletionResult]::new('acl', 'acl', [CompletionResultType]::ParameterValue, 'Set the access control list for a server with control socket SOCK')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Get the status for a server with control socket SOCK')
            [CompletionResult]::new('mirror', 'mirror', [CompletionResultType]::ParameterValue, 'Start mirroring from the server with control socket SOCK to one at ADDR:PORT')
            [CompletionResult]::new('mirror-speed', 'mirror-speed', [CompletionResultType]::ParameterValue, 'Set the maximum speed of a migration from a mirroring server listening on SOCK')
            [CompletionResult]::new('break', 'break', [CompletionResultType]::ParameterValue, 'Stop mirroring from the server with control socket SOCK')
            [CompletionResult]::new('proxy', 'proxy', [CompletionResultType]::ParameterValue, 'Resiliently proxy an NBD connection between a client and a server')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print the shell completion script for SHELL to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write the man pages into DIR, or print flexnbd(1) to stdout')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'flexnbd;help;serve' {
            break
        }
        'flexnbd;help;listen' {
            break
        }
        'flexnbd;help;read' {
            break
        }
        'flexnbd;help;write' {
            break
        }
        'flexnbd;help;acl' {
            break
        }
        'flexnbd;help;status' {
            break
        }
        'flexnbd;help;mirror' {
            break
        }
        'flexnbd;help;mirror-speed' {
            break
        }
        'flexnbd;help;break' {
            break
        }
        'flexnbd;help;proxy' {
            break
        }
        'flexnbd;help;completions' {
            break
        }
        'flexnbd;help;man' {
            break
        }
        'flexnbd;help;generate' {
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'As `flexnbd man`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'As `flexnbd completions`')
            break
        }
        'flexnbd;help;generate;man' {
            break
        }
        'flexnbd;help;generate;completions' {
            break
        }
        'flexnbd;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
