#!/usr/bin/env bash
# Installs the Ferry agent on this host: the binary, the `ferry` system user, its directories, the trusted keys,
# the enrollment with the controller, and the systemd unit (enabled and started).
#
# Idempotent: run it again (for example with a newer --binary) and it skips what is already in place — an existing
# user, existing directories, an identical binary or unit, and the enrollment when /etc/ferry/agent.json exists
# (unless --force or --replace). A changed binary, unit or CA bundle restarts the agent; apps keep running
# (KillMode=process in the unit).
#
# The enrollment token is never printed: not in --dry-run plans, not in errors. Prefer --enroll-token-file (or
# --enroll-token-file - for standard input) over --enroll-token, which is visible in the process list while this
# script runs. Run with --help for the flags.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'USAGE'
Usage: install-agent.sh --controller URL (--enroll-token TOKEN | --enroll-token-file FILE) --service NAME...
                        (--trusted-key FILE.pub... | --trust-root FILE) [options]

Required:
  --controller URL          the controller's base URL (http:// or https://)
  --enroll-token TOKEN      an enrollment token (role enroll; with --replace an operator token); never printed
  --enroll-token-file FILE  read that token from FILE (- for standard input) instead
  --service NAME            a service this instance runs; repeatable
  --trusted-key FILE.pub    an operator public key, copied to /etc/ferry/keys/; repeatable
  --trust-root FILE         or instead: a signed trust root (ferry-controller root init, root sign), copied to
                            /etc/ferry/root.json and pinned; it names its keys and thresholds (no --trusted-key,
                            no --threshold)

Options:
  --threshold N             distinct trusted keys that must sign a release (default 1; with --trusted-key only)
  --binary PATH             the ferry-agent binary to install (default ./ferry-agent)
  --process-manager KIND    auto, pm2 or builtin (default auto)
  --pm2 PATH                the pm2 binary (default: found on PATH)
  --pm2-home DIR            PM2_HOME of the pm2 daemon Ferry drives (default /var/lib/ferry/.pm2 unless builtin)
  --name NAME               this agent's name on the dashboard (default: the hostname)
  --ca-file FILE            CA bundle (PEM) for the controller's TLS certificate, copied to /etc/ferry/ca.pem
                            (the agent runs as ferry with ProtectHome=yes: it reads that copy, not FILE)
  --allow-insecure-http     allow a plain http:// controller URL that is not loopback (token and releases unencrypted)
  --poll-seconds N          seconds between passes when not long-polling (default 15)
  --machine-identity KIND   how the agent tells this machine from a copy of it: machine-id (default), ec2 (the
                            EC2 instance id; what the cloud-init bootstrap passes) or none
  --unit FILE               the systemd unit to install (default: systemd/ferry-agent.service next to this script)
  --force                   enroll again even when /etc/ferry/agent.json exists; the controller accepts it only
                            when it has no agent of that name (after `ferry-controller agents remove NAME`, or a
                            new --name; where enrolments are attested, with an operator token): an enroll token
                            for a name in use is refused (409 agent_exists), use --replace for that
  --replace                 enroll again and replace the controller's agent of the same name (implies --force):
                            it keeps its id and its old token stops working; needs an operator token, given with
                            --enroll-token or --enroll-token-file like the enroll token
  --no-start                install and enable the unit but do not start it (image building)
  --dry-run                 print what would be done and change nothing
  --root DIR                act on DIR as the file-system root (default /); only with --dry-run, for tests
  -h, --help                this text
USAGE
}

die() {
    echo "install-agent: $*" >&2
    exit 2
}

