//! Facts about the host that decide what advice fits: CPU vendor, virtual machine or not, the memlock limit.

/// Bit of `CAP_IPC_LOCK` in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK: u32 = 14;

/// What the running host looks like.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// `vendor_id` of the first CPU (`GenuineIntel`, `AuthenticAMD`).
    pub cpu_vendor: Option<String>,
    /// The CPU reports a hypervisor: this is a virtual machine.
    pub in_vm: bool,
    /// Soft RLIMIT_MEMLOCK in bytes; `None` when unlimited.
    pub memlock: Option<u64>,
    /// The process holds `CAP_IPC_LOCK`, which exempts it from the memlock limit.
    pub cap_ipc_lock: bool,
}

impl HostFacts {
    /// The facts of this process on this host.
    pub fn current() -> HostFacts {
        let (cpu_vendor, in_vm) =
            std::fs::read_to_string("/proc/cpuinfo").map(|t| parse_cpuinfo(&t)).unwrap_or((None, false));
        let cap_ipc_lock = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| parse_cap_eff(&t))
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0);
        HostFacts { cpu_vendor, in_vm, memlock: memlock_limit(), cap_ipc_lock }
    }

    /// `Some(advice)` when this process may not pin `needed` bytes.
    pub fn memlock_shortfall(&self, needed: u64) -> Option<String> {
        match self.memlock {
            Some(limit) if !self.cap_ipc_lock && limit < needed => {
                Some(super::advice::memlock_too_low(Some(limit), needed))
            }
            _ => None,
        }
    }
}

/// The soft RLIMIT_MEMLOCK; `None` when unlimited (or unreadable, which never happens on Linux).
pub fn memlock_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// CPU vendor and whether the `hypervisor` flag is set, from `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, bool) {
    let mut vendor = None;
    let mut vm = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        match k.trim() {
            "vendor_id" if vendor.is_none() => vendor = Some(v.trim().to_string()),
            "flags" => vm |= v.split_whitespace().any(|f| f == "hypervisor"),
            _ => {}
        }
    }
    (vendor, vm)
}

/// The effective capability set, from `/proc/self/status` text.
pub fn parse_cap_eff(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_capabilities() {
        let t = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme hypervisor lahf_lm\n\n\
                 processor\t: 1\nvendor_id\t: AuthenticAMD\n";
        assert_eq!(parse_cpuinfo(t), (Some("AuthenticAMD".into()), true));
        assert_eq!(parse_cpuinfo("vendor_id : GenuineIntel\nflags : fpu vmx\n"), (Some("GenuineIntel".into()), false));
        assert_eq!(parse_cap_eff("Name:\tx\nCapEff:\t000001fffeffffff\n"), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn memlock_shortfall_respects_the_capability() {
        let mut f = HostFacts { memlock: Some(8 << 20), ..Default::default() };
        assert!(f.memlock_shortfall(26 << 20).is_some_and(|m| m.contains("RLIMIT_MEMLOCK is 8388608 bytes")));
        assert!(f.memlock_shortfall(4 << 20).is_none());
        f.cap_ipc_lock = true;
        assert!(f.memlock_shortfall(26 << 20).is_none());
        f = HostFacts { memlock: None, ..Default::default() };
        assert!(f.memlock_shortfall(u64::MAX).is_none());
    }
}
