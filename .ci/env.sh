# Shared by the scripts in .ci/ and tests/: make sure Rust, a C compiler, Python packages, Node
# and a local RabbitMQ are there. Sourced, not run.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root for: $*" >&2
        return 1
    fi
}

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    echo "installing $* with apt-get" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_python_venv VENV REQUIREMENTS: a virtualenv at VENV holding exactly the pinned
# REQUIREMENTS, reinstalled only when that file changed. Uses $PYTHON, else python3.
ensure_python_venv() {
    local venv=$1 requirements=$2 python=${PYTHON:-python3}
    command -v "$python" >/dev/null 2>&1 || { apt_install python3 python3-venv; python=python3; }
    if [ ! -x "$venv/bin/python" ]; then
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
            # Debian's python3 ships venv (with ensurepip) as a separate package.
            rm -rf "$venv"
            apt_install python3-venv
            "$python" -m venv "$venv"
        fi
    fi
    local stamp=$venv/.requirements
    if ! cmp -s "$requirements" "$stamp"; then
        echo "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$stamp"
    fi
}

ensure_node() {
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
}

ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    command -v cc >/dev/null 2>&1 || apt_install build-essential
    if ! command -v cargo >/dev/null 2>&1; then
        command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
        echo "installing Rust with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --component clippy,rustfmt
        . "$HOME/.cargo/env"
    fi
}

rabbitmq_answers() {
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

redis_answers() {
    (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && read -r -t 5 reply <&3 &&
        [ "${reply%$'\r'}" = "+PONG" ]) 2>/dev/null
}

# ensure_redis: a Redis on 127.0.0.1:6379, for the test of Idempotency-Key answers shared by
# replicas; installed from Debian's package and started (keeping nothing on disk) if none answers.
ensure_redis() {
    redis_answers && return 0
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    if ! redis_answers; then
        echo "starting Redis" >&2
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    fi
    local i
    for i in $(seq 1 50); do
        redis_answers && return 0
        sleep 0.2
    done
    echo "Redis did not start on 127.0.0.1:6379" >&2
    return 1
}

ensure_rabbitmq() {
    if ! rabbitmq_answers; then
        command -v rabbitmq-server >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
        command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
        # Installing the package may have started it already.
        if ! rabbitmq_answers; then
            echo "starting RabbitMQ" >&2
            as_root rabbitmq-server -detached
        fi
    fi
    command -v rabbitmqctl >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
    # The port opens before the broker accepts logins; wait for the whole boot.
    as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null
    local i
    for i in $(seq 1 120); do
        rabbitmq_answers && return 0
        sleep 1
    done
    echo "RabbitMQ did not start on 127.0.0.1:5672" >&2
    return 1
}