# --- Flags ----------------------------------------------------------------------------------------------------------
CONTROLLER=""
TOKEN=""
TOKEN_FILE=""
SERVICES=()
KEYS=()
THRESHOLD=1
THRESHOLD_GIVEN=0
TRUST_ROOT=""
BINARY="./ferry-agent"
PROCESS_MANAGER="auto"
PM2=""
PM2_HOME_DIR=""
NAME=""
CA_FILE=""
ALLOW_INSECURE_HTTP=0
POLL_SECONDS=""
MACHINE_IDENTITY=""
UNIT="$SCRIPT_DIR/systemd/ferry-agent.service"
FORCE=0
REPLACE=0
NO_START=0
DRY_RUN=0
ROOT="/"

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --controller) need_value "$1" $#; CONTROLLER=$2; shift 2 ;;
    --enroll-token) need_value "$1" $#; TOKEN=$2; shift 2 ;;
    --enroll-token-file) need_value "$1" $#; TOKEN_FILE=$2; shift 2 ;;
    --service) need_value "$1" $#; SERVICES+=("$2"); shift 2 ;;
    --trusted-key) need_value "$1" $#; KEYS+=("$2"); shift 2 ;;
    --threshold) need_value "$1" $#; THRESHOLD=$2; THRESHOLD_GIVEN=1; shift 2 ;;
    --trust-root) need_value "$1" $#; TRUST_ROOT=$2; shift 2 ;;
    --binary) need_value "$1" $#; BINARY=$2; shift 2 ;;
    --process-manager) need_value "$1" $#; PROCESS_MANAGER=$2; shift 2 ;;
    --pm2) need_value "$1" $#; PM2=$2; shift 2 ;;
    --pm2-home) need_value "$1" $#; PM2_HOME_DIR=$2; shift 2 ;;
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --ca-file) need_value "$1" $#; CA_FILE=$2; shift 2 ;;
    --poll-seconds) need_value "$1" $#; POLL_SECONDS=$2; shift 2 ;;
    --machine-identity) need_value "$1" $#; MACHINE_IDENTITY=$2; shift 2 ;;
    --unit) need_value "$1" $#; UNIT=$2; shift 2 ;;
    --root) need_value "$1" $#; ROOT=$2; shift 2 ;;
    --allow-insecure-http) ALLOW_INSECURE_HTTP=1; shift ;;
    --force) FORCE=1; shift ;;
    --replace) REPLACE=1; FORCE=1; shift ;;
    --no-start) NO_START=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# --- Validation (before anything changes) ----------------------------------------------------------------------
