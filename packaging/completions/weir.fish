# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_weir_global_optspecs
    string join \n h/help V/version
end

function __fish_weir_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_weir_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_weir_using_subcommand
    set -l cmd (__fish_weir_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c weir -n "__fish_weir_needs_command" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_needs_command" -s V -l version -d 'Print version'
complete -c weir -n "__fish_weir_needs_command" -f -a "run" -d 'Run the agent until SIGTERM or SIGINT (a second signal exits at once); SIGHUP re-reads the config'
complete -c weir -n "__fish_weir_needs_command" -f -a "check-config" -d 'Validate a config and print the effective config, or every problem (exit 1)'
complete -c weir -n "__fish_weir_needs_command" -f -a "scrub" -d 'Scrub lines from FILES (or stdin) as the agent would and print them: check the `[scrub]` section before trusting it. Pseudonyms use a key made for this run'
complete -c weir -n "__fish_weir_needs_command" -f -a "reload" -d 'Ask the running weir to re-read its config (sends it SIGHUP) and wait for its verdict: exit 0 when it runs on the new config, 1 with every problem when it refused it (it then keeps running on the previous one)'
complete -c weir -n "__fish_weir_needs_command" -f -a "tap" -d 'Print live events from the running agent, after scrubbing, as they enter the spool; runs until interrupted. A viewer too slow to keep up loses events (counted on stderr); the pipeline is never slowed'
complete -c weir -n "__fish_weir_needs_command" -f -a "completions" -d 'Print the shell completion script for bash, zsh or fish (the package installs them; e.g. `weir completions bash > ~/.local/share/bash-completion/completions/weir`)'
complete -c weir -n "__fish_weir_needs_command" -f -a "status" -d 'Summarize the running agent from its metrics endpoint: rates, lag, spool use, drops and errors by reason. Exits 1 when unhealthy: unreachable, /health or /ready failing, a lagging sink with no success for --stall-after, or events dropped during the check. A config file on disk that a reload would refuse is a warning line, not unhealthy'
complete -c weir -n "__fish_weir_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c weir -n "__fish_weir_using_subcommand run" -s c -l config -d 'Config file [default: /etc/weir/weir.toml, else the built-in default]' -r -F
complete -c weir -n "__fish_weir_using_subcommand run" -l pid-file -d 'Where to write weir\'s pid, for `weir reload`; not writable is a warning' -r -F
complete -c weir -n "__fish_weir_using_subcommand run" -l tap-socket -d 'Where to serve `weir tap` viewers (a unix socket, mode 0600) [default: tap.sock next to the pid file, /run/weir/tap.sock]' -r -F
complete -c weir -n "__fish_weir_using_subcommand run" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand check-config" -s c -l config -d 'Config file [default: /etc/weir/weir.toml, else the built-in default]' -r -F
complete -c weir -n "__fish_weir_using_subcommand check-config" -s q -l quiet -d 'Print nothing when valid (the effective config may hold credentials)'
complete -c weir -n "__fish_weir_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand scrub" -s c -l config -d 'Config whose `[scrub]` section is used [default: the built-in defaults]' -r -F
complete -c weir -n "__fish_weir_using_subcommand scrub" -l explain -d 'After each line, print every rewrite: pass, byte span, kind, rule and the bytes rewritten'
complete -c weir -n "__fish_weir_using_subcommand scrub" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand reload" -l pid-file -d 'The pid file `weir run` wrote (its verdicts are written next to it)' -r -F
complete -c weir -n "__fish_weir_using_subcommand reload" -l pid -d 'Signal this process instead of the one in the pid file (the unit passes $MAINPID)' -r
complete -c weir -n "__fish_weir_using_subcommand reload" -l timeout -d 'How long to wait for the verdict (a reload stops and restarts the pipeline)' -r
complete -c weir -n "__fish_weir_using_subcommand reload" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand tap" -s s -l source -d 'Only events of this source (a name under [sources]); repeatable' -r
complete -c weir -n "__fish_weir_using_subcommand tap" -s l -l label -d 'Only events with this label value, e.g. app=shop or level=err; repeatable' -r
complete -c weir -n "__fish_weir_using_subcommand tap" -s f -l format -d 'ndjson: the file sink\'s JSON lines; compact: `TIME LABELS: MESSAGE`' -r -f -a "ndjson\t'One JSON object per line, as the file sink writes them'
compact\t'`TIME LABELS: MESSAGE`, one line per event, for reading'"
complete -c weir -n "__fish_weir_using_subcommand tap" -s n -l count -d 'Exit after this many events' -r
complete -c weir -n "__fish_weir_using_subcommand tap" -l socket -d 'The socket `weir run --tap-socket` serves' -r -F
complete -c weir -n "__fish_weir_using_subcommand tap" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c weir -n "__fish_weir_using_subcommand completions" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand status" -s c -l config -d 'Config whose `metrics.listen` names the endpoint [default: as `run`]' -r -F
complete -c weir -n "__fish_weir_using_subcommand status" -s a -l address -d 'The endpoint to ask instead: host:port or unix:///path' -r
complete -c weir -n "__fish_weir_using_subcommand status" -l stall-after -d 'A sink that lags and has not delivered for this long is unhealthy' -r
complete -c weir -n "__fish_weir_using_subcommand status" -s h -l help -d 'Print help'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "run" -d 'Run the agent until SIGTERM or SIGINT (a second signal exits at once); SIGHUP re-reads the config'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "check-config" -d 'Validate a config and print the effective config, or every problem (exit 1)'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "scrub" -d 'Scrub lines from FILES (or stdin) as the agent would and print them: check the `[scrub]` section before trusting it. Pseudonyms use a key made for this run'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "reload" -d 'Ask the running weir to re-read its config (sends it SIGHUP) and wait for its verdict: exit 0 when it runs on the new config, 1 with every problem when it refused it (it then keeps running on the previous one)'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "tap" -d 'Print live events from the running agent, after scrubbing, as they enter the spool; runs until interrupted. A viewer too slow to keep up loses events (counted on stderr); the pipeline is never slowed'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "completions" -d 'Print the shell completion script for bash, zsh or fish (the package installs them; e.g. `weir completions bash > ~/.local/share/bash-completion/completions/weir`)'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "status" -d 'Summarize the running agent from its metrics endpoint: rates, lag, spool use, drops and errors by reason. Exits 1 when unhealthy: unreachable, /health or /ready failing, a lagging sink with no success for --stall-after, or events dropped during the check. A config file on disk that a reload would refuse is a warning line, not unhealthy'
complete -c weir -n "__fish_weir_using_subcommand help; and not __fish_seen_subcommand_from run check-config scrub reload tap completions status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
