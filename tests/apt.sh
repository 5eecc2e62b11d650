# Sourced by tests/setup-*.sh: apt_install PACKAGE... installs Debian packages with root or sudo,
# without starting their services (the tests start their own servers); without either, it says
# what to run and returns 0, and the tests that need the packages skip.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "missing: $*: install with 'apt-get install $*' (the tests that need it skip)" >&2
            return 0
        fi
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # 101: "no service may start"
        $sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
        guard=yes
    fi
    local status=0
    $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null || status=$?
    if [ -n "$guard" ]; then
        $sudo rm -f /usr/sbin/policy-rc.d
    fi
    return $status
}
