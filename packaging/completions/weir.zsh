#compdef weir

autoload -U is-at-least

_weir() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_weir_commands" \
"*::: :->weir" \
&& ret=0
    case $state in
    (weir)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:weir-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
'-c+[Config file \[default\: /etc/weir/weir.toml, else the built-in default\]]:CONFIG:_files' \
'--config=[Config file \[default\: /etc/weir/weir.toml, else the built-in default\]]:CONFIG:_files' \
'--pid-file=[Where to write weir'\''s pid, for \`weir reload\`; not writable is a warning]:PID_FILE:_files' \
'--tap-socket=[Where to serve \`weir tap\` viewers (a unix socket, mode 0600) \[default\: tap.sock next to the pid file, /run/weir/tap.sock\]]:TAP_SOCKET:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(check-config)
_arguments "${_arguments_options[@]}" : \
'-c+[Config file \[default\: /etc/weir/weir.toml, else the built-in default\]]:CONFIG:_files' \
'--config=[Config file \[default\: /etc/weir/weir.toml, else the built-in default\]]:CONFIG:_files' \
'-q[Print nothing when valid (the effective config may hold credentials)]' \
'--quiet[Print nothing when valid (the effective config may hold credentials)]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(scrub)
_arguments "${_arguments_options[@]}" : \
'-c+[Config whose \`\[scrub\]\` section is used \[default\: the built-in defaults\]]:CONFIG:_files' \
'--config=[Config whose \`\[scrub\]\` section is used \[default\: the built-in defaults\]]:CONFIG:_files' \
'--explain[After each line, print every rewrite\: pass, byte span, kind, rule and the bytes rewritten]' \
'-h[Print help]' \
'--help[Print help]' \
'*::files -- Files to read; none or `-` reads stdin:_files' \
&& ret=0
;;
(reload)
_arguments "${_arguments_options[@]}" : \
'--pid-file=[The pid file \`weir run\` wrote (its verdicts are written next to it)]:PID_FILE:_files' \
'--pid=[Signal this process instead of the one in the pid file (the unit passes \$MAINPID)]:PID:_default' \
'--timeout=[How long to wait for the verdict (a reload stops and restarts the pipeline)]:TIMEOUT:_default' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(tap)
_arguments "${_arguments_options[@]}" : \
'*-s+[Only events of this source (a name under \[sources\]); repeatable]:SOURCES:_default' \
'*--source=[Only events of this source (a name under \[sources\]); repeatable]:SOURCES:_default' \
'*-l+[Only events with this label value, e.g. app=shop or level=err; repeatable]:LABELS:_default' \
'*--label=[Only events with this label value, e.g. app=shop or level=err; repeatable]:LABELS:_default' \
'-f+[ndjson\: the file sink'\''s JSON lines; compact\: \`TIME LABELS\: MESSAGE\`]:FORMAT:((ndjson\:"One JSON object per line, as the file sink writes them"
compact\:"\`TIME LABELS\: MESSAGE\`, one line per event, for reading"))' \
'--format=[ndjson\: the file sink'\''s JSON lines; compact\: \`TIME LABELS\: MESSAGE\`]:FORMAT:((ndjson\:"One JSON object per line, as the file sink writes them"
compact\:"\`TIME LABELS\: MESSAGE\`, one line per event, for reading"))' \
'-n+[Exit after this many events]:COUNT:_default' \
'--count=[Exit after this many events]:COUNT:_default' \
'--socket=[The socket \`weir run --tap-socket\` serves]:SOCKET:_files' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':shell:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'-c+[Config whose \`metrics.listen\` names the endpoint \[default\: as \`run\`\]]:CONFIG:_files' \
'--config=[Config whose \`metrics.listen\` names the endpoint \[default\: as \`run\`\]]:CONFIG:_files' \
'-a+[The endpoint to ask instead\: host\:port or unix\:///path]:ADDRESS:_default' \
'--address=[The endpoint to ask instead\: host\:port or unix\:///path]:ADDRESS:_default' \
'--stall-after=[A sink that lags and has not delivered for this long is unhealthy]:STALL_AFTER:_default' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_weir__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:weir-help-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(check-config)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(scrub)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reload)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(tap)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_weir_commands] )) ||
_weir_commands() {
    local commands; commands=(
'run:Run the agent until SIGTERM or SIGINT (a second signal exits at once); SIGHUP re-reads the config' \
'check-config:Validate a config and print the effective config, or every problem (exit 1)' \
'scrub:Scrub lines from FILES (or stdin) as the agent would and print them\: check the \`\[scrub\]\` section before trusting it. Pseudonyms use a key made for this run' \
'reload:Ask the running weir to re-read its config (sends it SIGHUP) and wait for its verdict\: exit 0 when it runs on the new config, 1 with every problem when it refused it (it then keeps running on the previous one)' \
'tap:Print live events from the running agent, after scrubbing, as they enter the spool; runs until interrupted. A viewer too slow to keep up loses events (counted on stderr); the pipeline is never slowed' \
'completions:Print the shell completion script for bash, zsh or fish (the package installs them; e.g. \`weir completions bash > ~/.local/share/bash-completion/completions/weir\`)' \
'status:Summarize the running agent from its metrics endpoint\: rates, lag, spool use, drops and errors by reason. Exits 1 when unhealthy\: unreachable, /health or /ready failing, a lagging sink with no success for --stall-after, or events dropped during the check. A config file on disk that a reload would refuse is a warning line, not unhealthy' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'weir commands' commands "$@"
}
(( $+functions[_weir__subcmd__check-config_commands] )) ||
_weir__subcmd__check-config_commands() {
    local commands; commands=()
    _describe -t commands 'weir check-config commands' commands "$@"
}
(( $+functions[_weir__subcmd__completions_commands] )) ||
_weir__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'weir completions commands' commands "$@"
}
(( $+functions[_weir__subcmd__help_commands] )) ||
_weir__subcmd__help_commands() {
    local commands; commands=(
'run:Run the agent until SIGTERM or SIGINT (a second signal exits at once); SIGHUP re-reads the config' \
'check-config:Validate a config and print the effective config, or every problem (exit 1)' \
'scrub:Scrub lines from FILES (or stdin) as the agent would and print them\: check the \`\[scrub\]\` section before trusting it. Pseudonyms use a key made for this run' \
'reload:Ask the running weir to re-read its config (sends it SIGHUP) and wait for its verdict\: exit 0 when it runs on the new config, 1 with every problem when it refused it (it then keeps running on the previous one)' \
'tap:Print live events from the running agent, after scrubbing, as they enter the spool; runs until interrupted. A viewer too slow to keep up loses events (counted on stderr); the pipeline is never slowed' \
'completions:Print the shell completion script for bash, zsh or fish (the package installs them; e.g. \`weir completions bash > ~/.local/share/bash-completion/completions/weir\`)' \
'status:Summarize the running agent from its metrics endpoint\: rates, lag, spool use, drops and errors by reason. Exits 1 when unhealthy\: unreachable, /health or /ready failing, a lagging sink with no success for --stall-after, or events dropped during the check. A config file on disk that a reload would refuse is a warning line, not unhealthy' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'weir help commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__check-config_commands] )) ||
_weir__subcmd__help__subcmd__check-config_commands() {
    local commands; commands=()
    _describe -t commands 'weir help check-config commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__completions_commands] )) ||
_weir__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'weir help completions commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__help_commands] )) ||
_weir__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'weir help help commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__reload_commands] )) ||
_weir__subcmd__help__subcmd__reload_commands() {
    local commands; commands=()
    _describe -t commands 'weir help reload commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__run_commands] )) ||
_weir__subcmd__help__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'weir help run commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__scrub_commands] )) ||
_weir__subcmd__help__subcmd__scrub_commands() {
    local commands; commands=()
    _describe -t commands 'weir help scrub commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__status_commands] )) ||
_weir__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'weir help status commands' commands "$@"
}
(( $+functions[_weir__subcmd__help__subcmd__tap_commands] )) ||
_weir__subcmd__help__subcmd__tap_commands() {
    local commands; commands=()
    _describe -t commands 'weir help tap commands' commands "$@"
}
(( $+functions[_weir__subcmd__reload_commands] )) ||
_weir__subcmd__reload_commands() {
    local commands; commands=()
    _describe -t commands 'weir reload commands' commands "$@"
}
(( $+functions[_weir__subcmd__run_commands] )) ||
_weir__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'weir run commands' commands "$@"
}
(( $+functions[_weir__subcmd__scrub_commands] )) ||
_weir__subcmd__scrub_commands() {
    local commands; commands=()
    _describe -t commands 'weir scrub commands' commands "$@"
}
(( $+functions[_weir__subcmd__status_commands] )) ||
_weir__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'weir status commands' commands "$@"
}
(( $+functions[_weir__subcmd__tap_commands] )) ||
_weir__subcmd__tap_commands() {
    local commands; commands=()
    _describe -t commands 'weir tap commands' commands "$@"
}

if [ "$funcstack[1]" = "_weir" ]; then
    _weir "$@"
else
    compdef _weir weir
fi
