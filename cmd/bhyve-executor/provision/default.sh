#!/bin/sh
# Default provisioning of a bhyve-executor job template (FreeBSD 14+).
#
# `bhyve-executor template build` and `template rotate` run this script as
# root (su from the image's default user) in the template VM, with these
# variables set in front of it:
#   JOB_USER      account jobs run as (settings: ssh.user)
#   JOB_KEY       its authorized public key (the runner's identity_file key)
#   BUILDS_DIR    checkout directory (settings: builds_dir)
#   CACHE_DIR     local cache directory (settings: cache_dir)
#   PACKAGES      extra packages (--packages), space separated
#   RUNNER_UPLOAD where the host's gitlab-runner binary was copied, or empty
#   RUNNER_URL    where to fetch gitlab-runner from when RUNNER_UPLOAD is empty
#   UPGRADE       1 on rotate: upgrade the installed packages first
# Copy it, extend it, and pass yours with --provision (it runs after this
# one, with the same variables).
set -eu

: "${JOB_USER:=gitlab-runner}"
: "${JOB_KEY:?JOB_KEY must hold the public key of the runner}"
: "${BUILDS_DIR:=/builds}"
: "${CACHE_DIR:=/cache}"
: "${PACKAGES:=}"
: "${RUNNER_UPLOAD:=}"
: "${RUNNER_URL:=}"
: "${UPGRADE:=0}"
# Keep the caller's order, make sure the system directories are there.
PATH="$PATH:/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
export PATH
ASSUME_ALWAYS_YES=yes
export ASSUME_ALWAYS_YES

echo "provision: FreeBSD $(freebsd-version)"

# Packages: what jobs need (bash for the runner's shell, git and git-lfs
# for checkouts, CA roots for HTTPS), plus the operator's.
if [ "$UPGRADE" = 1 ]; then
	pkg upgrade -y
fi
# shellcheck disable=SC2086 # PACKAGES is a list of words
pkg install -y bash git git-lfs ca_root_nss $PACKAGES

# The job user, with the runner's key and nothing else.
if ! pw usershow "$JOB_USER" >/dev/null 2>&1; then
	pw useradd -n "$JOB_USER" -m -s /usr/local/bin/bash -c "GitLab CI jobs"
fi
home=$(pw usershow "$JOB_USER" | cut -d: -f9)
install -d -m 700 -o "$JOB_USER" "$home/.ssh"
printf '%s\n' "$JOB_KEY" > "$home/.ssh/authorized_keys"
chown "$JOB_USER" "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"

# Checkouts and cache, writable by the job user.
install -d -m 755 -o "$JOB_USER" "$BUILDS_DIR" "$CACHE_DIR"

# gitlab-runner in the guest: artifacts and caches are uploaded by it.
if [ -n "$RUNNER_UPLOAD" ]; then
	install -m 755 "$RUNNER_UPLOAD" /usr/local/bin/gitlab-runner
	rm -f "$RUNNER_UPLOAD"
elif [ -n "$RUNNER_URL" ]; then
	fetch -o /usr/local/bin/gitlab-runner "$RUNNER_URL"
	chmod 755 /usr/local/bin/gitlab-runner
fi
gitlab-runner --version | sed -n 's/^Version: */provision: gitlab-runner /p'

# Boot without the loader's countdown; DHCP on the first NIC, whatever its
# driver calls it.
grep -q '^autoboot_delay=' /boot/loader.conf 2>/dev/null ||
	echo 'autoboot_delay="0"' >> /boot/loader.conf
sysrc ifconfig_DEFAULT="SYNCDHCP" sshd_enable="YES"

# Stable host keys: create every missing one now, so that no clone ever
# generates its own and all of them match the template's pin. Jobs with
# per-VM host keys get their ed25519 key from their own cloud-init data
# (nuageinit ssh_keys at first boot) instead, and trust no other.
ssh-keygen -A

# Keys only: the image's default user (freebsd/freebsd) must not be
# reachable with its well-known password.
conf=/etc/ssh/sshd_config
grep -v -E '^[[:space:]]*(PasswordAuthentication|KbdInteractiveAuthentication|ChallengeResponseAuthentication)[[:space:]]' "$conf" > "$conf.new" || true
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\n' >> "$conf.new"
mv "$conf.new" "$conf"
service sshd reload || true

# Keep nuageinit, and make the next boot a first boot again, so that each
# clone applies the cloud-init data it is given (its own host name, keys).
test -e /usr/libexec/nuageinit || echo "provision: WARNING: nuageinit is missing; clones cannot take per-VM cloud-init data" >&2
pkg clean -y
touch /firstboot
echo "provision: done"
