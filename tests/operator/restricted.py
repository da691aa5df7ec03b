"""The PodSecurity Standards' "restricted" profile (with the baseline it includes) as a
checker over a pod spec: what the `pod-security.kubernetes.io/enforce: restricted`
admission would refuse. The test apiserver (v1.20) predates that admission plugin, so the
rules are written out here, one check per rule of the published standard."""
from __future__ import annotations

from typing import Any, Iterator

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def violations(pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Each rule of the restricted profile the pod breaks, as '<where>: <rule>'."""
    out: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            out.append(f"pod: {flag} must be unset or false")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {volume['name']}: type {sorted(kinds - ALLOWED_VOLUMES)} not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"pod: sysctl {sysctl['name']} not allowed")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"pod: AppArmor profile {value} not allowed")
    if pod_sc.get("runAsUser") == 0:
        out.append("pod: runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod: seccompProfile {pod_seccomp} not allowed")
    if (pod_sc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
        out.append("pod: seLinuxOptions.type not allowed")

    for c in containers(pod_spec):
        where, sc = f"container {c['name']}", c.get("securityContext") or {}
        out += [f"{where}: {rule}" for rule in container_violations(sc, pod_sc)]
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort must be unset or 0")
    return out


def container_violations(sc: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    """The container-level rules, for one container's securityContext under pod_sc."""
    out = []
    if sc.get("privileged"):
        out.append("privileged must be unset or false")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append("capabilities.drop must include ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        out.append(f"capabilities.add may only hold NET_BIND_SERVICE, not {caps['add']}")
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        out.append("runAsNonRoot must be true (here or in the pod's securityContext)")
    if sc.get("runAsUser") == 0:
        out.append("runAsUser must not be 0")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"seccompProfile.type must be RuntimeDefault or Localhost (here or in the pod), got {seccomp}")
    if sc.get("procMount") not in (None, "Default"):
        out.append("procMount must be Default")
    if (sc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
        out.append("seLinuxOptions.type not allowed")
    return out