[ -n "$CONTROLLER" ] || die "--controller is required"
case "$CONTROLLER" in
http://* | https://*) ;;
*) die "--controller must be an http:// or https:// URL, got '$CONTROLLER'" ;;
esac
[ ${#SERVICES[@]} -gt 0 ] || die "at least one --service is required"
for service in "${SERVICES[@]}"; do
    [[ "$service" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "--service '$service' must match ^[a-z0-9][a-z0-9-]{0,62}\$"
done
if [ -n "$TRUST_ROOT" ]; then
    # As `ferry-agent enroll` refuses them together (EnrollCommand.validate).
    if [ ${#KEYS[@]} -gt 0 ] || [ "$THRESHOLD_GIVEN" = 1 ]; then
        die "give either --trust-root or --trusted-key/--threshold, not both: the root names its keys and thresholds"
    fi
    if [ ! -f "$TRUST_ROOT" ] || [ ! -r "$TRUST_ROOT" ]; then die "--trust-root $TRUST_ROOT: no such readable file"; fi
else
    [ ${#KEYS[@]} -gt 0 ] || die "at least one --trusted-key (or a signed --trust-root) is required"
fi
declare -A KEY_NAMES=()
for key in "${KEYS[@]}"; do
    if [ ! -f "$key" ] || [ ! -r "$key" ]; then die "--trusted-key $key: no such readable file"; fi
    base=$(basename "$key")
    [ -z "${KEY_NAMES[$base]:-}" ] || die "--trusted-key: two keys are named $base; rename one"
    KEY_NAMES[$base]=1
done
if ! [[ "$THRESHOLD" =~ ^[1-9][0-9]?$ ]] || [ "$THRESHOLD" -gt 64 ]; then
    die "--threshold must be between 1 and 64, got '$THRESHOLD'"
fi
[ -n "$TRUST_ROOT" ] || [ "$THRESHOLD" -le ${#KEYS[@]} ] || die "--threshold $THRESHOLD is more than the ${#KEYS[@]} trusted key(s)"
case "$PROCESS_MANAGER" in
auto | pm2 | builtin) ;;
*) die "--process-manager must be auto, pm2 or builtin, got '$PROCESS_MANAGER'" ;;
esac
case "$MACHINE_IDENTITY" in
"" | machine-id | ec2 | none) ;;
*) die "--machine-identity must be machine-id, ec2 or none, got '$MACHINE_IDENTITY'" ;;
esac
if [ -n "$POLL_SECONDS" ]; then
    if ! [[ "$POLL_SECONDS" =~ ^[1-9][0-9]{0,3}$ ]] || [ "$POLL_SECONDS" -gt 3600 ]; then
        die "--poll-seconds must be between 1 and 3600, got '$POLL_SECONDS'"
    fi
fi
if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then die "--binary $BINARY: no such executable file"; fi
# A binary built without --static-swift-stdlib needs the Swift runtime at the build machine's path, which an instance
# does not have: say so now, not at enrollment, with what to do.
if ! BINARY_CHECK=$("$BINARY" --version 2>&1); then
    die "--binary $BINARY does not run on this host: $(printf '%s' "$BINARY_CHECK" | head -n 2 | tr '\n' ' ')" \
        "(build it with 'swift build -c release --static-swift-stdlib --product ferry-agent'; the host needs libcurl, OpenSSL 3 and libarchive: Debian libcurl4 libssl3 libarchive13)"
fi
if [ ! -f "$UNIT" ] || [ ! -r "$UNIT" ]; then die "--unit $UNIT: no such readable file"; fi
if [ -n "$CA_FILE" ] && { [ ! -f "$CA_FILE" ] || [ ! -r "$CA_FILE" ]; }; then die "--ca-file $CA_FILE: no such readable file"; fi
if [ -n "$TOKEN" ] && [ -n "$TOKEN_FILE" ]; then die "give --enroll-token or --enroll-token-file, not both"; fi
if [ -n "$TOKEN_FILE" ]; then
    if [ "$TOKEN_FILE" = "-" ]; then
        IFS= read -r TOKEN || true
    else
        [ -r "$TOKEN_FILE" ] || die "--enroll-token-file $TOKEN_FILE: no such readable file"
        IFS= read -r TOKEN <"$TOKEN_FILE" || true
    fi
    [ -n "$TOKEN" ] || die "--enroll-token-file $TOKEN_FILE: the first line is empty"
fi
case "$ROOT" in
/*) ;;
*) die "--root must be an absolute path, got '$ROOT'" ;;
esac
ROOT=${ROOT%/}
if [ -n "$ROOT" ] && [ "$DRY_RUN" != 1 ]; then die "--root is only for --dry-run plans"; fi
if [ "$DRY_RUN" != 1 ] && [ "$(id -u)" != 0 ]; then die "run as root (or with --dry-run to see the plan)"; fi

# --- Layout (every path under $ROOT) -----------------------------------------------------------------------------
AGENT_USER=ferry
STATE_DIR=/var/lib/ferry
ETC_DIR=$ROOT/etc/ferry
KEYS_DIR=$ETC_DIR/keys
ENV_DIR=$ETC_DIR/env
CONFIG=$ETC_DIR/agent.json
INSTALLED_CA=$ETC_DIR/ca.pem
INSTALLED_ROOT=$ETC_DIR/root.json
AGENT_STATE=$ROOT$STATE_DIR
INSTALLED_BINARY=$ROOT/usr/local/bin/ferry-agent
INSTALLED_UNIT=$ROOT/etc/systemd/system/ferry-agent.service
if [ -z "$PM2_HOME_DIR" ] && [ "$PROCESS_MANAGER" != builtin ]; then PM2_HOME_DIR=$STATE_DIR/.pm2; fi
ENROLL_NEEDED=1
if [ -f "$CONFIG" ] && [ "$FORCE" != 1 ]; then ENROLL_NEEDED=0; fi
PM2_UNIT_NEEDED=0
if [ "$PROCESS_MANAGER" != builtin ] && [ ! -f "$ROOT/etc/systemd/system/pm2-$AGENT_USER.service" ]; then PM2_UNIT_NEEDED=1; fi
# Checked only where it is used (an enrolment, or pm2's boot unit to install): a host set up before this rule, with a
# drop-in of its own, is upgraded by running the script again with the same flags.
if [ -n "$PM2_HOME_DIR" ] && { [ "$ENROLL_NEEDED" = 1 ] || [ "$PM2_UNIT_NEEDED" = 1 ]; }; then
    # `pm2 startup --hp DIR` gives its boot unit PM2_HOME=DIR/.pm2 and nothing else; the agent's unit may write only
    # under the state directory (ProtectSystem=strict, ReadWritePaths=/var/lib/ferry).
    case "/$PM2_HOME_DIR/" in */../* | */./*) die "--pm2-home must not hold . or .. components, got '$PM2_HOME_DIR'" ;; esac
    case "$PM2_HOME_DIR" in
    "$STATE_DIR"/*.pm2 | "$STATE_DIR"/.pm2) [ "$(basename "$PM2_HOME_DIR")" = .pm2 ] || die "--pm2-home must be a directory named .pm2 (pm2 startup gives its boot unit DIR/.pm2), got '$PM2_HOME_DIR'" ;;
    *) die "--pm2-home must be a directory named .pm2 under $STATE_DIR (the agent's unit writes only there; pm2 startup gives its boot unit DIR/.pm2), got '$PM2_HOME_DIR'" ;;
    esac
fi
# Checked before anything changes: a half-installed host with no token to finish is worse than a clear refusal.
if [ "$ENROLL_NEEDED" = 1 ] && [ -z "$TOKEN" ]; then
    if [ "$REPLACE" = 1 ]; then die "--replace needs an operator token: give it with --enroll-token or --enroll-token-file"; fi
    die "--enroll-token or --enroll-token-file is required to enroll"
fi
PM2_BIN=$PM2
if [ -z "$PM2_BIN" ] && [ "$PROCESS_MANAGER" != builtin ]; then PM2_BIN=$(command -v pm2 || true); fi
if [ "$PROCESS_MANAGER" = pm2 ] && [ -z "$PM2_BIN" ]; then die "--process-manager pm2: pm2 is not on PATH (give --pm2 PATH)"; fi

# --- Helpers ------------------------------------------------------------------------------------------------------
# `run CMD...` runs a command, or prints it (shell-quoted) under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

note() {
    echo "install-agent: $*"
}

user_exists() {
    if [ -z "$ROOT" ]; then
        getent passwd "$1" >/dev/null
    else
        grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null
    fi
}

group_exists() {
    if [ -z "$ROOT" ]; then
        getent group "$1" >/dev/null
    else
        grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null
    fi
}

# `ensure_dir PATH OWNER:GROUP MODE`: creates a missing directory; an existing one is left as it is.
ensure_dir() {
    if [ -d "$1" ]; then
        note "skip: $1 exists"
    else
        run install -d -o "${2%%:*}" -g "${2##*:}" -m "$3" "$1"
    fi
}

# `install_file SOURCE DEST OWNER:GROUP MODE`: copies SOURCE unless DEST already has the same bytes. Returns 0 when
# it installed (or would install), 1 when DEST was up to date.
install_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        note "skip: $2 is up to date"
        return 1
    fi
    run install -o "${3%%:*}" -g "${3##*:}" -m "$4" "$1" "$2"
    return 0
}

ROOT_ARGS=()
[ -z "$ROOT" ] || ROOT_ARGS=(--root "$ROOT")

[ "$DRY_RUN" != 1 ] || note "dry run: nothing is changed"

# --- User and directories -----------------------------------------------------------------------------------------
if group_exists "$AGENT_USER"; then
    note "skip: group $AGENT_USER exists"
else
    run groupadd "${ROOT_ARGS[@]}" --system "$AGENT_USER"
fi
if user_exists "$AGENT_USER"; then
    note "skip: user $AGENT_USER exists"
else
    NOLOGIN=$(command -v nologin || echo /usr/sbin/nologin)
    run useradd "${ROOT_ARGS[@]}" --system --gid "$AGENT_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$NOLOGIN" --comment "Ferry agent" "$AGENT_USER"
fi
# /etc/ferry is root's and readable by the agent's group; the state directory is the agent's alone.
ensure_dir "$ETC_DIR" "root:$AGENT_USER" 0750
ensure_dir "$KEYS_DIR" "root:$AGENT_USER" 0750
ensure_dir "$ENV_DIR" "root:$AGENT_USER" 0750
ensure_dir "$AGENT_STATE" "$AGENT_USER:$AGENT_USER" 0700

# --- Binary and keys ----------------------------------------------------------------------------------------------
CHANGED=0
ensure_dir "$ROOT/usr/local/bin" root:root 0755
if install_file "$BINARY" "$INSTALLED_BINARY" root:root 0755; then CHANGED=1; fi
KEY_PATHS=()
for key in "${KEYS[@]}"; do
    destination=$KEYS_DIR/$(basename "$key")
    install_file "$key" "$destination" "root:$AGENT_USER" 0640 || true
    KEY_PATHS+=("$destination")
done
# The agent runs as ferry with ProtectHome=yes: it reads these copies, never a file under /root or /home, or one only
# root may read, which would fail every poll (TLS) or every start (the root).
if [ -n "$CA_FILE" ]; then
    if install_file "$CA_FILE" "$INSTALLED_CA" "root:$AGENT_USER" 0640; then CHANGED=1; fi
    if [ "$ENROLL_NEEDED" = 0 ] && ! grep -q 'ferry.\{0,1\}/ca\.pem' "$CONFIG" 2>/dev/null; then
        note "note: $CONFIG was written by an earlier enrolment and names its own caFile; the agent reads $INSTALLED_CA only after --replace (or set \"caFile\" in the config by hand)"
    fi
fi
ROOT_BACKUP=""
AGENT_STOPPED=0
# Whatever ends the script before the new enrolment is written and the agent started (a failed enroll, pm2 startup
# failing under set -e): the pinned root goes back first (the running enrolment still names it), then an agent stopped
# for the enrolment starts again.
on_exit() {
    if [ -n "$ROOT_BACKUP" ] && [ -f "$ROOT_BACKUP" ]; then
        mv -f "$ROOT_BACKUP" "$INSTALLED_ROOT" || echo "install-agent: could not put $ROOT_BACKUP back as $INSTALLED_ROOT" >&2
    fi
    if [ "$AGENT_STOPPED" = 1 ]; then systemctl start ferry-agent.service || true; fi
}
trap on_exit EXIT
if [ "$ENROLL_NEEDED" = 1 ] && [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet ferry-agent.service; then
    # enroll refuses to run beside the agent (it takes the state directory's lock): a running agent keeps its old token
    # and trust roots, and writes them back over the new enrolment's. Its apps keep running (KillMode=process); it
    # starts again below, or on any exit before that.
    run systemctl stop ferry-agent.service
    [ "$DRY_RUN" = 1 ] || AGENT_STOPPED=1
fi
if [ -n "$TRUST_ROOT" ]; then
    if [ "$ENROLL_NEEDED" = 1 ]; then
        # The pinned root of an enrolled instance (--force, --replace) stays until the new enrolment succeeds: the
        # agent refuses to start with a root file other than the one its pin names.
        if [ -f "$INSTALLED_ROOT" ]; then
            ROOT_BACKUP=$INSTALLED_ROOT.before-enroll
            # Put back by on_exit unless the enrolment is written.
            run cp -p "$INSTALLED_ROOT" "$ROOT_BACKUP"
        fi
        install_file "$TRUST_ROOT" "$INSTALLED_ROOT" "root:$AGENT_USER" 0640 || true
    else
        # The enrolment pinned the root file's SHA-256 (trust-pin.json): the agent refuses one replaced under it.
        note "skip: $INSTALLED_ROOT, this instance is enrolled with its pinned root (--force or --replace pins another)"
    fi
fi

# --- PM2 resurrection at boot ----------------------------------------------------------------------------------------
# The agent drives the ferry user's pm2 (PM2_HOME=/var/lib/ferry/.pm2). `pm2 startup` installs pm2-ferry.service,
# which resurrects the table `pm2 save` recorded; starting it now means the pm2 daemon lives in that unit, not in
# the agent's sandbox (ferry-agent.service orders itself after it).
if [ -n "$PM2_BIN" ] && [ "$PROCESS_MANAGER" != builtin ]; then
    if [ -f "$ROOT/etc/systemd/system/pm2-$AGENT_USER.service" ]; then
        note "skip: pm2-$AGENT_USER.service exists"
    else
        # pm2 startup writes Environment=PM2_HOME=DIR/.pm2 for --hp DIR, whatever PM2_HOME says (lib/API/Startup.js):
        # the boot unit resurrects the daemon the agent drives (a --pm2-home is checked to end in /.pm2).
        run env "PATH=$(dirname "$PM2_BIN"):$PATH" "$PM2_BIN" startup systemd -u "$AGENT_USER" --hp "$(dirname "$PM2_HOME_DIR")"
    fi
    if [ "$NO_START" != 1 ]; then run systemctl start "pm2-$AGENT_USER.service"; fi
fi

# --- Enrollment ---------------------------------------------------------------------------------------------------
if [ "$ENROLL_NEEDED" = 0 ]; then
    note "skip: $CONFIG exists, this instance is enrolled (--replace, with an operator token, enrolls it again)"
else
    ENROLL=("$INSTALLED_BINARY" enroll --controller "$CONTROLLER" --config "$CONFIG" --state-dir "$AGENT_STATE"
        --env-dir "$ENV_DIR")
    [ -n "$TRUST_ROOT" ] || ENROLL+=(--threshold "$THRESHOLD")
    ENROLL+=(--process-manager "$PROCESS_MANAGER")
    for service in "${SERVICES[@]}"; do ENROLL+=(--service "$service"); done
    [ -z "$TRUST_ROOT" ] || ENROLL+=(--trust-root "$INSTALLED_ROOT")
    for key in "${KEY_PATHS[@]}"; do ENROLL+=(--trusted-key "$key"); done
    [ -z "$NAME" ] || ENROLL+=(--name "$NAME")
    [ -z "$PM2" ] || ENROLL+=(--pm2 "$PM2")
    [ -z "$PM2_HOME_DIR" ] || ENROLL+=(--pm2-home "$ROOT$PM2_HOME_DIR")
    [ -z "$CA_FILE" ] || ENROLL+=(--ca-file "$INSTALLED_CA")
    [ "$ALLOW_INSECURE_HTTP" -eq 0 ] || ENROLL+=(--allow-insecure-http)
    [ -z "$POLL_SECONDS" ] || ENROLL+=(--poll-seconds "$POLL_SECONDS")
    [ -z "$MACHINE_IDENTITY" ] || ENROLL+=(--machine-identity "$MACHINE_IDENTITY")
    [ "$FORCE" != 1 ] || ENROLL+=(--force)
    # Replacing an agent of the same name (same id, a new token) needs an operator token as the token.
    [ "$REPLACE" != 1 ] || ENROLL+=(--replace)
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'
        printf ' %q' "${ENROLL[@]}"
        printf ' --token-file - <redacted token on stdin>\n'
    else
        # The token goes to enroll on its standard input: never on a command line (visible in /proc), and enroll's
        # own output and errors never contain it.
        if ! printf '%s\n' "$TOKEN" | "${ENROLL[@]}" --token-file -; then
            # The pinned root goes back (the EXIT trap): the running enrolment still names it.
            die "enrollment failed (see above: enroll says what of the earlier enrolment it kept)"
        fi
    fi
    if [ -n "$ROOT_BACKUP" ]; then
        run rm -f "$ROOT_BACKUP"
        ROOT_BACKUP=""
    fi
    # Enroll runs as root; the agent (user ferry) reads its config and token. /etc/ferry stays root's.
    run chown "root:$AGENT_USER" "$CONFIG"
    run chmod 0640 "$CONFIG"
    # (enroll gives what it writes in the state directory to the directory's owner; said again here for an older binary)
    run chown "$AGENT_USER:$AGENT_USER" "$AGENT_STATE/agent.token" "$AGENT_STATE/trust-pin.json"
    # The machine the state directory belongs to (written by enroll unless the machine could not be identified).
    if [ "$DRY_RUN" = 1 ] || [ -e "$AGENT_STATE/machine.json" ]; then run chown "$AGENT_USER:$AGENT_USER" "$AGENT_STATE/machine.json"; fi
    CHANGED=1
fi
TOKEN=""

# --- systemd unit -------------------------------------------------------------------------------------------------
if install_file "$UNIT" "$INSTALLED_UNIT" root:root 0644; then CHANGED=1; fi
if [ -n "$ROOT" ]; then
    run systemctl --root="$ROOT" enable ferry-agent.service
    note "skip: starting ferry-agent.service (not with --root)"
else
    run systemctl daemon-reload
    if [ "$NO_START" = 1 ]; then
        run systemctl enable ferry-agent.service
    elif [ "$AGENT_STOPPED" = 1 ] || systemctl is-active --quiet ferry-agent.service; then
        run systemctl enable ferry-agent.service
        # A running agent (or one stopped for the enrolment) picks up a new binary, unit or enrollment only on restart;
        # its apps keep running.
        if [ "$CHANGED" = 1 ]; then
            run systemctl restart ferry-agent.service
            AGENT_STOPPED=0
        else
            note "skip: ferry-agent.service is running and nothing changed"
        fi
    else
        run systemctl enable --now ferry-agent.service
    fi
fi
if [ "$DRY_RUN" = 1 ]; then note "done (dry run: nothing was changed)"; else note "done"; fi
