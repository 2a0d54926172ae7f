# A VM stand-in for the `vm` scenario: systemd as PID 1 on the offline base.
# Runs without --privileged (refused on this host): molecule gives it tmpfs
# /run and /run/lock, the cgroup tree read-only, and CAP_SYS_ADMIN.
ARG BASE=local/debian:trixie
FROM ${BASE}
ENV container=docker
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      systemd systemd-sysv dbus python3 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* \
      /lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup* \
      /lib/systemd/system/systemd-update-utmp* \
 && systemctl mask systemd-udevd.service systemd-udev-trigger.service getty.target \
      console-getty.service systemd-logind.service
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
